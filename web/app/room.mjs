// One room as one key sees it (docs/PROTOCOL.md §6): epoch keys, admitted members, replay
// detection, composing and reading messages, rotations. No I/O: the caller feeds server
// envelopes in and sends what these functions return. State is a plain object whose durable
// part (`durable(state)`) is kept in the sealed key store.
import { base64ToBytes, bytesToBase64, publicKeyFromPrivate } from '../themis/index.mjs';
import {
  PayloadError, REASONS, b64, keyBytes, sealChat, sealName, sealFileMessage, openMessage, signRotation, sealRotation, wrapRotation,
  openRotation, openRotationWrap, verifyStatement, membershipStatement, removalStatement, leaveStatement, signStatement,
  randomBytes,
} from './formats.mjs';
import { isCanonicalName } from './names.mjs';

const MAX_SEQ = 2 ** 53 - 1;

/** A fresh state: for the owner after `room_created`, for a joiner after the join grant. */
export function newRoomState({ room, owner, privateKey, epoch, roomKey }) {
  const me = bytesToBase64(publicKeyFromPrivate(privateKey));
  return {
    room, owner, me, privateKey: bytesToBase64(privateKey),
    epoch, keys: { [epoch]: bytesToBase64(roomKey) },
    members: {}, // non-owner key → owner's membership signature (b64), each verified
    former: {}, // removed/left key → {signature, untilSeq, departure}: messages with seq ≤ untilSeq stay valid
    counter: 0, // my last chat counter (§6.1); durable so that it never repeats
    pendingRotation: null, // owner: {epoch, key} saved before `rotate` is sent, until it is installed
    accepted: {}, // sender → {counter: seq}, the newest REPLAY_WINDOW counters; rebuilt from history each session
    acceptedFloor: {}, // sender → {counter, seq}: its older counters, folded (§6.1)
    names: {}, // key → {name, seq}: who is called what (§6.7), the latest by seq; rebuilt from history
    keptNames: {}, // the same, kept in the key store: names whose messages retention deleted (§6.7, §4.8)
    lastSeq: 0,
  };
}

/**
 * The part of the state that must survive a reload (the rest is rebuilt from history). Names are
 * rebuilt too, but also kept: retention (§4.8) may have deleted the message that set one.
 */
export function durable(state) {
  const { accepted, acceptedFloor, lastSeq, names, keptNames, ...rest } = state;
  return { ...rest, keptNames: latestNames(keptNames ?? {}, names) };
}

export function restoreRoomState(saved) {
  return {
    pendingRotation: null, ...saved, keptNames: checkKeptNames(saved.keptNames), accepted: {}, acceptedFloor: {}, names: {}, lastSeq: 0,
  };
}

/** Two name tables → one: for each key, the entry with the higher seq. */
function latestNames(a, b) {
  const merged = { ...a };
  for (const [key, entry] of Object.entries(b)) if (!own(merged, key) || merged[key].seq < entry.seq) merged[key] = entry;
  return merged;
}

/** A public key as the wire carries it: the 45-byte container in base64 (never `__proto__` and the like). */
const KEY_B64 = /^[A-Za-z0-9+/]{60}$/;

/** Kept names as read from the key store: only well-formed entries (keys, canonical names, seqs). */
function checkKeptNames(kept) {
  if (kept === null || typeof kept !== 'object' || Array.isArray(kept)) return {};
  const checked = {};
  for (const [key, entry] of Object.entries(kept)) {
    if (KEY_B64.test(key) && entry !== null && typeof entry === 'object' && isCanonicalName(entry.name) &&
        Number.isSafeInteger(entry.seq) && entry.seq >= 1) {
      checked[key] = { name: entry.name, seq: entry.seq, ...(Number.isSafeInteger(entry.epoch) ? { epoch: entry.epoch } : {}) };
    }
  }
  return checked;
}

/**
 * Two tabs' durable states of one room → one (stored wins on equal facts). Keys, counter and
 * departures only grow: epoch keys are united, the counter and epoch are the larger ones, a
 * departure keeps the earlier bound. `pendingRotation` is not merged but set and cleared by
 * explicit changes; it is dropped once its epoch is reached.
 */
export function mergeDurable(stored, mine) {
  if (stored.me !== mine.me || stored.room !== mine.room) return structuredClone(stored);
  const keys = { ...mine.keys, ...stored.keys };
  const epoch = Math.max(stored.epoch, mine.epoch);
  const former = {};
  for (const [key, entry] of [...Object.entries(stored.former), ...Object.entries(mine.former)]) {
    const known = former[key];
    former[key] = known
      ? { ...known, untilSeq: Math.min(known.untilSeq, entry.untilSeq), departure: known.departure ?? entry.departure }
      : { ...entry };
  }
  const members = {};
  for (const [key, signature] of [...Object.entries(mine.members), ...Object.entries(stored.members)]) {
    if (!former[key]) members[key] = signature;
  }
  const pending = stored.pendingRotation;
  const pendingRotation = pending && pending.epoch > epoch && !keys[pending.epoch] ? { ...pending } : null;
  const keptNames = latestNames(stored.keptNames ?? {}, mine.keptNames ?? {});
  return { ...stored, keys, epoch, counter: Math.max(stored.counter, mine.counter), members, former, pendingRotation, keptNames };
}

export const isOwner = (state) => state.me === state.owner;
const privateKey = (state) => base64ToBytes(state.privateKey);
const ownerKey = (state) => base64ToBytes(state.owner);
export const currentKey = (state) => base64ToBytes(state.keys[state.epoch]);

/** Admits `key` if the owner's membership signature over it verifies; returns whether it did. */
export async function admit(state, key, signatureB64) {
  // A departed key is retired for good (§4.7): its old signature cannot bring it back.
  if (typeof key !== 'string' || typeof signatureB64 !== 'string' || key === state.owner || state.former[key]) return false;
  if (!await verifyMembership(state, key, signatureB64)) return false;
  state.members[key] = signatureB64;
  return true;
}

async function verifyMembership(state, key, signatureB64) {
  let signature;
  try { keyBytes(key); signature = b64(signatureB64, 4096); } catch { return false; }
  return verifyStatement(signature, membershipStatement(state.room, key), ownerKey(state));
}

/** Checks the owner's removal signature (§6.5). */
export async function verifyRemoval(state, key, signatureB64) {
  return verifyDeparture(state, key, 'removed', signatureB64);
}

/** Checks a departure signature (§6.5): a removal by the owner, a leave by the departed key itself. */
export async function verifyDeparture(state, key, departure, signatureB64) {
  let signature;
  let signer;
  try {
    signature = b64(signatureB64, 4096);
    signer = departure === 'left' ? keyBytes(key) : ownerKey(state);
  } catch { return false; }
  if (departure === 'left') return verifyStatement(signature, leaveStatement(state.room, key), signer);
  if (departure === 'removed') return verifyStatement(signature, removalStatement(state.room, key), signer);
  return false;
}

/** `map[key]` if `key` is the map's own (a hostile key such as 'constructor' is not inherited). */
const own = (map, key) => (Object.hasOwn(map, key) ? map[key] : undefined);

/**
 * A member left or was removed at `until` (the room's last seq then; default: the last seq seen):
 * its messages with seq ≤ until stay valid, later ones do not. A departure happens once, so a
 * later claim never widens the window. `departure` is 'left'/'removed' when its signature
 * verified, null when not.
 */
export function forget(state, key, until = state.lastSeq, departure = null) {
  const known = own(state.former, key);
  const signature = own(state.members, key) ?? known?.signature;
  if (signature) {
    const bound = Number.isSafeInteger(until) && until >= 0 ? until : state.lastSeq;
    state.former[key] = {
      signature, untilSeq: known ? Math.min(known.untilSeq, bound) : bound, departure: departure ?? known?.departure ?? null,
    };
  }
  delete state.members[key];
}

/** A pushed departure (`member_left`/`member_removed`): verifies it, then forgets; returns whether it verified. */
export async function depart(state, key, { departure, signature, until }) {
  if (typeof key !== 'string') return false; // no member has such a key (and it is no property name)
  const verified = await verifyDeparture(state, key, departure, signature);
  forget(state, key, until, verified ? departure : null);
  return verified;
}

/**
 * `formerMembers` of `hello` (§4.1): each entry is admitted like a member (the owner's membership
 * signature must verify) and departed at its `until`. Malformed or unverifiable entries are skipped.
 */
export async function syncFormer(state, entries) {
  for (const entry of Array.isArray(entries) ? entries.slice(0, 256) : []) {
    if (entry === null || typeof entry !== 'object') continue;
    const { key, signature, until, departure, departureSignature } = entry;
    if (typeof key !== 'string' || typeof signature !== 'string' || key === state.owner || key === state.me) continue;
    if (!Number.isSafeInteger(until) || until < 0 || (departure !== 'left' && departure !== 'removed')) continue;
    // Only a signature already verified for this key skips verification (§4.1): a former key
    // listed again with another signature is an unverified entry, not a narrower `until`.
    const known = own(state.members, key) ?? own(state.former, key)?.signature;
    if (known !== signature && !await verifyMembership(state, key, signature)) continue;
    if (!own(state.members, key) && !own(state.former, key)) state.members[key] = signature;
    await depart(state, key, { departure, signature: departureSignature, until });
  }
}

/** Replaces the member list with the server's (hello), keeping only verified entries. */
export async function syncMembers(state, entries) {
  const next = {};
  for (const entry of Array.isArray(entries) ? entries.slice(0, 256) : []) {
    // Both strings, or the shortcut below would match an absent signature to an absent member
    // (`undefined === undefined`) and admit any key, a departed one included, unverified.
    if (entry === null || typeof entry !== 'object' || typeof entry.key !== 'string' || typeof entry.signature !== 'string') continue;
    if (Object.hasOwn(state.members, entry.key) && state.members[entry.key] === entry.signature) next[entry.key] = entry.signature;
    else if (await admit(state, entry.key, entry.signature)) next[entry.key] = entry.signature;
  }
  for (const key of Object.keys(state.members)) if (!next[key]) forget(state, key);
  state.members = next;
}

export const signMembership = (state, key) => signStatement(privateKey(state), membershipStatement(state.room, key));
export const signRemoval = (state, key) => signStatement(privateKey(state), removalStatement(state.room, key));
/** §6.5: this key leaves the room. */
export const signLeave = (state) => signStatement(privateKey(state), leaveStatement(state.room, state.me));

// ---- names (§6.7): the rule itself is names.mjs ----

export { MAX_NAME_SCALARS, canonicalName, isCanonicalName } from './names.mjs';

/** The name `key` gave itself, or null. */
export const nameOf = (state, key) => namedAs(state, key)?.name ?? null;

/** A key's latest name: read from history this session, or kept from an earlier one. */
function namedAs(state, key) {
  const read = own(state.names, key);
  const kept = state.keptNames ? own(state.keptNames, key) : undefined;
  return !kept || (read && read.seq >= kept.seq) ? read : kept;
}

/** Whether another key of the room (a member or a former one) holds the same name as `key`. */
export function sharesName(state, key) {
  const mine = nameOf(state, key);
  const keys = new Set([...Object.keys(state.names), ...Object.keys(state.keptNames ?? {})]);
  return mine !== null && [...keys].some((other) => other !== key && nameOf(state, other) === mine);
}

/** Applies a name at `seq` unless a later one is known → {previous, inForce}. */
function setName(state, key, name, seq, epoch) {
  const known = own(state.names, key);
  if (known && known.seq >= seq) return { previous: known.name, inForce: known.seq === seq };
  state.names[key] = Number.isSafeInteger(epoch) ? { name, seq, epoch } : { name, seq };
  return { previous: known?.name ?? null, inForce: true };
}

/** Seals my next name message (`name` must be canonical); the counter is consumed as for chat. */
export async function composeName(state, name, now) {
  if (!isCanonicalName(name)) throw new PayloadError('malformed', 'not a valid name');
  state.counter += 1;
  const payload = await sealName({ room: state.room, epoch: state.epoch, counter: state.counter, ts: now, name }, currentKey(state), privateKey(state));
  return { payload: bytesToBase64(payload), counter: state.counter, epoch: state.epoch };
}

/** Seals my next file message (§6.8; `file` from files.mjs `describeFile`); the counter is consumed as for chat. */
export async function composeFile(state, file, now) {
  state.counter += 1;
  const payload = await sealFileMessage({ room: state.room, epoch: state.epoch, counter: state.counter, ts: now, file }, currentKey(state), privateKey(state));
  return { payload: bytesToBase64(payload), counter: state.counter, epoch: state.epoch };
}

/** Seals my next chat message; the counter is consumed even if sending fails. */
export async function compose(state, text, now) {
  state.counter += 1;
  const message = { room: state.room, epoch: state.epoch, counter: state.counter, ts: now, text };
  const payload = await sealChat(message, currentKey(state), privateKey(state));
  return { payload: bytesToBase64(payload), counter: state.counter, epoch: state.epoch };
}

/**
 * Records my own message once the server assigned its seq (it is not pushed back to me); `name`:
 * it was a name message, now my name at that seq.
 */
export function recordSent(state, counter, seq, name = null, epoch = undefined) {
  accept(state, state.me, counter, seq);
  state.lastSeq = Math.max(state.lastSeq, seq);
  if (name !== null && isCanonicalName(name)) setName(state, state.me, name, seq, epoch);
}

/**
 * Whether this key should send its name again now that a member joined (§6.7): a joiner reads
 * only messages sealed under the epoch it was let in at, so a name sealed under an older epoch
 * (or one not known) never reaches it. The same rule as Swift's `RoomState.owesNameToJoiners`.
 */
export function owesName(state) {
  const mine = namedAs(state, state.me);
  return !!mine && (Number.isSafeInteger(mine.epoch) ? mine.epoch : -1) < state.epoch;
}

/**
 * Owner: a rotation to a fresh key, plain or wrapped for `recipients` and for the owner itself
 * (so that the owner's other tabs and devices follow it, §4.5); `install` it once accepted.
 */
export async function makeRotation(state, recipients = null) {
  const epoch = state.epoch + 1;
  const key = randomBytes(32);
  const signed = await signRotation({ room: state.room, epoch, key }, privateKey(state));
  if (!recipients) {
    return { epoch, key, payload: bytesToBase64(await sealRotation(signed, currentKey(state), state.room, state.epoch)) };
  }
  const wraps = [];
  for (const member of [...new Set([...recipients, state.me])].sort()) {
    wraps.push({ key: member, wrap: bytesToBase64(await wrapRotation(signed, privateKey(state), base64ToBytes(member))) });
  }
  return { epoch, key, wraps };
}

export function install(state, rotation) {
  state.keys[rotation.epoch] = bytesToBase64(rotation.key);
  state.epoch = Math.max(state.epoch, rotation.epoch);
  if (state.pendingRotation && state.pendingRotation.epoch <= rotation.epoch) state.pendingRotation = null;
}

/** Validates a message object from the server (push or history entry); null when malformed. */
export function parseEnvelope(state, m) {
  if (m === null || typeof m !== 'object' || m.room !== state.room) return null;
  if (!Number.isSafeInteger(m.seq) || m.seq < 1 || m.seq > MAX_SEQ) return null;
  if (m.kind !== 'message' && m.kind !== 'rotation') return null;
  if (typeof m.from !== 'string' || m.from.length > 128 || !Number.isSafeInteger(m.epoch) || m.epoch < 0) return null;
  if (!Number.isSafeInteger(m.at) || m.at < 0) return null;
  if (m.payload !== undefined && typeof m.payload !== 'string') return null;
  if (m.wrap !== undefined && typeof m.wrap !== 'string') return null;
  return { seq: m.seq, kind: m.kind, from: m.from, epoch: m.epoch, at: m.at, payload: m.payload, wrap: m.wrap };
}

/**
 * Interprets one envelope. Returns
 *   {type: 'chat', seq, at, from, ts, text, counter, own}
 *   {type: 'file', seq, at, from, ts, file, counter, own}   (§6.8; file: checked by files.mjs checkFile)
 *   {type: 'name', seq, at, from, ts, name, counter, own, previous, inForce}   (§6.7; previous: the name before, or null;
 *                                                                            inForce: false when a later name was read first)
 *   {type: 'rotation', seq, at, epoch}
 *   {type: 'rejected', seq, at, from, epoch, reason, code}   (code: a key of REASONS, as Swift's RoomState.Reason)
 *   {type: 'duplicate', seq}   (already shown at this seq)
 */
export async function receive(state, env) {
  state.lastSeq = Math.max(state.lastSeq, env.seq);
  const base = { seq: env.seq, at: env.at };
  try {
    if (env.kind === 'rotation') return { ...base, type: 'rotation', epoch: await receiveRotation(state, env) };
    return { ...base, ...await receiveChat(state, env) };
  } catch (error) {
    if (!(error instanceof PayloadError)) throw error;
    return { ...base, type: 'rejected', from: env.from, epoch: env.epoch, reason: REASONS[error.reason] ?? error.reason, code: error.reason };
  }
}

function isAdmitted(state, from, seq) {
  // Own properties only: a sender named `__proto__` or `constructor` is no member.
  if (from === state.owner || from === state.me || Object.hasOwn(state.members, from)) return true;
  const former = Object.hasOwn(state.former, from) ? state.former[from] : null;
  return Boolean(former && seq <= former.untilSeq);
}

/** Counters kept per sender before the oldest are folded into its floor (§6.1). */
export const REPLAY_WINDOW = 1024;

/**
 * The replay rule (§6.1): a (sender, counter) at `seq` is 'new', the same message again
 * ('duplicate': history read after a push) or a 'replay'. Counters folded out of the window
 * count as seen at any seq up to the floor's.
 */
function replayOf(state, from, counter, seq) {
  const first = state.accepted[from]?.[counter];
  if (first !== undefined) return first === seq ? 'duplicate' : 'replay';
  const floor = state.acceptedFloor?.[from];
  if (floor && counter <= floor.counter) return seq <= floor.seq ? 'duplicate' : 'replay';
  return 'new';
}

/** Records a new (sender, counter) at `seq`, folding the sender's oldest beyond the window. */
function accept(state, from, counter, seq) {
  const table = (state.accepted[from] ??= {});
  table[counter] = seq;
  const window = Math.max(1, state.replayWindow ?? REPLAY_WINDOW);
  const counters = Object.keys(table).map(Number).sort((a, b) => a - b);
  if (counters.length <= window) return;
  state.acceptedFloor ??= {};
  const floor = (state.acceptedFloor[from] ??= { counter: 0, seq: 0 });
  for (const old of counters.slice(0, counters.length - window)) {
    floor.counter = Math.max(floor.counter, old);
    floor.seq = Math.max(floor.seq, table[old]);
    delete table[old];
  }
}

async function receiveChat(state, env) {
  if (!isAdmitted(state, env.from, env.seq)) throw new PayloadError('notMember', 'sender not admitted');
  const keyB64 = state.keys[env.epoch];
  if (!keyB64) throw new PayloadError('missingKey', `no key for epoch ${env.epoch}`);
  if (typeof env.payload !== 'string') throw new PayloadError('malformed', 'no payload');
  const message = await openMessage(b64(env.payload), base64ToBytes(keyB64),
    { room: state.room, epoch: env.epoch, sender: keyBytes(env.from) });
  // A name outside the one rule is refused like any malformed content, before it counts.
  if (message.kind === 'name' && !isCanonicalName(message.name)) throw new PayloadError('malformed', 'not a valid name');
  const replay = replayOf(state, env.from, message.counter, env.seq);
  if (replay === 'replay') throw new PayloadError('replay', 'counter already used');
  if (replay === 'duplicate') return { type: 'duplicate' };
  accept(state, env.from, message.counter, env.seq);
  const mine = env.from === state.me;
  if (mine) state.counter = Math.max(state.counter, message.counter);
  if (message.kind === 'name') {
    return { type: 'name', from: env.from, ts: message.ts, name: message.name, counter: message.counter, own: mine,
      ...setName(state, env.from, message.name, env.seq, env.epoch) };
  }
  if (message.kind === 'file') return { type: 'file', from: env.from, ts: message.ts, file: message.file, counter: message.counter, own: mine };
  return { type: 'chat', from: env.from, ts: message.ts, text: message.text, counter: message.counter, own: mine };
}

async function receiveRotation(state, env) {
  if (env.from !== state.owner) throw new PayloadError('badSignature', 'rotation not from the owner');
  if (env.epoch < 1) throw new PayloadError('malformed', 'epoch 0 is never the result of a rotation');
  if (state.keys[env.epoch]) return env.epoch;
  const meta = { room: state.room, epoch: env.epoch, owner: ownerKey(state) };
  let key;
  if (typeof env.wrap === 'string') {
    key = await openRotationWrap(b64(env.wrap), privateKey(state), meta);
  } else if (typeof env.payload === 'string' && state.keys[env.epoch - 1]) {
    key = await openRotation(b64(env.payload), base64ToBytes(state.keys[env.epoch - 1]), meta);
  } else if (env.from === state.me && state.pendingRotation?.epoch === env.epoch) {
    // My own wrapped rotation, accepted although its reply never came (a crash, a lost
    // connection): the key was saved before the request left.
    key = base64ToBytes(state.pendingRotation.key);
  } else {
    throw new PayloadError('missingKey', `no key for epoch ${env.epoch - 1}`);
  }
  install(state, { epoch: env.epoch, key });
  return env.epoch;
}

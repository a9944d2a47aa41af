// The end-to-end formats of docs/PROTOCOL.md §6 (opaque to the server), and the invite link
// of §6.6. Every opener is strict: bounded sizes, exact JSON shapes, typed failures.
import {
  SecureCellSeal, secureMessageSign, secureMessageVerify, secureMessageEncrypt, secureMessageDecrypt,
  base64ToBytes, bytesToBase64, bytesToBase64Url, base64UrlToBytes, utf8Encode, constantTimeEqual,
  parsePublicKey,
} from '../themis/index.mjs';
import { FileError, checkFile } from './files.mjs';
import { isCanonicalName } from './names.mjs';
import { padInnerJSON, isValidPad } from './padding.mjs';

/** Why an end-to-end blob was refused; `reason` is shown to the user. */
export class PayloadError extends Error {
  constructor(reason, message) {
    super(message);
    this.reason = reason;
  }
}

export const REASONS = {
  missingKey: 'missing epoch key',
  undecryptable: 'cannot be decrypted',
  badSignature: 'bad signature',
  notMember: 'sender is not a member',
  malformed: 'malformed content',
  wrongRoom: 'wrong room or epoch',
  replay: 'replayed message',
};

const MAX_PAYLOAD_BYTES = 64 * 1024;
const decoder = new TextDecoder('utf-8', { fatal: true });

export const randomBytes = (n) => crypto.getRandomValues(new Uint8Array(n));

/** Strict b64 → bytes with an upper bound; throws PayloadError('malformed'). */
export function b64(text, max = MAX_PAYLOAD_BYTES) {
  if (typeof text !== 'string' || text.length > Math.ceil(max / 3) * 4) throw new PayloadError('malformed', 'blob too large');
  try { return base64ToBytes(text); } catch { throw new PayloadError('malformed', 'bad base64'); }
}

/** A public key in JSON (b64 of the 45-byte container) → bytes, validated. */
export function keyBytes(keyB64) {
  const key = b64(keyB64, 128);
  try { parsePublicKey(key); } catch { throw new PayloadError('malformed', 'not a public key'); }
  return key;
}

function parseJSON(bytes) {
  try { return JSON.parse(decoder.decode(bytes)); } catch { throw new PayloadError('malformed', 'not JSON'); }
}

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const isCount = (v) => Number.isSafeInteger(v) && v >= 0;
const json = (value) => utf8Encode(JSON.stringify(value));

/** Secure Cell context of room payloads: UTF-8 of `<room>:<epoch>`. */
export const roomContext = (room, epoch) => utf8Encode(`${room}:${epoch}`);
export const membershipStatement = (room, key) => utf8Encode(`hush-member:${room}:${key}`);
export const removalStatement = (room, key) => utf8Encode(`hush-remove:${room}:${key}`);
/** §6.5: signed by the leaving member's own key. */
export const leaveStatement = (room, key) => utf8Encode(`hush-leave:${room}:${key}`);
const confirmationStatement = (room, key) => utf8Encode(`hush-confirm:${room}:${key}`);

// ---- §6.1 chat messages ----

/** Chat, name and file messages: the inner JSON padded to a bucket (padding.mjs), signed, sealed under the epoch key. */
async function sealRoomMessage(inner, { room, epoch }, roomKey, signerPrivate) {
  const signed = await secureMessageSign(signerPrivate, padInnerJSON(json(inner)));
  return SecureCellSeal.withKey(roomKey).encrypt(signed, roomContext(room, epoch));
}

/** A text too long to pad throws padding.mjs `MessageTooLarge`; the composer's limit is rooms.mjs `MAX_TEXT_CHARS`. */
export async function sealChat({ room, epoch, counter, ts, text }, roomKey, signerPrivate) {
  return sealRoomMessage({ counter, epoch, room, text, ts, v: 1 }, { room, epoch }, roomKey, signerPrivate);
}

/** §6.7: a name message, sealed and signed exactly as a chat message; `name` must be canonical (room.mjs). */
export async function sealName({ room, epoch, counter, ts, name }, roomKey, signerPrivate) {
  return sealRoomMessage({ counter, epoch, kind: 'name', name, room, ts, v: 1 }, { room, epoch }, roomKey, signerPrivate);
}

/** §6.8: a file message, sealed and signed exactly as a chat message; `file` from files.mjs `describeFile`. */
export async function sealFileMessage({ room, epoch, counter, ts, file }, roomKey, signerPrivate) {
  return sealRoomMessage({ counter, epoch, file: checkFile(file), kind: 'file', room, ts, v: 1 }, { room, epoch }, roomKey, signerPrivate);
}

/**
 * Opens a room message payload: a chat line (no `kind`, as in version 1) → {kind: 'chat',
 * counter, ts, text}, a name (§6.7, `kind` "name") → {kind: 'name', counter, ts, name}, or a
 * file (§6.8, `kind` "file") → {kind: 'file', counter, ts, file} with `file` checked by
 * files.mjs `checkFile`. Any other `kind`, `null` included, is malformed. Whether the name
 * obeys the name rule is room.mjs's.
 */
export async function openMessage(payload, roomKey, { room, epoch, sender }) {
  let signed;
  try { signed = await SecureCellSeal.withKey(roomKey).decrypt(payload, roomContext(room, epoch)); } catch {
    throw new PayloadError('undecryptable', 'does not open with the epoch key');
  }
  let inner;
  try { inner = await secureMessageVerify(sender, signed); } catch {
    throw new PayloadError('badSignature', 'signature does not verify');
  }
  const m = parseJSON(inner);
  // Chat carries no `kind` (as in version 1); a `kind` present must be "name" or "file".
  const kind = isObject(m) && Object.hasOwn(m, 'kind') ? (['name', 'file'].includes(m.kind) ? m.kind : null) : 'chat';
  // No bound on the text beyond the payload's (§4.4): a longer text from another client is still a message.
  // `pad` (§6.1): absent in messages sealed before padding; its length is never checked.
  if (!isObject(m) || m.v !== 1 || typeof m.room !== 'string' || !isCount(m.epoch) || !isCount(m.counter) ||
      m.counter < 1 || !isCount(m.ts) || kind === null || (Object.hasOwn(m, 'pad') && !isValidPad(m.pad)) ||
      (kind === 'chat' && typeof m.text !== 'string') || (kind === 'name' && typeof m.name !== 'string')) {
    throw new PayloadError('malformed', 'bad chat message');
  }
  let file;
  if (kind === 'file') {
    try { file = checkFile(m.file); } catch (error) {
      if (error instanceof FileError) throw new PayloadError('malformed', error.message);
      throw error;
    }
  }
  if (m.room !== room || m.epoch !== epoch) throw new PayloadError('wrongRoom', 'room or epoch differ');
  const base = { kind, counter: m.counter, ts: m.ts };
  if (kind === 'name') return { ...base, name: m.name };
  if (kind === 'file') return { ...base, file };
  return { ...base, text: m.text };
}

// ---- §6.3 rotations ----

export async function signRotation({ room, epoch, key }, ownerPrivate) {
  return secureMessageSign(ownerPrivate, json({ epoch, key: bytesToBase64(key), room, type: 'rotation', v: 1 }));
}

export const sealRotation = (signed, oldKey, room, oldEpoch) =>
  SecureCellSeal.withKey(oldKey).encrypt(signed, roomContext(room, oldEpoch));

export const wrapRotation = (signed, ownerPrivate, memberPublic) => secureMessageEncrypt(ownerPrivate, memberPublic, signed);

async function verifyRotation(signed, { room, epoch, owner }) {
  let inner;
  try { inner = await secureMessageVerify(owner, signed); } catch {
    throw new PayloadError('badSignature', 'rotation not signed by the owner');
  }
  const g = parseJSON(inner);
  if (!isObject(g) || g.type !== 'rotation' || typeof g.key !== 'string') throw new PayloadError('malformed', 'bad rotation');
  if (g.room !== room || g.epoch !== epoch) throw new PayloadError('wrongRoom', 'rotation for another room or epoch');
  const key = b64(g.key, 32);
  if (key.length !== 32) throw new PayloadError('malformed', 'room key must be 32 bytes');
  return key;
}

/** Plain rotation sealed under the previous epoch's key → the new key. */
export async function openRotation(payload, oldKey, { room, epoch, owner }) {
  let signed;
  try { signed = await SecureCellSeal.withKey(oldKey).decrypt(payload, roomContext(room, epoch - 1)); } catch {
    throw new PayloadError('undecryptable', 'rotation does not open with the previous key');
  }
  return verifyRotation(signed, { room, epoch, owner });
}

/** Wrapped rotation (after a removal) → the new key. */
export async function openRotationWrap(wrap, myPrivate, { room, epoch, owner }) {
  let signed;
  try { signed = await secureMessageDecrypt(myPrivate, owner, wrap); } catch {
    throw new PayloadError('undecryptable', 'wrap does not open with this key');
  }
  return verifyRotation(signed, { room, epoch, owner });
}

// ---- §6.4, §6.5 signatures ----

export const signStatement = (ownerPrivate, statement) => secureMessageSign(ownerPrivate, statement);

/** True when `signature` is the owner's signature over exactly `statement`. */
export async function verifyStatement(signature, statement, owner) {
  try { return constantTimeEqual(await secureMessageVerify(owner, signature), statement); } catch { return false; }
}

// ---- §6.2 joins ----

export const encryptJoiningKey = (joinerPrivate, ownerPublic, joiningKey) =>
  secureMessageEncrypt(joinerPrivate, ownerPublic, joiningKey);

export async function decryptJoiningKey(blob, ownerPrivate, joinerPublic) {
  let key;
  try { key = await secureMessageDecrypt(ownerPrivate, joinerPublic, blob); } catch {
    throw new PayloadError('undecryptable', 'joining key does not open');
  }
  if (key.length !== 32) throw new PayloadError('malformed', 'joining key must be 32 bytes');
  return key;
}

export const sealJoinGrant = ({ room, epoch, key }, joiningKey, token) =>
  SecureCellSeal.withKey(joiningKey).encrypt(json({ epoch, key: bytesToBase64(key), room }), token);

/** The joiner opens the owner's join response → {epoch, key}. */
export async function openJoinGrant(sealed, joiningKey, token, room) {
  let inner;
  try { inner = await SecureCellSeal.withKey(joiningKey).decrypt(sealed, token); } catch {
    throw new PayloadError('undecryptable', 'join response does not open');
  }
  const g = parseJSON(inner);
  if (!isObject(g) || g.room !== room || !isCount(g.epoch) || typeof g.key !== 'string') {
    throw new PayloadError('malformed', 'bad join response');
  }
  const key = b64(g.key, 32);
  if (key.length !== 32) throw new PayloadError('malformed', 'room key must be 32 bytes');
  return { epoch: g.epoch, key };
}

export const sealConfirmation = (room, joinerKeyB64, roomKey, token) =>
  SecureCellSeal.withKey(roomKey).encrypt(confirmationStatement(room, joinerKeyB64), token);

export async function checkConfirmation(sealed, room, joinerKeyB64, roomKey, token) {
  try {
    const inner = await SecureCellSeal.withKey(roomKey).decrypt(sealed, token);
    return constantTimeEqual(inner, confirmationStatement(room, joinerKeyB64));
  } catch { return false; }
}

// ---- §6.6 invite link ----

export async function inviteId(token) {
  return new Uint8Array(await crypto.subtle.digest('SHA-256', token));
}

/**
 * §6.6; `roomName` and `ownerName` (canonical names, §6.7) are left out when null, `history` when
 * it is 'rotation' (the default).
 */
export function inviteLink(baseUrl, { room, token, owner, server, roomName = null, ownerName = null, history = 'rotation', relay = null }) {
  const body = json({
    ...(history === 'joined' ? { history } : {}), owner, ...(ownerName !== null ? { ownerName } : {}),
    ...(relay !== null ? { relay } : {}), room, ...(roomName !== null ? { roomName } : {}), server,
    token: bytesToBase64(token), v: 1,
  });
  return `${baseUrl.replace(/\/+$/, '')}/#${bytesToBase64Url(body)}`;
}

const ROOM_ID = /^[A-Za-z0-9_-]{22}$/;
const FINGERPRINT = /^[0-9a-f]{4}( [0-9a-f]{4}){4}$/;
const LABEL = '[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?';
const ORIGIN = new RegExp(`^(https?)://(?:${LABEL}(?:\\.${LABEL})*|\\[[0-9a-f:.]{2,45}\\])(?::([1-9][0-9]{0,4}))?$`);

/**
 * Whether `value` is an origin as a browser writes it, such as an invite's relay (§6.6 `relay`):
 * http(s), a lowercase host or [IPv6], a port only when not the scheme's default; no path, user,
 * query or fragment; at most 255 characters. Swift: `WebOrigin`.
 */
export function isWebOrigin(value) {
  if (typeof value !== 'string' || value.length > 255) return false;
  const match = ORIGIN.exec(value);
  if (!match) return false;
  if (match[2] === undefined) return true;
  const port = Number(match[2]);
  return port <= 65535 && port !== (match[1] === 'https' ? 443 : 80);
}

/**
 * The fragment of an invite link (without '#') → {room, token, owner, server, roomName, ownerName,
 * history, relay} (the names and relay null when absent, history 'rotation' or 'joined'); throws Error.
 */
export function parseInviteFragment(fragment) {
  const fail = () => { throw new Error('This is not a valid Hush invite link.'); };
  if (typeof fragment !== 'string' || fragment.length === 0 || fragment.length > 2048) fail();
  let body;
  try { body = JSON.parse(decoder.decode(base64UrlToBytes(fragment))); } catch { fail(); }
  if (!isObject(body) || body.v !== 1 || typeof body.room !== 'string' || !ROOM_ID.test(body.room) ||
      typeof body.token !== 'string' || typeof body.owner !== 'string' ||
      typeof body.server !== 'string' || !FINGERPRINT.test(body.server)) fail();
  // The names the owner proposes: absent (or null), or canonical (§6.7), else the whole link is refused.
  const nameOrNull = (value) => (value === undefined || value === null ? null : isCanonicalName(value) ? value : fail());
  const roomName = nameOrNull(body.roomName);
  const ownerName = nameOrNull(body.ownerName);
  // What new members may read (§6.6): absent, null or 'rotation' is the default.
  const history = body.history === undefined || body.history === null || body.history === 'rotation' ? 'rotation'
    : body.history === 'joined' ? 'joined' : fail();
  // The relay, when the page that shows the link only hosts the code (§6.6): absent, null or an origin.
  const relay = body.relay === undefined || body.relay === null ? null : isWebOrigin(body.relay) ? body.relay : fail();
  let token, owner;
  try { token = b64(body.token, 32); owner = keyBytes(body.owner); } catch { fail(); }
  // The owner's key in its one canonical form (45-byte container, canonical base64), as on the wire.
  if (token.length !== 32 || owner.length !== 45 || bytesToBase64(owner) !== body.owner) fail();
  return { room: body.room, token, owner: body.owner, server: body.server, roomName, ownerName, history, relay };
}

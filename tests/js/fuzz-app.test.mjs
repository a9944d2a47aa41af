// Mutation fuzzing of the web client's decoders of hostile input (web/app): room envelopes and
// their payloads (room.mjs, formats.mjs), membership and departure entries, invite links, the
// key-store record, and server frames as Connection parses them. Every input must end in the
// module's own refusal (PayloadError, a documented Error message, a ThemisError, a false/null
// answer) or in a well-formed result; never a TypeError, never a hang, never state that no
// longer survives the store's JSON.
// Reproducible: HUSH_FUZZ_SEED / HUSH_FUZZ_ITERATIONS (see fuzz.mjs).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT, h, loadVectors, scenarioStart } from './helpers.mjs';
import {
  fuzzLoop, mutateBytes, mutateJSON, mutateString, viaJSON, sameBytes, report, TEST_TIMEOUT,
} from './fuzz.mjs';
import { ThemisError } from '../../web/themis/errors.mjs';
import {
  SecureCellSeal, SecureSession, base64ToBytes, bytesToBase64, bytesToBase64Url, base64UrlToBytes,
  publicKeyFromPrivate, secureMessageSign, parsePublicKey,
} from '../../web/themis/index.mjs';
import { readU32LE } from '../../web/themis/bytes.mjs';
import { MAX_PBKDF2_ITERATIONS } from '../../web/themis/kdf.mjs';
import {
  PayloadError, REASONS, parseInviteFragment, inviteLink, openMessage, openJoinGrant, sealJoinGrant, roomContext,
  openRotation,
} from '../../web/app/formats.mjs';
import { admit, depart, syncFormer, syncMembers, parseEnvelope, receive, isCanonicalName } from '../../web/app/room.mjs';
import { KeyStore, WrongPassword } from '../../web/app/store.mjs';
import { Connection, ServerError } from '../../web/app/connection.mjs';

const TIMEOUT = TEST_TIMEOUT;
const utf8 = (s) => new TextEncoder().encode(s);
const isPayloadError = (e) => e instanceof PayloadError && Object.hasOwn(REASONS, e.reason);

after(() => report('app'));

// ---- the room scenarios as corpus ----

const SCENARIO_DIR = join(REPO_ROOT, 'Tests', 'Fixtures', 'room-scenarios');
const scenarios = readdirSync(SCENARIO_DIR).filter((f) => f.endsWith('.json')).sort()
  .map((f) => ({ file: f, ...JSON.parse(readFileSync(join(SCENARIO_DIR, f), 'utf8')) }));

/** The reader's starting state of a scenario. */
async function startState(s) {
  return (await scenarioStart(s)).state;
}

/**
 * The state stays what the key store can hold: plain JSON data, own keys only, the maps still
 * plain objects (a hostile '__proto__' or 'toString' key must not reach a prototype).
 */
function assertCleanState(state) {
  for (const map of ['keys', 'members', 'former', 'accepted', 'names']) {
    assert.equal(Object.getPrototypeOf(state[map]), Object.prototype, `state.${map} prototype changed`);
  }
  assert.deepStrictEqual(JSON.parse(JSON.stringify(state)), state, 'state does not survive JSON');
  for (const [key, signature] of Object.entries(state.members)) assert.ok(typeof key === 'string' && typeof signature === 'string');
  for (const entry of Object.values(state.former)) {
    assert.ok(typeof entry.signature === 'string' && Number.isSafeInteger(entry.untilSeq) && entry.untilSeq >= 0);
    assert.ok([null, 'left', 'removed'].includes(entry.departure));
  }
}

/** A mutated envelope: JSON-level, or bytes of its payload/wrap mutated and re-encoded. */
function mutateEnvelope(rng, env, others, blobs) {
  if (rng.bool(0.5)) {
    const field = typeof env.wrap === 'string' && rng.bool() ? 'wrap' : 'payload';
    if (typeof env[field] === 'string') {
      let bytes;
      try { bytes = base64ToBytes(env[field]); } catch { bytes = new Uint8Array(0); }
      return { ...env, [field]: bytesToBase64(mutateBytes(rng, bytes, blobs)) };
    }
  }
  return viaJSON(mutateJSON(rng, env, others));
}

test('fuzz: room envelopes (parseEnvelope + receive) from the room scenarios', TIMEOUT, async () => {
  const cases = [];
  for (const s of scenarios) {
    const state = await startState(s);
    const envelopes = s.steps.filter((step) => 'envelope' in step).map((step) => step.envelope);
    for (const env of envelopes) cases.push({ s, state, env, envelopes });
  }
  const blobs = cases.flatMap((c) => [c.env.payload, c.env.wrap]).filter((b) => typeof b === 'string').map((b) => {
    try { return base64ToBytes(b); } catch { return new Uint8Array(0); }
  });
  const knownBlobs = new Set(cases.flatMap((c) => [c.env.payload, c.env.wrap]).filter((b) => typeof b === 'string'));
  let chats = 0;
  const { done } = await fuzzLoop({
    name: 'roomEnvelope',
    count: 700,
    generate: (rng) => {
      const base = rng.pick(cases);
      const input = mutateEnvelope(rng, base.env, base.envelopes, blobs);
      return { input, base };
    },
    run: async (input, base) => {
      const state = structuredClone(base.state);
      const env = parseEnvelope(state, input);
      return { state, env, event: env ? await receive(state, env) : null };
    },
    allowed: () => false, // parseEnvelope answers null and receive answers 'rejected': neither throws
    accept: ({ state, env, event }, input) => {
      assertCleanState(state);
      if (!env) return;
      assert.ok(Number.isSafeInteger(env.seq) && env.seq >= 1 && Number.isSafeInteger(env.epoch) && env.epoch >= 0);
      assert.ok(typeof env.from === 'string' && env.from.length <= 128 && ['message', 'rotation'].includes(env.kind));
      assert.ok(['chat', 'name', 'rotation', 'rejected', 'duplicate'].includes(event.type), `event ${event.type}`);
      if (event.type === 'rejected') assert.ok(Object.hasOwn(REASONS, event.code), `reason ${event.code}`);
      if (event.type === 'chat') {
        // Only a payload the scenario's authors sealed and signed can be shown.
        chats += 1;
        assert.ok(knownBlobs.has(input.payload), 'a mutated payload was shown as a message');
        assert.ok(typeof event.text === 'string' && Number.isSafeInteger(event.counter) && event.counter >= 1);
      }
      if (event.type === 'name') {
        // A name, too, only from what the authors sealed, only within the name rule (§6.7), and
        // a name in force is the sender's name now.
        assert.ok(knownBlobs.has(input.payload), 'a mutated payload was taken as a name');
        assert.ok(isCanonicalName(event.name) && Number.isSafeInteger(event.counter) && event.counter >= 1);
        if (event.inForce) assert.equal(state.names[event.from].name, event.name);
      }
      if (event.type === 'rotation') assert.ok(Object.hasOwn(state.keys, event.epoch), 'rotation event without its key');
    },
  });
  assert.ok(done < 100 || chats > 0, 'some mutated envelopes still carry a valid message');
});

test('fuzz: membership, departures and hello lists (admit, depart, syncMembers, syncFormer)', TIMEOUT, async () => {
  const cases = [];
  for (const s of scenarios) {
    const state = await startState(s);
    for (const step of s.steps) {
      if ('memberJoined' in step) cases.push({ state, kind: 'join', doc: step.memberJoined });
      if ('departure' in step) cases.push({ state, kind: 'departure', doc: step.departure });
      if ('hello' in step) cases.push({ state, kind: 'hello', doc: step.hello });
    }
    // Every start entry too, so that hostile keys meet a state with members and former members.
    for (const entry of s.start.members) cases.push({ state, kind: 'join', doc: entry });
    for (const entry of s.start.formerMembers) {
      cases.push({ state, kind: 'departure', doc: { key: entry.key, departure: entry.departure, signature: entry.departureSignature, until: entry.until } });
    }
  }
  const docs = cases.map((c) => c.doc);
  await fuzzLoop({
    name: 'roomMembership',
    count: 400,
    generate: (rng) => {
      const base = rng.pick(cases);
      const input = viaJSON(mutateJSON(rng, base.doc, docs));
      // Sometimes a key that names an Object.prototype member, as a hostile server may send.
      if (rng.bool(0.15) && input && typeof input === 'object' && !Array.isArray(input)) {
        input.key = rng.pick(['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf']);
      }
      return { input, base };
    },
    run: async (input, base) => {
      const state = structuredClone(base.state);
      const d = input ?? {};
      let answer = null;
      if (base.kind === 'join') answer = await admit(state, d.key, d.signature);
      if (base.kind === 'departure') {
        answer = await depart(state, d.key, { departure: d.departure, signature: d.signature, until: d.until });
      }
      if (base.kind === 'hello') {
        await syncFormer(state, d.formerMembers);
        await syncMembers(state, d.members);
      }
      return { state, answer };
    },
    allowed: () => false,
    accept: ({ state, answer }) => {
      assert.ok(answer === null || typeof answer === 'boolean');
      assertCleanState(state);
    },
  });
});

// ---- signed-and-sealed content with hostile JSON (a malicious member or owner) ----

test('fuzz: chat, rotation and join-grant content: valid crypto around hostile JSON', TIMEOUT, async () => {
  const s = scenarios.find((x) => x.file === '01-chat.json');
  const ownerPriv = base64ToBytes(s.keys.owner);
  const owner = publicKeyFromPrivate(ownerPriv);
  const roomKey = base64ToBytes(s.start.keys[s.start.epoch]);
  const room = s.room;
  const epoch = s.start.epoch;
  const chatDoc = { counter: 1, epoch, room, text: 'hi', ts: 1760000000, v: 1 };
  const nameDoc = { counter: 2, epoch, kind: 'name', name: 'Alice', room, ts: 1760000000, v: 1 };
  const paddedDoc = { ...chatDoc, pad: '      ' }; // as a sender pads it (§6.1), mutated toward a pad of anything
  const rotationDoc = { epoch: epoch + 1, key: bytesToBase64(new Uint8Array(32).fill(7)), room, type: 'rotation', v: 1 };
  const grantDoc = { epoch, key: bytesToBase64(roomKey), room };
  const seal = (key, doc, context) => SecureCellSeal.withKey(key).encrypt(utf8(JSON.stringify(doc)), context);
  const token = new Uint8Array(32).fill(3);
  const joiningKey = new Uint8Array(32).fill(9);

  await fuzzLoop({
    name: 'openChatContent',
    count: 80, // each input is signed (a private-key import) and sealed
    generate: (rng) => {
      const base = rng.pick([chatDoc, nameDoc, paddedDoc]); // a chat line, a name (§6.7) or a padded line, mutated toward the others
      const others = [chatDoc, nameDoc, paddedDoc].filter((doc) => doc !== base);
      return { input: viaJSON(mutateJSON(rng, base, [...others, rotationDoc, grantDoc])), base };
    },
    run: async (input) => {
      const signed = await secureMessageSign(ownerPriv, utf8(JSON.stringify(input)));
      const payload = await SecureCellSeal.withKey(roomKey).encrypt(signed, roomContext(room, epoch));
      return openMessage(payload, roomKey, { room, epoch, sender: owner });
    },
    allowed: isPayloadError,
    accept: (m, input) => {
      assert.ok(input.v === 1 && input.room === room && input.epoch === epoch, 'accepted a chat with wrong v/room/epoch');
      assert.ok(Number.isSafeInteger(m.counter) && m.counter >= 1 && Number.isSafeInteger(m.ts) && m.ts >= 0);
      if (Object.hasOwn(input, 'pad')) assert.ok(typeof input.pad === 'string' && /^ *$/.test(input.pad), 'accepted a pad that is not spaces');
      if (Object.hasOwn(input, 'kind')) {
        // Only the one other kind; whether the name obeys the rule is room.mjs's (checked in the envelope fuzz).
        assert.equal(input.kind, 'name', 'accepted an unknown kind');
        assert.deepStrictEqual(m, { kind: 'name', counter: input.counter, ts: input.ts, name: input.name });
        assert.equal(typeof m.name, 'string');
      } else {
        assert.deepStrictEqual(m, { kind: 'chat', counter: input.counter, ts: input.ts, text: input.text });
        assert.equal(typeof m.text, 'string');
      }
    },
  });
  await fuzzLoop({
    name: 'openRotationContent',
    count: 80,
    generate: (rng) => ({ input: viaJSON(mutateJSON(rng, rotationDoc, [chatDoc, grantDoc])), base: rotationDoc }),
    run: async (input) => {
      const signed = await secureMessageSign(ownerPriv, utf8(JSON.stringify(input)));
      const payload = await SecureCellSeal.withKey(roomKey).encrypt(signed, roomContext(room, epoch));
      return openRotation(payload, roomKey, { room, epoch: epoch + 1, owner });
    },
    allowed: isPayloadError,
    accept: (key, input) => {
      assert.ok(input.type === 'rotation' && input.room === room && input.epoch === epoch + 1);
      assert.ok(sameBytes(key, base64ToBytes(input.key)) && key.length === 32);
    },
  });
  await fuzzLoop({
    name: 'openJoinGrantContent',
    count: 250,
    generate: (rng) => ({ input: viaJSON(mutateJSON(rng, grantDoc, [chatDoc, rotationDoc])), base: grantDoc }),
    run: async (input) => openJoinGrant(await seal(joiningKey, input, token), joiningKey, token, room),
    allowed: isPayloadError,
    accept: (grant, input) => {
      assert.ok(input.room === room && Number.isSafeInteger(grant.epoch) && grant.epoch >= 0 && grant.epoch === input.epoch);
      assert.ok(grant.key.length === 32 && sameBytes(grant.key, base64ToBytes(input.key)));
    },
  });
  // And the sealed grant itself, byte-mutated: never opens.
  const sealedGrant = await sealJoinGrant({ room, epoch, key: roomKey }, joiningKey, token);
  await fuzzLoop({
    name: 'openJoinGrantBytes',
    count: 800,
    generate: (rng) => {
      const input = mutateBytes(rng, sealedGrant);
      return sameBytes(input, sealedGrant) ? null : { input, base: sealedGrant };
    },
    run: (input) => openJoinGrant(input, joiningKey, token, room),
    allowed: (e) => isPayloadError(e) && e.reason === 'undecryptable',
    accept: () => { throw new Error('a changed join grant opened'); },
  });
});

// ---- invite links ----

test('fuzz: invite link fragments (parseInviteFragment)', TIMEOUT, async () => {
  const s = scenarios[0];
  const owner = bytesToBase64(publicKeyFromPrivate(base64ToBytes(s.keys.owner)));
  const token = new Uint8Array(32).fill(5);
  const link = inviteLink('https://hush.example/', { room: s.room, token, owner, server: '1a2b 3c4d 5e6f 7a8b 9c0d' });
  const fragment = link.split('#')[1];
  const body = JSON.parse(new TextDecoder().decode(base64UrlToBytes(fragment)));
  const INVALID = 'This is not a valid Hush invite link.';
  await fuzzLoop({
    name: 'inviteFragment',
    count: 1500,
    generate: (rng) => {
      const kind = rng.int(3);
      let input;
      if (kind === 0) input = mutateString(rng, fragment);
      else if (kind === 1) input = bytesToBase64Url(mutateBytes(rng, base64UrlToBytes(fragment)));
      else input = bytesToBase64Url(utf8(JSON.stringify(mutateJSON(rng, body))));
      return input === fragment ? null : { input, base: fragment };
    },
    run: (input) => parseInviteFragment(input),
    allowed: (e) => e.constructor === Error && e.message === INVALID,
    accept: (invite) => {
      assert.match(invite.room, /^[A-Za-z0-9_-]{22}$/);
      assert.match(invite.server, /^[0-9a-f]{4}( [0-9a-f]{4}){4}$/);
      assert.ok(invite.token instanceof Uint8Array && invite.token.length === 32);
      parsePublicKey(base64ToBytes(invite.owner));
    },
  });
});

// ---- the key store record ----

const STORE_CONTEXT = utf8('hush-keystore-v1');
const STORE_MESSAGES = new Set([
  'This is not a Hush key store file.', 'The key store file is damaged.', 'The file is too large to be a key store.',
  'The password is right but the stored data is damaged. Import an exported copy.', 'The stored data has an unknown format.',
]);
const isStoreError = (e) => e instanceof WrongPassword || (e.constructor === Error && STORE_MESSAGES.has(e.message));

const memoryBackend = (record = null) => ({
  read: async () => record,
  writeIf: async () => true,
  exclusive: (fn) => fn(),
  channel: () => ({ postMessage() {}, close() {} }),
});

/** Passphrase cells whose iteration count (LE32 at byte 48) a mutation pushed up are folded back (see fuzz-themis). */
function foldIterations(bytes) {
  if (bytes.length >= 52) {
    const n = readU32LE(bytes, 48);
    if (n > 64 && n <= MAX_PBKDF2_ITERATIONS) bytes.set(new Uint8Array(new Uint32Array([1 + (n % 64)]).buffer), 48);
  }
  return bytes;
}

test('fuzz: key store files and records (importText, unlock)', TIMEOUT, async () => {
  const password = 'correct horse';
  const storeKey = new Uint8Array(32).fill(1);
  const documentValue = { v: 1, rooms: { AAAAAAAAAAAAAAAAAAAAAA: { name: 'room', phase: 'ready', outbox: [] } } };
  // A cheap lock (2 PBKDF2 iterations); the decoder honours the header's count.
  const lock = await SecureCellSeal.withPassphrase(password, { iterations: 2 }).encrypt(storeKey, STORE_CONTEXT);
  const data = await SecureCellSeal.withKey(storeKey).encrypt(utf8(JSON.stringify(documentValue)), STORE_CONTEXT);
  const record = { format: 'hush-keystore', v: 1, lock: bytesToBase64(lock), data: bytesToBase64(data) };
  const text = JSON.stringify(record);
  assert.deepStrictEqual((await KeyStore.importText(text, password, memoryBackend())).data, documentValue);

  const mutateRecord = (rng) => {
    const kind = rng.int(4);
    if (kind === 0) return viaJSON(mutateJSON(rng, record));
    const field = rng.bool() ? 'lock' : 'data';
    const bytes = foldIterations(mutateBytes(rng, field === 'lock' ? lock : data, [lock, data]));
    return { ...record, [field]: bytesToBase64(bytes) };
  };
  await fuzzLoop({
    name: 'storeImportText',
    count: 500,
    generate: (rng) => {
      const input = rng.bool(0.2) ? mutateString(rng, text) : JSON.stringify(mutateRecord(rng));
      return input === text ? null : { input, base: text };
    },
    run: (input) => KeyStore.importText(input, password, memoryBackend()),
    allowed: isStoreError,
    // Both cells are authenticated: whatever opens is the original document.
    accept: (store) => assert.deepStrictEqual(store.data, documentValue),
  });
  await fuzzLoop({
    name: 'storeUnlock',
    count: 400,
    generate: (rng) => ({ input: mutateRecord(rng), base: record }),
    run: (input) => KeyStore.unlock(password, memoryBackend(input)),
    allowed: isStoreError,
    accept: (store) => assert.deepStrictEqual(store.data, documentValue),
  });
  // The document inside, sealed correctly but hostile (another client's bug, an old format).
  await fuzzLoop({
    name: 'storeDocument',
    count: 60,
    generate: (rng) => ({ input: viaJSON(mutateJSON(rng, documentValue)), base: documentValue }),
    run: async (input) => {
      const sealed = await SecureCellSeal.withKey(storeKey).encrypt(utf8(JSON.stringify(input)), STORE_CONTEXT);
      return KeyStore.unlock(password, memoryBackend({ ...record, data: bytesToBase64(sealed) }));
    },
    allowed: isStoreError,
    accept: (store, input) => {
      assert.ok(store.data.v === 1 && store.data.rooms !== null && typeof store.data.rooms === 'object' && !Array.isArray(store.data.rooms));
      assert.equal(JSON.stringify(store.data), JSON.stringify(input)); // not deepStrictEqual: it recurses, and the input may nest thousands deep
    },
  });
});

// ---- server frames as the client parses them ----

test('fuzz: server frames (Connection.frame) over an established session', TIMEOUT, async () => {
  const t = loadVectors('secure_session.json').transcripts[0];
  const clock = () => t.messages[0].decoded.timestamp;
  const client = await SecureSession.restore(h(t.client_state_after_handshake.blob), { clock });
  const server = await SecureSession.restore(h(t.server_state_after_handshake.blob), { clock });
  const privateKey = base64ToBytes(scenarios[0].keys.bob);
  const pushes = [];
  const conn = new Connection({
    url: 'ws://127.0.0.1:1/ws', server: { id: 'server', key: h(t.server_keys.public) }, privateKey,
    onPush: (push) => pushes.push(push), onOpen: async () => {}, onState: () => {},
  });
  const ws = { send() {} };
  const corpus = [
    { type: 'hello', id: 'r1', rooms: [{ room: 'AAAAAAAAAAAAAAAAAAAAAA', owner: 'x', members: [], formerMembers: [] }], joins: [] },
    { type: 'error', id: 'r1', code: 'stale_epoch', message: 'the room moved on', epoch: 3 },
    { type: 'error', code: 'removed', message: 'you were removed' },
    { type: 'message', room: 'AAAAAAAAAAAAAAAAAAAAAA', seq: 4, kind: 'message', from: 'k', epoch: 0, at: 1, payload: 'AAAA' },
    { type: 'history', id: 'r1', messages: [], more: false },
  ];
  const FRAME_ERRORS = new Set(['bad frame', 'not a data message', 'reply is not JSON', 'bad reply']);
  let settled = null;
  const { done } = await fuzzLoop({
    name: 'connectionFrame',
    count: 1000,
    generate: (rng) => {
      const base = rng.pick(corpus);
      const bytes = rng.bool(0.25) ? mutateBytes(rng, utf8(JSON.stringify(base))) : utf8(JSON.stringify(mutateJSON(rng, base, corpus)));
      return bytes.length ? { input: bytes, base } : null;
    },
    run: async (input) => {
      settled = null;
      // The pending request's timer handle, which the connection clears; nothing waits on it.
      const timer = setTimeout(() => {}, 0);
      conn.pending.set('r1', {
        timer, resolve: (reply) => { settled = { reply }; }, reject: (error) => { settled = { error }; },
      });
      const frame = await server.wrap(input);
      try {
        await conn.frame(ws, client, frame.buffer.slice(frame.byteOffset, frame.byteOffset + frame.byteLength));
      } finally {
        conn.pending.delete('r1');
      }
      return settled;
    },
    allowed: (e) => (e.constructor === Error && FRAME_ERRORS.has(e.message)) || e instanceof ThemisError,
    accept: (outcome) => {
      if (outcome?.error) {
        // An error reply becomes a ServerError with bounded strings and a valid epoch or none.
        const e = outcome.error;
        assert.ok(e instanceof ServerError, `rejected with ${e}`);
        assert.ok(typeof e.code === 'string' && e.code.length <= 64 && typeof e.message === 'string' && e.message.length <= 300);
        assert.ok(e.epoch === undefined || (Number.isSafeInteger(e.epoch) && e.epoch >= 0));
      }
    },
  });
  assert.ok(done < 100 || pushes.length > 0, 'some frames were delivered as pushes');
});

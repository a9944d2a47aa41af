// JS client <-> JS server Secure Session in memory: handshakes, long interleaved exchanges,
// mutation of every handshake byte (state must be unchanged afterwards), windows, save/restore.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomInt, rejectsThemis, utf8 } from './helpers.mjs';
import {
  SecureSession, buildContainer, clientIdFromPublicKey, fingerprint, generateKeyPair,
  publicKeyFromClientId, readContainer,
} from '../../web/themis/index.mjs';
import { bytesToBase64Url } from '../../web/themis/bytes.mjs';

const dec = (b) => new TextDecoder().decode(b);

/** A small key directory; ids are Hush client ids (base64url of the public key). */
async function makeParties(n = 2) {
  const dir = new Map();
  const parties = [];
  for (let i = 0; i < n; i++) {
    const kp = await generateKeyPair();
    const id = clientIdFromPublicKey(kp.publicKey);
    dir.set(dec(id), kp.publicKey);
    parties.push({ ...kp, id });
  }
  return { parties, lookup: (id) => dir.get(dec(id)) ?? null };
}

async function newPair(options = {}) {
  const { parties: [c, s], lookup } = await makeParties(2);
  const client = await SecureSession.client({ id: c.id, privateKey: c.privateKey, getPublicKey: lookup, ...options });
  const server = await SecureSession.server({ id: s.id, privateKey: s.privateKey, getPublicKey: lookup, ...options });
  return { client, server, c, s, lookup };
}

async function handshake(client, server) {
  const m1 = await client.connectRequest();
  const r2 = await server.receive(m1);
  const r3 = await client.receive(r2.send);
  const r4 = await server.receive(r3.send);
  const r5 = await client.receive(r4.send);
  return { m1, m2: r2.send, m3: r3.send, m4: r4.send, results: [r2, r3, r4, r5] };
}

async function assertTalks(client, server, label = '') {
  const a = randomBytes(randomInt(1, 300));
  assert.deepEqual((await server.receive(await client.wrap(a))).plaintext, a, `${label} c->s`);
  const b = randomBytes(randomInt(1, 300));
  assert.deepEqual((await client.receive(await server.wrap(b))).plaintext, b, `${label} s->c`);
}

test('many handshakes; Hush client ids; both sides learn the peer id', async () => {
  for (let i = 0; i < 25; i++) {
    const { client, server, c, s } = await newPair();
    assert.equal(client.established, false);
    const { results } = await handshake(client, server);
    assert.deepEqual(results.map((r) => r.established), [false, false, true, true]);
    assert.equal(results[3].send, undefined);
    assert.ok(client.established && server.established);
    assert.deepEqual(server.peerId, c.id);
    assert.deepEqual(client.peerId, s.id);
    assert.deepEqual(publicKeyFromClientId(server.peerId), c.publicKey);
    await assertTalks(client, server, `pair ${i}`);
  }
});

test('long interleaved exchange both ways (bursts, in-order delivery)', async () => {
  const { client, server } = await newPair();
  await handshake(client, server);
  const queues = { toServer: [], toClient: [] };
  let sent = 0;
  while (sent < 1500) {
    const burst = randomInt(1, 7);
    for (let i = 0; i < burst; i++, sent++) {
      const msg = randomBytes(randomInt(1, 400));
      if (randomInt(0, 1)) queues.toServer.push([await client.wrap(msg), msg]);
      else queues.toClient.push([await server.wrap(msg), msg]);
    }
    for (const [q, rx] of [[queues.toServer, server], [queues.toClient, client]]) {
      const n = randomInt(0, q.length);
      for (const [frame, msg] of q.splice(0, n)) assert.deepEqual((await rx.receive(frame)).plaintext, msg);
    }
  }
  for (const [frame, msg] of queues.toServer) assert.deepEqual((await server.receive(frame)).plaintext, msg);
  for (const [frame, msg] of queues.toClient) assert.deepEqual((await client.receive(frame)).plaintext, msg);
});

/** All mutations of one handshake message: raw flips, truncations, extensions, and
 *  payload flips/extensions with a recomputed outer CRC (so signatures/MACs must catch them). */
function* mutations(message) {
  for (let i = 0; i < message.length; i++) {
    const m = Uint8Array.from(message); m[i] ^= 0x01; yield [`flip ${i}`, m];
    const n = Uint8Array.from(message); n[i] ^= 0x80; yield [`flip high ${i}`, n];
  }
  for (let len = 0; len < message.length; len++) yield [`truncate ${len}`, message.subarray(0, len)];
  for (const extra of [[0], [1, 2, 3], Array(32).fill(0xaa)]) {
    const m = new Uint8Array(message.length + extra.length); m.set(message); m.set(extra, message.length);
    yield [`extend ${extra.length}`, m];
  }
  const { tag, payload } = readContainer(message);
  for (let i = 0; i < payload.length; i++) {
    const p = Uint8Array.from(payload); p[i] ^= 0x04; yield [`payload flip ${i} (CRC fixed)`, buildContainer(tag, p)];
  }
  for (let len = 0; len < payload.length; len++) yield [`payload truncate ${len} (CRC fixed)`, buildContainer(tag, payload.subarray(0, len))];
  const ext = new Uint8Array(payload.length + 1); ext.set(payload);
  yield ['payload extend (CRC fixed)', buildContainer(tag, ext)];
}

test('every mutated handshake message is rejected and leaves the session usable', async () => {
  const { client, server } = await newPair();
  const m1 = await client.connectRequest();
  let checked = 0;
  for (const [what, bad] of mutations(m1)) { await rejectsThemis(() => server.receive(bad), null, `msg1 ${what}`); checked++; }
  const r2 = await server.receive(m1);
  for (const [what, bad] of mutations(r2.send)) { await rejectsThemis(() => client.receive(bad), null, `msg2 ${what}`); checked++; }
  const r3 = await client.receive(r2.send);
  for (const [what, bad] of mutations(r3.send)) { await rejectsThemis(() => server.receive(bad), null, `msg3 ${what}`); checked++; }
  const r4 = await server.receive(r3.send);
  for (const [what, bad] of mutations(r4.send)) { await rejectsThemis(() => client.receive(bad), null, `msg4 ${what}`); checked++; }
  // Themis' client accepts a truncated message-4 MAC; we require all 32 bytes.
  const { payload } = readContainer(r4.send);
  await rejectsThemis(() => client.receive(buildContainer('TSPM', payload.subarray(0, 1))), 'badMAC', 'msg4 MAC prefix');
  assert.deepEqual(await client.receive(r4.send), { established: true });
  await assertTalks(client, server, 'after mutations');
  assert.ok(checked > 1000, `checked ${checked} mutations`);
});

test('handshake misuse: wrong order, unknown or impostor peers, early data', async () => {
  const { client, server, lookup } = await newPair();
  await rejectsThemis(() => client.receive(new Uint8Array([1])), 'outOfState', 'client before connect');
  await rejectsThemis(() => server.connectRequest(), 'outOfState', 'server connect');
  await rejectsThemis(() => client.wrap(utf8('early')), 'outOfState', 'wrap before established');
  await rejectsThemis(() => client.save(), 'outOfState', 'save before established');
  const m1 = await client.connectRequest();
  await rejectsThemis(() => client.connectRequest(), 'outOfState', 'second connect');

  // A server that does not know the client.
  const stranger = await generateKeyPair();
  const lonely = await SecureSession.server({ id: utf8('srv'), privateKey: stranger.privateKey, getPublicKey: () => null });
  await rejectsThemis(() => lonely.receive(m1), 'unknownPeer', 'unknown client');
  const throwing = await SecureSession.server({ id: utf8('srv'), privateKey: stranger.privateKey, getPublicKey: () => { throw new Error('db down'); } });
  await rejectsThemis(() => throwing.receive(m1), 'unknownPeer', 'callback throws');
  // A server that maps the client's id to another key (impostor signature).
  const other = await generateKeyPair();
  const fooled = await SecureSession.server({ id: utf8('srv'), privateKey: stranger.privateKey, getPublicKey: () => other.publicKey });
  await rejectsThemis(() => fooled.receive(m1), 'badSignature', 'impostor');

  const r2 = await server.receive(m1);
  await rejectsThemis(() => server.receive(m1), null, 'msg1 again at the server');
  await rejectsThemis(() => server.wrap(utf8('early')), 'outOfState', 'server wrap before msg3');
  const r3 = await client.receive(r2.send);
  await rejectsThemis(() => client.receive(r2.send), null, 'msg2 again at the client');
  const r4 = await server.receive(r3.send);
  assert.ok(server.established);
  await rejectsThemis(() => server.receive(r3.send), null, 'msg3 again after establishment');
  await client.receive(r4.send);
  await assertTalks(client, server);
  assert.ok(lookup(client.peerId));
});

test('sequence window: (last, last+8] with uint32 wrap-around; timestamp window', async () => {
  let now = 1_800_000_000;
  const clock = () => now;
  const { client, server } = await newPair({ clock });
  await handshake(client, server);
  // Move both ends close to the uint32 wrap via a saved state (the TSSC layout is public).
  const cState = client.save();
  const sState = server.save();
  const setSeq = (blob, out, inn) => {
    const p = readContainer(blob).payload.slice();
    new DataView(p.buffer).setUint32(40, out);
    new DataView(p.buffer).setUint32(44, inn);
    return buildContainer('TSSC', p);
  };
  const c = await SecureSession.restore(setSeq(cState, 0xfffffffc, 0), { clock });
  const s = await SecureSession.restore(setSeq(sState, 0, 0xfffffffb), { clock });
  const frames = [];
  for (let i = 0; i < 20; i++) frames.push(await c.wrap(utf8(`m${i}`))); // seqs fffffffc .. 0000000f
  assert.equal(dec((await s.receive(frames[0])).plaintext), 'm0');
  await rejectsThemis(() => s.receive(frames[0]), 'replay', 'replay');
  await rejectsThemis(() => s.receive(frames[9]), 'sequenceOutOfWindow', '+9 from last');
  assert.equal(dec((await s.receive(frames[8])).plaintext), 'm8'); // +8 across the wrap
  await rejectsThemis(() => s.receive(frames[5]), 'replay', 'older than last');
  assert.equal(dec((await s.receive(frames[9])).plaintext), 'm9');
  // Timestamps: +-86400 s of the receiver's clock (inclusive), state unchanged on failure.
  const sentAt = now;
  now = sentAt + 86401;
  await rejectsThemis(() => s.receive(frames[10]), 'staleTimestamp', 'too old');
  now = sentAt - 86401;
  await rejectsThemis(() => s.receive(frames[10]), 'staleTimestamp', 'from the future');
  now = sentAt + 86400;
  assert.equal(dec((await s.receive(frames[10])).plaintext), 'm10');
});

test('save/restore mid-conversation continues both directions; malformed blobs rejected', async () => {
  const { client, server } = await newPair();
  await handshake(client, server);
  await assertTalks(client, server);
  const c2 = await SecureSession.restore(client.save());
  const s2 = await SecureSession.restore(server.save());
  assert.deepEqual(c2.save(), client.save());
  const f = await c2.wrap(utf8('after restore'));
  assert.equal(dec((await s2.receive(f)).plaintext), 'after restore');
  await rejectsThemis(() => s2.receive(f), 'replay', 'restored replay');
  await assertTalks(c2, s2, 'restored');
  const blob = client.save();
  for (let i = 0; i < blob.length; i++) {
    const bad = Uint8Array.from(blob); bad[i] ^= 0x10;
    await rejectsThemis(() => SecureSession.restore(bad), null, `TSSC flip ${i}`);
  }
  const p = readContainer(blob).payload.slice(); p[7] = 2;
  await rejectsThemis(() => SecureSession.restore(buildContainer('TSSC', p)), 'invalidArgument', 'is_client 2');
  await rejectsThemis(() => SecureSession.restore(buildContainer('TSSC', p.subarray(0, 47))), 'badLength', 'short TSSC');
});

test('concurrent delivery of one frame: exactly one success', async () => {
  const { client, server } = await newPair();
  await handshake(client, server);
  const frame = await client.wrap(utf8('once'));
  const results = await Promise.allSettled([server.receive(frame), server.receive(frame), server.receive(frame)]);
  assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
  for (const r of results.filter((x) => x.status === 'rejected')) assert.equal(r.reason.code, 'replay');
  const wraps = await Promise.all([1, 2, 3].map((i) => client.wrap(utf8(`w${i}`))));
  for (const [i, w] of wraps.entries()) assert.equal(dec((await server.receive(w)).plaintext), `w${i + 1}`);
});

test('Hush identity helpers and fingerprint format', async () => {
  const kp = await generateKeyPair();
  const id = clientIdFromPublicKey(kp.publicKey);
  assert.equal(dec(id), bytesToBase64Url(kp.publicKey));
  assert.match(dec(id), /^[A-Za-z0-9_-]{60}$/);
  assert.deepEqual(publicKeyFromClientId(id), kp.publicKey);
  await rejectsThemis(() => publicKeyFromClientId(utf8(dec(id) + '=')), 'invalidKey', 'padded id');
  await rejectsThemis(() => publicKeyFromClientId(utf8('client')), null, 'not a key');
  await rejectsThemis(() => clientIdFromPublicKey(kp.privateKey), 'invalidKey', 'private key as id');
  const fp = await fingerprint(kp.publicKey);
  assert.match(fp, /^[0-9a-f]{4}( [0-9a-f]{4}){4}$/);
  // Known answer: SHA-256 of the B.1 public key container, first 10 bytes.
  const b1 = new Uint8Array(Buffer.from('554543320000002d518694bd03e98d43b41e5a92a40c74d53154ed205b3e0bdb0fd2a23b7dad673598bf1c5f17', 'hex'));
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', b1));
  const expected = Buffer.from(digest.subarray(0, 10)).toString('hex').match(/.{4}/g).join(' ');
  assert.equal(await fingerprint(b1), expected);
});

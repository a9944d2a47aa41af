// Runs every entry of every Themis vector file (positive and negative) exactly.
// Fixtures: Tests/Fixtures/themis-vectors/ or $HUSH_THEMIS_VECTORS.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { VECTOR_DIR, assertBytes, h, hex, loadVectors, rejectsThemis, replayRandom, utf8 } from './helpers.mjs';
import {
  SecureCellContextImprint, SecureCellSeal, SecureCellTokenProtect, SecureSession, crc32c,
  deriveSessionIdBytes, deriveSessionKeys, exportPrivateKey, exportPublicKey, handshakeMac,
  parseConfirm, parseFinish, parseHello, parsePrivateKey, parsePublicKey, publicKeyFromPrivate,
  secureMessageDecrypt, secureMessageEncrypt, secureMessageKind, secureMessageSign, secureMessageVerify,
  signedData, soterKdf,
} from '../../web/themis/index.mjs';
import { compressPoint, uncompressedPoint } from '../../web/themis/p256.mjs';
import { importPrivateKey, importPublicKey } from '../../web/themis/keys.mjs';
import { ecdh, verifyDer } from '../../web/themis/ec.mjs';
import { readU32LE } from '../../web/themis/bytes.mjs';

const checked = {};
const count = (file) => { checked[file] = (checked[file] || 0) + 1; };

test('keys.json: key pairs parse, re-export byte-exactly, and work in every accepted form', async () => {
  const v = loadVectors('keys.json');
  for (const kp of v.key_pairs) {
    const priv = h(kp.private_key);
    const pub = h(kp.public_key);
    const d = parsePrivateKey(priv);
    assert.equal(d.toString(16).padStart(64, '0'), kp.private_scalar, kp.id);
    const point = parsePublicKey(pub);
    assertBytes(compressPoint(point), kp.public_point_compressed, kp.id);
    assertBytes(uncompressedPoint(point), kp.public_point_uncompressed, kp.id);
    assertBytes(exportPrivateKey(d), kp.private_key, `${kp.id} private re-export`);
    assertBytes(exportPublicKey(point), kp.public_key, `${kp.id} public re-export`);
    assertBytes(exportPublicKey(point, { compressed: false }), kp.public_key_uncompressed_container, `${kp.id} 77-byte export`);
    assertBytes(publicKeyFromPrivate(priv), kp.public_key, `${kp.id} public from private`);
    for (const [which, container] of [['private', priv], ['public', pub]]) {
      const p = kp.parsed[which];
      assert.equal(String.fromCharCode(...container.subarray(0, 4)), p.tag);
      assert.equal(container.length, p.size);
      assert.equal(hex(container.subarray(8, 12)), p.crc_field);
      const zeroed = Uint8Array.from(container); zeroed.fill(0, 8, 12);
      assert.equal('0x' + crc32c(zeroed).toString(16).padStart(8, '0'), p.crc32c_value);
    }
    // 44-byte private and 77-byte public forms (Themis accepts both).
    const priv44 = h(kp.private_key_32byte_container);
    const pub77 = h(kp.public_key_uncompressed_container);
    assert.equal(kp.private_key_32byte_container_valid_status, 0);
    assert.equal(kp.public_key_uncompressed_container_valid_status, 0);
    assert.equal(parsePrivateKey(priv44), d);
    assert.deepEqual(parsePublicKey(pub77), point);
    assertBytes(publicKeyFromPrivate(priv44), kp.public_key, `${kp.id} public from 44-byte private`);
    const msg = utf8(`usable ${kp.id}`);
    const signed = await secureMessageSign(priv44, msg);
    assert.deepEqual(await secureMessageVerify(pub77, signed), msg);
    assert.deepEqual(await secureMessageVerify(pub, signed), msg);
    count('keys.json');
  }
});

test('keys.json: every invalid key is rejected in its used_as role', async () => {
  const v = loadVectors('keys.json');
  const signer = h(v.key_pairs[0].private_key);
  const signed = await secureMessageSign(signer, utf8('signed by key pair 0'));
  for (const k of v.invalid_keys) {
    const key = h(k.key);
    assert.equal(k.use.expect, 'error');
    if (k.used_as === 'public') {
      await rejectsThemis(() => parsePublicKey(key), null, k.id);
      await rejectsThemis(() => secureMessageVerify(key, signed), null, k.id);
    } else {
      assert.equal(k.used_as, 'private');
      await rejectsThemis(() => parsePrivateKey(key), null, k.id);
      await rejectsThemis(() => secureMessageSign(key, utf8('abc')), null, k.id);
    }
    count('keys.json');
  }
});

test('soter_kdf.json: every output, and its truncations', async () => {
  const v = loadVectors('soter_kdf.json');
  for (const e of v.vectors) {
    const contexts = e.contexts.map(h);
    assertBytes(await soterKdf(h(e.key), e.label, contexts, 32), e.output_32, e.id);
    for (const n of [4, 12, 16]) {
      assertBytes(await soterKdf(h(e.key), e.label, contexts, n), e.output_32.slice(0, 2 * n), `${e.id} L=${n}`);
    }
    count('soter_kdf.json');
  }
});

function sealCell(e, options) {
  return e.mode === 'seal_passphrase'
    ? SecureCellSeal.withPassphrase(h(e.passphrase_utf8), options)
    : SecureCellSeal.withKey(h(e.key), options);
}

test('secure_cell_seal.json: every entry (decrypt, byte-exact re-encrypt, negatives)', async () => {
  const v = loadVectors('secure_cell_seal.json');
  for (const e of v.vectors) {
    if (e.passphrase !== undefined) assertBytes(utf8(e.passphrase), e.passphrase_utf8, `${e.id} UTF-8`);
    const decryptContext = h(e.decrypt_context !== undefined ? e.decrypt_context : e.context);
    if (e.expect === 'error') {
      if (e.operation === 'encrypt') {
        await rejectsThemis(async () => sealCell(e).encrypt(h(e.plaintext), h(e.context)), ['emptyInput'], e.id);
      } else {
        assert.equal(e.operation, 'decrypt', e.id);
        await rejectsThemis(async () => sealCell(e).decrypt(h(e.ciphertext), decryptContext), null, e.id);
      }
      count('secure_cell_seal.json');
      continue;
    }
    assert.equal(e.expect, 'ok', e.id);
    const sealed = h(e.ciphertext);
    assertBytes(await sealCell(e).decrypt(sealed, decryptContext), e.plaintext, e.id);
    // Re-encrypt byte-exactly from the recorded IV (and salt/iterations) -- only AES-256 cells,
    // the only kind we (and Themis) write.
    const alg = readU32LE(sealed, 0);
    if (e.mode === 'seal' && alg === 0x40010100) {
      const iv = sealed.subarray(16, 28);
      if (e.parsed) assertBytes(iv, e.parsed.iv, `${e.id} parsed iv`);
      const again = await sealCell(e, { random: replayRandom(iv) }).encrypt(h(e.plaintext), h(e.context));
      assertBytes(again, e.ciphertext, `${e.id} re-encrypt`);
    } else if (e.mode === 'seal_passphrase' && alg === 0x41010100) {
      const iv = sealed.subarray(20, 32);
      const iterations = readU32LE(sealed, 48);
      const salt = sealed.subarray(54, 54 + (sealed[52] | (sealed[53] << 8)));
      if (e.parsed) {
        assert.equal(iterations, e.parsed.pbkdf2_iterations);
        assertBytes(salt, e.parsed.salt, `${e.id} salt`);
      }
      const again = await sealCell(e, { random: replayRandom(salt, iv), iterations }).encrypt(h(e.plaintext), h(e.context));
      assertBytes(again, e.ciphertext, `${e.id} re-encrypt`);
    }
    count('secure_cell_seal.json');
  }
});

test('secure_cell_token_protect.json: every entry', async () => {
  const v = loadVectors('secure_cell_token_protect.json');
  for (const e of v.vectors) {
    const cell = () => SecureCellTokenProtect.withKey(h(e.key));
    if (e.expect === 'error') {
      if (e.operation === 'encrypt') {
        await rejectsThemis(() => cell().encrypt(h(e.plaintext), h(e.context)), ['emptyInput'], e.id);
      } else {
        await rejectsThemis(() => cell().decrypt(h(e.ciphertext), h(e.token), h(e.context)), null, e.id);
      }
      count('secure_cell_token_protect.json');
      continue;
    }
    assert.equal(e.expect, 'ok', e.id);
    assertBytes(await cell().decrypt(h(e.ciphertext), h(e.token), h(e.context)), e.plaintext, e.id);
    const iv = h(e.token).subarray(16, 28);
    const again = await SecureCellTokenProtect.withKey(h(e.key), { random: replayRandom(iv) }).encrypt(h(e.plaintext), h(e.context));
    assertBytes(again.encrypted, e.ciphertext, `${e.id} re-encrypt`);
    assertBytes(again.token, e.token, `${e.id} re-encrypt token`);
    const seal = await SecureCellSeal.withKey(h(e.key), { random: replayRandom(iv) }).encrypt(h(e.plaintext), h(e.context));
    assertBytes(seal, e.token + e.ciphertext, `${e.id} seal == token || ciphertext`);
    count('secure_cell_token_protect.json');
  }
});

test('secure_cell_context_imprint.json: every entry, including exact garbage', async () => {
  const v = loadVectors('secure_cell_context_imprint.json');
  for (const e of v.vectors) {
    const cell = () => SecureCellContextImprint.withKey(h(e.key));
    if (e.expect === 'error') {
      if (e.operation === 'encrypt') {
        await rejectsThemis(async () => cell().encrypt(h(e.plaintext), h(e.context)), ['emptyInput'], e.id);
      } else {
        await rejectsThemis(async () => cell().decrypt(h(e.ciphertext), h(e.context)), ['emptyInput'], e.id);
      }
    } else if (e.expect === 'garbage') {
      assertBytes(await cell().decrypt(h(e.ciphertext), h(e.context)), e.decrypted, e.id);
    } else {
      assert.equal(e.expect, 'ok', e.id);
      assertBytes(await cell().encrypt(h(e.plaintext), h(e.context)), e.ciphertext, `${e.id} encrypt`);
      assertBytes(await cell().decrypt(h(e.ciphertext), h(e.context)), e.plaintext, `${e.id} decrypt`);
    }
    count('secure_cell_context_imprint.json');
  }
});

test('secure_message.json: every entry', async () => {
  const v = loadVectors('secure_message.json');
  for (const e of v.vectors) {
    if (e.expect === 'error') {
      const op = {
        encrypt: () => secureMessageEncrypt(h(e.sender_private), h(e.recipient_public), h(e.plaintext)),
        decrypt: () => secureMessageDecrypt(h(e.recipient_private), h(e.sender_public), h(e.ciphertext)),
        sign: () => secureMessageSign(h(e.signer_private), h(e.plaintext)),
        verify: () => secureMessageVerify(h(e.signer_public), h(e.signed)),
      }[e.operation];
      assert.ok(op, `${e.id}: unknown operation ${e.operation}`);
      await rejectsThemis(op, null, e.id);
    } else if (e.mode === 'encrypt') {
      assert.equal(e.expect, 'ok', e.id);
      const ct = h(e.ciphertext);
      assert.equal(secureMessageKind(ct), 'encrypted');
      assertBytes(await secureMessageDecrypt(h(e.recipient_private), h(e.sender_public), ct), e.plaintext, e.id);
      if (e.shared_secret) {
        const own = await importPrivateKey(h(e.sender_private));
        assertBytes(await ecdh(own.ecdh, await importPublicKey(h(e.recipient_public), 'ECDH')), e.shared_secret, `${e.id} ECDH`);
      }
      if (e.sender_private) {
        const iv = ct.subarray(8 + 16, 8 + 28);
        const again = await secureMessageEncrypt(h(e.sender_private), h(e.recipient_public), h(e.plaintext), { random: replayRandom(iv) });
        assertBytes(again, e.ciphertext, `${e.id} re-encrypt`);
      }
    } else {
      assert.equal(e.mode, 'sign', e.id);
      assert.equal(e.expect, 'ok', e.id);
      const signed = h(e.signed);
      assert.equal(secureMessageKind(signed), 'signed');
      assertBytes(await secureMessageVerify(h(e.signer_public), signed), e.output || e.plaintext, e.id);
      if (e.signer_private) {
        const mine = await secureMessageSign(h(e.signer_private), h(e.plaintext));
        assertBytes(await secureMessageVerify(h(e.signer_public), mine), e.plaintext, `${e.id} re-sign`);
      }
    }
    count('secure_message.json');
  }
});

/** Restore both ends from their TSSC blobs; decrypt and byte-exactly re-wrap every recorded message. */
async function replayTranscript(t) {
  const ctx = `${t.id}`;
  const cid = h(t.client_id);
  const sid = h(t.server_id);
  const clientPub = h(t.client_keys.public);
  const serverPub = h(t.server_keys.public);
  const [m1, m2, m3, m4] = t.handshake.slice(0, 4).map((s) => h(s.message));

  // Passive handshake check: structure, signatures, session id, MACs.
  const hello = parseHello(m1);
  assertBytes(hello.id, t.client_id, `${ctx} msg1 id`);
  assertBytes(hello.ephemeralKey, t.handshake[0].parsed.parts[1].container, `${ctx} msg1 Ceph`);
  assertBytes(hello.signature, t.handshake[0].parsed.parts[2].bytes, `${ctx} msg1 signature`);
  const reply = parseHello(m2);
  assertBytes(reply.id, t.server_id, `${ctx} msg2 id`);
  assertBytes(reply.ephemeralKey, t.handshake[1].parsed.parts[1].container, `${ctx} msg2 Seph`);
  const finish = parseFinish(m3);
  assertBytes(finish.signature, t.handshake[2].parsed.parts[0].bytes, `${ctx} msg3 signature`);
  const confirm = parseConfirm(m4);
  const [ceph, seph] = [hello.ephemeralKey, reply.ephemeralKey];
  const cKey = await importPublicKey(clientPub, 'ECDSA');
  const sKey = await importPublicKey(serverPub, 'ECDSA');
  await verifyDer(cKey, hello.signature, signedData.hello(ceph));
  await verifyDer(sKey, reply.signature, signedData.reply(ceph, seph, cid, sid));
  await verifyDer(cKey, finish.signature, signedData.finish(ceph, seph, cid, sid));
  await rejectsThemis(() => verifyDer(sKey, finish.signature, signedData.finish(ceph, seph, cid, sid)), 'badSignature', `${ctx} wrong signer`);
  const sidBytes = await deriveSessionIdBytes(ceph, seph, cid, sid);
  assertBytes(sidBytes, t.passive_handshake_check.session_id_kdf_output, `${ctx} SID`);
  const cs = t.client_state_after_handshake;
  const ss = t.server_state_after_handshake;
  const mk = h(cs.master_key);
  assertBytes(await handshakeMac(mk, seph, sidBytes), hex(finish.mac), `${ctx} msg3 MAC`);
  assertBytes(await handshakeMac(mk, ceph, sidBytes), hex(confirm.mac), `${ctx} msg4 MAC`);
  const keys = await deriveSessionKeys(mk, sidBytes);
  assertBytes(keys.clientKey, t.derived_message_keys.client_key, `${ctx} client key`);
  assertBytes(keys.serverKey, t.derived_message_keys.server_key, `${ctx} server key`);
  assert.equal(keys.clientSeq, cs.out_seq);
  assert.equal(keys.serverSeq, cs.in_seq);
  assert.equal(readU32LE(sidBytes, 0), cs.session_id);

  // Our server accepts the recorded message 1 (lookup by the client's id).
  const asked = [];
  const server0 = await SecureSession.server({
    id: sid, privateKey: h(t.server_keys.private),
    getPublicKey: (id) => { asked.push(hex(id)); return hex(id) === t.client_id ? clientPub : null; },
  });
  const out = await server0.receive(m1);
  assert.equal(out.established, false);
  assertBytes(parseHello(out.send).id, t.server_id, `${ctx} our msg2`);
  assert.deepEqual(asked, t.callback_calls.filter((c) => c.asked_by === 'server').slice(0, 1).map((c) => c.requested_id));

  // Saved states: restore, and save() reproduces the blob.
  let now = t.messages[0].decoded.timestamp;
  let nextIv = null; // the recorded IV of the message being re-wrapped
  const options = { clock: () => now, random: (n) => { assert.equal(n, 16); return nextIv; } };
  const client = await SecureSession.restore(h(cs.blob), options);
  const server = await SecureSession.restore(h(ss.blob), options);
  assert.equal(client.role, 'client');
  assert.equal(server.role, 'server');
  assertBytes(client.save(), cs.blob, `${ctx} client save`);
  assertBytes(server.save(), ss.blob, `${ctx} server save`);
  await rejectsThemis(() => SecureSession.restore(h(cs.blob).subarray(0, 59)), null, `${ctx} truncated TSSC`);

  for (const [i, m] of t.messages.entries()) {
    const [sender, receiver] = m.from === 'client' ? [client, server] : [server, client];
    now = m.decoded.timestamp;
    const wrapped = h(m.wrapped);
    assert.equal(m.decoded.length_field, m.plaintext.length / 2 + 12);
    assertBytes((await receiver.receive(wrapped)).plaintext, m.plaintext, `${ctx} message ${i}`);
    nextIv = h(m.decoded.iv);
    const again = await sender.wrap(h(m.plaintext));
    assertBytes(again, m.wrapped, `${ctx} re-wrap ${i}`);
    count('secure_session.json');
  }

  // Negatives, all given to the server after the messages above, in order.
  let lastAccepted = null;
  for (const n of t.negative_messages) {
    const wrapped = h(n.wrapped);
    if (n.id === 'quirk_appended_bytes') {
      // Stricter than Themis: bytes after the GCM tag are rejected (state unchanged).
      await rejectsThemis(() => server.receive(wrapped), 'authenticationFailed', `${ctx} ${n.id}`);
      lastAccepted = wrapped.subarray(0, wrapped.length - 2);
    } else if (n.id === 'quirk_replay') {
      // Themis accepted the appended copy first; we rejected it, so deliver the original
      // (which is exactly this entry) once, then its replay must be rejected.
      assertBytes(wrapped, hex(lastAccepted), `${ctx} replay is the un-appended message`);
      assertBytes((await server.receive(wrapped)).plaintext, n.output, `${ctx} first delivery`);
      await rejectsThemis(() => server.receive(wrapped), 'replay', `${ctx} ${n.id}`);
    } else if (n.expect === 'error') {
      await rejectsThemis(() => server.receive(wrapped), null, `${ctx} ${n.id}`);
    } else {
      assert.equal(n.expect, 'ok', n.id);
      assertBytes((await server.receive(wrapped)).plaintext, n.output || n.plaintext, `${ctx} ${n.id}`);
      if (n.id === 'original_after_negatives') {
        await rejectsThemis(() => server.receive(wrapped), 'replay', `${ctx} replay of ${n.id}`);
      }
    }
    count('secure_session.json');
  }
  await rejectsThemis(() => client.wrap(new Uint8Array(0)), 'emptyInput', `${ctx} wrap empty`);
  assert.equal(t.wrap_empty_message_status, 12);
  count('secure_session.json'); // the transcript's handshake + state checks
}

test('secure_session.json: every transcript, data message and negative', async () => {
  const v = loadVectors('secure_session.json');
  for (const t of v.transcripts) await replayTranscript(t);
});

test('vector count', (t) => {
  const total = Object.values(checked).reduce((a, b) => a + b, 0);
  const line = `checked ${total} vectors from ${VECTOR_DIR}: ${JSON.stringify(checked)}`;
  t.diagnostic(line);
  assert.ok(total > 0);
});

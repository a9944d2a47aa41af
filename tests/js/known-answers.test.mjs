// Known-answer values from Appendix B of the Themis wire-format document (made with real Themis 0.15).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { assertBytes, h, hex, rejectsThemis, replayRandom, utf8 } from './helpers.mjs';
import {
  SecureCellContextImprint, SecureCellSeal, SecureCellTokenProtect, SecureSession, buildContainer, crc32c,
  deriveSessionKeys, normalizePublicKey, parseFinish, parseHello, publicKeyFromPrivate,
  secureMessageDecrypt, secureMessageVerify, signedData, soterKdf,
} from '../../web/themis/index.mjs';
import { importPublicKey } from '../../web/themis/keys.mjs';
import { verifyDer } from '../../web/themis/ec.mjs';
import { readU32BE } from '../../web/themis/bytes.mjs';

test('CRC-32C check value and the TSID example container (1.2)', () => {
  assert.equal(crc32c(utf8('123456789')), 0xe3069283);
  assertBytes(buildContainer('TSID', utf8('client')), '54534944000000124a5d0d03636c69656e74', 'TSID container');
});

test('B.1 key containers', () => {
  const priv = h('524543320000002d48912c2100bac9498041d5fb4f2fe462c959be9b8d45685d580ec9843fc093464aa766d1bf');
  const pub = '554543320000002d518694bd03e98d43b41e5a92a40c74d53154ed205b3e0bdb0fd2a23b7dad673598bf1c5f17';
  const pub77 = '554543320000004d354ed65704e98d43b41e5a92a40c74d53154ed205b3e0bdb0fd2a23b7dad673598bf1c5f17a3ada0017494ee75182fe2beb1e109fd50638fd76f2b6f40d3489a5fb63fdcb3';
  assertBytes(publicKeyFromPrivate(priv), pub, 'public from private');
  assertBytes(normalizePublicKey(h(pub), { compressed: false }), pub77, '77-byte form');
  assertBytes(normalizePublicKey(h(pub77)), pub, 'back to 45-byte form');
});

test('B.2 Soter KDF', async () => {
  const rows = [
    ['000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f', 'Themis secure cell message key', ['13000000', '637478'], 32,
      '88f5c89cd301bcc0c9ba3c7da80e23758517b6df65c8112d20fa1b9e34d43a74'],
    [null, 'Themis secure session unique identifier', ['41'.repeat(45), '42'.repeat(45), '636c69656e74', '736572766572'], 4, '074372f7'],
    [null, 'short', ['0102'], 32, '10e5a3de70e7e6acc7c188752945e69d6d9bb51ebf92318633b781ec173b1f42'],
    ['6b', 'Themis secure cell message iv', ['636f6e74657874'], 16, 'a42c88bba22464afca76a689d35e3337'],
  ];
  for (const [key, label, ctx, n, out] of rows) assertBytes(await soterKdf(h(key), label, ctx.map(h), n), out, label);
  // An empty key means the implicit key; with an explicit key, contexts are plainly
  // concatenated (with the implicit key each context is XORed in at offset 0, so not there).
  assertBytes(await soterKdf(new Uint8Array(0), 'short', [h('0102')], 32),
    '10e5a3de70e7e6acc7c188752945e69d6d9bb51ebf92318633b781ec173b1f42', 'empty key = implicit');
  assertBytes(await soterKdf(h('6b'), 'Themis secure cell message iv', [utf8('con'), new Uint8Array(0), utf8('text')], 16),
    'a42c88bba22464afca76a689d35e3337', 'split context');
  await rejectsThemis(() => soterKdf(h('00'), 'x', [], 33), 'invalidArgument', 'L > 32');
});

test('B.3 Secure Cell', async () => {
  const key = h('000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f');
  const seal = SecureCellSeal.withKey(key);
  const withCtx = '000101400c0000001000000013000000d07087fdb9aabd4a07559e6390e7449937152c6f0e291285a08fec972f05510f8a7d731a8bc8d4eb36314fab9e4379';
  const noCtx = '000101400c00000010000000130000009f7b6ac3c5f0864e7a7f5649407661d6b57b45ce40eaa9a0a8e9bf9ba9e25427b636d2c8705abb27f2a3fc3a1961a3';
  assertBytes(await seal.decrypt(h(withCtx), utf8('seal vector context')), hex(utf8('seal vector message')), 'seal ctx');
  assertBytes(await seal.decrypt(h(noCtx)), hex(utf8('seal vector message')), 'seal no ctx');
  await rejectsThemis(() => seal.decrypt(h(withCtx)), 'authenticationFailed', 'missing context');
  const again = await SecureCellSeal.withKey(key, { random: replayRandom(h(withCtx).subarray(16, 28)) })
    .encrypt(utf8('seal vector message'), utf8('seal vector context'));
  assertBytes(again, withCtx, 'seal re-encrypt');

  const tpKey = h('34823a024395d3a571b7469ee15737707ca46ff2f79983166adc1be6df598b4a');
  const token = '000101400c000000100000001e000000758a462c534e14c01985c9dbea5282013ff2244ed72bd5596a408e3a';
  const tpCt = 'e3361a050026c8a78235add35bb0e6e627883bd5ed7da79693213ab53df0';
  const interop = '5365637572652043656c6c20696e7465726f70206d6573736167652000ff';
  assertBytes(await SecureCellTokenProtect.withKey(tpKey).decrypt(h(tpCt), h(token), utf8('some context')), interop, 'token protect');

  const ci = SecureCellContextImprint.withKey(key);
  const ciCt = '292dc12796ffc22fcf5569505a4b146a309c4cddc26036349033939f514a';
  const msg = utf8('imprint message, deterministic');
  assertBytes(await ci.encrypt(msg, utf8('imprint context')), ciCt, 'imprint');
  assertBytes(await ci.decrypt(h(ciCt), utf8('imprint context')), hex(msg), 'imprint decrypt');
  const k = await soterKdf(key, 'Themis secure cell message key', [h('1e000000')], 32);
  assertBytes(k, 'bd39178363ca03147e39ad3c2050f1a454a4b1d021fb856951a832f6c3d42d9a', 'imprint derived key');
  assertBytes(await soterKdf(k, 'Themis secure cell message iv', [utf8('imprint context')], 16), '75b77faa9a82797749f8f6955bde6468', 'imprint IV');

  const pass = SecureCellSeal.withPassphrase('pretty please with a cherry on top é');
  const sealed = '000101410c000000100000001e00000016000000b367e22ffc8d0fd0b971825cbc6bc1bb16f268fe86be1b9f12e00222feca040010009542de113375187b16c9ca5825520294d26e9f66259fdd102bc35a0af96d0c8b22a285884735b2d269b4765d53fb';
  assertBytes(await pass.decrypt(h(sealed), utf8('some context')), interop, 'passphrase');
});

test('B.4 Secure Message', async () => {
  const senderPub = h('554543320000002d7d32f4ea025b27f60c50eae9e1f82538a0b0fb87aa68f1cb541893003e4e1215194a2b96bf');
  const recipientPriv = h('524543320000002d54daaccd00c5483b5d62fa4c32573765676c5b8e50dcf5775a18e15e19ca9f5b4ed8877f25');
  const interop = '5365637572652043656c6c20696e7465726f70206d6573736167652000ff';
  const encrypted = h('2027042652000000000101400c000000100000001e000000b1484c12d0ad748d51722992c26d6e8fd14fe027a400b31a3d8f3fbfe78af84ca370dcd37b95f06b10b82563147c86039deaf4e576bf8f331100');
  assertBytes(await secureMessageDecrypt(recipientPriv, senderPub, encrypted), interop, 'decrypt');
  const signed = h('202604261e000000470000005365637572652043656c6c20696e7465726f70206d6573736167652000ff3045022100c3fa4c30d638f01c44df97106d5e02520af2f7e7b171d62318da2ab42316655602206b269b5b33240d93e0b9d0ced30962ef2d596c979d93dd2af23b0b3c5991406c');
  assertBytes(await secureMessageVerify(senderPub, signed), interop, 'verify');
});

test('B.5 Secure Session: our client against the recorded Themis server', async () => {
  const cid = h('7265696d706c20636c69656e74206964');
  const sid = h('70797468656d697320736572766572');
  const clientPriv = h('524543320000002d8763ab22005a973b2001c71809b33c0eae8ecad6d05a3746d064deb43a29c6d30986ef0097');
  const clientPub = h('554543320000002d8b5298ef036db0f2ef46349ebe3864eebdeb22f00a21dc0a37e15c3f60baf485e669dd0114');
  const ephPriv = h('524543320000002dd6aa1df60040b0cf5ff2497f0f3258c0395acefea17aab2d5457af82a46c297fc929418518');
  const serverPub = h('554543320000002dab14a92d02b3633bacff4460873b251ca9861116c8ae180b0d9dc0665b8c270cd2acb9d417');
  const msg1 = h('5453504d0000009d8b484337545349440000001cc0640b3b7265696d706c20636c69656e74206964554543320000002d5113f7e803264c4adfdf8e9d8f56c9e2d00d45ea52c28b7530e1abb8a4c760299f5cf5e0923046022100857d2afd2f43ffb32b3fe88fa7ca242502b52c4081a309e1e579711b9dcaf040022100cca69b08dfe0aab09492697e52154897c73855a2effd51a3faacbde37eb1a98f');
  const msg2 = h('5453504d0000009a9c3f7eb9545349440000001b8152445b70797468656d697320736572766572554543320000002d85ca48bd02c783f39907fdf67ffd071948a2a9aa0015954c961b2c7e34f141b33dbd826f5b304402203d0d2296ed3190f9812dc56f980fd234c1f904b9742c9f4966144c948631a34c022038220d5b68b73a5f55cd6e58df778fee2863d5962d08cdf5308c15eb9f7cd516');
  const msg3 = h('5453504d000000737ff3883f3045022100e8db2fcb121275e7ebd1f9568803bbfa6d2a40a8d1f9098f6377182ce61c13f302204c196624c62a27fd803bbd3b68f8b5682b6e021819322ae8df20b8c29ed7e9ab2850534ec9789c90ad7bad2418f3ae06aa29b18e262e1c874dbe0d111ea5da9d');
  const msg4 = h('5453504d0000002c9d2c1279c6dd0cf1e794452f51c7cb412850ed81d2e8f8c2dd5d78f32536027e7a35e2d7');
  const clock = () => 1795920314;

  let iv = null;
  const client = await SecureSession.client({
    id: cid, privateKey: clientPriv, ephemeralPrivateKey: ephPriv, clock, random: (n) => iv.slice(0, n),
    getPublicKey: (id) => (hex(id) === hex(sid) ? serverPub : null),
  });
  const cKey = await importPublicKey(clientPub, 'ECDSA');

  // Message 1: same id and ephemeral key as recorded; the (randomized) signature verifies.
  const mine1 = parseHello(await client.connectRequest());
  const rec1 = parseHello(msg1);
  assertBytes(mine1.id, hex(cid), 'msg1 id');
  assertBytes(mine1.ephemeralKey, hex(rec1.ephemeralKey), 'msg1 ephemeral key');
  await verifyDer(cKey, mine1.signature, signedData.hello(mine1.ephemeralKey));

  // Message 3: signature verifies, MAC equals the recorded one byte for byte.
  const step = await client.receive(msg2);
  assert.equal(step.established, false);
  const mine3 = parseFinish(step.send);
  const seph = parseHello(msg2).ephemeralKey;
  await verifyDer(cKey, mine3.signature, signedData.finish(rec1.ephemeralKey, seph, cid, sid));
  assertBytes(mine3.mac, hex(parseFinish(msg3).mac), 'msg3 MAC');

  // Message 4 completes the handshake; the saved state shows the derived values.
  assert.deepEqual(await client.receive(msg4), { established: true });
  const state = client.save().subarray(12);
  assertBytes(state.subarray(0, 4), 'deb09085', 'session id on the wire');
  assertBytes(state.subarray(8, 40), '9d14e9fb5767ccef2b0b66c1c890144960d0373f5c183756263941c8bae79520', 'MK');
  assert.equal(readU32BE(state, 40), 1535090560);
  assert.equal(readU32BE(state, 44), 3319170881);
  const keys = await deriveSessionKeys(state.subarray(8, 40), h('8590b0de'));
  assertBytes(keys.clientKey, '549fd07697fb008d6959282b7c869a989fcd02ece0962f8ae6e79632e3e87efa', 'client key');
  assertBytes(keys.serverKey, '1c46bcdbc7fe7a05b3f3f981e83b1d13aa61e75c6cfd0dabe9ebe76a6a9df203', 'server key');

  const fromServer = [
    ['deb0908575aeeb307f44137fad8b9eb5f4655da2d5654fc6bf64a7a87a15226844275e6adbeff902ee19757e20006f266fb2f52c91900babec0b4b2b1bbd89b84e', 'themis says 0'],
    ['deb09085996d1fe02bfc188bf80af7e97ad7ef0465b517c4545bc137f81f17dfb91948d60524778a15f8f18c3f8e904ac91d31ec8b78bc0b49fc2fd3ecf899da18', 'themis says 1'],
  ];
  for (const [wire, text] of fromServer) assertBytes((await client.receive(h(wire))).plaintext, hex(utf8(text)), text);

  const fromClient = [
    ['deb0908500000000000000000000000000000000fc4487d8bbf6976495533d7d2430e049913558881177c93aea0542512d44ff79402ba02bdaacb6b0fbb79d4e8d', 'reimpl says 0', 0x00],
    ['deb0908501010101010101010101010101010101176fe7f4dad3b7815a0de77f80d8b8be87d73b0d360b331ccffd2a761e0f10144f5d3adf78f08d8978e951af05', 'reimpl says 1', 0x01],
  ];
  for (const [wire, text, fill] of fromClient) {
    iv = new Uint8Array(16).fill(fill);
    assertBytes(await client.wrap(utf8(text)), wire, text);
  }
});

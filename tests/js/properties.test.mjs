// Randomized properties: round trips for every mode; every bit flip / truncation of a valid
// object throws a ThemisError (never another exception, never success).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomInt, rejectsThemis } from './helpers.mjs';
import {
  SecureCellContextImprint, SecureCellSeal, SecureCellTokenProtect, SecureSession, base64UrlToBytes,
  base64ToBytes, bytesToBase64, bytesToBase64Url, derToRaw, generateKeyPair, parsePrivateKey,
  parsePublicKey, publicKeyFromPrivate, rawToDer, secureMessageDecrypt, secureMessageEncrypt,
  secureMessageSign, secureMessageVerify,
} from '../../web/themis/index.mjs';

const ITER = 300;
const randomContext = () => [undefined, null, new Uint8Array(0), randomBytes(randomInt(1, 64))][randomInt(0, 3)];

/** Flip one random bit of a copy. */
function flipBit(bytes, index = randomInt(0, bytes.length - 1)) {
  const out = Uint8Array.from(bytes);
  out[index] ^= 1 << randomInt(0, 7);
  return out;
}

test('bytes: base64/base64url round trips and strictness', async () => {
  for (let i = 0; i < ITER; i++) {
    const b = randomBytes(randomInt(0, 100));
    assert.deepEqual(base64ToBytes(bytesToBase64(b)), b);
    assert.deepEqual(base64UrlToBytes(bytesToBase64Url(b)), b);
    assert.ok(!bytesToBase64Url(b).includes('='));
  }
  for (const bad of ['A', 'AB=', 'AB+/', 'AB*C', 'AR', 'AAB=']) await rejectsThemis(() => base64UrlToBytes(bad), 'invalidArgument', bad);
});

test('keys: generated pairs are Themis-shaped and consistent; DER conversion round trips', async () => {
  for (let i = 0; i < 30; i++) {
    const { privateKey, publicKey } = await generateKeyPair();
    assert.equal(privateKey.length, 45);
    assert.equal(publicKey.length, 45);
    assert.equal(privateKey[12], 0);
    assert.ok(parsePrivateKey(privateKey) > 0n);
    parsePublicKey(publicKey);
    assert.deepEqual(publicKeyFromPrivate(privateKey), publicKey);
  }
  for (let i = 0; i < ITER; i++) {
    const raw = randomBytes(64);
    raw[0] &= 0x7f; raw[32] &= 0x7f; // keep r, s below n
    raw[31] |= 1; raw[63] |= 1; // and non-zero
    if (i % 3 === 0) raw.fill(0, 0, randomInt(1, 31)); // short INTEGERs
    assert.deepEqual(derToRaw(rawToDer(raw)), raw);
  }
});

test('Secure Cell Seal / Token Protect / Context Imprint: random round trips', async () => {
  for (let i = 0; i < ITER; i++) {
    const key = randomBytes(randomInt(1, 64));
    const msg = randomBytes(randomInt(1, 3000));
    const ctx = randomContext();
    const seal = SecureCellSeal.withKey(key);
    const sealed = await seal.encrypt(msg, ctx);
    assert.equal(sealed.length, 44 + msg.length);
    assert.deepEqual(await seal.decrypt(sealed, ctx), msg);

    const tp = SecureCellTokenProtect.withKey(key);
    const { encrypted, token } = await tp.encrypt(msg, ctx);
    assert.equal(encrypted.length, msg.length);
    assert.deepEqual(await tp.decrypt(encrypted, token, ctx), msg);

    const ci = SecureCellContextImprint.withKey(key);
    const ictx = randomBytes(randomInt(1, 64));
    const imprinted = await ci.encrypt(msg, ictx);
    assert.deepEqual(await ci.encrypt(msg, ictx), imprinted, 'deterministic');
    assert.deepEqual(await ci.decrypt(imprinted, ictx), msg);
  }
});

test('Secure Cell: every random bit flip, truncation and extension is a ThemisError', async () => {
  for (let i = 0; i < ITER; i++) {
    const key = randomBytes(32);
    const ctx = randomContext();
    const msg = randomBytes(randomInt(1, 200));
    const seal = SecureCellSeal.withKey(key);
    const sealed = await seal.encrypt(msg, ctx);
    await rejectsThemis(() => seal.decrypt(flipBit(sealed), ctx), null, 'seal flip');
    await rejectsThemis(() => seal.decrypt(sealed.subarray(0, randomInt(0, sealed.length - 1)), ctx), null, 'seal truncate');
    const extended = new Uint8Array(sealed.length + randomInt(1, 8));
    extended.set(sealed);
    await rejectsThemis(() => seal.decrypt(extended, ctx), null, 'seal extend');

    const tp = SecureCellTokenProtect.withKey(key);
    const { encrypted, token } = await tp.encrypt(msg, ctx);
    await rejectsThemis(() => tp.decrypt(flipBit(encrypted), token, ctx), null, 'tp flip data');
    await rejectsThemis(() => tp.decrypt(encrypted, flipBit(token), ctx), null, 'tp flip token');
    await rejectsThemis(() => tp.decrypt(encrypted, token.subarray(0, randomInt(0, 43)), ctx), null, 'tp truncate token');
    await rejectsThemis(() => tp.decrypt(encrypted.subarray(0, randomInt(0, encrypted.length - 1)), token, ctx), null, 'tp truncate');
  }
});

test('Secure Cell passphrase: round trips (fast and default iterations) and tampering', async () => {
  for (let i = 0; i < 8; i++) {
    const pass = i % 2 ? bytesToBase64(randomBytes(randomInt(1, 30))) : randomBytes(randomInt(1, 30));
    const cell = SecureCellSeal.withPassphrase(pass, { iterations: randomInt(1, 2000) });
    const msg = randomBytes(randomInt(1, 500));
    const ctx = randomContext();
    const sealed = await cell.encrypt(msg, ctx);
    assert.equal(sealed.length, 70 + msg.length);
    assert.deepEqual(await cell.decrypt(sealed, ctx), msg);
    for (let j = 0; j < 10; j++) await rejectsThemis(() => cell.decrypt(flipBit(sealed), ctx), null, 'pass flip');
    await rejectsThemis(() => cell.decrypt(sealed.subarray(0, randomInt(0, sealed.length - 1)), ctx), null, 'pass truncate');
  }
  const cell = SecureCellSeal.withPassphrase('default iterations');
  const sealed = await cell.encrypt(new Uint8Array([1, 2, 3]));
  assert.deepEqual([...sealed.subarray(48, 54)], [0xfe, 0xca, 0x04, 0x00, 16, 0], 'LE32(314110) | LE16(16)');
  assert.deepEqual(await cell.decrypt(sealed), new Uint8Array([1, 2, 3]));
  // An absurd iteration count in a header is refused before any PBKDF2 work.
  const huge = Uint8Array.from(sealed);
  huge.set([0x41, 0x4b, 0x4c, 0x00], 48); // 5,000,001
  await rejectsThemis(() => cell.decrypt(huge), 'unsupportedAlgorithm', 'iteration cap');
});

test('Secure Message: random round trips, bit flips and truncations', async () => {
  const pairs = await Promise.all([0, 1, 2].map(() => generateKeyPair()));
  for (let i = 0; i < 100; i++) {
    const a = pairs[randomInt(0, 2)];
    const b = pairs[randomInt(0, 2)];
    const msg = randomBytes(randomInt(1, 2000));
    const enc = await secureMessageEncrypt(a.privateKey, b.publicKey, msg);
    assert.equal(enc.length, 52 + msg.length);
    assert.deepEqual(await secureMessageDecrypt(b.privateKey, a.publicKey, enc), msg);
    await rejectsThemis(() => secureMessageDecrypt(b.privateKey, a.publicKey, flipBit(enc)), null, 'enc flip');
    await rejectsThemis(() => secureMessageDecrypt(b.privateKey, a.publicKey, enc.subarray(0, randomInt(0, enc.length - 1))), null, 'enc truncate');

    const signed = await secureMessageSign(a.privateKey, msg);
    assert.deepEqual(await secureMessageVerify(a.publicKey, signed), msg);
    await rejectsThemis(() => secureMessageVerify(a.publicKey, flipBit(signed)), null, 'sig flip');
    await rejectsThemis(() => secureMessageVerify(a.publicKey, signed.subarray(0, randomInt(0, signed.length - 1))), null, 'sig truncate');
    // Deliberate Themis leniency: bytes after the signature are ignored.
    const extended = new Uint8Array(signed.length + 2);
    extended.set(signed);
    assert.deepEqual(await secureMessageVerify(a.publicKey, extended), msg);
  }
});

test('Secure Session data frames: round trips; bit flips and truncations throw and change nothing', async () => {
  const [ka, kb] = await Promise.all([generateKeyPair(), generateKeyPair()]);
  const ids = { a: ka.publicKey, b: kb.publicKey };
  const lookup = (id) => ids[new TextDecoder().decode(id)];
  const client = await SecureSession.client({ id: new TextEncoder().encode('a'), privateKey: ka.privateKey, getPublicKey: lookup });
  const server = await SecureSession.server({ id: new TextEncoder().encode('b'), privateKey: kb.privateKey, getPublicKey: lookup });
  let r = await server.receive(await client.connectRequest());
  r = await client.receive(r.send);
  r = await server.receive(r.send);
  await client.receive(r.send);
  for (let i = 0; i < ITER; i++) {
    const [from, to] = i % 2 ? [client, server] : [server, client];
    const msg = randomBytes(randomInt(1, 1500));
    const frame = await from.wrap(msg);
    assert.equal(frame.length, 52 + msg.length);
    for (let j = 0; j < 5; j++) {
      let index = randomInt(0, frame.length - 1);
      if (index >= 16 && index < 20) index = 0; // IV bytes 12..15 are not used (Themis nonce rule)
      await rejectsThemis(() => to.receive(flipBit(frame, index)), null, 'frame flip');
    }
    await rejectsThemis(() => to.receive(frame.subarray(0, randomInt(0, frame.length - 1))), null, 'frame truncate');
    const extended = new Uint8Array(frame.length + randomInt(1, 4));
    extended.set(frame);
    await rejectsThemis(() => to.receive(extended), null, 'frame extend');
    assert.deepEqual((await to.receive(frame)).plaintext, msg);
    await rejectsThemis(() => to.receive(frame), 'replay', 'frame replay');
  }
});

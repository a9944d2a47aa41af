// Cross-implementation tests: bytes made by web/themis (JS) are opened by ThemisKit (Swift) and
// the reverse, through the `themis-interop` executable (Sources/themis-interop, JSON on stdio).
//
// The binary comes from `swift build --product themis-interop`; its path is $HUSH_INTEROP_BIN,
// or .build/debug/themis-interop under the repository root. A missing binary FAILS every test.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import {
  SecureCellSeal, SecureCellTokenProtect, SecureCellContextImprint, ThemisError,
  secureMessageEncrypt, secureMessageDecrypt, secureMessageSign, secureMessageVerify, secureMessageKind,
  generateKeyPair, fingerprint, parsePublicKey, parsePrivateKey, publicKeyFromPrivate, normalizePublicKey,
  bytesToBase64, base64ToBytes, bytesToHex,
} from '../../web/themis/index.mjs';
import { REPO_ROOT, randomBytes, randomInt } from './helpers.mjs';

const BIN = process.env.HUSH_INTEROP_BIN
  ? resolve(process.env.HUSH_INTEROP_BIN)
  : join(REPO_ROOT, '.build', 'debug', 'themis-interop');

/** Fails (never skips) when the Swift side has not been built. */
function requireBinary() {
  assert.ok(existsSync(BIN),
    `themis-interop binary not found at ${BIN}: run \`swift build --product themis-interop\` first ` +
    '(or point HUSH_INTEROP_BIN at a built binary)');
}

/** Runs one request (an op object or an array of them) through the Swift tool. */
function swiftRaw(request) {
  requireBinary();
  return new Promise((resolvePromise, reject) => {
    const child = spawn(BIN, [], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out = [];
    const err = [];
    child.stdout.on('data', (d) => out.push(d));
    child.stderr.on('data', (d) => err.push(d));
    child.on('error', reject);
    child.on('close', (code) => {
      const stdout = Buffer.concat(out).toString('utf8');
      let answer;
      try {
        answer = JSON.parse(stdout);
      } catch {
        reject(new Error(`themis-interop (exit ${code}) printed no JSON: ${stdout} ${Buffer.concat(err)}`));
        return;
      }
      resolvePromise({ code, answer });
    });
    child.stdin.end(JSON.stringify(request));
  });
}

/** A batch of ops; asserts the tool understood the request. Answers come back in order. */
async function swift(ops) {
  const { code, answer } = await swiftRaw(ops);
  assert.equal(code, 0, `themis-interop failed: ${JSON.stringify(answer)}`);
  assert.ok(Array.isArray(answer) && answer.length === ops.length, 'one answer per op');
  return answer;
}

const b64 = bytesToBase64;
const unb64 = base64ToBytes;
const hex = bytesToHex;

function ok(answer, what) {
  assert.ok(!('error' in answer), `${what}: Swift failed with ${answer.error}`);
  return answer;
}

/**
 * The two implementations name their errors differently and, for malformed headers, check in a
 * different order (JS reads a key container's tag before its CRC; Swift checks the CRC first;
 * JS folds truncation and bad length fields into `badLength`). What must agree is the class:
 * an authenticity failure (GCM tag, ECDSA signature) on one side is one on the other too,
 * and a format error on one side is a format error on the other.
 */
const JS_AUTH = new Set(['authenticationFailed', 'badSignature']);
const SWIFT_AUTH = new Set(['authenticationFailed', 'invalidSignature']);
const JS_CODES = new Set(['emptyInput', 'invalidKey', 'badTag', 'badCRC', 'truncated', 'badLength',
  'unsupportedAlgorithm', 'authenticationFailed', 'badSignature', 'invalidArgument']);
const SWIFT_CODES = new Set(['emptyInput', 'truncated', 'lengthMismatch', 'trailingBytes', 'unexpectedTag',
  'badChecksum', 'invalidKey', 'unsupportedAlgorithm', 'invalidParameter', 'authenticationFailed',
  'invalidSignature']);

/** Both sides rejected `what`, with errors of the same class (and `expected` class if given). */
function assertSameRejection(js, sw, what, expected) {
  assert.ok('code' in js, `${what}: JS accepted it`);
  assert.ok('error' in sw, `${what}: Swift accepted it`);
  assert.ok(JS_CODES.has(js.code), `${what}: unexpected JS code ${js.code}`);
  assert.ok(SWIFT_CODES.has(sw.error), `${what}: unexpected Swift error ${sw.error}`);
  const jsClass = JS_AUTH.has(js.code) ? 'auth' : 'format';
  const swClass = SWIFT_AUTH.has(sw.error) ? 'auth' : 'format';
  assert.equal(jsClass, swClass, `${what}: JS ${js.code} vs Swift ${sw.error}`);
  if (expected) assert.equal(jsClass, expected, `${what}: expected an ${expected} failure, got JS ${js.code} / Swift ${sw.error}`);
}

async function jsError(fn) {
  try {
    const result = await fn();
    return { result };
  } catch (e) {
    assert.ok(e instanceof ThemisError, `expected a ThemisError, got ${e && e.stack}`);
    return { code: e.code };
  }
}

const SIZES = [1, 2, 3, 15, 16, 17, 31, 32, 33, 100, 255, 256, 1024, 4095, 4096, 10000, 32768, 65535, 65536];

/** (message, context|null) pairs over every size, each with and without a context. */
function cellCases({ withoutContext = true } = {}) {
  const cases = [];
  for (const size of [...SIZES, randomInt(1, 65536), randomInt(1, 65536)]) {
    if (withoutContext) cases.push({ message: randomBytes(size), context: null });
    cases.push({ message: randomBytes(size), context: randomBytes(randomInt(1, 64)) });
  }
  return cases;
}

function tamper(bytes, index = randomInt(0, bytes.length - 1)) {
  const copy = bytes.slice();
  copy[index] ^= randomInt(1, 255);
  return copy;
}

const ctxField = (context) => (context === null ? null : b64(context));

// ---------------------------------------------------------------------------------------------
// The tool itself

test('interop tool: binary present, answers, reports ThemisError cases and bad requests', async () => {
  requireBinary();
  const [pair, bad] = await swift([
    { op: 'generateKeyPair' },
    { op: 'sealDecrypt', key: b64(randomBytes(32)), sealed: b64(randomBytes(80)) },
  ]);
  ok(pair, 'generateKeyPair');
  assert.equal(unb64(pair.privateKey).length, 45);
  assert.equal(unb64(pair.publicKey).length, 45);
  assert.ok(typeof bad.error === 'string' && bad.error.length > 0, 'garbage cell must fail');

  const unknown = await swiftRaw({ op: 'noSuchOp' });
  assert.equal(unknown.code, 2);
  assert.equal(unknown.answer.error, 'badRequest');
  const notJson = await swiftRaw('not an op');
  assert.equal(notJson.code, 2);
});

// ---------------------------------------------------------------------------------------------
// Keys

test('keys generated in JS parse in Swift with identical fingerprints (45- and 77-byte forms)', async () => {
  const pairs = await Promise.all(Array.from({ length: 8 }, () => generateKeyPair()));
  const ops = [];
  for (const { privateKey, publicKey } of pairs) {
    ops.push({ op: 'parsePublicKey', key: b64(publicKey) });
    ops.push({ op: 'parsePrivateKey', key: b64(privateKey) });
    ops.push({ op: 'parsePublicKey', key: b64(normalizePublicKey(publicKey, { compressed: false })) });
  }
  const answers = await swift(ops);
  for (const [i, { privateKey, publicKey }] of pairs.entries()) {
    const [pub, priv, long] = answers.slice(3 * i, 3 * i + 3).map((a) => ok(a, 'parse'));
    const fp = await fingerprint(publicKey);
    assert.match(fp, /^[0-9a-f]{4}( [0-9a-f]{4}){4}$/);
    assert.equal(pub.fingerprint, fp);
    assert.equal(hex(unb64(pub.publicKey)), hex(publicKey));
    assert.equal(priv.fingerprint, fp, 'Swift derives the same public key from the JS private key');
    assert.equal(hex(unb64(priv.publicKey)), hex(publicKey));
    assert.equal(hex(unb64(priv.privateKey)), hex(privateKey), 'Swift re-exports the same REC2 bytes');
    const longKey = normalizePublicKey(publicKey, { compressed: false });
    assert.equal(long.fingerprint, await fingerprint(longKey), '77-byte form: fingerprint over the bytes as given');
    assert.notEqual(long.fingerprint, fp);
  }
});

test('keys generated in Swift parse in JS with identical fingerprints', async () => {
  const answers = await swift(Array.from({ length: 8 }, () => ({ op: 'generateKeyPair' })));
  const seen = new Set();
  for (const answer of answers) {
    ok(answer, 'generateKeyPair');
    const privateKey = unb64(answer.privateKey);
    const publicKey = unb64(answer.publicKey);
    assert.equal(privateKey.length, 45);
    assert.equal(publicKey.length, 45);
    parsePrivateKey(privateKey);
    parsePublicKey(publicKey);
    assert.equal(await fingerprint(publicKey), answer.fingerprint);
    assert.equal(hex(publicKeyFromPrivate(privateKey)), hex(publicKey), 'JS derives the same public key');
    seen.add(answer.fingerprint);
  }
  assert.equal(seen.size, answers.length, 'fresh keys differ');
});

test('corrupted keys are rejected by both sides with the same kind of error', async () => {
  const { privateKey, publicKey } = await generateKeyPair();
  const blobs = [];
  for (const [kind, key] of [['public', publicKey], ['private', privateKey]]) {
    for (let i = 0; i < key.length; i += 1) blobs.push({ kind, blob: tamper(key, i), payload: i >= 12 });
    blobs.push({ kind, blob: key.subarray(0, key.length - 1) });
    blobs.push({ kind, blob: new Uint8Array([...key, 0]) });
  }
  const answers = await swift(blobs.map(({ kind, blob }) => ({
    op: kind === 'public' ? 'parsePublicKey' : 'parsePrivateKey', key: b64(blob),
  })));
  for (const [i, { kind, blob }] of blobs.entries()) {
    const js = await jsError(() => (kind === 'public' ? parsePublicKey(blob) : parsePrivateKey(blob)));
    const sw = answers[i];
    // Every single-byte change hits the CRC or the tag/length that the CRC covers.
    assertSameRejection(js, sw, `corrupted ${kind} key ${hex(blob)}`, 'format');
    if (blobs[i].payload) {
      // A payload byte: the tag and length still parse, so only the checksum can catch it.
      assert.equal(js.code, 'badCRC', `${kind} key ${hex(blob)}`);
      assert.equal(sw.error, 'badChecksum', `${kind} key ${hex(blob)}`);
    }
  }
});

// ---------------------------------------------------------------------------------------------
// Secure Cell

test('Seal: JS-made cells open in Swift (1 B..64 KiB, with and without context)', async () => {
  const key = randomBytes(32);
  const cell = SecureCellSeal.withKey(key);
  const cases = cellCases();
  const sealed = await Promise.all(cases.map(({ message, context }) => cell.encrypt(message, context ?? undefined)));
  const answers = await swift(cases.map(({ context }, i) => ({
    op: 'sealDecrypt', key: b64(key), sealed: b64(sealed[i]), context: ctxField(context),
  })));
  for (const [i, { message, context }] of cases.entries()) {
    assert.equal(sealed[i].length, 44 + message.length);
    assert.equal(hex(unb64(ok(answers[i], `seal ${message.length}`).message)), hex(message), `size ${message.length} ctx ${context !== null}`);
  }
});

test('Seal: Swift-made cells open in JS and re-encrypt byte for byte from their IV', async () => {
  const key = randomBytes(randomInt(1, 64));
  const cases = cellCases();
  const answers = await swift(cases.map(({ message, context }) => ({
    op: 'sealEncrypt', key: b64(key), message: b64(message), context: ctxField(context),
  })));
  for (const [i, { message, context }] of cases.entries()) {
    const sealed = unb64(ok(answers[i], 'sealEncrypt').sealed);
    assert.equal(sealed.length, 44 + message.length);
    const cell = SecureCellSeal.withKey(key);
    assert.equal(hex(await cell.decrypt(sealed, context ?? undefined)), hex(message));
    const iv = sealed.slice(16, 28);
    const again = await SecureCellSeal.withKey(key, { random: () => iv }).encrypt(message, context ?? undefined);
    assert.equal(hex(again), hex(sealed), `byte-exact Seal, size ${message.length}`);
  }
});

test('Token Protect: both directions, with and without context, byte-exact from the IV', async () => {
  const key = randomBytes(32);
  const cases = cellCases();
  const cell = SecureCellTokenProtect.withKey(key);
  const fromJs = await Promise.all(cases.map(({ message, context }) => cell.encrypt(message, context ?? undefined)));
  const answers = await swift([
    ...cases.map(({ context }, i) => ({
      op: 'tokenProtectDecrypt', key: b64(key), encrypted: b64(fromJs[i].encrypted), token: b64(fromJs[i].token),
      context: ctxField(context),
    })),
    ...cases.map(({ message, context }) => ({
      op: 'tokenProtectEncrypt', key: b64(key), message: b64(message), context: ctxField(context),
    })),
  ]);
  for (const [i, { message, context }] of cases.entries()) {
    assert.equal(hex(unb64(ok(answers[i], 'tokenProtectDecrypt').message)), hex(message));
    const made = ok(answers[cases.length + i], 'tokenProtectEncrypt');
    const encrypted = unb64(made.encrypted);
    const token = unb64(made.token);
    assert.equal(encrypted.length, message.length);
    assert.equal(token.length, 44);
    assert.equal(hex(await cell.decrypt(encrypted, token, context ?? undefined)), hex(message));
    const iv = token.slice(16, 28);
    const again = await SecureCellTokenProtect.withKey(key, { random: () => iv }).encrypt(message, context ?? undefined);
    assert.equal(hex(again.token), hex(token));
    assert.equal(hex(again.encrypted), hex(encrypted));
  }
});

test('Context Imprint: identical bytes on both sides, and each opens the other', async () => {
  const key = randomBytes(32);
  const cases = cellCases({ withoutContext: false });
  const cell = SecureCellContextImprint.withKey(key);
  const fromJs = await Promise.all(cases.map(({ message, context }) => cell.encrypt(message, context)));
  const answers = await swift([
    ...cases.map(({ message, context }) => ({
      op: 'contextImprintEncrypt', key: b64(key), message: b64(message), context: b64(context),
    })),
    ...cases.map(({ context }, i) => ({
      op: 'contextImprintDecrypt', key: b64(key), encrypted: b64(fromJs[i]), context: b64(context),
    })),
    // The context is mandatory on both sides.
    { op: 'contextImprintEncrypt', key: b64(key), message: b64(randomBytes(10)), context: '' },
  ]);
  for (const [i, { message, context }] of cases.entries()) {
    const fromSwift = unb64(ok(answers[i], 'contextImprintEncrypt').encrypted);
    assert.equal(hex(fromSwift), hex(fromJs[i]), `deterministic output, size ${message.length}`);
    assert.equal(hex(unb64(ok(answers[cases.length + i], 'contextImprintDecrypt').message)), hex(message));
    assert.equal(hex(await cell.decrypt(fromSwift, context)), hex(message));
  }
  assert.equal(answers[2 * cases.length].error, 'emptyInput');
  assert.equal((await jsError(() => cell.encrypt(randomBytes(10), new Uint8Array(0)))).code, 'emptyInput');
});

test('passphrase Seal: JS cells (fewer PBKDF2 rounds) open in Swift; Swift cells (314,110 rounds) open in JS', async () => {
  const passphrase = `pässwörd ${randomInt(0, 1e9)} 🔑`;
  const iterations = 1000;
  const cases = cellCases();
  const jsCell = SecureCellSeal.withPassphrase(passphrase, { iterations });
  const fromJs = await Promise.all(cases.map(({ message, context }) => jsCell.encrypt(message, context ?? undefined)));
  // Swift always writes Themis' default count, which costs ~0.1 s per cell here: a few sizes.
  const swiftCases = [cases[0], cases[1], cases[cases.length - 4], cases[cases.length - 3]];
  const answers = await swift([
    ...cases.map(({ context }, i) => ({
      op: 'passphraseSealDecrypt', passphrase, sealed: b64(fromJs[i]), context: ctxField(context),
    })),
    ...swiftCases.map(({ message, context }) => ({
      op: 'passphraseSealEncrypt', passphrase, message: b64(message), context: ctxField(context),
    })),
    { op: 'passphraseSealDecrypt', passphrase: `${passphrase}!`, sealed: b64(fromJs[0]) },
  ]);
  for (const [i, { message }] of cases.entries()) {
    assert.equal(hex(unb64(ok(answers[i], 'passphraseSealDecrypt').message)), hex(message));
  }
  const defaultCell = SecureCellSeal.withPassphrase(passphrase);
  for (const [j, { message, context }] of swiftCases.entries()) {
    const made = ok(answers[cases.length + j], 'passphraseSealEncrypt');
    assert.equal(made.iterations, 314110);
    const sealed = unb64(made.sealed);
    const view = new DataView(sealed.buffer, sealed.byteOffset);
    assert.equal(view.getUint32(0, true), 0x41010100, 'AES-256-GCM, passphrase KDF');
    assert.equal(view.getUint32(16, true), 22, 'KDF context: iterations, salt length, 16-byte salt');
    assert.equal(view.getUint32(48, true), 314110);
    assert.equal(view.getUint16(52, true), 16);
    assert.equal(hex(await defaultCell.decrypt(sealed, context ?? undefined)), hex(message));
    // Same salt and IV -> the same bytes from JS.
    const salt = sealed.slice(54, 70);
    const iv = sealed.slice(20, 32);
    const again = await SecureCellSeal.withPassphrase(passphrase, { random: (n) => (n === 16 ? salt : iv) })
      .encrypt(message, context ?? undefined);
    assert.equal(hex(again), hex(sealed), `byte-exact passphrase Seal, size ${message.length}`);
  }
  assert.equal(answers[cases.length + swiftCases.length].error, 'authenticationFailed', 'wrong passphrase');
  const refused = await swiftRaw({ op: 'passphraseSealEncrypt', passphrase, message: b64(randomBytes(4)), iterations });
  assert.equal(refused.code, 2);
  assert.equal(refused.answer.error, 'badRequest', 'the Swift tool refuses an iteration count ThemisKit cannot write');
});

test('cells: a tampered blob from either side is rejected by the other, with the same kind of error', async () => {
  const key = randomBytes(32);
  const passphrase = 'correct horse';
  const message = randomBytes(300);
  const context = randomBytes(12);
  const wrongContext = tamper(context);
  const [swSeal, swToken, swPass] = await swift([
    { op: 'sealEncrypt', key: b64(key), message: b64(message), context: b64(context) },
    { op: 'tokenProtectEncrypt', key: b64(key), message: b64(message), context: b64(context) },
    { op: 'passphraseSealEncrypt', passphrase, message: b64(message), context: b64(context) },
  ]).then((a) => a.map((x) => ok(x, 'encrypt')));
  const seal = SecureCellSeal.withKey(key);
  const token = SecureCellTokenProtect.withKey(key);
  const pass = SecureCellSeal.withPassphrase(passphrase, { iterations: 500 });
  const jsSeal = await seal.encrypt(message, context);
  const jsToken = await token.encrypt(message, context);
  const jsPass = await pass.encrypt(message, context);

  // [what, JS opener, Swift op, bytes]
  const cases = [];
  const positions = (len) => [...new Set([0, 1, 4, 8, 12, 15, 16, 27, 28, 43, 44, len - 1,
    ...Array.from({ length: 6 }, () => randomInt(0, len - 1))])].filter((i) => i < len);
  for (const [origin, sealed] of [['js', jsSeal], ['swift', unb64(swSeal.sealed)]]) {
    for (const i of positions(sealed.length)) {
      cases.push({ what: `${origin} seal @${i}`, mode: 'seal', sealed: tamper(sealed, i), context, expect: i >= 16 ? 'auth' : 'format' });
    }
    cases.push({ what: `${origin} seal truncated`, mode: 'seal', sealed: sealed.subarray(0, sealed.length - 1), context, expect: 'format' });
    cases.push({ what: `${origin} seal wrong context`, mode: 'seal', sealed, context: wrongContext, expect: 'auth' });
    cases.push({ what: `${origin} seal no context`, mode: 'seal', sealed, context: null, expect: 'auth' });
  }
  for (const [origin, enc, tok] of [['js', jsToken.encrypted, jsToken.token], ['swift', unb64(swToken.encrypted), unb64(swToken.token)]]) {
    for (const i of positions(tok.length)) {
      cases.push({ what: `${origin} token @${i}`, mode: 'token', encrypted: enc, token: tamper(tok, i), context, expect: i >= 16 ? 'auth' : 'format' });
    }
    for (const i of positions(enc.length)) {
      cases.push({ what: `${origin} token ciphertext @${i}`, mode: 'token', encrypted: tamper(enc, i), token: tok, context, expect: 'auth' });
    }
    cases.push({ what: `${origin} token wrong context`, mode: 'token', encrypted: enc, token: tok, context: wrongContext, expect: 'auth' });
  }
  for (const [origin, sealed] of [['js', jsPass], ['swift', unb64(swPass.sealed)]]) {
    // Positions outside the iteration count (48..51): a larger count would only cost time.
    for (const i of [0, 4, 12, 16, 20, 31, 32, 47, 52, 54, 69, 70, sealed.length - 1]) {
      // IV, tag, salt and ciphertext change the key or fail the tag; header fields are format errors.
      cases.push({ what: `${origin} passphrase @${i}`, mode: 'pass', sealed: tamper(sealed, i), context, expect: i >= 20 && i !== 52 ? 'auth' : 'format' });
    }
    cases.push({ what: `${origin} passphrase wrong context`, mode: 'pass', sealed, context: wrongContext, expect: 'auth' });
  }

  const answers = await swift(cases.map((c) => {
    if (c.mode === 'seal') return { op: 'sealDecrypt', key: b64(key), sealed: b64(c.sealed), context: ctxField(c.context) };
    if (c.mode === 'token') {
      return { op: 'tokenProtectDecrypt', key: b64(key), encrypted: b64(c.encrypted), token: b64(c.token), context: ctxField(c.context) };
    }
    return { op: 'passphraseSealDecrypt', passphrase, sealed: b64(c.sealed), context: ctxField(c.context) };
  }));
  for (const [i, c] of cases.entries()) {
    const js = await jsError(() => {
      if (c.mode === 'seal') return seal.decrypt(c.sealed, c.context ?? undefined);
      if (c.mode === 'token') return token.decrypt(c.encrypted, c.token, c.context ?? undefined);
      return pass.decrypt(c.sealed, c.context ?? undefined);
    });
    assertSameRejection(js, answers[i], c.what, c.expect);
  }
});

// ---------------------------------------------------------------------------------------------
// Secure Message

test('Secure Message encrypt: JS -> Swift and Swift -> JS, byte-exact from the IV', async () => {
  const alice = await generateKeyPair(); // JS
  const [bobAnswer] = await swift([{ op: 'generateKeyPair' }]);
  const bob = { privateKey: unb64(bobAnswer.privateKey), publicKey: unb64(bobAnswer.publicKey) };
  const messages = [...SIZES, randomInt(1, 65536)].map((n) => randomBytes(n));
  const fromJs = await Promise.all(messages.map((m) => secureMessageEncrypt(alice.privateKey, bob.publicKey, m)));
  const answers = await swift([
    ...fromJs.map((e) => ({ op: 'messageDecrypt', privateKey: b64(bob.privateKey), publicKey: b64(alice.publicKey), encrypted: b64(e) })),
    ...messages.map((m) => ({ op: 'messageEncrypt', privateKey: b64(bob.privateKey), publicKey: b64(alice.publicKey), message: b64(m) })),
    ...fromJs.slice(0, 3).map((e) => ({ op: 'messageKind', message: b64(e) })),
  ]);
  const n = messages.length;
  for (const [i, m] of messages.entries()) {
    assert.equal(secureMessageKind(fromJs[i]), 'encrypted');
    assert.equal(hex(unb64(ok(answers[i], 'messageDecrypt').message)), hex(m), `JS -> Swift, size ${m.length}`);
    const fromSwift = unb64(ok(answers[n + i], 'messageEncrypt').encrypted);
    assert.equal(fromSwift.length, 8 + 44 + m.length);
    assert.equal(secureMessageKind(fromSwift), 'encrypted');
    assert.equal(hex(await secureMessageDecrypt(alice.privateKey, bob.publicKey, fromSwift)), hex(m), `Swift -> JS, size ${m.length}`);
    // ECDH is symmetric: the same IV from the other side gives the same bytes.
    const iv = fromSwift.slice(8 + 16, 8 + 28);
    const again = await secureMessageEncrypt(alice.privateKey, bob.publicKey, m, { random: () => iv });
    assert.equal(hex(again), hex(fromSwift), `byte-exact Secure Message, size ${m.length}`);
  }
  for (let i = 0; i < 3; i += 1) assert.equal(answers[2 * n + i].kind, 'encrypted');
});

test('Secure Message sign: JS signatures verify in Swift and Swift signatures verify in JS', async () => {
  const js = await generateKeyPair();
  const [swAnswer] = await swift([{ op: 'generateKeyPair' }]);
  const sw = { privateKey: unb64(swAnswer.privateKey), publicKey: unb64(swAnswer.publicKey) };
  const messages = [...SIZES, randomInt(1, 65536)].map((n) => randomBytes(n));
  const fromJs = await Promise.all(messages.map((m) => secureMessageSign(js.privateKey, m)));
  const answers = await swift([
    ...fromJs.map((s) => ({ op: 'messageVerify', publicKey: b64(js.publicKey), signed: b64(s) })),
    ...messages.map((m) => ({ op: 'messageSign', privateKey: b64(sw.privateKey), message: b64(m) })),
    { op: 'messageKind', message: b64(fromJs[0]) },
  ]);
  const n = messages.length;
  for (const [i, m] of messages.entries()) {
    assert.equal(hex(unb64(ok(answers[i], 'messageVerify').message)), hex(m), `JS -> Swift, size ${m.length}`);
    const signed = unb64(ok(answers[n + i], 'messageSign').signed);
    assert.equal(secureMessageKind(signed), 'signed');
    assert.equal(hex(signed.subarray(12, 12 + m.length)), hex(m), 'the message travels in clear');
    assert.equal(hex(await secureMessageVerify(sw.publicKey, signed)), hex(m), `Swift -> JS, size ${m.length}`);
  }
  assert.equal(answers[2 * n].kind, 'signed');
});

test('Secure Message: tampered, misdirected or wrongly-signed messages are rejected across sides', async () => {
  const alice = await generateKeyPair(); // JS
  const mallory = await generateKeyPair(); // JS
  const [bobAnswer] = await swift([{ op: 'generateKeyPair' }]);
  const bob = { privateKey: unb64(bobAnswer.privateKey), publicKey: unb64(bobAnswer.publicKey) };
  const message = randomBytes(200);
  const [swEnc, swSigned] = (await swift([
    { op: 'messageEncrypt', privateKey: b64(bob.privateKey), publicKey: b64(alice.publicKey), message: b64(message) },
    { op: 'messageSign', privateKey: b64(bob.privateKey), message: b64(message) },
  ])).map((a) => ok(a, 'make'));
  const jsEnc = await secureMessageEncrypt(alice.privateKey, bob.publicKey, message);
  const jsSigned = await secureMessageSign(alice.privateKey, message);
  const swiftEncrypted = unb64(swEnc.encrypted);
  const swiftSigned = unb64(swSigned.signed);

  // Each case: bytes, who opens in JS (keys), who opens in Swift (keys).
  // A changed length field (4..11) of a signed message moves where the signature is read
  // from: a format or a signature error, as long as both sides agree.
  const signedExpect = (i) => (i < 4 ? 'format' : i < 12 ? undefined : 'auth');
  const cases = [];
  const spots = (len) => [...new Set([0, 3, 4, 7, 8, 20, 24, 36, 52, len - 1,
    ...Array.from({ length: 6 }, () => randomInt(0, len - 1))])];
  for (const i of spots(jsEnc.length)) {
    cases.push({ what: `JS encrypted @${i}`, kind: 'enc', bytes: tamper(jsEnc, i), expect: i >= 24 ? 'auth' : 'format',
      jsKeys: [alice.privateKey, bob.publicKey], swKeys: [bob.privateKey, alice.publicKey] });
  }
  for (const i of spots(swiftEncrypted.length)) {
    cases.push({ what: `Swift encrypted @${i}`, kind: 'enc', bytes: tamper(swiftEncrypted, i), expect: i >= 24 ? 'auth' : 'format',
      jsKeys: [alice.privateKey, bob.publicKey], swKeys: [bob.privateKey, alice.publicKey] });
  }
  cases.push({ what: 'JS encrypted, wrong sender key', kind: 'enc', bytes: jsEnc, expect: 'auth',
    jsKeys: [alice.privateKey, mallory.publicKey], swKeys: [bob.privateKey, mallory.publicKey] });
  cases.push({ what: 'Swift encrypted, wrong recipient', kind: 'enc', bytes: swiftEncrypted, expect: 'auth',
    jsKeys: [mallory.privateKey, bob.publicKey], swKeys: [mallory.privateKey, alice.publicKey] });
  for (const i of spots(jsSigned.length)) {
    cases.push({ what: `JS signed @${i}`, kind: 'sig', bytes: tamper(jsSigned, i), expect: signedExpect(i), jsKeys: [alice.publicKey], swKeys: [alice.publicKey] });
  }
  for (const i of spots(swiftSigned.length)) {
    cases.push({ what: `Swift signed @${i}`, kind: 'sig', bytes: tamper(swiftSigned, i), expect: signedExpect(i), jsKeys: [bob.publicKey], swKeys: [bob.publicKey] });
  }
  // An empty signature (its length field zeroed) fails as a signature on both sides.
  for (const [what, signed, key] of [['JS', jsSigned, alice.publicKey], ['Swift', swiftSigned, bob.publicKey]]) {
    const bytes = signed.slice();
    bytes.fill(0, 8, 12);
    cases.push({ what: `${what} signed, empty signature`, kind: 'sig', bytes, expect: 'auth', jsKeys: [key], swKeys: [key] });
  }
  cases.push({ what: 'JS signed, other key', kind: 'sig', bytes: jsSigned, expect: 'auth', jsKeys: [mallory.publicKey], swKeys: [mallory.publicKey] });
  cases.push({ what: 'Swift signed, other key', kind: 'sig', bytes: swiftSigned, expect: 'auth', jsKeys: [alice.publicKey], swKeys: [alice.publicKey] });

  const answers = await swift(cases.map((c) => (c.kind === 'enc'
    ? { op: 'messageDecrypt', privateKey: b64(c.swKeys[0]), publicKey: b64(c.swKeys[1]), encrypted: b64(c.bytes) }
    : { op: 'messageVerify', publicKey: b64(c.swKeys[0]), signed: b64(c.bytes) })));
  for (const [i, c] of cases.entries()) {
    const js = await jsError(() => (c.kind === 'enc'
      ? secureMessageDecrypt(c.jsKeys[0], c.jsKeys[1], c.bytes)
      : secureMessageVerify(c.jsKeys[0], c.bytes)));
    assertSameRejection(js, answers[i], c.what, c.expect);
  }
});

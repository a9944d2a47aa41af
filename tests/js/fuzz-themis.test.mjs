// Mutation fuzzing of every web/themis decoder over the Themis 0.15 vectors and inputs made by
// the code itself. Each mutated input must either throw a ThemisError or decode to something
// well formed (checked per decoder: canonical re-encoding for parsers, the original plaintext
// and the original bytes for authenticated decryption), and every call must settle.
// Reproducible: HUSH_FUZZ_SEED / HUSH_FUZZ_ITERATIONS (see fuzz.mjs).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { h, hex, loadVectors } from './helpers.mjs';
import {
  fuzzLoop, mutateBytes, mutateString, sameBytes, assertSameBytes, concat, report, TEST_TIMEOUT, fixCrcs, prefixes,
} from './fuzz.mjs';
import { ThemisError } from '../../web/themis/errors.mjs';
import {
  readContainer, parseContainer, buildContainer, crc32c, parsePublicKey, parsePrivateKey, exportPublicKey,
  exportPrivateKey, derToRaw, rawToDer, SecureCellSeal, SecureCellTokenProtect, SecureCellContextImprint,
  secureMessageKind, secureMessageDecrypt, secureMessageVerify, SecureSession, parseHello, parseFinish,
  parseConfirm, clientIdFromPublicKey, publicKeyFromClientId, base64ToBytes, bytesToBase64,
  base64UrlToBytes, bytesToBase64Url,
} from '../../web/themis/index.mjs';
import { bigIntToBytes, readU32BE, readU32LE } from '../../web/themis/bytes.mjs';
import { decodePoint, compressPoint, uncompressedPoint } from '../../web/themis/p256.mjs';
import { MAX_PBKDF2_ITERATIONS } from '../../web/themis/kdf.mjs';

const TIMEOUT = TEST_TIMEOUT;
const isThemis = (e) => e instanceof ThemisError;
const noSuccess = (what) => () => { throw new Error(`${what} accepted a mutated input`); };
const utf8 = (s) => new TextEncoder().encode(s);

after(() => report('themis'));

// ---- corpora ----

const keysV = loadVectors('keys.json');
const sealV = loadVectors('secure_cell_seal.json');
const tokenV = loadVectors('secure_cell_token_protect.json');
const imprintV = loadVectors('secure_cell_context_imprint.json');
const messageV = loadVectors('secure_message.json');
const sessionV = loadVectors('secure_session.json');

const publicKeys = keysV.key_pairs.flatMap((p) => [h(p.public_key), h(p.public_key_uncompressed_container)]);
const privateKeys = keysV.key_pairs.flatMap((p) => [h(p.private_key), h(p.private_key_32byte_container)]);
const invalidKeys = keysV.invalid_keys.map((k) => h(k.key));
const handshakes = sessionV.transcripts.flatMap((t) => t.handshake.map((s) => h(s.message)).filter((m) => m && m.length));
const savedStates = sessionV.transcripts.flatMap((t) => [h(t.client_state_after_handshake.blob), h(t.server_state_after_handshake.blob)]);
const containers = [...publicKeys, ...privateKeys, ...invalidKeys, ...handshakes, ...savedStates];
const signatures = sessionV.transcripts.flatMap((t) => t.handshake.flatMap((s) => (s.parsed?.parts ?? [])
  .filter((p) => p.part === 'signature_der').map((p) => h(p.bytes))));
const points = keysV.key_pairs.flatMap((p) => [h(p.public_point_compressed), h(p.public_point_uncompressed)]);

/**
 * Picks a base input (sometimes an already invalid one) and mutates it, splicing from the rest.
 * Containers: mostly with their CRCs made right again, so the mutation reaches the parser.
 */
const fromCorpus = (corpus, { crc = false } = {}) => (rng) => {
  const base = rng.pick(corpus);
  let input = mutateBytes(rng, base, corpus);
  if (crc && rng.bool(0.75)) input = fixCrcs(input);
  return sameBytes(input, base) ? null : { input, base };
};

// ---- containers, keys, points, signatures, ids ----

test('fuzz: readContainer / parseContainer at any offset', TIMEOUT, async () => {
  const tags = ['UEC2', 'REC2', 'TSPM', 'TSID', 'TSSC'];
  await fuzzLoop({
    name: 'readContainer',
    fixed: prefixes(containers),
    count: 4000,
    generate: fromCorpus(containers, { crc: true }),
    run: (input) => {
      const offset = input.length > 24 ? input[input.length - 1] % 16 : 0; // sometimes not at the start
      return { c: readContainer(input, offset), offset };
    },
    allowed: isThemis,
    accept: ({ c, offset }, input) => {
      // What was read is exactly the bytes the header describes, with a matching CRC.
      assert.equal(c.size, readU32BE(input, offset + 4));
      assert.ok(c.size >= 12 && c.end === offset + c.size && c.end <= input.length);
      assertSameBytes(c.bytes, input.subarray(offset, c.end), 'container bytes');
      assertSameBytes(c.payload, input.subarray(offset + 12, c.end), 'payload');
      assert.equal(crc32c(input.subarray(offset, offset + 8), new Uint8Array(4), c.payload), readU32LE(input, offset + 8));
    },
  });
  await fuzzLoop({
    name: 'parseContainer',
    fixed: prefixes(containers),
    count: 4000,
    generate: fromCorpus(containers, { crc: true }),
    run: (input) => {
      const tag = tags.find((t) => String.fromCharCode(...input.subarray(0, 4)) === t) ?? 'TSPM';
      return { c: parseContainer(input, tag), tag };
    },
    allowed: isThemis,
    accept: ({ c, tag }, input) => {
      assert.equal(c.tag, tag);
      assert.equal(c.size, input.length);
      assertSameBytes(buildContainer(tag, c.payload), input, 'canonical re-encoding');
    },
  });
});

test('fuzz: parsePublicKey / parsePrivateKey / decodePoint', TIMEOUT, async () => {
  await fuzzLoop({
    name: 'parsePublicKey',
    fixed: prefixes(publicKeys),
    count: 3000,
    generate: fromCorpus([...publicKeys, ...invalidKeys, ...privateKeys], { crc: true }),
    run: (input) => parsePublicKey(input),
    allowed: isThemis,
    // A key that parses is a valid UEC2 container of one on-curve point, in one of its two forms.
    accept: (point, input) => assertSameBytes(exportPublicKey(point, { compressed: input.length === 45 }), input, 're-encoding'),
  });
  await fuzzLoop({
    name: 'parsePrivateKey',
    fixed: prefixes(privateKeys),
    count: 4000,
    generate: fromCorpus([...privateKeys, ...invalidKeys, ...publicKeys], { crc: true }),
    run: (input) => parsePrivateKey(input),
    allowed: isThemis,
    accept: (d, input) => {
      const canonical = input.length === 45 ? exportPrivateKey(d) : buildContainer('REC2', bigIntToBytes(d, 32));
      assertSameBytes(canonical, input, 're-encoding');
    },
  });
  await fuzzLoop({
    name: 'decodePoint',
    fixed: prefixes(points),
    count: 3000,
    generate: fromCorpus(points),
    run: (input) => decodePoint(input),
    allowed: isThemis,
    accept: (point, input) => assertSameBytes(input.length === 33 ? compressPoint(point) : uncompressedPoint(point), input, 're-encoding'),
  });
});

test('fuzz: DER signatures, client ids, base64', TIMEOUT, async () => {
  await fuzzLoop({
    name: 'derToRaw',
    fixed: prefixes(signatures),
    count: 4000,
    generate: fromCorpus(signatures),
    run: (input) => derToRaw(input),
    allowed: isThemis,
    accept: (raw, input) => assertSameBytes(rawToDer(raw), input, 'strict DER re-encoding'),
  });
  const ids = publicKeys.map((k) => clientIdFromPublicKey(k));
  await fuzzLoop({
    name: 'publicKeyFromClientId',
    fixed: prefixes(ids),
    count: 2000,
    generate: fromCorpus(ids),
    run: (input) => publicKeyFromClientId(input),
    allowed: isThemis,
    accept: (key, input) => assertSameBytes(clientIdFromPublicKey(key), input, 'client id'),
  });
  const texts = publicKeys.map((k) => bytesToBase64(k));
  await fuzzLoop({
    name: 'base64',
    count: 3000,
    generate: (rng) => {
      const base = rng.pick(texts);
      const input = rng.bool() ? mutateString(rng, base) : bytesToBase64Url(base64ToBytes(base)).slice(0, rng.int(base.length + 1));
      return { input, base };
    },
    run: (input) => ({ std: attempt(() => base64ToBytes(input)), url: attempt(() => base64UrlToBytes(input)) }),
    allowed: () => false,
    accept: ({ std, url }, input) => {
      // Strict: whatever decodes re-encodes to exactly the input; everything else is a ThemisError.
      if (std instanceof Uint8Array) assert.equal(bytesToBase64(std), input);
      else assert.ok(isThemis(std), `base64ToBytes threw ${std}`);
      if (url instanceof Uint8Array) assert.equal(bytesToBase64Url(url), input);
      else assert.ok(isThemis(url), `base64UrlToBytes threw ${url}`);
    },
  });
});

function attempt(fn) {
  try { return fn(); } catch (error) { return error; }
}

// ---- Secure Cell ----

const sealCases = sealV.vectors.filter((v) => v.mode === 'seal' && v.ciphertext)
  .map((v) => ({ key: h(v.key), context: h(v.context), sealed: h(v.ciphertext), plaintext: v.expect === 'ok' ? h(v.plaintext) : null }))
  .filter((c) => c.sealed.length < 4096);

/**
 * The cells known to be valid, by key and context (absent and empty contexts are the same).
 * The corpus also holds invalid vectors (a byte appended, ...), which a mutation can repair:
 * an authenticated decrypt may succeed only on one of these exact inputs, to its plaintext.
 */
function validCells(cases, bytesOf) {
  const valid = new Map();
  for (const c of cases) if (c.plaintext) valid.set(`${hex(c.key)}|${hex(c.context ?? new Uint8Array(0))}|${bytesOf(c)}`, c.plaintext);
  return (c, input, plaintext) => {
    const known = valid.get(`${hex(c.key)}|${hex(c.context ?? new Uint8Array(0))}|${bytesOf(input)}`);
    assert.ok(known, 'an authenticated decrypt accepted an input that is no valid cell');
    assertSameBytes(plaintext, known, 'plaintext');
  };
}

test('fuzz: Secure Cell Seal (master key) decrypt', TIMEOUT, async () => {
  const corpus = sealCases.map((c) => c.sealed);
  const cells = new Map(sealCases.map((c) => [c, SecureCellSeal.withKey(c.key)]));
  const checkValid = validCells(sealCases, (x) => hex(x.sealed ?? x));
  await fuzzLoop({
    name: 'cellSeal',
    count: 2500,
    fixed: prefixes(sealCases, { bytesOf: (c) => c.sealed, withBytes: (c, b) => b }),
    generate: (rng) => {
      const base = rng.pick(sealCases);
      const input = mutateBytes(rng, base.sealed, corpus);
      return sameBytes(input, base.sealed) ? null : { input, base };
    },
    run: (input, base) => cells.get(base).decrypt(input, base.context),
    allowed: isThemis,
    // Authenticated, with no ignored byte: only a valid cell opens (a mutation of a valid one never).
    accept: (plaintext, input, base) => checkValid(base, input, plaintext),
  });
});

test('fuzz: Secure Cell Token Protect decrypt (token, ciphertext or both mutated)', TIMEOUT, async () => {
  const cases = tokenV.vectors.filter((v) => v.token && v.ciphertext)
    .map((v) => ({ key: h(v.key), context: h(v.context), token: h(v.token), encrypted: h(v.ciphertext),
      plaintext: v.expect === 'ok' ? h(v.plaintext) : null }));
  const checkValid = validCells(cases, (x) => `${hex(x.token)}|${hex(x.encrypted)}`);
  const tokens = cases.map((c) => c.token);
  const bodies = cases.map((c) => c.encrypted);
  await fuzzLoop({
    name: 'cellTokenProtect',
    fixed: [...prefixes(cases, { bytesOf: (c) => c.token, withBytes: (c, b) => ({ token: b, encrypted: c.encrypted }) }),
      ...prefixes(cases, { bytesOf: (c) => c.encrypted, withBytes: (c, b) => ({ token: c.token, encrypted: b }) })],
    count: 2500,
    generate: (rng) => {
      const base = rng.pick(cases);
      const which = rng.int(3);
      const token = which !== 1 ? mutateBytes(rng, base.token, tokens) : base.token;
      const encrypted = which !== 0 ? mutateBytes(rng, base.encrypted, bodies) : base.encrypted;
      if (sameBytes(token, base.token) && sameBytes(encrypted, base.encrypted)) return null;
      return { input: { token, encrypted }, base };
    },
    run: (input, base) => SecureCellTokenProtect.withKey(base.key).decrypt(input.encrypted, input.token, base.context),
    allowed: isThemis,
    accept: (plaintext, input, base) => checkValid(base, input, plaintext),
  });
});

test('fuzz: Secure Cell Context Imprint decrypt (unauthenticated: exact keystream XOR, never an error)', TIMEOUT, async () => {
  const cases = imprintV.vectors.filter((v) => v.ciphertext && v.context && v.key)
    .map((v) => ({ key: h(v.key), context: h(v.context), encrypted: h(v.ciphertext) }));
  const corpus = cases.map((c) => c.encrypted);
  await fuzzLoop({
    name: 'cellContextImprint',
    fixed: prefixes(cases.slice(0, 4), { bytesOf: (c) => c.encrypted, withBytes: (c, b) => b }),
    count: 500,
    generate: (rng) => {
      const base = rng.pick(cases);
      const input = mutateBytes(rng, base.encrypted, corpus);
      return sameBytes(input, base.encrypted) ? null : { input, base };
    },
    run: async (input, base) => {
      const cell = SecureCellContextImprint.withKey(base.key);
      const out = await cell.decrypt(input, base.context);
      // The keystream depends only on key, context and length: decrypting zeros reveals it.
      return { out, keystream: await cell.decrypt(new Uint8Array(input.length), base.context) };
    },
    allowed: (e, input) => isThemis(e) && e.code === 'emptyInput' && input.length === 0,
    accept: ({ out, keystream }, input) => {
      assert.equal(out.length, input.length);
      assertSameBytes(out.map((b, i) => b ^ input[i]), keystream, 'output XOR input');
    },
  });
});

test('fuzz: Secure Cell Seal (passphrase) decrypt; a mutated iteration count never runs unbounded', TIMEOUT, async () => {
  // Cheap cells made here (1..3 PBKDF2 iterations): the decoder honours the header's count, so
  // the vectors' 314110 would make every try cost ~0.1 s. Mutated counts above FUZZ_CAP but
  // within the decoder's limit are folded back below FUZZ_CAP (still a changed header, which
  // must fail); counts above the limit are kept, and must be refused without running PBKDF2.
  const FUZZ_CAP = 64;
  const cases = [];
  for (const [i, [passphrase, context, message]] of [
    ['correct horse', null, 'x'], ['pw', 'ctx', 'hello world'], ['ünïcødé', '', 'a'.repeat(100)], ['p', 'c', '\u0000'],
  ].entries()) {
    const cell = SecureCellSeal.withPassphrase(passphrase, { iterations: 1 + (i % 3) });
    cases.push({ passphrase, context: context === null ? null : utf8(context), plaintext: utf8(message),
      sealed: await cell.encrypt(utf8(message), context === null ? null : utf8(context)) });
  }
  const corpus = cases.map((c) => c.sealed);
  const subtle = globalThis.crypto.subtle;
  const realDeriveBits = subtle.deriveBits;
  let maxIterations = 0;
  subtle.deriveBits = function (params, ...rest) {
    if (params && params.name === 'PBKDF2') maxIterations = Math.max(maxIterations, params.iterations);
    return realDeriveBits.call(this, params, ...rest);
  };
  let folded = 0;
  let done = 0;
  try {
    ({ done } = await fuzzLoop({
      name: 'cellPassphrase',
    fixed: prefixes(cases, { bytesOf: (c) => c.sealed, withBytes: (c, b) => b }),
      count: 2000,
      generate: (rng) => {
        const base = rng.pick(cases);
        const input = mutateBytes(rng, base.sealed, corpus);
        if (input.length >= 52) {
          const n = readU32LE(input, 48); // the decoder reads the count here (after the 48-byte head)
          if (n > FUZZ_CAP && n <= MAX_PBKDF2_ITERATIONS) {
            input.set(new Uint8Array(new Uint32Array([1 + (n % FUZZ_CAP)]).buffer), 48);
            folded += 1;
          }
        }
        return sameBytes(input, base.sealed) ? null : { input, base };
      },
      run: (input, base) => SecureCellSeal.withPassphrase(base.passphrase).decrypt(input, base.context),
      allowed: isThemis,
      accept: noSuccess('passphrase decrypt'),
    }));
  } finally {
    subtle.deriveBits = realDeriveBits;
  }
  assert.ok(maxIterations <= FUZZ_CAP, `PBKDF2 ran with ${maxIterations} iterations`);
  assert.ok(done < 500 || folded > 0, 'the loop exercised mutated iteration counts');
});

test('passphrase cell: an iteration count above the limit is refused before PBKDF2 runs', TIMEOUT, async () => {
  const cell = SecureCellSeal.withPassphrase('pw', { iterations: 1 });
  const sealed = await cell.encrypt(utf8('message'));
  const subtle = globalThis.crypto.subtle;
  const realDeriveBits = subtle.deriveBits;
  let pbkdf2Calls = 0;
  subtle.deriveBits = function (params, ...rest) {
    if (params && params.name === 'PBKDF2') pbkdf2Calls += 1;
    return realDeriveBits.call(this, params, ...rest);
  };
  try {
    for (const n of [0, MAX_PBKDF2_ITERATIONS + 1, 0x7fffffff, 0x80000000, 0xffffffff]) {
      const bad = sealed.slice();
      bad.set(new Uint8Array(new Uint32Array([n]).buffer), 48);
      await assert.rejects(cell.decrypt(bad), (e) => isThemis(e) && e.code === 'unsupportedAlgorithm', `count ${n}`);
    }
  } finally {
    subtle.deriveBits = realDeriveBits;
  }
  assert.equal(pbkdf2Calls, 0);
});

// ---- Secure Message ----

const encrypted = messageV.vectors.filter((v) => v.mode === 'encrypt' && v.expect === 'ok' && v.ciphertext)
  .map((v) => ({ privateKey: h(v.recipient_private), publicKey: h(v.sender_public), data: h(v.ciphertext), plaintext: h(v.plaintext) }))
  .filter((c) => c.data.length < 2000);
const signed = messageV.vectors.filter((v) => v.mode === 'sign' && v.expect === 'ok' && v.signed && v.plaintext)
  .map((v) => ({ publicKey: h(v.signer_public), data: h(v.signed), plaintext: h(v.plaintext) }));
const messageCorpus = [...encrypted.map((c) => c.data), ...signed.map((c) => c.data),
  ...messageV.vectors.map((v) => h(v.ciphertext ?? v.signed)).filter(Boolean)];

test('fuzz: Secure Message kind / decrypt / verify', TIMEOUT, async () => {
  await fuzzLoop({
    name: 'secureMessageKind',
    fixed: prefixes(messageCorpus, { max: 64 }),
    count: 3000,
    generate: fromCorpus(messageCorpus),
    run: (input) => secureMessageKind(input),
    allowed: isThemis,
    accept: (kind, input) => assert.equal(readU32LE(input, 0), kind === 'encrypted' ? 0x26042720 : 0x26042620),
  });
  await fuzzLoop({
    name: 'secureMessageDecrypt',
    fixed: prefixes(encrypted.slice(0, 2), { bytesOf: (c) => c.data, withBytes: (c, b) => b }),
    count: 250, // each call imports a private key (a P-256 scalar multiplication in BigInt)
    generate: (rng) => {
      const base = rng.pick(encrypted);
      const input = mutateBytes(rng, base.data, messageCorpus);
      return sameBytes(input, base.data) ? null : { input, base };
    },
    run: (input, base) => secureMessageDecrypt(base.privateKey, base.publicKey, input),
    allowed: isThemis,
    // Splicing can rebuild another valid message of the corpus: only such an exact one may open.
    accept: (plaintext, input, base) => {
      const known = encrypted.find((c) => sameBytes(c.data, input) && sameBytes(c.privateKey, base.privateKey) && sameBytes(c.publicKey, base.publicKey));
      assert.ok(known, 'a changed encrypted message opened');
      assertSameBytes(plaintext, known.plaintext, 'plaintext');
    },
  });
  await fuzzLoop({
    name: 'secureMessageVerify',
    fixed: prefixes(signed, { bytesOf: (c) => c.data, withBytes: (c, b) => b }),
    count: 1500,
    generate: (rng) => {
      const base = rng.pick(signed);
      const input = mutateBytes(rng, base.data, messageCorpus);
      return sameBytes(input, base.data) ? null : { input, base };
    },
    run: (input, base) => secureMessageVerify(base.publicKey, input),
    allowed: isThemis,
    // Bytes after the signature are ignored (as Themis does), so a mutation there may verify,
    // and splicing can rebuild another message signed by the same key: what verifies must be
    // the signed part of one of the corpus' valid messages of that key, and its message.
    accept: (message, input, base) => {
      const end = 12 + readU32LE(input, 4) + readU32LE(input, 8);
      const known = signed.find((c) => sameBytes(c.publicKey, base.publicKey) && c.data.length >= end &&
        sameBytes(c.data.subarray(0, end), input.subarray(0, end)) && end === 12 + readU32LE(c.data, 4) + readU32LE(c.data, 8));
      assert.ok(known, 'a changed signed message verified');
      assertSameBytes(message, known.plaintext, 'verified message');
    },
  });
});

// ---- Secure Session ----

test('fuzz: Secure Session parseHello / parseFinish / parseConfirm', TIMEOUT, async () => {
  await fuzzLoop({
    name: 'sessionParsers',
    fixed: prefixes(handshakes),
    count: 3000,
    generate: fromCorpus(handshakes, { crc: true }),
    run: (input) => ({ hello: attempt(() => parseHello(input)), finish: attempt(() => parseFinish(input)), confirm: attempt(() => parseConfirm(input)) }),
    allowed: () => false,
    accept: ({ hello, finish, confirm }, input) => {
      // Each parser either throws a ThemisError or returns parts that rebuild exactly the input.
      for (const [what, r] of Object.entries({ hello, finish, confirm })) {
        if (r instanceof Error) assert.ok(isThemis(r), `${what} threw ${r.stack}`);
      }
      if (!(hello instanceof Error)) {
        assert.ok(hello.id.length > 0 && hello.signature.length > 0);
        parsePublicKey(hello.ephemeralKey);
        assertSameBytes(buildContainer('TSPM', concat(buildContainer('TSID', hello.id), hello.ephemeralKey, hello.signature)), input, 'hello');
      }
      if (!(finish instanceof Error)) {
        assert.equal(finish.mac.length, 32);
        assertSameBytes(buildContainer('TSPM', concat(finish.signature, finish.mac)), input, 'finish');
      }
      if (!(confirm instanceof Error)) assertSameBytes(buildContainer('TSPM', confirm.mac), input, 'confirm');
    },
  });
});

test('fuzz: Secure Session restore (TSSC)', TIMEOUT, async () => {
  await fuzzLoop({
    name: 'sessionRestore',
    fixed: prefixes(savedStates),
    count: 1000,
    generate: fromCorpus(savedStates, { crc: true }),
    run: (input) => SecureSession.restore(input),
    allowed: isThemis,
    accept: (session, input) => assertSameBytes(session.save(), input, 'save() of the restored session'),
  });
});

/** The vector parties, and a lookup that knows both ids. */
function vectorParties(t) {
  const directory = new Map([[t.client_id, h(t.client_keys.public)], [t.server_id, h(t.server_keys.public)]]);
  const getPublicKey = (id) => directory.get(Buffer.from(id).toString('hex')) ?? null;
  return { getPublicKey, cid: h(t.client_id), sid: h(t.server_id), cpriv: h(t.client_keys.private), spriv: h(t.server_keys.private) };
}

test('fuzz: Secure Session handshake state machines receiving mutated messages', TIMEOUT, async () => {
  const t = sessionV.transcripts[0];
  const { getPublicKey, cid, sid, cpriv, spriv } = vectorParties(t);
  const ephemeral = h(keysV.key_pairs[0].private_key); // fixed client/server ephemerals: reproducible Ceph/Seph
  const client = await SecureSession.client({ id: cid, privateKey: cpriv, getPublicKey, ephemeralPrivateKey: ephemeral });
  const server = await SecureSession.server({ id: sid, privateKey: spriv, getPublicKey, ephemeralPrivateKey: h(keysV.key_pairs[1].private_key) });
  const vectorHello = h(t.handshake[0].message); // Themis' own message 1 (its ephemeral is not ours)
  const m1 = await client.connectRequest();
  const others = [...handshakes, m1];

  /** Mutates `message` for `session` (in `state`): every attempt fails and leaves the state alone. */
  const step = (name, session, state, bases, count) => fuzzLoop({
    name,
    count,
    fixed: prefixes(bases),
    generate: (rng) => {
      const base = rng.pick(bases);
      let input = mutateBytes(rng, base, others);
      if (rng.bool(0.75)) input = fixCrcs(input);
      // Splicing may rebuild a valid message (ours or the vector's): not a mutation, skipped.
      return bases.some((b) => sameBytes(input, b)) ? null : { input, base };
    },
    run: async (input) => {
      try { return await session.receive(input); } finally { assert.equal(session.state, state, 'state changed by a refused message'); }
    },
    allowed: isThemis,
    accept: noSuccess(`${name} (signed/MAC'd handshake)`),
  });

  await step('sessionServerHello', server, 'accept', [m1, vectorHello], 300);
  const r2 = await server.receive(m1);
  await step('sessionClientReply', client, 'waitReply', [r2.send], 300);
  const r3 = await client.receive(r2.send);
  await step('sessionServerFinish', server, 'waitFinish', [r3.send], 300);
  const r4 = await server.receive(r3.send);
  assert.equal(r4.established, true);
  await step('sessionClientConfirm', client, 'waitFinish', [r4.send], 800);
  assert.equal((await client.receive(r4.send)).established, true, 'the real message 4 still completes the handshake');
  const data = utf8('still talking');
  assertSameBytes((await server.receive(await client.wrap(data))).plaintext, data, 'after the fuzzing');
});

test('fuzz: Secure Session data messages (unwrap) from the vectors', TIMEOUT, async () => {
  for (const [n, t] of sessionV.transcripts.entries()) {
    for (const role of ['client', 'server']) {
      const blob = h(t[`${role}_state_after_handshake`].blob);
      const inbound = t.messages.filter((m) => m.from !== role);
      if (!inbound.length) continue;
      const first = inbound[0];
      const clock = () => first.decoded.timestamp;
      let session = await SecureSession.restore(blob, { clock });
      let fresh = true;
      const corpus = [...t.messages.map((m) => h(m.wrapped)), ...(t.negative_messages ?? []).map((m) => h(m.wrapped))];
      const base = h(first.wrapped);
      await fuzzLoop({
        name: `sessionUnwrap${n}${role}`,
        count: 700,
        fixed: prefixes([base]),
        generate: (rng) => {
          const input = mutateBytes(rng, base, corpus);
          return sameBytes(input, base) ? null : { input, base };
        },
        run: async (input) => {
          if (!fresh) { session = await SecureSession.restore(blob, { clock }); fresh = true; }
          const result = await session.receive(input);
          fresh = false; // a message was accepted: its sequence number is used up
          return result;
        },
        allowed: isThemis,
        // Bytes 16..19 (the IV's last 4 bytes) are not part of the GCM nonce in Themis: a change
        // there still opens, to the same plaintext. Splicing can also rebuild another of the
        // peer's messages (a few sequence numbers ahead). Anything else must fail.
        accept: (result, input) => {
          const matches = (m) => input.length === m.length && input.every((b, i) => (i >= 16 && i < 20) || b === m[i]);
          const known = inbound.find((m) => matches(h(m.wrapped)));
          assert.ok(known, 'a changed data message opened');
          assertSameBytes(result.plaintext, h(known.plaintext), 'plaintext');
        },
      });
    }
  }
});

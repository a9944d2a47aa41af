// Secure Cell: Seal (master key or passphrase), Token Protect, Context Imprint.
// Encryption always uses Themis 0.15 defaults (AES-256-GCM, 12-byte IV, 16-byte tag;
// passphrase: PBKDF2-HMAC-SHA256 with 314110 iterations and a 16-byte salt). Decryption
// honours the header's AES-128/192/256 key size and PBKDF2 iterations/salt.
//
// Stricter than Themis (never costs interoperability, Themis never writes such cells):
// the IV and tag length fields must be exactly 12 and 16 and the token must end right
// after the tag (passphrase: after the KDF context, which must be exactly 6 + salt bytes);
// PBKDF2 iteration counts above 5,000,000 are refused.
import { check } from './errors.mjs';
import {
  concatBytes, optionalBytes, readU16LE, readU32LE, requireBytes, u16LE, u32LE, utf8Encode,
} from './bytes.mjs';
import { MAX_PBKDF2_ITERATIONS, pbkdf2Sha256, soterKdf } from './kdf.mjs';
import { ctrCrypt, gcmDecrypt, gcmEncrypt, randomBytes } from './symmetric.mjs';

const ALG_MASTER_KEY = 0x40010100; // AES-256-GCM, Soter KDF
const ALG_PASSPHRASE = 0x41010100; // AES-256-GCM, PBKDF2
const KDF_NONE = 0;
const KDF_PBKDF2 = 1;
const IV_LENGTH = 12;
const TAG_LENGTH = 16;
const MASTER_TOKEN_LENGTH = 16 + IV_LENGTH + TAG_LENGTH; // 44
const PBKDF2_ITERATIONS = 314110;
const PBKDF2_SALT_LENGTH = 16;
const MAX_MESSAGE = 0xffffffff;
const LABEL_KEY = 'Themis secure cell message key';
const LABEL_IV = 'Themis secure cell message iv';

/**
 * Options accepted by every Secure Cell factory.
 * @typedef {object} CellOptions
 * @property {(n: number) => Uint8Array} [random] random source for IVs and salts
 *   (default: crypto.getRandomValues). Tests inject recorded IVs through it.
 * @property {number} [iterations] passphrase mode only: PBKDF2 iterations for *new* cells
 *   (default and Themis value 314110; lower values are only for tests).
 */

function requireKey(key) {
  requireBytes(key, 'master key');
  check(key.length > 0, 'emptyInput', 'master key is empty');
  return key;
}

function requireMessage(message, what = 'message') {
  requireBytes(message, what);
  check(message.length > 0, 'emptyInput', `${what} is empty`);
  check(message.length <= MAX_MESSAGE, 'invalidArgument', `${what} too long`);
  return message;
}

function takeRandom(random, n) {
  const out = random(n);
  check(out instanceof Uint8Array && out.length === n, 'invalidArgument', 'random source returned wrong size');
  return out;
}

/** Message key: SoterKDF(prekey, label, [LE32(len), context if non-empty], keyLength). */
function messageKey(prekey, messageLength, context, keyLength) {
  const contexts = context.length ? [u32LE(messageLength), context] : [u32LE(messageLength)];
  return soterKdf(prekey, LABEL_KEY, contexts, keyLength);
}

/** Validate an algorithm id; returns the AES key length in bytes. */
function keyLengthForAlg(alg, kdf) {
  check((alg & 0x00f0f000) === 0, 'unsupportedAlgorithm', 'reserved algorithm bits set');
  check(((alg & 0xf00f0000) >>> 0) === 0x40010000, 'unsupportedAlgorithm', 'only AES-GCM cells are supported');
  check(((alg >>> 24) & 0xf) === kdf, 'unsupportedAlgorithm',
    kdf === KDF_NONE ? 'cell needs a passphrase, not a master key' : 'cell needs a master key, not a passphrase');
  const bits = alg & 0xfff;
  check(bits === 128 || bits === 192 || bits === 256, 'unsupportedAlgorithm', `unsupported AES key size ${bits}`);
  return bits / 8;
}

/** Header fields common to both token kinds. */
function readTokenHead(token, minLength) {
  check(token.length >= minLength, 'truncated', 'authentication token too short');
  return {
    alg: readU32LE(token, 0),
    ivLength: readU32LE(token, 4),
    tagLength: readU32LE(token, 8),
    messageLength: readU32LE(token, 12),
  };
}

function checkIvTag(head) {
  check(head.ivLength === IV_LENGTH, 'badLength', 'IV length field must be 12');
  check(head.tagLength === TAG_LENGTH, 'badLength', 'auth tag length field must be 16');
}

/** Parse a 44-byte master-key token. */
function parseKeyToken(token) {
  const head = readTokenHead(token, 16);
  const keyLength = keyLengthForAlg(head.alg, KDF_NONE);
  checkIvTag(head);
  check(token.length === MASTER_TOKEN_LENGTH, 'badLength', 'authentication token has wrong length');
  return { ...head, keyLength, iv: token.subarray(16, 28), tag: token.subarray(28, 44) };
}

/** Parse a passphrase token: 20-byte head, IV, tag, KDF context (LE32 iterations, LE16 salt length, salt). */
function parsePassphraseToken(token) {
  const head = readTokenHead(token, 20);
  const kdfLength = readU32LE(token, 16);
  const keyLength = keyLengthForAlg(head.alg, KDF_PBKDF2);
  checkIvTag(head);
  check(kdfLength >= 6, 'badLength', 'KDF context too short');
  check(token.length === 20 + IV_LENGTH + TAG_LENGTH + kdfLength, 'badLength', 'authentication token has wrong length');
  const kdf = token.subarray(48);
  const iterations = readU32LE(kdf, 0);
  const saltLength = readU16LE(kdf, 4);
  check(kdf.length === 6 + saltLength, 'badLength', 'salt length field disagrees with KDF context');
  check(iterations >= 1 && iterations <= MAX_PBKDF2_ITERATIONS, 'unsupportedAlgorithm',
    `PBKDF2 iteration count ${iterations} outside 1..${MAX_PBKDF2_ITERATIONS}`);
  return { ...head, keyLength, iv: token.subarray(20, 32), tag: token.subarray(32, 48), iterations, salt: kdf.subarray(6) };
}

/** Split token || ciphertext from the end using the message length field (as Themis does). */
function splitSealed(sealed, minHeader) {
  requireBytes(sealed, 'sealed cell');
  check(sealed.length > 0, 'emptyInput', 'sealed cell is empty');
  check(sealed.length >= minHeader, 'truncated', 'sealed cell shorter than its header');
  const messageLength = readU32LE(sealed, 12);
  check(messageLength > 0, 'badLength', 'message length field is zero');
  check(messageLength <= sealed.length - minHeader, 'badLength', 'message length field exceeds cell');
  const split = sealed.length - messageLength;
  return { token: sealed.subarray(0, split), ciphertext: sealed.subarray(split) };
}

function openGcm(key, parsed, ciphertext, context) {
  return gcmDecrypt(key, parsed.iv, concatBytes(ciphertext, parsed.tag), context);
}

/** Encrypt with a derived key; returns { iv, tag, ciphertext }. */
async function sealGcm(key, message, context, random) {
  const iv = takeRandom(random, IV_LENGTH);
  const out = await gcmEncrypt(key, iv, message, context);
  return { iv, ciphertext: out.subarray(0, message.length), tag: out.subarray(message.length) };
}

function keyToken(messageLength, iv, tag) {
  return concatBytes(u32LE(ALG_MASTER_KEY), u32LE(IV_LENGTH), u32LE(TAG_LENGTH), u32LE(messageLength), iv, tag);
}

/** Master-key Seal / Token Protect share this encryption. */
async function encryptWithKey(masterKey, message, context, random) {
  requireMessage(message);
  const ctx = optionalBytes(context, 'context');
  const key = await messageKey(masterKey, message.length, ctx, 32);
  const { iv, tag, ciphertext } = await sealGcm(key, message, ctx, random);
  return { token: keyToken(message.length, iv, tag), ciphertext };
}

async function decryptWithKey(masterKey, token, ciphertext, context) {
  const ctx = optionalBytes(context, 'context');
  const parsed = parseKeyToken(token);
  check(ciphertext.length > 0, 'emptyInput', 'ciphertext is empty');
  check(parsed.messageLength === ciphertext.length, 'badLength', 'message length field differs from ciphertext length');
  const key = await messageKey(masterKey, parsed.messageLength, ctx, parsed.keyLength);
  return openGcm(key, parsed, ciphertext, ctx);
}

function passphraseBytes(passphrase) {
  const bytes = typeof passphrase === 'string' ? utf8Encode(passphrase) : requireBytes(passphrase, 'passphrase');
  check(bytes.length > 0, 'emptyInput', 'passphrase is empty');
  return bytes;
}

/**
 * Seal mode: output = token || ciphertext (authenticated, randomized).
 *
 *   const cell = SecureCellSeal.withKey(key);            // key: non-empty Uint8Array
 *   const sealed = await cell.encrypt(message, context);  // context optional
 *   const plain = await cell.decrypt(sealed, context);
 *
 *   const pcell = SecureCellSeal.withPassphrase('secret'); // string (UTF-8) or Uint8Array
 */
export const SecureCellSeal = {
  /**
   * @param {Uint8Array} key
   * @param {CellOptions} [options]
   */
  withKey(key, { random = randomBytes } = {}) {
    const masterKey = requireKey(key).slice();
    return {
      /** @returns {Promise<Uint8Array>} */
      async encrypt(message, context) {
        const { token, ciphertext } = await encryptWithKey(masterKey, message, context, random);
        return concatBytes(token, ciphertext);
      },
      /** @returns {Promise<Uint8Array>} */
      async decrypt(sealed, context) {
        const { token, ciphertext } = splitSealed(sealed, 16);
        return decryptWithKey(masterKey, token, ciphertext, context);
      },
    };
  },

  /**
   * @param {string|Uint8Array} passphrase
   * @param {CellOptions} [options]
   */
  withPassphrase(passphrase, { random = randomBytes, iterations = PBKDF2_ITERATIONS } = {}) {
    const secret = passphraseBytes(passphrase).slice();
    check(Number.isInteger(iterations) && iterations >= 1 && iterations <= MAX_PBKDF2_ITERATIONS,
      'invalidArgument', 'iterations out of range');
    return {
      /** @returns {Promise<Uint8Array>} */
      async encrypt(message, context) {
        requireMessage(message);
        const ctx = optionalBytes(context, 'context');
        const salt = takeRandom(random, PBKDF2_SALT_LENGTH);
        const prekey = await pbkdf2Sha256(secret, salt, iterations);
        const key = await messageKey(prekey, message.length, ctx, 32);
        const { iv, tag, ciphertext } = await sealGcm(key, message, ctx, random);
        const kdfContext = concatBytes(u32LE(iterations), u16LE(salt.length), salt);
        return concatBytes(u32LE(ALG_PASSPHRASE), u32LE(IV_LENGTH), u32LE(TAG_LENGTH), u32LE(message.length),
          u32LE(kdfContext.length), iv, tag, kdfContext, ciphertext);
      },
      /** @returns {Promise<Uint8Array>} */
      async decrypt(sealed, context) {
        const ctx = optionalBytes(context, 'context');
        const { token, ciphertext } = splitSealed(sealed, 20);
        const parsed = parsePassphraseToken(token);
        check(parsed.messageLength === ciphertext.length, 'badLength', 'message length field differs from ciphertext length');
        const prekey = await pbkdf2Sha256(secret, parsed.salt, parsed.iterations);
        const key = await messageKey(prekey, parsed.messageLength, ctx, parsed.keyLength);
        return openGcm(key, parsed, ciphertext, ctx);
      },
    };
  },
};

/**
 * Token Protect mode: the 44-byte token is returned separately; ciphertext has the message length.
 *
 *   const cell = SecureCellTokenProtect.withKey(key);
 *   const { encrypted, token } = await cell.encrypt(message, context);
 *   const plain = await cell.decrypt(encrypted, token, context);
 */
export const SecureCellTokenProtect = {
  /**
   * @param {Uint8Array} key
   * @param {CellOptions} [options]
   */
  withKey(key, { random = randomBytes } = {}) {
    const masterKey = requireKey(key).slice();
    return {
      /** @returns {Promise<{encrypted: Uint8Array, token: Uint8Array}>} */
      async encrypt(message, context) {
        const { token, ciphertext } = await encryptWithKey(masterKey, message, context, random);
        return { encrypted: ciphertext, token };
      },
      /** @returns {Promise<Uint8Array>} */
      async decrypt(encrypted, token, context) {
        requireBytes(encrypted, 'encrypted message');
        requireBytes(token, 'token');
        check(encrypted.length > 0, 'emptyInput', 'encrypted message is empty');
        return decryptWithKey(masterKey, token, encrypted, context);
      },
    };
  },
};

/**
 * Context Imprint mode: deterministic, length-preserving, UNAUTHENTICATED (AES-256-CTR).
 * A wrong key or context yields garbage, never an error. Context is mandatory.
 *
 *   const cell = SecureCellContextImprint.withKey(key);
 *   const encrypted = await cell.encrypt(message, context);
 *   const plain = await cell.decrypt(encrypted, context);
 */
export const SecureCellContextImprint = {
  /** @param {Uint8Array} key */
  withKey(key) {
    const masterKey = requireKey(key).slice();
    const run = async (data, context, what) => {
      requireMessage(data, what);
      const ctx = optionalBytes(context, 'context');
      check(ctx.length > 0, 'emptyInput', 'context is required in Context Imprint mode');
      const k = await messageKey(masterKey, data.length, new Uint8Array(0), 32);
      const iv = await soterKdf(k, LABEL_IV, [ctx], 16); // keyed with the *derived* key
      return ctrCrypt(k, iv, data);
    };
    return {
      /** @returns {Promise<Uint8Array>} */
      encrypt: (message, context) => run(message, context, 'message'),
      /** @returns {Promise<Uint8Array>} */
      decrypt: (encrypted, context) => run(encrypted, context, 'encrypted message'),
    };
  },
};

// Soter KDF (single HMAC-SHA256 block, ZRTP-like, no length suffix) and PBKDF2-HMAC-SHA256.
import { check } from './errors.mjs';
import { concatBytes, utf8Encode } from './bytes.mjs';
import { hmacSha256 } from './symmetric.mjs';

const COUNTER = new Uint8Array([0, 0, 0, 1]);
export const MAX_PBKDF2_ITERATIONS = 5_000_000;

/**
 * SoterKDF(key, label, contexts, length) = HMAC-SHA256(K, 00000001 || label || 00 || ctx...)[0..length].
 * With an absent/empty key, K is the implicit key: label (first 32 bytes, zero padded)
 * XOR the first <= 32 bytes of every context (used for the Secure Session id).
 * @param {Uint8Array|null|undefined} key
 * @param {string} label ASCII label
 * @param {Uint8Array[]} contexts
 * @param {number} length 1..32
 * @returns {Promise<Uint8Array>}
 */
export async function soterKdf(key, label, contexts, length) {
  check(Number.isInteger(length) && length >= 1 && length <= 32, 'invalidArgument', 'KDF output length must be 1..32');
  const labelBytes = utf8Encode(label);
  let k = key;
  if (!k || k.length === 0) {
    k = new Uint8Array(32);
    k.set(labelBytes.subarray(0, 32));
    for (const ctx of contexts) {
      for (let j = 0; j < Math.min(32, ctx.length); j++) k[j] ^= ctx[j];
    }
  }
  const t = await hmacSha256(k, concatBytes(COUNTER, labelBytes, new Uint8Array(1), ...contexts));
  return t.slice(0, length);
}

/**
 * PBKDF2-HMAC-SHA256 via WebCrypto.
 * @param {Uint8Array} passphrase
 * @param {Uint8Array} salt
 * @param {number} iterations 1..5,000,000 (capped to bound CPU on untrusted headers)
 * @param {number} [length=32] bytes
 */
export async function pbkdf2Sha256(passphrase, salt, iterations, length = 32) {
  check(Number.isInteger(iterations) && iterations >= 1 && iterations <= MAX_PBKDF2_ITERATIONS,
    'unsupportedAlgorithm', `PBKDF2 iteration count ${iterations} outside 1..${MAX_PBKDF2_ITERATIONS}`);
  const subtle = globalThis.crypto.subtle;
  const base = await subtle.importKey('raw', passphrase, 'PBKDF2', false, ['deriveBits']);
  const bits = await subtle.deriveBits({ name: 'PBKDF2', hash: 'SHA-256', salt, iterations }, base, length * 8);
  return new Uint8Array(bits);
}

// Thin WebCrypto wrappers for the symmetric primitives Themis uses.
import { ThemisError } from './errors.mjs';

const subtle = () => globalThis.crypto.subtle;

export async function sha256(data) {
  return new Uint8Array(await subtle().digest('SHA-256', data));
}

export async function hmacSha256(key, data) {
  const k = await subtle().importKey('raw', key, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  return new Uint8Array(await subtle().sign('HMAC', k, data));
}

const aesKey = (key, name) => subtle().importKey('raw', key, { name }, false, ['encrypt', 'decrypt']);

/** Import a raw AES-GCM key once, for callers that use it many times (Secure Session). */
export const importGcmKey = (key) => aesKey(key, 'AES-GCM');
const gcmKey = (key) => (key instanceof Uint8Array ? aesKey(key, 'AES-GCM') : key);

/** AES-GCM with a 12-byte nonce and 16-byte tag; returns ciphertext || tag. `key`: raw bytes or CryptoKey. */
export async function gcmEncrypt(key, nonce, plaintext, aad) {
  const params = { name: 'AES-GCM', iv: nonce, tagLength: 128 };
  if (aad && aad.length) params.additionalData = aad;
  return new Uint8Array(await subtle().encrypt(params, await gcmKey(key), plaintext));
}

/** AES-GCM decryption of ciphertext || tag; throws authenticationFailed. */
export async function gcmDecrypt(key, nonce, sealed, aad) {
  const params = { name: 'AES-GCM', iv: nonce, tagLength: 128 };
  if (aad && aad.length) params.additionalData = aad;
  const k = await gcmKey(key);
  try {
    return new Uint8Array(await subtle().decrypt(params, k, sealed));
  } catch {
    throw new ThemisError('authenticationFailed', 'AES-GCM authentication failed');
  }
}

/** AES-CTR with the 16-byte IV as the full initial counter block (128-bit counter). */
export async function ctrCrypt(key, iv, data) {
  const params = { name: 'AES-CTR', counter: iv, length: 128 };
  return new Uint8Array(await subtle().encrypt(params, await aesKey(key, 'AES-CTR'), data));
}

/** Default random source: CSPRNG bytes. */
export function randomBytes(n) {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) globalThis.crypto.getRandomValues(out.subarray(i, i + 65536));
  return out;
}

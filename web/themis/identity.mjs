// Hush identity conventions built on Themis keys (the session module itself stays generic).
import { check } from './errors.mjs';
import { base64UrlToBytes, bytesToBase64Url, requireBytes } from './bytes.mjs';
import { parsePublicKey } from './keys.mjs';

/**
 * A Hush client's Secure Session id: the ASCII bytes of the unpadded base64url encoding
 * of its Themis public key container.
 * @param {Uint8Array} publicKey UEC2 (validated)
 * @returns {Uint8Array}
 */
export function clientIdFromPublicKey(publicKey) {
  parsePublicKey(publicKey);
  return new TextEncoder().encode(bytesToBase64Url(publicKey));
}

/**
 * Inverse of clientIdFromPublicKey, strict: canonical unpadded base64url of a valid
 * UEC2 container, nothing else (usable directly as the server's key lookup).
 * @param {Uint8Array} clientId
 * @returns {Uint8Array} the public key container
 */
export function publicKeyFromClientId(clientId) {
  requireBytes(clientId, 'client id');
  check(clientId.length > 0 && clientId.length <= 128, 'invalidKey', 'client id is not an encoded public key');
  const text = String.fromCharCode(...clientId);
  let key;
  try { key = base64UrlToBytes(text); } catch { check(false, 'invalidKey', 'client id is not base64url'); }
  parsePublicKey(key);
  return key;
}

// Secure Message (EC P-256): encrypt/decrypt and sign/verify.
//   encrypted: LE32 0x26042720 | LE32 total length | Secure Cell Seal(master key = raw ECDH X, no context)
//   signed:    LE32 0x26042620 | LE32 message length | LE32 signature length | message | DER ECDSA-SHA256
// Keys are Themis containers: REC2 private, UEC2 public (45 or 77 bytes).
import { ThemisError, check } from './errors.mjs';
import { concatBytes, readU32LE, requireBytes, u32LE } from './bytes.mjs';
import { importPrivateKey, importPublicKey } from './keys.mjs';
import { ecdh, signDer, verifyDer } from './ec.mjs';
import { SecureCellSeal } from './cell.mjs';
import { randomBytes } from './symmetric.mjs';

const EC_ENCRYPTED = 0x26042720;
const EC_SIGNED = 0x26042620;

/**
 * Tell the Secure Message kind from its header alone.
 * @param {Uint8Array} data
 * @returns {'encrypted'|'signed'}
 * @throws {ThemisError} unsupportedAlgorithm for RSA or unknown types, truncated for < 4 bytes
 */
export function secureMessageKind(data) {
  requireBytes(data, 'message');
  check(data.length > 0, 'emptyInput', 'message is empty');
  check(data.length >= 4, 'truncated', 'message shorter than its type field');
  const type = readU32LE(data, 0);
  if (type === EC_ENCRYPTED) return 'encrypted';
  if (type === EC_SIGNED) return 'signed';
  throw new ThemisError('unsupportedAlgorithm', `unsupported Secure Message type 0x${type.toString(16)}`);
}

function requireMessage(message) {
  requireBytes(message, 'message');
  check(message.length > 0, 'emptyInput', 'message is empty');
}

async function sharedSecret(ownPrivateKey, peerPublicKey) {
  const [own, peer] = await Promise.all([importPrivateKey(ownPrivateKey), importPublicKey(peerPublicKey, 'ECDH')]);
  return ecdh(own.ecdh, peer);
}

/**
 * Encrypt `message` from the sender (private key) to the recipient (public key).
 * @param {Uint8Array} senderPrivateKey REC2
 * @param {Uint8Array} recipientPublicKey UEC2
 * @param {Uint8Array} message non-empty
 * @param {{random?: (n: number) => Uint8Array}} [options] IV source (tests inject recorded IVs)
 * @returns {Promise<Uint8Array>}
 */
export async function secureMessageEncrypt(senderPrivateKey, recipientPublicKey, message, { random = randomBytes } = {}) {
  requireMessage(message);
  const shared = await sharedSecret(senderPrivateKey, recipientPublicKey);
  const cell = await SecureCellSeal.withKey(shared, { random }).encrypt(message);
  return concatBytes(u32LE(EC_ENCRYPTED), u32LE(8 + cell.length), cell);
}

/**
 * Decrypt an encrypted Secure Message. The length field must equal the input length exactly.
 * @param {Uint8Array} recipientPrivateKey REC2
 * @param {Uint8Array} senderPublicKey UEC2
 * @param {Uint8Array} encrypted
 * @returns {Promise<Uint8Array>}
 */
export async function secureMessageDecrypt(recipientPrivateKey, senderPublicKey, encrypted) {
  check(secureMessageKind(encrypted) === 'encrypted', 'unsupportedAlgorithm', 'not an encrypted Secure Message');
  check(encrypted.length > 8, 'truncated', 'encrypted message has no payload');
  check(readU32LE(encrypted, 4) === encrypted.length, 'badLength', 'length field differs from message length');
  const shared = await sharedSecret(recipientPrivateKey, senderPublicKey);
  return SecureCellSeal.withKey(shared).decrypt(encrypted.subarray(8));
}

/**
 * Sign `message` (sent in clear) with a DER ECDSA-P256-SHA256 signature.
 * @param {Uint8Array} signerPrivateKey REC2
 * @param {Uint8Array} message non-empty
 * @returns {Promise<Uint8Array>}
 */
export async function secureMessageSign(signerPrivateKey, message) {
  requireMessage(message);
  const { ecdsa } = await importPrivateKey(signerPrivateKey);
  const signature = await signDer(ecdsa, message);
  return concatBytes(u32LE(EC_SIGNED), u32LE(message.length), u32LE(signature.length), message, signature);
}

/**
 * Verify a signed Secure Message and return the message. Bytes after the signature are
 * ignored, as Themis does (old wrappers appended two bytes).
 * @param {Uint8Array} signerPublicKey UEC2
 * @param {Uint8Array} signed
 * @returns {Promise<Uint8Array>}
 */
export async function secureMessageVerify(signerPublicKey, signed) {
  check(secureMessageKind(signed) === 'signed', 'unsupportedAlgorithm', 'not a signed Secure Message');
  check(signed.length >= 12, 'truncated', 'signed message header incomplete');
  const messageLength = readU32LE(signed, 4);
  const signatureLength = readU32LE(signed, 8);
  check(messageLength > 0, 'emptyInput', 'signed message is empty');
  check(signatureLength > 0, 'badSignature', 'signature is empty');
  check(messageLength <= signed.length - 12 && signatureLength <= signed.length - 12 - messageLength,
    'truncated', 'length fields exceed the message');
  const message = signed.subarray(12, 12 + messageLength);
  const signature = signed.subarray(12 + messageLength, 12 + messageLength + signatureLength);
  const key = await importPublicKey(signerPublicKey, 'ECDSA');
  await verifyDer(key, signature, message);
  return message.slice();
}

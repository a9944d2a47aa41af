// Public API of the Hush JavaScript implementation of Themis 0.15 (EC P-256 subset).
// Plain ES modules on WebCrypto only; see docs/themis-js.md.
export { ThemisError } from './errors.mjs';
export {
  hexToBytes, bytesToHex, bytesToBase64, base64ToBytes, bytesToBase64Url, base64UrlToBytes,
  utf8Encode, concatBytes, constantTimeEqual,
} from './bytes.mjs';
export { crc32c } from './crc32c.mjs';
export { buildContainer, readContainer, parseContainer } from './container.mjs';
export {
  parsePublicKey, parsePrivateKey, exportPublicKey, exportPrivateKey, normalizePublicKey,
  publicKeyFromPrivate, generateKeyPair, fingerprint,
} from './keys.mjs';
export { rawToDer, derToRaw } from './ec.mjs';
export { soterKdf, pbkdf2Sha256 } from './kdf.mjs';
export { SecureCellSeal, SecureCellTokenProtect, SecureCellContextImprint } from './cell.mjs';
export {
  secureMessageKind, secureMessageEncrypt, secureMessageDecrypt, secureMessageSign, secureMessageVerify,
} from './message.mjs';
export {
  SecureSession, parseHello, parseFinish, parseConfirm, signedData, deriveSessionIdBytes,
  deriveMasterKey, handshakeMac, deriveSessionKeys,
} from './session.mjs';
export { clientIdFromPublicKey, publicKeyFromClientId } from './identity.mjs';

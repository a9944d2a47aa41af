/**
 * The single error type thrown (or rejected) by every Hush Themis module.
 * `code` is a stable machine-readable string; `message` is for humans.
 *
 * Codes:
 *  invalidArgument      wrong JS type / option out of range
 *  emptyInput           empty message, key, context or passphrase where Themis refuses it
 *  invalidKey           key container structurally fine but not a usable P-256 key of the wanted kind
 *  badTag               container tag is not the expected one
 *  badCRC               container CRC-32C mismatch
 *  truncated            fewer bytes than a header or length field requires
 *  badLength            a length field disagrees with the bytes present (incl. trailing bytes)
 *  unsupportedAlgorithm algorithm id / message type / key tag outside the supported subset
 *  authenticationFailed AES-GCM tag did not verify (wrong key, context or tampered data)
 *  badSignature         ECDSA signature malformed (non-strict DER) or not valid
 *  badMAC               Secure Session handshake HMAC mismatch
 *  unknownPeer          the public-key lookup callback found no key for a peer id
 *  outOfState           operation not allowed in the session's current state
 *  badSessionId         data message for another session
 *  replay               data message sequence number not newer than the last accepted one
 *  sequenceOutOfWindow  data message sequence number too far ahead
 *  staleTimestamp       data message timestamp outside +-86400 s of the local clock
 */
export class ThemisError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   */
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.name = 'ThemisError';
    this.code = code;
  }
}

/** Throw a ThemisError unless `condition` holds. */
export function check(condition, code, message) {
  if (!condition) throw new ThemisError(code, message);
}

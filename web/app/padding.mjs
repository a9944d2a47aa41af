// Length hiding (docs/PROTOCOL.md §6.1): before a chat, name or file message is signed and sealed,
// its inner JSON is padded to a size bucket, so that the server learns the bucket and not the
// length. The same rule is Sources/HushProtocol/Padding.swift; both run Tests/Fixtures/padding.json.

/** Secure Cell Seal's 44-byte header, Secure Message sign's 12, and the longest DER ECDSA P-256 signature, 72. */
export const MAX_SEAL_OVERHEAD = 44 + 12 + 72;

/** Lengths of a padded inner JSON in bytes; the top one keeps any payload within the server's 64 KiB (§7). */
export const PAD_BUCKETS = Object.freeze([256, 1024, 4096, 16384, 64 * 1024 - MAX_SEAL_OVERHEAD]);

/** A message whose inner JSON with the `pad` member is longer than the top bucket. */
export class MessageTooLarge extends Error {
  constructor(bytes) {
    super('message too large to send');
    this.bytes = bytes;
  }
}

const SPACE = 0x20;
const encoder = new TextEncoder();

/**
 * The UTF-8 of an object's compact JSON text (`{` … `}`, as JSON.stringify writes it) → the same
 * with a last member `"pad":"<spaces>"`, exactly the smallest bucket long.
 */
export function padInnerJSON(json) {
  if (!(json instanceof Uint8Array) || json.length < 2 || json[0] !== 0x7b || json[json.length - 1] !== 0x7d) {
    throw new TypeError('padding takes the JSON text of an object');
  }
  const isEmpty = json.length === 2;
  const member = encoder.encode(isEmpty ? '"pad":"' : ',"pad":"');
  const unpadded = json.length - 1 + member.length + 2;
  const bucket = PAD_BUCKETS.find((size) => size >= unpadded);
  if (bucket === undefined) throw new MessageTooLarge(unpadded);
  const padded = new Uint8Array(bucket).fill(SPACE);
  padded.set(json.subarray(0, json.length - 1));
  padded.set(member, json.length - 1);
  padded.set(encoder.encode('"}'), bucket - 2);
  return padded;
}

/** A reader's rule: `pad`, when present, is a string of U+0020 only, of any length (the bucket is the sender's). */
export const isValidPad = (pad) => typeof pad === 'string' && /^ *$/.test(pad);

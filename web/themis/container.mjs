// Soter containers: tag(4 ASCII) | BE32 size (whole container) | LE32 CRC-32C | payload.
// The CRC covers the header with the CRC field zeroed, then the payload.
import { check } from './errors.mjs';
import { concatBytes, readU32BE, readU32LE, u32BE, u32LE } from './bytes.mjs';
import { crc32c } from './crc32c.mjs';

export const HEADER_SIZE = 12;
const ZERO4 = new Uint8Array(4);

/**
 * Build a container.
 * @param {string} tag 4 ASCII characters
 * @param {Uint8Array} payload
 * @returns {Uint8Array}
 */
export function buildContainer(tag, payload) {
  const tagBytes = new TextEncoder().encode(tag);
  check(tagBytes.length === 4, 'invalidArgument', 'container tag must be 4 ASCII bytes');
  const size = HEADER_SIZE + payload.length;
  const head = concatBytes(tagBytes, u32BE(size));
  const crc = crc32c(head, ZERO4, payload);
  return concatBytes(head, u32LE(crc), payload);
}

/**
 * Read one container starting at `offset`, strictly: the header must fit, 12 <= size,
 * the whole container must lie inside `buffer`, and the CRC must match.
 * Themis treats size < 12 as an empty payload; we reject it.
 * @param {Uint8Array} buffer
 * @param {number} [offset=0]
 * @returns {{tag: string, size: number, payload: Uint8Array, bytes: Uint8Array, end: number}}
 *   `bytes` is the whole container, `end` the offset just after it.
 */
export function readContainer(buffer, offset = 0) {
  check(buffer.length - offset >= HEADER_SIZE, 'truncated', 'container header incomplete');
  const size = readU32BE(buffer, offset + 4);
  check(size >= HEADER_SIZE, 'badLength', 'container size field below header size');
  check(size <= buffer.length - offset, 'truncated', 'container size exceeds available bytes');
  const bytes = buffer.subarray(offset, offset + size);
  const crc = crc32c(bytes.subarray(0, 8), ZERO4, bytes.subarray(HEADER_SIZE));
  check(crc === readU32LE(bytes, 8), 'badCRC', 'container checksum mismatch');
  const tag = String.fromCharCode(...bytes.subarray(0, 4));
  return { tag, size, payload: bytes.subarray(HEADER_SIZE), bytes, end: offset + size };
}

/**
 * Parse a buffer that must be exactly one container with the given tag.
 * @param {Uint8Array} buffer
 * @param {string} tag
 */
export function parseContainer(buffer, tag) {
  check(buffer.length >= HEADER_SIZE, 'truncated', 'container header incomplete');
  check(String.fromCharCode(...buffer.subarray(0, 4)) === tag, 'badTag', `expected ${tag} container`);
  const c = readContainer(buffer, 0);
  check(c.size === buffer.length, 'badLength', 'container size field differs from buffer length');
  return c;
}

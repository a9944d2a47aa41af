// Byte helpers: encodings, fixed-width integers, concatenation, constant-time compare.
import { ThemisError, check } from './errors.mjs';

/** Require a Uint8Array (Node Buffers qualify). */
export function requireBytes(value, what) {
  check(value instanceof Uint8Array, 'invalidArgument', `${what} must be a Uint8Array`);
  return value;
}

/** Optional byte input: undefined/null mean "absent" and become an empty array. */
export function optionalBytes(value, what) {
  if (value === undefined || value === null) return new Uint8Array(0);
  return requireBytes(value, what);
}

export function hexToBytes(hex) {
  check(typeof hex === 'string' && hex.length % 2 === 0 && /^[0-9a-fA-F]*$/.test(hex),
    'invalidArgument', 'not an even-length hex string');
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(i * 2, 2), 16);
  return out;
}

export function bytesToHex(bytes) {
  let s = '';
  for (const b of bytes) s += b.toString(16).padStart(2, '0');
  return s;
}

export function bytesToBase64(bytes) {
  let bin = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(bin);
}

/** Strict standard base64 (padding required, canonical trailing bits). */
export function base64ToBytes(text) {
  check(typeof text === 'string' && text.length % 4 === 0 &&
    /^[A-Za-z0-9+/]*={0,2}$/.test(text), 'invalidArgument', 'not canonical base64');
  let bin;
  try { bin = atob(text); } catch { throw new ThemisError('invalidArgument', 'not canonical base64'); }
  const out = Uint8Array.from(bin, (c) => c.charCodeAt(0));
  check(bytesToBase64(out) === text, 'invalidArgument', 'not canonical base64');
  return out;
}

/** base64url without padding (RFC 4648 §5). */
export function bytesToBase64Url(bytes) {
  return bytesToBase64(bytes).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** Strict base64url without padding: rejects padding, foreign characters and non-canonical forms. */
export function base64UrlToBytes(text) {
  check(typeof text === 'string' && /^[A-Za-z0-9_-]*$/.test(text) && text.length % 4 !== 1,
    'invalidArgument', 'not canonical unpadded base64url');
  const std = text.replace(/-/g, '+').replace(/_/g, '/');
  return base64ToBytes(std + '='.repeat((4 - (std.length % 4)) % 4));
}

export function utf8Encode(text) {
  return new TextEncoder().encode(text);
}

export function concatBytes(...parts) {
  let total = 0;
  for (const p of parts) total += p.length;
  const out = new Uint8Array(total);
  let off = 0;
  for (const p of parts) { out.set(p, off); off += p.length; }
  return out;
}

/** Compare two byte arrays without an early exit on the first difference. */
export function constantTimeEqual(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

export function readU32BE(b, off) {
  return ((b[off] << 24) | (b[off + 1] << 16) | (b[off + 2] << 8) | b[off + 3]) >>> 0;
}
export function readU32LE(b, off) {
  return (b[off] | (b[off + 1] << 8) | (b[off + 2] << 16) | (b[off + 3] << 24)) >>> 0;
}
export function readU16LE(b, off) {
  return b[off] | (b[off + 1] << 8);
}
/** Unsigned 64-bit big-endian, as a BigInt. */
export function readU64BE(b, off) {
  return (BigInt(readU32BE(b, off)) << 32n) | BigInt(readU32BE(b, off + 4));
}

export function u32BE(n) {
  return new Uint8Array([(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255]);
}
export function u32LE(n) {
  return new Uint8Array([n & 255, (n >>> 8) & 255, (n >>> 16) & 255, (n >>> 24) & 255]);
}
export function u16LE(n) {
  return new Uint8Array([n & 255, (n >>> 8) & 255]);
}
/** Unsigned 64-bit big-endian from a non-negative safe integer or BigInt. */
export function u64BE(n) {
  const v = BigInt(n);
  return concatBytes(u32BE(Number(v >> 32n) >>> 0), u32BE(Number(v & 0xffffffffn) >>> 0));
}

/** Big-endian bytes <-> BigInt (fixed width on output). */
export function bytesToBigInt(b) {
  return b.length === 0 ? 0n : BigInt('0x' + bytesToHex(b));
}
export function bigIntToBytes(v, width) {
  const hex = v.toString(16).padStart(width * 2, '0');
  check(hex.length === width * 2, 'invalidArgument', 'integer too large for field');
  return hexToBytes(hex);
}

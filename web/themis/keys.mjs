// Themis EC P-256 key containers (REC2 private, UEC2 public), key generation,
// fingerprints, and conversion to WebCrypto keys.
import { ThemisError, check } from './errors.mjs';
import {
  bytesToBase64Url, base64UrlToBytes, bigIntToBytes, bytesToBigInt, bytesToHex,
  readU32BE, requireBytes,
} from './bytes.mjs';
import { buildContainer, readContainer, HEADER_SIZE } from './container.mjs';
import { N, compressPoint, decodePoint, scalarMultBase, uncompressedPoint } from './p256.mjs';
import { sha256 } from './symmetric.mjs';

const subtle = () => globalThis.crypto.subtle;
const PUBLIC_LENGTHS = [45, 77];
const PRIVATE_LENGTHS = [45, 44];

/**
 * Structural checks in Themis' order: known tag prefix of the wanted kind, P-256 curve
 * digit, size field == length, CRC, allowed total length.
 */
function checkKeyContainer(bytes, kind) {
  requireBytes(bytes, 'key');
  check(bytes.length > 0, 'emptyInput', 'key is empty');
  check(bytes.length >= HEADER_SIZE, 'truncated', 'key shorter than a container header');
  const tag = String.fromCharCode(...bytes.subarray(0, 4));
  const prefix = kind === 'public' ? 'UEC' : 'REC';
  if (tag.slice(0, 3) !== prefix) {
    throw new ThemisError('invalidKey', `expected an EC ${kind} key (${prefix}2), got tag ${JSON.stringify(tag)}`);
  }
  check(tag[3] === '2', 'unsupportedAlgorithm', 'only P-256 keys (tag digit 2) are supported');
  check(readU32BE(bytes, 4) === bytes.length, 'badLength', 'key size field differs from key length');
  const { payload } = readContainer(bytes, 0);
  const allowed = kind === 'public' ? PUBLIC_LENGTHS : PRIVATE_LENGTHS;
  check(allowed.includes(bytes.length), 'invalidKey', `EC ${kind} key must be ${allowed.join(' or ')} bytes`);
  return payload;
}

/**
 * Parse a UEC2 public key container (45-byte compressed or 77-byte uncompressed form)
 * and check the point is on the curve.
 * @param {Uint8Array} publicKey
 * @returns {{x: bigint, y: bigint}}
 */
export function parsePublicKey(publicKey) {
  return decodePoint(checkKeyContainer(publicKey, 'public'));
}

/**
 * Parse a REC2 private key container: 45 bytes (0x00 || d) or 44 bytes (d), 1 <= d < n.
 * Stricter than Themis: the 33-byte payload must start with 0x00.
 * @param {Uint8Array} privateKey
 * @returns {bigint} the scalar d
 */
export function parsePrivateKey(privateKey) {
  const payload = checkKeyContainer(privateKey, 'private');
  if (payload.length === 33) check(payload[0] === 0x00, 'invalidKey', 'private key padding byte is not zero');
  const d = bytesToBigInt(payload);
  check(d >= 1n && d < N, 'invalidKey', 'private scalar out of range');
  return d;
}

/**
 * UEC2 container for a point; compressed (45 bytes, what Themis generates) by default.
 * @param {{x: bigint, y: bigint}} point
 * @param {{compressed?: boolean}} [options]
 */
export function exportPublicKey(point, { compressed = true } = {}) {
  return buildContainer('UEC2', compressed ? compressPoint(point) : uncompressedPoint(point));
}

/** 45-byte REC2 container 0x00 || d, exactly as Themis exports private keys. */
export function exportPrivateKey(d) {
  return buildContainer('REC2', bigIntToBytes(d, 33));
}

/** Re-encode any valid public key container in the given form (default: 45-byte compressed). */
export function normalizePublicKey(publicKey, { compressed = true } = {}) {
  return exportPublicKey(parsePublicKey(publicKey), { compressed });
}

/** The 45-byte compressed UEC2 public key of a REC2 private key. */
export function publicKeyFromPrivate(privateKey) {
  return exportPublicKey(scalarMultBase(parsePrivateKey(privateKey)));
}

/**
 * Generate a P-256 key pair with WebCrypto, encoded like themis_gen_ec_key_pair:
 * 45-byte REC2 (0x00 || d) and 45-byte compressed UEC2.
 * @returns {Promise<{privateKey: Uint8Array, publicKey: Uint8Array}>}
 */
export async function generateKeyPair() {
  const pair = await subtle().generateKey({ name: 'ECDH', namedCurve: 'P-256' }, true, ['deriveBits']);
  const jwk = await subtle().exportKey('jwk', pair.privateKey);
  const d = bytesToBigInt(base64UrlToBytes(jwk.d));
  const point = { x: bytesToBigInt(base64UrlToBytes(jwk.x)), y: bytesToBigInt(base64UrlToBytes(jwk.y)) };
  return { privateKey: exportPrivateKey(d), publicKey: exportPublicKey(point) };
}

/**
 * Human-comparable fingerprint of a public key (shared definition with the Swift side):
 * SHA-256 over the public key *container bytes exactly as given* (so the 45-byte and 77-byte
 * forms of one key differ; Hush always uses the 45-byte compressed form), first 10 bytes,
 * as 5 groups of 4 lowercase hex characters separated by single spaces,
 * e.g. "1a2b 3c4d 5e6f 7081 92a3". The key is validated first.
 * @param {Uint8Array} publicKey
 * @returns {Promise<string>}
 */
export async function fingerprint(publicKey) {
  parsePublicKey(publicKey);
  return bytesToHex((await sha256(publicKey)).subarray(0, 10)).match(/.{4}/g).join(' ');
}

// ---- WebCrypto import (internal to the library) ----

const ALG = (name) => ({ name, namedCurve: 'P-256' });

/**
 * Import a public key container for 'ECDSA' (verify) or 'ECDH'.
 * @returns {Promise<CryptoKey>}
 */
export async function importPublicKey(publicKey, algorithm) {
  const raw = uncompressedPoint(parsePublicKey(publicKey));
  return subtle().importKey('raw', raw, ALG(algorithm), false, algorithm === 'ECDSA' ? ['verify'] : []);
}

/**
 * Import a private key container as an ECDSA signing key and an ECDH key.
 * WebCrypto only takes a bare scalar inside a JWK with x and y, so the public point is
 * computed once here.
 * @returns {Promise<{ecdsa: CryptoKey, ecdh: CryptoKey, publicKey: Uint8Array}>}
 */
export async function importPrivateKey(privateKey) {
  const d = parsePrivateKey(privateKey);
  const point = scalarMultBase(d);
  const jwk = {
    kty: 'EC', crv: 'P-256', ext: false,
    d: bytesToBase64Url(bigIntToBytes(d, 32)),
    x: bytesToBase64Url(bigIntToBytes(point.x, 32)),
    y: bytesToBase64Url(bigIntToBytes(point.y, 32)),
  };
  const [ecdsa, ecdh] = await Promise.all([
    subtle().importKey('jwk', jwk, ALG('ECDSA'), false, ['sign']),
    subtle().importKey('jwk', jwk, ALG('ECDH'), false, ['deriveBits']),
  ]);
  return { ecdsa, ecdh, publicKey: exportPublicKey(point) };
}

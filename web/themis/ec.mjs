// ECDSA-P256-SHA256 with DER signatures (Themis) on top of WebCrypto's raw r||s, and raw ECDH.
import { check } from './errors.mjs';
import { bigIntToBytes, bytesToBigInt, concatBytes } from './bytes.mjs';
import { N } from './p256.mjs';

const subtle = () => globalThis.crypto.subtle;
const ECDSA = { name: 'ECDSA', hash: 'SHA-256' };

function derInteger(value) {
  let bytes = bigIntToBytes(value, 32);
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i++;
  bytes = bytes.subarray(i);
  if (bytes[0] & 0x80) bytes = concatBytes(new Uint8Array([0]), bytes);
  return concatBytes(new Uint8Array([0x02, bytes.length]), bytes);
}

/** 64-byte r||s -> DER ECDSA-Sig-Value (minimal INTEGERs). */
export function rawToDer(raw) {
  check(raw.length === 64, 'badSignature', 'raw signature must be 64 bytes');
  const body = concatBytes(derInteger(bytesToBigInt(raw.subarray(0, 32))), derInteger(bytesToBigInt(raw.subarray(32))));
  return concatBytes(new Uint8Array([0x30, body.length]), body);
}

function readDerInteger(der, off) {
  check(off + 2 <= der.length && der[off] === 0x02, 'badSignature', 'DER INTEGER expected');
  const len = der[off + 1];
  check(len >= 1 && len <= 33 && off + 2 + len <= der.length, 'badSignature', 'bad DER INTEGER length');
  const v = der.subarray(off + 2, off + 2 + len);
  check((v[0] & 0x80) === 0, 'badSignature', 'negative DER INTEGER');
  check(!(v[0] === 0 && (len === 1 || (v[1] & 0x80) === 0)), 'badSignature', 'non-minimal DER INTEGER');
  const value = bytesToBigInt(v);
  check(value >= 1n && value < N, 'badSignature', 'signature value out of range');
  return { value, end: off + 2 + len };
}

/** Strict DER ECDSA-Sig-Value -> 64-byte r||s; the DER must span `der` exactly. */
export function derToRaw(der) {
  check(der.length >= 8 && der[0] === 0x30 && der[1] < 0x80 && der[1] === der.length - 2,
    'badSignature', 'malformed DER signature');
  const r = readDerInteger(der, 2);
  const s = readDerInteger(der, r.end);
  check(s.end === der.length, 'badSignature', 'trailing bytes inside DER signature');
  return concatBytes(bigIntToBytes(r.value, 32), bigIntToBytes(s.value, 32));
}

/** DER ECDSA signature of SHA-256(data). */
export async function signDer(ecdsaPrivateKey, data) {
  return rawToDer(new Uint8Array(await subtle().sign(ECDSA, ecdsaPrivateKey, data)));
}

/** Verify a DER signature; throws badSignature when malformed or invalid. */
export async function verifyDer(ecdsaPublicKey, der, data) {
  const ok = await subtle().verify(ECDSA, ecdsaPublicKey, derToRaw(der), data);
  check(ok, 'badSignature', 'signature does not verify');
}

/** Raw ECDH: the 32-byte big-endian X coordinate of the shared point, no KDF. */
export async function ecdh(ecdhPrivateKey, ecdhPublicKey) {
  return new Uint8Array(await subtle().deriveBits({ name: 'ECDH', public: ecdhPublicKey }, ecdhPrivateKey, 256));
}

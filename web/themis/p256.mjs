// P-256 arithmetic with BigInt, used only where WebCrypto has no API:
// point (de)compression, on-curve checks, and computing the public point of an
// imported private scalar (WebCrypto imports a bare scalar only as a JWK with x, y).
// Not constant time: it runs once per private-key import, never per message.
import { check } from './errors.mjs';
import { bigIntToBytes, bytesToBigInt } from './bytes.mjs';

export const P = 0xffffffff00000001000000000000000000000000ffffffffffffffffffffffffn;
export const N = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;
const B = 0x5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604bn;
const GX = 0x6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296n;
const GY = 0x4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5n;

const mod = (a, m = P) => { const r = a % m; return r < 0n ? r + m : r; };

function powMod(base, exp, m) {
  let result = 1n;
  base = mod(base, m);
  while (exp > 0n) {
    if (exp & 1n) result = (result * base) % m;
    base = (base * base) % m;
    exp >>= 1n;
  }
  return result;
}

/** y^2 = x^3 - 3x + b (mod p) */
function curveRhs(x) {
  return mod(x * x * x - 3n * x + B);
}

function isOnCurve(x, y) {
  return x >= 0n && x < P && y >= 0n && y < P && mod(y * y) === curveRhs(x);
}

// Jacobian coordinates (X, Y, Z) with affine x = X/Z^2, y = Y/Z^3; Z = 0 is infinity.
function jDouble([X, Y, Z]) {
  if (Z === 0n || Y === 0n) return [0n, 1n, 0n];
  const YY = mod(Y * Y);
  const S = mod(4n * X * YY);
  const ZZ = mod(Z * Z);
  const M = mod(3n * (X - ZZ) * (X + ZZ)); // a = -3
  const X3 = mod(M * M - 2n * S);
  return [X3, mod(M * (S - X3) - 8n * YY * YY), mod(2n * Y * Z)];
}

function jAdd(p1, p2) {
  const [X1, Y1, Z1] = p1;
  const [X2, Y2, Z2] = p2;
  if (Z1 === 0n) return p2;
  if (Z2 === 0n) return p1;
  const Z1Z1 = mod(Z1 * Z1);
  const Z2Z2 = mod(Z2 * Z2);
  const U1 = mod(X1 * Z2Z2);
  const U2 = mod(X2 * Z1Z1);
  const S1 = mod(Y1 * Z2 * Z2Z2);
  const S2 = mod(Y2 * Z1 * Z1Z1);
  if (U1 === U2) return S1 === S2 ? jDouble(p1) : [0n, 1n, 0n];
  const H = mod(U2 - U1);
  const R = mod(S2 - S1);
  const HH = mod(H * H);
  const HHH = mod(H * HH);
  const X3 = mod(R * R - HHH - 2n * U1 * HH);
  return [X3, mod(R * (U1 * HH - X3) - S1 * HHH), mod(H * Z1 * Z2)];
}

/** d * G as affine {x, y}; requires 1 <= d < n. Montgomery ladder (uniform add/double sequence). */
export function scalarMultBase(d) {
  check(d >= 1n && d < N, 'invalidKey', 'private scalar out of range');
  let r0 = [0n, 1n, 0n];
  let r1 = [GX, GY, 1n];
  for (let i = 255; i >= 0; i--) {
    if ((d >> BigInt(i)) & 1n) { r0 = jAdd(r0, r1); r1 = jDouble(r1); }
    else { r1 = jAdd(r0, r1); r0 = jDouble(r0); }
  }
  const [X, Y, Z] = r0;
  const zInv = powMod(Z, P - 2n, P);
  const zInv2 = mod(zInv * zInv);
  return { x: mod(X * zInv2), y: mod(Y * zInv2 * zInv) };
}

/** SEC1 compressed encoding: 02/03 || X. */
export function compressPoint({ x, y }) {
  const out = new Uint8Array(33);
  out[0] = y & 1n ? 0x03 : 0x02;
  out.set(bigIntToBytes(x, 32), 1);
  return out;
}

/** SEC1 uncompressed encoding: 04 || X || Y. */
export function uncompressedPoint({ x, y }) {
  const out = new Uint8Array(65);
  out[0] = 0x04;
  out.set(bigIntToBytes(x, 32), 1);
  out.set(bigIntToBytes(y, 32), 33);
  return out;
}

/**
 * Decode a SEC1 point (33-byte compressed or 65-byte uncompressed) and check it is on the curve.
 * p = 3 (mod 4), so sqrt(a) = a^((p+1)/4).
 * @returns {{x: bigint, y: bigint}}
 */
export function decodePoint(bytes) {
  if (bytes.length === 33 && (bytes[0] === 0x02 || bytes[0] === 0x03)) {
    const x = bytesToBigInt(bytes.subarray(1));
    check(x < P, 'invalidKey', 'point x out of range');
    let y = powMod(curveRhs(x), (P + 1n) / 4n, P);
    check(mod(y * y) === curveRhs(x), 'invalidKey', 'point not on curve');
    if ((y & 1n) !== BigInt(bytes[0] & 1)) y = mod(-y);
    return { x, y };
  }
  check(bytes.length === 65 && bytes[0] === 0x04, 'invalidKey', 'unsupported point encoding');
  const x = bytesToBigInt(bytes.subarray(1, 33));
  const y = bytesToBigInt(bytes.subarray(33));
  check(isOnCurve(x, y), 'invalidKey', 'point not on curve');
  return { x, y };
}

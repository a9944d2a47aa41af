// A QR code encoder (ISO/IEC 18004), pure: byte mode, versions 1–40, error correction levels
// L, M, Q and H, the eight masks. Hush uses it for the invite link (level M). Checked against
// known answers and another encoder's matrices in tests/js/qr.test.mjs.

const LEVELS = { L: 0, M: 1, Q: 2, H: 3 };
const FORMAT_LEVEL_BITS = [1, 0, 3, 2]; // L=01, M=00, Q=11, H=10

// Per level (L, M, Q, H), indexed by version: error correction codewords per block, and blocks.
const ECC_PER_BLOCK = [
  [0, 7, 10, 15, 20, 26, 18, 20, 24, 30, 18, 20, 24, 26, 30, 22, 24, 28, 30, 28, 28, 28, 28, 30, 30, 26, 28, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30],
  [0, 10, 16, 26, 18, 24, 16, 18, 22, 22, 26, 30, 22, 22, 24, 24, 28, 28, 26, 26, 26, 26, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28],
  [0, 13, 22, 18, 26, 18, 24, 18, 22, 20, 24, 28, 26, 24, 20, 30, 24, 28, 28, 26, 30, 28, 30, 30, 30, 30, 28, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30],
  [0, 17, 28, 22, 16, 22, 28, 26, 26, 24, 28, 24, 28, 22, 24, 24, 30, 28, 28, 26, 28, 30, 24, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30],
];
const BLOCKS = [
  [0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 4, 4, 4, 4, 4, 6, 6, 6, 6, 7, 8, 8, 9, 9, 10, 12, 12, 12, 13, 14, 15, 16, 17, 18, 19, 19, 20, 21, 22, 24, 25],
  [0, 1, 1, 1, 2, 2, 4, 4, 4, 5, 5, 5, 8, 9, 9, 10, 10, 11, 13, 14, 16, 17, 17, 18, 20, 21, 23, 25, 26, 28, 29, 31, 33, 35, 37, 38, 40, 43, 45, 47, 49],
  [0, 1, 1, 2, 2, 4, 4, 6, 6, 8, 8, 8, 10, 12, 16, 12, 17, 16, 18, 21, 20, 23, 23, 25, 27, 29, 34, 34, 35, 38, 40, 43, 45, 48, 51, 53, 56, 59, 62, 65, 68],
  [0, 1, 1, 2, 4, 4, 4, 5, 6, 8, 8, 11, 11, 16, 16, 18, 16, 19, 21, 25, 25, 25, 34, 30, 32, 35, 37, 40, 42, 45, 48, 51, 54, 57, 60, 63, 66, 70, 74, 77, 81],
];

// ---- GF(256), polynomial x^8 + x^4 + x^3 + x^2 + 1 ----

const EXP = new Uint8Array(512);
const LOG = new Uint8Array(256);
for (let i = 0, x = 1; i < 255; i += 1) {
  EXP[i] = x;
  LOG[x] = i;
  x <<= 1;
  if (x & 0x100) x ^= 0x11d;
}
for (let i = 255; i < 512; i += 1) EXP[i] = EXP[i - 255];
const mul = (a, b) => (a === 0 || b === 0 ? 0 : EXP[LOG[a] + LOG[b]]);

/** The Reed–Solomon generator polynomial of `degree`, highest power first (leading 1 left out). */
function generator(degree) {
  let poly = [1];
  for (let i = 0; i < degree; i += 1) { // times (x − α^i)
    const next = new Array(poly.length + 1).fill(0);
    for (let j = 0; j < poly.length; j += 1) {
      next[j] ^= poly[j];
      next[j + 1] ^= mul(poly[j], EXP[i]);
    }
    poly = next;
  }
  return poly.slice(1);
}

/** The `degree` error correction codewords of `data` (the remainder of data·x^degree by the generator). */
export function reedSolomon(data, degree) {
  const gen = generator(degree);
  const rem = new Array(degree).fill(0);
  for (const byte of data) {
    const factor = byte ^ rem.shift();
    rem.push(0);
    for (let i = 0; i < degree; i += 1) rem[i] ^= mul(gen[i], factor);
  }
  return rem;
}

// ---- sizes ----

export const sizeOf = (version) => version * 4 + 17;

export function alignmentPositions(version) {
  if (version === 1) return [];
  const size = sizeOf(version);
  const count = Math.floor(version / 7) + 2;
  const step = version === 32 ? 26 : Math.ceil((size - 13) / (count * 2 - 2)) * 2;
  const positions = [6];
  for (let pos = size - 7; positions.length < count; pos -= step) positions.splice(1, 0, pos);
  return positions;
}

/** Modules left for data and error correction once the function patterns are placed. */
function rawModules(version) {
  let n = (16 * version + 128) * version + 64;
  if (version >= 2) {
    const align = Math.floor(version / 7) + 2;
    n -= (25 * align - 10) * align - 55;
    if (version >= 7) n -= 36;
  }
  return n;
}

export function dataCodewords(version, level) {
  const l = LEVELS[level];
  return Math.floor(rawModules(version) / 8) - ECC_PER_BLOCK[l][version] * BLOCKS[l][version];
}

// ---- BCH codes of the format and version information ----

/** The 15 format bits of a level and mask, masked with 101010000010010 as placed in the symbol. */
export function formatBits(level, mask) {
  const data = (FORMAT_LEVEL_BITS[LEVELS[level]] << 3) | mask;
  let rem = data;
  for (let i = 0; i < 10; i += 1) rem = (rem << 1) ^ ((rem >>> 9) * 0x537);
  return ((data << 10) | rem) ^ 0x5412;
}

/** The 18 version bits (versions 7 and up). */
export function versionBits(version) {
  let rem = version;
  for (let i = 0; i < 12; i += 1) rem = (rem << 1) ^ ((rem >>> 11) * 0x1f25);
  return (version << 12) | rem;
}

// ---- the codewords ----

/** Byte-mode data codewords of `bytes` for a version and level, padded (0xEC, 0x11). */
export function dataCodewordsFor(bytes, version, level) {
  const capacity = dataCodewords(version, level);
  const bits = [];
  const put = (value, length) => { for (let i = length - 1; i >= 0; i -= 1) bits.push((value >>> i) & 1); };
  put(0b0100, 4);
  put(bytes.length, version <= 9 ? 8 : 16);
  for (const b of bytes) put(b, 8);
  if (bits.length > capacity * 8) throw new RangeError('too much data for this version');
  put(0, Math.min(4, capacity * 8 - bits.length));
  put(0, (8 - (bits.length % 8)) % 8);
  const out = [];
  for (let i = 0; i < bits.length; i += 8) out.push(bits.slice(i, i + 8).reduce((v, b) => (v << 1) | b, 0));
  for (let pad = 0xec; out.length < capacity; pad ^= 0xec ^ 0x11) out.push(pad);
  return out;
}

/** The data codewords split into blocks, each followed by its error correction, interleaved. */
export function interleave(data, version, level) {
  const l = LEVELS[level];
  const blockCount = BLOCKS[l][version];
  const eccLength = ECC_PER_BLOCK[l][version];
  const total = Math.floor(rawModules(version) / 8);
  const shortBlocks = blockCount - (total % blockCount);
  const shortData = Math.floor(total / blockCount) - eccLength;
  const blocks = [];
  for (let i = 0, at = 0; i < blockCount; i += 1) {
    const length = shortData + (i < shortBlocks ? 0 : 1);
    const chunk = data.slice(at, at + length);
    at += length;
    blocks.push({ data: chunk, ecc: reedSolomon(chunk, eccLength) });
  }
  const out = [];
  for (let i = 0; i <= shortData; i += 1) for (const b of blocks) if (i < b.data.length) out.push(b.data[i]);
  for (let i = 0; i < eccLength; i += 1) for (const b of blocks) out.push(b.ecc[i]);
  return out;
}

// ---- the symbol ----

const MASKS = [
  (x, y) => (x + y) % 2 === 0,
  (x, y) => y % 2 === 0,
  (x) => x % 3 === 0,
  (x, y) => (x + y) % 3 === 0,
  (x, y) => (Math.floor(x / 3) + Math.floor(y / 2)) % 2 === 0,
  (x, y) => ((x * y) % 2) + ((x * y) % 3) === 0,
  (x, y) => (((x * y) % 2) + ((x * y) % 3)) % 2 === 0,
  (x, y) => (((x + y) % 2) + ((x * y) % 3)) % 2 === 0,
];

class Grid {
  constructor(size) {
    this.size = size;
    this.dark = new Uint8Array(size * size);
    this.fixed = new Uint8Array(size * size); // function patterns and format/version areas
  }

  set(x, y, dark, fixed = true) {
    this.dark[y * this.size + x] = dark ? 1 : 0;
    if (fixed) this.fixed[y * this.size + x] = 1;
  }

  get(x, y) { return this.dark[y * this.size + x] === 1; }
  isFixed(x, y) { return this.fixed[y * this.size + x] === 1; }
}

function functionPatterns(grid, version) {
  const { size } = grid;
  for (let i = 0; i < size; i += 1) { // timing patterns
    grid.set(6, i, i % 2 === 0);
    grid.set(i, 6, i % 2 === 0);
  }
  for (const [cx, cy] of [[3, 3], [size - 4, 3], [3, size - 4]]) { // finders with their separators
    for (let dy = -4; dy <= 4; dy += 1) {
      for (let dx = -4; dx <= 4; dx += 1) {
        const x = cx + dx;
        const y = cy + dy;
        if (x < 0 || y < 0 || x >= size || y >= size) continue;
        const ring = Math.max(Math.abs(dx), Math.abs(dy));
        grid.set(x, y, ring !== 2 && ring !== 4);
      }
    }
  }
  const positions = alignmentPositions(version);
  for (const cy of positions) {
    for (const cx of positions) {
      if ((cx === 6 && cy === 6) || (cx === 6 && cy === size - 7) || (cx === size - 7 && cy === 6)) continue; // under a finder
      for (let dy = -2; dy <= 2; dy += 1) {
        for (let dx = -2; dx <= 2; dx += 1) grid.set(cx + dx, cy + dy, Math.max(Math.abs(dx), Math.abs(dy)) !== 1);
      }
    }
  }
  placeFormat(grid, 0); // reserves the format areas (and the dark module)
  if (version >= 7) {
    const bits = versionBits(version);
    for (let i = 0; i < 18; i += 1) {
      const dark = ((bits >>> i) & 1) === 1;
      const a = size - 11 + (i % 3);
      const b = Math.floor(i / 3);
      grid.set(a, b, dark);
      grid.set(b, a, dark);
    }
  }
}

function placeFormat(grid, bits) {
  const { size } = grid;
  const bit = (i) => ((bits >>> i) & 1) === 1;
  for (let i = 0; i <= 5; i += 1) grid.set(8, i, bit(i));
  grid.set(8, 7, bit(6));
  grid.set(8, 8, bit(7));
  grid.set(7, 8, bit(8));
  for (let i = 9; i < 15; i += 1) grid.set(14 - i, 8, bit(i));
  for (let i = 0; i < 8; i += 1) grid.set(size - 1 - i, 8, bit(i));
  for (let i = 8; i < 15; i += 1) grid.set(8, size - 15 + i, bit(i));
  grid.set(8, size - 8, true); // the dark module
}

/** The codewords' bits into the free modules, in two-column zigzags from the bottom right. */
function placeData(grid, codewords) {
  const { size } = grid;
  let i = 0;
  for (let right = size - 1; right >= 1; right -= 2) {
    if (right === 6) right = 5; // the vertical timing pattern's column is skipped
    const upward = ((right + 1) & 2) === 0;
    for (let step = 0; step < size; step += 1) {
      const y = upward ? size - 1 - step : step;
      for (let j = 0; j < 2; j += 1) {
        const x = right - j;
        if (grid.isFixed(x, y)) continue;
        const dark = i < codewords.length * 8 && ((codewords[i >>> 3] >>> (7 - (i & 7))) & 1) === 1;
        grid.set(x, y, dark, false);
        i += 1;
      }
    }
  }
}

function applyMask(grid, mask) {
  const { size } = grid;
  for (let y = 0; y < size; y += 1) {
    for (let x = 0; x < size; x += 1) {
      if (!grid.isFixed(x, y) && MASKS[mask](x, y)) grid.dark[y * size + x] ^= 1;
    }
  }
}

/** The penalty score of a finished symbol (the four rules of the standard's mask evaluation). */
export function penalty(grid) {
  const { size } = grid;
  let score = 0;
  const lines = [];
  for (let a = 0; a < size; a += 1) {
    const row = [];
    const column = [];
    for (let b = 0; b < size; b += 1) {
      row.push(grid.get(b, a));
      column.push(grid.get(a, b));
    }
    lines.push(row, column);
  }
  const finderLike = [true, false, true, true, true, false, true];
  for (const line of lines) {
    for (let i = 0, run = 1; i < size; i += 1) { // rule 1: runs of five or more
      if (i + 1 < size && line[i + 1] === line[i]) run += 1;
      else {
        if (run >= 5) score += run - 2;
        run = 1;
      }
    }
    for (let i = 0; i + 7 <= size; i += 1) { // rule 3: 1:1:3:1:1 with four light modules on a side
      if (!finderLike.every((d, k) => line[i + k] === d)) continue;
      const lightBefore = [1, 2, 3, 4].every((k) => i - k < 0 || !line[i - k]);
      const lightAfter = [0, 1, 2, 3].every((k) => i + 7 + k >= size || !line[i + 7 + k]);
      if (lightBefore) score += 40;
      if (lightAfter) score += 40;
    }
  }
  for (let y = 0; y + 1 < size; y += 1) { // rule 2: 2×2 blocks of one colour
    for (let x = 0; x + 1 < size; x += 1) {
      const c = grid.get(x, y);
      if (grid.get(x + 1, y) === c && grid.get(x, y + 1) === c && grid.get(x + 1, y + 1) === c) score += 3;
    }
  }
  const dark = grid.dark.reduce((n, d) => n + d, 0); // rule 4: balance of dark and light
  const total = size * size;
  score += 10 * (Math.ceil(Math.abs(dark * 20 - total * 10) / total) - 1);
  return score;
}

/**
 * Encodes `text` (UTF-8, byte mode) in the smallest version that holds it at `level`.
 * Returns {version, level, mask, size, dark: (x, y) → bool}; `mask` is the one with the lowest
 * penalty unless given. Throws RangeError when even version 40 is too small.
 */
export function encodeQr(text, { level = 'M', version = null, mask = null } = {}) {
  if (!(level in LEVELS)) throw new RangeError('unknown error correction level');
  const bytes = new TextEncoder().encode(text);
  let v = version;
  if (v === null) {
    for (v = 1; v <= 40; v += 1) if (4 + (v <= 9 ? 8 : 16) + bytes.length * 8 <= dataCodewords(v, level) * 8) break;
    if (v > 40) throw new RangeError('too much data for a QR code');
  }
  const codewords = interleave(dataCodewordsFor(bytes, v, level), v, level);
  const build = (m) => {
    const grid = new Grid(sizeOf(v));
    functionPatterns(grid, v);
    placeData(grid, codewords);
    applyMask(grid, m);
    placeFormat(grid, formatBits(level, m));
    return grid;
  };
  let best = null;
  let bestMask = mask;
  if (mask !== null) best = build(mask);
  else {
    let bestScore = Infinity;
    for (let m = 0; m < 8; m += 1) {
      const grid = build(m);
      const score = penalty(grid);
      if (score < bestScore) [best, bestScore, bestMask] = [grid, score, m];
    }
  }
  return { version: v, level, mask: bestMask, size: best.size, dark: (x, y) => best.get(x, y) };
}

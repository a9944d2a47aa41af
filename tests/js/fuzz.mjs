// Deterministic mutation fuzzing for the decoders (used by fuzz-*.test.mjs; not a test file itself).
//
// Reproducible: every loop draws from a mulberry32 PRNG seeded with HUSH_FUZZ_SEED (default
// below) mixed with the loop's name, so one loop can be rerun alone with the same inputs.
// HUSH_FUZZ_ITERATIONS replaces every loop's default iteration count (for long runs, e.g.
// HUSH_FUZZ_ITERATIONS=1000000). A failure names the seed, the loop, the iteration and the exact
// input (hex or JSON), so it can be pasted into a regression test.
import assert from 'node:assert/strict';
import { bytesToHex } from '../../web/themis/bytes.mjs';
import { crc32c } from '../../web/themis/crc32c.mjs';

export const SEED = process.env.HUSH_FUZZ_SEED !== undefined ? Number(process.env.HUSH_FUZZ_SEED) >>> 0 : 0x48757368;
const OVERRIDE = process.env.HUSH_FUZZ_ITERATIONS !== undefined ? Number(process.env.HUSH_FUZZ_ITERATIONS) : null;
assert.ok(OVERRIDE === null || (Number.isSafeInteger(OVERRIDE) && OVERRIDE > 0), 'HUSH_FUZZ_ITERATIONS must be a positive integer');

/** Iterations for one loop: its default, or HUSH_FUZZ_ITERATIONS. */
export const iterations = (n) => OVERRIDE ?? n;

/** HUSH_FUZZ_ONLY (a regular expression): run only the loops whose name matches (for long runs). */
const ONLY = process.env.HUSH_FUZZ_ONLY ? new RegExp(process.env.HUSH_FUZZ_ONLY) : null;

/** node:test timeout of a fuzz test: generous by default, none for a long run chosen by env. */
export const TEST_TIMEOUT = { timeout: OVERRIDE === null ? 120_000 : Infinity };

/** A hang bound per decoder call: far above any real call (they take microseconds to milliseconds). */
export const CALL_BOUND_MS = 20_000;

/** Executions and milliseconds per loop name (printed by the test files for the record). */
export const executed = new Map();

/** mulberry32: small, fast, and the same on every platform. */
export function prng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n) => Math.floor(next() * n); // 0 <= x < n
  return {
    next,
    int,
    bool: (p = 0.5) => next() < p,
    pick: (list) => list[int(list.length)],
    bytes: (n) => Uint8Array.from({ length: n }, () => int(256)),
  };
}

/** FNV-1a of a name, to give each loop its own stream from the one seed. */
function nameHash(name) {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

export const rngFor = (name) => prng((SEED ^ nameHash(name)) >>> 0);

// ---- byte mutations ----

const INTERESTING_BYTES = [0x00, 0xff, 0x7f, 0x80, 0x01, 0xfe];
const INTERESTING_U32 = [0, 1, 0x7f, 0x80, 0xff, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff, 12, 44, 48];

function writeU32(out, off, v, littleEndian) {
  for (let i = 0; i < 4 && off + i < out.length; i++) {
    const shift = littleEndian ? 8 * i : 8 * (3 - i);
    out[off + i] = (v >>> shift) & 0xff;
  }
}

/**
 * One random structural or bit-level change. `others` feeds splicing. The header region (the
 * first 64 bytes, where every length and type field of these formats lives) gets extra weight.
 */
export function mutateOnce(rng, input, others = []) {
  const len = input.length;
  const pos = () => (len === 0 ? 0 : rng.bool(0.5) ? rng.int(Math.min(len, 64)) : rng.int(len));
  switch (rng.int(11)) {
    case 0: { // bit flip
      if (!len) return rng.bytes(1 + rng.int(4));
      const out = input.slice();
      out[pos()] ^= 1 << rng.int(8);
      return out;
    }
    case 1: { // byte set to an interesting value
      if (!len) return Uint8Array.of(rng.pick(INTERESTING_BYTES));
      const out = input.slice();
      out[pos()] = rng.pick(INTERESTING_BYTES);
      return out;
    }
    case 2: { // random byte
      if (!len) return rng.bytes(1);
      const out = input.slice();
      out[pos()] = rng.int(256);
      return out;
    }
    case 3: // truncation (a prefix), sometimes near the end
      return rng.bool() ? input.slice(0, rng.int(len + 1)) : input.slice(0, Math.max(0, len - 1 - rng.int(8)));
    case 4: { // insertion of 1..16 bytes
      const at = rng.int(len + 1);
      const extra = rng.bool() ? rng.bytes(1 + rng.int(16)) : new Uint8Array(1 + rng.int(16)).fill(rng.pick(INTERESTING_BYTES));
      return concat(input.subarray(0, at), extra, input.subarray(at));
    }
    case 5: { // deletion of 1..16 bytes
      if (!len) return input.slice();
      const at = rng.int(len);
      return concat(input.subarray(0, at), input.subarray(Math.min(len, at + 1 + rng.int(16))));
    }
    case 6: { // a 32-bit length field replaced by a huge, zero or off-by-a-little value
      const out = input.slice();
      const aligned = rng.bool(0.7);
      const off = aligned ? 4 * rng.int(Math.max(1, Math.min(16, Math.ceil(len / 4)))) : pos();
      const value = rng.bool(0.7) ? rng.pick(INTERESTING_U32) : (len + rng.int(9) - 4) >>> 0;
      writeU32(out, off, value, rng.bool());
      return out;
    }
    case 7: { // splice: a prefix of this input with a suffix of another
      const other = others.length ? rng.pick(others) : input;
      return concat(input.subarray(0, rng.int(len + 1)), other.subarray(rng.int(other.length + 1)));
    }
    case 8: { // duplicate a range
      if (!len) return input.slice();
      const a = rng.int(len);
      const b = Math.min(len, a + 1 + rng.int(32));
      return concat(input.subarray(0, b), input.subarray(a, b), input.subarray(b));
    }
    case 9: { // appended bytes
      return concat(input, rng.bytes(1 + rng.int(8)));
    }
    default: { // overwrite a run with one byte value
      if (!len) return input.slice();
      const out = input.slice();
      const a = pos();
      out.fill(rng.pick(INTERESTING_BYTES), a, Math.min(len, a + 1 + rng.int(8)));
      return out;
    }
  }
}

/** 1..4 stacked mutations (mostly one, so that most inputs stay close to valid). */
export function mutateBytes(rng, input, others = []) {
  let out = mutateOnce(rng, input, others);
  const extra = rng.bool(0.6) ? 0 : 1 + rng.int(3);
  for (let i = 0; i < extra; i++) out = mutateOnce(rng, out, others);
  return out;
}

const CONTAINER_TAGS = ['TSPM', 'TSID', 'UEC2', 'REC2', 'TSSC'];

/**
 * Recomputes the CRC of every Soter container found in `bytes` whose size field fits, innermost
 * (last) first, so that a mutation reaches the parser behind the checksum instead of stopping
 * at it. Returns a new array.
 */
export function fixCrcs(bytes) {
  const out = bytes.slice();
  const text = String.fromCharCode(...out.subarray(0, Math.min(out.length, 1 << 16)));
  const starts = [];
  for (const tag of CONTAINER_TAGS) for (let i = text.indexOf(tag); i >= 0; i = text.indexOf(tag, i + 1)) starts.push(i);
  for (const at of starts.sort((a, b) => b - a)) {
    if (out.length - at < 12) continue;
    const size = ((out[at + 4] << 24) | (out[at + 5] << 16) | (out[at + 6] << 8) | out[at + 7]) >>> 0;
    if (size < 12 || size > out.length - at) continue;
    const crc = crc32c(out.subarray(at, at + 8), new Uint8Array(4), out.subarray(at + 12, at + size));
    out.set([crc & 255, (crc >>> 8) & 255, (crc >>> 16) & 255, crc >>> 24], at + 8);
  }
  return out;
}

export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) { out.set(p, off); off += p.length; }
  return out;
}

export const sameBytes = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

// ---- string and JSON mutations ----

const ODD_CHARS = ['=', '==', '-', '_', '+', '/', ' ', '\n', '\u0000', '%', '.', 'é', '\ud800', '😀', '"', '\\', '{', '}'];

/** Character-level change of a string (base64, base64url, JSON text). */
export function mutateString(rng, text) {
  const at = rng.int(text.length + 1);
  switch (rng.int(6)) {
    case 0: return text.slice(0, at) + rng.pick(ODD_CHARS) + text.slice(at);
    case 1: return text.slice(0, at) + text.slice(at + 1 + rng.int(4));
    case 2: return text.slice(0, at);
    case 3: { // swap one base64 character for another
      const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_=';
      return text.slice(0, at) + alphabet[rng.int(alphabet.length)] + text.slice(at + 1);
    }
    case 4: return text + rng.pick(ODD_CHARS);
    default: return text.slice(0, at) + text.slice(at).toUpperCase();
  }
}

const HOSTILE_KEYS = ['__proto__', 'constructor', 'toString', 'valueOf', 'hasOwnProperty', 'prototype', ''];

/** A JSON value of a random type, some of them hostile (huge, deep, prototype names). */
export function hostileValue(rng, depth = 0) {
  switch (rng.int(depth > 2 ? 11 : 14)) {
    case 0: return null;
    case 1: return rng.bool();
    case 2: return rng.pick([0, -1, 1, 1.5, -0.5, 2 ** 53, 2 ** 53 - 1, -(2 ** 53), 1e308, -1e308, 2 ** 31, 2 ** 32, 4294967295]);
    case 3: return '';
    case 4: return 'x'.repeat(rng.pick([1, 1000, 70_000, 1 << 20]));
    case 5: return rng.pick(HOSTILE_KEYS);
    case 6: return 'AAAA'.repeat(1 + rng.int(30)) + rng.pick(['', '=', '==', '===', '*']);
    case 7: return rng.int(1000);
    case 8: return String(rng.int(1000));
    case 9: return '\ud800\udfff\u0000';
    case 10: return { toString: 0, valueOf: 0 };
    case 11: return [hostileValue(rng, depth + 1)];
    case 12: return Object.fromEntries([[rng.pick(HOSTILE_KEYS), hostileValue(rng, depth + 1)]]);
    default: { // deep nesting
      let v = rng.bool() ? 1 : {};
      for (let i = 0, n = rng.pick([10, 200, 2000]); i < n; i++) v = rng.bool() ? [v] : { a: v };
      return v;
    }
  }
}

/** Every (container, key) slot of a JSON tree, for picking a place to mutate. */
function slots(value, out = [], depth = 0) {
  if (value === null || typeof value !== 'object' || depth > 6) return out;
  for (const key of Object.keys(value)) {
    out.push([value, key]);
    slots(value[key], out, depth + 1);
  }
  return out;
}

/**
 * One structural change of a JSON document (given as a parsed, cloneable value), returning a new
 * one: a field removed, retyped, replaced with a hostile value or a value from `others`, an extra
 * field, a base64 string damaged, the whole document replaced by another type.
 */
export function mutateJSON(rng, doc, others = []) {
  const root = structuredClone(doc);
  const places = slots(root);
  if (!places.length || rng.bool(0.05)) return hostileValue(rng);
  const [parent, key] = rng.pick(places);
  switch (rng.int(7)) {
    case 0:
      if (Array.isArray(parent)) parent.splice(Number(key), 1);
      else delete parent[key];
      break;
    case 1:
    case 2:
      parent[key] = hostileValue(rng);
      break;
    case 3: // a string damaged character-wise (often base64)
      parent[key] = typeof parent[key] === 'string' ? mutateString(rng, parent[key]) : hostileValue(rng);
      break;
    case 4: { // an extra field
      const extraKey = rng.bool() ? rng.pick(HOSTILE_KEYS) : `extra${rng.int(10)}`;
      const target = parent[key] !== null && typeof parent[key] === 'object' ? parent[key] : parent;
      if (Array.isArray(target)) target.push(hostileValue(rng));
      // defineProperty: '__proto__' becomes an own key, as JSON.parse makes it from a hostile peer's text
      else Object.defineProperty(target, extraKey, { value: hostileValue(rng), enumerable: true, writable: true, configurable: true });
      break;
    }
    case 5: { // a value from another corpus document at the same key, if any
      const other = others.length ? rng.pick(others) : null;
      parent[key] = other && typeof other === 'object' && key in other ? structuredClone(other[key]) : hostileValue(rng);
      break;
    }
    default: // numbers nudged across their bounds
      parent[key] = typeof parent[key] === 'number'
        ? rng.pick([parent[key] + 1, parent[key] - 1, -parent[key], parent[key] * 2 ** 40, parent[key] + 0.5])
        : hostileValue(rng);
  }
  return root;
}

/** A mutated document as it arrives from the wire: JSON text parsed again (own keys only, plain data). */
export const viaJSON = (value) => JSON.parse(JSON.stringify(value));

// ---- the loop ----

/** Rejects when `promise` does not settle within the bound: a hang is a failure, not a timeout. */
export async function bounded(promise, what) {
  let timer;
  const hang = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new HangError(`${what}: no answer within ${CALL_BOUND_MS} ms`)), CALL_BOUND_MS);
  });
  try {
    return await Promise.race([promise, hang]);
  } finally {
    clearTimeout(timer);
  }
}

export class HangError extends Error {}

export const show = (input) => (input instanceof Uint8Array ? `hex ${bytesToHex(input)}`
  : typeof input === 'string' ? `string ${JSON.stringify(input.length > 4000 ? `${input.slice(0, 4000)}…(${input.length})` : input)}`
    : `value ${(() => { try { const t = JSON.stringify(input, (k, v) => (v instanceof Uint8Array ? bytesToHex(v) : v)); return t.length > 4000 ? `${t.slice(0, 4000)}…` : t; } catch { return String(input); } })()}`);

/**
 * Runs one fuzz loop.
 * @param {object} o
 * @param {string} o.name loop name (also mixed into the seed)
 * @param {number} o.count iterations (before HUSH_FUZZ_ITERATIONS)
 * @param {(rng, i: number) => {input: any, base?: any} | null} o.generate one mutated input (null: skip)
 * @param {(input, base) => Promise<any>|any} o.run the decoder call
 * @param {(error: unknown, input, base) => boolean} o.allowed whether a thrown error is the decoder's own
 * @param {(result, input, base) => void|Promise<void>} o.accept checks a successful result (throw to fail)
 * @param {{input: any, base?: any}[]} [o.fixed] inputs run first, whatever the iteration count
 *   (e.g. every truncation of the short corpus items: see prefixes)
 */
export async function fuzzLoop({ name, count, generate, run, allowed, accept, fixed = [] }) {
  if (ONLY && !ONLY.test(name)) return { done: 0, threw: 0 };
  const rng = rngFor(name);
  const total = fixed.length + iterations(count);
  const started = performance.now();
  let done = 0;
  let threw = 0;
  for (let i = 0; i < total; i++) {
    const made = i < fixed.length ? fixed[i] : generate(rng, i);
    if (!made) continue;
    const { input, base } = made;
    const where = () => `${name}: seed ${SEED} (HUSH_FUZZ_SEED=${SEED}), iteration ${i}, input ${show(input)}` +
      (base !== undefined && base !== input ? `\n  mutated from ${show(base)}` : '');
    let result;
    let failed = false;
    try {
      result = await bounded(Promise.resolve().then(() => run(input, base)), name);
    } catch (error) {
      failed = true;
      if (error instanceof HangError || !allowed(error, input, base)) {
        assert.fail(`${where()}\n  threw ${error && error.stack ? error.stack : String(error)}`);
      }
      threw += 1;
    }
    if (!failed) {
      try { await accept(result, input, base); } catch (error) {
        assert.fail(`${where()}\n  succeeded wrongly: ${error && error.message}\n  result ${show(result)}`);
      }
    }
    done += 1;
  }
  const known = executed.get(name) ?? { done: 0, ms: 0 };
  executed.set(name, { done: known.done + done, ms: known.ms + (performance.now() - started) });
  return { done, threw };
}

/**
 * Every proper prefix (truncation at every length, empty included) of the items up to `max`
 * bytes long; `bytesOf` finds an item's bytes, `withBytes` makes the mutated item from them.
 */
export function prefixes(items, { max = 512, bytesOf = (x) => x, withBytes = (x, b) => b } = {}) {
  const out = [];
  for (const item of items) {
    const bytes = bytesOf(item);
    if (bytes.length > max) continue;
    for (let n = 0; n < bytes.length; n++) out.push({ input: withBytes(item, bytes.slice(0, n)), base: item });
  }
  return out;
}

/** Whether two decoded values are the same bytes (for "never a different plaintext"). */
export function assertSameBytes(actual, expected, what) {
  assert.ok(actual instanceof Uint8Array, `${what}: not bytes`);
  assert.ok(sameBytes(actual, expected), `${what}: ${bytesToHex(actual)} differs from ${bytesToHex(expected)}`);
}

/** Prints how many inputs each loop ran (kept in the TAP log as a diagnostic). */
export function report(label) {
  const lines = [...executed].map(([n, c]) => `${n}=${c.done} (${(c.ms / 1000).toFixed(1)} s)`).join(', ');
  console.log(`# fuzz ${label}: seed ${SEED}, ${lines}`);
}

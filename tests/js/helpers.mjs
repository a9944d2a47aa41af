// Shared test helpers: fixture loading, hex, ThemisError assertions.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ThemisError } from '../../web/themis/errors.mjs';
import { base64ToBytes, bytesToBase64, bytesToHex, hexToBytes } from '../../web/themis/bytes.mjs';
import { publicKeyFromPrivate } from '../../web/themis/keys.mjs';
import { newRoomState, admit, syncFormer } from '../../web/app/room.mjs';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const VECTOR_DIR = process.env.HUSH_THEMIS_VECTORS
  ? resolve(process.env.HUSH_THEMIS_VECTORS)
  : join(REPO_ROOT, 'Tests', 'Fixtures', 'themis-vectors');

export function loadVectors(name) {
  return JSON.parse(readFileSync(join(VECTOR_DIR, name), 'utf8'));
}

/** hex -> bytes; null/undefined stay null (an absent context). */
export const h = (hex) => (hex === null || hex === undefined ? null : hexToBytes(hex));
export const hex = bytesToHex;
export const utf8 = (s) => new TextEncoder().encode(s);

export function assertBytes(actual, expectedHex, what) {
  assert.ok(actual instanceof Uint8Array, `${what}: not bytes`);
  assert.equal(bytesToHex(actual), expectedHex, what);
}

/** Await fn() and require a ThemisError (optionally with one of the given codes). */
export async function rejectsThemis(fn, codes, what = '') {
  let result;
  try {
    result = await fn();
  } catch (e) {
    assert.ok(e instanceof ThemisError, `${what}: expected ThemisError, got ${e && e.stack}`);
    if (process.env.SHOW_CODES) console.log(`[code] ${what} -> ${e.code}: ${e.message}`);
    if (codes) {
      const list = Array.isArray(codes) ? codes : [codes];
      assert.ok(list.includes(e.code), `${what}: expected ${list.join('|')}, got ${e.code}`);
    }
    return e;
  }
  assert.fail(`${what}: expected a ThemisError, got success ${result instanceof Uint8Array ? bytesToHex(result) : JSON.stringify(result)}`);
}

/** A random source that replays the given byte arrays in order (for recorded IVs/salts). */
export function replayRandom(...chunks) {
  const queue = chunks.map((c) => Uint8Array.from(c));
  return (n) => {
    const next = queue.shift();
    assert.ok(next && next.length === n, `replayRandom: wanted ${n} bytes, have ${next && next.length}`);
    return next;
  };
}

export function randomInt(lo, hi) { // inclusive
  const buf = new Uint32Array(1);
  crypto.getRandomValues(buf);
  return lo + (buf[0] % (hi - lo + 1));
}

export function randomBytes(n) {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, i + 65536));
  return out;
}

/**
 * A shared room scenario (Tests/Fixtures/room-scenarios) at its start: its private keys by
 * name, and the reader's room state with the starting members admitted and the former ones
 * synced, as the Swift `ScenarioRun` builds it.
 */
export async function scenarioStart(scenario) {
  const keys = Object.fromEntries(Object.entries(scenario.keys).map(([name, key]) => [name, base64ToBytes(key)]));
  const { start } = scenario;
  const state = newRoomState({
    room: scenario.room, owner: bytesToBase64(publicKeyFromPrivate(keys.owner)), privateKey: keys[scenario.me],
    epoch: start.epoch, roomKey: base64ToBytes(start.keys[start.epoch]),
  });
  state.keys = { ...start.keys };
  for (const entry of start.members) assert.ok(await admit(state, entry.key, entry.signature), `starting member ${entry.key}`);
  await syncFormer(state, start.formerMembers);
  for (const entry of start.formerMembers) assert.ok(state.former[entry.key], `starting former member ${entry.key}`);
  return { keys, state };
}


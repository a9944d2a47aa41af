// Runs every room scenario (Tests/Fixtures/room-scenarios, or $HUSH_ROOM_SCENARIOS) through the
// web client's pure room rules (web/app/room.mjs). The Swift client runs the same files through
// RoomState (Tests/HushProtocolTests/RoomScenarioTests.swift); the format is in the folder's README.md.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { REPO_ROOT } from './helpers.mjs';
import { base64ToBytes, bytesToBase64, publicKeyFromPrivate } from '../../web/themis/index.mjs';
import { newRoomState, admit, syncMembers, syncFormer, depart, parseEnvelope, receive, sharesName } from '../../web/app/room.mjs';

const DIR = process.env.HUSH_ROOM_SCENARIOS
  ? resolve(process.env.HUSH_ROOM_SCENARIOS)
  : join(REPO_ROOT, 'Tests', 'Fixtures', 'room-scenarios');

test('room scenarios: every case in the folder', async (t) => {
  const files = readdirSync(DIR).filter((file) => file.endsWith('.json')).sort();
  assert.ok(files.length > 0, `no scenario files in ${DIR}`);
  let steps = 0;
  for (const file of files) {
    await t.test(file, async () => {
      steps += await run(file, JSON.parse(readFileSync(join(DIR, file), 'utf8')));
    });
  }
  console.log(`room scenarios checked: ${files.length} cases, ${steps} steps (from ${DIR})`);
});

/** Runs one case: the starting state, each step's outcome and state, the final state; returns the step count. */
async function run(file, scenario) {
  const names = new Map(); // public key (b64) → the name the case gives it
  const privateKeys = {};
  for (const [name, key] of Object.entries(scenario.keys)) {
    privateKeys[name] = base64ToBytes(key);
    names.set(bytesToBase64(publicKeyFromPrivate(privateKeys[name])), name);
  }
  const name = (key) => names.get(key) ?? key;
  const { start } = scenario;
  const state = newRoomState({
    room: scenario.room, owner: bytesToBase64(publicKeyFromPrivate(privateKeys.owner)), privateKey: privateKeys[scenario.me],
    epoch: start.epoch, roomKey: base64ToBytes(start.keys[start.epoch]),
  });
  state.keys = { ...start.keys };
  if ('replayWindow' in start) {
    assert.ok(Number.isInteger(start.replayWindow) && start.replayWindow >= 1, `${file}: bad replayWindow`);
    state.replayWindow = start.replayWindow;
  }
  for (const entry of start.members) assert.ok(await admit(state, entry.key, entry.signature), `${file}: starting member ${name(entry.key)}`);
  await syncFormer(state, start.formerMembers);
  for (const entry of start.formerMembers) assert.ok(state.former[entry.key], `${file}: starting former member ${name(entry.key)}`);

  for (const [index, step] of scenario.steps.entries()) {
    const label = `${file} step ${index + 1} (${step.note ?? ''})`;
    assert.ok('expect' in step || 'state' in step, `${label}: expects nothing`);
    const outcome = await perform(state, step, name, label);
    if ('expect' in step) assert.deepStrictEqual(comparable(outcome, step.expect), step.expect, label);
    if ('state' in step) assert.deepStrictEqual(snapshot(state, name, step.state), step.state, `${label}: state`);
  }
  assert.deepStrictEqual(snapshot(state, name, scenario.state), scenario.state, `${file}: final state`);
  return scenario.steps.length;
}

/** What one step does, as the outcome the case expects (null: a hello, which answers nothing). */
async function perform(state, step, name, label) {
  if ('envelope' in step) {
    const env = parseEnvelope(state, step.envelope);
    if (!env) return { outcome: 'rejected', reason: 'malformed' };
    return outcome(await receive(state, env), name);
  }
  if ('hello' in step) {
    // The order of web/app/rooms.mjs (and of Swift's RoomState.sync): former members first.
    await syncFormer(state, step.hello.formerMembers ?? []);
    await syncMembers(state, step.hello.members ?? []);
    return null;
  }
  if ('memberJoined' in step) {
    return { outcome: await admit(state, step.memberJoined.key, step.memberJoined.signature) ? 'admitted' : 'refused' };
  }
  if ('departure' in step) {
    const { key, departure, signature, until } = step.departure;
    return { outcome: await depart(state, key, { departure, signature, until }) ? 'verified' : 'unverified' };
  }
  throw new Error(`${label}: no envelope, hello, memberJoined or departure`);
}

function outcome(event, name) {
  switch (event.type) {
    case 'chat':
      return { outcome: 'chat', seq: event.seq, from: name(event.from), counter: event.counter, ts: event.ts, text: event.text };
    case 'name':
      return { outcome: 'name', seq: event.seq, from: name(event.from), counter: event.counter, ts: event.ts, name: event.name,
        previous: event.previous, inForce: event.inForce };
    case 'duplicate': return { outcome: 'duplicate', seq: event.seq };
    case 'rotation': return { outcome: 'rotation', seq: event.seq, epoch: event.epoch };
    case 'rejected': return { outcome: 'rejected', seq: event.seq, reason: event.code };
    default: throw new Error(`unknown event ${JSON.stringify(event)}`);
  }
}

/** A refusal expected without a seq (the envelope was not well formed) is compared without one. */
function comparable(outcome, expected) {
  if (expected.outcome !== 'rejected' || 'seq' in expected || outcome === null) return outcome;
  const rest = { ...outcome };
  delete rest.seq;
  return rest;
}

/** The state as the case writes it; `names` only when the expected state has it (cases before names do not). */
function snapshot(state, name, expected) {
  const names = 'names' in expected
    ? { names: Object.fromEntries(Object.entries(state.names).map(([key, entry]) => [name(key), { name: entry.name, shared: sharesName(state, key) }])) }
    : {};
  return {
    ...names,
    epoch: state.epoch,
    lastSeq: state.lastSeq,
    counter: state.counter,
    keys: { ...state.keys },
    members: Object.keys(state.members).map(name).sort(),
    former: Object.fromEntries(Object.entries(state.former)
      .map(([key, former]) => [name(key), { until: former.untilSeq, departure: former.departure }])),
  };
}

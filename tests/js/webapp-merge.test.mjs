// One room's state as two tabs write it (web/app/room.mjs): the merge that keeps every tab's
// keys and counter, the rotation key saved before `rotate` is sent, and names kept across a
// reload after retention deleted the messages that set them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bytesToBase64, generateKeyPair } from '../../web/themis/index.mjs';
import {
  newRoomState, durable, restoreRoomState, mergeDurable, makeRotation, receive, composeName, recordSent, nameOf, sharesName, owesName,
} from '../../web/app/room.mjs';

async function roomPair() {
  const pair = await generateKeyPair();
  const state = newRoomState({ room: 'DDDDDDDDDDDDDDDDDDDDDD', owner: bytesToBase64(pair.publicKey), privateKey: pair.privateKey, epoch: 0, roomKey: new Uint8Array(32).fill(1) });
  return [state, restoreRoomState(structuredClone(durable(state)))];
}

test('merge: epoch keys united, counter and epoch the larger, departures keep the earlier bound', async () => {
  const [tabA, tabB] = await roomPair();
  tabA.keys[1] = 'a-key-1';
  tabA.epoch = 1;
  tabA.counter = 7; // the stored copy is ahead of this tab's
  tabB.counter = 3;
  tabA.members = { m1: 'sig1', m2: 'sig2' };
  tabB.members = { m3: 'sig3' };
  tabB.former = { m2: { signature: 'sig2', untilSeq: 9, departure: 'left' } };
  tabA.former = { m2: { signature: 'sig2', untilSeq: 12, departure: null } };
  const merged = mergeDurable(durable(tabA), durable(tabB));
  assert.deepEqual(Object.keys(merged.keys).sort(), ['0', '1']);
  assert.equal(merged.epoch, 1);
  assert.equal(merged.counter, 7);
  assert.deepEqual(merged.members, { m1: 'sig1', m3: 'sig3' }, 'a departed key is no member in either copy');
  assert.deepEqual(merged.former.m2, { signature: 'sig2', untilSeq: 9, departure: 'left' });
  merged.keys[2] = 'x';
  assert.equal(tabA.keys[2], undefined, 'the merge shares no object with its inputs');
  const other = await roomPair();
  assert.deepEqual(mergeDurable(durable(tabA), durable(other[0])), durable(tabA), 'another key’s state is never merged in');
});

test('merge: a pending rotation is kept until its epoch is reached, and only from the stored copy', async () => {
  const [stored, mine] = await roomPair();
  stored.pendingRotation = { epoch: 1, key: 'pending' };
  assert.deepEqual(mergeDurable(durable(stored), durable(mine)).pendingRotation, { epoch: 1, key: 'pending' });
  mine.pendingRotation = { epoch: 1, key: 'cleared in the store' };
  assert.equal(mergeDurable({ ...durable(stored), pendingRotation: null }, durable(mine)).pendingRotation, null,
    'set and cleared by explicit changes only');
  mine.keys[1] = 'installed';
  mine.epoch = 1;
  assert.equal(mergeDurable(durable(stored), durable(mine)).pendingRotation, null, 'installed in the other tab');
});

test('write-ahead rotation: an owner that lost the reply of its wrapped rotation takes the saved key', async () => {
  const pair = await generateKeyPair();
  const member = await generateKeyPair();
  const owner = newRoomState({ room: 'EEEEEEEEEEEEEEEEEEEEEE', owner: bytesToBase64(pair.publicKey), privateKey: pair.privateKey, epoch: 0, roomKey: new Uint8Array(32) });
  const rotation = await makeRotation(owner, [bytesToBase64(member.publicKey)]);
  const env = { seq: 4, kind: 'rotation', from: owner.me, epoch: 1, at: 1 }; // the owner's copy: no wrap for itself
  const lost = restoreRoomState(structuredClone(durable(owner)));
  assert.equal((await receive(lost, env)).reason, 'missing epoch key', 'without the saved key it is gone');
  const saved = restoreRoomState({ ...structuredClone(durable(owner)), pendingRotation: { epoch: 1, key: bytesToBase64(rotation.key) } });
  assert.deepEqual([(await receive(saved, env)).type, saved.epoch, saved.keys[1]], ['rotation', 1, bytesToBase64(rotation.key)]);
  assert.equal(saved.pendingRotation, null);
  const forged = restoreRoomState({ ...structuredClone(durable(owner)), pendingRotation: { epoch: 1, key: bytesToBase64(rotation.key) } });
  assert.equal((await receive(forged, { ...env, from: bytesToBase64(member.publicKey) })).type, 'rejected', 'only my own rotation');
});

test('names survive a reload whose history no longer holds them (retention), the latest by seq', async () => {
  const [state] = await roomPair();
  const [bob, carol] = ['B', 'C'].map((c) => c.repeat(60)); // key-shaped, as kept names' keys must be
  await composeName(state, 'Alice', 1);
  recordSent(state, state.counter, 3, 'Alice');
  state.names[bob] = { name: 'Bob', seq: 5 };
  const saved = structuredClone(durable(state));
  assert.deepEqual(saved.keptNames, { [state.me]: { name: 'Alice', seq: 3 }, [bob]: { name: 'Bob', seq: 5 } });

  // After a reload, history starts after both name messages: the kept names are shown.
  const reloaded = restoreRoomState(structuredClone(saved));
  assert.equal(nameOf(reloaded, state.me), 'Alice');
  assert.equal(nameOf(reloaded, bob), 'Bob');
  assert.equal(nameOf(reloaded, carol), null);
  // A name read again from history wins only when it is newer.
  reloaded.names[bob] = { name: 'Robert', seq: 9 };
  assert.equal(nameOf(reloaded, bob), 'Robert');
  reloaded.names[carol] = { name: 'Alice', seq: 11 };
  assert.ok(sharesName(reloaded, carol) && sharesName(reloaded, state.me), 'a kept name counts for the same-name mark');
  // Two tabs' kept names merge to the latest of each key.
  const merged = mergeDurable(saved, durable(reloaded));
  assert.deepEqual(merged.keptNames[bob], { name: 'Robert', seq: 9 });
  assert.deepEqual(merged.keptNames[state.me], { name: 'Alice', seq: 3 });

  // A damaged store entry is dropped, never shown.
  const [x, y, z, w] = ['X', 'Y', 'Z', 'W'].map((c) => c.repeat(60));
  const damaged = { ...saved, keptNames: JSON.parse(JSON.stringify({
    [x]: { name: ' untrimmed', seq: 4 }, [y]: { name: 'Y', seq: 0 }, [z]: 'Zed', [w]: { name: 'W', seq: 2 }, short: { name: 'S', seq: 2 },
  }).replace('"short"', '"__proto__"')) };
  assert.equal(Object.keys(damaged.keptNames).length, 5, 'the damaged store holds an own "__proto__" entry');
  const restored = restoreRoomState(damaged).keptNames;
  assert.deepEqual(restored, { [w]: { name: 'W', seq: 2 } });
  assert.equal(Object.getPrototypeOf(restored), Object.prototype, 'a key named __proto__ changes nothing');
  assert.deepEqual(restoreRoomState({ ...saved, keptNames: [1] }).keptNames, {});
});

test('a name sealed under an older epoch than the current one is owed to a joiner, once', async () => {
  const [state] = await roomPair();
  assert.equal(owesName(state), false, 'no name, nothing owed');
  const sealed = await composeName(state, 'Alice', 1);
  recordSent(state, sealed.counter, 1, 'Alice', sealed.epoch);
  assert.equal(owesName(state), false, 'a joiner at this epoch reads it');
  state.keys[1] = state.keys[0];
  state.epoch = 1; // a rotation
  assert.equal(owesName(state), true, 'a joiner at epoch 1 cannot read a name sealed under epoch 0');
  const again = await composeName(state, 'Alice', 2);
  recordSent(state, again.counter, 3, 'Alice', again.epoch);
  assert.equal(owesName(state), false, 'sent again under the current epoch');
  // A name kept from a store of before (no epoch) is sent again, to be sure.
  const reloaded = restoreRoomState({ ...structuredClone(durable(state)), keptNames: { [state.me]: { name: 'Alice', seq: 3 } } });
  assert.equal(owesName(reloaded), true);
});

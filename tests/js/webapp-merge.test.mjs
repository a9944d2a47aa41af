// One room's state as two tabs write it (web/app/room.mjs): the merge that keeps every tab's
// keys and counter, and the rotation key saved before `rotate` is sent.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bytesToBase64, generateKeyPair } from '../../web/themis/index.mjs';
import { newRoomState, durable, restoreRoomState, mergeDurable, makeRotation, receive } from '../../web/app/room.mjs';

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

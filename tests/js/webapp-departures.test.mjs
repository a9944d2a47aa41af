// Departures in the web client's pure room logic (web/app/room.mjs, docs/PROTOCOL.md §4.1,
// §6.5): `formerMembers` from hello, signed leaves and removals, and the `until` bound.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bytesToBase64, generateKeyPair } from '../../web/themis/index.mjs';
import {
  newRoomState, durable, restoreRoomState, admit, compose, receive, syncFormer, syncMembers, depart,
  signMembership, signRemoval, signLeave, verifyDeparture,
} from '../../web/app/room.mjs';

const ROOM = 'BBBBBBBBBBBBBBBBBBBBBB';

/** Owner, Bob (a member) and Carol (who joins later) sharing the epoch-0 key. */
async function people() {
  const roomKey = crypto.getRandomValues(new Uint8Array(32));
  const ownerPair = await generateKeyPair();
  const owner = bytesToBase64(ownerPair.publicKey);
  const make = async (pair) => newRoomState({ room: ROOM, owner, privateKey: (pair ?? await generateKeyPair()).privateKey, epoch: 0, roomKey });
  const state = { owner: await make(ownerPair), bob: await make(), carol: await make(), stranger: await make() };
  state.membership = bytesToBase64(await signMembership(state.owner, state.bob.me));
  return state;
}

async function message(from, seq, text) {
  const { payload } = await compose(from, text, 1);
  return { seq, kind: 'message', from: from.me, epoch: 0, at: 1, payload };
}

test('a later joiner verifies a left member’s earlier messages, not its later ones', async () => {
  const { owner, bob, carol, membership } = await people();
  const leave = bytesToBase64(await signLeave(bob));
  await syncFormer(carol, [{ key: bob.me, signature: membership, until: 4, departure: 'left', departureSignature: leave }]);
  assert.deepEqual(carol.former[bob.me], { signature: membership, untilSeq: 4, departure: 'left' });
  assert.equal(carol.members[bob.me], undefined);
  const early = await receive(carol, await message(bob, 4, 'bye soon'));
  assert.deepEqual([early.type, early.text], ['chat', 'bye soon']);
  const late = await receive(carol, await message(bob, 5, 'after leaving'));
  assert.deepEqual([late.type, late.reason], ['rejected', 'sender is not a member']);
  // The old membership signature cannot bring the key back, through hello or a push.
  assert.equal(await admit(carol, bob.me, membership), false);
  await syncMembers(carol, [{ key: bob.me, signature: membership }]);
  assert.equal((await receive(carol, await message(bob, 6, 'again'))).type, 'rejected');
  // And it survives a reload of the key store.
  const reloaded = restoreRoomState(JSON.parse(JSON.stringify(durable(carol))));
  assert.equal((await receive(reloaded, await message(bob, 7, 'later still'))).type, 'rejected');
  assert.equal((await receive(reloaded, await message(bob, 2, 'early again'))).type, 'chat');
  assert.ok(owner);
});

test('a removal verifies against the owner; forged or malformed entries admit nothing', async () => {
  const { owner, bob, carol, stranger, membership } = await people();
  const removal = bytesToBase64(await signRemoval(owner, bob.me));
  assert.ok(await verifyDeparture(carol, bob.me, 'removed', removal));
  assert.equal(await verifyDeparture(carol, bob.me, 'left', removal), false, 'a removal is not a leave');
  assert.equal(await verifyDeparture(carol, bob.me, 'left', bytesToBase64(await signLeave(stranger))), false);
  const forged = bytesToBase64(await signMembership(stranger, bob.me));
  const good = { key: bob.me, signature: membership, until: 3, departure: 'removed', departureSignature: removal };
  await syncFormer(carol, [
    null, 7, { ...good, signature: forged }, { ...good, until: -1 }, { ...good, until: 1.5 }, { ...good, departure: 'gone' },
    { ...good, key: carol.me }, { ...good, key: owner.me }, { ...good, key: 42 },
  ]);
  assert.deepEqual(carol.former, {});
  assert.equal((await receive(carol, await message(bob, 2, 'x'))).type, 'rejected');
  await syncFormer(carol, [good]);
  assert.equal(carol.former[bob.me].departure, 'removed');
  assert.equal((await receive(carol, await message(bob, 3, 'last words'))).type, 'chat');
  assert.equal((await receive(carol, await message(bob, 4, 'too late'))).type, 'rejected');
  // A later claim cannot widen the window.
  await syncFormer(carol, [{ ...good, until: 99 }]);
  assert.equal(carol.former[bob.me].untilSeq, 3);
});

test('a pushed departure: verified, or kept as unverified; either way later messages are refused', async () => {
  const { owner, bob, carol, membership } = await people();
  assert.ok(await admit(carol, bob.me, membership));
  const forged = bytesToBase64(await signLeave(owner)); // not Bob's own signature
  assert.equal(await depart(carol, bob.me, { departure: 'left', signature: forged, until: 2 }), false);
  assert.deepEqual(carol.former[bob.me], { signature: membership, untilSeq: 2, departure: null });
  assert.equal((await receive(carol, await message(bob, 3, 'x'))).type, 'rejected');

  const dave = newRoomState({ room: ROOM, owner: owner.owner, privateKey: (await generateKeyPair()).privateKey, epoch: 0, roomKey: new Uint8Array(32) });
  assert.ok(await admit(dave, bob.me, membership));
  assert.ok(await depart(dave, bob.me, { departure: 'left', signature: bytesToBase64(await signLeave(bob)), until: 5 }));
  assert.equal(dave.former[bob.me].departure, 'left');
  assert.equal(dave.former[bob.me].untilSeq, 5);
});

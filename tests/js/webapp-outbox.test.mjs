// The web client's outbox rules (web/app/outbox.mjs): order, what counts as sent, what a
// failure means, when a message must be sealed again.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bytesToBase64, generateKeyPair } from '../../web/themis/index.mjs';
import { newRoomState, compose, recordSent, receive } from '../../web/app/room.mjs';
import {
  newEntry, checkOutbox, committedSeq, unsent, nextToSend, needsSeal, failureAction, failureReason, afterStale, MAX_OUTBOX,
} from '../../web/app/outbox.mjs';

async function room() {
  const pair = await generateKeyPair();
  return newRoomState({ room: 'FFFFFFFFFFFFFFFFFFFFFF', owner: bytesToBase64(pair.publicKey), privateKey: pair.privateKey, epoch: 0, roomKey: new Uint8Array(32) });
}

async function sealed(state, entry) {
  const made = await compose(state, entry.text, 5);
  return { ...entry, sealed: { epoch: made.epoch, counter: made.counter, ts: 5, payload: made.payload } };
}

test('entries: one random 16-byte id each, kept through validation; malformed ones are dropped', () => {
  const a = newEntry('first', 1);
  const b = newEntry('second', 2);
  assert.notEqual(a.id, b.id);
  assert.equal(Buffer.from(a.id, 'base64').length, 16);
  const good = [a, b];
  assert.deepEqual(checkOutbox(good), good);
  for (const bad of [null, 7, { ...a, id: 'short' }, { ...a, text: '' }, { ...a, text: 5 }, { ...a, at: -1 },
    { ...a, sealed: { epoch: 0, counter: 0, ts: 1, payload: 'x' } }, { ...a, sealed: { epoch: 0, counter: 1, ts: 1 } },
    { ...a, failed: 3 }]) {
    assert.deepEqual(checkOutbox([bad, b]), [b]);
  }
  assert.deepEqual(checkOutbox('not a list'), []);
  assert.equal(checkOutbox(Array.from({ length: MAX_OUTBOX + 5 }, (_, i) => newEntry(`m${i}`, i))).length, MAX_OUTBOX);
});

test('order: the oldest unsent entry goes first; committed and failed ones are skipped', async () => {
  const state = await room();
  const first = await sealed(state, newEntry('first', 1));
  const second = newEntry('second', 2);
  const third = newEntry('third', 3);
  assert.equal(nextToSend([first, second, third], state), first);
  recordSent(state, first.sealed.counter, 10);
  assert.equal(committedSeq(first, state), 10);
  assert.equal(nextToSend([first, second, third], state), second, 'committed: history or the reply showed it');
  assert.equal(nextToSend([first, { ...second, failed: 'too large' }, third], state), third, 'refused for good');
  assert.deepEqual(unsent([first, second, third], state).map((e) => e.text), ['second', 'third']);
  assert.equal(nextToSend([first], state), undefined);
});

test('an entry committed before a crash is recognised in history, not sent again', async () => {
  const state = await room();
  const entry = await sealed(state, newEntry('lost reply', 1));
  const reader = newRoomState({ room: state.room, owner: state.owner, privateKey: Buffer.from(state.privateKey, 'base64'), epoch: 0, roomKey: new Uint8Array(32) });
  reader.counter = 0; // a reload: nothing accepted yet
  const event = await receive(reader, { seq: 3, kind: 'message', from: state.me, epoch: 0, at: 1, payload: entry.sealed.payload });
  assert.equal(event.own, true);
  assert.equal(committedSeq(entry, reader), 3);
  assert.equal(nextToSend([entry], reader), undefined);
});

test('sealing: once, and again only when the epoch moved', async () => {
  const state = await room();
  const entry = newEntry('x', 1);
  assert.equal(needsSeal(entry, state), true);
  const done = await sealed(state, entry);
  assert.equal(needsSeal(done, state), false, 'a retry resends the very same payload');
  state.keys[1] = state.keys[0];
  state.epoch = 1;
  assert.equal(needsSeal(done, state), true);
});

test('failures: transient ones retry, epochs reseal or hold, refusals fail one entry, removal ends', () => {
  assert.equal(failureAction(undefined), 'retry');
  assert.equal(failureAction('rate_limited'), 'retry');
  assert.equal(failureAction('internal'), 'retry');
  assert.equal(failureAction('stale_epoch'), 'reseal');
  assert.equal(failureAction('rotation_pending'), 'hold');
  for (const code of ['removed', 'not_member', 'not_found']) assert.equal(failureAction(code), 'ended');
  for (const code of ['too_large', 'bad_request', 'something new']) assert.equal(failureAction(code), 'failed');
});

test('a full room or server fails the entry (no retry loop) and says so in our words, not the server\'s', () => {
  for (const code of ['room_full', 'server_full']) assert.equal(failureAction(code), 'failed');
  assert.match(failureReason('room_full', 'click here'), /room is full/);
  assert.match(failureReason('server_full', 'click here'), /out of storage/);
  assert.equal(failureReason('too_large', 'x'.repeat(500)).length, 200);
  assert.equal(failureReason('bad_request', undefined), '');
});

test('after stale_epoch: reseal when the key is here, catch up once, else hold', async () => {
  const state = await room();
  const entry = await sealed(state, newEntry('x', 1));
  assert.equal(afterStale(entry, state, 1, false), 'catch-up', 'the server is ahead: read the rotation');
  assert.equal(afterStale(entry, state, 1, true), 'hold', 'still missing after history: wait for it');
  assert.equal(afterStale(entry, state, undefined, false), 'catch-up');
  assert.equal(afterStale(entry, state, 0, false), 'hold', 'sealed under the epoch the server names: nothing to fix');
  state.keys[1] = state.keys[0];
  state.epoch = 1;
  assert.equal(afterStale(entry, state, 1, false), 'reseal');
  assert.equal(afterStale(entry, state, undefined, true), 'reseal');
  assert.equal(afterStale(entry, state, 2, true), 'hold');
  assert.equal(afterStale(entry, state, 'x', true), 'reseal', 'a malformed epoch is ignored');
});

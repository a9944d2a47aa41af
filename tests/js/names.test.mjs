// Display names (docs/PROTOCOL.md §6.7) in the web client: the one name rule (web/app/room.mjs
// canonicalName) against the shared table Tests/Fixtures/names.json (Swift runs it through
// RoomState.canonicalName), then names from compose to receive: latest wins, same names marked,
// my own name recorded when sent, names not kept in the durable state, name entries in the outbox.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from './helpers.mjs';
import { bytesToBase64, generateKeyPair } from '../../web/themis/index.mjs';
import {
  newRoomState, canonicalName, isCanonicalName, composeName, compose, receive, recordSent, nameOf, sharesName, durable,
  restoreRoomState, admit, signMembership, MAX_NAME_SCALARS,
} from '../../web/app/room.mjs';
import { newEntry, checkOutbox, isNameEntry } from '../../web/app/outbox.mjs';

const ROOM = 'BBBBBBBBBBBBBBBBBBBBBB';

test('the name rule: every case of Tests/Fixtures/names.json', () => {
  const { cases } = JSON.parse(readFileSync(join(REPO_ROOT, 'Tests', 'Fixtures', 'names.json'), 'utf8'));
  assert.ok(cases.length >= 20);
  for (const { input, name, about } of cases) {
    assert.equal(canonicalName(input), name, about);
    if (name !== null) assert.ok(isCanonicalName(name), `${about}: its result is canonical`);
    if (name !== null && name !== input) assert.ok(!isCanonicalName(input), `${about}: the input as read is refused`);
  }
  console.log(`name rule cases checked: ${cases.length}`);
});

test('the name rule: what only JavaScript strings can hold, and non-strings', () => {
  assert.equal(canonicalName('Al\ud800ice'), null, 'a lone surrogate');
  assert.equal(canonicalName('\udc00'), null, 'a lone low surrogate');
  assert.equal(canonicalName(undefined), null);
  assert.equal(canonicalName(42), null);
  assert.equal(isCanonicalName({ toString: () => 'Alice' }), false);
  assert.equal(MAX_NAME_SCALARS, 64);
});

async function room() {
  const owner = await generateKeyPair();
  const member = await generateKeyPair();
  const other = await generateKeyPair();
  const roomKey = crypto.getRandomValues(new Uint8Array(32));
  const make = (pair) => newRoomState({ room: ROOM, owner: bytesToBase64(owner.publicKey), privateKey: pair.privateKey, epoch: 0, roomKey });
  const states = { owner: make(owner), member: make(member), other: make(other) };
  for (const state of Object.values(states)) {
    for (const pair of [member, other]) {
      const key = bytesToBase64(pair.publicKey);
      assert.ok(await admit(state, key, bytesToBase64(await signMembership(states.owner, key))));
    }
  }
  return states;
}

const envelope = (state, seq, made) => ({ seq, kind: 'message', from: state.me, epoch: made.epoch, at: 1, payload: made.payload });

test('names: set, changed, the latest by seq in force, same names marked, my own recorded when sent', async () => {
  const { owner, member, other } = await room();
  const setByOwner = await composeName(owner, 'Alice', 10);
  assert.equal(owner.counter, 1, 'a name consumes a counter like a message');
  let event = await receive(member, envelope(owner, 1, setByOwner));
  assert.deepEqual({ type: event.type, name: event.name, previous: event.previous, inForce: event.inForce, own: event.own },
    { type: 'name', name: 'Alice', previous: null, inForce: true, own: false });
  assert.equal(nameOf(member, owner.me), 'Alice');

  const chat = await compose(owner, 'hello', 11);
  assert.equal((await receive(member, envelope(owner, 2, chat))).type, 'chat', 'chat and names share the counters');

  event = await receive(member, envelope(other, 3, await composeName(other, 'Alice', 12)));
  assert.equal(event.type, 'name');
  assert.ok(sharesName(member, owner.me) && sharesName(member, other.me), 'two keys called Alice are both marked');

  const later = await composeName(other, 'Olga', 13);
  const earlier = await composeName(other, 'Oscar', 14);
  event = await receive(member, envelope(other, 5, later));
  assert.equal(event.previous, 'Alice');
  event = await receive(member, envelope(other, 4, earlier));
  assert.deepEqual([event.type, event.inForce, event.previous], ['name', false, 'Olga'], 'an earlier seq read late is not in force');
  assert.equal(nameOf(member, other.me), 'Olga');
  assert.ok(!sharesName(member, owner.me));

  assert.equal((await receive(member, envelope(other, 5, later))).type, 'duplicate');
  const replay = await receive(member, envelope(other, 6, later));
  assert.deepEqual([replay.type, replay.code], ['rejected', 'replay']);

  // My own name, sent from this tab: recorded at the seq the server gave it.
  const mine = await composeName(member, 'Mia', 15);
  recordSent(member, mine.counter, 7, 'Mia');
  assert.equal(nameOf(member, member.me), 'Mia');
  assert.equal((await receive(member, envelope(member, 7, mine))).type, 'duplicate', 'read back: a duplicate');

  // Names are rebuilt from history each session, never stored.
  assert.ok(!('names' in durable(member)));
  assert.deepEqual(restoreRoomState(durable(member)).names, {});
});

test('names: a name outside the rule is not sealed, and a name entry of the outbox must be canonical', async () => {
  const { owner } = await room();
  await assert.rejects(composeName(owner, ' Alice', 1), { reason: 'malformed' });
  await assert.rejects(composeName(owner, 'x'.repeat(65), 1), { reason: 'malformed' });
  assert.equal(owner.counter, 0, 'a refused name consumes no counter');

  const entry = newEntry('Alice', 1, 'name');
  assert.ok(isNameEntry(entry));
  const chat = newEntry('hello', 1);
  assert.ok(!isNameEntry(chat));
  const { kind, ...stored } = chat; // stored before names: no kind, a chat line
  assert.equal(kind, 'chat');
  const bad = { ...newEntry('Alice', 1, 'name'), text: 'Bad\u0007' };
  const other = { ...newEntry('x', 1), kind: 'reaction' };
  assert.deepEqual(checkOutbox([entry, stored, bad, other]).map((e) => e.id), [entry.id, stored.id]);
});

// The web client's pure room logic (web/app/room.mjs, joins.mjs, formats.mjs): a whole
// room lifecycle in memory — invite, join, chat, rotations plain and wrapped, removal — and
// every reason a message is refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join as joinPath } from 'node:path';
import { REPO_ROOT, scenarioStart } from './helpers.mjs';
import {
  bytesToBase64, generateKeyPair, base64UrlToBytes, bytesToBase64Url, publicKeyFromPrivate,
} from '../../web/themis/index.mjs';
import {
  newRoomState, durable, restoreRoomState, admit, forget, compose, recordSent, makeRotation, install, receive,
  parseEnvelope, syncMembers, syncFormer, depart, signRemoval, verifyRemoval,
} from '../../web/app/room.mjs';
import { makeInvite, respondToJoin, confirmJoin, startJoin, acceptGrant } from '../../web/app/joins.mjs';
import { parseInviteFragment } from '../../web/app/formats.mjs';

const ROOM = 'AAAAAAAAAAAAAAAAAAAAAA';
const FP = '1a2b 3c4d 5e6f 7a8b 9c0d';
let seq = 0;

async function ownerRoom() {
  const pair = await generateKeyPair();
  const roomKey = crypto.getRandomValues(new Uint8Array(32));
  return newRoomState({ room: ROOM, owner: bytesToBase64(pair.publicKey), privateKey: pair.privateKey, epoch: 0, roomKey });
}

/** Runs the whole join of a new member; returns the member's state. */
async function join(owner) {
  const invite = await makeInvite(owner, { baseUrl: 'http://127.0.0.1:1/', serverFingerprint: FP });
  const parsed = parseInviteFragment(invite.link.split('#')[1]);
  assert.equal(parsed.room, ROOM);
  const { join: pending, joiningKeyBlob } = await startJoin(parsed);
  assert.equal(pending.inviteId, invite.inviteId);
  const { sealed, remember } = await respondToJoin(owner, invite, { joiner: pending.publicKey, joiningKey: joiningKeyBlob });
  const { state, confirmation } = await acceptGrant(pending, sealed);
  const signature = await confirmJoin(owner, { ...invite, ...remember }, { joiner: pending.publicKey, sealed: confirmation });
  assert.ok(signature, 'owner accepts the confirmation');
  assert.ok(await admit(owner, pending.publicKey, signature));
  assert.ok(await admit(state, pending.publicKey, signature));
  return state;
}

/** Composes on `from` and delivers the envelope to each of `to`; returns their events. */
async function say(from, text, ...to) {
  const { payload, counter } = await compose(from, text, Date.now());
  const env = { seq: ++seq, kind: 'message', from: from.me, epoch: from.epoch, at: Date.now(), payload };
  recordSent(from, counter, env.seq);
  return { env, events: await Promise.all(to.map((s) => receive(s, env))) };
}

async function rotate(owner, recipients, ...to) {
  const rotation = await makeRotation(owner, recipients);
  install(owner, rotation);
  const events = [];
  for (const s of to) {
    const wrap = rotation.wraps?.find((w) => w.key === s.me)?.wrap;
    events.push(await receive(s, { seq: ++seq, kind: 'rotation', from: owner.me, epoch: rotation.epoch, at: 1, payload: rotation.payload, wrap }));
  }
  return events;
}

test('invite, join, chat both ways, duplicates and replays', async () => {
  const owner = await ownerRoom();
  const member = await join(owner);
  const a = await say(owner, 'hello', member);
  assert.equal(a.events[0].type, 'chat');
  assert.equal(a.events[0].text, 'hello');
  assert.equal(a.events[0].own, false);
  const b = await say(member, 'hi back', owner);
  assert.deepEqual([b.events[0].type, b.events[0].text], ['chat', 'hi back']);
  assert.equal((await receive(owner, b.env)).type, 'duplicate', 'same message at the same seq');
  const replay = await receive(owner, { ...b.env, seq: ++seq });
  assert.deepEqual([replay.type, replay.reason], ['rejected', 'replayed message']);
});

test('rotation every N: plain rotation opens with the old key; old messages stay readable', async () => {
  const owner = await ownerRoom();
  const member = await join(owner);
  const before = await say(owner, 'epoch 0', member);
  const [rot] = await rotate(owner, null, member);
  assert.deepEqual([rot.type, rot.epoch, member.epoch], ['rotation', 1, 1]);
  const after = await say(member, 'epoch 1', owner);
  assert.equal(after.events[0].text, 'epoch 1');
  const fresh = restoreRoomState(JSON.parse(JSON.stringify(durable(member))));
  assert.equal((await receive(fresh, before.env)).text, 'epoch 0', 'history re-read after a reload');
});

test('removal: wrapped rotation reaches the rest, the removed key misses the new epoch', async () => {
  const owner = await ownerRoom();
  const keep = await join(owner);
  const gone = await join(owner);
  await syncMembers(keep, Object.entries(owner.members).map(([key, signature]) => ({ key, signature })));
  const signature = bytesToBase64(await signRemoval(owner, gone.me));
  assert.ok(await verifyRemoval(keep, gone.me, signature));
  assert.equal(await verifyRemoval(keep, keep.me, signature), false);
  const early = await say(gone, 'before removal', keep);
  forget(owner, gone.me);
  forget(keep, gone.me);
  const [rotKeep, rotGone] = await rotate(owner, Object.keys(owner.members), keep, gone);
  assert.equal(rotKeep.type, 'rotation');
  assert.deepEqual([rotGone.type, rotGone.reason], ['rejected', 'missing epoch key']);
  const secret = await say(owner, 'after removal', keep, gone);
  assert.equal(secret.events[0].text, 'after removal');
  assert.deepEqual([secret.events[1].type, secret.events[1].reason], ['rejected', 'missing epoch key']);
  assert.equal((await receive(keep, early.env)).type, 'duplicate', 'a former member’s earlier message stays valid');
  const late = await say(gone, 'after removal, from the removed key', keep);
  assert.equal(late.events[0].reason, 'sender is not a member');
});

test('refusals: non-member, bad signature, forged membership, tampered payload, malformed envelopes', async () => {
  const owner = await ownerRoom();
  const member = await join(owner);
  const stranger = newRoomState({ ...(await ownerRoom()), privateKey: (await generateKeyPair()).privateKey, roomKey: new Uint8Array(32) });
  stranger.keys = { ...owner.keys };
  stranger.owner = owner.owner;
  const fake = await say(stranger, 'let me in', member);
  assert.equal(fake.events[0].reason, 'sender is not a member');
  assert.equal(await admit(member, stranger.me, member.members[member.me]), false, 'a signature for another key');
  const real = await say(owner, 'signed by owner', member);
  const forged = await receive(member, { ...real.env, seq: ++seq, from: member.me });
  assert.equal(forged.reason, 'bad signature');
  const bytes = Buffer.from(real.env.payload, 'base64');
  bytes[bytes.length - 1] ^= 1;
  const tampered = await receive(member, { ...real.env, seq: ++seq, payload: bytes.toString('base64') });
  assert.equal(tampered.reason, 'cannot be decrypted');
  const future = await receive(member, { ...real.env, seq: ++seq, epoch: 9 });
  assert.equal(future.reason, 'missing epoch key');
  const garbage = await receive(member, { ...real.env, seq: ++seq, payload: '!!' });
  assert.equal(garbage.reason, 'malformed content');
  for (const bad of [null, 5, { ...real.env, room: 'x' }, { ...real.env, seq: 0 }, { ...real.env, seq: 1.5 },
    { ...real.env, kind: 'other' }, { ...real.env, epoch: -1 }, { ...real.env, payload: 7 }]) {
    assert.equal(parseEnvelope(member, bad), null);
  }
  assert.ok(parseEnvelope(member, { ...real.env, room: ROOM }));
});

test('rotation forged by a member is refused', async () => {
  const owner = await ownerRoom();
  const member = await join(owner);
  const other = await join(owner);
  const forged = await makeRotation({ ...member, owner: member.me }, null);
  const event = await receive(other, { seq: ++seq, kind: 'rotation', from: member.me, epoch: 1, at: 1, payload: forged.payload });
  assert.equal(event.type, 'rejected');
  const pretend = await receive(other, { seq: ++seq, kind: 'rotation', from: owner.me, epoch: 1, at: 1, payload: forged.payload });
  assert.equal(pretend.reason, 'bad signature');
  assert.equal(other.epoch, 0);
});

test('a join confirmation from an old epoch is not accepted', async () => {
  const owner = await ownerRoom();
  const invite = await makeInvite(owner, { baseUrl: 'http://h', serverFingerprint: FP });
  const { join: pending, joiningKeyBlob } = await startJoin(parseInviteFragment(invite.link.split('#')[1]));
  const { sealed, remember } = await respondToJoin(owner, invite, { joiner: pending.publicKey, joiningKey: joiningKeyBlob });
  const { confirmation } = await acceptGrant(pending, sealed);
  await rotate(owner, null);
  assert.equal(await confirmJoin(owner, { ...invite, ...remember }, { joiner: pending.publicKey, sealed: confirmation }), null);
  const again = await respondToJoin(owner, { ...invite, ...remember }, { joiner: pending.publicKey });
  const second = await acceptGrant(pending, again.sealed);
  assert.equal(second.state.epoch, 1);
  assert.ok(await confirmJoin(owner, { ...invite, ...again.remember }, { joiner: pending.publicKey, sealed: second.confirmation }));
});

test('invite links are parsed strictly', async () => {
  const owner = await ownerRoom();
  const { link } = await makeInvite(owner, { baseUrl: 'http://h/', serverFingerprint: FP });
  assert.ok(link.startsWith('http://h/#'));
  const fragment = link.split('#')[1];
  const body = JSON.parse(new TextDecoder().decode(base64UrlToBytes(fragment)));
  const encode = (o) => bytesToBase64Url(new TextEncoder().encode(JSON.stringify(o)));
  for (const bad of ['', 'x', '!!!', encode({ ...body, v: 2 }), encode({ ...body, server: 'abc' }),
    encode({ ...body, token: 'AAAA' }), encode({ ...body, owner: 'AAAA' }), encode({ ...body, room: 'a/b' }), encode([1])]) {
    assert.throws(() => parseInviteFragment(bad), /not a valid Hush invite/);
  }
});

test('an invite made on a page that is not the relay names the relay, and only then', async () => {
  const owner = await ownerRoom();
  const fragment = (link) => link.split('#')[1];
  const onRelay = await makeInvite(owner, { baseUrl: 'https://relay.example', serverFingerprint: FP });
  assert.equal(parseInviteFragment(fragment(onRelay.link)).relay, null);
  const exported = await makeInvite(owner, { baseUrl: 'https://code.example', serverFingerprint: FP, relay: 'https://relay.example:8443' });
  assert.ok(exported.link.startsWith('https://code.example/#'));
  assert.equal(parseInviteFragment(fragment(exported.link)).relay, 'https://relay.example:8443');
});

// Found by tests/js/fuzz-app.test.mjs: hostile `hello` and departure entries (from a server).
// Scenario 03: bob left at seq 3; his message at seq 4 must stay refused.
async function departedBob() {
  const s = JSON.parse(readFileSync(joinPath(REPO_ROOT, 'Tests', 'Fixtures', 'room-scenarios', '03-departures.json'), 'utf8'));
  const { keys, state } = await scenarioStart(s);
  const bob = bytesToBase64(publicKeyFromPrivate(keys.bob));
  const late = s.steps[2].envelope; // bob's message after his `until`
  assert.equal(late.from, bob);
  return { s, state, bob, late };
}

test('hello: a member entry without a signature admits nobody (not even a departed key)', async () => {
  const { s, state, bob, late } = await departedBob();
  // Was: `state.members[key] === entry.signature` held for undefined === undefined, so the
  // entry re-admitted bob unverified and his later message was shown as chat.
  await syncMembers(state, [...s.start.members, { key: bob }, {}, [], null]);
  assert.equal(Object.hasOwn(state.members, bob), false);
  assert.equal(Object.hasOwn(state.members, 'undefined'), false);
  assert.deepEqual(Object.keys(state.members).sort(), s.start.members.map((m) => m.key).sort());
  const event = await receive(state, parseEnvelope(state, late));
  assert.deepEqual([event.type, event.code], ['rejected', 'notMember']);
});

test('departures and former members named after Object.prototype members change nothing', async () => {
  const { state } = await departedBob();
  const before = structuredClone(state);
  for (const key of ['constructor', 'toString', '__proto__', 'hasOwnProperty']) {
    // Was: forget() read state.members.constructor (Object) as a signature and wrote
    // former.constructor = {signature: Object, untilSeq: NaN}; '__proto__' replaced former's prototype.
    assert.equal(await depart(state, key, { departure: 'left', signature: 'AAAA', until: 9 }), false);
    await syncFormer(state, [{ key, signature: undefined, until: 1, departure: 'left', departureSignature: 'AAAA' }]);
  }
  // Was: a TypeError (Cannot convert object to primitive value) from the property lookup.
  assert.equal(await depart(state, { toString: 0, valueOf: 0 }, { departure: 'left', signature: 'AAAA', until: 3 }), false);
  assert.deepStrictEqual(state, before);
  assert.equal(Object.getPrototypeOf(state.former), Object.prototype);
});

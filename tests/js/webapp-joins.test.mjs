// The owner's side of a join in web/app/rooms.mjs against a fake server connection: a join
// request and its confirmation are answered through the connection's request budget, so a
// `rate_limited` refusal delays a join instead of leaving the joiner waiting for the owner's
// next `hello` (the Swift client does the same: ProtocolV2Tests.joinsArriveThroughTheOwnersRequestBudget).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { base64ToBytes, secureMessageVerify } from '../../web/themis/index.mjs';
import { ServerError } from '../../web/app/connection.mjs';
import { makeInvite, startJoin, acceptGrant } from '../../web/app/joins.mjs';
import { parseInviteFragment } from '../../web/app/formats.mjs';
import { clientWithOutbox } from './fake-room.mjs';

test('an owner answers and admits a join through rate_limited refusals', async () => {
  const requests = [];
  const refusals = { join_response: 2, add_member: 1 };
  const { room } = await clientWithOutbox((type, fields) => {
    requests.push({ type, fields });
    if (refusals[type] > 0) {
      refusals[type] -= 1;
      throw new ServerError('rate_limited', 'slow down');
    }
    return { room: room.id };
  });
  const made = await makeInvite(room.state, { baseUrl: 'http://relay', serverFingerprint: '0000 0000 0000 0000 0000' });
  room.record.invites[made.inviteId] = { token: made.token, expiresAt: Date.now() / 1000 + 3600 };
  const invite = parseInviteFragment(made.link.slice(made.link.indexOf('#') + 1));
  const { join, joiningKeyBlob } = await startJoin(invite);

  await room.answerJoin({ inviteId: made.inviteId, key: join.publicKey, joiningKey: joiningKeyBlob });
  const responses = requests.filter((r) => r.type === 'join_response');
  assert.equal(responses.length, 3, 'two refusals, then the answer');
  assert.ok(responses.every((r) => r.fields.sealed === responses[0].fields.sealed), 'the same answer each time');
  assert.equal(room.record.invites[made.inviteId].answered, true);

  const { state, confirmation } = await acceptGrant(join, responses[2].fields.sealed);
  assert.equal(state.epoch, room.state.epoch);
  await room.admitJoin({ inviteId: made.inviteId, key: join.publicKey, sealed: confirmation });
  const adds = requests.filter((r) => r.type === 'add_member');
  assert.equal(adds.length, 2, 'one refusal, then the admission');
  assert.equal(adds[1].fields.key, join.publicKey);
  const signed = await secureMessageVerify(base64ToBytes(room.state.owner), base64ToBytes(adds[1].fields.signature));
  assert.equal(new TextDecoder().decode(signed), `hush-member:${room.id}:${join.publicKey}`);
  assert.ok(room.state.members[join.publicKey], 'the joiner is a member');
  assert.equal(room.record.invites[made.inviteId], undefined, 'the invite is used up');
});

test('a refusal other than rate_limited is not repeated', async () => {
  const requests = [];
  const { room } = await clientWithOutbox((type) => {
    requests.push(type);
    throw new ServerError('unknown_invite', 'gone');
  });
  const made = await makeInvite(room.state, { baseUrl: 'http://relay', serverFingerprint: '0000 0000 0000 0000 0000' });
  room.record.invites[made.inviteId] = { token: made.token, expiresAt: Date.now() / 1000 + 3600 };
  const { join, joiningKeyBlob } = await startJoin(parseInviteFragment(made.link.slice(made.link.indexOf('#') + 1)));
  await assert.rejects(room.answerJoin({ inviteId: made.inviteId, key: join.publicKey, joiningKey: joiningKeyBlob }),
    (error) => error instanceof ServerError && error.code === 'unknown_invite');
  assert.deepEqual(requests, ['join_response']);
});

test('a room where new members read only what comes after they join rotates before the first answer to a joiner', async () => {
  const requests = [];
  let seq = 0;
  const { room } = await clientWithOutbox((type, fields) => {
    requests.push({ type, fields });
    if (type === 'rotate') return { room: room.id, seq: (seq += 1), epoch: fields.epoch };
    return { room: room.id };
  });
  room.record.history = 'joined';
  const made = await makeInvite(room.state, { baseUrl: 'http://relay', serverFingerprint: '0000 0000 0000 0000 0000', history: 'joined' });
  room.record.invites[made.inviteId] = { token: made.token, expiresAt: Date.now() / 1000 + 3600 };
  const invite = parseInviteFragment(made.link.slice(made.link.indexOf('#') + 1));
  assert.equal(invite.history, 'joined', 'the link says so to the joiner');
  const { join, joiningKeyBlob } = await startJoin(invite);
  const epochBefore = room.state.epoch;

  await room.answerJoin({ inviteId: made.inviteId, key: join.publicKey, joiningKey: joiningKeyBlob });
  assert.deepEqual(requests.map((r) => r.type), ['rotate', 'join_response']);
  const { state } = await acceptGrant(join, requests[1].fields.sealed);
  assert.equal(state.epoch, epochBefore + 1, 'the joiner holds only the fresh key');

  // The same request again (pushed live and listed at hello): answered, not rotated again.
  room.record.invites[made.inviteId].answered = false;
  await room.answerJoin({ inviteId: made.inviteId, key: join.publicKey, joiningKey: joiningKeyBlob });
  assert.deepEqual(requests.map((r) => r.type), ['rotate', 'join_response', 'join_response']);
});

test('by default a joiner is answered with the current key, no rotation', async () => {
  const requests = [];
  const { room } = await clientWithOutbox((type) => { requests.push(type); return { room: room.id }; });
  const made = await makeInvite(room.state, { baseUrl: 'http://relay', serverFingerprint: '0000 0000 0000 0000 0000' });
  room.record.invites[made.inviteId] = { token: made.token, expiresAt: Date.now() / 1000 + 3600 };
  const invite = parseInviteFragment(made.link.slice(made.link.indexOf('#') + 1));
  assert.equal(invite.history, 'rotation');
  const { join, joiningKeyBlob } = await startJoin(invite);
  await room.answerJoin({ inviteId: made.inviteId, key: join.publicKey, joiningKey: joiningKeyBlob });
  assert.deepEqual(requests, ['join_response']);
});

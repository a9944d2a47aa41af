// The owner's list of open invites and pending joins (web/app/joins.mjs parseInviteList): what
// the server's `invites` reply (docs/PROTOCOL.md §4.3) may hold, and what the page shows of it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseInviteList } from '../../web/app/joins.mjs';

test('invites are listed soonest to expire first, the joiner key when there is one', () => {
  const list = parseInviteList({ room: 'r', invites: [
    { inviteId: 'b', expiresAt: 200, state: 'requested', key: 'K' },
    { inviteId: 'a', expiresAt: 100, state: 'open' },
  ] });
  assert.deepEqual(list, [
    { inviteId: 'a', expiresAt: 100, state: 'open', key: null },
    { inviteId: 'b', expiresAt: 200, state: 'requested', key: 'K' },
  ]);
});

test('entries of another shape are left out, and a reply without a list is an empty list', () => {
  assert.deepEqual(parseInviteList({}), []);
  assert.deepEqual(parseInviteList(null), []);
  assert.deepEqual(parseInviteList({ invites: 'x' }), []);
  const bad = [
    null, 1, { expiresAt: 1, state: 'open' }, { inviteId: 'x', state: 'open' },
    { inviteId: 'x', expiresAt: 1.5, state: 'open' }, { inviteId: 'x', expiresAt: 1, state: 'gone' },
    { inviteId: 'x', expiresAt: 1, state: 'open', key: 3 }, { inviteId: 'x'.repeat(65), expiresAt: 1, state: 'open' },
  ];
  assert.deepEqual(parseInviteList({ invites: bad }), []);
});

test('at most 256 entries are read', () => {
  const invites = Array.from({ length: 300 }, (_, i) => ({ inviteId: `i${i}`, expiresAt: i + 1, state: 'open' }));
  assert.equal(parseInviteList({ invites }).length, 256);
});

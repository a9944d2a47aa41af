// The shared invite-link cases (Tests/Fixtures/invite-links.json), which the Swift client
// runs too (InviteLinkVectorTests): both read exactly the same links.
import test from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { parseInviteFragment, inviteLink } from '../../web/app/formats.mjs';
import { bytesToBase64 } from '../../web/themis/bytes.mjs';

const { cases } = JSON.parse(readFileSync(new URL('../../Tests/Fixtures/invite-links.json', import.meta.url), 'utf8'));

/** What the page does with a link: its fragment is everything after the first '#'. */
function parseLink(link) {
  const hash = link.indexOf('#');
  if (hash < 0) throw new Error('This is not a valid Hush invite link.');
  return parseInviteFragment(link.slice(hash + 1));
}

test('the file has valid and invalid cases', () => {
  assert.ok(cases.filter((c) => c.valid).length >= 2);
  assert.ok(cases.filter((c) => !c.valid).length >= 10);
});

for (const entry of cases) {
  test(`invite link: ${entry.name}`, () => {
    if (!entry.valid) {
      assert.throws(() => parseLink(entry.link), /not a valid Hush invite link/);
      return;
    }
    const invite = parseLink(entry.link);
    assert.equal(invite.room, entry.expect.room);
    assert.equal(invite.owner, entry.expect.owner);
    assert.equal(invite.server, entry.expect.fingerprint);
    assert.equal(bytesToBase64(invite.token), entry.expect.token);
    assert.equal(invite.roomName, entry.expect.roomName);
    assert.equal(invite.ownerName, entry.expect.ownerName);
    assert.equal(invite.history, entry.expect.history);
    assert.equal(invite.relay, entry.expect.relay);
    // Written again by this client, the link reads back the same.
    const again = inviteLink(entry.expect.server, invite);
    assert.deepEqual(parseLink(again), invite);
  });
}

"""Display names (docs/PROTOCOL.md §6.7), in Chromium and in Firefox: the owner names itself and
the room rotates before anyone joins, so the joiner's page reads the owner's name in the room only
from the name message the owner's page sends again after admitting it (the invite already shows
it on the join panel and proposes the room's name, §6.6); the member names itself with markup
that must stay text, both see each other's names beside the fingerprints, a change shows as a
line, a name two keys hold is marked on both sides, a name outside the rule is refused in the
page, and a member who joins after a rotation sees the earlier member's name (sent again)."""
import pytest


def set_name(person, name):
    """Types `name` into the members panel's name box and submits it (the panel may be closed)."""
    person.js("""const input = document.getElementById('name-input');
        input.value = arguments[0];
        document.getElementById('name-form').requestSubmit();""", name)


def members(person):
    """The members panel: role, the name shown (or None), whether it is marked, and the fingerprint."""
    return person.js("""return [...document.querySelectorAll('[data-testid=member]')].map(e => ({
        role: e.querySelector('.sender').textContent,
        name: e.querySelector('[data-testid=sender-name]')?.textContent ?? null,
        same: !!e.querySelector('[data-testid=same-name]'),
        fp: e.querySelector('.fp-full').textContent}))""")


def by_role(person, prefix):
    return next((m for m in members(person) if m["role"].startswith(prefix)), None)


def sender_names(person):
    """Each message's text with the name and mark shown beside its sender's fingerprint."""
    return person.js("""return [...document.querySelectorAll('[data-testid=message]')].map(e => [
        e.querySelector('.text').textContent, e.querySelector('[data-testid=sender-name]')?.textContent ?? null,
        !!e.querySelector('[data-testid=same-name]'), e.querySelector('.fp').textContent])""")


@pytest.mark.parametrize("kind", ["chrome", "firefox"])
def test_names_beside_fingerprints(server, people, kind):
    owner = people("owner", kind=kind)
    owner.open(server)
    owner.unlock("owner-password-1")
    owner.create_room("Names", rotate_every=2)
    set_name(owner, "  Alice ")
    owner.wait("my name in the header", lambda: "you are “Alice”" in owner.js(
        "return document.getElementById('room-meta').textContent"))
    owner.send("before anyone joined")
    # The name and the message make two: the room key rotates, so a joiner reads from after both.
    owner.wait("the rotation", lambda: owner.system_lines("rotation"))

    member = people("member", kind=kind)
    member.open(owner.invite())
    member.unlock("member-password-1")
    # The invite says what the owner calls themself and proposes the room's name (§6.6).
    member.wait("the server key check", lambda: member.js("return document.getElementById('join-check').dataset.ok"))
    assert member.js("return document.getElementById('join-owner-name').textContent") == " — calls themself “Alice”"
    assert member.js("return document.getElementById('join-name').value") == "Names"
    member.join("Names")
    member.wait_joined()
    member.wait("the owner's name, sent again after the join", lambda: (by_role(member, "Owner") or {}).get("name") == "Alice")
    assert "before anyone joined" not in member.texts()

    hostile = "<b>Bob</b> & co"
    set_name(member, hostile)
    member.send("hi from bob")
    owner.wait("the member's name", lambda: (by_role(owner, "Member") or {}).get("name") == hostile)
    member_fp = by_role(owner, "Member")["fp"]
    assert owner.js("return document.querySelectorAll('#members-panel b, #messages b').length") == 0, "a name is text, never markup"
    owner.wait("the name beside the message", lambda: ["hi from bob", hostile, False, " ".join(member_fp.split()[:2])] in sender_names(owner))
    assert any("set the name “<b>Bob</b> & co”" in line for line in owner.system_lines("naming"))

    # A name outside the rule is refused in the page, and nothing is sent.
    set_name(member, "Bob\u202eevil")
    member.wait("the refusal", lambda: "Name not set" in member.js("return document.getElementById('toast').textContent"))
    set_name(member, "x" * 65)
    member.wait("the refusal of 65 characters", lambda: "1 to 64 characters" in member.js("return document.getElementById('toast').textContent"))

    # The member takes the owner's name: the change shows, and both keys are marked on both sides.
    set_name(member, "Alice")
    owner.wait("the change", lambda: any(f"“{hostile}” ({' '.join(member_fp.split()[:2])}) is now called “Alice”" in line
                                         for line in owner.system_lines("naming")))
    for person in (owner, member):
        person.wait("both marked", lambda: [m["same"] for m in members(person)] == [True, True]
                    and {m["name"] for m in members(person)} == {"Alice"})
    owner.wait("the mark beside the member's message", lambda: ["hi from bob", "Alice", True, " ".join(member_fp.split()[:2])] in sender_names(owner))
    member.send("who is who")
    owner.wait_text("who is who")

    owner.click("#members-button")
    owner.wait("the members panel", lambda: owner.visible("member-list"))
    owner.screenshot(f"names-{'chromium' if kind == 'chrome' else 'firefox'}.png")

    # The room key rotates after the member's last name; a late joiner reads only the new epoch,
    # so the member's page sends its name again when the joiner is let in (§6.7).
    rotations = len(owner.system_lines("rotation"))
    owner.send("one")
    owner.send("two")
    owner.wait("a rotation after the member's name", lambda: len(owner.system_lines("rotation")) > rotations)
    late = people("late", kind=kind)
    late.open(owner.invite())
    late.unlock("late-password-1")
    late.join("Names")
    late.wait_joined()
    late.wait("the member's name, sent again for the joiner", lambda: (by_role(late, "Member") or {}).get("name") == "Alice")
    late.wait("the owner's name", lambda: (by_role(late, "Owner") or {}).get("name") == "Alice")
    assert "who is who" not in late.texts()

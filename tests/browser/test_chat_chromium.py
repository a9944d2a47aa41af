"""Two people in headless Chromium, each with their own profile: create, invite, join, talk
both ways, automatic rotation after N messages, reload + unlock + history, a wrong password,
removal by the owner (the removed person cannot read what follows), a join that waits
while the owner is away, a member who was away reading the messages of one who left, and a
picture one sends and the other sees inline (the README screenshot)."""
import tempfile
from pathlib import Path

from conftest import png


def test_room_lifecycle_in_chromium(server, people):
    alice = people("alice")
    alice.open(server)
    alice.unlock("alice-password-1")
    alice.create_room("Team", rotate_every=3)
    link = alice.invite()
    assert link.startswith(server + "/#")

    bob = people("bob")
    bob.open(link)
    bob.unlock("bob-password-1")
    assert bob.js("return document.getElementById('join-server-fp').textContent") == alice.js(
        "return document.getElementById('server-fp').textContent")
    bob.join("Team (from Alice)")
    bob.wait_joined()

    # Both ways.
    alice.send("hello bob")
    bob.wait_text("hello bob")
    bob.send("hi alice")
    alice.wait_text("hi alice")
    mine = [m for m in alice.messages() if m["text"] == "hello bob"][0]
    theirs = [m for m in alice.messages() if m["text"] == "hi alice"][0]
    assert mine["own"] and mine["sender"] == "You"
    assert not theirs["own"] and theirs["sender"] == "Member" and len(theirs["fp"]) == 9
    assert [m for m in bob.messages() if m["text"] == "hello bob"][0]["sender"] == "Owner"

    # The third message reaches N = 3: the owner's client rotates by itself, both see it.
    alice.send("third message")
    alice.wait("a rotation line", lambda: any("epoch 1" in line for line in alice.system_lines("rotation")))
    bob.wait("the rotation", lambda: any("epoch 1" in line for line in bob.system_lines("rotation")))
    alice.send("after the rotation")
    bob.wait_text("after the rotation")
    bob.send("bob after the rotation")
    alice.wait_text("bob after the rotation")

    # Bob reloads: a wrong password is refused and changes nothing; the right one shows history.
    bob.open(server)
    error = bob.unlock("not bob's password", expect_error=True)
    assert "Wrong password" in error
    assert not bob.visible("app-view")
    bob.unlock("bob-password-1")
    bob.open_room("Team (from Alice)")
    for text in ("hello bob", "hi alice", "third message", "after the rotation", "bob after the rotation"):
        bob.wait_text(text)
    assert any("epoch 1" in line for line in bob.system_lines("rotation"))

    # Unread counts: Bob looks away from the room while Alice writes.
    bob.js("document.getElementById('back-button').click()")
    alice.send("while you look away")
    bob.wait("an unread count", lambda: bob.js(
        "return document.querySelector('[data-testid=unread]')?.textContent") == "1")
    bob.open_room("Team (from Alice)")
    bob.wait_text("while you look away")
    bob.wait("no unread count", lambda: not bob.js("return document.querySelector('[data-testid=unread]')"))

    # Names (PROTOCOL.md §6.7): each names itself; the other sees the name beside the fingerprint.
    for person, name in ((alice, "Alice"), (bob, "Bob")):
        person.js("""const input = document.getElementById('name-input');
            input.value = arguments[0];
            document.getElementById('name-form').requestSubmit();""", name)
    named = "return [...document.querySelectorAll('[data-testid=sender-name]')].map(e => e.textContent)"
    alice.wait("Bob's name beside his messages", lambda: "Bob" in alice.js(named))
    bob.wait("Alice's name beside her messages", lambda: "Alice" in bob.js(named))
    alice.send("now we have names")
    bob.wait_text("now we have names")

    # A picture (§6.8): Bob attaches it, Alice's page fetches it, checks it and shows it inline.
    picture = Path(tempfile.mkdtemp(prefix="hush-picture-")) / "meadow.png"
    picture.write_bytes(png(640, 400))
    bob.attach(picture)
    bob.wait("the picture sent", lambda: (bob.file_named("meadow.png") or {}).get("status") == "sent")
    alice.wait("the picture, checked and shown", lambda: (alice.file_named("meadow.png") or {}).get("image") == 640)
    alice.send("what a view")
    bob.wait_text("what a view")
    alice.wait("the list at its end, the picture in view", lambda: alice.js(
        "const l = document.getElementById('messages'); return l.scrollHeight - l.scrollTop - l.clientHeight < 40"))
    alice.click("#close-invite")

    alice.screenshot("chat-chromium-desktop.png")

    # Alice removes Bob: his browser learns it, and what Alice writes next stays unreadable.
    alice.js("window.confirm = () => true")
    alice.click("#members-button")
    alice.wait("two members", lambda: alice.js("return document.querySelectorAll('[data-testid=member]').length") == 2)
    rotations = len(alice.system_lines("rotation"))
    alice.click("[data-testid=remove-member]")
    alice.wait("the removal rotation", lambda: len(alice.system_lines("rotation")) == rotations + 1)
    assert alice.system_lines("removal")
    alice.wait("one member", lambda: alice.js("return document.querySelectorAll('[data-testid=member]').length") == 1)
    bob.open_room("Team (from Alice)")
    bob.wait("the removal notice", lambda: "removed" in (bob.js("return document.getElementById('room-notice').textContent") or ""))
    # No waiting for something not to happen: the server closed Bob's connection (the page says
    # so) before Alice writes, and `send` returns once her message is committed.
    bob.wait("Bob's connection closed as removed",
             lambda: bob.js("return document.getElementById('connection-state').dataset.state") == "removed")
    alice.send("secret after removal")
    assert "secret after removal" not in bob.texts()
    assert bob.js("return document.getElementById('composer-input').disabled")
    # Even after a reload, the removed key reads nothing new: the page no longer connects with it
    # (and the server refuses a removed key at connect, RoomFlowTests).
    bob.open(server)
    bob.unlock("bob-password-1")
    bob.open_room("Team (from Alice)")
    bob.wait("the reloaded page shows the room as removed",
             lambda: bob.js("return document.getElementById('connection-state').dataset.state") == "removed")
    assert "secret after removal" not in bob.texts()

    for person in (alice, bob):
        csp = [line for line in person.driver.console() if "Content Security Policy" in line or "SEVERE" in line and "favicon" not in line]
        # Trusted Types are required: a string given to an HTML or script sink is an error here.
        assert not [line for line in csp if "Content Security Policy" in line or "Trusted" in line or "integrity" in line], csp


def test_join_waits_for_the_owner_and_phone_layout(server, people):
    owner = people("owner")
    owner.open(server)
    owner.unlock("owner-password-1")
    owner.create_room("Later")
    link = owner.invite()
    owner.driver.get("about:blank")  # the owner goes away

    carol = people("carol", size=(390, 780))
    carol.open(link)
    carol.unlock("carol-password-1")
    carol.join("Later")
    carol.wait("the waiting notice", lambda: carol.js(
        "const n = document.getElementById('room-notice'); return !n.hidden && n.dataset.testid === 'waiting'"))

    owner.open(server)
    owner.unlock("owner-password-1")
    owner.open_room("Later")
    carol.wait_joined()
    carol.send("made it in")
    owner.wait_text("made it in")
    owner.send("welcome, carol")
    carol.wait_text("welcome, carol")
    carol.screenshot("chat-chromium-phone.png")
    # On a phone-sized window the room list is hidden while a room is open.
    assert not carol.js("return getComputedStyle(document.getElementById('sidebar')).display !== 'none'")

    # Dave joins, then closes his page. Carol leaves with a signed leave, which the owner
    # verifies, and the owner's page makes the wrapped rotation a departure owes (§4.4). When Dave
    # comes back, only `hello` tells him she left (`formerMembers`): her earlier message still
    # reads as a member's, not as a stranger's, and the rotation's wrap gives him the new key.
    dave = people("dave")
    dave.open(owner.invite())
    dave.unlock("dave-password-1")
    dave.join("Later (dave)")
    dave.wait_joined()
    dave.wait_text("made it in")
    dave.driver.get("about:blank")
    carol.js("window.confirm = () => true")
    carol.click("#leave-button")
    owner.wait("the leave notice", lambda: any("A member left" in line for line in owner.system_lines("removal")))
    owner.wait("the rotation it owes", lambda: any("epoch 1" in line for line in owner.system_lines("rotation")))
    owner.send("after carol left")
    dave.open(server)
    dave.unlock("dave-password-1")
    dave.open_room("Later (dave)")
    dave.wait_text("after carol left")
    made = [m for m in dave.messages() if m["text"] == "made it in"][0]
    assert made["sender"] == "Member" and not made["own"]
    assert not dave.js("return document.querySelector('[data-testid=undecryptable]')")

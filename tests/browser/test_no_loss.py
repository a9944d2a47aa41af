"""Clients that never lose a key or a message, in Chromium and Firefox ESR: two tabs of one
profile keep each other's rooms and keys; Enter sends once and what is typed meanwhile stays;
a message written while the server is down (or while sending is held up) waits in the outbox,
survives a reload, and arrives once, in order; bursts from two browsers across rotations are
read at both sides (protocol v2: stale_epoch, then the message sealed again); a message written
after a departure waits for the owner's wrapped rotation (rotation_pending).

Nothing here waits a fixed time to decide an outcome: a send is held up by taking the Web Lock
it needs from the test, and "no duplicate" is proven by a later message arriving after it."""
import pytest

ENTER = "\ue007"  # the WebDriver key code of Enter (Selenium and Marionette)
KINDS = ["chrome", "firefox"]
OUTAGE_WAIT_S = 150  # reconnects back off up to 30 s, on a loaded machine


def pair(url, people, kind, room="Room", rotate_every=None):
    """Alice owns `room`, Bob joined it; each in their own browser profile."""
    alice = people("alice", kind)
    alice.open(url)
    alice.unlock("alice-password-1")
    alice.create_room(room, rotate_every=rotate_every)
    link = alice.invite()
    bob = people("bob", kind)
    bob.open(link)
    bob.unlock("bob-password-1")
    bob.join(room)
    bob.wait_joined()
    return alice, bob


def press_enter_in_composer(person, text):
    box = person.driver.find("#composer-input")
    box.send_keys(text + ENTER)


@pytest.mark.parametrize("kind", KINDS)
def test_two_tabs_of_one_profile_keep_every_rooms_keys(server, people, kind):
    owner = people("owner", kind)
    owner.open(server)
    owner.unlock("owner-password-1")
    owner.create_room("Club")
    link = owner.invite()

    first = people("bob", kind)
    first.open(server)
    first.unlock("bob-password-1")
    first.create_room("Notes")
    # A second tab of the same profile joins a room while the first one is unlocked.
    second = first.tab("bob-second-tab")
    second.open(link)
    second.unlock("bob-password-1")
    second.join("Club")
    second.wait_joined()

    # The first tab follows (BroadcastChannel); what it does next keeps the new room's keys.
    first.wait("the joined room in the first tab", lambda: "Club" in first.room_names())
    first.open_room("Notes")
    first.send("a note from the first tab")
    first.create_room("Later room")

    first.open(server)
    first.unlock("bob-password-1")
    first.wait("every room after the reload", lambda: sorted(first.room_names()) == ["Club", "Later room", "Notes"])
    first.open_room("Club")
    owner.send("after the reload")
    first.wait_text("after the reload")
    first.send("bob, after the reload")
    owner.wait_text("bob, after the reload")
    first.open_room("Notes")
    first.wait_text("a note from the first tab")
    second.open_room("Notes")
    second.wait_text("a note from the first tab")
    assert first.undecryptable() == 0 and owner.undecryptable() == 0


@pytest.mark.parametrize("kind", KINDS)
def test_enter_sends_once_and_keeps_what_is_typed_meanwhile(server, people, kind):
    alice, bob = pair(server, people, kind)

    # The key store is busy (as when another tab writes it): the send is in flight meanwhile.
    alice.hold_lock("hush-keystore")
    press_enter_in_composer(alice, "only once")
    press_enter_in_composer(alice, "")  # a second Enter right after the first
    alice.driver.find("#composer-input").send_keys("typed meanwhile")
    alice.release_lock("hush-keystore")
    alice.wait_sent("only once")
    assert alice.composer() == "typed meanwhile"

    # A held-down key: one press, then repeats.
    alice.js("""const box = document.getElementById('composer-input');
        const press = (repeat) => box.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter', repeat, bubbles: true, cancelable: true}));
        box.value = 'held down';
        press(false);
        box.value = 'not finished';
        for (let i = 0; i < 5; i += 1) press(true);""")
    alice.wait_sent("held down")
    assert alice.composer() == "not finished"

    # The outbox keeps order: once this one is sent, any duplicate of the above would be too.
    alice.send("the last one")
    bob.wait_text("the last one")
    for person in (alice, bob):
        texts = person.texts()
        assert texts.count("only once") == 1 and texts.count("held down") == 1, texts
        assert "not finished" not in texts and "" not in texts, texts
        assert texts.index("only once") < texts.index("held down") < texts.index("the last one"), texts


@pytest.mark.parametrize("kind", KINDS)
def test_an_unsent_message_survives_a_reload(server, people, kind):
    alice, bob = pair(server, people, kind)
    room = alice.current_room_id()
    # Sending is held up (the room's lock is taken): the message is only in the outbox.
    alice.hold_lock(f"hush-room:{room}")
    press_enter_in_composer(alice, "written before the reload")
    alice.wait("the message waiting", lambda: alice.texts("pending") == ["written before the reload"])
    assert "written before the reload" not in alice.texts("sent")

    alice.open(alice.js("return location.origin"))  # the reload also drops the held lock
    alice.unlock("alice-password-1")
    alice.open_room("Room")
    alice.wait_sent("written before the reload")
    bob.wait_text("written before the reload")
    bob.send("reply")
    alice.wait_text("reply")
    assert bob.texts().count("written before the reload") == 1


@pytest.mark.parametrize("kind", KINDS)
def test_messages_written_while_the_server_is_down_arrive_once_in_order(own_server, people, kind):
    alice, bob = pair(own_server.url, people, kind)
    alice.send("before the outage")
    bob.wait_text("before the outage")

    own_server.stop()
    alice.wait("the outage", lambda: alice.js("return document.getElementById('connection-state').dataset.state") == "offline")
    press_enter_in_composer(alice, "first while offline")
    press_enter_in_composer(alice, "second while offline")
    alice.wait("both waiting", lambda: [t for t in alice.texts() if "offline" in t] == ["first while offline", "second while offline"])
    assert not [t for t in alice.texts("sent") if "while offline" in t]

    own_server.start()
    bob.wait("both, in order", lambda: [t for t in bob.texts() if "while offline" in t] == ["first while offline", "second while offline"],
             timeout=OUTAGE_WAIT_S)
    alice.wait_sent("second while offline", timeout=OUTAGE_WAIT_S)
    alice.send("after the outage")
    bob.wait_text("after the outage")
    for person in (alice, bob):
        texts = person.texts()
        assert [t for t in texts if "offline" in t or "outage" in t] == [
            "before the outage", "first while offline", "second while offline", "after the outage"], texts
        assert person.undecryptable() == 0


def burst(person, texts):
    """Writes every text at once (one Enter each, in one go): the sends cross the rotations they cause."""
    person.js("""const box = document.getElementById('composer-input');
        for (const text of arguments[0]) { box.value = text; document.getElementById('composer').requestSubmit(); }""", texts)


@pytest.mark.parametrize("kind", KINDS)
def test_bursts_from_two_browsers_across_rotations_are_read_at_both_sides(server, people, kind):
    alice, bob = pair(server, people, kind, room="Burst", rotate_every=2)
    room = bob.current_room_id()
    first = {"alice": [f"alice {i}" for i in range(4)], "bob": [f"bob {i}" for i in range(4)]}
    then = [f"alice again {i}" for i in range(4)]
    # Bob's burst waits (his page's room lock is taken) while Alice's causes a rotation: Bob's
    # page has not read it when it seals, so the server answers stale_epoch and he seals again.
    bob.hold_lock(f"hush-room:{room}")
    burst(bob, first["bob"])
    burst(alice, first["alice"])
    alice.wait("a rotation", lambda: alice.system_lines("rotation"))
    bob.release_lock(f"hush-room:{room}")
    burst(alice, then)  # and Alice goes on meanwhile
    everything = first["alice"] + first["bob"] + then
    for person in (alice, bob):
        person.wait("every message", lambda p=person: set(everything) <= set(p.texts()), timeout=120)
    alice.wait_sent(then[-1], timeout=120)
    bob.wait_sent(first["bob"][-1], timeout=120)
    for person in (alice, bob):
        texts = person.texts()
        assert sorted(texts) == sorted(everything), texts
        for sender in (first["alice"] + then, first["bob"]):  # each sender's messages in the order written
            assert [t for t in texts if t in sender] == sender, texts
        assert person.undecryptable() == 0, person.debug()
        rotations = person.js("""return [...document.querySelectorAll('[data-testid=system][data-kind=rotation]')]
            .map(e => Number(e.dataset.seq))""")
        bob_first = min(m["seq"] for m in person.messages() if m["text"] in first["bob"])
        assert rotations and min(rotations) < bob_first, (rotations, bob_first)


@pytest.mark.parametrize("kind", KINDS)
def test_a_message_after_a_departure_waits_for_the_owners_rotation(server, people, kind):
    alice, bob = pair(server, people, kind, room="Trio")
    room = alice.current_room_id()
    carol = people("carol", kind)
    carol.open(alice.invite())
    carol.unlock("carol-password-1")
    carol.join("Trio")
    carol.wait_joined()
    carol.send("carol was here")
    bob.wait_text("carol was here")

    alice.hold_lock(f"hush-room:{room}")  # the owner's page cannot rotate yet
    carol.js("window.confirm = () => true")
    carol.click("#leave-button")
    bob.wait("the leave", lambda: any("A member left" in line for line in bob.system_lines("removal")))
    # Carol still holds the room key: the server takes nothing until the owner's wrapped rotation.
    press_enter_in_composer(bob, "after carol left")
    bob.wait("the message held", lambda: bob.texts("held") == ["after carol left"])

    alice.release_lock(f"hush-room:{room}")
    bob.wait_sent("after carol left")
    alice.wait_text("after carol left")
    alice.send("the owner after the rotation")
    bob.wait_text("the owner after the rotation")
    for person in (alice, bob):
        assert person.texts().count("after carol left") == 1
        assert person.undecryptable() == 0, person.debug()

"""Clients that never lose a key or a message, in Chromium and Firefox ESR: two tabs of one
profile keep each other's rooms and keys."""
import pytest

KINDS = ["chrome", "firefox"]


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

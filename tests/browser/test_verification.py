"""Verification in Chromium and Firefox: both people see the same safety number for their two keys, the
owner marks the member's key verified (kept in the key store across a reload), the mark shows
beside that member's messages and in the members panel, and can be taken back."""
import pytest


def verified_in_bubbles(person):
    return person.js("""return [...document.querySelectorAll('[data-testid=message]')]
        .filter(e => e.querySelector('[data-testid=verified]')).map(e => e.querySelector('.text').textContent)""")


@pytest.mark.parametrize("kind", ["chrome", "firefox"])
def test_safety_number_and_verified_mark(server, people, kind):
    owner = people("owner", kind)
    owner.open(server)
    owner.unlock("owner-password-1")
    owner.create_room("Trust")
    member = people("member", kind)
    member.open(owner.invite())
    member.unlock("member-password-1")
    member.join("Trust")
    member.wait_joined()
    member.send("it is me")
    owner.wait_text("it is me")

    safety = "return document.querySelector('[data-testid=copy-safety]')?.dataset.safety"
    owner.wait("the owner's safety number", lambda: owner.js(safety))
    member.wait("the member's safety number", lambda: member.js(safety))
    assert owner.js(safety) == member.js(safety)
    assert owner.my_fingerprint() in owner.js(safety) and member.my_fingerprint() in owner.js(safety)
    assert verified_in_bubbles(owner) == []

    owner.js("window.confirm = () => true")
    owner.click("#members-button")
    owner.click("[data-testid=verify-member]")
    owner.wait("the verified mark", lambda: verified_in_bubbles(owner) == ["it is me"])
    assert owner.js("return document.querySelector('[data-testid=verify-member]').getAttribute('aria-pressed')") == "true"
    assert owner.js("return document.querySelectorAll('[data-testid=member] [data-testid=verified]').length") == 1
    owner.screenshot(f"verified-mark-{kind}.png")

    owner.open(owner.js("return location.href").split("#")[0])
    owner.unlock("owner-password-1")
    owner.open_room("Trust")
    owner.wait("the mark after a reload", lambda: verified_in_bubbles(owner) == ["it is me"])

    owner.click("#members-button")
    owner.click("[data-testid=verify-member]")
    owner.wait("the mark taken back", lambda: verified_in_bubbles(owner) == [])

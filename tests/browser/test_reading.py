"""Reading and writing in Chromium: message text is text (links become <a rel="noopener
noreferrer"> built from text, never HTML; dir="auto"), day separators follow the page's clock
(moved by the test, web/app/clock.mjs), the list is updated in place, a reader scrolled up gets a
"new messages" line and a jump-to-latest button and the room is not marked read meanwhile (the
title counts it), desktop notifications only while the tab is hidden and without the text unless
chosen, and the key store locks itself after the chosen idle time."""

def move_clock(person, ms):
    """Moves the page's clock `ms` ahead: the same module instance the app reads the time from."""
    return person.js("""const offset = arguments[0];
        return import('/app/clock.mjs').then(({ clock }) => { clock.now = () => Date.now() + offset; return true; });""", ms)


def pair(server, people, size=(1280, 820)):
    alice = people("alice")
    alice.open(server)
    alice.unlock("alice-password-1")
    alice.create_room("Reading")
    link = alice.invite()
    bob = people("bob", size=size)
    bob.open(link)
    bob.unlock("bob-password-1")
    bob.join("Reading")
    bob.wait_joined()
    return alice, bob


def test_text_links_days_and_incremental_list(server, people):
    alice, bob = pair(server, people)
    hostile = 'see https://example.com/a?b=1, or javascript:alert(1) <b>bold</b> <img src=x onerror=alert(1)> http://x.test.'
    alice.send(hostile)
    bob.wait_text(hostile)
    text = bob.js("""const t = [...document.querySelectorAll('[data-testid=message-text]')].find(e => e.textContent === arguments[0]);
        return {dir: t.getAttribute('dir'), tags: [...t.querySelectorAll('*')].map(e => e.tagName),
                links: [...t.querySelectorAll('a')].map(a => [a.getAttribute('href'), a.textContent, a.rel, a.target])}""", hostile)
    assert text["dir"] == "auto"
    assert text["tags"] == ["A", "A"]  # no <b>, no <img>: markup stays text
    assert text["links"] == [["https://example.com/a?b=1", "https://example.com/a?b=1", "noopener noreferrer", "_blank"],
                             ["http://x.test/", "http://x.test", "noopener noreferrer", "_blank"]]

    # Day separators: today's messages under "Today"; a day later, the same ones are "Yesterday's".
    assert bob.js("return [...document.querySelectorAll('[data-testid=day]')].map(e => e.textContent)") == ["Today"]
    move_clock(bob, 24 * 3600 * 1000)
    bob.js("document.getElementById('messages').dispatchEvent(new Event('scroll'))")  # any render
    bob.wait("yesterday's separator", lambda: bob.js(
        "return [...document.querySelectorAll('[data-testid=day]')].map(e => e.textContent)") == ["Yesterday"])

    # In place: a new message adds its element; the ones shown before are the same elements.
    bob.js("document.querySelector('[data-testid=message]').hushMark = 'kept'")
    count = bob.js("return document.querySelectorAll('#messages > li').length")
    alice.send("one more")
    bob.wait_text("one more")
    assert bob.js("return document.querySelector('[data-testid=message]').hushMark") == "kept"
    assert bob.js("return document.querySelectorAll('#messages > li').length") == count + 1


def test_scrolled_up_reader_gets_a_marker_and_a_jump_button(server, people):
    alice, bob = pair(server, people, size=(900, 520))
    for n in range(14):
        alice.send(f"filler {n}")
    bob.wait_text("filler 13")
    bob.wait("the room read", lambda: bob.js("return document.title") == "Hush")
    assert bob.js("return document.getElementById('jump-latest').hidden")

    bob.js("document.getElementById('messages').scrollTop = 0")
    bob.wait("the jump button", lambda: bob.visible("jump-latest"))
    alice.send("while you scroll")
    bob.wait_text("while you scroll")
    # Not read while scrolled up: the title and the button count it; the marker is before it.
    bob.wait("the unread title", lambda: bob.js("return document.title") == "(1) Hush")
    assert bob.js("return document.getElementById('jump-latest').textContent") == "1 new ↓"
    after_marker = bob.js("""const m = document.getElementById('new-marker');
        return m && m.nextElementSibling.querySelector('[data-testid=message-text]')?.textContent""")
    assert after_marker == "while you scroll"

    bob.click("#jump-latest")
    bob.wait("the room read after the jump", lambda: bob.js("return document.title") == "Hush")
    bob.wait("the jump button hidden", lambda: not bob.visible("jump-latest"))


NOTIFICATIONS = """window.hushNotes = [];
    window.Notification = class { static permission = 'granted';
      static requestPermission() { return Promise.resolve('granted'); }
      constructor(title, options) { window.hushNotes.push({title, body: options.body}); }
      addEventListener() {} close() {} };
    window.hushHidden = false;
    Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => window.hushHidden ? 'hidden' : 'visible'});"""


def test_notifications_only_when_hidden_and_auto_lock(server, people):
    alice, bob = pair(server, people)
    bob.js(NOTIFICATIONS)
    bob.click("#notify-toggle")
    # On once the permission was granted (asynchronously): the text option is enabled then.
    bob.wait("notifications on", lambda: bob.js(
        "return document.getElementById('notify-toggle').checked && !document.getElementById('notify-text').disabled"))
    alice.send("seen in the tab")
    bob.wait_text("seen in the tab")
    assert bob.js("return window.hushNotes") == []  # visible: no notification

    bob.js("window.hushHidden = true")
    alice.send("secret words")
    bob.wait("a notification", lambda: bob.js("return window.hushNotes.length") == 1)
    assert bob.js("return window.hushNotes") == [{"title": "Hush — Reading", "body": "New message"}]
    bob.click("#notify-text")
    bob.wait("text in notifications", lambda: bob.js("return document.getElementById('notify-text').checked"))
    alice.send("now with text")
    bob.wait("a second notification", lambda: bob.js("return window.hushNotes.length") == 2)
    assert bob.js("return window.hushNotes[1].body") == "now with text"
    bob.js("window.hushHidden = false")

    # Auto-lock: 5 idle minutes chosen; the page's clock moves 6 minutes on; the keys lock.
    bob.js("const s = document.getElementById('autolock-select'); s.value = '5'; s.dispatchEvent(new Event('change'))")
    assert bob.visible("app-view")
    move_clock(bob, 6 * 60 * 1000)
    bob.wait("the lock screen", lambda: bob.visible("lock-view") and not bob.visible("app-view"))
    # The choice is kept: after unlocking it is still 5 minutes.
    bob.unlock("bob-password-1")
    assert bob.js("return document.getElementById('autolock-select').value") == "5"

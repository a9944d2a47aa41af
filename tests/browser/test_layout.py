"""Layout and access in Chromium (and the persistent-storage line in Firefox): the phone layout's
members panel (a close button, Esc, a tap outside, never over its own button), the owner's
header, the status pill without rooms, focus after unlock and a visible focus ring on every
control, accessible names said once, the contrast of text and buttons (computed colours, at
least 4.5:1) in light, dark and the system's dark, the theme switch, and Join/Cancel aligned.
Screenshots: the phone layout, its members panel, dark mode."""
import pytest

# For every visible element that shows text, and every enabled button: its colour and the
# background under it (the ancestors' backgrounds blended), and their contrast ratio.
CONTRAST = """
const parse = (c) => { const p = c.match(/[\\d.]+/g).map(Number); return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1]; };
const blend = (top, bottom) => [0, 1, 2].map((i) => top[i] * top[3] + bottom[i] * (1 - top[3])).concat(1);
const background = (el) => {
  const layers = [];
  for (let e = el; e; e = e.parentElement) {
    const c = parse(getComputedStyle(e).backgroundColor);
    if (c[3] > 0) layers.push(c);
    if (c[3] >= 1) break;
  }
  return layers.reduceRight((base, layer) => blend(layer, base), [255, 255, 255, 1]);
};
const lum = (c) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
  return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]); };
const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
const visible = (e) => e.getClientRects().length > 0 && getComputedStyle(e).visibility !== 'hidden';
const out = [];
for (const el of document.body.querySelectorAll('*')) {
  if (!visible(el) || el.closest('[hidden], :disabled, .code-error')) continue;
  const text = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
  if (!text && !el.matches('button, select')) continue;
  const bg = background(el);
  const fg = blend(parse(getComputedStyle(el).color), bg);
  const r = ratio(fg, bg);
  out.push({ what: `${el.tagName.toLowerCase()}#${el.id}.${el.className} "${el.textContent.trim().slice(0, 30)}"`, ratio: Math.round(r * 100) / 100 });
}
return out;
"""


def low_contrast(person):
    checked = person.js(CONTRAST)
    assert len(checked) > 10, checked  # the check saw the page
    return [c for c in checked if c["ratio"] < 4.5]


def owner_with_member(server, people, owner_size=(1280, 820)):
    owner = people("owner", size=owner_size)
    owner.open(server)
    owner.unlock("owner-password-1")
    assert owner.js("return document.activeElement.id") == "new-room-name"  # focus after unlock, no rooms
    assert owner.js("return document.getElementById('connection-state').textContent") == "no rooms yet"
    owner.create_room("A family room with a long name")
    link = owner.invite()
    member = people("member")
    member.open(link)
    member.unlock("member-password-1")
    member.join("Family")
    member.wait_joined()
    member.send("hello from the member, see https://example.com")
    owner.wait_text("hello from the member, see https://example.com")
    owner.send("hello from the owner")
    return owner, member


def set_theme(person, theme):
    person.js("const s = document.getElementById('theme-select'); s.value = arguments[0]; s.dispatchEvent(new Event('change'))", theme)


def test_contrast_theme_focus_and_names_on_desktop(server, people):
    owner, member = owner_with_member(server, people)
    owner.click("#members-button")
    owner.wait("the member's Remove button", lambda: owner.visible("invites-section") and owner.js(
        "return document.querySelector('[data-testid=remove-member]') !== null"))

    # "Member" in a bubble is a label, not a members-list row (it had the row's padding and border).
    label = owner.js("""const s = [...document.querySelectorAll('[data-testid=message] .sender')].find(e => e.textContent === 'Member');
        const c = getComputedStyle(s); return [c.paddingTop, c.borderBottomStyle]""")
    assert label == ["0px", "none"]

    # Accessible names: said once, beginning with what the button shows.
    names = owner.js("""return [...document.querySelectorAll('button')].filter(b => b.getClientRects().length)
        .map(b => [b.textContent.trim(), b.getAttribute('aria-label') || b.textContent.trim()])""")
    assert ["Delete room", "Delete room"] in names
    for shown, name in names:
        assert "room this room" not in name, name
        assert name.lower().startswith(shown.lower()[:4]) or not shown.isalpha(), (shown, name)

    assert low_contrast(owner) == []
    set_theme(owner, "dark")
    owner.wait("the dark theme", lambda: owner.js("return getComputedStyle(document.documentElement).colorScheme") == "dark")
    assert low_contrast(owner) == []
    owner.screenshot("dark-members-chromium.png")
    # The system's dark, with the switch on "system".
    set_theme(owner, "system")
    owner.driver.d.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    owner.wait("the system's dark", lambda: owner.js("return getComputedStyle(document.documentElement).colorScheme") == "dark")
    assert low_contrast(owner) == []
    set_theme(owner, "light")  # the switch wins over the system
    owner.wait("the light theme", lambda: owner.js("return getComputedStyle(document.documentElement).colorScheme") == "light")
    assert owner.js("return localStorage.getItem('hush-settings')").count('"light"') == 1

    # Every control the keyboard reaches shows where the focus is (Import keys had no ring).
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    owner.js("document.activeElement.blur(); document.getElementById('room-list').querySelector('button').focus()")
    seen = {}
    for _ in range(40):
        ActionChains(owner.driver.d).send_keys(Keys.TAB).perform()
        focused = owner.js("""const e = document.activeElement, c = getComputedStyle(e);
            return e === document.body ? null : [e.id || e.textContent.trim().slice(0, 20), c.outlineStyle, c.outlineWidth]""")
        if focused:  # past the last control the focus rests on the page itself
            seen[focused[0]] = focused[1:]
    assert "import-open" in seen and "export-button" in seen and "theme-select" in seen, seen
    assert {k: v for k, v in seen.items() if v[0] == "none" or v[1] == "0px"} == {}

    # Focus after unlock with rooms: the first room.
    owner.open(server)
    owner.unlock("owner-password-1")
    assert owner.js("return document.activeElement.dataset.testid") == "room-item"


def test_phone_layout_members_panel_and_join_buttons(server, people):
    owner, member = owner_with_member(server, people, owner_size=(390, 844))
    # The owner's header keeps the room name readable: the actions wrap below it.
    name = owner.js("const h = document.getElementById('room-name'); return [h.scrollWidth, h.clientWidth]")
    assert name[0] <= name[1], name
    owner.screenshot("phone-room-chromium.png")

    owner.click("#members-button")
    owner.wait("the panel", lambda: owner.visible("members-panel"))
    overlap = owner.js("""const a = document.getElementById('members-panel').getBoundingClientRect();
        const b = document.getElementById('members-button').getBoundingClientRect();
        return !(a.bottom <= b.top || b.bottom <= a.top || a.right <= b.left || b.right <= a.left)""")
    assert overlap is False
    assert owner.visible("close-members")
    owner.screenshot("phone-members-chromium.png")
    owner.click("#close-members")
    owner.wait("the panel closed", lambda: not owner.visible("members-panel"))
    assert owner.js("return document.activeElement.id") == "members-button"

    owner.click("#members-button")
    owner.wait("the panel", lambda: owner.visible("members-panel"))
    owner.js("document.activeElement.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape', bubbles: true}))")
    owner.wait("the panel closed by Esc", lambda: not owner.visible("members-panel"))

    owner.click("#members-button")
    owner.wait("the panel", lambda: owner.visible("members-panel"))
    owner.driver.find("#room-name").click()  # a tap outside the panel
    owner.wait("the panel closed by a tap outside", lambda: not owner.visible("members-panel"))

    # No keyboard advice on a touch screen when copying falls back to selecting.
    owner.js("""navigator.clipboard.writeText = () => Promise.reject(new Error('no'));
        const real = window.matchMedia.bind(window);
        window.matchMedia = (q) => q === '(pointer: coarse)' ? { matches: true } : real(q);""")
    owner.click("#invite-button")
    owner.wait("the copy fallback", lambda: "Selected" in owner.js("return document.getElementById('invite-status').textContent"))
    assert "Ctrl" not in owner.js("return document.getElementById('invite-status').textContent")

    # The join panel's buttons line up.
    link = owner.js("return document.getElementById('invite-link').value")
    phone = people("phone", size=(390, 844))
    phone.open(link)
    phone.unlock("phone-password-1")
    phone.wait("the join panel", lambda: phone.visible("join-panel"))
    tops = phone.js("return ['join-button', 'join-cancel'].map(id => document.getElementById(id).getBoundingClientRect().top)")
    assert tops[0] == tops[1], tops
    set_theme(phone, "dark")
    phone.wait("the dark theme", lambda: phone.js("return getComputedStyle(document.documentElement).colorScheme") == "dark")
    assert low_contrast(phone) == []
    phone.screenshot("phone-join-dark-chromium.png")


def test_firefox_persistent_storage_line_answers(server, people):
    """Firefox asks the person and may never answer persist(): the line says so at once."""
    ann = people("ann", kind="firefox")
    ann.open(server)
    ann.unlock("ann-password-1")
    state = ann.wait("the storage line", lambda: ann.js("return document.getElementById('persist-state').dataset.state"))
    assert state in ("granted", "asked", "denied", "unavailable")
    assert "waiting" not in ann.js("return document.getElementById('persist-state').textContent")
    assert ann.js("return document.getElementById('connection-state').textContent") == "no rooms yet"

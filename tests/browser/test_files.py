"""Files and images (docs/PROTOCOL.md §4.9, §6.8) between Chromium and Firefox, against a real
`hush serve`: a 10 MiB file dropped onto the conversation in one browser is saved byte for byte
in the other, and back; a picture attached with the button shows its preview in the other
browser at once and the picture itself once fetched and checked, and a pasted one shows too; a
chunk altered or missing on the server refuses the whole file with a clear error, and nothing
is saved."""
import base64
import hashlib
import sqlite3
import tempfile
from pathlib import Path

from conftest import png

MIB = 1024 * 1024


def content(size):
    """The test files' bytes: byte i is i % 251 (as in Tests/Fixtures/files.json)."""
    return (bytes(range(251)) * (size // 251 + 1))[:size]


# Builds the same bytes in the page (so that 10 MiB never cross the driver) and drops them on
# the conversation as a File, as a person dragging it from the desktop would.
DROP = """const [name, type, size] = arguments;
    const bytes = new Uint8Array(size);
    for (let i = 0; i < size; i++) bytes[i] = i % 251;
    const transfer = new DataTransfer();
    transfer.items.add(new File([bytes], name, { type }));
    document.getElementById('room-pane').dispatchEvent(new DragEvent('drop', { dataTransfer: transfer, bubbles: true, cancelable: true }));"""

# Saving goes through a Blob URL and <a download>: the page's Blobs and the link's name are
# recorded, and the click itself kept from opening a download dialog.
CAPTURE_SAVES = """if (!window.hushSaved) {
      window.hushSaved = [];
      const create = URL.createObjectURL.bind(URL);
      URL.createObjectURL = (blob) => { const url = create(blob); window.hushSaved.push({ blob, url, name: null }); return url; };
      HTMLAnchorElement.prototype.click = function () {
        const saved = window.hushSaved.find((s) => s.url === this.href);
        if (saved && this.download) saved.name = this.download;
      };
    }"""

SAVED = """return (async () => {
      const saved = (window.hushSaved ?? []).filter((s) => s.name !== null);
      return Promise.all(saved.map(async (s) => {
        const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', await s.blob.arrayBuffer()));
        return { name: s.name, size: s.blob.size, sha256: [...digest].map((b) => b.toString(16).padStart(2, '0')).join('') };
      }));
    })()"""


def save(person, name):
    """Clicks the file's Download button and waits for what the page saved under that name."""
    person.js(CAPTURE_SAVES)
    person.wait(f"the Download button of {name}", lambda: (person.file_named(name) or {}).get("download"))
    person.js("""[...document.querySelectorAll('[data-testid=file]')]
        .find(f => f.querySelector('[data-testid=file-name]').textContent === arguments[0])
        .querySelector('[data-testid=file-download]').click()""", name)
    return person.wait(f"{name} saved", lambda: next((s for s in person.js(SAVED) if s["name"] == name), None), timeout=120)


def room_of_two(server, people, owner_kind, member_kind, name):
    owner = people("owner", kind=owner_kind)
    owner.open(server)
    owner.unlock("owner-password-1")
    owner.create_room(name)
    member = people("member", kind=member_kind)
    member.open(owner.invite())
    member.unlock("member-password-1")
    member.join(name)
    member.wait_joined()
    owner.send("files follow")
    member.wait_text("files follow")
    return owner, member


def test_ten_mib_round_trip_between_chromium_and_firefox(server, people):
    alice, bob = room_of_two(server, people, "chrome", "firefox", "Files")

    size = 10 * MIB
    alice.js(DROP, "big.bin", "application/x-test", size)
    alice.wait("big.bin uploaded and sent", lambda: (alice.file_named("big.bin") or {}).get("status") == "sent", timeout=180)
    bob.wait("big.bin in Firefox", lambda: bob.file_named("big.bin"))
    saved = save(bob, "big.bin")
    assert saved == {"name": "big.bin", "size": size, "sha256": hashlib.sha256(content(size)).hexdigest()}

    # And back, a size that is no multiple of the chunk size, with a name that must stay text
    # (its "/" becomes "_": a file name is never a path).
    size = 3 * MIB + 12345
    bob.js(DROP, "<b>report</b> 2026.pdf", "application/pdf", size)
    name = "<b>report<_b> 2026.pdf"
    bob.wait("the reply sent", lambda: (bob.file_named(name) or {}).get("status") == "sent", timeout=120)
    alice.wait("the reply in Chromium", lambda: alice.file_named(name))
    assert alice.js("return document.querySelectorAll('#messages b').length") == 0, "a file name is text, never markup"
    saved = save(alice, name)
    assert saved == {"name": name, "size": size, "sha256": hashlib.sha256(content(size)).hexdigest()}


def test_picture_preview_then_picture_in_the_other_browser(server, people):
    alice, bob = room_of_two(server, people, "chrome", "firefox", "Pictures")

    # Over 10 MiB (stored, not compressed): not fetched by itself, so the preview stays in view.
    picture = png(2100, 1800, level=0)
    assert len(picture) > 10 * MIB
    path = Path(tempfile.mkdtemp(prefix="hush-files-")) / "landscape.png"
    path.write_bytes(picture)
    alice.attach(path)
    alice.wait("the picture sent", lambda: (alice.file_named("landscape.png") or {}).get("status") == "sent", timeout=180)
    alice.wait("the sender's own picture", lambda: alice.file_named("landscape.png")["image"] == 2100)

    shown = bob.wait("the preview", lambda: (lambda f: f if f and f["preview"] else None)(bob.file_named("landscape.png")))
    assert shown["preview"] <= 320 and shown["image"] is None and shown["download"]
    bob.screenshot("files-preview-firefox.png")
    saved = save(bob, "landscape.png")
    assert saved["sha256"] == hashlib.sha256(picture).hexdigest()
    bob.wait("the checked picture", lambda: (bob.file_named("landscape.png") or {}).get("image") == 2100)
    bob.screenshot("files-picture-firefox.png")

    # A picture pasted into the message box goes out too; under 10 MiB it is fetched by itself.
    alice.js("""const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], 'pasted.png', { type: 'image/png' }));
        document.getElementById('composer-input').dispatchEvent(
          new ClipboardEvent('paste', { clipboardData: transfer, bubbles: true, cancelable: true }));""",
             base64.b64encode(png(64, 40)).decode())
    bob.wait("the pasted picture, checked and shown", lambda: (bob.file_named("pasted.png") or {}).get("image") == 64)


def test_attach_button_in_firefox(server, people):
    """The attach button's file input, chosen in Firefox (the test above chooses in Chromium)."""
    owner, member = room_of_two(server, people, "firefox", "chrome", "Attach")
    picture = png(300, 200)
    path = Path(tempfile.mkdtemp(prefix="hush-files-")) / "chosen.png"
    path.write_bytes(picture)
    owner.attach(path)
    owner.wait("the picture sent", lambda: (owner.file_named("chosen.png") or {}).get("status") == "sent", timeout=120)
    member.wait("the picture, checked and shown in Chromium", lambda: (member.file_named("chosen.png") or {}).get("image") == 300)
    saved = save(member, "chosen.png")
    assert saved["sha256"] == hashlib.sha256(picture).hexdigest()


def test_altered_or_missing_chunk_is_refused(own_server, people):
    alice, bob = room_of_two(own_server.url, people, "chrome", "chrome", "Broken")
    alice.js(DROP, "three.bin", "application/octet-stream", 2 * 65536 + 5)
    alice.wait("three.bin sent", lambda: (alice.file_named("three.bin") or {}).get("status") == "sent", timeout=60)
    alice.js(DROP, "two.bin", "application/octet-stream", 65536 + 5)
    alice.wait("two.bin sent", lambda: (alice.file_named("two.bin") or {}).get("status") == "sent", timeout=60)
    bob.wait("both files listed", lambda: bob.file_named("three.bin") and bob.file_named("two.bin"))

    # On the server's disk: one byte of three.bin's second chunk flipped, two.bin's second chunk gone.
    own_server.stop()
    with sqlite3.connect(Path(own_server.data) / "hush.sqlite") as db:
        ids = {chunks: file for file, chunks in db.execute("SELECT id, chunks FROM files")}
        data = bytearray(db.execute("SELECT data FROM file_chunks WHERE file = ? AND idx = 1", (ids[3],)).fetchone()[0])
        data[100] ^= 1
        db.execute("UPDATE file_chunks SET data = ? WHERE file = ? AND idx = 1", (bytes(data), ids[3]))
        db.execute("DELETE FROM file_chunks WHERE file = ? AND idx = 1", (ids[2],))
    own_server.start()
    bob.wait("back online", lambda: bob.js("return document.getElementById('connection-state').dataset.state") == "online", timeout=60)

    bob.js(CAPTURE_SAVES)
    for name, reason in (("three.bin", "part 2 of 3 does not open"), ("two.bin", "part 2 of 2 is not on the server")):
        bob.js("""[...document.querySelectorAll('[data-testid=file]')]
            .find(f => f.querySelector('[data-testid=file-name]').textContent === arguments[0])
            .querySelector('[data-testid=file-download]').click()""", name)
        error = bob.wait(f"the refusal of {name}", lambda: (bob.file_named(name) or {}).get("error"), timeout=60)
        assert reason in error and "Nothing was saved" in error, error
    assert bob.js(SAVED) == [], "nothing is saved from a file that fails a check"
    bob.screenshot("files-refused-chromium.png")

"""A browser (headless Chromium) and the terminal client `hush chat` (the same binary as the
server, HUSH_BIN, with its own key store in a temp folder) in one room, talking both ways:
first the browser owns the room and `hush chat join` joins it; then `hush chat new` owns it
(its `read --follow` admits the joiner) and the browser joins. Fingerprints are checked on
both sides: `read --json` names the browser's key, the browser shows the terminal's key. Files go both
ways: a dropped file saved by `hush chat save`, `hush chat send --file` saved by the browser."""
import json
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO, WAIT_S


class Follower:
    """A long-running `hush chat` process whose stdout is read line by line on a thread."""

    def __init__(self, args, env, stderr_path):
        self.args = args
        self.stderr_path = stderr_path
        self.lines = []
        self._queue = queue.Queue()
        with open(stderr_path, "w") as stderr:
            self.proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=stderr, text=True)
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def events(self):
        return [json.loads(line) for line in self.lines]

    def wait_event(self, what, predicate, timeout=WAIT_S):
        """The first JSON line (seen before or arriving before the deadline) that satisfies predicate."""
        for event in self.events():
            if predicate(event):
                return event
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                line = self._queue.get(timeout=max(0.05, deadline - time.time()))
            except queue.Empty:
                break
            if line is None:
                raise AssertionError(f"{' '.join(self.args[1:])} exited ({self.proc.wait()}) before {what}; "
                                     f"stdout: {self.lines}; stderr: {Path(self.stderr_path).read_text()}")
            self.lines.append(line)
            event = json.loads(line)
            if predicate(event):
                return event
        raise AssertionError(f"timed out waiting for {what}; stdout: {self.lines}; "
                             f"stderr: {Path(self.stderr_path).read_text()}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: the follower saves its key store and exits
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Terminal:
    """One person on `hush chat`, with a key store of their own."""

    def __init__(self, name, folder):
        self.name = name
        self.folder = folder
        self.binary = os.environ.get("HUSH_BIN", str(REPO / ".build/debug/hush"))
        self.env = dict(os.environ, HUSH_STORE=str(Path(folder, "keystore.hush")),
                        HUSH_PASSPHRASE=f"{name}'s passphrase")
        self.followers = []

    def run(self, *args, timeout=60):
        """Runs `hush ARGS` to completion and returns its stdout; fails the test on a nonzero status."""
        result = subprocess.run([self.binary, *args], env=self.env, stdin=subprocess.DEVNULL, capture_output=True,
                                text=True, timeout=timeout)
        assert result.returncode == 0, f"hush {' '.join(args)} failed ({result.returncode}): {result.stderr}{result.stdout}"
        return result.stdout

    def follow(self, room):
        """`hush chat read ROOM --follow --json` in the background."""
        follower = Follower([self.binary, "chat", "read", room, "--follow", "--json"], self.env,
                            str(Path(self.folder, f"follow-{len(self.followers)}.stderr")))
        self.followers.append(follower)
        return follower

    def read_all(self, room):
        """`hush chat read ROOM --json --all`, one shot: every readable event."""
        return [json.loads(line) for line in self.run("chat", "read", room, "--json", "--all").splitlines() if line]


@pytest.fixture
def terminal():
    """terminal(name) → Terminal; its background processes are stopped by PID afterwards."""
    made = []

    def make(name):
        person = Terminal(name, tempfile.mkdtemp(prefix=f"hush-cli-{name}-"))
        made.append(person)
        return person

    yield make
    for person in made:
        for follower in person.followers:
            follower.stop()
        shutil.rmtree(person.folder, ignore_errors=True)


def own_fingerprint(output):
    match = re.search(r"^your fingerprint in this room: ([0-9a-f]{4}(?: [0-9a-f]{4}){4})$", output, re.M)
    assert match, output
    return match.group(1)


def short(fp):
    """What the browser shows beside a message: the first two groups."""
    return " ".join(fp.split(" ")[:2])


def is_message(text):
    return lambda event: event.get("type") == "message" and event.get("text") == text


def test_browser_owns_the_room_and_hush_chat_joins(server, people, terminal):
    alice = people("alice")
    alice.open(server)
    alice.unlock("alice-password-1")
    alice.create_room("Bridge")
    alice_fp = alice.my_fingerprint()
    link = alice.invite()

    dave = terminal("dave")
    joined = dave.run("chat", "join", link, "--name", "bridge", "--timeout", "45")
    assert re.search(rf"^joined room bridge \(id \S+\); owner {alice_fp}$", joined, re.M), joined
    dave_fp = own_fingerprint(joined)
    assert dave_fp != alice_fp
    # The owner's page admitted the terminal's key: it is listed with its full fingerprint.
    alice.wait("the terminal in the member list", lambda: {(m["role"], m["fp"]) for m in alice.members()} == {
        ("You (owner)", alice_fp), ("Member", dave_fp)})
    alice.wait("the join line", lambda: f"A new member joined: {dave_fp}" in " ".join(alice.system_lines()))
    listed = json.loads(dave.run("chat", "list", "--json"))
    assert [(r["name"], r["role"], r["status"], r["members"]) for r in listed] == [("bridge", "member", "active", 2)]

    # Browser → terminal, live.
    follower = dave.follow("bridge")
    alice.send("hello from the browser")
    seen = follower.wait_event("the browser's message", is_message("hello from the browser"))
    assert seen["from"] == alice_fp

    # Terminal → browser.
    dave.run("chat", "send", "bridge", "hello", "from", "the", "terminal")
    alice.wait_text("hello from the terminal")
    theirs = [m for m in alice.messages() if m["text"] == "hello from the terminal"]
    assert len(theirs) == 1
    assert not theirs[0]["own"] and theirs[0]["sender"] == "Member"
    assert theirs[0]["fp"] == short(dave_fp) and theirs[0]["fullFp"] == dave_fp
    mine = [m for m in alice.messages() if m["text"] == "hello from the browser"][0]
    assert mine["own"] and mine["sender"] == "You" and mine["fullFp"] == alice_fp
    follower.wait_event("its own message echoed", is_message("hello from the terminal"))

    # A second browser message after the terminal spoke, and the one-shot `read --json --all`.
    alice.send("and one more")
    follower.wait_event("the second browser message", is_message("and one more"))
    history = [(e["text"], e["from"]) for e in dave.read_all("bridge") if e["type"] == "message"]
    assert history == [("hello from the browser", alice_fp), ("hello from the terminal", dave_fp),
                       ("and one more", alice_fp)]
    alice.click("#close-invite")
    alice.screenshot("chat-chromium-with-cli-member.png")


def test_hush_chat_owns_the_room_and_the_browser_joins(server, people, terminal):
    olga = terminal("olga")
    created = olga.run("chat", "new", "desk", "--server", server)
    olga_fp = own_fingerprint(created)
    links = [line for line in created.splitlines() if line.startswith("http://")]
    assert len(links) == 1 and links[0].startswith(server + "/#"), created
    # The owner's client must run to admit joiners: a follower, as a person would leave open.
    follower = olga.follow("desk")

    bob = people("bob")
    bob.open(links[0])
    bob.unlock("bob-password-1")
    server_fp = re.search(r"^server key fingerprint: (.+?) \(", created, re.M).group(1)
    assert bob.js("return document.getElementById('join-server-fp').textContent") == server_fp
    bob.join("From the terminal")
    bob.wait_joined()
    bob_fp = bob.my_fingerprint()
    bob.wait("the owner and me in the member list", lambda: {(m["role"], m["fp"]) for m in bob.members()} == {
        ("Owner", olga_fp), ("You", bob_fp)})
    follower.wait_event("the browser's key admitted",
                        lambda e: e.get("type") == "member_joined" and e.get("from") == bob_fp)

    # Browser → terminal.
    bob.send("hi from the browser")
    seen = follower.wait_event("the browser's message", is_message("hi from the browser"))
    assert seen["from"] == bob_fp

    # Terminal → browser (a separate `hush chat send` next to the running follower).
    olga.run("chat", "send", "desk", "hi from the terminal")
    bob.wait_text("hi from the terminal")
    theirs = [m for m in bob.messages() if m["text"] == "hi from the terminal"]
    assert len(theirs) == 1
    assert not theirs[0]["own"] and theirs[0]["sender"] == "Owner"
    assert theirs[0]["fp"] == short(olga_fp) and theirs[0]["fullFp"] == olga_fp
    follower.wait_event("its own message echoed", lambda e: is_message("hi from the terminal")(e) and e["from"] == olga_fp)

    # Once more each way, in order.
    bob.send("browser again")
    follower.wait_event("the second browser message", is_message("browser again"))
    olga.run("chat", "send", "desk", "terminal again")
    bob.wait_text("terminal again")
    assert [m["text"] for m in bob.messages()] == [
        "hi from the browser", "hi from the terminal", "browser again", "terminal again"]
    bob.click("#members-button")
    bob.wait("the members panel", lambda: bob.visible("members-panel"))
    bob.screenshot("chat-chromium-with-cli-owner.png")


def test_files_between_the_browser_and_hush_chat(server, people, terminal):
    """A file each way (docs/PROTOCOL.md §6.8): the browser drops one, `hush chat save` writes it
    byte for byte; `hush chat send --file` sends one, the browser saves it byte for byte."""
    alice = people("alice")
    alice.open(server)
    alice.unlock("alice-password-1")
    alice.create_room("Files")
    dave = terminal("dave")
    dave.run("chat", "join", alice.invite(), "--name", "files", "--timeout", "45")
    alice.wait("the terminal admitted", lambda: len(alice.members()) == 2)
    alice.click("#close-invite")

    size = 3 * 65536 + 17
    expected = (bytes(range(251)) * (size // 251 + 1))[:size]
    alice.js("""const [size] = arguments;
        const bytes = new Uint8Array(size);
        for (let i = 0; i < size; i++) bytes[i] = i % 251;
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], 'from browser.bin', { type: 'application/octet-stream' }));
        document.getElementById('room-pane').dispatchEvent(new DragEvent('drop', { dataTransfer: transfer, bubbles: true, cancelable: true }));""", size)
    alice.wait("the file sent", lambda: (alice.file_named("from browser.bin") or {}).get("status") == "sent", timeout=60)
    shared = next(e for e in dave.read_all("files") if e["type"] == "file")
    assert shared["file"] == {"name": "from browser.bin", "size": size, "type": "application/octet-stream"}
    out = Path(dave.folder, "saved")
    out.mkdir()
    dave.run("chat", "save", "files", str(shared["seq"]), "--out", str(out))
    assert (out / "from browser.bin").read_bytes() == expected

    sent = Path(dave.folder, "notes.txt")
    sent.write_bytes(b"from the terminal\n" * 5000)
    dave.run("chat", "send", "files", "--file", str(sent))
    alice.wait("the terminal's file", lambda: alice.file_named("notes.txt"))
    alice.js("""window.hushSaved = [];
        const create = URL.createObjectURL.bind(URL);
        URL.createObjectURL = (blob) => { const url = create(blob); window.hushSaved.push({ blob, url }); return url; };
        HTMLAnchorElement.prototype.click = function () { window.hushSavedName = this.download; };""")
    alice.js("""[...document.querySelectorAll('[data-testid=file]')]
        .find(f => f.querySelector('[data-testid=file-name]').textContent === 'notes.txt')
        .querySelector('[data-testid=file-download]').click()""")
    alice.wait("the file saved", lambda: alice.js("return window.hushSavedName") == "notes.txt")
    saved = alice.js("return window.hushSaved.at(-1).blob.text()")
    assert saved == sent.read_text()

"""Code from elsewhere (docs/CODE_TRUST.md, item 5), in Chromium and Firefox: `hush web export`
writes the signed release and a relay.json naming the relay; `python3 -m http.server` serves
that folder on another port; a person on that page makes a room and an invite, and a person on
the relay's own page joins through it (the invite names the relay) and they chat. The same copy
served from an origin the relay does not allow cannot reach it, and says so."""
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import HushServer, end_process


class StaticServer:
    """`python3 -m http.server` on a free port, serving `folder` (files may be added later)."""

    def __init__(self, folder):
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", str(folder)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()  # "Serving HTTP on 127.0.0.1 port N (...) ...", or EOF if it failed
        match = re.search(r"port (\d+)", line)
        if not match:
            self.stop()
            raise RuntimeError(f"http.server did not start: {line!r}")
        self.origin = f"http://127.0.0.1:{match.group(1)}"

    def stop(self):
        end_process(self.proc)


@pytest.fixture
def exported():
    """An empty folder served statically, a relay that allows that origin, then the export into
    the folder naming the relay. Yields (page origin, relay URL, folder)."""
    folder = Path(tempfile.mkdtemp(prefix="hush-exported-"))
    static = StaticServer(folder)
    relay = HushServer(args=["--allow-origin", static.origin])
    try:
        relay_url = relay.start().rstrip("/")
        subprocess.run([relay.binary, "web", "export", str(folder), "--relay", relay_url],
                       check=True, capture_output=True, timeout=60)
        yield static.origin, relay_url, folder
    finally:
        relay.remove()
        static.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("kind", ["chrome", "firefox"])
def test_the_exported_client_chats_with_the_relays_own_page(exported, people, kind):
    page, relay, _ = exported
    alice = people("alice", kind)
    alice.open(page + "/")
    alice.unlock("alice-password-1")
    alice.create_room("Elsewhere")
    link = alice.invite()
    assert link.startswith(page + "/#")

    # The link names the relay, so the relay's own page takes it as well as the exported one.
    bob = people("bob", kind)
    bob.open(relay + "/#" + link.split("#", 1)[1])
    bob.unlock("bob-password-1")
    bob.join("Elsewhere")
    bob.wait_joined()
    bob.send("from the relay's page")
    alice.wait_text("from the relay's page")
    alice.send("from the exported page")
    bob.wait_text("from the exported page")
    # The page served from the other origin runs a signed release pinned by its own worker.
    alice.wait("the pinned release", lambda: "signed, pinned" in alice.js("return document.getElementById('release-state').textContent"))


def test_a_copy_on_an_origin_the_relay_does_not_allow_cannot_reach_it(exported, people):
    _, relay, folder = exported
    stranger = StaticServer(folder)
    try:
        person = people("carol")
        person.driver.get(stranger.origin + "/")
        text = person.wait("the refusal", lambda: "cannot be reached from this page" in (person.js("return document.body.textContent") or "")
                           and person.js("return document.body.textContent"))
        assert relay in text and stranger.origin in text
        assert person.js("return indexedDB.databases().then((all) => all.length)") == 0
    finally:
        stranger.stop()

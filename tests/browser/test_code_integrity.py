"""Subresource Integrity in Chromium and Firefox: a module changed on the server while the page
is not (what a tampering server or a proxy would do) is refused by the browser itself through
the page's import map; the page says so in plain words and the key store is never opened."""
import shutil
import tempfile
from pathlib import Path

import pytest

from conftest import REPO, HushServer


@pytest.fixture
def tampered_server():
    """`hush serve` of a copy of web/ with one byte added to a module the app imports."""
    folder = Path(tempfile.mkdtemp(prefix="hush-tampered-web-"))
    web = folder / "web"
    shutil.copytree(REPO / "web", web)
    module = web / "themis" / "bytes.mjs"
    module.write_bytes(module.read_bytes() + b"\n")  # still valid JavaScript: only the hash tells
    served = HushServer(web)
    try:
        yield served.start()
    finally:
        served.remove()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("kind", ["chrome", "firefox"])
def test_a_changed_module_is_refused(tampered_server, people, kind):
    person = people("alice", kind)
    person.driver.get(tampered_server)
    person.wait("the code integrity warning", lambda: person.visible("code-error"))
    assert "your keys stay locked" in person.js("return document.getElementById('code-error').textContent")
    assert not person.visible("lock-view")
    # The app never ran: no lock screen set up, no key store opened.
    assert not person.js("return document.getElementById('lock-form').dataset.mode")
    assert person.js("return indexedDB.databases().then((all) => all.length)") == 0
    if kind == "chrome":
        assert any("integrity" in line and "bytes.mjs" in line for line in person.driver.console()), person.driver.console()

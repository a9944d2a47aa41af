"""Code pinning by the service worker (web/sw.mjs) in Chromium and Firefox. The first visit pins
the signed release; then the same server (same origin, same browser profile) serves one changed
byte in one module, then a newer manifest without a valid signature: each time the page shows
the blocking warning and the lock screen never comes; the same for a changed worker script;
then a correctly signed newer release with a new worker, which the worker pins, and the key
store unlocks. Releases here are signed with a test key
made for the test (the real release key is offline)."""
import os
import shutil
import subprocess

import pytest

from conftest import REPO, HushServer

# Pinning downloads and checks every file of a release in the worker (and a new worker installs
# first): on a loaded machine that took longer than the default wait, so these waits are longer.
PIN_WAIT_S = 120


def make_release(folder, name, keys, release, base=REPO / "web", change=None, sign=True):
    """A copy of `base` as release `release` under the test key, changed by `change` first."""
    web = folder / name
    shutil.copytree(base, web)
    if change:
        change(web)
    subprocess.run([str(REPO / "scripts/web-manifest"), "--web", str(web), "--release-key", str(keys / "release.pub"),
                    "--release", str(release)], check=True, capture_output=True)
    if sign:
        subprocess.run(["node", str(REPO / "tests/browser/sign_release.mjs"), str(keys / "release.priv"),
                        str(web / "manifest.json"), str(web / "manifest.sig")], check=True)
    return web


def append_to(relative, text):
    def change(web):
        path = web / relative
        path.write_bytes(path.read_bytes() + text)
    return change


def release_state(person):
    return person.js("return document.getElementById('release-state').textContent")


def serve(served, web):
    served.stop()
    served.web = web
    return served.start()


def expect_refused(person, url, reason):
    person.driver.get(url)
    person.wait("the release warning", lambda: person.visible("release-error"), timeout=PIN_WAIT_S)
    assert "not a signed Hush release. Your keys stay locked." in person.js(
        "return document.getElementById('release-error').textContent")
    assert reason in person.js("return document.getElementById('release-error-reason').textContent")
    assert not person.visible("lock-view") and not person.visible("app-view")
    assert not person.js("return document.getElementById('lock-form').dataset.mode")


@pytest.mark.parametrize("kind", ["chrome", "firefox"])
def test_code_is_pinned_after_the_first_visit(people, kind, tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    subprocess.run([os.environ.get("HUSH_BIN", str(REPO / ".build/debug/hush")), "keygen", "--out", str(keys / "release")],
                   check=True, capture_output=True)
    first = make_release(tmp_path, "v1", keys, 1)
    served = HushServer(first)
    try:
        url = served.start()
        person = people("alice", kind)
        person.open(url)
        person.wait("the pinned release", lambda: release_state(person).startswith("Hush web release 1, signed, pinned"),
                    timeout=PIN_WAIT_S)
        person.unlock("alice-password-1")

        # One changed byte in one module, the manifest and its signature as they were.
        tampered = tmp_path / "tampered"
        shutil.copytree(first, tampered)
        append_to("themis/bytes.mjs", b"\n")(tampered)
        expect_refused(person, serve(served, tampered), "/themis/bytes.mjs")

        # A changed worker script, the manifest as it was: the browser installs it (no worker can
        # stop that), but the pinned page reports it and stays locked.
        new_worker = tmp_path / "new-worker"
        shutil.copytree(first, new_worker)
        append_to("sw.mjs", b"\n")(new_worker)
        expect_refused(person, serve(served, new_worker), "/sw.mjs")

        # A newer manifest whose signature is the old release's.
        unsigned = make_release(tmp_path, "v2-unsigned", keys, 2, base=first, change=append_to("app/ui.mjs", b"\n"), sign=False)
        expect_refused(person, serve(served, unsigned), "signature")

        # A newer release, signed, with a new worker script too: pinned, and the keys unlock.
        def change_ui_and_worker(web):
            append_to("app/ui.mjs", b"\n")(web)
            append_to("sw.mjs", b"\n// release 2\n")(web)
        second = make_release(tmp_path, "v2", keys, 2, base=first, change=change_ui_and_worker)
        person.driver.get(serve(served, second))
        person.wait("the newer pinned release and the lock screen", lambda: release_state(person).startswith(
            "Hush web release 2, signed, pinned") and person.js("return document.getElementById('lock-form').dataset.mode") == "unlock",
            timeout=PIN_WAIT_S)
        person.unlock("alice-password-1")
        assert not person.visible("release-error")
    finally:
        served.remove()

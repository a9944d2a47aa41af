"""Browser end-to-end fixtures: a real `hush serve` (one per module, or one per test that can be
stopped and started again on the same port and data folder), and people, each a browser with
its own profile (Chromium through chromedriver, Firefox ESR through Marionette), possibly with
several tabs, driven through the page's stable ids and data-testid attributes."""
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import zlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
WAIT_S = 30
UNLOCK_WAIT_S = 90


def png(width, height, level=6):
    """A PNG picture: a sky gradient over a green hill, with a sun (no imaging library needed)."""
    rows = []
    for y in range(height):
        row = bytearray(b"\x00" + bytes(3 * width))
        sky = y < height * 2 // 3
        for x in range(width):
            if sky:
                dx, dy = x - width * 3 // 4, y - height // 4
                sun = dx * dx + dy * dy < (height // 8) ** 2
                r, g, b = (250, 210, 80) if sun else (90 + 100 * y // height, 150 + 80 * y // height, 235)
            else:
                r, g, b = 50 + 40 * x // width, 140 - 40 * (y - height * 2 // 3) // height, 60
            row[1 + 3 * x:4 + 3 * x] = bytes((r, g, b))
        rows.append(bytes(row))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(rows), level)) + chunk(b"IEND", b"")


def end_process(proc):
    """SIGTERM, then SIGKILL if it is still there after 10 s; returns once it has exited."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class HushServer:
    """`hush serve` with a fresh data folder; the first start picks a free port, later starts reuse
    it (and the data), as a restarted server would. Its output goes to a log file."""

    def __init__(self, web=REPO / "web", args=()):
        self.web = web
        self.args = list(args)
        self.binary = os.environ.get("HUSH_BIN", str(REPO / ".build/debug/hush"))
        self.data = tempfile.mkdtemp(prefix="hush-browser-data-")
        self.port = 0
        self.url = None
        self.proc = None
        self.starts = 0

    def start(self):
        self.starts += 1
        log = Path(self.data) / f"serve-{self.starts}.log"
        with open(log, "w") as out:
            self.proc = subprocess.Popen(
                [self.binary, "serve", "--host", "127.0.0.1", "--port", str(self.port), "--data", self.data,
                 "--web-root", str(self.web), *self.args], stdout=out, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline and self.proc.poll() is None:
            match = re.search(r"Hush is listening on (http://\S+)", log.read_text())
            if match:
                self.url = match.group(1)
                self.port = int(self.url.rsplit(":", 1)[1].rstrip("/"))
                return self.url
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"hush serve did not start: {log.read_text()}")

    def stop(self):
        if self.proc:
            end_process(self.proc)

    def remove(self):
        self.stop()
        shutil.rmtree(self.data, ignore_errors=True)


@pytest.fixture(scope="module")
def server():
    """One `hush serve` for the module; yields its base URL."""
    served = HushServer()
    try:
        yield served.start()
    finally:
        served.remove()


@pytest.fixture
def own_server():
    """A `hush serve` of this test alone, which it may stop and start again (same port and data)."""
    served = HushServer()
    served.start()
    try:
        yield served
    finally:
        served.remove()


class Person:
    """One person in one browser. `driver` adapts Selenium or Marionette to: get, js, find, shot, quit."""

    def __init__(self, name, driver, handle=None):
        self.name = name
        self.base = driver
        self.handle = handle or driver.current_handle()

    @property
    def driver(self):
        """The browser, showing this person's tab."""
        self.base.focus(self.handle)
        return self.base

    def tab(self, name):
        """A second tab of the same browser and profile (shares IndexedDB, locks and broadcasts)."""
        return Person(name, self.base, self.base.new_tab())

    # -- low level
    def js(self, script, *args):
        return self.driver.js(script, *args)

    def wait(self, what, predicate, timeout=WAIT_S):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                value = predicate()
                if value:
                    return value
            except Exception:  # the page may be between renders or reloading
                pass
            time.sleep(0.15)
        raise AssertionError(f"{self.name}: timed out waiting for {what}; page state: {self.debug()}")

    def debug(self):
        try:
            return self.js("""return {notice: document.getElementById('room-notice')?.textContent,
                lockError: document.getElementById('lock-error')?.textContent,
                joinError: document.getElementById('join-error')?.textContent,
                conn: document.getElementById('connection-state')?.textContent,
                toast: document.getElementById('toast')?.textContent,
                lines: [...document.querySelectorAll('#messages li')].map(e => e.textContent)}""")
        except Exception as error:  # noqa: BLE001 - diagnostics only
            return repr(error)

    def visible(self, element_id):
        return self.js("const e = document.getElementById(arguments[0]); return !!e && !e.closest('[hidden]')", element_id)

    def type(self, element_id, text):
        element = self.driver.find(f"#{element_id}")
        element.clear()
        element.send_keys(text)

    def click(self, css):
        self.wait(f"{css} to be enabled", lambda: self.js(
            "const e = document.querySelector(arguments[0]); return !!e && !e.disabled && !e.closest('[hidden]')", css))
        self.driver.find(css).click()

    # -- the app
    def open(self, url):
        self.driver.get(url)
        self.wait("the lock screen", lambda: self.js("return document.getElementById('lock-form').dataset.mode"))

    def unlock(self, password, expect_error=False):
        self.wait("the password field", lambda: self.visible("password"))
        mode = self.js("return document.getElementById('lock-form').dataset.mode")
        self.type("password", password)
        if mode == "create":
            self.type("password-confirm", password)
        self.click("#unlock-button")
        if expect_error:
            return self.wait("the lock error", lambda: self.visible("lock-error") and self.js(
                "return document.getElementById('lock-error').textContent"))
        # 600,000 PBKDF2 rounds in the page (and the rooms starting) on a loaded machine.
        self.wait("the unlocked app", lambda: self.visible("app-view"), timeout=UNLOCK_WAIT_S)
        return None

    def create_room(self, name, rotate_every=None):
        self.type("new-room-name", name)
        if rotate_every is not None:
            self.js("document.querySelector('#new-room-form details').open = true")
            self.type("new-room-rotate", str(rotate_every))
        self.click("#create-room-button")
        self.wait("the new room", lambda: self.visible("room-pane") and self.js(
            "return document.getElementById('room-name').textContent") == name)
        self.wait("a connected room", lambda: self.js(
            "return document.getElementById('connection-state').dataset.state") == "online")

    def invite(self):
        self.js("document.getElementById('invite-link').value = ''")
        self.click("#invite-button")
        return self.wait("an invite link", lambda: self.js("return document.getElementById('invite-link').value"))

    def join(self, name):
        self.wait("the server key check", lambda: self.js("return document.getElementById('join-check').dataset.ok"))
        self.type("join-name", name)
        self.click("#join-button")
        self.wait("the room", lambda: self.visible("room-pane"))

    def wait_joined(self):
        self.wait("the owner to admit me", lambda: self.js(
            "return !document.getElementById('composer-input').disabled"))

    def open_room(self, name):
        self.wait(f"room {name} in the list", lambda: self.js(
            "return [...document.querySelectorAll('[data-testid=room-item]')].some(e => e.querySelector('.room-item-name').textContent === arguments[0])", name))
        self.js("[...document.querySelectorAll('[data-testid=room-item]')].find(e => e.querySelector('.room-item-name').textContent === arguments[0]).click()", name)
        self.wait("the room", lambda: self.visible("room-pane"))

    def send(self, text):
        """Sends and waits until the server committed it (the message shows as sent)."""
        self.type("composer-input", text)
        self.click("#send-button")
        self.wait_sent(text)

    def wait_sent(self, text, timeout=WAIT_S):
        return self.wait(f"my message {text!r} sent", lambda: text in self.texts("sent"), timeout)

    def texts(self, status=None):
        """Message texts in timeline order; with `status` ('sent', 'pending', ...) only those."""
        return self.js("""return [...document.querySelectorAll('[data-testid=message]')]
            .filter(e => !arguments[0] || e.dataset.status === arguments[0])
            .map(e => e.querySelector('[data-testid=message-text]')?.textContent ?? null)""", status)

    def composer(self):
        return self.js("return document.getElementById('composer-input').value")

    def room_names(self):
        return self.js("return [...document.querySelectorAll('[data-testid=room-item] .room-item-name')].map(e => e.textContent)")

    def undecryptable(self):
        return self.js("return document.querySelectorAll('[data-testid=undecryptable]').length")

    def hold_lock(self, name):
        """Takes the Web Lock `name` in the page until release_lock: what needs it waits, deterministically."""
        self.js("""window.hushHeld ??= {};
            navigator.locks.request(arguments[0], () => new Promise((release) => { window.hushHeld[arguments[0]] = release; }));""", name)
        self.wait(f"the lock {name}", lambda: self.js("return Boolean(window.hushHeld?.[arguments[0]])", name))

    def release_lock(self, name):
        self.js("window.hushHeld[arguments[0]](); delete window.hushHeld[arguments[0]]", name)

    def current_room_id(self):
        return self.js("return document.querySelector('[data-testid=room-item][aria-current=true]')?.dataset.room")

    def messages(self):
        return self.js("""return [...document.querySelectorAll('[data-testid=message]')].map(e => ({
            seq: Number(e.dataset.seq), own: e.dataset.own === 'true', text: e.querySelector('.text')?.textContent ?? null,
            sender: e.querySelector('.sender').textContent, fp: e.querySelector('.fp').textContent,
            fullFp: e.querySelector('.fp').title.replace(/^Key fingerprint /, '')}))""")

    def members(self):
        """The members panel of the open room (rendered even while the panel is closed)."""
        return self.js("""return [...document.querySelectorAll('[data-testid=member]')].map(e => ({
            role: e.querySelector('.sender').textContent, fp: e.querySelector('.fp-full').textContent}))""")

    def my_fingerprint(self):
        return self.wait("my own fingerprint", lambda: next(
            (m["fp"] for m in self.members() if m["role"].startswith("You")), None))

    def wait_text(self, text):
        return self.wait(f"message {text!r}", lambda: text in self.texts())

    def system_lines(self, kind=None):
        return self.js("""return [...document.querySelectorAll('[data-testid=system]')]
            .filter(e => !arguments[0] || e.dataset.kind === arguments[0]).map(e => e.textContent)""", kind)

    def attach(self, path):
        """Chooses a file through the attach button's file input, as the picker the button opens
        would. The input is hidden behind the button; Firefox's driver types only into an input
        it can see, so it is shown for the moment of the choice."""
        self.js("document.getElementById('file-input').hidden = false")
        self.driver.find("#file-input").send_keys(str(path))
        self.js("document.getElementById('file-input').hidden = true")

    def files(self):
        """File messages: name, transfer state, message status, whether the picture or its preview
        has loaded (its natural width), the error shown, and whether a Download button is offered."""
        return self.js("""return [...document.querySelectorAll('[data-testid=message]')].filter(e => e.querySelector('[data-testid=file]')).map(e => {
            const f = e.querySelector('[data-testid=file]');
            const image = f.querySelector('[data-testid=file-image]');
            const preview = f.querySelector('[data-testid=file-preview]');
            return { name: f.querySelector('[data-testid=file-name]').textContent, state: f.dataset.state, status: e.dataset.status,
              own: e.dataset.own === 'true', error: f.querySelector('[data-testid=file-error]')?.textContent ?? null,
              image: image ? image.complete && image.naturalWidth : null, preview: preview ? preview.complete && preview.naturalWidth : null,
              download: !!f.querySelector('[data-testid=file-download]') };
        })""")

    def file_named(self, name):
        return next((f for f in self.files() if f["name"] == name), None)

    def screenshot(self, name):
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / name
        self.driver.shot(str(path))
        return path


class ChromeDriver:
    def __init__(self, profile, size):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        options = webdriver.ChromeOptions()
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                    f"--window-size={size[0]},{size[1]}", "--disable-gpu"):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)

    def current_handle(self):
        return self.d.current_window_handle

    def new_tab(self):
        self.d.switch_to.new_window("tab")
        return self.d.current_window_handle

    def focus(self, handle):
        if self.d.current_window_handle != handle:
            self.d.switch_to.window(handle)

    def get(self, url):
        self.d.get(url)

    def js(self, script, *args):
        return self.d.execute_script(script, *args)

    def find(self, css):
        from selenium.webdriver.common.by import By
        return self.d.find_element(By.CSS_SELECTOR, css)

    def shot(self, path):
        self.d.save_screenshot(path)

    def console(self):
        return [entry["message"] for entry in self.d.get_log("browser")]

    def quit(self):
        self.d.quit()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FirefoxDriver:
    """Firefox ESR under Marionette (Debian ships no geckodriver)."""

    def __init__(self, profile, size):
        from marionette_driver.marionette import Marionette
        port = free_port()
        Path(profile, "user.js").write_text(
            f'user_pref("marionette.port", {port});\n'
            'user_pref("browser.shell.checkDefaultBrowser", false);\n'
            'user_pref("datareporting.policy.dataSubmissionEnabled", false);\n'
            'user_pref("toolkit.telemetry.reportingpolicy.firstRun", false);\n'
            'user_pref("browser.aboutwelcome.enabled", false);\n')
        env = dict(os.environ, MOZ_HEADLESS="1", MOZ_HEADLESS_WIDTH=str(size[0]), MOZ_HEADLESS_HEIGHT=str(size[1]))
        self.proc = subprocess.Popen(["firefox-esr", "--marionette", "--headless", "--no-remote", "-profile", profile],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        deadline = time.time() + 60
        while True:  # Marionette listens once the browser is up
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("firefox-esr did not start Marionette")
                time.sleep(0.3)
        self.c = Marionette(host="127.0.0.1", port=port)
        self.c.start_session()
        self.c.set_window_rect(width=size[0], height=size[1])

    def current_handle(self):
        return self.c.current_window_handle

    def new_tab(self):
        handle = self.c.open(type="tab", focus=True)["handle"]
        self.c.switch_to_window(handle)
        return handle

    def focus(self, handle):
        if self.c.current_window_handle != handle:
            self.c.switch_to_window(handle)

    def get(self, url):
        self.c.navigate(url)

    def js(self, script, *args):
        return self.c.execute_script(script, script_args=list(args), sandbox=None)

    def find(self, css):
        return self.c.find_element("css selector", css)

    def shot(self, path):
        Path(path).write_bytes(self.c.screenshot(format="binary", full=False))

    def console(self):
        return []

    def quit(self):
        try:
            self.c.delete_session()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def people():
    """people(name, kind='chrome'|'firefox', size=(w, h)) → Person; all are closed after the test."""
    made = []
    profiles = []

    def make(name, kind="chrome", size=(1280, 820)):
        profile = tempfile.mkdtemp(prefix=f"hush-{kind}-{name}-")
        profiles.append(profile)
        driver = ChromeDriver(profile, size) if kind == "chrome" else FirefoxDriver(profile, size)
        person = Person(name, driver)
        made.append(person)
        return person

    yield make
    for person in made:
        try:
            person.base.quit()
        except Exception:  # noqa: BLE001 - best effort cleanup
            pass
    for profile in profiles:
        shutil.rmtree(profile, ignore_errors=True)

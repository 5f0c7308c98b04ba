"""Browser fixtures: Debian's Chromium driven by Playwright against a real gateway process.

- ``chromium_browser``: one headless Chromium per session (``/usr/bin/chromium``; never
  ``playwright install``). ``outpost.test`` resolves to 127.0.0.1 inside it,
  so ``http://outpost.test:PORT/`` is a LAN-like name: NOT a secure context
  (no service worker, no ``crypto.subtle``), exactly like a phone on site Wi-Fi.
- ``gateway``: ``outpost-gateway run --config`` on a free port with a fresh
  data_dir (one per module), seeded with alice (may work offline) and
  activities act-1…act-4 whose form has every field type.
- ``crew``: a phone-sized page (390x844, touch) that records console errors
  and page errors; a test fails if any appear.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from gateway.app import store_for
from gateway.config import load as load_gateway_config
from gateway.store.activities import upsert_activity
from gateway.store.users import replace_users
from outpost.forms import FormDefinition
from tests.gateway.conftest import DISPATCHED_AT, PASSWORDS, activity, user_push
from tests.support.broker import free_port
from tests.support.store_tasks import SqlWrite

CHROMIUM = Path("/usr/bin/chromium")
LAN_NAME = "outpost.test"
# Screenshots of the main screens are written only when asked for, e.g.
#   OUTPOST_WEB_SCREENSHOTS=docs/screenshots .venv/bin/pytest tests/web
# so an ordinary test run leaves the working tree alone.
SCREENSHOTS = os.environ.get("OUTPOST_WEB_SCREENSHOTS")
PHONE = {"width": 390, "height": 844}
ACTIVITIES = ("act-1", "act-2", "act-3", "act-4", "act-5", "act-6", "act-7")

FORM = FormDefinition.model_validate(
    {
        "fields": [
            {"name": "site_ok", "type": "boolean", "required": True, "label": "Site is safe"},
            {"name": "notes", "type": "text"},
            {"name": "reading_count", "type": "integer"},
            {"name": "temperature", "type": "number"},
            {"name": "visit_date", "type": "date"},
            {"name": "visit_time", "type": "datetime"},
            {"name": "weather", "type": "choice", "options": ["sun", "rain", "snow"]},
            {
                "name": "crew",  # many options: a <select> instead of buttons
                "type": "choice",
                "options": ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf"],
            },
            {"name": "photo", "type": "attachment"},
            {"name": "signature", "type": "signature", "label": "Crew lead signature"},
        ],
        "tables": [
            {
                "name": "readings",
                "fields": [
                    {"name": "meter", "type": "text", "required": True},
                    {"name": "value", "type": "number"},
                ],
            }
        ],
    }
)

pytestmark = pytest.mark.browser

# The machine running the suite is shared: give the UI time to catch up.
expect.set_options(timeout=15_000)


def chromium_missing() -> str | None:
    if not CHROMIUM.exists():
        return "Debian's chromium is not installed (apt-get install chromium; scripts/ensure-system-deps.sh)"
    return None


# --- the gateway ------------------------------------------------------------------


@dataclass
class GatewayProcess:
    """``outpost-gateway run`` as a child process on a free port."""

    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    gateway_id: str = "site-web"
    # None: a LAN-only gateway (backhaul always down); else [mqtt] host/port of a broker
    mqtt: dict[str, Any] | None = None
    tokens: dict[str, str] = field(default_factory=dict)
    site_leads: tuple[str, ...] = ()  # users central made site lead of this gateway

    @property
    def config_path(self) -> Path:
        return self.workdir / "gateway.toml"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "gateway.db"

    @property
    def lan_url(self) -> str:
        """Through a LAN-like name: not a secure context."""
        return f"http://{LAN_NAME}:{self.port}"

    @property
    def local_url(self) -> str:
        """Through 127.0.0.1: a secure context (service worker allowed)."""
        return f"http://127.0.0.1:{self.port}"

    def write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            "[gateway]\n"
            f'id = "{self.gateway_id}"\n'
            'site = "North Quarry"\n'
            f'data_dir = "{self.data_dir}"\n'
            "[lan]\n"
            'host = "127.0.0.1"\n'
            f"port = {self.port}\n"
            "disk_free_floor_mb = 0\n"
            "signin_slowdown_s = 0\n"
            "[discovery]\nenabled = false\n"
            + (
                "[mqtt]\nenabled = false\n"
                if self.mqtt is None
                else "[mqtt]\n"
                + "".join(f"{k} = {json.dumps(v)}\n" for k, v in self.mqtt.items())
                + "keepalive = 5\nbackoff_initial = 0.05\nbackoff_max = 0.5\n"
            )
        )

    def seed(self) -> None:
        """alice and bob may work offline; the ACTIVITIES are alice's."""

        def work(conn: Any) -> None:
            replace_users(conn, user_push("alice", "bob", leads=self.site_leads))
            for act_id in ACTIVITIES:
                upsert_activity(conn, activity(act_id, "alice", FORM), "alice", DISPATCHED_AT)

        def seed_store() -> None:
            store = store_for(load_gateway_config(self.config_path)).open()
            try:
                store.write_sync(SqlWrite(work))
            finally:
                store.close()

        # Playwright's sync API keeps an event loop set on this thread, and the
        # store refuses blocking writes from a loop's thread: seed from another.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(seed_store).result()

    def start(self) -> None:
        exe = Path(sys.executable).parent / "outpost-gateway"
        self.log = self.workdir / "gateway.log"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [str(exe), "run", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60  # a process start, beside a browser, on 2 cores
        while True:
            try:
                with urllib.request.urlopen(f"{self.local_url}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"gateway did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    # -- the LAN API, as a script would call it (to check what arrived) --

    def call(self, method: str, path: str, token: str | None = None, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.local_url}{path}", data=data, method=method)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
        return json.loads(raw) if raw else None

    def token(self, username: str = "alice") -> str:
        """A bearer token for checking what arrived (one sign-in per user: argon2 is slow)."""
        if username not in self.tokens:
            answer = self.call(
                "POST",
                "/api/v1/session",
                body={"username": username, "password": PASSWORDS[username]},
            )
            self.tokens[username] = str(answer["token"])
        return self.tokens[username]


@pytest.fixture(scope="module")
def shared_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    if reason := chromium_missing():
        pytest.skip(reason)
    gw = GatewayProcess(tmp_path_factory.mktemp("web") / "gateway")
    gw.write_config()
    gw.seed()
    gw.start()
    yield gw
    gw.stop()


@pytest.fixture
def gateway(shared_gateway: GatewayProcess) -> GatewayProcess:
    """The module's gateway, running (a test may have stopped it). Each test
    works on its own activity, so tests do not see each other's envelopes."""
    if shared_gateway.proc is None:
        shared_gateway.start()
    return shared_gateway


# --- the browser -----------------------------------------------------------------------


# Per module, not per session: Playwright's sync API keeps its event loop running in
# the main thread while a browser is open, and pytest-asyncio cannot start a loop for
# an async test meanwhile. Under pytest-xdist a worker runs other modules after a
# browser module, so the browser (and that loop) must end with its module.
@pytest.fixture(scope="module")
def chromium_browser() -> Iterator[Any]:
    if reason := chromium_missing():
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                f"--host-resolver-rules=MAP {LAN_NAME} 127.0.0.1",
            ],
        )
        yield b
        b.close()


@dataclass
class Crew:
    """One phone: a browser context and its page, with every console error kept."""

    context: Any
    page: Any
    errors: list[str] = field(default_factory=list)
    # Chromium logs a fetch that cannot reach the gateway as a console error
    # ("Failed to load resource: net::ERR_…"); tests that cut the network allow those.
    allow_network_errors: bool = False
    # Console errors a test expects may or may not happen (races it cannot pin down).
    may_happen: list[str] = field(default_factory=list)

    def sign_in(self, url: str, username: str = "alice") -> None:
        page = self.page
        page.goto(url + "/")
        page.get_by_label("User name").fill(username)
        page.get_by_label("Password").fill(PASSWORDS[username])
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_selector("[data-activity]")

    def screenshot(self, name: str, scroll_to: str | None = None, full_page: bool = False) -> None:
        """A phone-sized picture for docs/screenshots (no focus ring, no toast)."""
        if not SCREENSHOTS:
            return
        page = self.page
        page.evaluate("document.activeElement && document.activeElement.blur()")
        page.evaluate("document.querySelector('#toast').classList.remove('show')")
        if scroll_to:
            page.locator(scroll_to).first.evaluate("(el) => el.scrollIntoView({block: 'start'})")
        else:
            page.evaluate("window.scrollTo(0, 0)")
        folder = Path(SCREENSHOTS)
        folder.mkdir(parents=True, exist_ok=True)
        page.screenshot(
            path=str(folder / f"{name}.png"), animations="disabled", full_page=full_page
        )

    def watch(self, page: Any) -> Any:
        """Keep every console error and page error of ``page`` (another tab, say)."""

        def on_console(m: Any) -> None:
            if m.type == "error":
                self.errors.append(f"console.error: {m.text} ({m.location.get('url')})")

        page.on("console", on_console)
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        return page

    def forgive(self, *needles: str) -> None:
        """Drop console errors the test caused on purpose (each needle must match one)."""
        for needle in needles:
            hits = [e for e in self.errors if needle in e]
            assert hits, f"expected a console error containing {needle!r}: {self.errors}"
            self.errors.remove(hits[0])

    def unexpected_errors(self) -> list[str]:
        errors = [e for e in self.errors if not any(m in e for m in self.may_happen)]
        if not self.allow_network_errors:
            return errors
        return [e for e in errors if "net::ERR_" not in e]


def new_phone(browser: Any, locale: str = "en-GB") -> Crew:
    """A phone-sized browser context whose language is ``locale`` (navigator.languages)."""
    context = browser.new_context(
        viewport=PHONE,
        device_scale_factor=2 if SCREENSHOTS else 1,  # crisp pictures only when kept
        is_mobile=True,
        has_touch=True,
        locale=locale,
    )
    context.set_default_timeout(10_000)
    c = Crew(context, context.new_page())
    c.watch(c.page)
    return c


@pytest.fixture
def crew(chromium_browser: Any) -> Iterator[Crew]:
    c = new_phone(chromium_browser)
    yield c
    c.context.close()
    assert not c.unexpected_errors(), c.unexpected_errors()


# --- test data -------------------------------------------------------------------------


def png_photo(width: int = 360, height: int = 270) -> bytes:
    """A real PNG (sky over ground, with sensor noise), uncompressed: ~3 bytes a pixel
    (360x270 is ~290 KB, two 256 KiB upload parts)."""
    rng = width * 7919 + height  # the same picture every run (stable screenshots)
    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter: none
        for x in range(width):
            rng = (rng * 6364136223846793005 + 1442695040888963407) & (2**64 - 1)
            noise = (rng >> 59) & 0x1F
            if y < height * 0.55:
                r, g, b = 90 + y // 3, 150 + y // 4, 235
            else:
                r, g, b = 110 + x // 8, 95 + x // 10, 60
            rows += bytes(((r + noise) & 0xFF, (g + noise) & 0xFF, (b + noise) & 0xFF))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes((8, 2, 0, 0, 0))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(rows), 0))  # stored: size is predictable
        + chunk(b"IEND", b"")
    )

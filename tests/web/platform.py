"""Reusable pieces for browser tests of the central platform (import the fixtures you need).

- ``platform_bridge``: ``outpost-bridge run`` as a child process (SQLite and
  PostgreSQL), with a real broker, and ``people`` made through the admin API.
- :class:`Person`: a browser context for one person (desktop or phone) that
  signs in on the real sign-in page and fails the test on any console error
  (a CSP violation is one) — ``person.page`` is a Playwright page.

    from tests.web.platform import Person, PlatformBridge, platform_bridge  # noqa: F401
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ADMIN_TOKEN, BridgeProcess
from tests.support.broker import Broker
from tests.web.conftest import chromium_missing

SCREENSHOTS = os.environ.get("OUTPOST_WEB_SCREENSHOTS")
PASSWORD = "platform test password"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


class PlatformBridge(BridgeProcess):
    """The bridge process, plus the admin API as a setup script uses it."""

    def api(self, method: str, path: str, body: Any = None, token: str = ADMIN_TOKEN) -> Any:
        req = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=15) as r:
            return json.loads(r.read() or b"null")

    def person(self, username: str, role: str, **extra: Any) -> None:
        self.api("PUT", f"/api/v1/users/{username}", {"password": PASSWORD, "role": role, **extra})


@pytest.fixture
def platform_bridge(
    tmp_path: Path, broker: Broker, central_db_url: str
) -> Iterator[PlatformBridge]:
    if reason := chromium_missing():
        pytest.skip(reason)
    url = central_db_url
    if url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'central' / 'central.db'}"
    b = PlatformBridge(tmp_path / "central", broker, url)
    b.start()
    yield b
    b.stop()


@dataclass
class Person:
    """One person's browser (a context of the session's Chromium)."""

    context: Any
    page: Any
    base: str
    phone: bool
    errors: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, browser: Any, base: str, *, phone: bool = False) -> Person:
        context = browser.new_context(
            viewport=PHONE if phone else DESKTOP,
            is_mobile=phone,
            has_touch=phone,
            locale="en-GB",
            device_scale_factor=2 if (SCREENSHOTS and phone) else 1,
        )
        context.set_default_timeout(15_000)
        p = cls(context, context.new_page(), base, phone)

        def on_console(m: Any) -> None:
            # A refusal or error page is answered with its 4xx status on purpose; Chromium
            # logs that as "Failed to load resource". Anything else (a CSP violation) fails.
            if m.type == "error" and "the server responded with a status of 4" not in m.text:
                p.errors.append(f"console.{m.type}: {m.text}")

        p.page.on("console", on_console)
        p.page.on("pageerror", lambda e: p.errors.append(f"page error: {e}"))
        return p

    def go(self, path: str) -> Any:
        return self.page.goto(self.base + path)

    def sign_in(self, username: str, password: str = PASSWORD) -> None:
        self.go("/signin")
        self.page.get_by_label("User name").fill(username)
        self.page.get_by_label("Password").fill(password)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_selector("text=Sign out")

    def csrf(self) -> str:
        return str(self.page.locator("input[name=csrf_token]").first.input_value())

    def post_form(self, path: str, data: dict[str, str]) -> Any:
        """Send a form as a browser would (this page's cookies and CSRF token), without the UI."""
        return self.page.request.post(
            self.base + path, form={**data, "csrf_token": self.csrf()}, max_redirects=0
        )

    def no_horizontal_overflow(self) -> None:
        width = self.page.evaluate("document.documentElement.scrollWidth")
        view = self.page.evaluate("window.innerWidth")
        assert width <= view, f"{self.page.url}: {width} px wide in a {view} px window"

    def screenshot(self, name: str) -> None:
        if not SCREENSHOTS:
            return
        folder = Path(SCREENSHOTS)
        folder.mkdir(parents=True, exist_ok=True)
        suffix = "phone" if self.phone else "desktop"
        self.page.evaluate("document.activeElement && document.activeElement.blur()")
        self.page.screenshot(
            path=str(folder / f"platform-{name}-{suffix}.png"), full_page=not self.phone
        )

    def close(self) -> None:
        self.context.close()
        assert not self.errors, self.errors

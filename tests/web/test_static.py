"""How the gateway serves the web app: routes, types, headers, the service worker."""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.web import CONTENT_TYPES, STATIC_DIR, load_shell, setup_web
from tests.gateway.conftest import ClientFactory


async def _client(aiohttp_client: ClientFactory) -> TestClient[Any, Any]:
    app = web.Application()
    setup_web(app)
    return await aiohttp_client(app)


async def test_index_is_the_app_with_strict_headers(aiohttp_client: ClientFactory) -> None:
    client = await _client(aiohttp_client)
    resp = await client.get("/")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    assert resp.headers["Cache-Control"] == "no-cache"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    html = await resp.text()
    assert '<link rel="icon" href="data:,">' in html
    assert 'type="module" src="/static/js/app.js"' in html
    # Nothing from the internet: every URL in the page is the gateway's own.
    assert not re.search(r"""(src|href)=["']https?://""", html)
    again = await client.get("/", headers={"If-None-Match": resp.headers["ETag"]})
    assert again.status == 304


async def test_every_static_file_has_its_type_and_nothing_else_is_served(
    aiohttp_client: ClientFactory,
) -> None:
    client = await _client(aiohttp_client)
    shell = load_shell()
    assert "js/app.js" in shell.files and "app.css" in shell.files
    for rel, path in shell.files.items():
        resp = await client.get(f"/static/{rel}")
        assert resp.status == 200, rel
        assert resp.headers["Content-Type"] == CONTENT_TYPES[path.suffix], rel
        text = await resp.read()
        assert b"http://" not in text.replace(b"http://outpost", b"") or rel.endswith(".svg")
    for bad in (
        "/static/../web/__init__.py",
        "/static/%2e%2e/__init__.py",
        "/static/js/missing.js",
        "/static/sw.js",  # only rendered, at /sw.js
        "/static/.hidden",
    ):
        resp = await client.get(bad)
        assert resp.status == 404, bad
        if resp.url.path.startswith("/static/"):  # ".." is resolved before routing
            assert (await resp.json())["error"]["code"] == "not_found"


async def test_service_worker_is_rendered_with_the_build_and_the_shell(
    aiohttp_client: ClientFactory,
) -> None:
    client = await _client(aiohttp_client)
    resp = await client.get("/sw.js")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/javascript")
    assert resp.headers["Service-Worker-Allowed"] == "/"
    text = await resp.text()
    build = re.search(r'const BUILD = "([0-9a-f]{16})";', text)
    assert build and build.group(1) == load_shell().build
    shell = json.loads(re.search(r"const SHELL = (\[.*\]);", text).group(1))  # type: ignore[union-attr]
    assert "/" in shell and "/static/js/app.js" in shell and "/static/app.css" in shell
    for url in shell:
        assert (await client.get(url)).status == 200, url
    manifest = await client.get("/manifest.webmanifest")
    assert manifest.headers["Content-Type"] == "application/manifest+json"
    assert (await manifest.json())["start_url"] == "/"


def test_build_changes_with_any_file(tmp_path: Any) -> None:
    static = tmp_path / "static"
    for path in STATIC_DIR.rglob("*"):
        if path.is_file():
            target = static / path.relative_to(STATIC_DIR)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    before = load_shell(static).build
    (static / "app.css").write_text((static / "app.css").read_text() + "\n/* v2 */\n")
    assert load_shell(static).build != before


def test_every_sentence_the_app_asks_for_is_in_the_english_words() -> None:
    """``t("key")`` in any module names a key of locales/en.js (the other locales
    are checked against en.js in the browser: tests/web/test_webapp_i18n.py)."""
    english = (STATIC_DIR / "js" / "locales" / "en.js").read_text(encoding="utf-8")
    known = set(re.findall(r'^  "([a-z0-9_.]+)":', english, re.MULTILINE))
    assert len(known) > 150
    asked: dict[str, str] = {}
    for path in (STATIC_DIR / "js").glob("*.js"):
        source = path.read_text(encoding="utf-8")
        for key in re.findall(r'\bt\("([a-z0-9_.]+)"', source):
            asked[key] = path.name
        # Keys built from a prefix (t(`state.${key}`)) must exist for every value used.
        for prefix in re.findall(r"\bt\(`([a-z0-9_.]+)\$\{", source):
            assert any(k.startswith(prefix) for k in known), (path.name, prefix)
    html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    for key in re.findall(r'data-i18n="([a-z0-9_.]+)"', html):
        asked[key] = "index.html"
    missing = {k: where for k, where in asked.items() if k not in known}
    assert not missing, missing

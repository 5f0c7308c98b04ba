"""The crews' web app, served by the gateway at ``/``.

Plain JavaScript modules and CSS under ``static/`` (no build step, nothing
from the internet). ``setup_web(app)`` adds the routes:

- ``GET /``                       the app (``index.html``)
- ``GET /static/{path}``          its modules, stylesheet and icons
- ``GET /manifest.webmanifest``   the web app manifest
- ``GET /sw.js``                  the service worker (used only in a secure context)

The service worker is rendered with a hash of every file of the app, so a
new gateway version always installs a fresh app-shell cache. File reads run
in a thread, once; responses carry ``Cache-Control: no-cache`` (phones
revalidate with ``ETag``/``Last-Modified``) and a strict Content Security
Policy: the app loads only from the gateway.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".webmanifest": "application/manifest+json",
}

CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "worker-src 'self'",
        "manifest-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

COMMON_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": CSP,
}

_SAFE_PATH = re.compile(r"^(?:[A-Za-z0-9_-]+/)*[A-Za-z0-9_-]+(?:\.[A-Za-z0-9]+)+$")


@dataclass(frozen=True)
class Shell:
    """The app's files as found on disk: what may be served, and the worker."""

    files: dict[str, Path]  # "js/app.js" -> path
    build: str  # hash of every file's name and bytes
    service_worker: bytes


class _Holder:
    """Where the app keeps its ``Shell`` once read (the app itself is frozen by then)."""

    def __init__(self) -> None:
        self.shell: Shell | None = None
        self.lock = asyncio.Lock()


_HOLDER_KEY = web.AppKey("outpost_web_shell", _Holder)


def load_shell(static_dir: Path = STATIC_DIR) -> Shell:
    """Read the app's file list, hash it and render the service worker (blocks: thread)."""
    files: dict[str, Path] = {}
    digest = hashlib.sha256()
    for path in sorted(static_dir.rglob("*")):
        if not path.is_file() or path.suffix not in CONTENT_TYPES:
            continue
        rel = path.relative_to(static_dir).as_posix()
        digest.update(rel.encode())
        digest.update(path.read_bytes())
        if rel != "sw.js":  # served rendered, at /sw.js only
            files[rel] = path
    build = digest.hexdigest()[:16]
    shell_urls = ["/", "/manifest.webmanifest"] + [
        f"/static/{rel}" for rel in files if rel not in ("index.html", "manifest.webmanifest")
    ]
    template = (static_dir / "sw.js").read_text(encoding="utf-8")
    worker = template.replace("__BUILD__", build).replace("__SHELL__", json.dumps(shell_urls))
    return Shell(files=files, build=build, service_worker=worker.encode())


async def _async_shell(app: web.Application) -> Shell:
    holder = app[_HOLDER_KEY]
    if holder.shell is not None:
        return holder.shell
    async with holder.lock:
        if holder.shell is None:
            holder.shell = await asyncio.get_running_loop().run_in_executor(None, load_shell)
            logger.info(
                "web app loaded: %d files, build %s", len(holder.shell.files), holder.shell.build
            )
        return holder.shell


def _not_found() -> web.Response:
    return web.json_response(
        {"error": {"code": "not_found", "message": "There is no such file in the app."}},
        status=404,
    )


def _file(path: Path) -> web.FileResponse:
    headers = dict(COMMON_HEADERS)
    headers["Content-Type"] = CONTENT_TYPES[path.suffix]
    return web.FileResponse(path, headers=headers)


async def _index(request: web.Request) -> web.StreamResponse:
    shell = await _async_shell(request.app)
    return _file(shell.files["index.html"])


async def _manifest(request: web.Request) -> web.StreamResponse:
    shell = await _async_shell(request.app)
    return _file(shell.files["manifest.webmanifest"])


async def _service_worker(request: web.Request) -> web.StreamResponse:
    shell = await _async_shell(request.app)
    headers = dict(COMMON_HEADERS)
    headers["Service-Worker-Allowed"] = "/"
    return web.Response(
        body=shell.service_worker,
        content_type="text/javascript",
        charset="utf-8",
        headers=headers,
    )


async def _static(request: web.Request) -> web.StreamResponse:
    rel = request.match_info["path"]
    if not _SAFE_PATH.fullmatch(rel):
        return _not_found()
    shell = await _async_shell(request.app)
    path = shell.files.get(rel)
    if path is None:
        return _not_found()
    return _file(path)


def setup_web(app: web.Application) -> None:
    """Serve the crews' web app from ``app`` (call once while building the app)."""
    app[_HOLDER_KEY] = _Holder()
    app.router.add_get("/", _index, name="webapp_index")
    app.router.add_get("/index.html", _index)
    app.router.add_get("/manifest.webmanifest", _manifest)
    app.router.add_get("/sw.js", _service_worker)
    app.router.add_get("/static/{path:.+}", _static)

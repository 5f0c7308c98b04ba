"""Hand-made requests to the admin port: no input, however malformed, gives a 5xx.

Each of these answered 500 once (a traceback in the log). They go over a raw
socket, because no well-behaved client sends them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from cloud_bridge.service import Bridge
from tests.cloud_bridge.conftest import TOKEN, bridge_config
from tests.support.broker import Broker


@pytest.fixture
async def bridge(central_db_url: str, tmp_path: Path, broker: Broker) -> AsyncIterator[Bridge]:
    """A bridge with the default body limit (1 MiB), so a 200,000-deep body reaches the parser."""
    config = bridge_config(central_db_url, tmp_path / "central", broker.port)
    admin = config.admin.model_copy(update={"max_body_bytes": 1024 * 1024})
    b = Bridge(config.model_copy(update={"admin": admin}))
    await b.async_start()
    try:
        yield b
    finally:
        await b.async_stop()


async def raw_request(
    bridge: Bridge,
    method: str,
    path: str,
    headers: bytes = b"",
    body: bytes = b"",
    *,
    token: bool = True,
) -> tuple[int, dict[str, str], bytes]:
    url = urlsplit(bridge.admin_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    auth = f"Authorization: Bearer {TOKEN}\r\n".encode() if token else b""
    writer.write(
        f"{method} {path} HTTP/1.1\r\nHost: {url.netloc}\r\nConnection: close\r\n".encode()
        + auth
        + headers
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    await writer.wait_closed()
    head, _, payload = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, fields, payload


def error_code(payload: bytes) -> Any:
    return json.loads(payload)["error"]["code"]


JSON = b"Content-Type: application/json\r\n"


@pytest.mark.parametrize(
    "header",
    [b"Authorization: Bearer \xe9t\xe9\r\n", b"Authorization: Bearer \xc3\x28\xff\r\n"],
    ids=["latin-1", "not-utf-8"],
)
async def test_an_authorization_header_that_is_not_utf8_is_a_401(
    bridge: Bridge, header: bytes
) -> None:
    status, _, payload = await raw_request(bridge, "GET", "/api/v1/gateways", header, token=False)
    assert (status, error_code(payload)) == (401, "unauthorized")


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/gateways/gw-a%00",
        "/api/v1/gateways/gw-a%00/history",
        "/api/v1/activities/a%00",
        "/api/v1/envelopes/e%00",
        "/api/v1/envelopes?activity_id=a%00",
        "/api/v1/gateways?q=a%0Ab",
    ],
)
async def test_a_control_character_in_the_address_is_a_400(bridge: Bridge, path: str) -> None:
    status, _, payload = await raw_request(bridge, "GET", path)
    assert status == 400
    assert error_code(payload) in ("invalid_path", "invalid_query")


async def test_a_username_with_a_final_newline_is_refused_and_pushes_still_work(
    bridge: Bridge,
) -> None:
    body = b'{"password": "correct horse", "offline": true}'
    status, _, payload = await raw_request(bridge, "PUT", "/api/v1/users/eve%0A", JSON, body)
    assert (status, error_code(payload)) == (400, "invalid_path")
    status, _, _ = await raw_request(bridge, "PUT", "/api/v1/users/eve", JSON, body)
    assert status == 201


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 200_000 + b"]" * 200_000,
        b'{"title": ' + b"9" * 5000 + b', "type": "x", "responsible": "ana"}',
        b'{"title": "x", "type": "x", "responsible": "ana", "id": 1e999999}',
    ],
    ids=["nested-200000-deep", "5000-digit-integer", "huge-exponent"],
)
async def test_json_bodies_no_parser_takes_are_a_400(bridge: Bridge, body: bytes) -> None:
    for path in ("/api/v1/activities", "/api/v1/activity-types"):
        status, _, payload = await raw_request(bridge, "POST", path, JSON, body)
        assert status == 400, (path, status, payload[:200])
        assert error_code(payload) in ("invalid_json", "invalid_body", "invalid_type")


@pytest.mark.parametrize(
    "cookie",
    [b"\xe9\xff\xfe", b"9" * 5000 + b".abc", "\u00e9t\u00e9".encode()],
    ids=["not-utf-8", "5000-digit-expiry", "utf-8-non-ascii"],
)
async def test_pages_with_a_cookie_no_session_has_send_to_sign_in(
    bridge: Bridge, cookie: bytes
) -> None:
    for path in ("/fleet", "/"):
        status, headers, _ = await raw_request(
            bridge, "GET", path, b"Cookie: outpost_session=" + cookie + b"\r\n", token=False
        )
        assert status == 303, (path, status)
        assert headers["location"].startswith("/signin")


@pytest.mark.parametrize(
    ("method", "path"),
    [("DELETE", "/api/v1/gateways"), ("PUT", "/api/v1/envelopes"), ("POST", "/healthz")],
)
async def test_a_wrong_method_is_a_405_with_allow(bridge: Bridge, method: str, path: str) -> None:
    status, headers, payload = await raw_request(bridge, method, path)
    assert (status, error_code(payload)) == (405, "method_not_allowed")
    assert "GET" in headers["allow"]


@pytest.mark.parametrize(
    "text",
    ['"fence\\u0000gate"', '"\\ud800"', '"\\udc80 alone"'],
    ids=["nul", "lone-high-surrogate", "lone-low-surrogate"],
)
async def test_text_no_database_holds_is_a_400(bridge: Bridge, text: str) -> None:
    """PostgreSQL refuses NUL in text; no UTF-8 encoder takes a lone surrogate."""
    bodies = {
        "/api/v1/activities": '{"title": %s, "type": "x", "responsible": "ana"}',
        "/api/v1/activity-types": '{"name": "x", "offline": true, "form": {"fields": '
        '[{"name": "a", "type": "text", "label": %s}]}}',
        "/api/v1/users/eve": '{"password": "long enough", "display_name": %s}',
    }
    for path, template in bodies.items():
        method = "PUT" if "users" in path else "POST"
        body = (template % text).encode()
        status, _, payload = await raw_request(bridge, method, path, JSON, body)
        assert (status, error_code(payload)) == (400, "invalid_json"), (path, payload[:300])

"""Hand-made hostile requests against a real ``outpost-gateway run``: never a 5xx.

Each case is one that answered 500 (a generic body, a traceback in the log)
before: bytes in headers that are not UTF-8, a year-1 date with an offset,
integers past what a database holds, a 5,000-digit Content-Range, JSON nested
200,000 deep, a NUL in a header, identifiers with a final newline. Requests
go over a raw socket so the bytes are exactly these; the gateway's log is
read after: no traceback, and no line a request could have forged.
"""

from __future__ import annotations

import json
import re
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.store.activities import upsert_activity
from gateway.store.users import replace_users
from tests.gateway.conftest import DISPATCHED_AT, PASSWORDS, activity, user_push
from tests.support.gateway_process import GatewayProcess

SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def _seed(conn: Any) -> None:
    replace_users(conn, user_push("alice", "bob"))
    upsert_activity(conn, activity("act-1", "alice"), "alice", DISPATCHED_AT)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(tmp_path_factory.mktemp("hostile") / "gw")
    gw.write_config()
    gw.seed(_seed)
    gw.start()
    yield gw
    gw.stop()


def raw(gw: GatewayProcess, head: bytes, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """Send ``head`` (request line and headers, CRLF-separated) and ``body``; read the answer."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as sock:
        message = head.rstrip(b"\r\n") + b"\r\nHost: gw\r\nConnection: close\r\n"
        if body:
            message += b"Content-Length: %d\r\n" % len(body)
        sock.sendall(message + b"\r\n" + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    header_block, _, payload = rest.partition(b"\r\n\r\n")
    headers = {}
    for line in header_block.split(b"\r\n"):
        name, _, value = line.partition(b":")
        headers[name.decode().strip().lower()] = value.decode("latin-1").strip()
    return int(status_line.split()[1]), headers, payload


def token(gw: GatewayProcess, user: str = "alice") -> str:
    body = json.dumps({"username": user, "password": PASSWORDS[user]}).encode()
    status, _, payload = raw(
        gw, b"POST /api/v1/session HTTP/1.1\r\nContent-Type: application/json", body
    )
    assert status == 200, payload
    return str(json.loads(payload)["token"])


def error(payload: bytes) -> dict[str, Any]:
    body = json.loads(payload)
    assert set(body) == {"error"} and body["error"]["code"] and body["error"]["message"], body
    return dict(body["error"])


def post_envelope(gw: GatewayProcess, text: bytes) -> tuple[int, dict[str, Any]]:
    status, _, payload = raw(
        gw,
        b"POST /api/v1/envelopes HTTP/1.1\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + token(gw).encode(),
        text,
    )
    return status, error(payload) if status >= 400 else json.loads(payload)


def envelope(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "envelope_id": str(uuid.uuid4()),
        "activity_id": "act-1",
        "seq": 1,
        "base_version": 3,
        "status": "draft",
        "created_at": "2026-11-23T09:00:00Z",
        "record": {"site_ok": True},
    }
    body.update(changes)
    return body


@pytest.mark.parametrize(
    "value",
    [
        b"Bearer \xff\xfe\xfd",
        b"Bearer caf\xe9",
        b"Bearer \xc3\xa9t\xc3\xa9",
        b"\xff",
        b"Bearer " + b"a" * 5000,
    ],
)
def test_authorization_bytes_that_are_no_token_are_401(
    gateway: GatewayProcess, value: bytes
) -> None:
    status, headers, payload = raw(
        gateway, b"GET /api/v1/activities HTTP/1.1\r\nAuthorization: " + value
    )
    assert status == 401, payload
    assert error(payload)["code"] in ("unauthorized", "invalid_token")
    assert headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("created_at", "0001-01-01T00:30:00+01:00"),
        ("created_at", "9999-12-31T23:30:00-01:00"),
        ("base_version", 2**31),
        ("base_version", 2**63),
        ("base_version", "9" * 5000),  # written into the JSON as a 5,000-digit number
        ("seq", 2**64),
        ("form_version", 2**40),
    ],
)
def test_values_a_database_cannot_hold_are_400_naming_the_field(
    gateway: GatewayProcess, field: str, value: Any
) -> None:
    text = json.dumps(envelope(**{field: value})).encode()
    if isinstance(value, str) and value.isdigit():
        text = text.replace(f'"{value}"'.encode(), value.encode())
    status, err = post_envelope(gateway, text)
    assert status == 400, err
    if err["code"] == "malformed_json":  # too many digits for the JSON reader itself
        assert "number" in err["message"] and "column" in err["message"], err
    else:
        assert err["code"] == "invalid_envelope"
        assert any(p["field"] == field for p in err["problems"]), err


@pytest.mark.parametrize(
    "record",
    [
        b'{"notes": "a\\u0000b"}',
        b'{"n": ' + b"9" * 5000 + b"}",
        b'{"n": 1e400}',
        b'{"n": NaN}',
        b'{"deep": ' + b"[" * 50 + b"]" * 50 + b"}",
    ],
)
def test_record_values_a_database_cannot_hold_are_400(
    gateway: GatewayProcess, record: bytes
) -> None:
    text = json.dumps(envelope(record={})).encode().replace(b'"record": {}', b'"record": ' + record)
    status, err = post_envelope(gateway, text)
    assert status == 400, err
    assert err["code"] in ("invalid_envelope", "malformed_json")


def test_json_nested_200000_deep_is_400(gateway: GatewayProcess) -> None:
    status, err = post_envelope(gateway, b"[" * 200_000 + b"]" * 200_000)
    assert status in (400, 413), err
    status, err = post_envelope(
        gateway, b'{"record": ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_001
    )
    assert status in (400, 413), err
    assert err["code"] in ("malformed_json", "body_too_large", "invalid_envelope")


@pytest.mark.parametrize(
    "content_range",
    [
        b"bytes 0-9/" + b"9" * 5000,
        b"bytes " + b"1" * 5000 + b"-2/3",
        "bytes 0-9/\u0663\u0660".encode(),  # Arabic-Indic digits
        b"bytes 0-9/10\xff",
    ],
)
def test_content_range_that_is_no_range_is_400(
    gateway: GatewayProcess, content_range: bytes
) -> None:
    status, _, payload = raw(
        gateway,
        b"PUT /api/v1/attachments/" + SHA.encode() + b" HTTP/1.1\r\n"
        b"Authorization: Bearer "
        + token(gateway).encode()
        + b"\r\nContent-Range: "
        + content_range,
        b"0123456789",
    )
    assert status == 400, payload
    assert error(payload)["code"] == "invalid_range"


@pytest.mark.parametrize(
    ("method", "path", "status_wanted"),
    [
        (b"PUT", b"/api/v1/attachments/" + SHA.encode() + b"%0a", 400),
        (b"HEAD", b"/api/v1/attachments/" + SHA.encode() + b"%0A", 400),
        (b"GET", b"/api/v1/activities/act-1%0a", 404),
        (b"GET", b"/api/v1/activities/act-1%00", 404),
        (b"GET", b"/api/v1/envelopes?activity_id=act-1%0a", 404),
        (b"GET", b"/api/v1/activities/%ff%fe", 404),
    ],
)
def test_identifiers_with_a_final_newline_or_bad_bytes_are_refused(
    gateway: GatewayProcess, method: bytes, path: bytes, status_wanted: int
) -> None:
    status, _, payload = raw(
        gateway,
        method + b" " + path + b" HTTP/1.1\r\nAuthorization: Bearer " + token(gateway).encode(),
        b"x" if method == b"PUT" else b"",
    )
    assert status == status_wanted, payload


def test_a_nul_in_a_header_is_400_without_a_traceback(gateway: GatewayProcess) -> None:
    status, _, _ = raw(gateway, b"GET /healthz HTTP/1.1\r\nX-Probe: a\x00b")
    assert status == 400


def test_unknown_methods_are_405_with_allow_before_any_token(gateway: GatewayProcess) -> None:
    status, headers, payload = raw(gateway, b"TRACE /api/v1/session HTTP/1.1")
    assert status == 405, payload
    assert "POST" in headers["allow"] and "DELETE" in headers["allow"]
    assert error(payload)["code"] == "method_not_allowed"


def test_a_username_or_path_cannot_forge_a_log_line(gateway: GatewayProcess) -> None:
    forged = "x\n2026-11-23 09:00:00,000 INFO    gateway.auth: user 'admin' signed in from 10.0.0.1"
    body = json.dumps({"username": forged, "password": "nope"}).encode()
    raw(gateway, b"POST /api/v1/session HTTP/1.1\r\nContent-Type: application/json", body)
    raw(gateway, b"GET /api/v1/x%0A2026-11-23%2009:00:00,000%20INFO%20forged HTTP/1.1")


def test_the_log_has_no_traceback_and_no_forged_line(gateway: GatewayProcess) -> None:
    """Runs last in this module: everything above left only well-formed records."""
    log = gateway.log_text()
    assert "Traceback" not in log, log[-5000:]
    assert "unexpected error" not in log
    record = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ +[a-z_.]+: ")
    for line in log.splitlines():
        assert record.match(line) or line[:1].isspace(), f"not a record of ours: {line!r}"
    assert "user 'admin' signed in" not in [line.split(": ", 1)[-1] for line in log.splitlines()]
    assert not any(line.startswith("2026-11-23 09:00:00,000") for line in log.splitlines()), (
        "a request forged a log line"
    )

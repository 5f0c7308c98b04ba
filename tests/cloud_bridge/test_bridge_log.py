"""The bridge's own log, read from a real ``outpost-bridge run``: no forged line, no traceback.

A username or a path with a newline in it (issue 13: "the bridge logs paths
the same way") must not start a line of its own; hostile requests leave only
well-formed records of ours.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

from tests.support.bridge_process import BridgeProcess
from tests.support.broker import Broker

FORGED = "2026-11-23 09:00:00,000 INFO    cloud_bridge.access: user 'admin' signed in"


def _raw(bridge: BridgeProcess, head: bytes, body: bytes = b"") -> bytes:
    with socket.create_connection(("127.0.0.1", bridge.admin_port), timeout=10) as sock:
        sock.sendall(
            head
            + f"\r\nHost: x\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_hostile_requests_leave_only_records_of_ours(tmp_path: Path, broker: Broker) -> None:
    bridge = BridgeProcess(tmp_path / "central", broker, f"sqlite:///{tmp_path / 'central.db'}")
    bridge.start()
    try:
        status, _ = bridge.call(
            "POST", "/api/v1/session", {"username": "x\n" + FORGED[:60], "password": "nope"}
        )
        assert status == 401
        quoted = FORGED.replace(" ", "%20").replace("'", "%27").encode()
        for head in (
            b"GET /api/v1/gateways/x%0A" + quoted + b" HTTP/1.1",
            b"GET /fleet?q=%0A" + quoted + b" HTTP/1.1",
            b"GET /healthz HTTP/1.1\r\nX-Probe: a\x00b",
            b"GET /api/v1/users HTTP/1.1\r\nAuthorization: Bearer \xe9t\xe9\x0b",
            b"POST /api/v1/activities HTTP/1.1\r\nContent-Type: application/json",
        ):
            answer = _raw(bridge, head, b"[" * 50_000 if head.startswith(b"POST") else b"")
            assert re.match(rb"HTTP/1\.[01] [34]\d\d ", answer), answer[:200]
    finally:
        bridge.stop()
    log = bridge.log_text()
    assert "Traceback" not in log, log[-5000:]
    # The username was logged, its newline escaped.
    assert any(
        "failed sign-in for user" in ln and "x\\n2026-11-23" in ln for ln in log.splitlines()
    )
    record = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ +[a-z_.]+: ")
    for line in log.splitlines():
        assert record.match(line) or line[:1].isspace(), f"not a record of ours: {line!r}"
    assert not any(line.startswith("2026-11-23 09:00:00,000") for line in log.splitlines())

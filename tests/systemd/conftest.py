"""Fixtures for the systemd integration: a stand-in for systemd's notify socket."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest


@dataclass
class Message:
    at: float  # time.monotonic() when received
    fields: dict[str, str]


@dataclass
class NotifyListener:
    """A bound datagram socket playing systemd: it collects sd_notify messages."""

    sock: socket.socket
    address: str  # the value for $NOTIFY_SOCKET
    messages: list[Message] = field(default_factory=list)

    def _receive(self, timeout: float) -> Message | None:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            return None
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        msg = Message(time.monotonic(), fields)
        self.messages.append(msg)
        return msg

    def wait_for(self, key: str, value: str | None = None, timeout: float = 10.0) -> Message:
        """The first message from now on with ``key`` (equal to ``value`` if given)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            msg = self._receive(left)
            if msg is None:
                break
            if key in msg.fields and (value is None or msg.fields[key] == value):
                return msg
        seen = [m.fields for m in self.messages[-5:]]
        raise AssertionError(f"no {key}={value or '*'} within {timeout} s; last seen {seen}")

    def collect(self, seconds: float) -> list[Message]:
        """Every message received during the next ``seconds``."""
        got: list[Message] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            msg = self._receive(left)
            if msg is not None:
                got.append(msg)
        return got


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifyListener]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    try:
        yield NotifyListener(sock, str(path))
    finally:
        sock.close()


@pytest.fixture
def abstract_notify_socket() -> Iterator[NotifyListener]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"outpost-test-{uuid.uuid4().hex}"
    sock.bind(b"\0" + name.encode())
    try:
        yield NotifyListener(sock, "@" + name)
    finally:
        sock.close()

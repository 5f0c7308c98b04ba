"""``outpost-bridge run`` as a real child process on a free port, for black-box tests.

    bridge = BridgeProcess(tmp_path / "central", broker, database_url)
    bridge.start()              # waits for /healthz (database migrated, API listening)
    status, body = bridge.call("PUT", "/api/v1/users/ana", {...})   # as the admin token
    ... bridge.url, bridge.token, bridge.log_text() ...
    bridge.kill()               # SIGKILL, to test what survives a crash
    bridge.stop()

The twin of ``tests/support/gateway_process.py``; the e2e, web and
schemathesis tests all use this one.
"""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.broker import Broker, free_port
from tests.support.processes import start_serving

ADMIN_TOKEN = "e2e-admin-token-0123456789"


class BridgeProcess:
    def __init__(
        self,
        workdir: Path,
        broker: Broker,
        database_url: str,
        *,
        platform: dict[str, Any] | None = None,
        mqtt: dict[str, Any] | None = None,
        replay: dict[str, Any] | None = None,
        fleet: dict[str, Any] | None = None,
    ) -> None:
        self.workdir = workdir
        self.admin_port = free_port()
        self.token = ADMIN_TOKEN
        self.config = workdir / "bridge.toml"
        self.log = workdir / "bridge.log"
        sections: dict[str, dict[str, Any]] = {
            # data_dir is the workdir: attachments land in workdir/blobs.
            "central": {"database_url": database_url, "data_dir": str(workdir)},
            "admin": {"host": "127.0.0.1", "port": self.admin_port, "token": ADMIN_TOKEN},
            "mqtt": {
                "host": broker.host,
                "port": broker.port,
                "keepalive": 5,
                "backoff_initial": 0.05,
                "backoff_max": 0.5,
                **(mqtt or {}),
            },
            "replay": replay or {},
            "platform": platform or {},
            "fleet": fleet or {},
        }
        workdir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            "".join(
                f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
                for name, values in sections.items()
                if values
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self, timeout_s: float = 30) -> None:
        self.proc = start_serving("outpost-bridge", self.config, self.log, self.url, timeout_s)

    def call(
        self, method: str, path: str, body: Any = None, *, token: str | None = None
    ) -> tuple[int, Any]:
        """One admin API request (as the admin token unless ``token``): status and JSON."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {token or self.token}"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def ok(self, method: str, path: str, body: Any = None, *, token: str | None = None) -> Any:
        status, data = self.call(method, path, body, token=token)
        assert status < 300, (method, path, status, data)
        return data

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        self.proc.terminate()
        try:
            code = self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        return code

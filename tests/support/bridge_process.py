"""``outpost-bridge run`` as a real child process on a free port, for black-box tests.

    bridge = BridgeProcess(tmp_path / "central", database_url=url, broker_port=broker.port)
    bridge.write_config()
    bridge.start()              # waits for /healthz
    status, body = bridge.call("PUT", "/api/v1/users/ana", {...})   # as the admin token
    ... bridge.url, bridge.token, bridge.log_text() ...
    bridge.stop()

The twin of ``tests/support/gateway_process.py``: the same start, log and stop.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.broker import free_port

ADMIN_TOKEN = "bridge-process-admin-token-0123456789"


class BridgeProcess:
    def __init__(
        self,
        workdir: Path,
        *,
        database_url: str,
        broker_port: int,
        admin: dict[str, Any] | None = None,
        platform: dict[str, Any] | None = None,
    ) -> None:
        self.workdir = workdir
        self.database_url = database_url
        self.broker_port = broker_port
        self.port = free_port()
        self.token = ADMIN_TOKEN
        self.admin = admin or {}
        self.platform = platform or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "bridge.log"

    @property
    def config_path(self) -> Path:
        return self.workdir / "bridge.toml"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        admin = {"host": "127.0.0.1", "port": self.port, "token": self.token, **self.admin}
        mqtt = {"host": "127.0.0.1", "port": self.broker_port, "backoff_max": 1.0}
        central = {"database_url": self.database_url, "data_dir": str(self.workdir / "data")}
        text = "".join(
            f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in section.items())
            for name, section in (
                ("central", central),
                ("admin", admin),
                ("mqtt", mqtt),
                ("platform", self.platform),
            )
            if section
        )
        self.config_path.write_text(text)

    def start(self, timeout_s: float = 60) -> None:
        exe = Path(sys.executable).parent / "outpost-bridge"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [str(exe), "run", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as r:
                    if r.status == 200 and json.load(r).get("mqtt"):
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"bridge did not start:\n{self.log_text()[-3000:]}")
            time.sleep(0.05)  # poll interval while it starts

    def call(
        self, method: str, path: str, body: Any = None, *, token: str | None = None
    ) -> tuple[int, Any]:
        """One admin API request (as the admin token unless ``token``); status and JSON."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {token or self.token}"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, json.load(answer)
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def ok(self, method: str, path: str, body: Any = None, *, token: str | None = None) -> Any:
        status, data = self.call(method, path, body, token=token)
        assert status < 300, (method, path, status, data)
        return data

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        return code

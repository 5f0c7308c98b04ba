"""``outpost-gateway run`` as a real child process on a free port, for black-box tests.

    gw = GatewayProcess(tmp_path / "gw", lan={"signin_max_failures": 1000})
    gw.write_config()
    gw.seed(lambda conn: ...)   # optional: write to its store before it starts
    gw.start()                  # waits for /healthz
    ... gw.url, gw.log_text() ...
    gw.stop()

Seeding opens the store in a thread of its own (the store refuses blocking
writes from an event loop's thread).
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.support.broker import free_port
from tests.support.processes import start_serving
from tests.support.store_tasks import SqlWrite


class GatewayProcess:
    def __init__(
        self,
        workdir: Path,
        *,
        gateway_id: str = "site-test",
        lan: dict[str, Any] | None = None,
        mqtt: dict[str, Any] | None = None,
    ) -> None:
        self.workdir = workdir
        self.gateway_id = gateway_id
        self.port = free_port()
        self.lan = {"disk_free_floor_mb": 0, "signin_slowdown_s": 0, **(lan or {})}
        self.mqtt = mqtt  # None: LAN-only (backhaul always down)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "gateway.log"

    @property
    def config_path(self) -> Path:
        return self.workdir / "gateway.toml"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        lan = {"host": "127.0.0.1", "port": self.port, **self.lan}
        text = (
            f'[gateway]\nid = "{self.gateway_id}"\ndata_dir = "{self.data_dir}"\n'
            + "[lan]\n"
            + "".join(f"{k} = {json.dumps(v)}\n" for k, v in lan.items())
            + "[discovery]\nenabled = false\n"
        )
        if self.mqtt is None:
            text += "[mqtt]\nenabled = false\n"
        else:
            text += "[mqtt]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in self.mqtt.items())
        self.config_path.write_text(text)

    def seed(self, work: Callable[[Any], None]) -> None:
        """Run ``work(conn)`` in one write transaction of the (stopped) gateway's store."""
        from gateway.app import store_for
        from gateway.config import load

        def run() -> None:
            store = store_for(load(self.config_path)).open()
            try:
                store.write_sync(SqlWrite(work))
            finally:
                store.close()

        with ThreadPoolExecutor(1) as pool:
            pool.submit(run).result()

    def start(self, timeout_s: float = 30) -> None:
        self.proc = start_serving(
            "outpost-gateway", self.config_path, self.log, self.url, timeout_s
        )

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

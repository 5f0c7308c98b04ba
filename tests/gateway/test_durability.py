"""A real gateway process killed with SIGKILL mid-submissions loses nothing it acknowledged."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.store import Store
from gateway.store.activities import upsert_activity
from gateway.store.users import replace_users
from tests.gateway.conftest import DISPATCHED_AT, PASSWORDS, activity, envelope_body, user_push
from tests.support.broker import free_port
from tests.support.store_tasks import SqlWrite

WORKERS = 20


def _write_config(tmp_path: Path, port: int) -> Path:
    data_dir = tmp_path / "gw"
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        f"""
[gateway]
id = "site-dur"
data_dir = "{data_dir}"
[lan]
host = "127.0.0.1"
port = {port}
signin_slowdown_s = 0
disk_free_floor_mb = 0
[mqtt]
enabled = false
[discovery]
enabled = false
"""
    )
    return cfg


def _seed(data_dir: Path) -> None:
    store = Store(data_dir / "gateway.db").open()
    try:

        def work(conn: Any) -> None:
            replace_users(conn, user_push("alice", "bob"))
            for i in range(WORKERS):
                upsert_activity(conn, activity(f"dur-{i}", "alice"), "alice", DISPATCHED_AT)

        store.write_sync(SqlWrite(work))
    finally:
        store.close()


class GatewayProcess:
    def __init__(self, cfg: Path, log: Path) -> None:
        self.cfg = cfg
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OUTPOST_")}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "run", "--config", str(self.cfg)],
                stdout=log,
                stderr=log,
                env=env,
            )

    def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=20)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=20)


@pytest.fixture
def gateway_process(tmp_path: Path) -> Iterator[tuple[GatewayProcess, str, Path]]:
    port = free_port()
    cfg = _write_config(tmp_path, port)
    _seed(tmp_path / "gw")
    gw = GatewayProcess(cfg, tmp_path / "gateway.log")
    yield gw, f"http://127.0.0.1:{port}", tmp_path / "gw" / "gateway.db"
    gw.stop()


async def _wait_healthy(http: aiohttp.ClientSession, url: str, gw: GatewayProcess) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert gw.proc is not None and gw.proc.poll() is None, gw.log.read_text()[-2000:]
        try:
            async with http.get(f"{url}/healthz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)  # poll interval while the process starts
    raise AssertionError("gateway did not become healthy: " + gw.log.read_text()[-2000:])


async def _token(http: aiohttp.ClientSession, url: str) -> dict[str, str]:
    async with http.post(
        f"{url}/api/v1/session", json={"username": "alice", "password": PASSWORDS["alice"]}
    ) as resp:
        assert resp.status == 200, await resp.text()
        return {"Authorization": f"Bearer {(await resp.json())['token']}"}


async def test_sigkill_mid_submissions_loses_nothing_acknowledged(
    gateway_process: tuple[GatewayProcess, str, Path],
) -> None:
    gw, url, db = gateway_process
    gw.start()
    acked: dict[str, tuple[str, int]] = {}
    enough = asyncio.Event()
    async with aiohttp.ClientSession() as http:
        await _wait_healthy(http, url, gw)
        headers = await _token(http, url)

        async def worker(i: int) -> None:
            seq = 1
            while True:
                body = envelope_body(f"dur-{i}", seq, notes="n" * 1500)
                try:
                    async with http.post(
                        f"{url}/api/v1/envelopes", json=body, headers=headers
                    ) as resp:
                        status = resp.status
                        await resp.read()
                except (aiohttp.ClientError, ConnectionError):
                    return  # the gateway died under us
                assert status == 201, status
                acked[body["envelope_id"]] = (f"dur-{i}", seq)
                seq += 1
                if len(acked) >= 300:
                    enough.set()

        tasks = [asyncio.create_task(worker(i)) for i in range(WORKERS)]
        await asyncio.wait_for(enough.wait(), 60)
        # Kill while requests are in flight: no flush, no shutdown, no goodbye.
        rc = await asyncio.get_running_loop().run_in_executor(None, gw.kill)
        assert rc == -signal.SIGKILL
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        killed_with = len(acked)

    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        rows = dict(
            conn.execute("SELECT envelope_id, activity_id || ':' || seq FROM envelopes").fetchall()
        )
        per_activity: dict[str, list[int]] = {}
        for aid, seq in conn.execute("SELECT activity_id, seq FROM envelopes ORDER BY seq"):
            per_activity.setdefault(aid, []).append(seq)
    finally:
        conn.close()
    missing = [eid for eid in acked if eid not in rows]
    assert not missing, f"{len(missing)} acknowledged envelopes lost"
    for eid, (aid, seq) in acked.items():
        assert rows[eid] == f"{aid}:{seq}"
    for seqs in per_activity.values():
        assert seqs == list(range(1, len(seqs) + 1))  # no holes

    # It restarts, serves every acknowledged envelope and carries on at the next seq.
    gw.start()
    async with aiohttp.ClientSession() as http:
        await _wait_healthy(http, url, gw)
        headers = await _token(http, url)
        async with http.get(f"{url}/api/v1/envelopes", headers=headers) as resp:
            listed = {e["envelope_id"] for e in (await resp.json())["envelopes"]}
        assert set(acked) <= listed
        nxt = len(per_activity.get("dur-0", [])) + 1
        async with http.post(
            f"{url}/api/v1/envelopes", json=envelope_body("dur-0", nxt), headers=headers
        ) as resp:
            assert resp.status == 201, await resp.text()
    rc = await asyncio.get_running_loop().run_in_executor(None, gw.kill, signal.SIGTERM)
    assert rc == 0, gw.log.read_text()[-2000:]
    assert killed_with >= 300

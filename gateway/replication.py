"""Continuous replication of the gateway database with litestream.

The gateway runs ``litestream replicate`` as its own child process (see
docs/replication.md for why not a separate systemd unit) and keeps it
alive: when it exits for any reason other than our stop, it is started again
after an exponential backoff (1 s doubling to ``restart_backoff_max_s``, reset
after a minute of good running). Its log lines are forwarded to our logger
(its errors become ``last_error``).

Use it as an aiohttp ``cleanup_ctx`` entry (:func:`replication_ctx`) or
directly::

    replicator = Replicator.from_config(config)
    await replicator.start()
    replicator.status()  # {"running": True, "lag_s": 0.0, "last_error": None, ...}
    await replicator.stop()

Before starting litestream the replicator checks that the replica belongs to
this database: a replica holding data while the local database was never
replicated (no ``_litestream_seq`` table: a fresh or replaced database) would
otherwise be overwritten by an empty database. Then it refuses, says so in
``last_error``, and checks again every few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.api.keys import CONFIG_KEY, METRICS_KEY
from gateway.blob_mirror import BLOBS_DIRNAME, BlobMirror
from gateway.config import GatewayConfig, ReplicationSection
from gateway.litestream_config import (
    CONFIG_FILENAME,
    SHUTDOWN_SYNC_TIMEOUT_S,
    ReplicationConfigError,
    build_config,
    child_environment,
    find_litestream,
    replica_description,
    resolve_s3_credentials,
    write_config,
)
from gateway.replication_lag import (
    LagSample,
    LagTracker,
    ReplicaPosition,
    db_changed_at,
    file_replica_position,
    local_txid,
    parse_ltx_listing,
)
from gateway.store.store import DB_FILENAME

logger = logging.getLogger(__name__)

STOP_TIMEOUT_S = SHUTDOWN_SYNC_TIMEOUT_S + 5.0  # litestream flushes to the replica on SIGTERM
GOOD_RUN_S = 60.0  # a run this long resets the restart backoff
GUARD_RETRY_S = 5.0
PIDFILE_NAME = "litestream.pid"
_CHANNELS = {"lag": "measuring the replica's lag", "blobs": "the blob mirror"}
S3_PROBE_INTERVAL_S = 5.0
MAX_LINE = 500

_LEVEL_RE = re.compile(r"\blevel=(\w+)")
_MSG_RE = re.compile(r'\bmsg=("(?:[^"\\]|\\.)*"|\S+)')
_TIME_RE = re.compile(r"\btime=\S+\s*")


def _iso(ts: float | None) -> str | None:
    if not ts:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _unquote(value: str) -> str:
    if value.startswith('"') and value.endswith('"'):
        return value[1:-1].replace('\\"', '"')
    return value


def parse_log_line(line: str) -> tuple[int, str]:
    """(logging level, message) of a litestream log line: ``msg`` first, then its attributes."""
    text = line.strip()[:MAX_LINE]
    level_m = _LEVEL_RE.search(text)
    level_name = level_m.group(1).upper() if level_m else ""
    if text.startswith("Error:") or level_name == "ERROR":
        level = logging.ERROR
    elif level_name in ("WARN", "WARNING"):
        level = logging.WARNING
    else:
        level = logging.DEBUG  # INFO lines (compactions, snapshots) are routine
    msg_m = _MSG_RE.search(text)
    if msg_m is None:
        return level, text.removeprefix("Error: ")
    rest = _TIME_RE.sub("", text[msg_m.end() :])
    rest = _LEVEL_RE.sub("", rest).strip()
    message = _unquote(msg_m.group(1))
    return level, f"{message} {rest}" if rest else message


def _pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def db_was_replicated(db_path: Path) -> bool | None:
    """True if litestream has managed this database file; None if it does not exist (blocking)."""
    if not db_path.exists():
        return None
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        row = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_litestream_seq'"
        ).fetchone()
    finally:
        conn.close()
    return row is not None


class Replicator:
    """Runs and supervises litestream for one database; measures the replica's lag."""

    def __init__(
        self,
        *,
        db_path: Path,
        data_dir: Path,
        settings: ReplicationSection,
        environ: Mapping[str, str] | None = None,
        poll_interval_s: float = 0.25,
        blob_interval_s: float = 2.0,
        backoff_initial_s: float = 1.0,
    ) -> None:
        self.db_path = db_path
        self.data_dir = data_dir
        self.settings = settings
        self._environ = dict(os.environ if environ is None else environ)
        self._poll_interval_s = poll_interval_s
        self._blob_interval_s = blob_interval_s
        self._backoff_initial_s = backoff_initial_s
        self.config_path = data_dir / CONFIG_FILENAME
        self._tracker = LagTracker(settle_s=max(5.0, 10 * settings.monitor_interval_s))
        self._proc: asyncio.subprocess.Process | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._state = "stopped"
        self._restarts = 0
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        self._started_at: float | None = None
        self._replica = ReplicaPosition(0, 0.0)
        self._s3_probed_at = 0.0
        self._blob_mirror: BlobMirror | None = None
        self._blob_errors = 0
        self._env: dict[str, str] = {}
        self._binary: Path | None = None
        self._pid_write: asyncio.Future[None] | None = None
        self._logged: dict[str, str] = {}

    @classmethod
    def from_config(cls, config: GatewayConfig, **kwargs: Any) -> Replicator:
        data_dir = config.gateway.data_dir.absolute()
        return cls(
            db_path=data_dir / DB_FILENAME,
            data_dir=data_dir,
            settings=config.replication,
            **kwargs,
        )

    # --- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Write litestream's config and start supervising it (raises ReplicationConfigError)."""
        if self._tasks:
            return
        key = self.db_path.absolute()
        if key in _RUNNING:
            raise ReplicationConfigError(f"{self.db_path} is already being replicated")
        self._binary = find_litestream(self.settings)
        credentials = resolve_s3_credentials(self.settings, self._environ)
        self._env = child_environment(credentials, self._environ)
        config = build_config(self.db_path, self.settings)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._prepare_dirs, config)
        if self.settings.path is not None and self.settings.blobs:
            self._blob_mirror = BlobMirror(
                self.data_dir / BLOBS_DIRNAME, self.settings.path / BLOBS_DIRNAME
            )
        self._stopping.clear()
        self._state = "starting"
        self._tasks = [
            asyncio.create_task(self._async_supervise(), name="replication-supervise"),
            asyncio.create_task(self._async_poll(), name="replication-lag"),
        ]
        if self._blob_mirror is not None:
            self._tasks.append(asyncio.create_task(self._async_mirror(), name="replication-blobs"))
        _RUNNING[key] = self
        logger.info(
            "replicating %s to %s with litestream", self.db_path, replica_description(self.settings)
        )

    @property
    def pidfile(self) -> Path:
        return self.data_dir / PIDFILE_NAME

    def _write_pidfile(self, pid: int) -> None:
        self.pidfile.write_text(f"{pid}\n")

    def _stop_orphan(self) -> None:
        """Stop a litestream a previous gateway run left behind for this config (blocking)."""
        try:
            pid = int(self.pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            for _ in range(20):  # empty while a process is between fork and exec
                if cmdline != [b""]:
                    break
                time.sleep(0.05)
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return
        if not any(arg.endswith(b"litestream") for arg in cmdline) or (
            str(self.config_path).encode() not in cmdline
        ):
            return  # the pid now belongs to something else
        logger.warning("stopping litestream (pid %d) left over from a previous run", pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def _prepare_dirs(self, config: dict[str, Any]) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._stop_orphan()
        write_config(self.config_path, config)
        if self.settings.path is not None:
            try:
                self.settings.path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ReplicationConfigError(
                    f"the replica directory {self.settings.path} cannot be created ({exc.strerror})"
                ) from None

    async def stop(self) -> None:
        """Stop litestream (it flushes to the replica first) and the background tasks."""
        if not self._tasks:
            return
        self._stopping.set()
        _RUNNING.pop(self.db_path.absolute(), None)
        await self._async_terminate()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._pid_write is not None:  # a write cancelled mid-way still runs: let it land
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await self._pid_write
            self._pid_write = None
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: self.pidfile.unlink(missing_ok=True)
        )
        self._state = "stopped"

    async def _async_terminate(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            logger.warning("litestream did not stop within %.0f s; killing it", STOP_TIMEOUT_S)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    # --- supervision ---------------------------------------------------------------

    async def _async_sleep_or_stop(self, seconds: float) -> bool:
        """Sleep; True if a stop was requested meanwhile."""
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            return False
        return True

    def _problem(self, channel: str, message: str | None, level: int = logging.ERROR) -> None:
        """Record a recurring check's problem; log it once, not at every retry."""
        if message is None:
            if self._logged.pop(channel, None) is not None:
                logger.info("%s works again", _CHANNELS.get(channel, channel))
            return
        self._set_error(message)
        if self._logged.get(channel) != message:
            self._logged[channel] = message
            logger.log(level, "%s", message)

    def _set_error(self, message: str) -> None:
        self._last_error = message[:MAX_LINE]
        self._last_error_at = time.time()

    async def _async_replica_matches(self) -> bool:
        loop = asyncio.get_running_loop()
        replicated = await loop.run_in_executor(None, db_was_replicated, self.db_path)
        if replicated is None:
            self._state = "waiting"
            return False  # the store has not created the database yet
        if replicated:
            return True
        replica = await self._async_replica_position(force=True)
        if replica.txid == 0:
            return True  # an empty replica: a first start
        message = (
            f"the replica {replica_description(self.settings)} holds data (txid {replica.txid}) "
            f"that {self.db_path} never came from; restore it with `outpost-gateway restore` "
            "or move the replica aside"
        )
        if self._state != "refused":
            logger.error("not replicating: %s", message)
        self._state = "refused"
        self._set_error(message)
        return False

    async def _async_supervise(self) -> None:
        backoff = self._backoff_initial_s
        while not self._stopping.is_set():
            try:
                matches = await self._async_replica_matches()
            except (OSError, sqlite3.Error, ValueError) as exc:
                self._set_error(f"cannot check the replica: {exc}")
                matches = False
            if not matches:
                if await self._async_sleep_or_stop(GUARD_RETRY_S):
                    return
                continue
            started = time.monotonic()
            try:
                rc = await self._async_run_once()
            except OSError as exc:
                self._set_error(f"litestream could not be started: {exc.strerror or exc}")
                logger.error("litestream could not be started: %s", exc)  # noqa: TRY400
                rc = None
            if self._stopping.is_set():
                return
            if rc is not None:
                how = f"was killed by signal {-rc}" if rc < 0 else f"exited with code {rc}"
                self._set_error(f"litestream {how}")
                logger.error("litestream %s; restarting in %.1f s", how, backoff)
            self._restarts += 1
            self._state = "restarting"
            if time.monotonic() - started >= GOOD_RUN_S:
                backoff = self._backoff_initial_s
            if await self._async_sleep_or_stop(backoff):
                return
            backoff = min(backoff * 2, self.settings.restart_backoff_max_s)

    async def _async_run_once(self) -> int:
        assert self._binary is not None
        cmd = [str(self._binary), "replicate", "-no-expand-env", "-config", str(self.config_path)]
        setpriv = shutil.which("setpriv", path=self._env.get("PATH"))
        if setpriv:
            # If the gateway dies without stopping it (SIGKILL, OOM), litestream
            # gets SIGTERM and exits after its final sync instead of lingering.
            cmd = [setpriv, "--pdeathsig", "TERM", "--", *cmd]
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self._env,
            start_new_session=True,  # a Ctrl-C on the terminal reaches us, not it
        )
        self._proc = proc
        self._state = "running"
        self._started_at = time.time()
        self._pid_write = asyncio.get_running_loop().run_in_executor(
            None, self._write_pidfile, proc.pid
        )
        await self._pid_write
        logger.debug("litestream started (pid %d)", proc.pid)
        assert proc.stdout is not None
        await self._async_forward_logs(proc.stdout)
        return await proc.wait()

    async def _async_forward_logs(self, stream: asyncio.StreamReader) -> None:
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # a line longer than the buffer: skip it
                continue
            if not raw:
                return
            level, message = parse_log_line(raw.decode("utf-8", "replace"))
            if level >= logging.ERROR:
                self._set_error(f"litestream: {message}")
            logger.log(level, "litestream: %s", message)

    # --- lag -----------------------------------------------------------------------------

    async def _async_replica_position(self, force: bool = False) -> ReplicaPosition:
        loop = asyncio.get_running_loop()
        if self.settings.path is not None:
            self._replica = await loop.run_in_executor(
                None, file_replica_position, self.settings.path
            )
            return self._replica
        now = time.monotonic()
        if force or now - self._s3_probed_at >= S3_PROBE_INTERVAL_S:
            self._s3_probed_at = now
            self._replica = await self._async_s3_position()
        return self._replica

    async def _async_s3_position(self) -> ReplicaPosition:
        assert self._binary is not None
        proc = await asyncio.create_subprocess_exec(
            str(self._binary),
            "ltx",
            "-no-expand-env",
            "-json",
            "-level",
            "all",
            "-config",
            str(self.config_path),
            str(self.db_path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self._env,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise OSError("listing the S3 replica timed out") from None
        if proc.returncode != 0:
            raise OSError(err.decode("utf-8", "replace").strip()[:MAX_LINE] or "ltx failed")
        return parse_ltx_listing(out.decode())

    def _sample_local(self) -> tuple[float, int]:
        return db_changed_at(self.db_path), local_txid(self.db_path)

    async def _async_poll(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            try:
                replica = await self._async_replica_position()
                changed, local = await loop.run_in_executor(None, self._sample_local)
                self._tracker.observe(
                    LagSample(
                        at=time.time(),
                        db_changed_at=changed,
                        replica=replica,
                        local_txid=local,
                        litestream_running=self.running,
                    )
                )
                self._problem("lag", None)
            except (OSError, ValueError, KeyError) as exc:
                self._problem("lag", f"cannot measure the replica's lag: {exc}", logging.WARNING)
            if await self._async_sleep_or_stop(self._poll_interval_s):
                return

    async def _async_mirror(self) -> None:
        assert self._blob_mirror is not None
        mirror = self._blob_mirror
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            try:
                result = await loop.run_in_executor(None, mirror.run_once)
                if result.errors:
                    self._blob_errors += len(result.errors)
                    self._problem("blobs", f"blob mirror: {result.errors[0]}")
                else:
                    self._problem("blobs", None)
            except OSError as exc:
                self._blob_errors += 1
                self._problem("blobs", f"blob mirror: {exc.strerror or exc}: {exc.filename}")
            if await self._async_sleep_or_stop(self._blob_interval_s):
                return

    # --- status ---------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None

    def lag_s(self) -> float | None:
        return self._tracker.lag_s()

    def status(self) -> dict[str, Any]:
        """Replica health for /api/v1/status, /metrics and the heartbeat (safe in the loop)."""
        lag = self._tracker.lag_s()
        last = self._tracker.last
        return {
            "enabled": True,
            "state": self._state if self._tasks else "stopped",
            "running": self.running,
            "pid": self.pid,
            "replica": replica_description(self.settings),
            "lag_s": None if lag is None else round(lag, 3),
            "replica_txid": self._replica.txid,
            "replica_updated_at": _iso(self._replica.timestamp),
            "db_changed_at": _iso(last.db_changed_at if last else None),
            "restarts": self._restarts,
            "last_error": self._last_error,
            "last_error_at": _iso(self._last_error_at),
            "blobs_mirrored": self._blob_mirror is not None,
            "blobs_copied": self._blob_mirror.mirrored if self._blob_mirror else 0,
            "blob_errors": self._blob_errors,
        }


DISABLED_STATUS: dict[str, Any] = {"enabled": False}


# --- Prometheus ----------------------------------------------------------------------


class ReplicationCollector:
    """A prometheus_client collector reading :meth:`Replicator.status` at scrape time."""

    def __init__(self, replicator: Replicator) -> None:
        self._replicator = replicator

    def describe(self) -> Iterable[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        status = self._replicator.status()
        up = GaugeMetricFamily("outpost_replication_up", "1 while litestream runs")
        up.add_metric([], 1.0 if status["running"] else 0.0)
        yield up
        lag = GaugeMetricFamily(
            "outpost_replication_lag_seconds",
            "Age of the oldest change the replica does not hold yet (0: replica is current)",
        )
        if status["lag_s"] is not None:
            lag.add_metric([], float(status["lag_s"]))
        yield lag
        restarts = CounterMetricFamily(
            "outpost_replication_restarts", "litestream restarts since the gateway started"
        )
        restarts.add_metric([], float(status["restarts"]))
        yield restarts
        error = GaugeMetricFamily(
            "outpost_replication_last_error_timestamp_seconds",
            "When replication last reported an error (0: never)",
        )
        error.add_metric([], self._replicator._last_error_at or 0.0)
        yield error
        txid = GaugeMetricFamily("outpost_replication_replica_txid", "Newest txid on the replica")
        txid.add_metric([], float(status["replica_txid"]))
        yield txid


# --- aiohttp -----------------------------------------------------------------------

REPLICATOR_KEY = web.AppKey("outpost_replicator", Replicator)
# One litestream per database file: the replicators running in this process.
_RUNNING: dict[Path, Replicator] = {}


def status_for_db(db_path: Path) -> dict[str, Any]:
    """Status of the replicator running for ``db_path`` (for the heartbeat), or disabled."""
    replicator = _RUNNING.get(Path(db_path).absolute())
    return replicator.status() if replicator is not None else dict(DISABLED_STATUS)


def replication_status(app: web.Application) -> dict[str, Any]:
    """``status()`` of the app's replicator, or ``{"enabled": False}`` (for /api/v1/status)."""
    replicator = app.get(REPLICATOR_KEY)
    return replicator.status() if replicator is not None else dict(DISABLED_STATUS)


async def replication_ctx(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx`` entry: runs the replicator while the app runs, when enabled.

    Put it first among the background services so it stops last: the final
    writes of the others reach the replica before litestream exits.
    """
    config = app[CONFIG_KEY]
    if not config.replication.enabled:
        yield
        return
    replicator = Replicator.from_config(config)
    await replicator.start()
    app[REPLICATOR_KEY] = replicator
    collector = ReplicationCollector(replicator)
    registry = app[METRICS_KEY].registry if METRICS_KEY in app else None
    if registry is not None:
        registry.register(collector)
    try:
        yield
    finally:
        if registry is not None:
            registry.unregister(collector)
        await replicator.stop()

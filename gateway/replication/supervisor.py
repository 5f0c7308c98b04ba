"""Continuous replication of the gateway database with litestream.

The gateway runs ``litestream replicate`` as its own child process (see
docs/replication.md for why not a separate systemd unit) and keeps it
alive: when it exits for any reason other than our stop, it is started again
after an exponential backoff (1 s doubling to ``restart_backoff_max_s``, reset
after a minute of good running). Its log lines are forwarded to our logger
(its errors become ``last_error``).

Use it as an aiohttp ``cleanup_ctx`` entry
(:func:`gateway.replication.service.replication_ctx`) or directly::

    replicator = Replicator.from_config(config)
    await replicator.start()
    replicator.status()  # {"running": True, "lag_s": 0.0, "last_error": None, ...}
    await replicator.stop()

Before starting litestream the replicator checks that the replica belongs to
this database (``gateway.replication.guard``); when it does not, it refuses,
says so in ``last_error``, and checks again every few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from gateway.config import GatewayConfig, ReplicationSection
from gateway.replication.blob_mirror import BLOBS_DIRNAME, BlobMirror
from gateway.replication.config import (
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
from gateway.replication.guard import db_was_replicated, foreign_replica_message
from gateway.replication.lag import (
    LagSample,
    LagTracker,
    ReplicaPosition,
    async_s3_replica_position,
    db_changed_at,
    file_replica_position,
    local_txid,
)
from gateway.replication.logs import MAX_LINE, parse_log_line
from gateway.replication.pidfile import PIDFILE_NAME, stop_orphan, write_pidfile
from gateway.store.files import FileCheckError
from gateway.store.store import DB_FILENAME

logger = logging.getLogger(__name__)

STOP_TIMEOUT_S = SHUTDOWN_SYNC_TIMEOUT_S + 5.0  # litestream flushes to the replica on SIGTERM
GOOD_RUN_S = 60.0  # a run this long resets the restart backoff
GUARD_RETRY_S = 5.0
_CHANNELS = {"lag": "measuring the replica's lag", "blobs": "the blob mirror"}
S3_PROBE_INTERVAL_S = 5.0


def _iso(ts: float | None) -> str | None:
    if not ts:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Replicator:
    """Runs and supervises litestream for one database; measures the replica's lag."""

    # One litestream per database file: the databases replicated by this process.
    _replicating: ClassVar[set[Path]] = set()

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
        if key in Replicator._replicating:
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
        Replicator._replicating.add(key)
        logger.info(
            "replicating %s to %s with litestream", self.db_path, replica_description(self.settings)
        )

    @property
    def pidfile(self) -> Path:
        return self.data_dir / PIDFILE_NAME

    def _prepare_dirs(self, config: dict[str, Any]) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        stop_orphan(self.pidfile, self.config_path, STOP_TIMEOUT_S)
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
        Replicator._replicating.discard(self.db_path.absolute())
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
        message = foreign_replica_message(
            replica_description(self.settings), replica.txid, self.db_path
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
            except (OSError, FileCheckError, ValueError) as exc:
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
            None, write_pidfile, self.pidfile, proc.pid
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
            assert self._binary is not None
            self._replica = await async_s3_replica_position(
                self._binary, self.config_path, self.db_path, self._env
            )
        return self._replica

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

    @property
    def last_error_at(self) -> float | None:
        return self._last_error_at

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

"""Measuring replication lag: how old is the oldest change the replica lacks?

Two facts are read from disk, not from litestream's word:

- the database's newest change: the mtime of ``gateway.db-wal`` (every
  commit writes the WAL; a checkpoint writes only the database file);
- the replica's newest data: the LTX file holding the highest transaction id
  (litestream stamps each LTX with the time it read those WAL frames, and
  sets the file's mtime to it). For a file replica that is a directory
  listing plus one ``stat``; for S3, ``litestream ltx -json`` (1 s resolution,
  rounded down, so never optimistic).

``LagTracker`` turns periodic samples into ``lag_s``: 0 while the replica
holds every change, otherwise the time since the last moment the replica was
known to hold everything (an upper bound, precise to one poll interval).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

LTX_SUFFIX = ".ltx"
SNAPSHOT_LEVEL = "9"


@dataclass(frozen=True, slots=True)
class ReplicaPosition:
    txid: int  # highest transaction id the replica holds (0: nothing yet)
    timestamp: float  # when litestream read that data from the WAL (epoch s; 0: nothing)


def _parse_ltx_name(name: str) -> tuple[int, int] | None:
    if not name.endswith(LTX_SUFFIX):
        return None
    lo, sep, hi = name[: -len(LTX_SUFFIX)].partition("-")
    if not sep:
        return None
    try:
        return int(lo, 16), int(hi, 16)
    except ValueError:
        return None


def ltx_max_txid(ltx_dir: Path) -> tuple[int, float]:
    """(max txid, earliest mtime among the files that reach it) over every level of ``ltx_dir``.

    Only the names are listed; one ``stat`` per level. The earliest mtime
    among files ending at the top txid is the L0 file's own timestamp:
    compactions of the same data carry it too. Snapshots (level 9) are
    stamped when taken, which can be after a change they do not hold, so
    they count only when no other level has a file.
    """
    best_txid, best_ts = 0, 0.0
    try:
        levels = sorted(
            (e for e in os.scandir(ltx_dir) if e.is_dir()),
            key=lambda e: e.name == SNAPSHOT_LEVEL,  # snapshots last
        )
    except (FileNotFoundError, NotADirectoryError):
        return 0, 0.0
    for level in levels:
        if level.name == SNAPSHOT_LEVEL and best_txid:
            break
        top: tuple[int, str] | None = None
        try:
            with os.scandir(level.path) as entries:
                for entry in entries:
                    parsed = _parse_ltx_name(entry.name)
                    if parsed is not None and (top is None or parsed[1] > top[0]):
                        top = (parsed[1], entry.path)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if top is None:
            continue
        try:
            mtime = os.stat(top[1]).st_mtime
        except FileNotFoundError:  # compacted away between listing and stat
            continue
        if top[0] > best_txid or (top[0] == best_txid and mtime < best_ts):
            best_txid, best_ts = top[0], mtime
    return best_txid, best_ts


def file_replica_position(replica_dir: Path) -> ReplicaPosition:
    txid, ts = ltx_max_txid(replica_dir / "ltx")
    return ReplicaPosition(txid, ts)


def local_txid(db_path: Path) -> int:
    """The highest transaction id litestream has taken from the WAL (its meta dir)."""
    return ltx_max_txid(meta_dir(db_path) / "ltx")[0]


def meta_dir(db_path: Path) -> Path:
    """litestream's working directory next to the database."""
    return db_path.with_name(f".{db_path.name}-litestream")


def parse_ltx_listing(output: str) -> ReplicaPosition:
    """Parse ``litestream ltx -json -level all`` into the replica's position."""
    best_txid, best_ts = 0, 0.0
    for item in json.loads(output or "[]") or []:
        txid = int(item["max_txid"], 16)
        ts = datetime.fromisoformat(item["timestamp"].replace("Z", "+00:00")).timestamp()
        if txid > best_txid or (txid == best_txid and ts < best_ts):
            best_txid, best_ts = txid, ts
    return ReplicaPosition(best_txid, best_ts)


def db_changed_at(db_path: Path) -> float:
    """The time of the database's newest committed change (the WAL's mtime)."""
    for candidate in (Path(f"{db_path}-wal"), db_path):
        try:
            return candidate.stat().st_mtime
        except FileNotFoundError:
            continue
    return 0.0


@dataclass(frozen=True, slots=True)
class LagSample:
    at: float  # wall-clock time of the sample
    db_changed_at: float
    replica: ReplicaPosition
    local_txid: int  # litestream's own newest txid
    litestream_running: bool


class LagTracker:
    """Turns samples into the replica's lag (plain logic, safe in the loop)."""

    def __init__(self, settle_s: float = 5.0) -> None:
        # A WAL mtime that changed without new data (a truncation) is forgiven
        # once litestream has had settle_s to look and has nothing unsent.
        self._settle_s = settle_s
        self._pending: deque[tuple[float, float]] = deque(maxlen=10_000)  # (at, db_changed_at)
        self._covered_until: float | None = None
        self._last: LagSample | None = None
        self._forgiven_change = 0.0

    def observe(self, sample: LagSample) -> None:
        self._last = sample
        replica_ts = sample.replica.timestamp
        changed = sample.db_changed_at
        if changed <= replica_ts or changed <= self._forgiven_change:
            self._covered_until = sample.at
            self._pending.clear()
            return
        if (
            sample.litestream_running
            and sample.local_txid <= sample.replica.txid
            and sample.at - changed > self._settle_s
        ):
            # litestream looked at the WAL long after this change and has
            # nothing newer than the replica: the change carried no data.
            self._forgiven_change = changed
            self._covered_until = sample.at
            self._pending.clear()
            return
        # Everything up to the last sample whose newest change the replica now
        # holds is on the replica; what came after may not be.
        while self._pending and self._pending[0][1] <= replica_ts:
            at, _ = self._pending.popleft()
            self._covered_until = max(self._covered_until or 0.0, at)
        self._pending.append((sample.at, changed))

    def lag_s(self, now: float | None = None) -> float | None:
        """Seconds the replica is behind (0 when it holds every change); None before a sample."""
        if self._last is None:
            return None
        if not self._pending:
            return 0.0
        now = time.time() if now is None else now
        since = self._covered_until
        if since is None:  # never seen caught up: count from the replica's newest data
            since = self._last.replica.timestamp or self._pending[0][1]
        return max(0.0, now - max(since, self._last.replica.timestamp))

    @property
    def last(self) -> LagSample | None:
        return self._last


async def async_s3_replica_position(
    binary: Path, config_path: Path, db_path: Path, env: dict[str, str]
) -> ReplicaPosition:
    """The S3 replica's newest txid, from ``litestream ltx`` (a subprocess, at most 30 s)."""
    proc = await asyncio.create_subprocess_exec(
        str(binary),
        "ltx",
        "-no-expand-env",
        "-json",
        "-level",
        "all",
        "-config",
        str(config_path),
        str(db_path),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise OSError("listing the S3 replica timed out") from None
    if proc.returncode != 0:
        raise OSError(err.decode("utf-8", "replace").strip()[:500] or "ltx failed")
    return parse_ltx_listing(out.decode())

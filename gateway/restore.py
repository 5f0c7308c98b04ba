"""``outpost-gateway restore``: rebuild the data directory from the replica.

For new hardware after the SD card died: the replica (the USB disk or the
bucket named in gateway.toml) is restored with ``litestream restore`` into a
temporary file next to the database, checked (``quick_check``), and only
then moved into place. Blobs mirrored next to a file replica are copied back;
attachments whose blob is not on the replica are marked incomplete so the
devices that still hold them upload them again.

Safety:
- an existing database is never overwritten without ``--force``; with it,
  the old files are kept as ``gateway.db.replaced-<UTC stamp>`` (and -wal);
- a database some process has open (a running gateway or litestream) is
  never touched, even with ``--force``: stop the gateway first;
- litestream's stale working directory (``.gateway.db-litestream``) is
  removed, so replication resumes on top of the replica's history.

Run it in its own process (the CLI): the in-use check relies on POSIX locks,
which a process cannot see among its own.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from gateway.config import GatewayConfig, load
from gateway.replication.blob_mirror import BLOBS_DIRNAME, restore_blobs
from gateway.replication.config import (
    ReplicationConfigError,
    build_config,
    child_environment,
    find_litestream,
    replica_description,
    resolve_s3_credentials,
    write_config,
)
from gateway.replication.lag import meta_dir
from gateway.store.files import inspect_restored
from gateway.store.migration import StoreError
from gateway.store.store import DB_FILENAME
from outpost.cli import add_version
from outpost.config import ConfigError
from outpost.files import fsync_dir

RESTORE_TIMEOUT_S = 600.0
_SHM_DMS_BYTE = 128  # SQLite's "dead man switch" byte in -shm: every open connection locks it


class RestoreError(Exception):
    """The restore cannot proceed; ``str()`` is one sentence for the technician."""


@dataclass
class RestoreReport:
    db_path: Path
    replica: str
    txid: str
    db_bytes: int
    seconds: float
    envelopes: dict[str, int] = field(default_factory=dict)
    activities: int = 0
    blobs_restored: int = 0
    blobs_missing: int = 0
    replaced: Path | None = None

    def lines(self) -> list[str]:
        total = sum(self.envelopes.values())
        counts = ", ".join(f"{state} {n}" for state, n in sorted(self.envelopes.items())) or "none"
        out = [
            f"restored {self.db_path} from {self.replica} "
            f"(txid {self.txid}, {self.db_bytes} bytes) in {self.seconds:.1f} s",
            f"envelopes: {total} ({counts})",
            f"activities: {self.activities}",
            f"blobs: {self.blobs_restored} restored, {self.blobs_missing} not on the replica"
            + (
                " (marked incomplete: devices will upload them again)" if self.blobs_missing else ""
            ),
        ]
        if self.replaced is not None:
            out.append(f"the previous database was kept as {self.replaced}")
        return out


def database_in_use(db_path: Path) -> bool:
    """True if another process has the database open (blocking; see module notes)."""
    shm = Path(f"{db_path}-shm")
    try:
        fd = os.open(shm, os.O_RDWR)
    except FileNotFoundError:
        return False
    except PermissionError as exc:
        raise RestoreError(f"{shm} cannot be opened to check whether it is in use") from exc
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _SHM_DMS_BYTE)
        except OSError:
            return True
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, _SHM_DMS_BYTE)
        return False
    finally:
        os.close(fd)


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def _run_litestream_restore(
    config: GatewayConfig, db_path: Path, out_path: Path, work_dir: Path
) -> str:
    settings = config.replication
    binary = find_litestream(settings)
    env = child_environment(resolve_s3_credentials(settings))
    cfg_path = work_dir / "litestream-restore.yml"
    write_config(cfg_path, build_config(db_path, settings))
    cmd = [
        str(binary),
        "restore",
        "-no-expand-env",
        "-config",
        str(cfg_path),
        "-o",
        str(out_path),
        "-json",
        str(db_path),
    ]
    try:
        proc = subprocess.run(
            cmd,
            env=env,
            capture_output=True,
            text=True,
            timeout=RESTORE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RestoreError(
            f"litestream restore took longer than {RESTORE_TIMEOUT_S:.0f} s and was stopped"
        ) from None
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        why = detail[-1] if detail else f"exit code {proc.returncode}"
        if "no matching backup" in why or "no backups" in why or "not found" in why:
            raise RestoreError(
                f"the replica {replica_description(settings)} holds no backup of {db_path.name}"
            )
        raise RestoreError(f"litestream restore failed: {why.removeprefix('Error: ')}")
    start = proc.stdout.find("{")
    try:
        summary = json.loads(proc.stdout[start:]) if start >= 0 else {}
    except json.JSONDecodeError:
        summary = {}
    return str(summary.get("txid", "?"))


def _inspect(path: Path, data_dir: Path) -> tuple[dict[str, int], int, list[str]]:
    """Envelope counts by state, activities, and the complete attachments whose blob is missing."""
    try:
        return inspect_restored(path, data_dir)
    except StoreError as exc:
        raise RestoreError(str(exc)) from None


def restore(
    config: GatewayConfig, *, force: bool = False, config_path: str | Path | None = None
) -> RestoreReport:
    """Restore the data directory from the replica (blocking). Raises RestoreError.

    ``config_path``: the file ``config`` came from, for the errors to name.
    """
    settings = config.replication
    data_dir = config.gateway.data_dir.absolute()
    db_path = data_dir / DB_FILENAME
    exists = _check_may_restore(config, db_path, force, config_path)
    data_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=".restore-", dir=data_dir) as work:
        work_dir = Path(work)
        tmp_db = work_dir / DB_FILENAME
        txid = _run_litestream_restore(config, db_path, tmp_db, work_dir)
        blobs_restored = 0
        if settings.path is not None and (settings.path / BLOBS_DIRNAME).is_dir():
            blobs_restored, _ = restore_blobs(
                settings.path / BLOBS_DIRNAME, data_dir / BLOBS_DIRNAME
            )
        envelopes, activities, missing = _inspect(tmp_db, data_dir)
        replaced = _put_in_place(tmp_db, db_path, exists)
    return RestoreReport(
        db_path=db_path,
        replica=replica_description(settings),
        txid=txid,
        db_bytes=db_path.stat().st_size,
        seconds=time.monotonic() - started,
        envelopes=envelopes,
        activities=activities,
        blobs_restored=blobs_restored,
        blobs_missing=len(missing),
        replaced=replaced,
    )


def _check_may_restore(
    config: GatewayConfig, db_path: Path, force: bool, config_path: str | Path | None
) -> bool:
    """Refuse a restore with no replica, or over a database in use (or without ``force``).

    Whether a database (or its WAL) is there to be replaced.
    """
    settings = config.replication
    if settings.path is None and settings.s3_url is None:
        where = str(config_path) if config_path is not None else "the gateway's config"
        raise RestoreError(
            f"{where} names no replica: set replication.path or replication.s3_url "
            "(or OUTPOST_REPLICATION_PATH / OUTPOST_REPLICATION_S3_URL)"
        )
    if settings.path is not None and not settings.path.is_dir():
        raise RestoreError(
            f"the replica directory {settings.path} does not exist (is the disk mounted?)"
        )
    exists = db_path.exists() or Path(f"{db_path}-wal").exists()
    if exists and database_in_use(db_path):
        raise RestoreError(
            f"{db_path} is in use by a running process; stop the gateway before restoring"
        )
    if exists and not force:
        raise RestoreError(
            f"{db_path} already exists; pass --force to replace it "
            "(the current files are kept beside it)"
        )
    return exists


def _put_in_place(tmp_db: Path, db_path: Path, exists: bool) -> Path | None:
    """Move the restored file to ``db_path``, the current one (if any) kept beside it."""
    replaced: Path | None = None
    if exists:
        replaced = db_path.with_name(f"{db_path.name}.replaced-{_stamp()}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{db_path}{suffix}")
            if src.exists():
                src.rename(Path(f"{replaced}{suffix}"))
    shutil.rmtree(meta_dir(db_path), ignore_errors=True)
    for suffix in ("-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    for suffix in ("-wal", "-shm"):
        Path(f"{tmp_db}{suffix}").unlink(missing_ok=True)
    os.replace(tmp_db, db_path)
    fsync_dir(db_path.parent)
    return replaced


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``restore`` subcommand's options (for gateway.cli)."""
    parser.add_argument(
        "--config", required=True, help="gateway.toml naming data_dir and the replica"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace an existing database (it is kept beside the restored one)",
    )


def restore_main(
    args: argparse.Namespace, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Run the restore for the CLI: report lines on stdout, one-line errors on stderr."""
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    try:
        config = load(args.config)
    except ConfigError as exc:
        print(f"outpost-gateway restore: {exc}", file=stderr)
        return 2
    try:
        report = restore(config, force=bool(args.force), config_path=args.config)
    except (RestoreError, ReplicationConfigError) as exc:
        print(f"outpost-gateway restore: {exc}", file=stderr)
        return 1
    except OSError as exc:
        print(f"outpost-gateway restore: {exc.strerror or exc}: {exc.filename or ''}", file=stderr)
        return 1
    for line in report.lines():
        print(line, file=stdout)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m gateway.restore --config FILE [--force]`` (the same as the CLI subcommand)."""
    parser = argparse.ArgumentParser(
        prog="outpost-gateway restore", description=__doc__.splitlines()[0]
    )
    add_arguments(parser)
    add_version(parser)
    return restore_main(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())

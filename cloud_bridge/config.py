"""The bridge's configuration (``bridge.toml``), validated at the boundary."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cloud_bridge.forwarded import networks
from outpost.config import Section, load_config
from outpost.mqtt_config import MqttSection
from outpost.wire.schemas import MAX_BLOB_BYTES
from outpost.wire.topics import BRIDGE_SHARE_GROUP


class CentralSection(Section):
    database_url: str = "sqlite:///var/central/central.db"
    data_dir: Path = Path("var/central")  # also holds the attachments: data_dir/blobs
    # The largest attachment (photo, signature) central accepts from a gateway; a larger
    # one is refused with a reason the gateway shows.
    max_blob_bytes: int = Field(default=64 * 1024 * 1024, ge=1, le=MAX_BLOB_BYTES)


class AdminSection(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8090, ge=0, le=65535)
    # None: a random token is generated on first start and kept 0600 in
    # data_dir/admin-token (its path is logged, never its value).
    token: str | None = Field(default=None, min_length=16)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # DB threads (each a connection) of the admin API and pages alone; replay and the
    # uplink's heartbeats have their own. 0: 2 on SQLite, 4 on PostgreSQL.
    db_threads: int = Field(default=0, ge=0, le=64)
    # Reverse proxies (addresses or networks) whose X-Forwarded-For / -Proto are
    # believed: the client's address in the audit log and the sign-in throttle,
    # and Secure cookies behind TLS (cloud_bridge/forwarded.py). Empty: none.
    trusted_proxies: tuple[str, ...] = ()

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        networks(value)  # raises naming a bad entry
        return value


class BridgeMqttSection(MqttSection):
    # MQTT 5 shared subscription, so several workers split the load. Off by default:
    # Mosquitto 2.0.x does not restore shared subscriptions from persistence, so after a
    # broker restart uplink published before the bridge resubscribes is lost (measured;
    # gateways resend after their ack timeout). A plain subscription survives it.
    shared: bool = False
    # The shared-subscription group. Provisioned fleets get a random name that no
    # gateway knows: a gateway joining the bridges' group would make Mosquitto drop
    # the uplink messages it is dealt (see docs/provisioning.md).
    share_group: str = Field(default=BRIDGE_SHARE_GROUP, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    session_expiry_s: int = Field(default=24 * 3600, ge=0)
    # False: this worker takes none of the gateways' uplink or state; it serves the admin
    # API and the pages and sends downlink (dispatch, recall, user pushes) only. An admin
    # worker beside the uplink workers has its own process, event loop and CPU share, so
    # replay at its limit never slows an admin down (docs/scale.md).
    uplink: bool = True
    # MQTT 5 Receive Maximum: how many unacknowledged QoS 1 messages the broker hands
    # this worker at once. A message is acknowledged only after its group's commit and
    # its answers' PUBACKs, so this window bounds how many batches can share a commit.
    # 100 and 1,000 made no difference to the saturated ceiling here (the worker's CPU
    # is the limit: docs/benchmarks.md, "Fleet scale"). What it admits is still bounded
    # by [replay] queue_max_envelopes.
    receive_maximum: int = Field(default=100, ge=1, le=65535)


class ReplaySection(Section):
    """Group commit of uplink batches (see cloud_bridge.groupcommit)."""

    # Replay threads, each with its own connection; 0: 1 on SQLite (one writer
    # anyway), 2 on PostgreSQL (one applies while the next group gathers).
    threads: int = Field(default=0, ge=0, le=32)
    group_max_envelopes: int = Field(default=2000, ge=1, le=100_000)
    # How long the first batch of a short queue waits for others to share its commit.
    group_wait_ms: float = Field(default=3.0, ge=0, le=1000)
    # Beyond this many queued envelopes a batch is answered "busy, retry after" (a
    # BatchDeferred): cheap answers keep the broker's queue for the bridge short, where
    # silence would have the fleet time out and resend into it. The broker hands the
    # bridge at most [mqtt] receive_maximum unacknowledged messages, so this bounds
    # memory too: ~2 s of one worker's commits.
    queue_max_envelopes: int = Field(default=5000, ge=1)
    retry_after_s: float = Field(default=10.0, gt=0, le=3600)  # gateways add ±50 % jitter
    # The interpreter's thread switch interval for the bridge process (Python's default
    # is 5 ms): replay holds the GIL in CPU-bound work, the admin API waits for it.
    # 0: leave Python's default.
    switch_interval_ms: float = Field(default=1.0, ge=0, le=100)


class FleetSection(Section):
    silent_warn_s: float = Field(default=180, gt=0)
    silent_critical_s: float = Field(default=900, gt=0)
    backlog_warn_s: float = Field(default=3600, gt=0)
    backlog_critical_s: float = Field(default=6 * 3600, gt=0)
    disk_warn_mb: int = Field(default=1024, ge=0)
    disk_critical_mb: int = Field(default=256, ge=0)
    replica_lag_warn_s: float = Field(default=60, gt=0)
    replica_lag_critical_s: float = Field(default=900, gt=0)
    cert_warn_days: int = Field(default=30, ge=0)
    cert_critical_days: int = Field(default=7, ge=0)
    # A message central had to drop (undecodable, wrong topic) warns for this long.
    error_warn_s: float = Field(default=3600, ge=0)
    history_days: int = Field(default=7, ge=0)
    # A heartbeat goes into gateway_history at most once per this many seconds
    # (the row keeps the latest figures whatever it is).
    history_every_s: float = Field(default=300, ge=0, le=86_400)
    prune_interval_s: float = Field(default=3600, gt=0)
    page_refresh_s: int = Field(default=15, ge=2, le=3600)  # the fleet page reloads itself
    # GET /metrics asks for the admin token (Prometheus: authorization.credentials).
    metrics_auth: bool = True


class PlatformSection(Section):
    """The web platform's sign-in and sessions (see cloud_bridge.identity)."""

    session_idle_s: int = Field(default=30 * 60, ge=60)  # a page session ends after this idle
    session_max_s: int = Field(default=12 * 3600, ge=300)  # ... and at the latest after this
    api_session_s: int = Field(default=12 * 3600, ge=300)  # POST /api/v1/session tokens
    signin_max_failures: int = Field(default=5, ge=1, le=1000)  # guesses per user, then locked
    signin_window_s: int = Field(default=15 * 60, ge=1)  # failures forgotten after this quiet
    signin_lockout_s: int = Field(default=15 * 60, ge=1)
    # argon2 costs 64 MiB a check: at most this many run at once; others wait up to
    # password_wait_s, then get 503 with Retry-After.
    password_slots: int = Field(default=2, ge=1, le=64)
    password_wait_s: float = Field(default=10.0, gt=0)


class BridgeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    central: CentralSection = CentralSection()
    admin: AdminSection = AdminSection()
    mqtt: BridgeMqttSection = BridgeMqttSection()
    fleet: FleetSection = FleetSection()
    replay: ReplaySection = ReplaySection()
    platform: PlatformSection = PlatformSection()


def load(path: str | Path | None = None) -> BridgeConfig:
    return load_config(BridgeConfig, path)

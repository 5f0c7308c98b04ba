"""The ready-to-run ``gateway.toml`` and ``bridge.toml`` a bundle carries.

Each rendered file is parsed back through the service's own config model, so
a bundle never carries a config its service would refuse.
"""

from __future__ import annotations

import datetime as dt
import json
import tomllib

from pydantic import ValidationError

from cloud_bridge.config import BridgeConfig
from gateway.config import GatewayConfig
from outpost.config import ConfigError, load_config
from provisioning.bundle import tls_paths
from provisioning.errors import ProvisionError

DEFAULT_DATA_DIR = "/var/lib/outpost"
DEFAULT_DATABASE_URL = "sqlite:////var/lib/outpost/central.db"


def _s(value: str) -> str:
    """A TOML basic string (JSON string escapes are valid TOML)."""
    return json.dumps(value, ensure_ascii=False)


def _today() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")


def _mqtt_block(host: str, port: int, kind: str, root: str) -> list[str]:
    paths = tls_paths(kind, root)
    return [
        "[mqtt]",
        f"host = {_s(host)}",
        f"port = {port}",
        "tls = true",
        f"ca = {_s(paths['ca'])}",
        f"cert = {_s(paths['cert'])}",
        f"key = {_s(paths['key'])}",
        "keepalive = 30",
    ]


def gateway_toml(
    gateway_id: str,
    site: str,
    host: str,
    port: int,
    root: str,
    *,
    data_dir: str = DEFAULT_DATA_DIR,
    interfaces: list[str] | None = None,
    replica: str | None = None,
) -> str:
    lines = [
        f"# Outpost gateway {gateway_id!r} at {site!r}: written by `outpost-provision add-gateway` on {_today()}.",
        "# Any key can be overridden by the environment: OUTPOST_<SECTION>_<KEY>.",
        "",
        "[gateway]",
        f"id = {_s(gateway_id)}",
        f"site = {_s(site)}",
        f"data_dir = {_s(data_dir)}",
        "",
        "[lan]",
        "# Crews' phones reach the gateway over the site network.",
        'host = "0.0.0.0"',
        "port = 8080",
        "",
        *_mqtt_block(host, port, "gateway", root),
        "",
        "[discovery]",
        "enabled = true",
    ]
    if interfaces:
        lines.append(f"interfaces = [{', '.join(_s(i) for i in interfaces)}]")
    else:
        lines.append(
            '# interfaces = ["eth0"]  # where to advertise _outpost._tcp (default: 127.0.0.1 only)'
        )
    lines += ["", "[replication]"]
    if replica and replica.startswith("s3://"):
        lines += [
            "enabled = true",
            f"s3_url = {_s(replica)}",
            "# credentials: systemd credentials or OUTPOST_REPLICATION_S3_* in gateway.env",
        ]
    elif replica:
        lines += ["enabled = true", f"path = {_s(replica)}"]
    else:
        lines += [
            "enabled = false",
            '# path = "/mnt/usb/outpost-replica"  # litestream file replica; set enabled = true',
        ]
    text = "\n".join(lines) + "\n"
    _check(GatewayConfig, text, "gateway.toml")
    return text


def bridge_toml(
    name: str,
    host: str,
    port: int,
    root: str,
    *,
    share_group: str,
    data_dir: str = DEFAULT_DATA_DIR,
    database_url: str = DEFAULT_DATABASE_URL,
) -> str:
    lines = [
        f"# Outpost central bridge {name!r}: written by `outpost-provision add-bridge` on {_today()}.",
        "# Any key can be overridden by the environment: OUTPOST_<SECTION>_<KEY>.",
        "",
        "[central]",
        f"database_url = {_s(database_url)}",
        f"data_dir = {_s(data_dir)}",
        "",
        "[admin]",
        'host = "127.0.0.1"',
        "port = 8090",
        "# token: unset, a random one is kept 0600 in data_dir/admin-token on first start",
        "",
        *_mqtt_block(host, port, "bridge", root),
        "# The fleet's bridges share uplink work under a group name no gateway knows.",
        "shared = true",
        f"share_group = {_s(share_group)}",
    ]
    text = "\n".join(lines) + "\n"
    _check(BridgeConfig, text, "bridge.toml")
    return text


def _check(model: type[GatewayConfig] | type[BridgeConfig], text: str, name: str) -> None:
    try:
        model.model_validate(tomllib.loads(text))
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(part) for part in first["loc"])
        raise ProvisionError(
            f"the generated {name} would not load: {loc}: {first['msg']} (got {first.get('input')!r})"
        ) from None
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        first_line = str(exc).splitlines()[0]
        raise ProvisionError(f"the generated {name} would not load: {first_line}") from None


def load_installed(
    model: type[GatewayConfig] | type[BridgeConfig], path: str
) -> GatewayConfig | BridgeConfig:
    """Load an installed config as its service will (without environment overrides)."""
    try:
        return load_config(model, path, environ={})
    except ConfigError as exc:
        raise ProvisionError(str(exc)) from None

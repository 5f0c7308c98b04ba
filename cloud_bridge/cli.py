"""``outpost-bridge``: run the central side, or check its config.

    outpost-bridge run --config bridge.toml
    outpost-bridge run --config bridge.toml --check-config

A bad config prints one line naming the key and the problem and exits 2.
SIGINT and SIGTERM shut down cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from cloud_bridge import config as bridge_config
from cloud_bridge import heap
from outpost.cli import add_version, service_parser
from outpost.config import ConfigError
from outpost.logs import setup_logging
from outpost.tls import check_credentials

PROG = "outpost-bridge"
logger = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser, _sub = service_parser(
        PROG, "Outpost central bridge", "MQTT bridge, central database and admin API", "bridge.toml"
    )
    return add_version(parser)


async def _async_main(config: bridge_config.BridgeConfig) -> None:
    from cloud_bridge.service import run_bridge

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run_bridge(config, stop, on_started=heap.settle)


def _check_database_url(url: str) -> None:
    from sqlalchemy.engine import make_url

    try:
        u = make_url(url)
    except ArgumentError:
        raise ConfigError(f"central.database_url: not a database URL (got {url!r})") from None
    if u.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"central.database_url: only sqlite and postgresql are supported (got {u.drivername!r})"
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = bridge_config.load(args.config)
        check_credentials(config.mqtt)  # TLS files: one line naming the file
        _check_database_url(config.central.database_url)
    except ConfigError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config" or args.check_config:
        print(f"{PROG}: config OK (database {config.central.database_url.split('://')[0]})")
        return 0
    setup_logging(args.log_level)
    try:
        asyncio.run(_async_main(config))
    except SQLAlchemyError as exc:
        print(
            f"{PROG}: cannot use the central database: {exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0]}",
            file=sys.stderr,
        )
        return 1
    except OSError as exc:
        print(f"{PROG}: cannot start: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())

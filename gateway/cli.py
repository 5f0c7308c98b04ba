"""``outpost-gateway``: run the appliance, or check its config.

    outpost-gateway run --config gateway.toml
    outpost-gateway run --config gateway.toml --check-config
    outpost-gateway check-config --config gateway.toml
    outpost-gateway restore --config gateway.toml [--force]
    outpost-gateway discover [--timeout S] [--interface ADDR] [--json]
    outpost-gateway qr --config gateway.toml [--svg FILE] [--png FILE]

A bad config prints one line naming the key and the problem and exits 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gateway import config as gateway_config
from gateway.mdns_browser import add_discover_arguments, discover_main
from gateway.qr import add_qr_arguments, qr_main
from gateway.replication.config import ReplicationConfigError
from gateway.store import StoreError
from outpost.cli import add_version, service_parser
from outpost.config import ConfigError
from outpost.logs import setup_logging
from outpost.tls import check_credentials

PROG = "outpost-gateway"


def _parser() -> argparse.ArgumentParser:
    parser, sub = service_parser(
        PROG,
        "Outpost edge sync gateway",
        "serve the LAN API, uplink, mDNS and replication",
        "gateway.toml",
    )
    restore = sub.add_parser("restore", help="rebuild the data directory from the replica")
    restore.add_argument("--config", metavar="FILE", required=True)
    restore.add_argument(
        "--force", action="store_true", help="replace an existing database (kept beside it)"
    )
    discover = sub.add_parser("discover", help="list the gateways answering on the LAN (mDNS)")
    add_discover_arguments(discover)
    qr = sub.add_parser("qr", help="print the gateway's URL and a QR code of it")
    add_qr_arguments(qr)
    return add_version(parser)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "discover":
        return discover_main(args)
    if args.command == "qr":
        return qr_main(args)
    if args.command == "restore":
        from gateway.restore import restore_main

        return restore_main(args)
    try:
        config = gateway_config.load(args.config)
        check_credentials(config.mqtt)  # TLS files: one line naming the file
    except ConfigError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config" or args.check_config:
        print(f"{PROG}: config OK (gateway {config.gateway.id}, data in {config.gateway.data_dir})")
        return 0
    setup_logging(args.log_level)  # journald priorities under systemd
    from gateway.app import run  # heavy imports only when serving

    try:
        run(config)
    except StoreError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except ReplicationConfigError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"{PROG}: cannot start: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())

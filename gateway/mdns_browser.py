"""``outpost-gateway discover``: list the gateways answering on the LAN (mDNS).

For technicians: browses ``_outpost._tcp.local.`` for a few seconds and
prints each gateway's id, site, address and port. :func:`async_discover` is
the same as a function, for code and tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from gateway.mdns_advertiser import OUTPOST_SERVICE, WEB_APP_PATH
from outpost.cli import add_version

if TYPE_CHECKING:
    from zeroconf import ServiceStateChange, Zeroconf
    from zeroconf.asyncio import AsyncServiceInfo

# zeroconf is imported when browsing, not with this module: `outpost-gateway`
# builds its parser from here for every command (memory on a Pi).

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoundGateway:
    """One gateway that answered: what its TXT record and SRV/A records say."""

    gateway_id: str
    site: str
    addresses: tuple[str, ...]
    port: int
    host: str
    api: str
    path: str
    name: str

    @property
    def url(self) -> str:
        """The web app's URL by address (works on devices without mDNS names)."""
        host = self.addresses[0] if self.addresses else self.host.rstrip(".")
        return f"http://{host}:{self.port}{self.path}"


def _text(props: dict[bytes, bytes | None], key: str, default: str = "") -> str:
    raw = props.get(key.encode())
    return raw.decode("utf-8", errors="replace") if raw is not None else default


def _found(info: AsyncServiceInfo) -> FoundGateway | None:
    if info.port is None or info.server is None:
        return None
    from zeroconf import IPVersion

    props = info.properties
    return FoundGateway(
        gateway_id=_text(props, "id"),
        site=_text(props, "site"),
        addresses=tuple(info.parsed_addresses(IPVersion.V4Only)),
        port=info.port,
        host=info.server,
        api=_text(props, "api"),
        path=_text(props, "path", WEB_APP_PATH) or WEB_APP_PATH,
        name=info.name,
    )


async def async_discover(
    timeout_s: float = 3.0, interfaces: Sequence[str] | None = None
) -> list[FoundGateway]:
    """Gateways answering within ``timeout_s``, sorted by id.

    ``interfaces`` pins the IPv4 addresses to browse on (``["127.0.0.1"]`` in
    tests); ``None`` browses on every interface, as a technician on a site
    network wants.
    """
    from zeroconf import InterfaceChoice, IPVersion, ServiceStateChange
    from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    choice = list(interfaces) if interfaces else InterfaceChoice.All
    found: dict[str, FoundGateway] = {}
    lookups: dict[str, asyncio.Task[None]] = {}

    async with AsyncZeroconf(interfaces=choice, ip_version=IPVersion.V4Only) as aiozc:

        async def resolve(name: str) -> None:
            info = AsyncServiceInfo(OUTPOST_SERVICE, name)
            remaining_ms = max(int((deadline - loop.time()) * 1000), 1)
            if await info.async_request(aiozc.zeroconf, remaining_ms):
                gateway = _found(info)
                if gateway is not None:
                    found[name] = gateway

        def on_change(
            zeroconf: Zeroconf,
            service_type: str,
            name: str,
            state_change: ServiceStateChange,
        ) -> None:
            if state_change is ServiceStateChange.Removed:
                found.pop(name, None)
                return
            if name not in lookups or lookups[name].done():
                lookups[name] = loop.create_task(resolve(name), name=f"mdns-resolve {name}")

        browser = AsyncServiceBrowser(aiozc.zeroconf, OUTPOST_SERVICE, handlers=[on_change])
        try:
            await asyncio.sleep(max(deadline - loop.time(), 0))
        finally:
            await browser.async_cancel()
            for task in lookups.values():
                task.cancel()
            for task in lookups.values():
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    return sorted(found.values(), key=lambda g: (g.gateway_id, g.name))


def format_table(gateways: Sequence[FoundGateway]) -> str:
    rows = [("ID", "SITE", "ADDRESS", "PORT", "HOST")]
    rows += [
        (g.gateway_id, g.site, ",".join(g.addresses) or "-", str(g.port), g.host.rstrip("."))
        for g in gateways
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def add_discover_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        type=float,
        default=3.0,
        metavar="S",
        help="seconds to listen for answers (default 3)",
    )
    parser.add_argument(
        "--interface",
        action="append",
        metavar="ADDR",
        help="IPv4 address of the interface to browse on (repeatable; default: all)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def discover_main(args: argparse.Namespace) -> int:
    """Run ``outpost-gateway discover``; returns the exit status (1 when nobody answered)."""
    if args.timeout <= 0:
        print(
            "outpost-gateway discover: --timeout must be a positive number of seconds",
            file=sys.stderr,
        )
        return 2
    try:
        gateways = asyncio.run(async_discover(args.timeout, args.interface))
    except OSError as exc:
        where = ", ".join(args.interface or ["all interfaces"])
        print(
            f"outpost-gateway discover: cannot browse mDNS on {where}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    if args.json:
        print(json.dumps([asdict(g) | {"url": g.url} for g in gateways], indent=2))
    elif gateways:
        print(format_table(gateways))
    if not gateways:
        print(f"no gateway answered within {args.timeout:g} s", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry (``python -m gateway.mdns_browser``), same options as the subcommand."""
    parser = argparse.ArgumentParser(prog="outpost-gateway discover", description=__doc__)
    add_discover_arguments(parser)
    add_version(parser)
    return discover_main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

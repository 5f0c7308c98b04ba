"""The gateway's URL as a QR code, for phones that cannot resolve ``.local`` names.

Android before 12 does not resolve mDNS host names, so a crew member scans
the gateway's address instead: ``outpost-gateway qr --config FILE`` prints it
in the terminal, and the web app / status page serves ``GET /qr.svg``
(:func:`qr_svg_handler`) showing the address the viewer reached the gateway
by.
"""

from __future__ import annotations

import argparse
import io
import ipaddress
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from gateway.mdns_advertiser import WEB_APP_PATH, host_name, resolve_interface_addresses
from outpost.cli import add_version
from outpost.config import ConfigError

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

_WILDCARDS = {"", "0.0.0.0", "::"}


def make_url(host: str, port: int, path: str = WEB_APP_PATH) -> str:
    """``http://host:port/path`` (IPv6 literals bracketed, port 80 omitted)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    netloc = host if port == 80 else f"{host}:{port}"
    return f"http://{netloc}{path}"


def _sort_key(ip: str) -> tuple[bool, ipaddress.IPv4Address]:
    addr = ipaddress.IPv4Address(ip)
    return (addr.is_loopback, addr)


def _all_ipv4() -> list[str]:
    import ifaddr  # with ctypes, ~0.4 MiB: paid when a QR code is drawn, not at start

    return [
        ip.ip for adapter in ifaddr.get_adapters() for ip in adapter.ips if isinstance(ip.ip, str)
    ]


def lan_addresses(config: GatewayConfig) -> list[str]:
    """Addresses a device can reach the web app at, the site network's first (blocking).

    A specific ``lan.host`` is the only one; with a wildcard host, the
    addresses of the discovery interfaces, else every IPv4 address here.
    """
    if config.lan.host not in _WILDCARDS:
        return [config.lan.host]
    found = resolve_interface_addresses(config.discovery.interfaces) or _all_ipv4()
    return sorted(set(found), key=_sort_key) or ["127.0.0.1"]


def gateway_url(config: GatewayConfig) -> str:
    """The URL to put in the QR code: by address, which every phone can open (blocking)."""
    return make_url(lan_addresses(config)[0], config.lan.port)


def mdns_url(config: GatewayConfig) -> str:
    """The URL by mDNS host name (``http://outpost-<id>.local:8080/``)."""
    return make_url(host_name(config.gateway.id).rstrip("."), config.lan.port)


def qr_svg(url: str, *, scale: int = 6, title: str | None = None) -> str:
    """A standalone SVG document of ``url`` as a QR code (dark on white)."""
    buf = io.BytesIO()
    import segno  # only when a QR code is drawn

    segno.make(url, error="m").save(
        buf, kind="svg", scale=scale, border=4, light="#fff", title=title or url
    )
    return buf.getvalue().decode("utf-8")


def qr_png(url: str, *, scale: int = 8) -> bytes:
    """A PNG of ``url`` as a QR code (segno writes PNG itself, no Pillow)."""
    buf = io.BytesIO()
    import segno  # only when a QR code is drawn

    segno.make(url, error="m").save(buf, kind="png", scale=scale, border=4)
    return buf.getvalue()


def qr_text(url: str) -> str:
    """``url`` as a QR code drawn with Unicode half blocks, for a terminal."""
    buf = io.StringIO()
    import segno  # only when a QR code is drawn

    segno.make(url, error="m").terminal(out=buf, compact=True, border=2)
    return buf.getvalue()


def request_url(request: web.Request) -> str:
    """The web app's URL by the address this request reached the gateway at."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        return make_url(str(sockname[0]), int(sockname[1]))
    return f"{request.scheme}://{request.host}{WEB_APP_PATH}"


async def qr_svg_handler(request: web.Request) -> web.Response:
    """``GET /qr.svg``: the address the viewer reached the gateway by, as a QR code.

    A phone that opened the status page by IP shows its neighbours that IP;
    no configuration and no blocking calls.
    """
    return web.Response(
        text=qr_svg(request_url(request)),
        content_type="image/svg+xml",
        headers={"Cache-Control": "no-cache"},
    )


def add_qr_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="gateway.toml (defaults when omitted)")
    parser.add_argument("--svg", metavar="FILE", type=Path, help="also write the QR code as SVG")
    parser.add_argument("--png", metavar="FILE", type=Path, help="also write the QR code as PNG")


def qr_main(args: argparse.Namespace) -> int:
    """Run ``outpost-gateway qr``: print the gateway's URLs and the QR code."""
    from gateway import config as gateway_config

    try:
        config = gateway_config.load(args.config)
    except ConfigError as exc:
        print(f"outpost-gateway qr: {exc}", file=sys.stderr)
        return 2
    url = gateway_url(config)
    print(f"Gateway {config.gateway.id} ({config.gateway.site})")
    print(f"Open {url}")
    print(f"  or {mdns_url(config)} on devices that resolve .local names")
    print(qr_text(url), end="")
    try:
        if args.svg is not None:
            args.svg.write_text(qr_svg(url), encoding="utf-8")
        if args.png is not None:
            args.png.write_bytes(qr_png(url))
    except OSError as exc:
        print(f"outpost-gateway qr: cannot write {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m gateway.qr``), same options as the subcommand."""
    parser = argparse.ArgumentParser(prog="outpost-gateway qr", description=__doc__)
    add_qr_arguments(parser)
    add_version(parser)
    return qr_main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

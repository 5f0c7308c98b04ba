"""Behind a reverse proxy: who the client really is, and whether it came over TLS.

Central is usually reached through a TLS-terminating proxy (nginx, Caddy) on
the same host. Without this, every request seems to come from the proxy over
plain HTTP: the audit log's "from where" names the proxy, the per-address
sign-in throttle counts everyone's failures together (enough of them lock
the whole platform), and the session cookie never gets ``Secure``.

Only when the TCP peer is one of ``[admin] trusted_proxies`` are its
``X-Forwarded-For`` and ``X-Forwarded-Proto`` believed (anyone else's are
ignored, so a client cannot claim an address). The client is the right-most
``X-Forwarded-For`` entry that is not itself a trusted proxy (as Home
Assistant's ``http.forwarded`` does). A request straight to the port, from a
script on the proxy's host say, is served as it is, and a header a proxy
could not have written is never a 4xx/5xx: the walk just stops there.
(aiohttp-remotes' ``XForwardedStrict`` refuses direct requests and odd
headers with a bare 400, hence these few lines.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from aiohttp import web

Network = IPv4Network | IPv6Network
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_HOPS = 20  # more X-Forwarded-For entries than this is not a proxy chain


def networks(entries: Sequence[str]) -> tuple[Network, ...]:
    """``["127.0.0.1", "10.0.0.0/8"]`` as networks (raises ValueError naming a bad one)."""
    out = []
    for entry in entries:
        try:
            out.append(ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network") from None
    return tuple(out)


def _address(text: str | None) -> IPv4Address | IPv6Address | None:
    try:
        return ip_address((text or "").strip())
    except ValueError:
        return None


def forwarded_middleware(
    trusted: tuple[Network, ...],
) -> Callable[..., Awaitable[web.StreamResponse]]:
    def is_trusted(addr: IPv4Address | IPv6Address) -> bool:
        return any(addr in net for net in trusted)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        peer = _address(request.remote)
        if not trusted or peer is None or not is_trusted(peer):
            return await handler(request)
        overrides: dict[str, str] = {}
        chain = ",".join(request.headers.getall("X-Forwarded-For", []))
        if chain:
            # From the right: each hop was appended by the proxy after it. What a
            # client wrote itself is further left and never reached, or, unreadable,
            # stops the walk at the last address a proxy vouched for.
            client = peer
            for hop in reversed(chain.split(",")[-MAX_HOPS:]):
                addr = _address(hop)
                if addr is None:
                    break
                client = addr
                if not is_trusted(addr):
                    break
            overrides["remote"] = str(client)
        proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        if proto in ("http", "https"):  # the proxy nearest the client saw its scheme
            overrides["scheme"] = proto
        return await handler(request.clone(**overrides) if overrides else request)  # type: ignore[arg-type]

    return middleware

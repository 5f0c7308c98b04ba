"""mDNS / DNS-SD advertisement of the gateway on the site LAN (zeroconf).

Crews find the gateway without typing an address: it advertises
``_outpost._tcp.local.`` (for our own tools) and ``_http._tcp.local.`` (for
any DNS-SD browser) under the host name ``outpost-<id>.local.``, with TXT
records naming the gateway id, the site, the API version and the web app's
path.

Lifecycle (:class:`Advertiser`):

- ``async_start(port)`` once HTTP listens: the configured interfaces (IPv4
  addresses or interface names) are resolved to addresses, and both services
  are probed and announced in a background task, so start-up never waits on
  the ~1 s of probing. ``async_wait_announced()`` waits for it.
- The addresses of the configured interfaces are polled (``ifaddr``, one
  ``getifaddrs`` call) every ``poll_interval_s``; when they change the
  sockets follow and the services are re-announced with the new addresses
  (cache-flush records, so peers drop the old ones).
- ``async_stop()`` sends goodbyes (TTL 0) and closes the sockets.

In an aiohttp app, :func:`discovery_ctx` makes the advertiser a
``cleanup_ctx`` (stopped when the app cleans up) and :func:`async_announce`
starts it once the site listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING

from aiohttp import web

from outpost import __version__

if TYPE_CHECKING:
    from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

    from gateway.config import GatewayConfig

# zeroconf is imported when advertising starts, not with this module: the
# names and addresses here serve `qr` and the app without it (memory on a Pi).

logger = logging.getLogger(__name__)

OUTPOST_SERVICE = "_outpost._tcp.local."
HTTP_SERVICE = "_http._tcp.local."
API_VERSION = "v1"
WEB_APP_PATH = "/"

# RFC 6763 / RFC 1035 limits.
MAX_LABEL_BYTES = 63
MAX_TXT_ENTRY_BYTES = 255
# zeroconf renames a clashing instance "<name>-2", "-3", ...: keep room for it.
_RENAME_ROOM = 4


def _truncate_utf8(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` of UTF-8, never mid-character."""
    raw = text.encode("utf-8")
    if len(raw) <= max_bytes:
        return text
    return raw[:max_bytes].decode("utf-8", errors="ignore").rstrip()


def host_name(gateway_id: str) -> str:
    """The gateway's mDNS host name: ``outpost-<id>.local.`` (one label, <= 63 bytes)."""
    label = f"outpost-{gateway_id}"[:MAX_LABEL_BYTES].rstrip("-")
    return f"{label}.local."


def instance_label(gateway_id: str, site: str) -> str:
    """The DNS-SD instance name people see in a browser: ``Outpost <site> (<id>)``.

    Instance names are one label of at most 63 bytes of UTF-8 (spaces allowed);
    a long site name is shortened, and room is kept for zeroconf's ``-2``
    suffix when two gateways clash.
    """
    budget = MAX_LABEL_BYTES - _RENAME_ROOM
    full = f"Outpost {site} ({gateway_id})"
    if len(full.encode("utf-8")) <= budget:
        return full
    tail = f" ({gateway_id})"
    room = budget - len(b"Outpost ") - len(tail.encode("utf-8"))
    if room >= 8:
        return f"Outpost {_truncate_utf8(site, room)}{tail}"
    return _truncate_utf8(f"Outpost {gateway_id}", budget)


def txt_properties(
    gateway_id: str, site: str, *, version: str = __version__, path: str = WEB_APP_PATH
) -> dict[str, str]:
    """TXT record of both services; every ``key=value`` fits DNS-SD's 255 bytes.

    ``path`` is the standard key of ``_http._tcp`` (RFC 6763 section 6.3 names
    it for HTTP), so generic browsers open the web app.
    """
    props = {"id": gateway_id, "site": site, "api": API_VERSION, "path": path, "ver": version}
    out: dict[str, str] = {}
    for key, value in props.items():
        out[key] = _truncate_utf8(value, MAX_TXT_ENTRY_BYTES - len(key) - 1)
    return out


def _is_ipv4(entry: str) -> bool:
    try:
        ipaddress.IPv4Address(entry)
    except ValueError:
        return False
    return True


def interface_addresses(entries: Sequence[str]) -> list[tuple[str, int]]:
    """(IPv4 address, interface index) of the configured interfaces, right now (blocking).

    An entry is an IPv4 address (kept if some interface holds it) or an
    interface name (all its IPv4 addresses). Entries absent right now are
    left out; the advertiser's poll picks them up when they appear. The index
    tells a re-plugged interface (same address, new index: the multicast
    memberships are gone) from an unchanged one.
    """
    import ifaddr  # with ctypes, ~0.4 MiB: only a gateway that advertises pays it

    by_name: dict[str, list[tuple[str, int]]] = {}
    for adapter in ifaddr.get_adapters():
        v4 = [(ip.ip, adapter.index or 0) for ip in adapter.ips if isinstance(ip.ip, str)]
        by_name.setdefault(adapter.name, []).extend(v4)
        if adapter.nice_name != adapter.name:
            by_name.setdefault(adapter.nice_name, []).extend(v4)
    by_address = {pair[0]: pair for pairs in by_name.values() for pair in pairs}
    found: list[tuple[str, int]] = []
    for entry in entries:
        if _is_ipv4(entry):
            candidates = [by_address[entry]] if entry in by_address else []
        else:
            candidates = by_name.get(entry, [])
        found.extend(pair for pair in candidates if pair not in found)
    return sorted(found, key=lambda pair: (ipaddress.IPv4Address(pair[0]), pair[1]))


def resolve_interface_addresses(entries: Sequence[str]) -> list[str]:
    """IPv4 addresses of the configured interfaces, as present right now (blocking)."""
    return [address for address, _ in interface_addresses(entries)]


class Advertiser:
    """Advertises one gateway over mDNS; see the module docstring for its lifecycle."""

    def __init__(
        self,
        *,
        gateway_id: str,
        site: str,
        interfaces: Sequence[str],
        poll_interval_s: float = 10.0,
        path: str = WEB_APP_PATH,
        listen_host: str = "0.0.0.0",
    ) -> None:
        self.gateway_id = gateway_id
        self.site = site
        self.interfaces = tuple(interfaces)
        self.poll_interval_s = poll_interval_s
        self.host = host_name(gateway_id)
        self._label = instance_label(gateway_id, site)
        self._properties = txt_properties(gateway_id, site, path=path)
        # HTTP bound to one address: advertise that one only (if it is on our interfaces)
        self._only = None if listen_host in ("", "0.0.0.0", "::") else listen_host
        self._port: int | None = None
        self._aiozc: AsyncZeroconf | None = None
        self._infos: list[AsyncServiceInfo] = []
        self._addresses: tuple[str, ...] = ()
        self._task: asyncio.Task[None] | None = None
        self._announced = asyncio.Event()
        self._warned_empty = False

    @classmethod
    def from_config(cls, config: GatewayConfig) -> Advertiser:
        return cls(
            gateway_id=config.gateway.id,
            site=config.gateway.site,
            interfaces=config.discovery.interfaces,
            poll_interval_s=config.discovery.address_poll_s,
            listen_host=config.lan.host,
        )

    @property
    def addresses(self) -> tuple[str, ...]:
        """The IPv4 addresses currently advertised (empty before the first announcement)."""
        return self._addresses

    @property
    def service_names(self) -> tuple[str, ...]:
        """Full DNS-SD names registered (after any rename on a clash)."""
        return tuple(info.name for info in self._infos)

    @property
    def port(self) -> int | None:
        return self._port

    async def async_start(self, port: int) -> None:
        """Begin advertising ``port``; call once the HTTP site listens. Returns at once."""
        if self._task is not None:
            raise RuntimeError("the mDNS advertiser is already started")
        self._port = port
        self._task = asyncio.create_task(self._async_run(), name="outpost-mdns-advertiser")

    async def async_wait_announced(self, timeout: float | None = None) -> None:
        """Wait until the services have been probed and announced at least once."""
        async with asyncio.timeout(timeout):
            await self._announced.wait()

    async def async_stop(self) -> None:
        """Withdraw the services (goodbye packets) and close the mDNS sockets."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._async_withdraw()

    async def _async_snapshot(self) -> tuple[tuple[str, int], ...]:
        loop = asyncio.get_running_loop()
        found = await loop.run_in_executor(None, interface_addresses, self.interfaces)
        return tuple(pair for pair in found if self._only is None or pair[0] == self._only)

    async def _async_run(self) -> None:
        seen: tuple[tuple[str, int], ...] | None = None  # None: not looked yet
        while True:
            try:
                snapshot = await self._async_snapshot()
                addresses = tuple(address for address, _ in snapshot)
                if seen is not None and snapshot != seen and addresses == self._addresses:
                    # same addresses on a re-created interface (a USB adapter
                    # re-plugged): its multicast memberships are gone, start afresh
                    logger.info("mDNS: interface re-created; announcing again")
                    await self._async_withdraw()
                if snapshot != seen or addresses != self._addresses:
                    await self._async_apply(addresses)
                seen = snapshot
            except asyncio.CancelledError:
                raise
            except Exception:  # a loop boundary: log and try again next round
                logger.exception(
                    "mDNS advertisement failed; retrying in %.0f s", self.poll_interval_s
                )
            await asyncio.sleep(self.poll_interval_s)

    def _make_infos(self, addresses: tuple[str, ...]) -> list[AsyncServiceInfo]:
        from zeroconf.asyncio import AsyncServiceInfo

        assert self._port is not None
        return [
            AsyncServiceInfo(
                service_type,
                f"{self._label}.{service_type}",
                port=self._port,
                properties=self._properties,
                server=self.host,
                parsed_addresses=list(addresses),
            )
            for service_type in (OUTPOST_SERVICE, HTTP_SERVICE)
        ]

    async def _async_apply(self, addresses: tuple[str, ...]) -> None:
        if not addresses:
            if not self._warned_empty:
                logger.warning(
                    "mDNS: no IPv4 address%s on the configured interfaces %s; "
                    "the gateway will be announced when one appears",
                    f" {self._only} (lan.host)" if self._only else "",
                    ", ".join(self.interfaces),
                )
                self._warned_empty = True
            await self._async_withdraw()
            return
        self._warned_empty = False
        if self._aiozc is None:
            await self._async_register(addresses)
            return
        logger.info(
            "mDNS: addresses changed from %s to %s; re-announcing",
            ", ".join(self._addresses),
            ", ".join(addresses),
        )
        await self._aiozc.async_update_interfaces(list(addresses))
        pending = []
        for info in self._infos:
            info.addresses = [ipaddress.IPv4Address(a).packed for a in addresses]
            pending.append(await self._aiozc.async_update_service(info))
        await asyncio.gather(*pending)
        self._addresses = addresses

    async def _async_register(self, addresses: tuple[str, ...]) -> None:
        from zeroconf import IPVersion
        from zeroconf.asyncio import AsyncZeroconf

        aiozc = AsyncZeroconf(interfaces=list(addresses), ip_version=IPVersion.V4Only)
        self._aiozc = aiozc
        infos = self._make_infos(addresses)
        self._infos = infos
        # Probe both names at once (~0.8 s), then wait for the announcements.
        announcing = await asyncio.gather(
            *(aiozc.async_register_service(info, allow_name_change=True) for info in infos)
        )
        await asyncio.gather(*announcing)
        self._addresses = addresses
        self._announced.set()
        logger.info(
            "mDNS: announced %s as %s on %s port %s",
            " and ".join(info.name for info in infos),
            self.host,
            ", ".join(addresses),
            self._port,
        )

    async def _async_withdraw(self) -> None:
        aiozc, self._aiozc = self._aiozc, None
        self._infos = []
        self._addresses = ()
        self._announced.clear()
        if aiozc is None:
            return
        try:
            await aiozc.async_unregister_all_services()
        except Exception:  # the address may be gone already; closing still matters
            logger.warning("mDNS: goodbye could not be sent", exc_info=True)
        finally:
            await aiozc.async_close()
        logger.info("mDNS: withdrawn (goodbye sent)")


DISCOVERY_KEY = web.AppKey("outpost_discovery", Advertiser)


def discovery_ctx(config: GatewayConfig) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` service: the advertiser for ``config``, withdrawn (goodbye) at cleanup.

    Add it only when ``discovery.enabled``. Announcing waits for
    :func:`async_announce`, called once the site listens, with the real port.
    """

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        advertiser = Advertiser.from_config(config)
        app[DISCOVERY_KEY] = advertiser
        try:
            yield
        finally:
            await advertiser.async_stop()

    return ctx


async def async_announce(app: web.Application, port: int) -> None:
    """Start advertising ``port`` if discovery is set up in ``app`` (no-op otherwise)."""
    advertiser = app.get(DISCOVERY_KEY)
    if advertiser is not None:
        await advertiser.async_start(port)

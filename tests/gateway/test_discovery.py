"""mDNS advertisement and discovery on loopback (pinned to 127.0.0.1, never a real LAN).

Other tests on this machine may advertise on 127.0.0.1 too, so every test
uses a unique gateway id and looks only for its own.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from zeroconf import ServiceInfo

from gateway.config import GatewayConfig
from gateway.mdns_advertiser import (
    HTTP_SERVICE,
    MAX_LABEL_BYTES,
    OUTPOST_SERVICE,
    Advertiser,
    async_announce,
    discovery_ctx,
    host_name,
    instance_label,
    resolve_interface_addresses,
    txt_properties,
)
from gateway.mdns_browser import FoundGateway, async_discover
from outpost import __version__
from tests.support.mdns import THIRD_PARTY_BROWSER, PeerProcess

LOOPBACK = ["127.0.0.1"]


def unique_id() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def ours(found: list[FoundGateway], gateway_id: str) -> list[FoundGateway]:
    return [g for g in found if g.gateway_id == gateway_id]


async def discover_until(
    gateway_id: str, present: bool, within_s: float = 30.0
) -> list[FoundGateway]:
    """Browse in rounds until ``gateway_id`` is (or is no longer) answering."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        # Each round is a fresh browser; on loopback a responder that multicast
        # an answer less than 1 s ago waits out the rest of that second (RFC 6762 6.2).
        # (absence needs no wait: after the goodbye nobody answers at all)
        found = ours(await async_discover(2.0 if present else 1.0, LOOPBACK), gateway_id)
        if bool(found) == present or loop.time() > deadline:
            return found


@pytest.fixture
async def advertiser() -> AsyncIterator[Advertiser]:
    adv = Advertiser(gateway_id=unique_id(), site="Test Site", interfaces=LOOPBACK)
    yield adv
    await adv.async_stop()


# --- names and limits -------------------------------------------------------


def test_host_name_is_one_label_of_at_most_63_bytes() -> None:
    assert host_name("site-a") == "outpost-site-a.local."
    long_id = "a" * 63
    label = host_name(long_id).removesuffix(".local.")
    assert len(label.encode()) <= MAX_LABEL_BYTES
    assert label.startswith("outpost-aaa")


def test_instance_label_fits_63_bytes_with_room_for_a_rename() -> None:
    assert instance_label("site-a", "Site A") == "Outpost Site A (site-a)"
    label = instance_label("north-pit", "é" * 63)  # 126 bytes of site name
    assert len(label.encode()) <= MAX_LABEL_BYTES - 4
    assert label.endswith("(north-pit)")
    label = instance_label("x" * 63, "Site")
    assert len(label.encode()) <= MAX_LABEL_BYTES - 4
    # zeroconf itself accepts the name (strict checks) with a rename suffix
    for candidate in (label, f"{label}-99"):
        ServiceInfo(OUTPOST_SERVICE, f"{candidate}.{OUTPOST_SERVICE}", port=1, server="h.local.")


def test_txt_entries_fit_255_bytes() -> None:
    props = txt_properties("site-a", "ü" * 200)
    assert props["id"] == "site-a"
    assert props["api"] == "v1"
    assert props["path"] == "/"
    for key, value in props.items():
        assert len(f"{key}={value}".encode()) <= 255


def test_interfaces_resolve_by_address_or_name() -> None:
    assert resolve_interface_addresses(["127.0.0.1"]) == ["127.0.0.1"]
    assert "127.0.0.1" in resolve_interface_addresses(["lo"])
    # absent now (a USB dongle not yet plugged in): left out, not an error
    assert resolve_interface_addresses(["nosuchif0", "203.0.113.77"]) == []


# --- advertise and browse on loopback ---------------------------------------


async def test_announced_services_carry_id_site_api_and_path(advertiser: Advertiser) -> None:
    await advertiser.async_start(8123)
    await advertiser.async_wait_announced(timeout=30)
    assert advertiser.addresses == ("127.0.0.1",)
    assert {name.split(".", 1)[1] for name in advertiser.service_names} == {
        "_outpost._tcp.local.",
        "_http._tcp.local.",
    }

    found = await discover_until(advertiser.gateway_id, present=True)
    assert found == [
        FoundGateway(
            gateway_id=advertiser.gateway_id,
            site="Test Site",
            addresses=("127.0.0.1",),
            port=8123,
            host=f"outpost-{advertiser.gateway_id}.local.",
            api="v1",
            path="/",
            name=f"Outpost Test Site ({advertiser.gateway_id})._outpost._tcp.local.",
        )
    ]
    assert found[0].url == "http://127.0.0.1:8123/"

    await advertiser.async_stop()
    assert await discover_until(advertiser.gateway_id, present=False) == []


async def test_python_zeroconf_browser_in_another_process_sees_announce_and_goodbye(
    advertiser: Advertiser,
) -> None:
    browser = await PeerProcess.start(
        sys.executable, "-c", THIRD_PARTY_BROWSER, "127.0.0.1", OUTPOST_SERVICE, HTTP_SERVICE
    )
    try:
        await browser.expect(event="browsing")
        await advertiser.async_start(8124)
        await advertiser.async_wait_announced(timeout=30)
        for name in advertiser.service_names:
            event = await browser.expect(event="added", name=name)
            assert event["addresses"] == ["127.0.0.1"]
            assert event["port"] == 8124
            assert event["server"] == f"outpost-{advertiser.gateway_id}.local."
            assert event["props"] == {
                "id": advertiser.gateway_id,
                "site": "Test Site",
                "api": "v1",
                "path": "/",
                "ver": __version__,
            }

        names = advertiser.service_names
        await advertiser.async_stop()  # goodbye: both services disappear from the browser
        for name in names:
            await browser.expect(event="removed", name=name)
    finally:
        await browser.close()


# --- aiohttp wiring ---------------------------------------------------------


async def test_discovery_ctx_announces_the_listening_port_and_withdraws_on_cleanup() -> None:
    gateway_id = unique_id()
    config = GatewayConfig.model_validate(
        {"gateway": {"id": gateway_id, "site": "Ctx Site"}, "discovery": {"interfaces": LOOPBACK}}
    )

    async def index(request: web.Request) -> web.Response:
        return web.Response(text="web app")

    app = web.Application()
    app.router.add_get("/", index)
    app.cleanup_ctx.append(discovery_ctx(config))
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        port = client.server.port
        assert port is not None
        await async_announce(app, port)  # what `run` does once the site listens
        found = await discover_until(gateway_id, present=True)
        assert [(g.site, g.port, g.addresses) for g in found] == [
            ("Ctx Site", port, ("127.0.0.1",))
        ]
        async with client.session.get(found[0].url) as resp:  # the advertised URL serves the app
            assert await resp.text() == "web app"
    finally:
        await client.close()  # cleanup_ctx: goodbye
    assert await discover_until(gateway_id, present=False) == []


async def test_announce_is_a_no_op_without_discovery() -> None:
    app = web.Application()
    await async_announce(app, 8080)  # discovery disabled: nothing set up, nothing raised


async def test_http_bound_to_an_address_off_the_interfaces_is_not_advertised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    adv = Advertiser(
        gateway_id=unique_id(),
        site="Nowhere",
        interfaces=LOOPBACK,
        listen_host="192.0.2.99",  # lan.host: phones could not reach 127.0.0.1 anyway
        poll_interval_s=0.05,
    )
    caplog.set_level("WARNING", logger="gateway.mdns_advertiser")
    await adv.async_start(8080)
    try:
        async with asyncio.timeout(30):
            while "192.0.2.99 (lan.host)" not in caplog.text:
                await asyncio.sleep(0.02)
        assert adv.addresses == ()
        assert adv.service_names == ()
    finally:
        await adv.async_stop()

"""What central changes about a person ends their gateway sessions at once (issue 13).

Real bridge process, real broker, the whole gateway: a crew member signed in
on the gateway loses that session as soon as central changes their password,
disables them, or takes them off the gateway's site; someone else's session
on the same gateway is untouched. Nothing waits for a token to expire.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.app import running_gateway
from tests.e2e.conftest import BridgeProcess, Central, Device, gateway_config, wait_for
from tests.support.broker import Broker


async def _ended(device: Device) -> bool:
    status, _ = await device.call("GET", "/api/v1/activities")
    return status == 401


@pytest.mark.parametrize(
    "change",
    [
        {"password": "a brand new password"},
        {"disabled": True},
        {"sites": ["site-elsewhere"]},
        {"offline": False},
    ],
    ids=["password", "disabled", "off-the-site", "offline-taken-away"],
)
async def test_a_central_change_ends_that_persons_gateway_sessions(
    tmp_path: Path,
    broker: Broker,
    bridge: BridgeProcess,
    http: aiohttp.ClientSession,
    change: dict[str, Any],
) -> None:
    central = Central(http, bridge.url)
    await central.setup_crew(("ana", "bob"))
    async with running_gateway(gateway_config(tmp_path, broker)) as gw:
        ana, bob = Device(http, gw.url), Device(http, gw.url)
        await wait_for(ana.sign_in, 30, "the user push to reach the gateway")
        assert await bob.sign_in("bob")
        await central.call("PUT", "/api/v1/users/ana", change)
        await wait_for(lambda: _ended(ana), 15, "ana's session to end")
        status, _ = await bob.call("GET", "/api/v1/activities")
        assert status == 200  # only the changed person's sessions end
        assert not await ana.sign_in()  # and the old password no longer opens one

"""The site lead, end to end: central grants it per gateway, the push carries it,
the gateway shows the whole gateway to that person only, and takes it back."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from gateway.app import running_gateway
from tests.e2e.conftest import (
    GW,
    PASSWORD,
    BridgeProcess,
    Central,
    Device,
    gateway_config,
    wait_for,
)
from tests.support.broker import Broker


async def test_central_grants_and_withdraws_the_site_lead_per_gateway(
    tmp_path: Path, broker: Broker, bridge: BridgeProcess, http: aiohttp.ClientSession
) -> None:
    central = Central(http, bridge.url)
    await central.setup_crew(("ana", "ben"))
    # ben leads this site, and only this one (another gateway's lead means nothing here).
    await central.call(
        "PUT",
        "/api/v1/users/ben",
        {"password": PASSWORD, "offline": True, "sites": [GW, "site-b"], "site_lead": [GW]},
    )
    await central.call(
        "PUT",
        "/api/v1/users/ana",
        {"password": PASSWORD, "offline": True, "sites": [GW, "site-b"], "site_lead": ["site-b"]},
    )
    async with running_gateway(gateway_config(tmp_path, broker)) as gw:
        ana, ben = Device(http, gw.url), Device(http, gw.url)

        async def ben_leads() -> bool:
            if not await ben.sign_in("ben"):
                return False
            code, me = await ben.call("GET", "/api/v1/session")
            return code == 200 and me["user"]["site_lead"] is True

        await wait_for(ben_leads, 30, "ben's site lead to reach the gateway")
        code, site = await ben.call("GET", "/api/v1/site")
        assert code == 200, site
        assert site["gateway"]["id"] == GW
        assert site["backhaul"]["link"] == "up" and site["backhaul"]["since"]

        assert await ana.sign_in("ana")
        code, me = await ana.call("GET", "/api/v1/session")
        assert me["user"]["site_lead"] is False
        code, refused = await ana.call("GET", "/api/v1/site")
        assert code == 403 and refused["error"]["code"] == "not_site_lead"

        # Central takes it back: within the next push, ben sees only his own work again.
        await central.call(
            "PUT",
            "/api/v1/users/ben",
            # No password: re-setting one (even the same) is a new hash, which
            # ends ben's sessions on the gateway.
            {"offline": True, "sites": [GW], "site_lead": []},
        )

        async def withdrawn() -> bool:
            code, _ = await ben.call("GET", "/api/v1/site")
            return code == 403

        await wait_for(withdrawn, 30, "the withdrawal to reach the gateway")

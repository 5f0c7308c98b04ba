"""The whole chain for real: device → gateway → Mosquitto → bridge process → central DB.

The bridge runs as its own process (``outpost-bridge run``) so tests can
SIGKILL it; the gateway runs in the test's event loop through
``gateway.app.running_gateway`` (the same assembly ``outpost-gateway run``
serves) so tests can stop and start it quickly.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.config import GatewayConfig
from tests.support.bridge_process import ADMIN_TOKEN, BridgeProcess
from tests.support.broker import Broker

GW = "site-e2e"
PASSWORD = "field crew password"
FORM = {
    "fields": [
        {"name": "site_ok", "type": "boolean", "required": True},
        {"name": "notes", "type": "text"},
    ],
    "tables": [
        {
            "name": "readings",
            "fields": [
                {"name": "meter", "type": "text", "required": True},
                {"name": "value", "type": "number"},
            ],
        }
    ],
}


def soak_scale() -> float:
    return float(os.environ.get("OUTPOST_SOAK_SCALE", "1"))


@pytest.fixture
def bridge(tmp_path: Path, broker: Broker) -> Iterator[BridgeProcess]:
    b = BridgeProcess(
        tmp_path / "central", broker, f"sqlite:///{tmp_path / 'central' / 'central.db'}"
    )
    b.start()
    yield b
    b.stop()


class Central:
    """The central admin API as an admin script would use it."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url

    async def call(
        self, method: str, path: str, body: Any = None, expect: int | None = None
    ) -> Any:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with self.http.request(method, self.url + path, json=body, headers=headers) as r:
            data = await r.json(content_type=None)
            if expect is not None:
                assert r.status == expect, (r.status, data)
            elif r.status >= 300:
                raise AssertionError(f"{method} {path}: {r.status} {data}")
            return data

    async def setup_crew(self, users: tuple[str, ...] = ("ana",), site: str = GW) -> None:
        """The inspection type and offline crew members working at gateway ``site``."""
        await self.call(
            "POST", "/api/v1/activity-types", {"name": "inspection", "offline": True, "form": FORM}
        )
        for user in users:
            await self.call(
                "PUT",
                f"/api/v1/users/{user}",
                {"password": PASSWORD, "offline": True, "sites": [site]},
            )

    async def new_activity(
        self, responsible: str = "ana", title: str = "Inspect fence"
    ) -> dict[str, Any]:
        act = await self.call(
            "POST",
            "/api/v1/activities",
            {"title": title, "type": "inspection", "responsible": responsible},
        )
        await self.call(
            "POST", f"/api/v1/activities/{act['id']}/approve", {"approver": responsible}
        )
        return dict(act)

    async def dispatch(self, activity_id: str, gateway_id: str = GW) -> Any:
        return await self.call(
            "POST", f"/api/v1/activities/{activity_id}/dispatch", {"gateway_id": gateway_id}
        )


class Device:
    """A crew member's phone talking to the gateway's LAN API."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url
        self.token: str | None = None

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with self.http.request(method, self.url + path, json=body, headers=headers) as r:
            return r.status, await r.json(content_type=None)

    async def sign_in(self, username: str = "ana") -> bool:
        status, data = await self.call(
            "POST", "/api/v1/session", {"username": username, "password": PASSWORD}
        )
        if status in (200, 201):
            self.token = data["token"]
            return True
        return False

    async def post(
        self,
        activity: dict[str, Any],
        seq: int,
        status: str = "draft",
        *,
        attachments: list[str] | None = None,
        **record: Any,
    ) -> dict[str, Any]:
        body = envelope(activity, seq, status, **record)
        body["attachments"] = attachments or []
        code, data = await self.call("POST", "/api/v1/envelopes", body)
        assert code == 201, (code, data)
        return body

    async def activities(self) -> list[dict[str, Any]]:
        code, data = await self.call("GET", "/api/v1/activities")
        assert code == 200, data
        return list(data["activities"] if isinstance(data, dict) else data)

    async def envelopes(self) -> list[dict[str, Any]]:
        code, data = await self.call("GET", "/api/v1/envelopes")
        assert code == 200, data
        return list(data["envelopes"] if isinstance(data, dict) else data)

    async def status(self) -> dict[str, Any]:
        code, data = await self.call("GET", "/api/v1/status")
        assert code == 200, data
        return dict(data)


def envelope(
    activity: dict[str, Any], seq: int, status: str = "draft", **record: Any
) -> dict[str, Any]:
    return {
        "envelope_id": str(uuid.uuid4()),
        "activity_id": activity["id"],
        "seq": seq,
        "base_version": activity["version"],
        "status": status,
        "created_at": datetime.now(UTC).isoformat(),
        "record": {"site_ok": True, **record},
        "tables": {"readings": [{"meter": f"M{seq}-{i}", "value": seq + i / 10} for i in range(5)]},
        "attachments": [],
    }


async def wait_for(cond: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = cond()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def gateway_config(tmp_path: Path, broker: Broker, **mqtt: Any) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "gateway": {"id": GW, "data_dir": str(tmp_path / "gateway")},
            "lan": {"port": 0, "disk_free_floor_mb": 0},
            "mqtt": {
                "host": broker.host,
                "port": broker.port,
                "keepalive": 5,
                "backoff_initial": 0.05,
                "backoff_max": 0.5,
                **mqtt,
            },
            "discovery": {"enabled": False},
        }
    )


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session

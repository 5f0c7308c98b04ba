"""``running_gateway``: the in-process gateway tests and the demo start."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web

from gateway.api.keys import BACKHAUL_KEY, STORE_KEY
from gateway.app import running_gateway
from gateway.backhaul import OfflineBackhaul
from tests.gateway.conftest import PASSWORDS, envelope_body, make_gateway_config, seed
from tests.support.store_tasks import SqlWrite


async def test_running_gateway_serves_and_runs_background_contexts(tmp_path: Path) -> None:
    config = make_gateway_config(tmp_path / "gw", mqtt={"enabled": False})
    events: list[str] = []

    async def service(app: web.Application) -> AsyncIterator[None]:
        assert app[STORE_KEY].is_open
        events.append("start")
        yield
        events.append("stop")

    async with running_gateway(config, extra_cleanup_ctx=[service]) as gw:
        assert events == ["start"]
        assert isinstance(gw.app[BACKHAUL_KEY], OfflineBackhaul)
        await gw.store.async_write(SqlWrite(lambda c: None))
        await asyncio.to_thread(seed, gw.store)
        async with aiohttp.ClientSession(gw.url) as http:
            async with http.get("/healthz") as resp:
                assert resp.status == 200
            async with http.post(
                "/api/v1/session", json={"username": "alice", "password": PASSWORDS["alice"]}
            ) as resp:
                token = (await resp.json())["token"]
            async with http.post(
                "/api/v1/envelopes",
                json=envelope_body(),
                headers={"Authorization": f"Bearer {token}"},
            ) as resp:
                assert resp.status == 201
    assert events == ["start", "stop"]
    assert not gw.store.is_open

"""A user push from central ends a user's gateway sessions at once, through a real broker.

The gateway runs whole (``running_gateway``: LAN API, uplink, scheduler) on a
real Mosquitto; a test client publishes ``UserPush`` snapshots on the
gateway's ``down/users`` as central does. A changed password hash, offline
taken away, or the user gone ends their sessions on the next request -- not
after the principal cache's few seconds -- and other users keep theirs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import select

from gateway.api.keys import BACKHAUL_KEY
from gateway.app import running_gateway
from gateway.config import GatewayConfig
from gateway.store import Store
from gateway.store.schema import users
from gateway.uplink import Uplink
from outpost.mqtt import MqttClient
from outpost.mqtt_config import MqttSection
from outpost.passwords import hash_password
from outpost.wire import topics
from outpost.wire.codec import encode
from outpost.wire.schemas import UserPush, UserWire
from tests.gateway.conftest import DISPATCHED_AT, PASSWORDS, password_hash
from tests.support.broker import Broker
from tests.support.store_tasks import SqlRead

GW = "site-rev"


def push(**hashes: str | None) -> UserPush:
    """alice, bob (offline) and carol (not) unless changed: ``name=hash`` or ``name=None`` (gone)."""
    users = []
    for name, offline in (("alice", True), ("bob", True), ("carol", False)):
        if name in hashes and hashes[name] is None:
            continue
        users.append(
            UserWire(
                username=name,
                password_hash=hashes.get(name) or password_hash(name),
                offline=offline if not (name == "bob" and "bob_offline" in hashes) else False,
            )
        )
    return UserPush(
        gateway_id=GW, users=users, offline_types=["inspection"], pushed_at=DISPATCHED_AT
    )


@pytest.fixture
async def central(broker: Broker) -> AsyncIterator[MqttClient]:
    client = MqttClient(
        MqttSection(host=broker.host, port=broker.port, backoff_initial=0.05, backoff_max=0.3),
        client_id="central-test",
        on_message=lambda _msg: asyncio.sleep(0),
        subscriptions=[],
    )
    await client.async_start()
    await client.async_wait_connected(10)
    yield client
    await client.async_stop()


async def _send(central: MqttClient, message: UserPush) -> None:
    await central.async_publish(topics.topic(GW, topics.DOWN_USERS), encode(message))


async def _sign_in(http: aiohttp.ClientSession, url: str, user: str) -> dict[str, str]:
    async with http.post(
        f"{url}/api/v1/session", json={"username": user, "password": PASSWORDS[user]}
    ) as r:
        assert r.status == 200, await r.text()
        return {"Authorization": f"Bearer {(await r.json())['token']}"}


async def _status(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> int:
    async with http.get(f"{url}/api/v1/activities", headers=headers) as r:
        return r.status


async def _sign_in_status(http: aiohttp.ClientSession, url: str, user: str, pw: str) -> int:
    async with http.post(f"{url}/api/v1/session", json={"username": user, "password": pw}) as r:
        return r.status


async def _applied(store: Store, message: UserPush) -> None:
    """Wait until the gateway's store holds exactly the pushed users (the push was applied)."""
    want = {(u.username, u.password_hash, u.offline) for u in message.users}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while True:
        rows = await store.async_read(
            SqlRead(
                lambda c: {
                    (r.username, r.password_hash, bool(r.offline)) for r in c.execute(select(users))
                }
            )
        )
        if rows == want:
            return
        assert loop.time() < deadline, "the user push was not applied"
        await asyncio.sleep(0.02)  # poll: the push travels through the broker


async def test_password_change_offline_off_and_removal_end_sessions_at_once(
    broker: Broker, central: MqttClient, tmp_path: Path
) -> None:
    config = GatewayConfig.model_validate(
        {
            "gateway": {"id": GW, "data_dir": str(tmp_path / "gw")},
            "lan": {"port": 0, "signin_slowdown_s": 0},
            "discovery": {"enabled": False},
            "mqtt": {
                "host": broker.host,
                "port": broker.port,
                "backoff_initial": 0.05,
                "backoff_max": 0.3,
            },
        }
    )
    async with running_gateway(config) as gw, aiohttp.ClientSession() as http:
        url, store = gw.url, gw.store
        uplink = gw.app[BACKHAUL_KEY]
        assert isinstance(uplink, Uplink)
        await uplink._client.async_wait_connected(20)  # subscribed to down/# before we push

        async def send(message: UserPush) -> None:
            await _send(central, message)
            await _applied(store, message)

        await send(push())
        alice = await _sign_in(http, url, "alice")
        bob = await _sign_in(http, url, "bob")
        # Warm the principal cache: an ended session must not outlive it.
        assert await _status(http, url, alice) == 200
        assert await _status(http, url, bob) == 200

        # 1. alice's password changed centrally: the moment the push is in,
        #    her old session is over (no polling here: at once).
        new_hash = hash_password("a new password")
        await send(push(alice=new_hash))
        assert await _status(http, url, alice) == 401
        assert await _sign_in_status(http, url, "alice", PASSWORDS["alice"]) == 401
        assert await _sign_in_status(http, url, "alice", "a new password") == 200
        assert await _status(http, url, bob) == 200  # others keep theirs

        # 2. bob may no longer work offline.
        await send(push(alice=new_hash, bob_offline="no"))
        assert await _status(http, url, bob) == 401

        # 3. a user removed from the gateway (its site).
        await send(push())
        alice = await _sign_in(http, url, "alice")
        assert await _status(http, url, alice) == 200
        await send(push(alice=None))
        assert await _status(http, url, alice) == 401

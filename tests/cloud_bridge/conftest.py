"""Fixtures for the central side: a migrated central database and seed data."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cloud_bridge import rules
from cloud_bridge.config import AdminSection, BridgeConfig, BridgeMqttSection, CentralSection
from cloud_bridge.db import Database
from cloud_bridge.migration import migrate
from cloud_bridge.replay import Replayer
from cloud_bridge.service import Bridge
from outpost.forms import ActivityTypeDef
from outpost.mqtt import MqttClient, Received
from outpost.mqtt_config import MqttSection
from outpost.wire import topics
from outpost.wire.codec import decode, encode
from outpost.wire.schemas import EnvelopeBatch, WireEnvelope
from tests.support.broker import Broker

FORM: dict[str, Any] = {
    "fields": [
        {"name": "site_ok", "type": "boolean", "required": True},
        {"name": "notes", "type": "text"},
        {"name": "weather", "type": "choice", "options": ["dry", "wet"]},
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


# The gateways the tests' users work at (a user is pushed to, and dispatched on, only these).
SITES = ("site-a", "site-b", "site-c", "site-d", "site-good", "site-bad", "site-raw")


@pytest.fixture
def db(central_db_url: str) -> Iterator[Database]:
    database = Database.from_url(central_db_url)
    migrate(database.engine)
    yield database
    database.dispose()


@dataclass
class Seeded:
    db: Database

    def user(self, name: str = "ana", offline: bool = True) -> None:
        with self.db.session() as s:
            rules.put_user(s, name, "pw-" + name, offline, sites=list(SITES))

    def activity_type(self, name: str = "inspection", offline: bool = True) -> None:
        with self.db.session() as s:
            rules.put_activity_type(
                s, ActivityTypeDef.model_validate({"name": name, "offline": offline, "form": FORM})
            )

    def activity(
        self,
        responsible: str = "ana",
        type_name: str = "inspection",
        approver: str | None = "ana",
        activity_id: str | None = None,
    ) -> str:
        with self.db.session() as s:
            a = rules.create_activity(s, "Fence check", type_name, responsible, activity_id)
            if approver is not None:
                rules.approve(s, a.id, approver)
            return a.id

    def ready(self, gateway: str | None = "site-a", activity_id: str | None = None) -> str:
        """A user, an offline type and an approved activity, checked out to ``gateway``."""
        with self.db.session() as s:
            if s.get(rules.User, "ana") is None:
                rules.put_user(s, "ana", "pw-ana", True, sites=list(SITES))
            if s.get(rules.ActivityType, "inspection") is None:
                rules.put_activity_type(
                    s,
                    ActivityTypeDef.model_validate(
                        {"name": "inspection", "offline": True, "form": FORM}
                    ),
                )
        aid = self.activity(activity_id=activity_id)
        if gateway is not None:
            with self.db.session() as s:
                rules.check_out(s, aid, gateway)
        return aid


@pytest.fixture
def seed(db: Database) -> Seeded:
    return Seeded(db)


@pytest.fixture
def replayer(db: Database) -> Replayer:
    """The one replay path; every replay test runs on SQLite and PostgreSQL."""
    return Replayer(db)


def envelope(
    activity_id: str,
    seq: int,
    *,
    status: str = "draft",
    base_version: int = 1,
    author: str = "ana",
    record: dict[str, Any] | None = None,
    tables: dict[str, list[dict[str, Any]]] | None = None,
    envelope_id: uuid.UUID | None = None,
) -> WireEnvelope:
    now = datetime.now(UTC)
    return WireEnvelope(
        envelope_id=envelope_id or uuid.uuid4(),
        activity_id=activity_id,
        seq=seq,
        base_version=base_version,
        status=status,  # type: ignore[arg-type]
        created_at=now,
        received_at=now,
        author=author,
        form_version=1,
        record=record if record is not None else {"site_ok": True, "notes": f"seq {seq}"},
        tables=tables
        if tables is not None
        else {"readings": [{"meter": f"M{seq}-{i}", "value": float(i)} for i in range(3)]},
        attachments=[],
    )


# --- a running bridge against a real broker ------------------------------------------

TOKEN = "test-admin-token-0123456789"


def bridge_config(db_url: str, data_dir: Path, broker_port: int, **mqtt: Any) -> BridgeConfig:
    return BridgeConfig(
        central=CentralSection(database_url=db_url, data_dir=data_dir),
        admin=AdminSection(port=0, token=TOKEN, max_body_bytes=64 * 1024),
        mqtt=BridgeMqttSection(
            host="127.0.0.1", port=broker_port, backoff_initial=0.1, backoff_max=0.5, **mqtt
        ),
    )


@pytest.fixture
async def bridge(central_db_url: str, tmp_path: Path, broker: Broker) -> AsyncIterator[Bridge]:
    b = Bridge(bridge_config(central_db_url, tmp_path / "central", broker.port))
    await b.async_start()
    try:
        await b.async_wait_mqtt(10)
        yield b
    finally:
        await b.async_stop()


class Admin:
    """The admin API as a script would use it."""

    def __init__(self, base: str, session: aiohttp.ClientSession) -> None:
        self.base = base
        self.session = session

    async def call(
        self, method: str, path: str, body: Any = None, token: str | None = TOKEN
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.request(
            method, self.base + path, json=body, headers=headers
        ) as resp:
            return resp.status, await resp.json()

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, data = await self.call(method, path, body)
        assert status < 300, (status, data)
        return data

    async def seed(self, activity_id: str = "act-1", offline: bool = True) -> str:
        await self.ok(
            "PUT",
            "/api/v1/users/ana",
            {"password": "correct horse", "offline": offline, "sites": list(SITES)},
        )
        await self.ok(
            "POST", "/api/v1/activity-types", {"name": "inspection", "offline": True, "form": FORM}
        )
        await self.ok(
            "POST",
            "/api/v1/activities",
            {"title": "Fence", "type": "inspection", "responsible": "ana", "id": activity_id},
        )
        await self.ok("POST", f"/api/v1/activities/{activity_id}/approve", {"approver": "ana"})
        return activity_id


@pytest.fixture
async def admin(bridge: Bridge) -> AsyncIterator[Admin]:
    async with aiohttp.ClientSession() as session:
        yield Admin(bridge.admin_url, session)


class FakeGateway:
    """A gateway as the bridge sees it: a real MQTT client on its own subtree."""

    def __init__(self, gateway_id: str, port: int) -> None:
        self.gateway_id = gateway_id
        self.inbox: asyncio.Queue[tuple[str, Any, Received]] = asyncio.Queue()
        self.client = MqttClient(
            MqttSection(host="127.0.0.1", port=port, backoff_initial=0.1, backoff_max=0.5),
            client_id=f"fake-{gateway_id}",
            on_message=self._on_message,
            subscriptions=[(topics.topic(gateway_id, "down/#"), 1)],
            clean_start=False,  # like a real gateway: what central sends while away waits
            session_expiry_s=300,
        )

    async def _on_message(self, msg: Received) -> None:
        parsed = topics.parse(msg.topic)
        assert parsed is not None
        await self.inbox.put((parsed[1], decode(msg.payload), msg))

    async def start(self) -> FakeGateway:
        await self.client.async_start()
        await self.client.async_wait_connected(10)
        return self

    async def publish(self, leaf: str, payload: bytes | Any, **kw: Any) -> None:
        data = payload if isinstance(payload, bytes) else encode(payload)
        await self.client.async_publish(topics.topic(self.gateway_id, leaf), data, qos=1, **kw)

    async def expect(self, leaf: str, timeout: float = 10) -> Any:
        """The next message on ``leaf`` (others before it are skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                got_leaf, message, _ = await self.inbox.get()
                if got_leaf == leaf:
                    return message

    async def results(self, n: int, timeout: float = 15) -> dict[uuid.UUID, Any]:
        """Collect results until ``n`` distinct envelopes have answers."""
        out: dict[uuid.UUID, Any] = {}
        async with asyncio.timeout(timeout):
            while len(out) < n:
                msg = await self.expect("down/results", timeout)
                for r in msg.results:
                    out.setdefault(r.envelope_id, r)
        return out

    def batch(self, envelopes: list[WireEnvelope], gateway_id: str | None = None) -> EnvelopeBatch:
        return EnvelopeBatch(
            gateway_id=gateway_id or self.gateway_id,
            batch_id=uuid.uuid4(),
            sent_at=datetime.now(UTC),
            envelopes=envelopes,
        )

    async def stop(self) -> None:
        await self.client.async_stop()


@pytest.fixture
async def gateways(broker: Broker) -> AsyncIterator[Callable[[str], Awaitable[FakeGateway]]]:
    made: list[FakeGateway] = []

    async def make(gateway_id: str) -> FakeGateway:
        gw = await FakeGateway(gateway_id, broker.port).start()
        made.append(gw)
        return gw

    yield make
    for gw in made:
        await gw.stop()

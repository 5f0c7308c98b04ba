"""Gateway fixtures: a real store in tmp_path, a seeded gateway, an HTTP client.

Reuse them from any gateway test:

- ``gateway_config`` / ``make_gateway_config(**section_overrides)``
- ``store``: an open ``Store`` on a fresh SQLite file (closed after the test)
- ``seeded_store``: users alice/bob (may work offline, known passwords),
  carol (may not), activities ``act-1``/``act-2`` (alice) and ``act-bob`` (bob)
- ``client``: an aiohttp test client of ``create_app`` on the seeded store
- ``sign_in(client, user)`` -> auth headers; ``envelope_body(...)`` -> a valid body
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.app import create_app, store_for
from gateway.config import GatewayConfig
from gateway.store import Store
from gateway.store.activities import upsert_activity
from gateway.store.users import replace_users
from outpost.forms import FormDefinition
from outpost.passwords import hash_password
from outpost.wire.schemas import ActivityWire, UserPush, UserWire
from tests.support.store_tasks import SqlWrite

PASSWORDS = {"alice": "alice-pass-1", "bob": "bob-pass-2", "carol": "carol-pass-3"}
FORM = FormDefinition.model_validate(
    {
        "fields": [
            {"name": "site_ok", "type": "boolean", "required": True},
            {"name": "notes", "type": "text"},
            {"name": "photo", "type": "attachment"},
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
)
DISPATCHED_AT = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


@lru_cache(maxsize=8)
def password_hash(username: str) -> str:
    return hash_password(PASSWORDS[username])


def make_gateway_config(data_dir: Path, **sections: dict[str, Any]) -> GatewayConfig:
    """A config for tests: loopback, port 0, no mDNS, no slow-down, floor 0."""
    data: dict[str, Any] = {
        "gateway": {"id": "site-test", "data_dir": str(data_dir)},
        "lan": {
            "host": "127.0.0.1",
            "port": 0,
            "disk_free_floor_mb": 0,
            "signin_slowdown_s": 0,
            "signin_max_failures": 3,
            "signin_lockout_s": 60,
        },
        "discovery": {"enabled": False},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return GatewayConfig.model_validate(data)


@pytest.fixture
def gateway_config(tmp_path: Path) -> GatewayConfig:
    return make_gateway_config(tmp_path / "gw")


@pytest.fixture
def store(gateway_config: GatewayConfig) -> Iterator[Store]:
    s = store_for(gateway_config).open()
    yield s
    s.close()


def activity(activity_id: str, responsible: str, form: FormDefinition = FORM) -> ActivityWire:
    return ActivityWire(
        id=activity_id,
        title=f"Inspect {activity_id}",
        type="inspection",
        form=form,
        form_version=1,
        responsible=responsible,
        version=3,
    )


def user_push(
    *offline: str, others: tuple[str, ...] = ("carol",), leads: tuple[str, ...] = ()
) -> UserPush:
    """alice… may work offline, others may not; ``leads`` are site leads of this gateway."""
    users = [
        UserWire(username=u, password_hash=password_hash(u), offline=True, site_lead=u in leads)
        for u in offline
    ]
    users += [UserWire(username=u, password_hash=password_hash(u), offline=False) for u in others]
    return UserPush(
        gateway_id="site-test",
        users=users,
        offline_types=["inspection"],
        pushed_at=DISPATCHED_AT,
    )


def seed(store: Store) -> None:
    """Users alice, bob (offline) and carol (not); act-1, act-2 (alice), act-bob (bob)."""

    def work(conn: Any) -> None:
        replace_users(conn, user_push("alice", "bob"))
        for act_id, who in (("act-1", "alice"), ("act-2", "alice"), ("act-bob", "bob")):
            upsert_activity(conn, activity(act_id, who), who, DISPATCHED_AT)

    store.write_sync(SqlWrite(work))


@pytest.fixture
def seeded_store(store: Store) -> Store:
    seed(store)
    return store


ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def client(
    aiohttp_client: ClientFactory, gateway_config: GatewayConfig, seeded_store: Store
) -> TestClient[Any, Any]:
    return await aiohttp_client(create_app(gateway_config, seeded_store))


async def sign_in(client: TestClient[Any, Any], username: str = "alice") -> dict[str, str]:
    resp = await client.post(
        "/api/v1/session", json={"username": username, "password": PASSWORDS[username]}
    )
    assert resp.status == 200, await resp.text()
    token = (await resp.json())["token"]
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def alice(client: TestClient[Any, Any]) -> dict[str, str]:
    return await sign_in(client, "alice")


def envelope_body(
    activity_id: str = "act-1",
    seq: int = 1,
    status: str = "draft",
    *,
    envelope_id: str | None = None,
    notes: str = "fence cut on north side",
    attachments: list[str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    record: dict[str, Any] = {"site_ok": True, "notes": notes}
    if attachments:
        record["photo"] = attachments[0]
    body: dict[str, Any] = {
        "envelope_id": envelope_id or str(uuid.uuid4()),
        "activity_id": activity_id,
        "seq": seq,
        "base_version": 3,
        "status": status,
        "created_at": "2026-11-23T09:00:00Z",
        "record": record,
        "tables": {"readings": [{"meter": "A1", "value": 14.2}]},
        "attachments": attachments or [],
    }
    body.update(extra)
    return body


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()

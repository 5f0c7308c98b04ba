"""``/api/v1/status`` shows a crew member their own work only; the disk floor never races.

Gateway-wide figures (backhaul, disk, counts by state) are for everyone on
the site; the lists that name people's work (rejected envelopes with author,
activity and reason; files central refused) are the signed-in user's own
unless ``gateway.api.scope.sees_whole_gateway`` says otherwise (site lead).
"""

from __future__ import annotations

import itertools
from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy import update

from gateway.api.disk import DiskGuard
from gateway.api.keys import DISK_KEY
from gateway.app import create_app
from gateway.store import Store
from gateway.store.schema import REJECTED, attachments, envelopes
from gateway.store.users import replace_users
from tests.gateway.conftest import (
    ClientFactory,
    envelope_body,
    sha256_hex,
    sign_in,
    user_push,
)
from tests.support.store_tasks import SqlWrite


async def _reject(store: Store, envelope_id: str, reason: str) -> None:
    await store.async_write(
        SqlWrite(
            lambda c: c.execute(
                update(envelopes)
                .where(envelopes.c.envelope_id == envelope_id)
                .values(state=REJECTED, code="validation", reason=reason)
            )
        )
    )


async def test_status_lists_only_the_users_own_rejections_and_files(
    client: TestClient[Any, Any], seeded_store: Store
) -> None:
    alice, bob = await sign_in(client, "alice"), await sign_in(client, "bob")
    mine = envelope_body("act-1")
    theirs = envelope_body("act-bob")
    assert (await client.post("/api/v1/envelopes", json=mine, headers=alice)).status == 201
    assert (await client.post("/api/v1/envelopes", json=theirs, headers=bob)).status == 201
    await _reject(seeded_store, mine["envelope_id"], "meter A1 reading is impossible")
    await _reject(seeded_store, theirs["envelope_id"], "bob's private reason")
    for who, blob in ((alice, b"alice photo"), (bob, b"bob photo")):
        resp = await client.put(f"/api/v1/attachments/{sha256_hex(blob)}", data=blob, headers=who)
        assert resp.status == 201
    await seeded_store.async_write(
        SqlWrite(lambda c: c.execute(update(attachments).values(upload_error="central refused it")))
    )

    status = await (await client.get("/api/v1/status", headers=alice)).json()
    assert [r["envelope_id"] for r in status["rejected"]] == [mine["envelope_id"]]
    assert "bob's private reason" not in str(status)
    refused = status["attachments_upload"]["refused"]
    assert [f["sha256"] for f in refused] == [sha256_hex(b"alice photo")]
    # The site's queue is everyone's: counts stay gateway-wide.
    assert status["envelopes"]["rejected"] == 2

    status = await (await client.get("/api/v1/status", headers=bob)).json()
    assert [r["envelope_id"] for r in status["rejected"]] == [theirs["envelope_id"]]


class FlappingDisk(DiskGuard):
    """A disk whose free space crosses the floor between any two readings."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._readings = itertools.cycle([0, 10**15])

    async def async_free_bytes(self) -> int:
        return next(self._readings)


async def test_free_space_changing_mid_request_never_gives_a_500(
    aiohttp_client: ClientFactory, gateway_config: Any, seeded_store: Store
) -> None:
    """The floor is read once per request: crossing it meanwhile is a 201 or a 507."""
    app = create_app(gateway_config, seeded_store)
    app[DISK_KEY] = FlappingDisk(gateway_config.gateway.data_dir, 1024 * 1024)
    client = await aiohttp_client(app)
    alice = await sign_in(client)
    seen = set()
    for seq in range(1, 9):
        body = envelope_body(seq=seq)
        while True:
            resp = await client.post("/api/v1/envelopes", json=body, headers=alice)
            seen.add(resp.status)
            assert resp.status in (201, 507), await resp.text()
            if resp.status == 201:
                break
    assert seen == {201, 507}


async def test_a_site_lead_sees_every_crew_members_rejections(
    client: TestClient[Any, Any], seeded_store: Store
) -> None:
    alice, bob = await sign_in(client, "alice"), await sign_in(client, "bob")
    mine, theirs = envelope_body("act-1"), envelope_body("act-bob")
    assert (await client.post("/api/v1/envelopes", json=mine, headers=alice)).status == 201
    assert (await client.post("/api/v1/envelopes", json=theirs, headers=bob)).status == 201
    await _reject(seeded_store, mine["envelope_id"], "alice's reason")
    await _reject(seeded_store, theirs["envelope_id"], "bob's reason")
    push = user_push("alice", "bob")
    lead = push.model_copy(
        update={
            "users": [u.model_copy(update={"site_lead": u.username == "bob"}) for u in push.users]
        }
    )
    await seeded_store.async_write(SqlWrite(lambda c: replace_users(c, lead)))
    bob = await sign_in(client, "bob")  # a fresh session reads the grant
    status = await (await client.get("/api/v1/status", headers=bob)).json()
    assert {r["envelope_id"] for r in status["rejected"]} == {
        mine["envelope_id"],
        theirs["envelope_id"],
    }

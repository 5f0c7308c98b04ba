"""Status, health, metrics, OpenAPI, check-out through the Backhaul seam, the disk floor."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy import update

from gateway.api.keys import BACKHAUL_KEY, DISK_KEY
from gateway.api.openapi import PATH_PARAMETERS
from gateway.app import create_app
from gateway.store import Store
from gateway.store.schema import REJECTED, envelopes
from outpost.times import utcnow
from outpost.wire.schemas import CheckoutAnswer
from tests.gateway.conftest import (
    ClientFactory,
    activity,
    envelope_body,
    make_gateway_config,
    sha256_hex,
    sign_in,
)
from tests.support.store_tasks import SqlWrite


class LinkUp:
    """A Backhaul whose central answers from a script (the real one is the MQTT uplink)."""

    def __init__(self, answer: CheckoutAnswer | None = None, delay: float = 0) -> None:
        self.answer = answer
        self.calls: list[tuple[str, str]] = []

    @property
    def is_up(self) -> bool:
        return True

    def status(self) -> dict[str, Any]:
        return {"link": "up", "since": None, "last_sync": "2026-11-23T10:00:00Z", "bytes_sent": 42}

    async def async_checkout(self, activity_id: str, username: str) -> CheckoutAnswer:
        self.calls.append((activity_id, username))
        if self.answer is None:
            raise TimeoutError
        return self.answer


def _answer(ok: bool, **kw: Any) -> CheckoutAnswer:
    return CheckoutAnswer(gateway_id="site-test", request_id=uuid.uuid4(), ok=ok, **kw)


async def test_healthz_is_public(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200 and (await resp.json()) == {"status": "ok"}


async def test_status_reports_counts_rejections_backhaul_and_disk(
    client: TestClient[Any, Any], alice: dict[str, str], seeded_store: Store
) -> None:
    first = envelope_body(seq=1, status="completed")
    assert (await client.post("/api/v1/envelopes", json=first, headers=alice)).status == 201
    assert (
        await client.post("/api/v1/envelopes", json=envelope_body("act-2"), headers=alice)
    ).status == 201
    await seeded_store.async_write(
        SqlWrite(
            lambda c: c.execute(
                update(envelopes)
                .where(envelopes.c.envelope_id == first["envelope_id"])
                .values(state=REJECTED, code="conflict", reason="edited online", result_at=utcnow())
            )
        )
    )
    status = await (await client.get("/api/v1/status", headers=alice)).json()
    assert status["backhaul"]["link"] == "down"
    assert status["envelopes"] == {"stored": 1, "queued": 0, "sent": 0, "applied": 0, "rejected": 1}
    assert status["rejected"][0]["code"] == "conflict"
    assert status["rejected"][0]["reason"] == "edited online"
    assert status["disk"]["low"] is False and status["disk"]["free_bytes"] > 0
    assert status["gateway"]["id"] == "site-test"
    assert status["oldest_pending_s"] is None


async def test_oldest_pending_counts_queued(
    client: TestClient[Any, Any], alice: dict[str, str]
) -> None:
    body = envelope_body(status="completed")
    assert (await client.post("/api/v1/envelopes", json=body, headers=alice)).status == 201
    status = await (await client.get("/api/v1/status", headers=alice)).json()
    assert status["envelopes"]["queued"] == 1
    assert 0 <= status["oldest_pending_s"] < 60


async def test_metrics(client: TestClient[Any, Any], alice: dict[str, str]) -> None:
    assert (
        await client.post("/api/v1/envelopes", json=envelope_body(), headers=alice)
    ).status == 201
    resp = await client.get("/metrics")
    assert resp.status == 200
    text = await resp.text()
    assert 'outpost_envelopes{state="stored"} 1.0' in text
    assert 'outpost_envelopes_stored_total{status="draft"} 1.0' in text
    assert "outpost_http_request_seconds_bucket" in text
    assert "outpost_backhaul_up 0.0" in text


async def test_metrics_can_require_a_token(
    aiohttp_client: ClientFactory, seeded_store: Store
) -> None:
    config = make_gateway_config(seeded_store.path.parent, lan={"metrics_auth": True})
    client = await aiohttp_client(create_app(config, seeded_store))
    assert (await client.get("/metrics")).status == 401
    assert (await client.get("/metrics", headers=await sign_in(client))).status == 200


async def test_metrics_can_take_a_fixed_scraper_token_instead(
    aiohttp_client: ClientFactory, seeded_store: Store
) -> None:
    secret = "scraper-token-0123456789"
    config = make_gateway_config(seeded_store.path.parent, lan={"metrics_token": secret})
    client = await aiohttp_client(create_app(config, seeded_store))
    assert (await client.get("/metrics")).status == 401
    crew = await sign_in(client)
    assert (await client.get("/metrics", headers=crew)).status == 401  # only its own token
    ok = await client.get("/metrics", headers={"Authorization": f"Bearer {secret}"})
    assert ok.status == 200 and "outpost_backhaul_up" in await ok.text()
    # The token opens /metrics only, never the API.
    api = await client.get("/api/v1/activities", headers={"Authorization": f"Bearer {secret}"})
    assert api.status == 401


async def test_metrics_are_public_by_default(client: TestClient[Any, Any]) -> None:
    assert (await client.get("/metrics")).status == 200


async def test_openapi_describes_every_route(
    client: TestClient[Any, Any], alice: dict[str, str]
) -> None:
    doc = await (await client.get("/api/v1/openapi.json", headers=alice)).json()
    assert doc["openapi"].startswith("3.")
    registered = set()
    for route in client.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if (
            route.method in ("HEAD", "*")
            and route.resource
            and any(r.method == "GET" for r in route.resource)
        ):
            continue
        if path.startswith("/api/") or path in ("/healthz", "/metrics"):
            registered.add((route.method.lower(), path))  # the web app's files are not API
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert registered == documented
    assert "EnvelopeBody" in doc["components"]["schemas"]
    text = json.dumps(doc)
    for ref in set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', text)):
        assert ref in doc["components"]["schemas"], ref
    assert "#/$defs/" not in text
    for path, ops in doc["paths"].items():
        for op in ops.values():
            for param in op.get("parameters", []):
                if param["in"] == "path":  # typed by its identifier, not any string
                    assert param["name"] in PATH_PARAMETERS, (path, param["name"])
            if "requestBody" in op:
                assert "413" in op["responses"], path


async def test_checkout_needs_backhaul(client: TestClient[Any, Any], alice: dict[str, str]) -> None:
    resp = await client.post("/api/v1/activities/act-9/checkout", headers=alice)
    assert resp.status == 503
    body = await resp.json()
    assert body["error"]["code"] == "backhaul_down"
    assert "connection to central" in body["error"]["message"]


async def test_checkout_relays_centrals_decision(
    aiohttp_client: ClientFactory, gateway_config: Any, seeded_store: Store
) -> None:
    link = LinkUp(_answer(False, code="not_approved", reason="Activity act-9 is not approved."))
    client = await aiohttp_client(create_app(gateway_config, seeded_store, backhaul=link))
    alice = await sign_in(client)
    resp = await client.post("/api/v1/activities/act-9/checkout", headers=alice)
    assert resp.status == 409
    assert (await resp.json())["error"] == {
        "code": "not_approved",
        "message": "Activity act-9 is not approved.",
    }
    assert link.calls == [("act-9", "alice")]
    link.answer = _answer(True, activity=activity("act-9", "alice"))
    resp = await client.post("/api/v1/activities/act-9/checkout", headers=alice)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["activity"]["id"] == "act-9"
    listed = await (await client.get("/api/v1/activities", headers=alice)).json()
    assert "act-9" in [a["id"] for a in listed["activities"]]
    link.answer = _answer(True, activity=activity("act-77", "alice"))  # about another one
    resp = await client.post("/api/v1/activities/act-11/checkout", headers=alice)
    assert resp.status == 502
    assert (await resp.json())["error"]["code"] == "bad_central_answer"
    link.answer = None  # central does not answer in time
    resp = await client.post("/api/v1/activities/act-10/checkout", headers=alice)
    assert resp.status == 504
    assert (await resp.json())["error"]["code"] == "checkout_timeout"
    status = await (await client.get("/api/v1/status", headers=alice)).json()
    assert status["backhaul"]["link"] == "up" and status["last_sync"] == "2026-11-23T10:00:00Z"
    assert client.app[BACKHAUL_KEY] is link


async def test_disk_floor_refuses_new_data_and_keeps_the_old(
    aiohttp_client: ClientFactory, gateway_config: Any, seeded_store: Store
) -> None:
    client = await aiohttp_client(create_app(gateway_config, seeded_store))
    alice = await sign_in(client)
    saved = envelope_body()
    first = await client.post("/api/v1/envelopes", json=saved, headers=alice)
    assert first.status == 201

    # The same store under a gateway configured with a floor above the free space.
    high = make_gateway_config(seeded_store.path.parent, lan={"disk_free_floor_mb": 10**9})
    full = await aiohttp_client(create_app(high, seeded_store))
    alice = await sign_in(full)
    resp = await full.post("/api/v1/envelopes", json=envelope_body(seq=2), headers=alice)
    assert resp.status == 507
    err = (await resp.json())["error"]
    assert err["code"] == "disk_full" and "already saved is kept" in err["message"]
    blob = b"photo"
    resp = await full.put(f"/api/v1/attachments/{sha256_hex(blob)}", data=blob, headers=alice)
    assert resp.status == 507
    # a retry of what was already saved still gets its first answer
    again = await full.post("/api/v1/envelopes", json=saved, headers=alice)
    assert again.status == 201 and await again.json() == await first.json()
    status = await (await full.get("/api/v1/status", headers=alice)).json()
    assert status["disk"]["low"] is True and "nearly full" in status["disk"]["message"]
    listed = await (await full.get("/api/v1/envelopes", headers=alice)).json()
    assert [e["envelope_id"] for e in listed["envelopes"]] == [saved["envelope_id"]]
    # space comes back: new data is accepted again
    full.app[DISK_KEY].floor_bytes = 0
    await asyncio.sleep(0)
    full.app[DISK_KEY]._free = None
    resp = await full.post("/api/v1/envelopes", json=envelope_body(seq=2), headers=alice)
    assert resp.status == 201

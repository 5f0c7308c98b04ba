"""The admin API: auth, clear errors, rules through HTTP, OpenAPI, dispatch without a broker."""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import threading
from pathlib import Path

import aiohttp

from cloud_bridge.app import api_routes, load_or_create_token
from cloud_bridge.service import Bridge
from tests.cloud_bridge.conftest import FORM, Admin
from tests.support.broker import Broker


async def test_auth_is_required(bridge: Bridge, admin: Admin) -> None:
    for token in (None, "wrong-token-0123456789", ""):
        status, body = await admin.call("GET", "/api/v1/activities", token=token)
        assert status == 401
        assert body["error"]["code"] == "unauthorized" and body["error"]["message"]
    async with admin.session.get(
        admin.base + "/api/v1/gateways", headers={"Authorization": "Basic abc"}
    ) as resp:
        assert resp.status == 401
    # Liveness and the API description need no token.
    status, body = await admin.call("GET", "/healthz", token=None)
    assert status == 200 and body["database"] and body["mqtt"]
    status, doc = await admin.call("GET", "/api/v1/openapi.json", token=None)
    assert status == 200 and doc["openapi"].startswith("3.")


async def test_openapi_lists_every_route(bridge: Bridge, admin: Admin) -> None:
    doc = await admin.ok("GET", "/api/v1/openapi.json")
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert documented == {(r.method, r.path) for r in api_routes()}
    for path in (
        "/api/v1/activities/{activity_id}/dispatch",
        "/api/v1/users/{username}",
        "/api/v1/gateways/{gateway_id}",
    ):
        assert path in doc["paths"]


async def test_errors_are_json_sentences(bridge: Bridge, admin: Admin) -> None:
    cases = [
        ("POST", "/api/v1/activities", {"title": "x"}, 400, "invalid_body"),
        (
            "POST",
            "/api/v1/activities",
            {"title": "x", "type": "nope", "responsible": "ana"},
            400,
            "unknown_type",
        ),
        ("POST", "/api/v1/activity-types", {"name": "Bad Name", "form": {}}, 400, "invalid_type"),
        ("PUT", "/api/v1/users/ana", {"offline": True}, 400, "password_required"),
        ("PUT", "/api/v1/users/ana", {"password": "short"}, 400, "invalid_body"),
        ("PUT", "/api/v1/users/bad%20name", {"password": "long enough"}, 400, "invalid_username"),
        ("GET", "/api/v1/activities/nope", None, 404, "not_found"),
        ("GET", "/api/v1/envelopes/nope", None, 404, "not_found"),
        ("GET", "/api/v1/gateways/nope", None, 404, "not_found"),
        ("GET", "/api/v1/activities?state=weird", None, 400, "invalid_state"),
        ("GET", "/api/v1/nothing-here", None, 404, "not_found"),
        ("DELETE", "/api/v1/activities", None, 405, "method_not_allowed"),
    ]
    for method, path, body, status, code in cases:
        got_status, got = await admin.call(method, path, body)
        assert (got_status, got["error"]["code"]) == (status, code), (method, path, got)
        assert got["error"]["message"].endswith(".")
    # Not JSON at all, and a body past the limit.
    headers = {"Authorization": f"Bearer {admin_token(bridge)}"}
    async with admin.session.post(
        admin.base + "/api/v1/activities", data=b"{nope", headers=headers
    ) as resp:
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_json"
    huge = {"name": "big", "form": {"fields": []}, "pad": "x" * (128 * 1024)}
    async with admin.session.post(
        admin.base + "/api/v1/activity-types", json=huge, headers=headers
    ) as resp:
        assert resp.status == 413 and (await resp.json())["error"]["code"] == "body_too_large"


def admin_token(bridge: Bridge) -> str:
    return bridge.admin_token


async def test_rules_over_http(bridge: Bridge, admin: Admin) -> None:
    await admin.ok("PUT", "/api/v1/users/ana", {"password": "correct horse", "offline": False})
    await admin.ok("PUT", "/api/v1/users/boss", {"password": "correct horse", "offline": True})
    await admin.ok(
        "POST", "/api/v1/activity-types", {"name": "inspection", "offline": False, "form": FORM}
    )
    act = await admin.ok(
        "POST", "/api/v1/activities", {"title": "Fence", "type": "inspection", "responsible": "ana"}
    )
    assert act["state"] == "online" and act["version"] == 1 and act["id"]
    path = f"/api/v1/activities/{act['id']}"

    async def refusal() -> tuple[int, str]:
        status, body = await admin.call("POST", path + "/dispatch", {"gateway_id": "site-a"})
        return status, body["error"]["code"]

    assert await refusal() == (409, "not_approved")
    await admin.ok("POST", path + "/approve", {"approver": "boss"})
    assert await refusal() == (409, "approver_not_responsible")
    await admin.ok("POST", path + "/approve", {"approver": "ana"})
    assert await refusal() == (409, "type_not_offline")
    await admin.ok(
        "POST", "/api/v1/activity-types", {"name": "inspection", "offline": True, "form": FORM}
    )
    assert await refusal() == (409, "user_not_offline")
    await admin.ok("PUT", "/api/v1/users/ana", {"offline": True})
    assert await refusal() == (409, "user_not_at_site")  # site-a does not hold her sign-in
    await admin.ok("PUT", "/api/v1/users/ana", {"sites": ["site-a"]})
    status, body = await admin.call("POST", path + "/dispatch", {"gateway_id": "Not Valid"})
    assert (status, body["error"]["code"]) == (400, "invalid_gateway")
    out = await admin.ok("POST", path + "/dispatch", {"gateway_id": "site-a"})
    assert out["state"] == "offline"
    status, body = await admin.call("POST", path + "/dispatch", {"gateway_id": "site-b"})
    assert (status, body["error"]["code"]) == (409, "already_checked_out")
    status, body = await admin.call("POST", path + "/approve", {"approver": "ana"})
    assert (status, body["error"]["code"]) == (409, "checked_out")
    users = await admin.ok("GET", "/api/v1/users")
    assert all("password" not in str(u) for u in users["users"])


async def test_dispatch_without_broker_is_503_and_stays_online(
    bridge: Bridge, admin: Admin, broker: Broker
) -> None:
    aid = await admin.seed()
    broker.stop()
    status, body = await admin.call(
        "POST", f"/api/v1/activities/{aid}/dispatch", {"gateway_id": "site-a"}
    )
    assert (status, body["error"]["code"]) == (503, "broker_unavailable")
    act = await admin.ok("GET", f"/api/v1/activities/{aid}")
    assert act["state"] == "online" and act["holder_gateway"] is None
    status, body = await admin.call("GET", "/healthz", token=None)
    assert status == 200 and body["mqtt"] is False


def test_generated_token_is_private_and_stable(tmp_path: Path) -> None:
    token, path = load_or_create_token(tmp_path / "data")
    assert len(token) >= 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again, _ = load_or_create_token(tmp_path / "data")
    assert again == token


async def test_generated_token_used_when_config_has_none(tmp_path: Path, broker: Broker) -> None:
    from cloud_bridge.config import AdminSection, BridgeConfig, BridgeMqttSection, CentralSection

    config = BridgeConfig(
        central=CentralSection(database_url=f"sqlite:///{tmp_path}/c.db", data_dir=tmp_path / "d"),
        admin=AdminSection(port=0),
        mqtt=BridgeMqttSection(host="127.0.0.1", port=broker.port),
    )
    b = Bridge(config)
    await b.async_start()
    try:
        token = (tmp_path / "d" / "admin-token").read_text().strip()
        assert b.admin_token == token
        async with (
            aiohttp.ClientSession() as s,
            s.get(
                b.admin_url + "/api/v1/gateways", headers={"Authorization": f"Bearer {token}"}
            ) as resp,
        ):
            assert resp.status == 200
    finally:
        await b.async_stop()


def test_the_openapi_document_resolves_and_types_every_path_parameter() -> None:
    """Every $ref points into the document; every path parameter has its identifier's schema."""
    from cloud_bridge.openapi import PATH_PARAMETERS, document

    doc = document(tuple(api_routes()))
    text = json.dumps(doc)
    for ref in set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', text)):
        assert ref in doc["components"]["schemas"], ref
    assert "#/$defs/" not in text
    for path, ops in doc["paths"].items():
        for op in ops.values():
            for param in op.get("parameters", []):
                if param["in"] == "path":
                    assert param["name"] in PATH_PARAMETERS, (path, param["name"])
                else:
                    assert "schema" in param, (path, param["name"])
            if "requestBody" in op:
                assert "413" in op["responses"], path


# Status codes every operation of the admin API is documented with, whatever its route
# says (cloud_bridge.openapi); the rest of an operation's answers are its Route's.
COMMON_STATUSES = {"200", "400", "404", "409"}
PATH_EXAMPLES = {
    "activity_id": "act-1",
    "gateway_id": "gw-1",
    "username": "ana",
    "sha256": "0" * 64,
    "name": "inspection",
    "type": "inspection",
    "envelope_id": "00000000-0000-4000-8000-000000000000",
    "token_id": "0" * 12,
    "version": "1",
}


def test_each_operations_statuses_are_its_routes_declaration() -> None:
    """An operation's answers are the common ones plus what its Route declares: no other table.

    A status declared on a route and missing from the document, or documented
    for a route that does not declare it, fails here; so does a 200 shape, a
    query parameter or a body's being optional that is not the Route's
    (schemathesis then checks the answers the running API gives against the
    document).
    """
    from cloud_bridge.openapi import document

    doc = document(tuple(api_routes()))
    for route in api_routes():
        op = doc["paths"][route.path][route.method.lower()]
        declared = set(route.statuses) | COMMON_STATUSES
        if not route.public:
            declared |= {"401", "403"}
        if route.body is not None:
            declared.add("413")
        assert set(op["responses"]) == declared, (route.method, route.path)
        for status, why in route.statuses.items():
            assert op["responses"][status]["description"] == why, (route.path, status)
        assert (op.get("security") == []) is route.public, (route.method, route.path)
        if route.answer is not None:
            assert op["responses"]["200"] == route.answer, route.path
        for param in route.params:
            assert param["name"] in {p["name"] for p in op["parameters"]}, route.path
        if "requestBody" in op:
            assert op["requestBody"]["required"] is not route.body_optional, route.path


async def test_the_document_says_which_operations_need_a_token(
    bridge: Bridge, admin: Admin
) -> None:
    """Each operation not marked public answers 401 without a token; a public one does not."""
    doc = await admin.ok("GET", "/api/v1/openapi.json")
    for path, ops in doc["paths"].items():
        address = path
        for name, example in PATH_EXAMPLES.items():
            address = address.replace("{" + name + "}", example)
        for method, op in ops.items():
            status, _ = await admin.call(method.upper(), address, token=None)
            assert (status == 401) is (op.get("security") != []), (method, path, status)


async def test_admin_work_never_waits_behind_the_uplinks_db_threads(
    bridge: Bridge, admin: Admin
) -> None:
    """Every uplink DB thread stuck (a heartbeat flood): the admin API still answers."""
    assert bridge.uplink_runner is not None
    release = threading.Event()
    stuck = [
        asyncio.ensure_future(bridge.uplink_runner.async_call(release.wait, 30)) for _ in range(4)
    ]
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        status, _ = await admin.call("GET", "/api/v1/gateways")
        assert status == 200
        assert loop.time() - started < 5
    finally:
        release.set()
        await asyncio.gather(*stuck)

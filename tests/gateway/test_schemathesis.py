"""schemathesis against a real ``outpost-gateway run``: no 5xx, nothing undocumented.

The gateway runs as its own process on SQLite with users and activities
seeded; schemathesis reads its live OpenAPI document and sends every kind of
request the document allows and many it does not (every check: server
errors, status codes, bodies and headers as documented, ``405`` with
``Allow``, valid data accepted and invalid refused, auth enforced). The
budget is bounded for CI with a fixed seed; ``OUTPOST_SCHEMATHESIS_EXAMPLES``
runs longer.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.store.activities import upsert_activity
from gateway.store.users import replace_users
from tests.gateway.conftest import DISPATCHED_AT, PASSWORDS, activity, user_push
from tests.support.gateway_process import GatewayProcess
from tests.support.schemathesis import SchemathesisConfig, run_schemathesis


def _seed(conn: Any) -> None:
    replace_users(conn, user_push("alice", "bob"))
    for act_id, who in (("act-1", "alice"), ("act-2", "alice"), ("act-bob", "bob")):
        upsert_activity(conn, activity(act_id, who), who, DISPATCHED_AT)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    # Many wrong sign-ins come from one address during the run: a lockout
    # would turn the rest of it into 429s (the lockout has its own tests).
    gw = GatewayProcess(tmp_path / "gw", lan={"signin_max_failures": 1_000_000})
    gw.write_config()
    gw.seed(_seed)
    gw.start()
    yield gw
    gw.stop()


def _signed_in(gateway: GatewayProcess) -> dict[str, str]:
    body = json.dumps({"username": "bob", "password": PASSWORDS["bob"]}).encode()
    request = urllib.request.Request(
        f"{gateway.url}/api/v1/session", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return {"Authorization": f"Bearer {json.load(answer)['token']}"}


@pytest.mark.timeout(900)
def test_gateway_api_holds_under_schemathesis(gateway: GatewayProcess, tmp_path: Path) -> None:
    config = SchemathesisConfig(
        bearer_from={
            "path": "/api/v1/session",
            "payload": {"username": "alice", "password": PASSWORDS["alice"]},
            "selector": "/token",
        },
        parameters={"path.activity_id": "act-1"},
        accept={
            # A body's SHA-256 must equal its address, and Content-Length
            # must match Content-Range: no OpenAPI schema can say either.
            ("PUT", "/api/v1/attachments/{sha256}"): [400, 416, 422],
            # The form an envelope is checked against is the activity's,
            # not the document's; seq must follow the last one.
            ("POST", "/api/v1/envelopes"): [422],
        },
        # This gateway runs without a link to central: a check-out answers the
        # documented 503 backhaul_down.
        server_errors={("POST", "/api/v1/activities/{activity_id}/checkout"): [503]},
    )
    run = run_schemathesis(
        f"{gateway.url}/api/v1/openapi.json",
        workdir=tmp_path / "st",
        base_url=gateway.url,
        schema_headers=_signed_in(gateway),
        config=config,
    )
    print(run.summary())
    run.assert_clean()
    log = gateway.log_text()
    assert "Traceback" not in log and "unexpected error" not in log, log[-5000:]

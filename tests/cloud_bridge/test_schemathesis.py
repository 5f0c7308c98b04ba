"""schemathesis against a real ``outpost-bridge run``: no 5xx, nothing undocumented.

The bridge runs as its own process (real Mosquitto, SQLite or PostgreSQL),
seeded through its own admin API with users, an activity type and activities;
schemathesis reads its live OpenAPI document and sends every kind of request
the document allows and many it does not, with every check (server errors,
statuses, bodies and headers as documented, ``405`` with ``Allow``, valid
data accepted and invalid refused, auth enforced). It signs in two ways: the
admin token (everything is allowed: the deepest code paths) and a
dispatcher's own API token (the role check refuses some of it). The budget is
bounded for CI with a fixed seed; ``OUTPOST_SCHEMATHESIS_EXAMPLES`` runs longer.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cloud_bridge.conftest import FORM, SITES
from tests.support.bridge_process import BridgeProcess
from tests.support.broker import Broker
from tests.support.schemathesis import SchemathesisConfig, run_schemathesis


@pytest.fixture
def bridge_process(central_db_url: str, tmp_path: Path, broker: Broker) -> Iterator[BridgeProcess]:
    # Many wrong sign-ins come from one address during the run: a lockout
    # would turn the rest of it into 429s (the lockout has its own tests).
    bridge = BridgeProcess(
        tmp_path / "central", broker, central_db_url, platform={"signin_max_failures": 1000}
    )
    bridge.start()
    yield bridge
    bridge.stop()


def _seed(bridge: BridgeProcess) -> str:
    """Users, a type and activities to reach; a dispatcher's API token, returned."""
    for name, role in (("ana", "crew"), ("dora", "dispatcher")):
        bridge.ok(
            "PUT",
            f"/api/v1/users/{name}",
            {"password": f"pw-{name}-long", "offline": True, "role": role, "sites": list(SITES)},
        )
    bridge.ok(
        "POST", "/api/v1/activity-types", {"name": "inspection", "offline": True, "form": FORM}
    )
    for act_id in ("act-1", "act-2"):
        bridge.ok(
            "POST",
            "/api/v1/activities",
            {"title": "Fence", "type": "inspection", "responsible": "ana", "id": act_id},
        )
    bridge.ok("POST", "/api/v1/activities/act-2/approve", {"approver": "ana"})
    made = bridge.ok("POST", "/api/v1/tokens", {"name": "schemathesis", "username": "dora"})
    return str(made["token"])


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("who", ["admin-token", "user-token"])
def test_central_api_holds_under_schemathesis(
    bridge_process: BridgeProcess, tmp_path: Path, who: str
) -> None:
    user_token = _seed(bridge_process)
    token = bridge_process.token if who == "admin-token" else user_token
    config = SchemathesisConfig(
        headers={"Authorization": f"Bearer {token}"},
        # Only where a generated value would almost never exist: a fixed value
        # also replaces schemathesis's wrong-type cases for that parameter.
        parameters={"path.activity_id": "act-1"},
        accept={
            # Rules that join a body to the stored state or to who asks; no
            # JSON Schema says them. Each answers 400 with its own code.
            # unknown_type / unknown_user: the body names a type or user that
            # does not exist.
            ("POST", "/api/v1/activities"): [400],
            # approver_required: the admin token must name the approver.
            ("POST", "/api/v1/activities/{activity_id}/approve"): [400],
            # note_required: sending back needs a note.
            ("POST", "/api/v1/activities/{activity_id}/review"): [400],
            # invalid_type: the form's own rules (options only on a choice ...).
            ("POST", "/api/v1/activity-types"): [400],
            # the admin token has no tokens of its own: name a username.
            ("POST", "/api/v1/tokens"): [400],
            # site_lead_not_in_sites: a lead's sites must be among the sites.
            ("PUT", "/api/v1/users/{username}"): [400],
            # not_a_session: an API token or the admin token is not signed out.
            ("DELETE", "/api/v1/session"): [400],
            # invalid_cursor: a cursor must be one this API gave (signed, opaque).
            ("GET", "/api/v1/gateways"): [400],
        },
    )
    run = run_schemathesis(
        f"{bridge_process.url}/api/v1/openapi.json",
        workdir=tmp_path / "st",
        config=config,
        # Bounded for `make test` (four runs; 34 operations): the role check is
        # reached by the first few cases of each operation, the admin token goes
        # deeper and gets the larger budget. OUTPOST_SCHEMATHESIS_EXAMPLES=25 or
        # more for a longer run.
        max_examples=12 if who == "admin-token" else 5,
        # The form definition's schema (labels per language, groups, logic) is
        # slow to generate from: a health check, not a finding about the API.
        extra_args=("--suppress-health-check", "too_slow"),
    )
    print(run.summary())
    run.assert_clean()
    log = bridge_process.log_text()
    assert "Traceback" not in log and "unexpected error" not in log, log[-5000:]

"""The crews' app keeps a draft on the form version it was begun on (issue 17, "Versions").

Real broker, bridge process and gateway process, a phone in Chromium. Three
activities of a type at version 1 (a reading up to 500): one gets a saved
draft (450), one only typing on the phone (450, not saved), one nothing.
Version 2 (up to 400) is made centrally and reaches the gateway. After the
page reloads: the saved draft is shown on version 1 and completes, applied
centrally as version 1; the typing goes on, on version 1, and its save names
version 1; the untouched activity is on version 2, which refuses 450 with
its own message.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.gateway.conftest import PASSWORDS
from tests.support.broker import Broker
from tests.web.conftest import GatewayProcess, new_phone
from tests.web.platform import PlatformBridge, platform_bridge  # noqa: F401
from tests.web.steps import confirm, envelopes_at_gateway, head_badge, idb, wait_until

pytestmark = pytest.mark.browser
GW = "site-versions"


def form(limit: int) -> dict[str, Any]:
    return {
        "fields": [
            {"name": "site", "type": "text", "label": "Site", "required": True},
            {
                "name": "reading",
                "type": "number",
                "label": "Reading",
                "constraint": f". >= 0 and . <= {limit}",
                "constraint_message": f"A reading is between 0 and {limit}.",
            },
        ]
    }


@pytest.fixture
def gateway(tmp_path: Path, broker: Broker) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(tmp_path / "gateway", mqtt={"host": broker.host, "port": broker.port})
    gw.gateway_id = GW
    gw.write_config()
    gw.start()
    yield gw
    gw.stop()


def test_a_draft_stays_on_its_form_version_in_the_app(
    chromium_browser: Any,
    platform_bridge: PlatformBridge,  # noqa: F811
    gateway: GatewayProcess,
) -> None:
    b = platform_bridge
    b.api("POST", "/api/v1/activity-types", {"name": "meter", "offline": True, "form": form(500)})
    b.api(
        "PUT",
        "/api/v1/users/alice",
        {"password": PASSWORDS["alice"], "role": "crew", "offline": True, "sites": [GW]},
    )
    ids = []
    for title in ("Saved draft", "Typing only", "Not begun"):
        made = b.api(
            "POST", "/api/v1/activities", {"title": title, "type": "meter", "responsible": "alice"}
        )
        b.api("POST", f"/api/v1/activities/{made['id']}/approve", {"approver": "alice"})
        b.api("POST", f"/api/v1/activities/{made['id']}/dispatch", {"gateway_id": GW})
        ids.append(made["id"])
    saved, typing, fresh = ids

    def versions() -> dict[str, int]:
        try:
            listed = gateway.call("GET", "/api/v1/activities", gateway.token())["activities"]
        except OSError:  # the user push has not arrived yet (urllib's HTTPError is one)
            return {}
        return {a["id"]: a["form_version"] for a in listed}

    wait_until(lambda: len(versions()) == 3, 30, "the crew and activities at the gateway")
    phone = new_phone(chromium_browser)
    p = phone.page
    try:
        phone.sign_in(gateway.lan_url)
        # 1. A saved draft on version 1, and typing on another that is not saved.
        p.click(f"[data-activity='{saved}']")
        p.get_by_label("Site").fill("North")
        p.get_by_label("Reading").fill("450")
        expect(p.locator("[data-field='reading'] .field-error")).to_have_text("")
        p.get_by_role("button", name="Save draft").click()
        token = gateway.token()
        wait_until(lambda: envelopes_at_gateway(gateway, token, saved), 15, "the draft stored")
        p.goto(f"{gateway.lan_url}/#/activities")
        p.click(f"[data-activity='{typing}']")
        p.get_by_label("Site").fill("South")
        p.get_by_label("Reading").fill("450")

        def typed() -> bool:  # kept 400 ms after the last keystroke: both answers
            return any(
                w.get("activity_id") == typing
                and w.get("dirty")
                and str(w["data"]["record"].get("reading")) == "450"
                for w in idb(p, "work")
            )

        wait_until(typed, 10, "the typing kept on the phone")
        (work,) = [w for w in idb(p, "work") if w["activity_id"] == typing]
        assert work["form_version"] == 1

        # 2. Version 2 is made centrally and reaches the gateway with the activities.
        b.api(
            "POST", "/api/v1/activity-types", {"name": "meter", "offline": True, "form": form(400)}
        )
        # The activities reach the gateway one by one: wait for all three.
        want = {saved: 1, typing: 2, fresh: 2}
        wait_until(lambda: versions() == want, 30, "version 2 at the gateway but for the draft")
        p.reload()  # back on the typing's screen, from what the phone kept

        # 3. The untouched activity is on version 2: 450 is refused with its message.
        wait_until(
            lambda: any(
                a.get("id") == fresh and a.get("form_version") == 2 for a in idb(p, "activities")
            ),
            15,
            "the app to refresh from the gateway",
        )
        p.goto(f"{gateway.lan_url}/#/activity/{fresh}")
        p.get_by_label("Reading").fill("450")
        expect(p.locator("[data-field='reading'] .field-error")).to_have_text(
            "A reading is between 0 and 400."
        )
        expect(p.locator(".activity-meta")).to_contain_text("form 2")
        phone.screenshot("42-form-version-2-refuses")

        # 4. The typing goes on, on version 1: 450 is no problem, and its save names version 1.
        p.goto(f"{gateway.lan_url}/#/activity/{typing}")
        expect(p.get_by_label("Reading")).to_have_value("450")
        expect(p.locator("[data-field='reading'] .field-error")).to_have_text("")
        p.get_by_role("button", name="Save draft").click()
        wait_until(
            lambda: envelopes_at_gateway(gateway, token, typing), 15, "the typing's draft stored"
        )
        assert [e["form_version"] for e in envelopes_at_gateway(gateway, token, typing)] == [1]

        # 5. The saved draft is shown on version 1 and completes; central applies it as version 1.
        # Central checks it in once applied: the app's next refresh of it answers 404.
        phone.may_happen.append(f"404 (Not Found) ({gateway.lan_url}/api/v1/activities/{saved})")
        p.goto(f"{gateway.lan_url}/#/activity/{saved}")
        expect(p.get_by_label("Reading")).to_have_value("450")
        expect(p.locator("[data-field='reading'] .field-error")).to_have_text("")
        expect(p.locator(".activity-meta")).to_contain_text("form 1")
        phone.screenshot("43-form-version-1-draft")
        p.get_by_role("button", name="Mark completed").click()
        confirm(p, "Mark completed")
        expect(head_badge(p)).to_contain_text("Applied", timeout=30_000)
        record = b.api("GET", f"/api/v1/activities/{saved}/record")
        assert record["form_version"] == 1 and record["record"]["reading"] == 450
    finally:
        phone.context.close()
    assert not phone.unexpected_errors(), phone.unexpected_errors()

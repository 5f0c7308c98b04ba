"""The crews' web app in a real headless Chromium against a real gateway process.

Loaded through a LAN-like name (``http://outpost.test:PORT``), the app runs
where phones run it: not a secure context, so no service worker and no
``crypto.subtle``; the service-worker mode is tested from 127.0.0.1 (a
secure context). With OUTPOST_WEB_SCREENSHOTS set, the main screens are
saved there as phone-sized pictures (docs/screenshots/).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from datetime import UTC, datetime

import pytest
from playwright.sync_api import Route, expect
from sqlalchemy import create_engine, update

from gateway.store.schema import envelopes
from tests.web.conftest import ACTIVITIES, LAN_NAME, Crew, GatewayProcess, png_photo
from tests.web.steps import (
    attach_photo,
    confirm,
    draw_signature,
    envelopes_at_gateway,
    head_badge,
    idb,
    wait_until,
)

pytestmark = pytest.mark.browser

REASON = "The fence height was changed on central after this activity went offline."


def test_crew_flow_sign_in_draft_completed_with_photo_and_signature(
    gateway: GatewayProcess, crew: Crew
) -> None:
    page = crew.page
    page.goto(gateway.lan_url + "/")
    # A phone on site Wi-Fi: plain HTTP on a LAN name is not a secure context.
    assert page.evaluate("window.isSecureContext") is False
    assert page.evaluate("typeof crypto.subtle") == "undefined"
    assert page.evaluate("navigator.serviceWorker ? 'yes' : 'no'") == "no"
    expect(page.locator("#reach")).to_have_text("Gateway in reach")
    crew.screenshot("01-sign-in")

    # A wrong password is one clear sentence.
    page.get_by_label("User name").fill("alice")
    page.get_by_label("Password").fill("not her password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#signin-error")).to_have_text("The username or password is wrong.")
    # (Chromium logs every 4xx answer to fetch on the console.)
    crew.forgive("status of 401 (Unauthorized) (http://outpost.test")

    # The app's own SHA-256 and UUIDs (no crypto.subtle, no randomUUID here).
    blobs = [os.urandom(n) for n in (0, 1, 55, 56, 63, 64, 65, 1000, 70_000)]
    got = page.evaluate(
        """async (blobs) => {
            const { Sha256, sha256Blob } = await import("/static/js/sha256.js");
            const { uuid4 } = await import("/static/js/uuid.js");
            const out = [];
            for (const b of blobs) {
                const bytes = new Uint8Array(b);
                const whole = new Sha256().update(bytes).hex();
                const split = new Sha256().update(bytes.subarray(0, 7)).update(bytes.subarray(7)).hex();
                out.push([whole, split, await sha256Blob(new Blob([bytes]))]);
            }
            return { hashes: out, ids: Array.from({ length: 50 }, uuid4) };
        }""",
        [list(b) for b in blobs],
    )
    for b, hashes in zip(blobs, got["hashes"], strict=True):
        assert set(hashes) == {hashlib.sha256(b).hexdigest()}
    assert len(set(got["ids"])) == 50
    assert all(uuid.UUID(i).version == 4 and str(uuid.UUID(i)) == i for i in got["ids"])

    crew.sign_in(gateway.lan_url)
    expect(page.locator("[data-activity=act-1] .badge")).to_have_text("○Not started")
    expect(page.locator("[data-activity]")).to_have_count(len(ACTIVITIES))
    crew.screenshot("02-activities")
    # Taking another activity offline needs central: this gateway has no backhaul.
    page.get_by_label("Activity ID").fill("act-9")
    page.get_by_role("button", name="Take offline").click()
    expect(page.locator("#checkout-msg")).to_contain_text("no connection to central")
    crew.forgive("status of 503 (Service Unavailable)")

    page.click("[data-activity=act-1]")
    expect(page.locator("h1")).to_have_text("Inspect act-1")
    page.get_by_role("radio", name="Yes").check()
    page.get_by_label("Notes").fill("Fence cut on the north side; patched with wire.")
    page.get_by_label("Reading count").fill("7")
    page.get_by_label("Temperature").fill("12.5")
    page.get_by_label("Visit date").fill("2026-11-23")
    page.get_by_label("Visit time").fill("2026-11-23T09:30")
    page.get_by_role("radio", name="rain").check()
    page.get_by_label("Crew", exact=True).select_option("delta")
    photo = png_photo()
    assert len(photo) > 256 * 1024  # two upload parts
    attach_photo(page, photo)
    draw_signature(page)
    # Child rows: add two, remove the first.
    page.get_by_role("button", name="Add readings row").click()
    page.get_by_role("button", name="Add readings row").click()
    page.locator("[data-row='1']").get_by_label("Meter").fill("A1")
    page.locator("[data-row='2']").get_by_label("Meter").fill("B2")
    page.locator("[data-row='2']").get_by_label("Value").fill("3.5")
    page.get_by_role("button", name="Remove Readings row 1").click()
    expect(page.locator(".row-card")).to_have_count(1)
    expect(page.locator("[data-row='1']").get_by_label("Meter")).to_have_value("B2")
    crew.screenshot("03-form")
    crew.screenshot("04-form-photo-signature", scroll_to=".field-attachment")

    page.get_by_role("button", name="Save draft").click()
    expect(head_badge(page)).to_contain_text("Draft")  # acknowledged by the gateway
    token = gateway.token()
    [draft] = envelopes_at_gateway(gateway, token, "act-1")
    assert (draft["seq"], draft["status"], draft["state"]) == (1, "draft", "stored")

    detail = gateway.call("GET", "/api/v1/activities/act-1", token)
    latest = detail["latest_envelope"]
    record = latest["record"]
    assert record["site_ok"] is True
    assert record["notes"] == "Fence cut on the north side; patched with wire."
    assert record["reading_count"] == 7 and isinstance(record["reading_count"], int)
    assert record["temperature"] == 12.5
    assert record["visit_date"] == "2026-11-23"
    assert datetime.fromisoformat(record["visit_time"]).tzinfo is not None
    assert record["weather"] == "rain"
    assert record["crew"] == "delta"
    assert latest["tables"] == {"readings": [{"meter": "B2", "value": 3.5}]}
    # The photo and the signature reached the gateway whole, under their SHA-256.
    assert record["photo"] == hashlib.sha256(photo).hexdigest()
    assert sorted(latest["attachments"]) == sorted([record["photo"], record["signature"]])
    stored_photo = gateway.data_dir / "blobs" / record["photo"][:2] / record["photo"]
    assert stored_photo.read_bytes() == photo
    signature = (
        gateway.data_dir / "blobs" / record["signature"][:2] / record["signature"]
    ).read_bytes()
    assert signature.startswith(b"\x89PNG\r\n\x1a\n")
    assert hashlib.sha256(signature).hexdigest() == record["signature"]

    # Mark completed: the form becomes read-only.
    page.get_by_role("button", name="Mark completed").click()
    confirm(page, "Mark completed")
    expect(head_badge(page)).to_contain_text("Completed")
    expect(page.get_by_label("Notes")).to_be_disabled()
    expect(page.get_by_role("button", name="Save draft")).to_have_count(0)
    expect(page.locator("#toast")).to_have_text("Completed form saved on the gateway.")
    crew.screenshot("05-completed-read-only")
    states = [
        (e["seq"], e["status"], e["state"]) for e in envelopes_at_gateway(gateway, token, "act-1")
    ]
    # Rule 4: a completed activity queues for upload, its drafts with it.
    assert states == [(1, "draft", "queued"), (2, "completed", "queued")]

    # Opened again later, the form shows what was sent (from the gateway's copy).
    page.get_by_role("link", name="Activities", exact=True).click()
    expect(page.locator("[data-activity=act-1] .badge")).to_contain_text("Completed")
    page.click("[data-activity=act-1]")
    expect(page.get_by_label("Notes")).to_have_value(
        "Fence cut on the north side; patched with wire."
    )
    expect(page.get_by_role("radio", name="rain")).to_be_checked()
    expect(page.locator("[data-row='1']").get_by_label("Meter")).to_have_value("B2")

    page.get_by_role("link", name="Pending").click()
    expect(page.locator("#backhaul")).to_contain_text("Backhaul is down")
    queued = gateway.call("GET", "/api/v1/status", token)["envelopes"]["queued"]
    expect(page.locator("#counts [data-state=queued] dd")).to_have_text(str(queued))
    expect(page.locator("#count-phone")).to_contain_text("0")
    # The photo and the signature wait on the gateway with the envelopes.
    files = gateway.call("GET", "/api/v1/status", token)["attachments_upload"]
    assert files["to_upload"] == 2, files
    expect(page.locator("#files-waiting")).to_contain_text("waiting to go to central: 2")
    crew.screenshot("06-pending")

    # Sign-out wipes the phone — and signs out the app's other tab too.
    other_tab = crew.watch(crew.context.new_page())
    other_tab.goto(gateway.lan_url + "/#/activities")
    expect(other_tab.locator("[data-activity=act-1] .badge")).to_contain_text("Completed")
    page.get_by_role("button", name="Sign out").click()
    confirm(page, "Sign out")
    expect(page.get_by_label("User name")).to_be_visible()
    expect(other_tab.locator("#signin-error")).to_contain_text("You signed out in another tab")
    for tab in (page, other_tab):
        assert tab.evaluate("indexedDB.databases()") == []
        assert tab.evaluate("localStorage.length + sessionStorage.length") == 0


def test_offline_while_saving_then_back_arrive_exactly_once(
    gateway: GatewayProcess, crew: Crew
) -> None:
    crew.allow_network_errors = True
    page = crew.page
    crew.sign_in(gateway.lan_url)
    page.click("[data-activity=act-2]")
    page.get_by_role("radio", name="Yes").check()

    crew.context.set_offline(True)
    expect(page.locator("#reach")).to_have_text("Gateway out of reach")
    page.get_by_label("Notes").fill("first save, no Wi-Fi")
    photo = png_photo(200, 150)
    attach_photo(page, photo)
    page.get_by_role("button", name="Save draft").click()
    expect(head_badge(page)).to_contain_text("Syncing")
    page.get_by_label("Notes").fill("second save, still no Wi-Fi")
    page.get_by_role("button", name="Save draft").click()
    expect(page.locator("#nav .count")).to_have_text("2")
    crew.screenshot("07-offline-saved-on-phone")
    queued = idb(page, "outbox")
    assert sorted(b["seq"] for b in queued) == [1, 2]
    ids = {b["envelope_id"] for b in queued}
    token = gateway.token()
    assert envelopes_at_gateway(gateway, token, "act-2") == []

    # Back in reach — and the gateway's first answer is lost on the way back,
    # so the phone sends that envelope again: it must still be stored once.
    lost: list[str] = []

    def lose_first_answer(route: Route) -> None:
        if route.request.method == "POST" and not lost:
            # The gateway stores it and answers 201… (Playwright fetches from its
            # own process, which does not know outpost.test: go to the address.)
            answer = route.fetch(url=route.request.url.replace(LAN_NAME, "127.0.0.1"))
            assert answer.status == 201
            lost.append(route.request.post_data_json["envelope_id"])
            route.abort("connectionreset")  # …but the phone never hears it
        else:
            route.continue_()

    page.route("**/api/v1/envelopes", lose_first_answer)
    crew.context.set_offline(False)
    wait_until(lambda: not idb(page, "outbox"), what="the phone's outbox to drain")
    arrived = envelopes_at_gateway(gateway, token, "act-2")
    assert lost and lost[0] in ids
    assert {e["envelope_id"] for e in arrived} == ids
    assert [(e["seq"], e["status"]) for e in arrived] == [(1, "draft"), (2, "draft")]
    latest = gateway.call("GET", "/api/v1/activities/act-2", token)["latest_envelope"]
    assert latest["record"]["notes"] == "second save, still no Wi-Fi"
    assert latest["record"]["photo"] == hashlib.sha256(photo).hexdigest()
    expect(page.locator("#reach")).to_have_text("Gateway in reach")
    expect(head_badge(page)).to_contain_text("Draft")
    page.unroute("**/api/v1/envelopes")
    # The photo's upload was tried while offline, so the phone asked the gateway
    # how much had arrived (HEAD) before resuming: "nothing yet" is a 404.
    crew.forgive("status of 404 (Not Found) (http://outpost.test")


def test_a_cut_photo_upload_resumes_where_it_stopped(gateway: GatewayProcess, crew: Crew) -> None:
    crew.allow_network_errors = True  # the link is cut on purpose
    page = crew.page
    crew.sign_in(gateway.lan_url)
    page.click("[data-activity=act-5]")
    page.get_by_role("radio", name="Yes").check()
    photo = png_photo(480, 380)  # three 256 KiB parts
    assert len(photo) > 2 * 256 * 1024
    seen: list[str] = []

    def cut_the_second_part(route: Route) -> None:
        req = route.request
        seen.append(f"{req.method} {req.headers.get('content-range', '')}".strip())
        second = req.headers.get("content-range", "").startswith("bytes 262144-")
        if req.method == "PUT" and second and seen.count(seen[-1]) == 1:
            route.abort("connectionreset")  # the link drops mid-photo
            return
        route.continue_()

    page.route("**/api/v1/attachments/*", cut_the_second_part)
    attach_photo(page, photo)
    page.get_by_role("button", name="Save draft").click()
    expect(head_badge(page)).to_contain_text("Draft")
    page.unroute("**/api/v1/attachments/*")
    total = len(photo)
    assert seen == [
        f"PUT bytes 0-262143/{total}",
        f"PUT bytes 262144-524287/{total}",  # cut
        "HEAD",  # how much arrived? the first part
        f"PUT bytes 262144-524287/{total}",
        f"PUT bytes 524288-{total - 1}/{total}",
    ]
    sha = hashlib.sha256(photo).hexdigest()
    assert (gateway.data_dir / "blobs" / sha[:2] / sha).read_bytes() == photo


def test_two_phones_on_one_activity_never_clash(gateway: GatewayProcess, crew: Crew) -> None:
    crew.allow_network_errors = True
    page = crew.page
    crew.sign_in(gateway.lan_url)
    page.click("[data-activity=act-6]")
    page.get_by_role("radio", name="Yes").check()
    # Typed but not saved yet: the phone keeps it (the page may be closed or reloaded).
    page.get_by_label("Notes").fill("typed before the battery died")
    wait_until(
        lambda: any(
            w["data"]["record"].get("notes") == "typed before the battery died"
            for w in idb(page, "work")
        ),
        what="the working copy",
    )
    page.reload()
    expect(page.get_by_label("Notes")).to_have_value("typed before the battery died")
    expect(page.get_by_role("radio", name="Yes")).to_be_checked()
    page.get_by_role("button", name="Save draft").click()
    expect(head_badge(page)).to_contain_text("Draft")

    # Out of reach, this phone saves again; meanwhile another phone saved the
    # same activity at the gateway, taking the next number.
    crew.context.set_offline(True)
    expect(page.locator("#reach")).to_have_text("Gateway out of reach")
    page.get_by_label("Notes").fill("from the first phone")
    page.get_by_role("button", name="Save draft").click()
    expect(head_badge(page)).to_contain_text("Syncing")
    token = gateway.token()
    other = {
        "envelope_id": str(uuid.uuid4()),
        "activity_id": "act-6",
        "seq": 2,
        "base_version": 3,
        "status": "draft",
        "created_at": "2026-11-23T09:00:00Z",
        "record": {"site_ok": True, "notes": "from the second phone"},
        "tables": {},
        "attachments": [],
    }
    gateway.call("POST", "/api/v1/envelopes", token, other)

    crew.context.set_offline(False)
    wait_until(lambda: not idb(page, "outbox"), what="the phone's outbox to drain")
    arrived = envelopes_at_gateway(gateway, token, "act-6")
    assert [(e["seq"], e["state"]) for e in arrived] == [
        (1, "stored"),
        (2, "stored"),
        (3, "stored"),
    ]
    assert arrived[1]["envelope_id"] == other["envelope_id"]
    latest = gateway.call("GET", "/api/v1/activities/act-6", token)["latest_envelope"]
    assert latest["record"]["notes"] == "from the first phone"
    # (The gateway's 409 "seq_mismatch" was answered by renumbering, not shown as a refusal.)
    crew.forgive("status of 409 (Conflict)")
    expect(page.locator("#nav .count")).to_have_count(0)


def test_an_ended_session_keeps_unsent_work_until_the_crew_signs_in_again(
    gateway: GatewayProcess, crew: Crew
) -> None:
    page = crew.page
    crew.sign_in(gateway.lan_url)
    page.click("[data-activity=act-7]")
    page.get_by_role("radio", name="No", exact=True).check()
    page.get_by_label("Notes").fill("gate chained, no access")
    # The session ends on the gateway (expired, or revoked by central).
    token = page.evaluate(
        """() => new Promise((ok, no) => {
            const r = indexedDB.open("outpost");
            r.onerror = () => no(r.error);
            r.onsuccess = () => {
                const get = r.result.transaction("meta").objectStore("meta").get("session");
                get.onsuccess = () => { ok(get.result.value.token); r.result.close(); };
            };
        })"""
    )
    gateway.call("DELETE", "/api/v1/session", token)
    page.get_by_role("button", name="Save draft").click()
    expect(page.locator("#signin-error")).to_contain_text("Your session ended")
    [kept] = idb(page, "outbox")
    assert kept["record"]["notes"] == "gate chained, no access"
    # (Whatever asked the gateway with the dead token got a 401; Chromium logs each.)
    crew.may_happen.append("status of 401 (Unauthorized)")

    crew.sign_in(gateway.lan_url)
    wait_until(lambda: not idb(page, "outbox"), what="the kept save to reach the gateway")
    [arrived] = envelopes_at_gateway(gateway, gateway.token(), "act-7")
    assert arrived["envelope_id"] == kept["envelope_id"]
    expect(page.locator("[data-activity=act-7] .badge")).to_contain_text("Draft")


def test_rejection_is_shown_with_its_reason_and_can_be_corrected(
    gateway: GatewayProcess, crew: Crew
) -> None:
    page = crew.page
    crew.sign_in(gateway.lan_url)
    page.click("[data-activity=act-3]")
    # A draft may be saved any time, required answers or not; it reaches the gateway.
    page.get_by_label("Notes").fill("Started; safety check still to do.")
    page.get_by_role("button", name="Save draft").click()
    expect(head_badge(page)).to_contain_text("Draft")
    wait_until(lambda: not idb(page, "outbox"), what="the draft to reach the gateway")
    assert [e["seq"] for e in envelopes_at_gateway(gateway, gateway.token(), "act-3")] == [1]
    # Completing needs them: the phone says which, before sending anything.
    page.get_by_role("button", name="Mark completed").click()
    expect(page.locator("#problems")).to_contain_text("Site is safe is required.")
    expect(page.locator("[data-field=site_ok] fieldset")).to_have_attribute("aria-invalid", "true")
    page.get_by_role("radio", name="Yes").check()
    page.get_by_role("button", name="Add readings row").click()
    page.get_by_label("Meter").fill("A1")
    page.get_by_role("button", name="Mark completed").click()
    confirm(page, "Mark completed")
    expect(head_badge(page)).to_contain_text("Completed")

    # Central refuses it (what the uplink records when central's answer comes back).
    engine = create_engine(f"sqlite:///{gateway.db_path}", connect_args={"timeout": 10})
    with engine.begin() as conn:
        done = conn.execute(
            update(envelopes)
            .where(envelopes.c.activity_id == "act-3", envelopes.c.seq == 2)
            .values(
                state="rejected",
                code="version_conflict",
                reason=REASON,
                result_at=datetime.now(UTC),
            )
        )
        assert done.rowcount == 1
    engine.dispose()

    page.get_by_role("link", name="Pending").click()
    rejection = page.locator("#rejections .rejection")
    expect(rejection).to_contain_text(REASON)
    expect(rejection).to_contain_text("Someone else changed this activity first")
    crew.screenshot("08-pending-rejection")

    page.get_by_role("link", name="Activities", exact=True).click()
    expect(page.locator("[data-activity=act-3] .badge")).to_contain_text("Rejected")
    page.click("[data-activity=act-3]")
    expect(page.locator("#rejection")).to_contain_text(REASON)
    crew.screenshot("09-activity-rejected")
    # The crew corrects it and sends a new envelope after the refused one.
    page.get_by_label("Notes").fill("Re-measured after central's change.")
    page.get_by_role("button", name="Mark completed").click()
    confirm(page, "Mark completed")
    expect(head_badge(page)).to_contain_text("Completed")
    token = gateway.token()
    states = [(e["seq"], e["state"]) for e in envelopes_at_gateway(gateway, token, "act-3")]
    assert states == [(1, "queued"), (2, "rejected"), (3, "queued")]
    # Corrected: the refusal stays on record but no longer asks for attention.
    page.get_by_role("link", name="Pending").click()
    expect(page.locator("#rejections .rejection-done")).to_contain_text("Corrected")
    expect(page.locator("#nav .count")).to_have_count(0)


def test_service_worker_opens_the_app_with_no_gateway_and_sign_out_wipes_it(
    gateway: GatewayProcess, crew: Crew
) -> None:
    crew.allow_network_errors = True  # the gateway is switched off on purpose
    page = crew.page
    # 127.0.0.1 is a secure context: the service worker is registered there
    # (on site: HTTPS with a certificate the phones trust).
    crew.sign_in(gateway.local_url)
    assert page.evaluate("window.isSecureContext") is True
    assert page.evaluate("navigator.serviceWorker.ready.then((r) => !!r.active)") is True
    wait_until(
        lambda: page.evaluate("caches.keys().then((k) => k.length)") == 1,
        what="the app shell cache",
    )
    page.click("[data-activity=act-4]")
    page.get_by_role("radio", name="Yes").check()
    page.get_by_role("button", name="Save draft").click()
    expect(head_badge(page)).to_contain_text("Draft")

    gateway.stop()
    page.reload()
    expect(page.locator("#reach")).to_have_text("Gateway out of reach")
    expect(page.locator("h1")).to_have_text("Inspect act-4")
    expect(page.get_by_role("radio", name="Yes")).to_be_checked()
    page.get_by_role("link", name="Activities", exact=True).click()
    expect(page.locator("[data-activity]")).to_have_count(len(ACTIVITIES))
    expect(page.locator("#kept-note")).to_contain_text("this is what your phone kept")
    crew.screenshot("10-no-gateway-service-worker")

    gateway.start()
    expect(page.locator("#reach")).to_have_text("Gateway in reach")
    # With the gateway back, the worker serves the app fresh from the network.
    page.reload()
    expect(page.locator("[data-activity=act-4] .badge")).to_contain_text("Draft")
    assert page.evaluate("!!navigator.serviceWorker.controller") is True
    page.get_by_role("button", name="Sign out").click()
    confirm(page, "Sign out")
    expect(page.get_by_label("User name")).to_be_visible()
    assert page.evaluate("indexedDB.databases()") == []
    assert page.evaluate("caches.keys()") == []
    assert page.evaluate("navigator.serviceWorker.getRegistrations().then((r) => r.length)") == 0
    assert page.evaluate("localStorage.length") == 0

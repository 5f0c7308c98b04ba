"""The fleet's rejections, newest first, with what happened after; and kept form versions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from cloud_bridge.service import Bridge
from tests.cloud_bridge.conftest import FORM, Admin, FakeGateway, envelope


async def _activity(admin: Admin, gw: FakeGateway, aid: str) -> int:
    await admin.ok(
        "POST",
        "/api/v1/activities",
        {"title": f"Check {aid}", "type": "inspection", "responsible": "ana", "id": aid},
    )
    await admin.ok("POST", f"/api/v1/activities/{aid}/approve", {"approver": "ana"})
    await admin.ok("POST", f"/api/v1/activities/{aid}/dispatch", {"gateway_id": gw.gateway_id})
    return int((await gw.expect("down/dispatch")).activity.version)


async def test_rejections_newest_first_with_what_happened_after(
    bridge: Bridge, admin: Admin, gateways: Callable[[str], Awaitable[FakeGateway]]
) -> None:
    await admin.ok(
        "PUT",
        "/api/v1/users/ana",
        {"password": "correct horse", "offline": True, "sites": ["site-a", "site-b"]},
    )
    await admin.ok(
        "POST", "/api/v1/activity-types", {"name": "inspection", "offline": True, "form": FORM}
    )
    gw_a, gw_b = await gateways("site-a"), await gateways("site-b")
    ids = {}
    for aid, gw in (("fixed", gw_a), ("dropped", gw_a), ("open", gw_b)):
        v = await _activity(admin, gw, aid)
        bad = envelope(aid, 1, base_version=v + 7, status="completed")  # stale: conflict
        await gw.publish("up/envelopes", gw.batch([bad]))
        assert (await gw.results(1))[bad.envelope_id].code == "conflict"
        ids[aid] = (str(bad.envelope_id), v)
    good = envelope("fixed", 2, base_version=ids["fixed"][1], status="completed")
    await gw_a.publish("up/envelopes", gw_a.batch([good]))
    assert (await gw_a.results(1))[good.envelope_id].outcome == "applied"
    await admin.ok("POST", "/api/v1/activities/dropped/cancel", {"reason": "Not needed."})

    out = await admin.ok("GET", "/api/v1/rejections")
    items = out["rejections"]
    assert [r["activity_id"] for r in items] == ["open", "dropped", "fixed"]
    assert out["next"] is None
    by = {r["activity_id"]: r for r in items}
    assert by["fixed"]["after"]["state"] == "corrected"
    assert by["fixed"]["after"]["envelope_id"] == str(good.envelope_id)
    assert by["dropped"]["after"]["state"] == "canceled"
    assert by["open"]["after"] == {"state": "open"}
    first = by["open"]
    assert first["gateway_id"] == "site-b" and first["author"] == "ana"
    assert first["code"] == "conflict" and "version" in first["reason"]
    assert first["activity_title"] == "Check open" and first["rejected_at"]

    page = await admin.ok("GET", "/api/v1/rejections?limit=2")
    assert [r["activity_id"] for r in page["rejections"]] == ["open", "dropped"]
    rest = await admin.ok("GET", f"/api/v1/rejections?limit=2&before={page['next']}")
    assert [r["activity_id"] for r in rest["rejections"]] == ["fixed"] and rest["next"] is None
    only_open = await admin.ok("GET", "/api/v1/rejections?open=true&limit=1")
    assert [r["activity_id"] for r in only_open["rejections"]] == ["open"]
    assert only_open["next"] is None
    on_a = await admin.ok("GET", "/api/v1/rejections?gateway=site-a")
    assert {r["activity_id"] for r in on_a["rejections"]} == {"fixed", "dropped"}
    for bad_query, code in (
        ("limit=0", "invalid_limit"),
        ("limit=abc", "invalid_limit"),
        ("before=nope", "invalid_cursor"),
    ):
        status, body = await admin.call("GET", f"/api/v1/rejections?{bad_query}")
        assert status == 400 and body["error"]["code"] == code


async def test_every_form_version_is_kept(bridge: Bridge, admin: Admin) -> None:
    await admin.ok(
        "POST", "/api/v1/activity-types", {"name": "inspection", "offline": True, "form": FORM}
    )
    # The offline switch alone makes no new version; a changed form does.
    await admin.ok(
        "POST", "/api/v1/activity-types", {"name": "inspection", "offline": False, "form": FORM}
    )
    slim = {"fields": [{"name": "site_ok", "type": "boolean"}]}
    out = await admin.ok(
        "POST", "/api/v1/activity-types", {"name": "inspection", "offline": False, "form": slim}
    )
    assert out["form_version"] == 2
    t = await admin.ok("GET", "/api/v1/activity-types/inspection")
    assert [v["form_version"] for v in t["versions"]] == [2, 1]
    assert t["versions"][1]["tables"] == ["readings"] and t["offline"] is False
    v1 = await admin.ok("GET", "/api/v1/activity-types/inspection/versions/1")
    assert [f["name"] for f in v1["form"]["fields"]] == ["site_ok", "notes", "weather"]
    for path, status in (
        ("/api/v1/activity-types/nope", 404),
        ("/api/v1/activity-types/inspection/versions/9", 404),
        ("/api/v1/activity-types/inspection/versions/x", 400),
        ("/api/v1/activity-types/inspection/versions/99999999999999", 400),
    ):
        got, body = await admin.call("GET", path)
        assert got == status, (path, body)


async def test_a_bad_form_definition_names_the_field(bridge: Bridge, admin: Admin) -> None:
    for form, expected in (
        (
            {"fields": [{"name": "ok", "type": "text"}, {"name": "weather", "type": "colour"}]},
            "field 'weather' (form.fields[1]): type must be 'text'",
        ),
        (
            {"tables": [{"name": "readings", "fields": [{"name": "c", "type": "choice"}]}]},
            "field 'c' in table 'readings' (form.tables[0].fields[0]): choice field 'c' needs",
        ),
        (
            {"fields": [{"name": "Bad Name", "type": "text"}]},
            "field 'Bad Name' (form.fields[0]): name must start with a lowercase letter",
        ),
        (
            {"fields": [{"name": "a", "type": "text"}, {"name": "a", "type": "text"}]},
            "form: duplicate field name 'a'",
        ),
    ):
        status, body = await admin.call(
            "POST", "/api/v1/activity-types", {"name": "inspection", "form": form}
        )
        assert status == 400 and body["error"]["code"] == "invalid_type", body
        assert expected in body["error"]["message"], body["error"]["message"]

"""The site lead's Site screen in the crews' web app, and its absence for a crew member.

bob is site lead of this gateway (central's user push says so); alice is a
crew member. bob sees the whole gateway, refreshed live; alice sees only her
own work, is refused the Site screen with a reason, and gets it the moment
central makes her site lead (and loses it when central takes it back).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import create_engine, update

from gateway.store.schema import envelopes
from gateway.store.users import replace_users
from tests.gateway.conftest import PASSWORDS, user_push
from tests.web.conftest import Crew, GatewayProcess, chromium_missing
from tests.web.steps import wait_until

pytestmark = pytest.mark.browser

REASON = "The fence height was changed on central after this activity went offline."


@pytest.fixture(scope="module")
def site_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    if reason := chromium_missing():
        pytest.skip(reason)
    gw = GatewayProcess(tmp_path_factory.mktemp("site") / "gateway", site_leads=("bob",))
    gw.write_config()
    gw.seed()
    gw.start()
    yield gw
    gw.stop()


def post_completed(gw: GatewayProcess, activity_id: str, seq: int) -> str:
    envelope_id = str(uuid.uuid4())
    gw.call(
        "POST",
        "/api/v1/envelopes",
        gw.token("alice"),
        {
            "envelope_id": envelope_id,
            "activity_id": activity_id,
            "seq": seq,
            "base_version": 3,
            "status": "completed",
            "created_at": datetime.now(UTC).isoformat(),
            "record": {"site_ok": True, "notes": f"save {seq}"},
            "tables": {"readings": [{"meter": "A1", "value": 14.2}]},
        },
    )
    return envelope_id


def in_the_store(gw: GatewayProcess, work: Any) -> None:
    """Change the gateway's store as its uplink would (central's answers, a user push)."""
    engine = create_engine(f"sqlite:///{gw.db_path}", connect_args={"timeout": 10})
    try:
        with engine.begin() as conn:
            work(conn)
    finally:
        engine.dispose()


def sign_in(page: Page, gw: GatewayProcess, username: str) -> None:
    page.goto(gw.lan_url + "/")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(PASSWORDS[username])
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("h1")).to_have_text("Your activities")


def test_the_site_lead_sees_the_whole_gateway_refreshed_live(
    site_gateway: GatewayProcess, crew: Crew
) -> None:
    gw = site_gateway
    post_completed(gw, "act-1", 1)  # alice's, waiting for backhaul
    refused = post_completed(gw, "act-2", 1)
    in_the_store(
        gw,
        lambda c: c.execute(
            update(envelopes)
            .where(envelopes.c.envelope_id == refused)
            .values(
                state="rejected",
                code="version_conflict",
                reason=REASON,
                result_at=datetime.now(UTC),
            )
        ),
    )

    page = crew.page
    sign_in(page, gw, "bob")
    page.get_by_role("link", name="Site").click()
    expect(page.locator("h1")).to_have_text("Site: North Quarry")
    expect(page.locator("#site-link-state")).to_contain_text("Backhaul is DOWN since")
    expect(page.locator("#site-backhaul")).to_have_class("card card-alert")
    expect(page.locator("#site-last-sync")).to_have_text(
        "Not synced with central yet: no work from this gateway has been answered."
    )
    expect(page.locator("#site-counts [data-state=queued] dd")).to_have_text("1")
    expect(page.locator("#site-counts [data-state=rejected] dd")).to_have_text("1")
    expect(page.locator("#site-oldest")).to_contain_text(
        "Oldest waiting to go up: Inspect act-1, save 1 by alice, waiting"
    )
    expect(page.locator("#site-files")).to_have_text("No photos or signatures waiting to go up.")
    rejection = page.locator(f"#site-rejections [data-envelope='{refused}']")
    expect(rejection.locator("strong")).to_have_text("Inspect act-2 · save 1")
    expect(rejection.locator(".rejection-who")).to_contain_text("Saved by alice; refused")
    expect(rejection.locator(".rejection-code")).to_have_text(
        "Someone else changed this activity first (version_conflict)"
    )
    expect(rejection.locator(".rejection-reason")).to_have_text(REASON)
    expect(rejection.locator(".rejection-after")).to_have_text(
        "After: nothing yet; alice has to correct it and save again."
    )
    expect(page.locator("#site-refused")).to_have_class("card card-alert")
    expect(page.locator("#site-rejections-count")).to_have_text("1 refusal, 1 still to correct.")
    expect(page.locator("#site-disk")).to_contain_text(" free (the database uses ")
    expect(page.locator("#site-disk-policy")).to_contain_text("The full-disk guard is off")
    expect(page.locator("#site-replica")).to_contain_text("Replica: off")
    expect(page.locator("#site-cert")).to_have_text(
        "No certificate: the link to central does not use TLS."
    )
    expect(page.locator("#site-version")).to_contain_text("2 people signed in")
    crew.screenshot("15-site-lead")
    # Nothing wider than the phone: four tabs fit, long words wrap.
    assert page.evaluate(
        """() => document.documentElement.scrollWidth <= window.innerWidth &&
            [...document.querySelectorAll('#nav .nav-link')].every(
                (a) => a.scrollWidth <= a.clientWidth)"""
    )

    # alice corrects it on her phone: bob's screen shows it without a reload.
    post_completed(gw, "act-2", 2)
    expect(rejection.locator(".rejection-after")).to_have_text(
        "After: corrected by save 2, waiting for backhaul."
    )
    expect(page.locator("#site-counts [data-state=queued] dd")).to_have_text("2")
    expect(page.locator("#site-rejections-count")).to_have_text("1 refusal, 0 still to correct.")
    expect(page.locator("#site-refused")).to_have_class("card")
    crew.screenshot("16-site-lead-corrected", scroll_to="#site-refused")


def test_a_crew_member_has_no_site_screen_until_central_makes_them_site_lead(
    site_gateway: GatewayProcess, crew: Crew
) -> None:
    gw = site_gateway
    page = crew.page
    sign_in(page, gw, "alice")
    expect(page.locator("#nav")).to_contain_text("Pending")
    expect(page.locator("#nav a[href='#/site']")).to_have_count(0)
    # Typed in by hand: the gateway refuses, and the app says why.
    page.goto(gw.lan_url + "/#/site")
    expect(page.locator("#site-refused")).to_have_text("Only the site lead sees the whole gateway.")
    expect(page.locator("#site-counts")).to_have_count(0)
    crew.forgive("status of 403 (Forbidden)")
    token = gw.token("alice")
    try:
        gw.call("GET", "/api/v1/site", token)
        raise AssertionError("a crew member was shown the site view")
    except Exception as exc:  # urllib's HTTPError
        assert getattr(exc, "code", None) == 403, exc

    # Central grants alice the site lead: her app offers the Site screen by itself.
    grant = user_push("alice", "bob", leads=("alice", "bob"))
    in_the_store(gw, lambda c: replace_users(c, grant))
    screens = iter(["Pending", "Activities"] * 20)

    def offered() -> bool:
        if page.locator("#nav a[href='#/site']").count():
            return True
        page.get_by_role("link", name=next(screens), exact=True).click()  # each opens a refresh
        page.wait_for_timeout(500)
        return False

    wait_until(offered, timeout=30, what="the Site screen to be offered")
    page.get_by_role("link", name="Site").click()
    expect(page.locator("#site-counts")).to_be_visible()

    # And takes it back: the next refresh of the screen says so and the tab goes.
    in_the_store(gw, lambda c: replace_users(c, user_push("alice", "bob", leads=("bob",))))
    expect(page.locator("#site-refused")).to_have_text(
        "Only the site lead sees the whole gateway.", timeout=30_000
    )
    expect(page.locator("#nav a[href='#/site']")).to_have_count(0)
    crew.may_happen.append("status of 403 (Forbidden)")

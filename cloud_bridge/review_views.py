"""The review API: ``POST /api/v1/activities/{id}/review`` and the activity's rounds.

``has_issues`` is a check-out: the Dispatch (with the note) leaves after the
commit, and if the broker cannot take it the check-out and the review are
undone (503), as for an ordinary dispatch.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from aiohttp import web
from pydantic import Field
from sqlalchemy.orm import Session

from cloud_bridge import audit, rejection_list, review, rules, views
from cloud_bridge.access import Route
from cloud_bridge.app_keys import MQTT_KEY, RUNNER_KEY
from cloud_bridge.errors import CentralError, bad_request, not_found
from cloud_bridge.permissions import Action, Actor, scope
from cloud_bridge.views import Body, activity_json, read_body
from outpost.wire.schemas import Dispatch

logger = logging.getLogger(__name__)

# How the admin token is named as a reviewer (it is no person).
ADMIN_TOKEN_ACTOR = "admin-token"


class ReviewBody(Body):
    state: Literal["approved", "has_issues"]
    note: str | None = Field(default=None, max_length=2000)


def actor_of(request: web.Request) -> tuple[str, str, str | None]:
    """``(reviewer, via, display name)`` of the authenticated caller (never a body field).

    ``via``: ``session`` (a page's sign-in), ``token`` (a person's API token or
    API sign-in) or ``admin_token`` (a script).
    """
    actor = views.actor_of(request)
    if actor.is_admin_token or actor.username is None:
        return ADMIN_TOKEN_ACTOR, "admin_token", "the admin token"
    via = "session" if actor.via == "page" else "token"
    return actor.username, via, actor.display_name or actor.username


async def post_review(request: web.Request) -> web.Response:
    aid = request.match_info["activity_id"]
    body = await read_body(request, ReviewBody)
    return web.json_response(await async_review(request, aid, body.state, body.note))


async def async_review(
    request: web.Request, aid: str, state: str, note: str | None
) -> dict[str, Any]:
    """Record a review as the caller (the API and the activity page); sends it back if asked."""
    reviewer, via, display = actor_of(request)
    actor = views.actor_of(request)
    runner = request.app[RUNNER_KEY]

    def work(s: Session) -> review.Reviewed:
        done = review.review(s, aid, state, note, reviewer, via, display)
        sent = f", sent back to gateway {done.dispatch.gateway_id}" if done.dispatch else ""
        audit.record(
            s,
            actor,
            "activity.review",
            "activity",
            aid,
            f"reviewed activity {aid!r}: {state.replace('_', ' ')} "
            f"(round {done.review['round']}){sent}",
            state=state,
            note=done.review["note"],
            round=done.review["round"],
            gateway_id=done.dispatch.gateway_id if done.dispatch else None,
        )
        return done

    done: review.Reviewed = await runner.async_tx(work)
    out: dict[str, Any] = {"activity": activity_json(done.activity), "review": done.review}
    if done.dispatch is not None:
        await _async_send_back(request, actor, aid, done.review["id"], done.dispatch)
        logger.info(
            "activity %s sent back to gateway %s for round %s by %s",
            aid,
            done.dispatch.gateway_id,
            done.review["round"] + 1,
            reviewer,
        )
    else:
        logger.info("activity %s reviewed %s by %s", aid, state, reviewer)
    out["sent_to_gateway"] = done.dispatch.gateway_id if done.dispatch else None
    return out


async def _async_send_back(
    request: web.Request, actor: Actor, aid: str, review_id: int, dispatch: Dispatch
) -> None:
    """Hand the dispatch to the broker; when it cannot take it, undo the review (503)."""
    if await request.app[MQTT_KEY].async_dispatch(dispatch):
        return

    def undo(s: Session) -> bool:
        undone = review.undo_send_back(s, review_id, aid)
        if undone:
            audit.record(
                s,
                actor,
                "activity.review_undone",
                "activity",
                aid,
                f"the review of {aid!r} was undone: the broker could not take it",
            )
        return undone

    undone = await request.app[RUNNER_KEY].async_tx(undo)
    logger.warning(
        "activity %s not sent back to %s: broker unavailable; review %s",
        aid,
        dispatch.gateway_id,
        "undone" if undone else "kept",
    )
    raise CentralError(
        "broker_unavailable",
        "Central cannot reach the MQTT broker, so the activity was not sent back; "
        + ("nothing changed, try again." if undone else "it will go when it can."),
        503,
    )


def own_only(request: web.Request) -> str | None:
    """The username reads are narrowed to when the caller may read only their own activities."""
    actor = views.actor_of(request)
    if scope(actor, Action.ACTIVITIES_READ) == "own":
        return actor.username or ""
    return None


async def get_reviews(request: web.Request) -> web.Response:
    aid = request.match_info["activity_id"]
    mine = own_only(request)

    def work(s: Session) -> dict[str, Any]:
        if mine is not None:
            activity = rules.get_activity(s, aid)
            if not owns_activity(mine, activity):
                raise not_found("activity", aid)  # as if it were not there: no probing
        return review.reviews_of(s, aid)

    return web.json_response(await request.app[RUNNER_KEY].async_tx(work))


def owns_activity(username: str, activity: Any) -> bool:
    return username in (activity.responsible, activity.holder_user)


async def list_rejections(request: web.Request) -> web.Response:
    q = request.query
    raw = q.get("limit", "50")
    limit = int(raw) if raw.isdigit() and len(raw) <= 4 else 0
    if not 1 <= limit <= rejection_list.MAX_LIMIT:
        raise bad_request(
            f"limit must be a whole number from 1 to {rejection_list.MAX_LIMIT}.", "invalid_limit"
        )
    still_open = q.get("open", "") in ("1", "true", "yes")
    mine = own_only(request)

    def work(s: Session) -> dict[str, Any]:
        return rejection_list.rejections(
            s,
            limit=limit,
            before=q.get("before") or None,
            gateway_id=q.get("gateway") or None,
            code=q.get("code") or None,
            activity_id=q.get("activity_id") or None,
            still_open=still_open,
            mine=mine,
        )

    return web.json_response(await request.app[RUNNER_KEY].async_tx(work))


ROUTES: list[Route] = [
    Route(
        "POST",
        "/api/v1/activities/{activity_id}/review",
        post_review,
        "Review an applied upload: approved, or has_issues with a note (sends it back to "
        "its gateway)",
        Action.ACTIVITIES_REVIEW,
        ReviewBody,
        statuses={"503": "the broker is unreachable: the note could not be sent"},
    ),
    Route(
        "GET",
        "/api/v1/activities/{activity_id}/reviews",
        get_reviews,
        "The activity's reviews, its review state and its rounds of field work",
        Action.ACTIVITIES_READ,
    ),
    Route(
        "GET",
        "/api/v1/rejections",
        list_rejections,
        "Every rejected envelope, newest first, with what happened after it "
        "(?limit=&before=&gateway=&code=&activity_id=&open=true)",
        Action.ACTIVITIES_READ,
    ),
]

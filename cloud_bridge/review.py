"""Reviewing what the field sent, and sending an activity back with a note.

A dispatcher reviews an activity whose completed upload central applied
(it is checked in: online, with a completed record). ``approved`` closes the
round. ``has_issues`` checks the activity out again to the gateway that
checked it in, for the same user, and the :class:`~outpost.wire.Dispatch`
carries the note (``Dispatch.review``); the crew corrects and completes it
again, and that second upload applies like the first (a new check-out: its
seq continues after the highest one central saw from that gateway).

Rounds: round 1 is the field work up to the first ``has_issues``; each
``has_issues`` review starts the next round with the check-out it made
(``Review.checkout_no``). Every review is kept; an activity's review state is
that of the latest review of its *current* record (a newer upload is
"awaiting review" again).

Every function here is blocking and takes an open :class:`Session`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloud_bridge import rules
from cloud_bridge.errors import CentralError
from cloud_bridge.models import (
    APPLIED,
    CANCELED,
    OFFLINE,
    REJECTED,
    Activity,
    Gateway,
    LedgerEntry,
    Record,
    Review,
    utcnow,
)
from cloud_bridge.review_note import APPROVED, HAS_ISSUES
from outpost.times import iso as _iso
from outpost.wire.schemas import REVIEW_SINCE, Dispatch

REVIEW_STATES = (APPROVED, HAS_ISSUES)
AWAITING = "awaiting_review"  # a completed upload no review has looked at yet

NOT_REVIEWABLE = "not_reviewable"
GATEWAY_TOO_OLD = "gateway_too_old"


def parse_version(text: str | None) -> tuple[int, ...] | None:
    """``"0.3.0"`` -> ``(0, 3, 0)``; None when absent or not dotted numbers."""
    if not text:
        return None
    parts = []
    for piece in text.split("+")[0].split("-")[0].split("."):
        if not piece.isdigit():
            return None
        parts.append(int(piece))
    return tuple(parts)


def _latest_reviews(session: Session, activity_id: str) -> list[Review]:
    return list(
        session.scalars(select(Review).where(Review.activity_id == activity_id).order_by(Review.id))
    )


def current_round(session: Session, activity_id: str) -> int:
    """The round of field work the activity is in: 1 + the times it was sent back."""
    sent_back = session.scalar(
        select(func.count())
        .select_from(Review)
        .where(Review.activity_id == activity_id, Review.state == HAS_ISSUES)
    )
    return 1 + int(sent_back or 0)


def review_state(session: Session, activity: Activity) -> str | None:
    """``approved``, ``has_issues``, ``awaiting_review`` (completed, not reviewed) or None."""
    record = session.get(Record, activity.id)
    reviews = _latest_reviews(session, activity.id)
    if reviews and reviews[-1].state == HAS_ISSUES and activity.state == OFFLINE:
        return HAS_ISSUES  # back in the field
    if record is None or record.status != "completed":
        return None
    for r in reversed(reviews):
        if r.envelope_id == record.envelope_id:
            return r.state
    return AWAITING


def review_json(r: Review) -> dict[str, Any]:
    return {
        "id": r.id,
        "activity_id": r.activity_id,
        "round": r.round,
        "state": r.state,
        "note": r.note,
        "reviewer": r.reviewer,
        "via": r.via,
        "envelope_id": r.envelope_id,
        "sent_to_gateway": r.gateway_id,
        "checkout_no": r.checkout_no,
        "reviewed_at": _iso(r.reviewed_at),
    }


@dataclass
class Reviewed:
    """What a review did: its row, and the dispatch to send when it went back to the field."""

    review: dict[str, Any]
    activity: Activity
    dispatch: Dispatch | None


def review(
    session: Session,
    activity_id: str,
    state: str,
    note: str | None,
    reviewer: str,
    via: str,
    reviewer_name: str | None = None,
) -> Reviewed:
    """Record a review; ``has_issues`` also checks the activity out to its last gateway.

    ``reviewer`` is the authenticated person (or the admin token's name);
    ``via`` how they signed in (``session``, ``token``, ``admin_token``).
    """
    if state not in REVIEW_STATES:
        raise CentralError("invalid_state", "state must be 'approved' or 'has_issues'.", 400)
    note = (note or "").strip() or None
    if state == HAS_ISSUES and note is None:
        raise CentralError(
            "note_required",
            "Sending an activity back needs a note that tells the crew what to correct.",
            400,
        )
    activity = rules.get_activity(session, activity_id, lock=True)
    record = _reviewable(session, activity)
    entry = session.get(LedgerEntry, record.envelope_id)
    row = Review(
        activity_id=activity_id,
        round=current_round(session, activity_id),
        state=state,
        note=note,
        reviewer=reviewer,
        via=via,
        reviewer_display=reviewer_name,
        envelope_id=record.envelope_id,
        reviewed_at=utcnow(),
    )
    dispatch: Dispatch | None = None
    if state == HAS_ISSUES:
        if entry is None:  # pragma: no cover - a record always has its ledger row
            raise CentralError(NOT_REVIEWABLE, f"Activity {activity_id!r} has no upload.")
        activity, dispatch = _send_back(session, activity_id, entry.gateway_id, row)
    else:
        session.add(row)
        session.flush()
    return Reviewed(review_json(row), activity, dispatch)


def _reviewable(session: Session, activity: Activity) -> Record:
    """The activity's completed upload, applied; a refusal when there is none to review."""
    activity_id = activity.id
    if activity.state == CANCELED:
        raise CentralError("canceled", f"Activity {activity_id!r} was canceled.")
    if activity.state == OFFLINE:
        raise CentralError(
            rules.CHECKED_OUT,
            f"Activity {activity_id!r} is checked out to gateway {activity.holder_gateway!r}; "
            "it can be reviewed once its completed upload is applied.",
        )
    record = session.get(Record, activity_id)
    if record is None or record.status != "completed":
        raise CentralError(
            NOT_REVIEWABLE,
            f"Activity {activity_id!r} has no completed upload applied yet; "
            "only work that came back from the field can be reviewed.",
        )
    return record


def _send_back(
    session: Session, activity_id: str, gateway_id: str, row: Review
) -> tuple[Activity, Dispatch]:
    """has_issues: check the activity out again to the gateway its upload came from."""
    gw = session.get(Gateway, gateway_id)
    version = parse_version(gw.version if gw else None)
    if version is not None and version < REVIEW_SINCE:
        raise CentralError(
            GATEWAY_TOO_OLD,
            f"Gateway {gateway_id!r} runs Outpost {gw.version if gw else '?'}, which cannot "
            "take work back with a note (it needs "
            f"{'.'.join(map(str, REVIEW_SINCE))} or later); update it, or create a new "
            "activity for the correction.",
        )
    # The rules of check-out apply again (the user may no longer work offline...).
    activity, _wire = rules.check_out(session, activity_id, gateway_id)
    row.gateway_id = gateway_id
    row.checkout_no = activity.checkout_no
    session.add(row)
    session.flush()
    return activity, rules.dispatch_of(session, activity)


def undo_send_back(session: Session, review_id: int, activity_id: str) -> bool:
    """The has_issues dispatch could not be handed to the broker: take back check-out and review."""
    row = session.get(Review, review_id)
    if row is None or row.checkout_no is None or row.gateway_id is None:
        return False
    undone = rules.undo_check_out(session, activity_id, row.gateway_id, row.checkout_no)
    if undone:
        session.delete(row)
        session.flush()
    return undone


# --- the activity's rounds, for its timeline --------------------------------------


def rounds(session: Session, activity_id: str) -> list[dict[str, Any]]:
    """Each round of field work: its check-outs, envelopes (outcomes), and its review.

    Round ``k`` holds the envelopes of check-outs from the one that started it
    (round 1: the first) up to, not including, the check-out that started
    round ``k + 1`` (the next ``has_issues`` review's).
    """
    rules.get_activity(session, activity_id)
    reviews = _latest_reviews(session, activity_id)
    starts = [1] + [r.checkout_no for r in reviews if r.state == HAS_ISSUES and r.checkout_no]
    entries = list(
        session.scalars(
            select(LedgerEntry)
            .where(LedgerEntry.activity_id == activity_id)
            .order_by(LedgerEntry.checkout_no, LedgerEntry.seq, LedgerEntry.arrived_at)
        )
    )
    out: list[dict[str, Any]] = []
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else None
        mine = [
            e for e in entries if e.checkout_no >= start and (end is None or e.checkout_no < end)
        ]
        round_no = i + 1
        out.append(
            {
                "round": round_no,
                "sent_back_by": review_json(reviews_by_round(reviews, round_no - 1, HAS_ISSUES))
                if round_no > 1
                else None,
                "envelopes": [
                    {
                        "envelope_id": e.envelope_id,
                        "seq": e.seq,
                        "status": e.status,
                        "author": e.author,
                        "gateway_id": e.gateway_id,
                        "outcome": e.outcome,
                        "code": e.code,
                        "reason": e.reason,
                        "created_at": _iso(e.created_at),
                        "received_at": _iso(e.received_at),
                        "applied_at": _iso(e.applied_at),
                        "checked_in": e.checked_in,
                    }
                    for e in mine
                ],
                "applied": sum(1 for e in mine if e.outcome == APPLIED),
                "rejected": sum(1 for e in mine if e.outcome == REJECTED),
                "reviews": [review_json(r) for r in reviews if r.round == round_no],
            }
        )
    return out


def reviews_by_round(reviews: list[Review], round_no: int, state: str) -> Review:
    return next(r for r in reversed(reviews) if r.round == round_no and r.state == state)


def reviews_of(session: Session, activity_id: str) -> dict[str, Any]:
    """The activity's reviews, its review state and its rounds (``GET …/reviews``)."""
    activity = rules.get_activity(session, activity_id)
    return {
        "activity_id": activity_id,
        "review_state": review_state(session, activity),
        "round": current_round(session, activity_id),
        "reviews": [review_json(r) for r in _latest_reviews(session, activity_id)],
        "rounds": rounds(session, activity_id),
    }

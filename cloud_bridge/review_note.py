"""The review note a dispatch carries: the latest has_issues review of the current check-out.

Apart from ``cloud_bridge/review.py`` because ``rules.dispatch_of`` needs it and
``review`` needs ``rules``.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud_bridge.models import OFFLINE, Activity, Review
from outpost.wire.schemas import ReviewNote

APPROVED = "approved"
HAS_ISSUES = "has_issues"


def note_for(session: Session, activity: Activity) -> ReviewNote | None:
    """The review note of the activity's current check-out, if a has_issues review made it."""
    if activity.state != OFFLINE:
        return None
    row = session.scalars(
        select(Review)
        .where(
            Review.activity_id == activity.id,
            Review.state == HAS_ISSUES,
            Review.checkout_no == activity.checkout_no,
        )
        .order_by(Review.id.desc())
        .limit(1)
    ).first()
    if row is None or row.note is None:
        return None
    return ReviewNote(
        round=row.round + 1,
        note=row.note,
        reviewer=row.reviewer_display or row.reviewer,
        reviewed_at=row.reviewed_at,
        after_seq=activity.last_seq,
    )

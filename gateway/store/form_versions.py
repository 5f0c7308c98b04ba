"""Every form version this gateway was sent for each activity (schema step 6).

Central numbers the versions of a type's form (each changed definition or
XLSForm import is the next one, and central keeps them all). A dispatch
carries an activity with its type's newest version; the gateway keeps every
``(activity, version)`` it was sent, so an envelope is checked against the
version it names: a draft begun on version 1 is still checked against
version 1 after version 2 arrived, as central checks it at replay. Kept per
activity, not per type: each activity holds exactly what central sent for
it, whatever another activity of the type was sent (a central restored from
an older backup numbers versions again).

*Filled against*: the version an activity is being filled in on, which the
LAN API gives the crews' app with the activity -- the version of the
latest envelope of the current round when the gateway holds it (the crew
goes on with the draft they began), else the newest the activity was sent.

A version is kept while an activity names it as its newest or an envelope
that central has not applied names it; the retention job prunes the rest
(``PruneFormVersions``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, delete, exists, func, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from gateway.store.schema import (
    QUEUED,
    REJECTED,
    SENT,
    STORED,
    activities,
    envelopes,
    form_versions,
)
from gateway.store.tasks import WriteTask

# An envelope central has not applied keeps the version it names; listed
# rather than "!= applied" so SQLite reads ix_envelopes_state_received.
_UNAPPLIED = (STORED, QUEUED, SENT, REJECTED)


def keep_form_version(
    conn: Connection, activity_id: str, version: int, form_json: str, at: datetime
) -> None:
    """Hold ``version`` of the activity's form (a version already held is replaced as sent)."""
    stmt = sqlite_insert(form_versions).values(
        activity_id=activity_id, form_version=version, form=form_json, received_at=at
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[form_versions.c.activity_id, form_versions.c.form_version],
            set_={"form": form_json, "received_at": at},
        )
    )


def held_versions(conn: Connection, activity_id: str) -> list[int]:
    return list(
        conn.execute(
            select(form_versions.c.form_version)
            .where(form_versions.c.activity_id == activity_id)
            .order_by(form_versions.c.form_version)
        ).scalars()
    )


def filled_against(act: Any = activities) -> ColumnElement[int]:
    """SQL: the form version activity row ``act`` is being filled in on (module docstring)."""
    latest = (
        select(envelopes.c.form_version)
        .where(envelopes.c.activity_id == act.c.id, envelopes.c.seq > act.c.reopen_seq)
        .order_by(envelopes.c.seq.desc())
        .limit(1)
        .correlate(act)  # auto-correlation reaches one level up only
        .scalar_subquery()
    )
    fv = form_versions.alias()  # its own name: the expression may sit inside form_text()
    held = (
        select(fv.c.form_version)
        .where(fv.c.activity_id == act.c.id, fv.c.form_version == latest)
        .correlate(act)
        .scalar_subquery()
    )
    return func.coalesce(held, act.c.form_version)


def form_text(activity_id: Any, version: Any) -> ColumnElement[str]:
    """SQL: the definition (JSON text) of ``version`` of the activity's form, NULL when not held."""
    fv = form_versions.alias()
    return (
        select(fv.c.form)
        .where(fv.c.activity_id == activity_id, fv.c.form_version == version)
        .correlate(activities)
        .scalar_subquery()
    )


@dataclass(frozen=True, slots=True)
class PruneFormVersions(WriteTask[int]):
    """Forget the versions nothing on this gateway names any more; returns how many went."""

    def run(self, conn: Connection) -> int:
        # (An activity expired by retention names nothing: its versions go too.)
        named_by_activity = exists().where(
            activities.c.id == form_versions.c.activity_id,
            activities.c.form_version == form_versions.c.form_version,
        )
        named_by_envelope = exists().where(
            and_(
                envelopes.c.activity_id == form_versions.c.activity_id,
                envelopes.c.form_version == form_versions.c.form_version,
                envelopes.c.state.in_(_UNAPPLIED),
            )
        )
        result = conn.execute(delete(form_versions).where(~named_by_activity, ~named_by_envelope))
        return int(result.rowcount)

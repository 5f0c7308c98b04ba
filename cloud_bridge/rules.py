"""The rules of an offline activity (DESIGN rules 1-6) and the admin's operations.

Every function here is blocking: it takes an open :class:`Session` (one
transaction) and runs in a DB thread. Refusals raise :class:`CentralError`
with a stable code and one sentence a person understands.

Check-out is atomic on SQLite and PostgreSQL alike: the rules are checked,
then a conditional ``UPDATE … WHERE state = 'online'`` takes the activity;
only the transaction whose update touched the row wins. (On SQLite the whole
transaction also runs under ``BEGIN IMMEDIATE``.)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Executable, Table, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from cloud_bridge import people, rejections
from cloud_bridge.errors import CentralError, bad_request, not_found
from cloud_bridge.ledger import reject_held
from cloud_bridge.models import (
    CANCELED,
    OFFLINE,
    ONLINE,
    Activity,
    ActivityType,
    ActivityTypeVersion,
    Blob,
    Gateway,
    LedgerEntry,
    Record,
    RecordRow,
    User,
    utcnow,
)
from cloud_bridge.review_note import note_for
from outpost.forms import ActivityTypeDef, FormDefinition
from outpost.passwords import hash_password  # the one place (bounded)
from outpost.passwords import verify_password as verify_password
from outpost.wire.schemas import (
    ACTIVITY_ID_RE,
    ActivityWire,
    Dispatch,
    EnvelopeResult,
    UserPush,
    UserWire,
)
from outpost.wire.topics import valid_gateway_id

HELD_QUERY_CHUNK = 500  # SHA-256s per IN (...) query (bound parameters have limits)

# Rule refusals: code -> HTTP status. All are "the activity's state says no".
NOT_APPROVED = "not_approved"
APPROVER_NOT_RESPONSIBLE = "approver_not_responsible"
USER_NOT_OFFLINE = "user_not_offline"
TYPE_NOT_OFFLINE = "type_not_offline"
ALREADY_CHECKED_OUT = "already_checked_out"
CHECKED_OUT = "checked_out"
NOT_RESPONSIBLE = "not_responsible"
USER_DISABLED = "user_disabled"
USER_NOT_AT_SITE = "user_not_at_site"


# --- users and activity types ------------------------------------------------


def put_user(
    session: Session,
    username: str,
    password: str | None,
    offline: bool | None,
    display_name: str | None = None,
    *,
    role: str | None = None,
    sites: list[str] | None = None,
    site_lead: list[str] | None = None,
    disabled: bool | None = None,
) -> tuple[User, bool]:
    """Create or update a user as the system (seeding, tests); returns ``(user, created)``.

    The admin API and the pages go through :func:`cloud_bridge.people.put_user`
    with the person or token that asked (and a bounded hash).
    """
    from cloud_bridge.people import UserChange
    from cloud_bridge.people import put_user as put
    from cloud_bridge.permissions import Actor

    change = UserChange(
        password=password,
        offline=offline,
        display_name=display_name,
        role=role,
        sites=sites,
        site_lead=site_lead,
        disabled=disabled,
    )
    done = put(
        session, Actor("anonymous"), username, change, hash_password(password) if password else None
    )
    return done.user, done.created


def put_activity_type(
    session: Session, definition: ActivityTypeDef, actor: str | None = None
) -> tuple[ActivityType, bool]:
    """Create an activity type, or update it (a changed form gets a new form_version).

    Every form version is kept in ``activity_type_versions``.
    """
    form_json = definition.form.model_dump(mode="json", exclude_none=True)
    existing = session.get(ActivityType, definition.name)
    now = utcnow()
    if existing is None:
        created = ActivityType(
            name=definition.name,
            offline=definition.offline,
            form=form_json,
            form_version=1,
            created_at=now,
            updated_at=now,
        )
        session.add(created)
        session.flush()
        _keep_version(session, created, actor, now)
        return created, True
    if existing.form != form_json:
        existing.form = form_json
        existing.form_version += 1
        _keep_version(session, existing, actor, now)
    existing.offline = definition.offline
    existing.updated_at = now
    session.flush()
    return existing, False


def _keep_version(session: Session, t: ActivityType, actor: str | None, now: datetime) -> None:
    session.add(
        ActivityTypeVersion(
            type_name=t.name,
            form_version=t.form_version,
            form=t.form,
            offline=t.offline,
            created_at=now,
            created_by=actor,
        )
    )
    session.flush()


def form_of(activity_type: ActivityType) -> FormDefinition:
    return FormDefinition.model_validate(activity_type.form)


# --- activities ------------------------------------------------------------------


def get_activity(session: Session, activity_id: str, *, lock: bool = False) -> Activity:
    stmt = (
        select(Activity).where(Activity.id == activity_id).execution_options(populate_existing=True)
    )
    if lock:
        stmt = stmt.with_for_update()
    activity = session.scalars(stmt).first()
    if activity is None:
        raise not_found("activity", activity_id)
    return activity


def create_activity(
    session: Session, title: str, type_name: str, responsible: str, activity_id: str | None = None
) -> Activity:
    if not title.strip() or len(title) > 300:
        raise bad_request("An activity needs a title of 1-300 characters.", "invalid_title")
    if session.get(ActivityType, type_name) is None:
        raise CentralError("unknown_type", f"No activity type {type_name!r} exists.", 400)
    if session.get(User, responsible) is None:
        raise CentralError("unknown_user", f"No user {responsible!r} exists.", 400)
    if activity_id is None:
        activity_id = f"act-{uuid.uuid4().hex[:16]}"
    elif not ACTIVITY_ID_RE.fullmatch(activity_id):
        raise bad_request(
            "An activity id is 1-64 letters, digits or the characters _ . : -.", "invalid_id"
        )
    elif session.get(Activity, activity_id) is not None:
        raise CentralError("exists", f"An activity {activity_id!r} already exists.", 409)
    now = utcnow()
    activity = Activity(
        id=activity_id,
        title=title,
        type=type_name,
        responsible=responsible,
        state=ONLINE,
        checkout_no=0,
        last_seq=0,
        version=1,
        created_at=now,
        updated_at=now,
    )
    session.add(activity)
    session.flush()
    return activity


def list_activities(session: Session, state: str | None) -> list[Activity]:
    stmt = select(Activity).order_by(Activity.created_at, Activity.id)
    if state is not None:
        stmt = stmt.where(Activity.state == state)
    return list(session.scalars(stmt))


def _refuse_if_checked_out(activity: Activity, action: str) -> None:
    if activity.state == OFFLINE:
        raise CentralError(
            CHECKED_OUT,
            f"Activity {activity.id!r} is checked out to gateway {activity.holder_gateway!r}; "
            f"it cannot be {action} online until it is checked in.",
        )
    if activity.state == CANCELED:
        raise CentralError(
            "canceled", f"Activity {activity.id!r} was canceled; it cannot be {action}."
        )


def update_activity(
    session: Session, activity_id: str, title: str | None, responsible: str | None
) -> Activity:
    """An online edit: refused while the activity is checked out (rule 2)."""
    activity = get_activity(session, activity_id, lock=True)
    _refuse_if_checked_out(activity, "edited")
    if title is not None:
        if not title.strip() or len(title) > 300:
            raise bad_request("An activity needs a title of 1-300 characters.", "invalid_title")
        activity.title = title
    if responsible is not None:
        if session.get(User, responsible) is None:
            raise CentralError("unknown_user", f"No user {responsible!r} exists.", 400)
        if responsible != activity.responsible:
            # A new responsible user must approve again (rule 1).
            activity.responsible = responsible
            activity.approver = None
            activity.approved_at = None
    activity.version += 1
    activity.updated_at = utcnow()
    session.flush()
    return activity


def approve(session: Session, activity_id: str, approver: str) -> Activity:
    """Record the approval (rule 1 itself is checked at dispatch)."""
    activity = get_activity(session, activity_id, lock=True)
    _refuse_if_checked_out(activity, "approved")
    if session.get(User, approver) is None:
        raise CentralError("unknown_user", f"No user {approver!r} exists.", 400)
    now = utcnow()
    activity.approver = approver
    activity.approved_at = now
    activity.updated_at = now
    session.flush()
    return activity


def check_rules(session: Session, activity: Activity) -> tuple[User, ActivityType]:
    """Rules 1 and 6 for taking ``activity`` offline; raises the first refusal."""
    if activity.state == CANCELED:
        raise CentralError("canceled", f"Activity {activity.id!r} was canceled.")
    if activity.state == OFFLINE:
        raise CentralError(
            ALREADY_CHECKED_OUT,
            f"Activity {activity.id!r} is already checked out to gateway "
            f"{activity.holder_gateway!r}.",
        )
    if activity.approver is None:
        raise CentralError(
            NOT_APPROVED,
            f"Activity {activity.id!r} is not approved; only approved ones go offline.",
        )
    if activity.approver != activity.responsible:
        raise CentralError(
            APPROVER_NOT_RESPONSIBLE,
            f"Activity {activity.id!r} was approved by {activity.approver!r}, but only its "
            f"responsible user {activity.responsible!r} may approve it for offline work.",
        )
    lock = session.get_bind().dialect.name != "sqlite"
    user_stmt = select(User).where(User.username == activity.responsible)
    type_stmt = select(ActivityType).where(ActivityType.name == activity.type)
    if lock:
        user_stmt = user_stmt.with_for_update(read=True)
        type_stmt = type_stmt.with_for_update(read=True)
    user = session.scalars(user_stmt).one()
    activity_type = session.scalars(type_stmt).one()
    if not activity_type.offline:
        raise CentralError(
            TYPE_NOT_OFFLINE,
            f"Activities of type {activity_type.name!r} may not go offline; "
            "enable offline work for the type first.",
        )
    if user.disabled:
        raise CentralError(
            USER_DISABLED,
            f"User {user.username!r}, responsible for activity {activity.id!r}, is disabled.",
        )
    if not user.offline:
        raise CentralError(
            USER_NOT_OFFLINE,
            f"User {user.username!r}, responsible for activity {activity.id!r}, "
            "may not work offline.",
        )
    return user, activity_type


def activity_wire(session: Session, activity: Activity) -> ActivityWire:
    activity_type = session.get(ActivityType, activity.type)
    assert activity_type is not None  # foreign key
    return ActivityWire(
        id=activity.id,
        title=activity.title,
        type=activity.type,
        form=form_of(activity_type),
        form_version=activity_type.form_version,
        responsible=activity.responsible,
        version=activity.version,
    )


def dispatch_of(session: Session, activity: Activity) -> Dispatch:
    """The Dispatch message for an activity checked out to a gateway.

    When a review sent it back (``has_issues``), the dispatch carries the note.
    """
    assert activity.holder_gateway is not None
    assert activity.holder_user is not None and activity.checked_out_at is not None
    return Dispatch(
        gateway_id=activity.holder_gateway,
        activity=activity_wire(session, activity),
        holder=activity.holder_user,
        dispatched_at=activity.checked_out_at,
        review=note_for(session, activity),
    )


def dispatches_held_by(session: Session, gateway_id: str) -> list[Dispatch]:
    """Every activity central records as checked out to ``gateway_id``.

    Sent again whenever the gateway comes online: a dispatch published before
    the gateway's first connection (no session on the broker yet) or lost to
    a bridge crash between commit and publish reaches it then. The gateway's
    upsert makes a repeat harmless.
    """
    held = session.scalars(
        select(Activity)
        .where(Activity.state == OFFLINE, Activity.holder_gateway == gateway_id)
        .order_by(Activity.id)
    )
    return [dispatch_of(session, a) for a in held]


def dispatches_of_type(session: Session, type_name: str) -> list[Dispatch]:
    """A Dispatch for every activity of ``type_name`` checked out to a gateway.

    Sent when the type gets a new form version: each holding gateway then has
    the new version for drafts not begun yet, and keeps the older ones its
    drafts were begun on (``gateway/store/form_versions.py``).
    """
    held = session.scalars(
        select(Activity)
        .where(Activity.state == OFFLINE, Activity.type == type_name)
        .order_by(Activity.holder_gateway, Activity.id)
    )
    return [dispatch_of(session, a) for a in held if a.holder_gateway is not None]


def gateway_check_out(
    session: Session, activity_id: str, gateway_id: str, username: str
) -> tuple[Activity, ActivityWire]:
    """A gateway's check-out request "for ``username``": what central believes of it.

    The gateway names the user; central trusts that only for a user it
    pushes to that gateway (:func:`cloud_bridge.people.is_pushed_to`: assigned
    to it, allowed offline, not disabled) who is responsible for the activity.
    Anything else is refused with a code and a reason, before the activity's
    own state is looked at and also for an activity the gateway holds already
    (a repeat of a lost answer), so a stolen gateway can act for no one but
    its own crew, on nothing but their own activities.
    """
    if not people.is_pushed_to(session, username, gateway_id):
        raise _not_pushed(session, username, gateway_id)
    activity = get_activity(session, activity_id)
    if username != activity.responsible:
        raise CentralError(
            NOT_RESPONSIBLE,
            f"User {username!r} is not responsible for activity {activity.id!r}; "
            "only its responsible user may take it offline.",
            403,
        )
    return check_out(session, activity_id, gateway_id, username, again=True)


def _not_pushed(session: Session, username: str, gateway_id: str) -> CentralError:
    user = session.get(User, username)
    if user is not None and user.disabled and people.works_at(session, username, gateway_id):
        return CentralError(
            USER_DISABLED,
            f"User {username!r} is disabled; gateway {gateway_id!r} may not act for them.",
            403,
        )
    if user is not None and not user.offline and people.works_at(session, username, gateway_id):
        return CentralError(
            USER_NOT_OFFLINE,
            f"User {username!r} may not work offline; gateway {gateway_id!r} may not act for them.",
            403,
        )
    # Unknown, or working elsewhere: the same answer, so a gateway learns nobody's name.
    return CentralError(
        USER_NOT_AT_SITE,
        f"User {username!r} is not one of the people central sends to gateway "
        f"{gateway_id!r}, so that gateway may not check out for them.",
        403,
    )


def check_out(
    session: Session,
    activity_id: str,
    gateway_id: str,
    username: str | None = None,
    *,
    again: bool = False,
) -> tuple[Activity, ActivityWire]:
    """Take an activity offline to ``gateway_id`` for ``username`` (default: responsible).

    Atomic: of two concurrent check-outs exactly one wins; the other gets
    ``already_checked_out``. With ``again`` (a gateway's check-out request), a
    request for an activity this gateway already holds for the same user is
    answered like the first one: the first answer may have been lost on the way.
    """
    if not valid_gateway_id(gateway_id):
        raise bad_request(f"{gateway_id!r} is not a valid gateway id.", "invalid_gateway")
    activity = get_activity(session, activity_id)
    if (
        again
        and activity.state == OFFLINE
        and activity.holder_gateway == gateway_id
        and activity.holder_user == (username or activity.responsible)
    ):
        return activity, activity_wire(session, activity)
    check_rules(session, activity)
    holder = username or activity.responsible
    _check_holder(session, activity, holder, gateway_id)
    _take_offline(session, activity, gateway_id, holder)
    activity = get_activity(session, activity_id)
    touch_gateway(session, gateway_id)
    return activity, activity_wire(session, activity)


def _check_holder(session: Session, activity: Activity, holder: str, gateway_id: str) -> None:
    """Only the responsible user takes an activity offline, to a gateway that signs them in."""
    if holder != activity.responsible:
        raise CentralError(
            NOT_RESPONSIBLE,
            f"User {holder!r} is not responsible for activity {activity.id!r}; "
            "only its responsible user may take it offline.",
            403,
        )
    if not people.is_pushed_to(session, holder, gateway_id):  # offline, enabled: above
        raise CentralError(
            USER_NOT_AT_SITE,
            f"User {holder!r} does not work at gateway {gateway_id!r}, so that gateway does not "
            f"hold their sign-in; add {gateway_id!r} to their sites first.",
        )


def _take_offline(session: Session, activity: Activity, gateway_id: str, holder: str) -> None:
    """The check-out itself: one conditional UPDATE, so of two at once exactly one wins."""
    activity_id = activity.id
    # The gateway numbers an activity's envelopes after the highest seq it holds for it:
    # 1 on a gateway that never had it, onwards on one that had it before.
    last_seq = session.scalar(
        select(func.max(LedgerEntry.seq)).where(
            LedgerEntry.activity_id == activity_id, LedgerEntry.gateway_id == gateway_id
        )
    )
    now = utcnow()
    result = session.execute(
        update(Activity)
        .where(
            Activity.id == activity_id,
            Activity.state == ONLINE,
            Activity.version == activity.version,
            Activity.approver == activity.approver,
        )
        .values(
            state=OFFLINE,
            holder_gateway=gateway_id,
            holder_user=holder,
            checked_out_at=now,
            checkout_no=Activity.checkout_no + 1,
            last_seq=last_seq or 0,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 1:  # type: ignore[attr-defined]
        return
    current = get_activity(session, activity_id)
    if current.state == OFFLINE:
        raise CentralError(
            ALREADY_CHECKED_OUT,
            f"Activity {activity_id!r} is already checked out to gateway "
            f"{current.holder_gateway!r}.",
        )
    raise CentralError(
        "changed", f"Activity {activity_id!r} changed while it was being checked out; retry."
    )


def undo_check_out(session: Session, activity_id: str, gateway_id: str, checkout_no: int) -> bool:
    """Give back a check-out whose dispatch could not be sent (nothing arrived for it yet)."""
    arrived = session.scalar(
        select(func.count())
        .select_from(LedgerEntry)
        .where(LedgerEntry.activity_id == activity_id, LedgerEntry.checkout_no == checkout_no)
    )
    if arrived:
        return False
    result = session.execute(
        update(Activity)
        .where(
            Activity.id == activity_id,
            Activity.state == OFFLINE,
            Activity.holder_gateway == gateway_id,
            Activity.checkout_no == checkout_no,
        )
        .values(state=ONLINE, holder_gateway=None, holder_user=None, checked_out_at=None)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def cancel(
    session: Session, activity_id: str, reason: str
) -> tuple[Activity, str | None, list[tuple[str, EnvelopeResult]]]:
    """Cancel an activity; returns it, the gateway to recall it from, and held envelopes' rejections."""
    activity = get_activity(session, activity_id, lock=True)
    if activity.state == CANCELED:
        raise CentralError("canceled", f"Activity {activity_id!r} is already canceled.")
    holder = activity.holder_gateway if activity.state == OFFLINE else None
    results = reject_held(
        session, activity, rejections.CANCELED, f"Activity {activity_id!r} was canceled by central."
    )
    now = utcnow()
    activity.state = CANCELED
    activity.canceled_at = now
    activity.holder_gateway = None
    activity.holder_user = None
    activity.version += 1
    activity.updated_at = now
    session.flush()
    return activity, holder, results


# --- reads for the admin ---------------------------------------------------------


def held_blobs(session: Session, sha256s: Iterable[str]) -> set[str]:
    """Which of ``sha256s`` central holds in full (one query for up to 500 of them)."""
    wanted = sorted(set(sha256s))
    held: set[str] = set()
    for i in range(0, len(wanted), HELD_QUERY_CHUNK):
        held.update(
            session.scalars(
                select(Blob.sha256).where(Blob.sha256.in_(wanted[i : i + HELD_QUERY_CHUNK]))
            )
        )
    return held


def missing(attachments: list[str], held: set[str]) -> list[str]:
    """The attachments an envelope or record references that central does not hold yet."""
    return [sha for sha in attachments if sha not in held]


def record_of(session: Session, activity_id: str) -> dict[str, Any]:
    activity = get_activity(session, activity_id)
    record = session.get(Record, activity_id)
    rows = session.scalars(
        select(RecordRow)
        .where(RecordRow.activity_id == activity_id)
        .order_by(RecordRow.table_name, RecordRow.row_index)
    )
    tables: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        tables.setdefault(row.table_name, []).append(row.data)
    attachments = record.attachments if record else []
    return {
        "activity_id": activity.id,
        "version": activity.version,
        "state": activity.state,
        "record": record.data if record else None,
        "tables": tables,
        "attachments": attachments,
        "missing_attachments": missing(attachments, held_blobs(session, attachments)),
        "status": record.status if record else None,
        "envelope_id": record.envelope_id if record else None,
        "seq": record.seq if record else None,
        "form_version": record.form_version if record else None,
        "updated_at": record.updated_at.isoformat() if record else None,
    }


def envelope_of(session: Session, envelope_id: str) -> LedgerEntry:
    entry = session.get(LedgerEntry, envelope_id)
    if entry is None:
        raise not_found("envelope", envelope_id)
    return entry


def list_envelopes(
    session: Session, activity_id: str | None, limit: int = 500
) -> list[LedgerEntry]:
    stmt = select(LedgerEntry).order_by(LedgerEntry.arrived_at.desc()).limit(limit)
    if activity_id is not None:
        stmt = stmt.where(LedgerEntry.activity_id == activity_id)
    return list(session.scalars(stmt))


# --- gateways and pushes -----------------------------------------------------------


def new_gateway_row(dialect: str, gateway_id: str, now: datetime) -> Executable:
    """``INSERT`` a gateway's row unless it exists (``ON CONFLICT DO NOTHING``).

    A gateway is first seen by whichever transaction comes first: its state
    message, its first batch, a dispatch to it. On PostgreSQL two of them at
    once both found no row and both inserted it: one failed (a 500 for a
    dispatch). The conflict clause makes the second wait and do nothing.
    """
    table: Table = Gateway.__table__  # type: ignore[assignment]
    values = {"id": gateway_id, "first_seen": now, "last_seen": now, "state": "unknown"}
    if dialect == "postgresql":
        return pg_insert(table).values(values).on_conflict_do_nothing(index_elements=["id"])
    return sqlite_insert(table).values(values).on_conflict_do_nothing(index_elements=["id"])


def touch_gateway(
    session: Session, gateway_id: str, now: datetime | None = None, *, flush: bool = True
) -> Gateway:
    """The gateway's row (made if new), seen at ``now``; ``flush=False`` leaves the change
    to the session's next flush (a group of heartbeats: one UPDATE per gateway each
    was most of a heartbeat's cost)."""
    now = now or utcnow()
    gw = session.get(Gateway, gateway_id)
    if gw is None:
        session.execute(new_gateway_row(session.get_bind().dialect.name, gateway_id, now))
        gw = session.get(Gateway, gateway_id)
        assert gw is not None
    if gw.last_seen < now:
        gw.last_seen = now
    if flush:
        session.flush()
    return gw


def known_gateways(session: Session) -> list[str]:
    return list(session.scalars(select(Gateway.id).order_by(Gateway.id)))


def user_push(session: Session, gateway_id: str) -> UserPush:
    """The snapshot of users and offline types a gateway holds (rule 6).

    Only the people assigned to this gateway who may work offline and are not
    disabled (:func:`cloud_bridge.people.pushed_to`), each with whether they
    lead this site.
    """
    from cloud_bridge.people import pushed_to

    lead_on_wire = "site_lead" in UserWire.model_fields
    users = [
        UserWire(
            username=u.username,
            password_hash=u.password_hash,
            offline=u.offline,
            display_name=u.display_name,
            **({"site_lead": lead} if lead_on_wire else {}),
        )
        for u, lead in pushed_to(session, gateway_id)
    ]
    types = list(
        session.scalars(
            select(ActivityType.name)
            .where(ActivityType.offline.is_(True))
            .order_by(ActivityType.name)
        )
    )
    return UserPush(gateway_id=gateway_id, users=users, offline_types=types, pushed_at=utcnow())


def parse_type_definition(data: Any) -> ActivityTypeDef:
    """The definition, or a 400 whose message names the field or table at fault."""
    from cloud_bridge.form_errors import problems

    try:
        return ActivityTypeDef.model_validate(data, strict=True)  # JSON has the types
    except ValidationError as exc:
        raise bad_request(
            f"The activity type is not valid: {'; '.join(problems(data, exc))}.", "invalid_type"
        ) from None


def count_by_state(session: Session) -> dict[str, int]:
    rows = session.execute(select(Activity.state, func.count()).group_by(Activity.state))
    return {state: int(n) for state, n in rows}

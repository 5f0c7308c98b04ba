"""Periodic work on the gateway (APScheduler 3 in the event loop).

Jobs: the heartbeat to central, and retention of finished history, on the
scheduler both services share (``outpost/scheduling.py``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

from aiohttp import web
from sqlalchemy import Connection, and_, delete, select

from gateway.backhaul import Backhaul
from gateway.config import GatewayConfig
from gateway.store import Store
from gateway.store.form_versions import PruneFormVersions
from gateway.store.schema import (
    APPLIED,
    CHECKED_IN,
    RECALLED,
    REJECTED,
    activities,
    attachments,
    envelope_attachments,
    envelopes,
    sessions,
)
from gateway.uplink import Uplink
from outpost.scheduling import new_scheduler, stoppable

_LOGGER = logging.getLogger(__name__)
CleanupCtx = Callable[[web.Application], AsyncIterator[None]]


def expire_history(conn: Connection, before: datetime) -> int:
    """Forget activities that left the offline list before ``before``.

    Only activities central checked in or recalled, and only when every one
    of their envelopes reached a final state and every attachment they
    reference reached central (or central refused it): unsent field data is
    never expired. Blob files themselves are kept.
    """
    finished = select(activities.c.id).where(
        and_(
            activities.c.state.in_((CHECKED_IN, RECALLED)),
            activities.c.updated_at < before,
            ~select(envelopes.c.envelope_id)
            .where(
                and_(
                    envelopes.c.activity_id == activities.c.id,
                    envelopes.c.state.not_in((APPLIED, REJECTED)),
                )
            )
            .exists(),
            ~select(envelope_attachments.c.sha256)
            .join(envelopes, envelopes.c.envelope_id == envelope_attachments.c.envelope_id)
            .join(attachments, attachments.c.sha256 == envelope_attachments.c.sha256)
            .where(
                envelopes.c.activity_id == activities.c.id,
                attachments.c.uploaded_at.is_(None),
                attachments.c.upload_error.is_(None),
            )
            .exists(),
        )
    )
    ids = list(conn.execute(finished).scalars())
    if not ids:
        return 0
    gone = select(envelopes.c.envelope_id).where(envelopes.c.activity_id.in_(ids))
    conn.execute(delete(envelope_attachments).where(envelope_attachments.c.envelope_id.in_(gone)))
    conn.execute(delete(envelopes).where(envelopes.c.activity_id.in_(ids)))
    conn.execute(delete(activities).where(activities.c.id.in_(ids)))
    return len(ids)


def expire_sessions(conn: Connection, now: datetime) -> int:
    return conn.execute(delete(sessions).where(sessions.c.expires_at < now)).rowcount


def scheduler_ctx(config: GatewayConfig, store: Store, backhaul: Backhaul) -> CleanupCtx:
    """The scheduler as a ``cleanup_ctx``: started inside the running loop, stopped on shutdown."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        async with _running_scheduler(config, store, backhaul):
            yield

    return ctx


@contextlib.asynccontextmanager
async def _running_scheduler(
    config: GatewayConfig, store: Store, backhaul: Backhaul
) -> AsyncIterator[None]:
    scheduler = new_scheduler()

    async def retention() -> None:
        now = datetime.now(UTC)
        cutoff = now - timedelta(days=config.store.history_retention_days)
        gone = await store.async_write(lambda c: expire_history(c, cutoff))
        await store.async_write(lambda c: expire_sessions(c, now))
        if gone:
            _LOGGER.info("retention: %d finished activities older than %s removed", gone, cutoff)
        # After the history: an expired activity's versions go with it.
        forms = await store.async_write(PruneFormVersions().run)
        if forms:
            _LOGGER.info("retention: %d form versions no draft or activity names removed", forms)

    if isinstance(backhaul, Uplink):
        scheduler.add_job(
            stoppable(backhaul.async_send_heartbeat),
            "interval",
            seconds=config.mqtt.heartbeat_s,
            id="heartbeat",
            name="heartbeat to central",
        )
    scheduler.add_job(
        stoppable(retention),
        "interval",
        hours=1,
        id="retention",
        name="history retention",
        next_run_time=datetime.now(UTC) + timedelta(seconds=30),
    )
    scheduler.start()
    try:
        yield
    finally:
        scheduler.shutdown(wait=False)

"""History retention: finished activities go, unsent field data (and files) never do."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy import Connection, select, update

from gateway.store import Store
from gateway.store.attachments import next_pending
from gateway.store.maintenance import expire_history
from gateway.store.schema import (
    APPLIED,
    CHECKED_IN,
    QUEUED,
    activities,
    attachments,
    envelope_attachments,
    envelopes,
)
from tests.gateway.conftest import envelope_body, sha256_hex
from tests.support.store_tasks import SqlRead, SqlWrite

LONG_AGO = datetime(2026, 1, 1, tzinfo=UTC)
NOW = datetime.now(UTC)


def _finish(activity_id: str, state: str = APPLIED) -> Any:
    """Central applied everything of the activity and checked it in, long ago."""

    def work(conn: Connection) -> None:
        conn.execute(
            update(envelopes).where(envelopes.c.activity_id == activity_id).values(state=state)
        )
        conn.execute(
            update(activities)
            .where(activities.c.id == activity_id)
            .values(state=CHECKED_IN, updated_at=LONG_AGO)
        )

    return work


def _ids(conn: Connection) -> set[str]:
    return set(conn.execute(select(activities.c.id)).scalars())


async def test_retention_keeps_what_central_does_not_have_yet(
    client: TestClient[Any, Any], alice: dict[str, str], seeded_store: Store
) -> None:
    store = seeded_store
    photo = b"\xff\xd8 a photo of the meter"
    sha = sha256_hex(photo)
    resp = await client.put(f"/api/v1/attachments/{sha}", data=photo, headers=alice)
    assert resp.status == 201, await resp.text()
    for aid, blobs in (("act-1", []), ("act-2", [sha])):
        body = envelope_body(aid, 1, "completed", attachments=blobs)
        resp = await client.post("/api/v1/envelopes", json=body, headers=alice)
        assert resp.status == 201, await resp.text()

    # The completed activity's file is what the uploader sends next.
    pending = await store.async_read(SqlRead(next_pending))
    assert pending is not None and pending.sha256 == sha and pending.uploaded == 0

    # Still queued: nothing goes, however old.
    await store.async_write(SqlWrite(_finish("act-1", state=QUEUED)))
    assert await store.async_write(SqlWrite(lambda c: expire_history(c, NOW))) == 0

    # Applied and checked in: act-1 goes; act-2 waits for its photo to reach central.
    await store.async_write(SqlWrite(_finish("act-1")))
    await store.async_write(SqlWrite(_finish("act-2")))
    assert await store.async_write(SqlWrite(lambda c: expire_history(c, NOW))) == 1
    assert "act-2" in await store.async_read(SqlRead(_ids))
    # ... but not when the cut-off is before the activity finished.
    await store.async_write(
        SqlWrite(
            lambda c: c.execute(
                update(attachments).where(attachments.c.sha256 == sha).values(uploaded_at=NOW)
            )
        )
    )
    assert await store.async_write(SqlWrite(lambda c: expire_history(c, LONG_AGO))) == 0
    assert (
        await store.async_write(SqlWrite(lambda c: expire_history(c, NOW + timedelta(days=1)))) == 1
    )
    assert not {"act-1", "act-2"} & await store.async_read(SqlRead(_ids))
    # The links went with the envelopes; the blob's row and file stay.
    links = await store.async_read(SqlRead(lambda c: c.execute(select(envelope_attachments)).all()))
    assert links == []
    row = await store.async_read(
        SqlRead(lambda c: c.execute(select(attachments).where(attachments.c.sha256 == sha)).one())
    )
    assert row.complete and row.uploaded_at is not None
    assert await store.async_read(SqlRead(next_pending)) is None

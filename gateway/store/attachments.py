"""The ``attachments`` table: blobs arriving from devices, and going up to central.

From the devices (``PUT /api/v1/attachments/{sha256}``): how much of a blob
has arrived (``FindAttachment``), each durable part (``RecordUpload``), the
verified whole (``CompleteUpload``). To central (``gateway/blob_upload.py``):
which blob goes next (``NextBlobToUpload``), what central's receipt says
(``RecordBlobReceipt``), a blob this gateway cannot send (``RecordBlobError``);
and the counts ``GET /api/v1/status`` shows (``upload_counts``). The files
themselves are ``gateway/store/blobs.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, func, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from gateway.store.schema import STORED, attachments, envelope_attachments, envelopes
from gateway.store.tasks import ReadTask, WriteTask
from outpost.times import utcnow
from outpost.wire.schemas import BlobReceipt

# --- from the devices ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FindAttachment(ReadTask[Any]):
    """The attachment's row (size, received, complete, uploaded_by …), or None."""

    sha256: str

    def run(self, conn: Connection) -> Any:
        return attachment_row(conn, self.sha256)


@dataclass(frozen=True, slots=True)
class RecordUpload(WriteTask[None]):
    """``received`` bytes of ``sha256`` are on disk, uploaded by ``user``."""

    sha256: str
    size: int
    received: int
    user: str
    now: datetime

    def run(self, conn: Connection) -> None:
        stmt = sqlite_insert(attachments).values(
            sha256=self.sha256,
            size=self.size,
            received=self.received,
            complete=False,
            uploaded_by=self.user,
            created_at=self.now,
        )
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[attachments.c.sha256],
                # Whoever writes it now is its uploader (an idle one was taken over).
                set_={"size": self.size, "received": self.received, "uploaded_by": self.user},
                where=attachments.c.complete.is_(False),
            )
        )


@dataclass(frozen=True, slots=True)
class CompleteUpload(WriteTask[None]):
    """The blob is whole and verified, at ``path`` (relative to the data dir)."""

    sha256: str
    path: str

    def run(self, conn: Connection) -> None:
        conn.execute(
            update(attachments)
            .where(attachments.c.sha256 == self.sha256)
            .values(
                received=attachments.c.size, complete=True, path=self.path, completed_at=utcnow()
            )
        )


def attachment_row(conn: Connection, sha256: str) -> Any:
    return conn.execute(select(attachments).where(attachments.c.sha256 == sha256)).first()


# --- to central ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pending:
    sha256: str
    size: int
    uploaded: int
    path: str


_referenced = (
    select(envelope_attachments.c.sha256)
    .join(envelopes, envelopes.c.envelope_id == envelope_attachments.c.envelope_id)
    .where(envelope_attachments.c.sha256 == attachments.c.sha256, envelopes.c.state != STORED)
    .exists()
)
_TO_UPLOAD = and_(
    attachments.c.complete.is_(True),
    attachments.c.uploaded_at.is_(None),
    attachments.c.upload_error.is_(None),
    _referenced,
)


def next_pending(conn: Connection) -> Pending | None:
    row = conn.execute(
        select(attachments.c.sha256, attachments.c.size, attachments.c.uploaded, attachments.c.path)
        .where(_TO_UPLOAD)
        .order_by(attachments.c.completed_at)
        .limit(1)
    ).first()
    return None if row is None else Pending(row.sha256, row.size, row.uploaded, row.path)


def upload_counts(conn: Connection, only_user: str | None = None) -> dict[str, Any]:
    """For ``/api/v1/status``: what still has to go up, and what central refused.

    With ``only_user`` the refused files listed are only those they uploaded.
    """
    waiting, waiting_bytes = conn.execute(
        select(
            func.count(), func.coalesce(func.sum(attachments.c.size - attachments.c.uploaded), 0)
        )
        .select_from(attachments)
        .where(_TO_UPLOAD)
    ).one()
    refused = conn.execute(
        select(attachments.c.sha256, attachments.c.upload_error)
        .where(
            attachments.c.upload_error.is_not(None),
            *([attachments.c.uploaded_by == only_user] if only_user is not None else []),
        )
        .order_by(attachments.c.completed_at.desc())
        .limit(20)
    ).all()
    return {
        "to_upload": int(waiting),
        "to_upload_bytes": int(waiting_bytes),
        "refused": [{"sha256": r.sha256, "reason": r.upload_error} for r in refused],
    }


def record_receipt(conn: Connection, receipt: BlobReceipt, at: datetime) -> None:
    values: dict[str, Any] = {"uploaded": receipt.received}
    if receipt.complete:
        values["uploaded_at"] = at
    elif receipt.problem:
        values["upload_error"] = receipt.problem
    conn.execute(update(attachments).where(attachments.c.sha256 == receipt.sha256).values(values))


def record_local_error(conn: Connection, sha256: str, problem: str) -> None:
    conn.execute(
        update(attachments).where(attachments.c.sha256 == sha256).values(upload_error=problem)
    )


@dataclass(frozen=True, slots=True)
class NextBlobToUpload(ReadTask["Pending | None"]):
    """The oldest complete blob central still lacks, of an envelope that left ``stored``."""

    def run(self, conn: Connection) -> Pending | None:
        return next_pending(conn)


@dataclass(frozen=True, slots=True)
class RecordBlobReceipt(WriteTask[None]):
    """What central's receipt says it holds (on disk), or that it refuses the blob."""

    receipt: BlobReceipt
    at: datetime

    def run(self, conn: Connection) -> None:
        record_receipt(conn, self.receipt, self.at)


@dataclass(frozen=True, slots=True)
class RecordBlobError(WriteTask[None]):
    """This gateway cannot send the blob (its file is gone or unreadable)."""

    sha256: str
    problem: str

    def run(self, conn: Connection) -> None:
        record_local_error(conn, self.sha256, self.problem)

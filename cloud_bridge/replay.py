"""Replaying envelope batches into the central database, exactly once.

One path: a batch, or a commit group of batches from many gateways
(:mod:`cloud_bridge.groupcommit`), is decided in memory under its
activities' locks and written in a few statements, in one transaction (the
rules are in :mod:`cloud_bridge.bulk`). When a group's transaction fails,
each of its batches is applied alone, as below, so one gateway's poison
never costs another gateway's batch. Each envelope's ledger row and its record rows
commit together or not at all, and results leave only after the commit.

When the transaction fails:

* **transiently** (a serialization failure or deadlock, a lost connection, a
  concurrent worker that inserted the same envelope id first): nothing
  committed, so the batch is tried again, a few times, then the error goes
  up and the gateway sends the batch again later;
* because the database **refused a value** (an integer out of its range, NUL
  in text, a time it cannot hold, text too long for its column: nothing a
  retry can fix): the batch is split in halves until each refused envelope
  stands alone (a half that commits is done), and the one the database
  refuses is rejected ``unstorable`` with what was refused, through a placeholder that holds only what can be
  stored (:mod:`cloud_bridge.intake`). One poison envelope costs one
  rejection; its batch-mates apply and the gateway's uplink keeps draining;
* for any other reason (a bug, a missing table): the error goes up with
  nothing committed; rejecting envelopes for it could lose work for good.

Everything here blocks; the bridge runs it in its DB threads.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError, StatementError

from cloud_bridge import rejections
from cloud_bridge.bulk import BulkBatch, Part, Results
from cloud_bridge.db import Database
from cloud_bridge.intake import placeholder
from cloud_bridge.ledger import clip
from cloud_bridge.models import utcnow
from cloud_bridge.rejections import Refusal
from outpost.wire.schemas import EnvelopeBatch, WireEnvelope

logger = logging.getLogger(__name__)

__all__ = ["Part", "Replayer", "Results", "make_part", "refused_value"]

T = TypeVar("T")

_RETRIES = 5


def refused_value(exc: BaseException) -> str | None:
    """What the database (or the driver, binding a value) refused; None if not a data error."""
    orig: BaseException | None = exc
    if isinstance(exc, DataError | IntegrityError):
        orig = exc.orig
    elif isinstance(exc, StatementError) and not isinstance(exc, DBAPIError):
        orig = exc.orig  # raised while binding a parameter, before the statement ran
        if not isinstance(orig, OverflowError | ValueError | TypeError | RecursionError):
            return None
    elif not isinstance(exc, OverflowError | RecursionError):
        return None
    if orig is None:
        return type(exc).__name__
    # Never str() the SQLAlchemy wrapper: it renders every parameter (and can recurse).
    first = (str(orig).strip().splitlines() or [""])[0]
    return clip(first or type(orig).__name__, 300)


class Replayer:
    """Applies envelope batches; one instance per bridge, thread-safe."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._held = threading.local()

    @contextlib.contextmanager
    def holding_connection(self) -> Iterator[None]:
        """While inside, this thread reuses one connection for its transactions.

        A replay thread commits group after group: checking a connection out
        of the pool for each cost a round trip (the pool's ping) and a
        checkout's Python work per group. After any failure the connection is
        closed and the next transaction takes a fresh (pinged) one.
        """
        self._held.on = True
        try:
            yield
        finally:
            conn: Connection | None = getattr(self._held, "conn", None)
            self._held.conn = None
            self._held.on = False
            if conn is not None:
                conn.close()

    def apply_batch(
        self,
        gateway_id: str,
        batch: EnvelopeBatch,
        refused: Mapping[str, Refusal] | None = None,
        arrived: datetime | None = None,
    ) -> Results:
        """Apply a batch that arrived from ``gateway_id``; results to send after it returns.

        ``refused``: placeholders in the batch and their rejection, by envelope
        id (:func:`cloud_bridge.intake.read_batch`). Duplicates in the result
        list carry their first outcome; held envelopes have no result yet
        (they come out when their gap fills).
        """
        (part,) = self.apply_group([make_part(gateway_id, batch, refused, arrived)])
        return part.results

    def apply_group(self, parts: list[Part]) -> list[Part]:
        """Apply several batches in one transaction; each part's ``results`` filled.

        When the shared transaction fails, each batch is applied on its own
        (:meth:`_apply_alone`), so one batch's poison or error costs only that
        batch: an exception of one part is stored in its ``error``.
        """
        if len(parts) > 1:
            try:
                return self._retrying(functools.partial(self._commit, parts))
            except Exception as exc:  # noqa: BLE001 - each batch alone says what it was
                logger.info(
                    "a commit group of %d batches failed (%s); applying each alone",
                    len(parts),
                    exc.__class__.__name__,
                )
        for part in parts:
            try:
                part.results = self._apply_alone(part)
            except Exception as exc:
                if len(parts) == 1:
                    raise
                part.error = exc
        return parts

    def apply_envelopes(self, gateway_id: str, envelopes: list[WireEnvelope]) -> Results:
        """Convenience for tests and tools: apply envelopes as one batch."""
        batch = EnvelopeBatch.model_construct(
            gateway_id=gateway_id, batch_id=uuid.uuid4(), sent_at=utcnow(), envelopes=envelopes
        )
        return self.apply_batch(gateway_id, batch)

    def _commit(self, parts: list[Part]) -> list[Part]:
        if not getattr(self._held, "on", False):
            with self.db.engine.begin() as conn:
                return BulkBatch(conn, parts, utcnow()).run()
        held: Connection | None = getattr(self._held, "conn", None)
        if held is None or held.closed or held.invalidated:
            held = self._held.conn = self.db.engine.connect()
        try:
            with held.begin():
                return BulkBatch(held, parts, utcnow()).run()
        except BaseException:
            self._held.conn = None
            held.close()
            raise

    def _one(self, part: Part) -> Results:
        (done,) = self._commit([part])
        return done.results

    def _retrying(self, work: Callable[[], T]) -> T:
        for attempt in range(1, _RETRIES + 1):
            try:
                return work()
            except (IntegrityError, OperationalError) as exc:
                # A concurrent worker inserted the same envelope id, or the database
                # chose us as a deadlock/serialization victim: nothing committed, redo.
                if attempt == _RETRIES:
                    raise
                logger.info("replay retry %d after %s", attempt, exc.__class__.__name__)
                time.sleep(0.01 * attempt)
        raise AssertionError("unreachable")

    def _apply_alone(self, part: Part) -> Results:
        try:
            return self._retrying(functools.partial(self._one, part))
        except Exception as exc:
            if refused_value(exc) is None:
                raise
            logger.warning(
                "batch %s from %s: the database refused a value (%s); "
                "isolating it among its %d envelopes",
                part.batch_id,
                part.gateway_id,
                refused_value(exc),
                len(part.envelopes),
            )
            return self._isolate(part, exc)

    def _isolate(self, part: Part, failure: Exception) -> Results:
        """Split a refused batch in halves until each refused envelope stands alone.

        A half that commits is done in one transaction, so one poison envelope
        in a batch of n costs about 2 log2(n) transactions, not n
        (bench/central_poison.py). ``failure``: what refused ``part``.
        """
        if len(part.envelopes) > 1:
            mid = len(part.envelopes) // 2
            results: Results = []
            for half in (part.envelopes[:mid], part.envelopes[mid:]):
                ids = {str(e.envelope_id) for e in half}
                own = {k: v for k, v in part.refused.items() if k in ids}
                sub = Part(part.gateway_id, part.batch_id, half, part.arrived, own)
                try:
                    results += self._retrying(functools.partial(self._one, sub))
                except Exception as exc:
                    if refused_value(exc) is None:
                        raise
                    results += self._isolate(sub, exc)
            return results
        (env,) = part.envelopes
        key = str(env.envelope_id)
        problem = refused_value(failure)
        stand_in = placeholder(env.model_dump(), part.arrived)
        if problem is None or stand_in is None:
            raise failure
        refusal = (
            rejections.UNSTORABLE,
            f"Central's database cannot store a value in this envelope ({problem}); "
            "central did not apply it. Correct the form and submit it again.",
        )
        logger.warning(
            "envelope %s of activity %s from %s is rejected %s: %s",
            key,
            env.activity_id,
            part.gateway_id,
            rejections.UNSTORABLE,
            problem,
        )
        return self._retrying(functools.partial(self._one, part.alone(stand_in, {key: refusal})))


def make_part(
    gateway_id: str,
    batch: EnvelopeBatch,
    refused: Mapping[str, Refusal] | None = None,
    arrived: datetime | None = None,
) -> Part:
    """A batch as a commit group takes it (its envelopes in lock order)."""
    # A stable lock order (activity, seq) keeps concurrent workers free of deadlocks.
    envelopes = sorted(batch.envelopes, key=lambda e: (e.activity_id, e.seq))
    return Part(
        gateway_id, str(batch.batch_id), envelopes, arrived or utcnow(), dict(refused or {})
    )

"""Simulated gateways for fleet-scale runs (bench/fleet_scale.py, tests/cloud_bridge/test_fleet_soak.py).

Each is a real MQTT 5 session with its own client id (``outpost.mqtt.MqttClient``,
the client the gateway runs: persistent session, a last will) speaking the wire
contract from ``outpost.wire``: a retained ``state`` online, heartbeats (QoS 0),
envelope batches (QoS 1) for the activity checked out to it, answers awaited on
``down/results``. A ``BatchDeferred`` is honoured (held ``retry_after_s`` with
jitter, then sent again); a batch unanswered for the ack timeout is sent again.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cloud_bridge import fleet, rules
from cloud_bridge.db import Database
from cloud_bridge.migration import migrate
from cloud_bridge.models import Gateway
from cloud_bridge.people import MAX_SITES
from outpost.forms import ActivityTypeDef
from outpost.mqtt import MqttClient, Received, Will
from outpost.mqtt_config import MqttSection
from outpost.wire import topics
from outpost.wire.codec import decode, encode
from outpost.wire.schemas import (
    BatchDeferred,
    EnvelopeBatch,
    EnvelopeResults,
    GatewayState,
    Heartbeat,
    WireEnvelope,
)

HEARTBEAT_S = 30.0
BATCH_S = 10.0
PER_BATCH = 2
MAX_BATCH = 200  # gateway [mqtt] batch_max_envelopes
ACK_TIMEOUT_MAX_S = 600.0  # gateway [mqtt] ack_timeout_max_s
AUTHOR = "ana"
VIEWER_PASSWORD = "bench-viewer-password"
FORM = {
    "fields": [
        {"name": "site_ok", "type": "boolean", "required": True},
        {"name": "notes", "type": "text"},
        {"name": "weather", "type": "choice", "options": ["dry", "wet"]},
        {"name": "visited", "type": "date"},
    ],
    "tables": [
        {
            "name": "readings",
            "fields": [
                {"name": "meter", "type": "text", "required": True},
                {"name": "value", "type": "number"},
            ],
        }
    ],
}


def now() -> datetime:
    return datetime.now(UTC)


def authors(sims: list[str]) -> dict[str, str]:
    """Each simulated gateway's crew member: a user holds at most MAX_SITES sites, so
    every MAX_SITES gateways have their own (``ana``, then ``ana-1``, ...)."""
    return {
        g: AUTHOR if i < MAX_SITES else f"{AUTHOR}-{i // MAX_SITES}" for i, g in enumerate(sims)
    }


def envelope(aid: str, seq: int, author: str = AUTHOR) -> WireEnvelope:
    t = now()
    return WireEnvelope(
        envelope_id=uuid.uuid4(),
        activity_id=aid,
        seq=seq,
        base_version=1,
        status="draft",
        created_at=t,
        received_at=t,
        author=author,
        form_version=1,
        record={
            "site_ok": True,
            "notes": "gate hinge rusted, fence intact",
            "weather": "dry",
            "visited": "2026-11-23",
        },
        tables={"readings": [{"meter": f"M-{r}", "value": r * 1.5} for r in range(3)]},
        attachments=[],
    )


PROBE_SITE = "probe-site"  # the gateway the bench dispatches to while the fleet runs


def seed(url: str, sims: list[str], known: int = 0, probes: int = 0) -> None:
    """The crew (:func:`authors`), the type, one activity checked out per simulated
    gateway, ``known`` gateways, and ``probes`` approved activities to dispatch to
    :data:`PROBE_SITE` (``probe-<i>``)."""
    db = Database.from_url(url)
    try:
        migrate(db.engine)
        with db.session() as s:
            crew = authors(sims)
            for name in dict.fromkeys(crew.values()):
                sites = [g for g, a in crew.items() if a == name]
                rules.put_user(s, name, "pw-ana-bench-0", True, sites=sites)
            rules.put_user(s, "vera", VIEWER_PASSWORD, False, role="viewer")
            rules.put_user(s, "dora", "pw-dora-bench-0", True, sites=[PROBE_SITE])
            rules.put_activity_type(
                s,
                ActivityTypeDef.model_validate(
                    {"name": "inspection", "offline": True, "form": FORM}
                ),
            )
        for chunk in range(0, len(sims), 200):
            with db.session() as s:
                for gid in sims[chunk : chunk + 200]:
                    a = rules.create_activity(s, "bench", "inspection", crew[gid], f"act-{gid}")
                    rules.approve(s, a.id, crew[gid])
            with db.session() as s:
                for gid in sims[chunk : chunk + 200]:
                    rules.check_out(s, f"act-{gid}", gid)
        with db.session() as s:
            for i in range(probes):
                a = rules.create_activity(s, "probe", "inspection", "dora", f"probe-{i}")
                rules.approve(s, a.id, "dora")
        rng = random.Random(18)
        t = now()
        taken = set(sims)
        others = [f"known-{i:06d}" for i in range(known) if len(taken) + i < known]
        for chunk in range(0, len(others), 2000):
            with db.session() as s:
                for gid in others[chunk : chunk + 2000]:
                    heard = t - timedelta(seconds=rng.choice((5, 20, 400, 4000)))
                    version = rng.choice(("0.2.0", "0.3.0"))
                    hb: dict[str, Any] = {
                        "counts": {"queued": rng.randint(0, 30), "applied": 100},
                        "oldest_pending_s": rng.choice((None, 30.0, 5000.0)),
                        "disk_free_bytes": rng.choice((20 * 1024**3, 500 * 1024**2)),
                        "version": version,
                    }
                    g = Gateway(id=gid, first_seen=t, last_seen=heard, state="online")
                    g.last_heartbeat, g.heartbeat_at, g.version = hb, heard, version
                    fleet.set_figures(g, hb, heard)
                    s.add(g)
    finally:
        db.dispose()


@dataclass
class Pending:
    batch: EnvelopeBatch
    payload: bytes
    first_sent: float
    sent: float
    unanswered: set[str] = field(default_factory=set)  # envelope ids without a result yet
    sends: int = 1
    deferred: int = 0
    after_deferral: bool = False  # due again because central said busy, not for silence


@dataclass
class Stats:
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (answered at, seconds)
    applied: list[float] = field(default_factory=list)  # monotonic time of each applied result
    resends: int = 0
    deferred: int = 0
    max_sends: int = 0
    sent_envelopes: set[str] = field(default_factory=set)
    answered_envelopes: set[str] = field(default_factory=set)
    rejected: list[str] = field(default_factory=list)
    batches: int = 0
    heartbeats: int = 0
    # Batches finished by results that came in another batch's answer: central held an
    # envelope for a gap in seq and applied it when the missing one arrived.
    answered_elsewhere: int = 0


class SimGateway:
    def __init__(
        self, gid: str, port: int, stats: Stats, ack_timeout_s: float, author: str = AUTHOR
    ) -> None:
        self.gid = gid
        self.author = author
        self.stats = stats
        self.aid = f"act-{gid}"
        self.seq = 0
        self.ack_timeout_s = ack_timeout_s
        self.pending: dict[str, Pending] = {}
        self.by_envelope: dict[str, str] = {}  # envelope id -> its pending batch's id
        self.hold_until = 0.0
        self.misses = 0  # ack timeouts in a row
        self.owed = 0  # envelopes made while held back, sent in the next batch
        self.started = time.monotonic()
        self.answered = asyncio.Event()  # nothing pending any more
        self.progress = asyncio.Event()  # a pending batch was answered
        self.client = MqttClient(
            MqttSection(
                host="127.0.0.1", port=port, keepalive=60, backoff_initial=0.5, backoff_max=5
            ),
            client_id=f"outpost-gw-{gid}",
            on_message=self._on_message,
            subscriptions=[(s, 1) for s in topics.gateway_subscriptions(gid)],
            clean_start=False,
            session_expiry_s=3600,
            will=Will(
                topics.topic(gid, topics.STATE),
                encode(GatewayState(gateway_id=gid, state="offline", at=now())),
            ),
        )

    async def start(self) -> None:
        await self.client.async_start()
        await self.client.async_wait_connected(120)
        state = GatewayState(gateway_id=self.gid, state="online", at=now(), version="0.3.0")
        await self.client.async_publish(
            topics.topic(self.gid, topics.STATE), encode(state), qos=1, retain=True
        )

    async def stop(self) -> None:
        await self.client.async_stop()

    async def _on_message(self, msg: Received) -> None:
        parsed = topics.parse(msg.topic)
        if parsed is None or parsed[1] != topics.DOWN_RESULTS:
            return
        doc = decode(msg.payload)
        t = time.monotonic()
        if isinstance(doc, BatchDeferred):
            p = self.pending.get(str(doc.batch_id))
            if p is not None:
                p.deferred += 1
                p.after_deferral = True
                self.misses = 0  # central answered: busy is not silence
                self.stats.deferred += 1
                self.hold_until = t + doc.retry_after_s * random.uniform(0.5, 1.5)
                p.sent = self.hold_until - self.ack_timeout_s  # resend when the hold ends
            return
        if not isinstance(doc, EnvelopeResults):
            return
        # As gateway/uplink.py: a batch is done when each of its envelopes has a result,
        # whichever answer carried it (a held envelope's comes with the one that freed it).
        for r in doc.results:
            eid = str(r.envelope_id)
            owner = self.by_envelope.pop(eid, None)
            p = self.pending.get(owner) if owner else None
            if p is not None:
                p.unanswered.discard(eid)
                if not p.unanswered:
                    del self.pending[owner]  # type: ignore[arg-type]
                    self.progress.set()
                    self.stats.latencies.append((t, t - p.first_sent))
                    self.stats.max_sends = max(self.stats.max_sends, p.sends)
                    if owner != str(doc.batch_id):
                        self.stats.answered_elsewhere += 1
            if eid in self.stats.answered_envelopes:
                continue
            self.stats.answered_envelopes.add(eid)
            if r.outcome == "applied":
                self.stats.applied.append(t)
            else:
                self.stats.rejected.append(f"{r.code}: {r.reason}")
        self.misses = 0
        if not self.pending:
            self.answered.set()

    def new_batch(self, n: int) -> Pending:
        envs = []
        for _ in range(n):
            self.seq += 1
            envs.append(envelope(self.aid, self.seq, self.author))
        batch = EnvelopeBatch(
            gateway_id=self.gid, batch_id=uuid.uuid4(), sent_at=now(), envelopes=envs
        )
        for e in envs:
            self.stats.sent_envelopes.add(str(e.envelope_id))
        t = time.monotonic()
        ids = {str(e.envelope_id) for e in envs}
        p = Pending(batch, encode(batch), t, t, unanswered=set(ids))
        self.pending[str(batch.batch_id)] = p
        for eid in ids:
            self.by_envelope[eid] = str(batch.batch_id)
        self.answered.clear()
        return p

    async def send(self, p: Pending) -> None:
        self.stats.batches += 1
        await self.client.async_publish(
            topics.topic(self.gid, topics.UP_ENVELOPES), p.payload, qos=1, wait=False
        )

    async def heartbeat(self) -> None:
        hb = Heartbeat(
            gateway_id=self.gid,
            sent_at=now(),
            version="0.3.0",
            uptime_s=time.monotonic() - self.started,
            counts={"queued": sum(len(p.batch.envelopes) for p in self.pending.values())},
            rejected=0,
            disk_free_bytes=20 * 1024**3,
            db_bytes=10**6,
            devices=2,
        )
        self.stats.heartbeats += 1
        await self.client.async_publish(
            topics.topic(self.gid, topics.UP_HEARTBEAT), encode(hb), qos=0, wait=False
        )

    async def resend_due(self) -> None:
        """Send again what went unanswered for the ack timeout, backing off as the gateway does.

        As ``gateway/uplink.py``: unanswered round after round, the gateway
        holds a growing, random while (up to ``ACK_TIMEOUT_MAX_S``) first.
        """
        t = time.monotonic()
        if t < self.hold_until:
            return
        late = [p for p in self.pending.values() if t - p.sent >= self.ack_timeout_s]
        if not late:
            return
        if any(not p.after_deferral for p in late):
            self.misses += 1
        if self.misses > 1:
            ceiling = min(ACK_TIMEOUT_MAX_S, self.ack_timeout_s * 2 ** (self.misses - 2))
            self.hold_until = t + random.uniform(0, ceiling)
            for p in late:
                p.sent = self.hold_until - self.ack_timeout_s  # due when the hold ends
            if self.hold_until > t:
                return
        for p in late:
            p.sent, p.sends = t, p.sends + 1
            if not p.after_deferral:
                self.stats.resends += 1
            p.after_deferral = False
            await self.send(p)

    async def run_steady(
        self, stop_at: float, heartbeat_s: float = HEARTBEAT_S, batch_s: float = BATCH_S
    ) -> None:
        """A heartbeat every 30 s, a batch of 2 every 10 s (random phase), until ``stop_at``."""
        t0 = time.monotonic()
        next_hb = t0 + random.uniform(0, heartbeat_s)
        next_batch = t0 + random.uniform(0, batch_s)
        while True:
            t = time.monotonic()
            if t >= stop_at:
                return
            if t >= next_hb:
                next_hb += heartbeat_s
                await self.heartbeat()
            if t >= next_batch:
                next_batch += batch_s
                self.owed += PER_BATCH
            if self.owed and t >= self.hold_until:
                n = min(self.owed, MAX_BATCH)  # what queued while held goes in one batch
                self.owed -= n
                await self.send(self.new_batch(n))
            await self.resend_due()
            await asyncio.sleep(min(next_hb, next_batch, t + 1.0) - t)

    async def run_saturating(
        self, stop_at: float, heartbeat_s: float = HEARTBEAT_S, per_batch: int = PER_BATCH
    ) -> None:
        """A batch of ``per_batch`` always in flight (the next once the last is answered) and
        a heartbeat every 30 s, until ``stop_at``: what the fleet's small batches cost at
        the most central can apply."""
        next_hb = time.monotonic() + random.uniform(0, heartbeat_s)
        while (t := time.monotonic()) < stop_at:
            if t >= next_hb:
                next_hb += heartbeat_s
                await self.heartbeat()
            if not self.pending and t >= self.hold_until:
                await self.send(self.new_batch(per_batch))
            await self.resend_due()
            with suppress(TimeoutError):
                await asyncio.wait_for(self.answered.wait(), min(0.5, max(0.01, stop_at - t)))

    async def run_backlog(self, backlog: int, per_batch: int, window: int = 1) -> None:
        """Send ``backlog`` envelopes, ``window`` batches in flight, as a gateway drains after
        an outage (its ``[mqtt] inflight_batches``, 8 by default)."""
        left = backlog
        await self.heartbeat()
        while left or self.pending:
            self.progress.clear()  # before sending: an answer while it sends wakes the wait
            t = time.monotonic()
            while len(self.pending) < window and left and t >= self.hold_until:
                n = min(per_batch, left)
                left -= n
                await self.send(self.new_batch(n))
            await self.resend_due()
            with suppress(TimeoutError):
                await asyncio.wait_for(self.progress.wait(), 0.5)

"""The uplink against a real Mosquitto, with a scripted central on the other side.

These pin the gateway's side of the contract (states, resends, downlink,
check-out); tests/test_chain.py runs the same flows against the real bridge.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gateway.config import GatewayConfig
from gateway.store.activities import upsert_activity
from gateway.store.schema import activities, envelopes
from gateway.store.store import Store, open_store
from gateway.store.submissions import body_hash, store_envelope
from gateway.uplink import BackhaulDownError, Uplink
from outpost.forms import FormDefinition
from outpost.mqtt import MqttClient, Received
from outpost.mqtt_config import MqttSection
from outpost.wire import topics
from outpost.wire.codec import decode, encode
from outpost.wire.schemas import (
    ActivityWire,
    BatchDeferred,
    CheckoutAnswer,
    CheckoutRequest,
    Dispatch,
    EnvelopeBatch,
    EnvelopeBody,
    EnvelopeResult,
    EnvelopeResults,
)
from tests.support.broker import Broker
from tests.support.store_tasks import SqlRead, SqlWrite

GW = "site-t"
FORM = FormDefinition.model_validate(
    {"fields": [{"name": "site_ok", "type": "boolean", "required": True}]}
)


def activity(act_id: str, version: int = 1) -> ActivityWire:
    return ActivityWire(
        id=act_id,
        title=f"Inspect {act_id}",
        type="inspection",
        form=FORM,
        form_version=1,
        responsible="ana",
        version=version,
    )


def now() -> datetime:
    return datetime.now(UTC)


async def wait_for(cond: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = cond()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


class FakeCentral:
    """Answers batches (apply all, or reject by rule) and check-outs."""

    def __init__(self, broker: Broker) -> None:
        self.batches: list[EnvelopeBatch] = []
        self.ignore_batches = 0
        self.defer_batches = 0  # answered "busy, retry after" (BatchDeferred)
        self.batch_times: list[float] = []
        self.answer_delay_s = 0.0
        self.reject: set[str] = set()
        self.client = MqttClient(
            MqttSection(host=broker.host, port=broker.port, backoff_initial=0.05, backoff_max=0.3),
            client_id="fake-central",
            on_message=self.on_message,
            subscriptions=[(f"{topics.ROOT}/+/up/#", 1)],
            clean_start=False,
            session_expiry_s=600,
        )

    async def on_message(self, msg: Received) -> None:
        message = decode(msg.payload)
        gw = message.gateway_id
        if isinstance(message, EnvelopeBatch):
            self.batches.append(message)
            self.batch_times.append(asyncio.get_running_loop().time())
            # The ids are in the compressed body only; a central that never said
            # it reads codec 2 (this one) gets version 1.
            assert topics.ENVELOPE_IDS_PROPERTY not in msg.user_properties
            assert msg.payload[0] == 1
            if self.ignore_batches:
                self.ignore_batches -= 1
                return
            await asyncio.sleep(self.answer_delay_s)
            if self.defer_batches:
                self.defer_batches -= 1
                busy = BatchDeferred(gateway_id=gw, batch_id=message.batch_id, retry_after_s=1.0)
                await self.client.async_publish(topics.topic(gw, topics.DOWN_RESULTS), encode(busy))
                return
            results = [
                EnvelopeResult(
                    envelope_id=e.envelope_id,
                    activity_id=e.activity_id,
                    outcome="rejected" if str(e.envelope_id) in self.reject else "applied",
                    code="validation" if str(e.envelope_id) in self.reject else None,
                    reason="meter A1 reading is impossible"
                    if str(e.envelope_id) in self.reject
                    else None,
                    applied_at=now(),
                    checked_in=e.status == "completed" and str(e.envelope_id) not in self.reject,
                )
                for e in message.envelopes
            ]
            out = EnvelopeResults(gateway_id=gw, batch_id=message.batch_id, results=results)
            await self.client.async_publish(topics.topic(gw, topics.DOWN_RESULTS), encode(out))
        elif isinstance(message, CheckoutRequest):
            answer = CheckoutAnswer(
                gateway_id=gw,
                request_id=message.request_id,
                ok=True,
                activity=activity(message.activity_id),
            )
            assert msg.response_topic == topics.topic(gw, topics.DOWN_CHECKOUT)
            assert msg.correlation_data == message.request_id.bytes
            await self.client.async_publish(msg.response_topic, encode(answer))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await asyncio.get_running_loop().run_in_executor(None, open_store, tmp_path / "gw")
    await s.async_write(SqlWrite(lambda c: upsert_activity(c, activity("act-1"), "ana", now())))
    await s.async_write(SqlWrite(lambda c: upsert_activity(c, activity("act-2"), "ana", now())))
    yield s
    await s.async_close()


def gateway_config(broker: Broker, tmp_path: Path, **mqtt: Any) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "gateway": {"id": GW, "data_dir": str(tmp_path / "gw")},
            "mqtt": {
                "host": broker.host,
                "port": broker.port,
                "backoff_initial": 0.05,
                "backoff_max": 0.3,
                **mqtt,
            },
        }
    )


@pytest.fixture
async def central(broker: Broker) -> AsyncIterator[FakeCentral]:
    c = FakeCentral(broker)
    await c.client.async_start()
    await c.client.async_wait_connected(5)
    yield c
    await c.client.async_stop()


async def submit(store: Store, act: str, seq: int, status: str = "draft") -> str:
    body = EnvelopeBody(
        envelope_id=uuid.uuid4(),
        activity_id=act,
        seq=seq,
        base_version=1,
        status=status,  # type: ignore[arg-type]
        created_at=now(),
        record={"site_ok": True},
    )
    await store.async_write(
        SqlWrite(lambda c: store_envelope(c, body, body_hash(body), "ana", now()))
    )
    return str(body.envelope_id)


async def states(store: Store) -> dict[str, str]:
    def q(c: Any) -> dict[str, str]:
        return {
            r.envelope_id: r.state
            for r in c.execute(select(envelopes.c.envelope_id, envelopes.c.state))
        }

    return await store.async_read(SqlRead(q))


async def test_envelopes_stored_while_dark_flow_when_backhaul_returns(
    broker: Broker, central: FakeCentral, store: Store, tmp_path: Path
) -> None:
    uplink = Uplink(gateway_config(broker, tmp_path), store)
    await uplink.async_start()
    try:
        await uplink._client.async_wait_connected(5)
        broker.stop()
        await wait_for(lambda: not uplink.is_up)
        assert uplink.status()["link"] == "down"
        ids = [await submit(store, "act-1", i) for i in (1, 2)]
        # drafts alone never go up (rule 4): they stay stored
        assert set((await states(store)).values()) == {"stored"}
        ids.append(await submit(store, "act-1", 3, "completed"))
        assert set((await states(store)).values()) == {"queued"}
        broker.start()
        await wait_for(lambda: uplink.is_up)
        await wait_for(lambda: states_are(store, ids, "applied"))
        # seq order inside the batch; the completed one checked the activity in
        sent = [e.seq for b in central.batches for e in b.envelopes]
        assert sent == [1, 2, 3]
        state = await store.async_read(
            SqlRead(
                lambda c: c.execute(
                    select(activities.c.state).where(activities.c.id == "act-1")
                ).scalar()
            )
        )
        assert state == "checked_in"
        assert uplink.status()["last_sync"] is not None
        assert uplink.status()["bytes_sent"] > 0
    finally:
        await uplink.async_stop()


async def states_are(store: Store, ids: list[str], state: str) -> bool:
    current = await states(store)
    return all(current.get(i) == state for i in ids)


async def test_a_batch_without_an_answer_is_sent_again(
    broker: Broker, central: FakeCentral, store: Store, tmp_path: Path
) -> None:
    central.ignore_batches = 1
    # 1 s: the resend's answer must come back within it (see the back-off test below)
    uplink = Uplink(gateway_config(broker, tmp_path, ack_timeout_s=1.0), store)
    await uplink.async_start()
    try:
        eid = await submit(store, "act-1", 1, "completed")
        await wait_for(lambda: states_are(store, [eid], "applied"), timeout=30)
        assert len(central.batches) == 2  # the ignored one, then the resend
        assert (await states(store))[eid] == "applied"
    finally:
        await uplink.async_stop()


async def test_a_batch_is_sent_once_when_the_connect_handler_runs_late(
    broker: Broker, central: FakeCentral, store: Store, tmp_path: Path
) -> None:
    """The client says "connected" before the uplink's handler has requeued what was
    in flight; on a loaded loop a commit can wake the drain in between (CI saw it).
    A batch claimed then was requeued by the handler and sent a second time."""
    central.answer_delay_s = 0.5  # the batch is still in flight when the handler runs
    eid = await submit(store, "act-1", 1, "completed")
    uplink = Uplink(gateway_config(broker, tmp_path), store)
    handler = uplink._client._on_connect_cb
    assert handler is not None

    async def late_handler(session_present: bool) -> None:
        uplink._wake.set()  # as the commit listener does
        await asyncio.sleep(0.2)  # the loop is busy elsewhere
        await handler(session_present)

    uplink._client._on_connect_cb = late_handler
    await uplink.async_start()
    try:
        await wait_for(lambda: states_are(store, [eid], "applied"))
        await asyncio.sleep(0.3)  # a second send would have reached central by now
        assert len(central.batches) == 1
    finally:
        await uplink.async_stop()


async def test_central_busy_defers_the_batch_and_the_uplink_holds_off(
    broker: Broker, central: FakeCentral, store: Store, tmp_path: Path
) -> None:
    """A BatchDeferred: the envelopes go again after about retry_after_s, not at once."""
    central.defer_batches = 1
    uplink = Uplink(gateway_config(broker, tmp_path), store)  # ack timeout 30 s
    await uplink.async_start()
    try:
        eid = await submit(store, "act-1", 1, "completed")
        await wait_for(lambda: states_are(store, [eid], "applied"))
        assert len(central.batches) == 2
        assert central.batches[0].batch_id != central.batches[1].batch_id
        waited = central.batch_times[1] - central.batch_times[0]
        # retry_after_s 1.0 with +-50 % jitter, not the 30 s ack timeout (the upper
        # bound leaves room for a loaded machine's stalls)
        assert 0.45 <= waited < 20
    finally:
        await uplink.async_stop()


async def test_batches_unanswered_again_and_again_back_off(
    broker: Broker, central: FakeCentral, store: Store, tmp_path: Path
) -> None:
    central.ignore_batches = 3
    # The answered batch must be answered within the ack timeout, or it goes a fifth
    # time: central's answer crosses the broker twice and this (shared) event loop,
    # which a loaded machine stalls for more than 0.3 s now and then (CI did).
    uplink = Uplink(gateway_config(broker, tmp_path, ack_timeout_s=1.0), store)
    await uplink.async_start()
    try:
        eid = await submit(store, "act-1", 1, "completed")
        # 3 timeouts of about 1 s, then holds of up to 1 s and 2 s before the resends
        await wait_for(lambda: states_are(store, [eid], "applied"), timeout=60)
        assert len(central.batches) == 4
        assert uplink._misses == 0  # an answer ends the back-off
    finally:
        await uplink.async_stop()


async def test_rejection_is_kept_with_code_and_reason(
    broker: Broker, central: FakeCentral, store: Store, tmp_path: Path
) -> None:
    uplink = Uplink(gateway_config(broker, tmp_path), store)
    await uplink.async_start()
    try:
        await uplink._client.async_wait_connected(5)
        first = str(uuid.uuid4())
        central.reject.add(first)
        body = EnvelopeBody(
            envelope_id=uuid.UUID(first),
            activity_id="act-2",
            seq=1,
            base_version=1,
            status="completed",
            created_at=now(),
            record={"site_ok": True},
        )
        await store.async_write(
            SqlWrite(lambda c: store_envelope(c, body, body_hash(body), "ana", now()))
        )
        await wait_for(lambda: states_are(store, [first], "rejected"))
        row = await store.async_read(
            SqlRead(
                lambda c: c.execute(select(envelopes).where(envelopes.c.envelope_id == first)).one()
            )
        )
        assert (row.code, row.reason) == ("validation", "meter A1 reading is impossible")
        # the crew can send a corrected envelope after a rejected completion
        fixed = await submit(store, "act-2", 2, "completed")
        await wait_for(lambda: states_are(store, [fixed], "applied"))
    finally:
        await uplink.async_stop()


async def test_dispatch_sent_while_the_gateway_is_away_arrives_on_reconnect(
    broker: Broker, central: FakeCentral, store: Store, tmp_path: Path
) -> None:
    uplink = Uplink(gateway_config(broker, tmp_path), store)
    await uplink.async_start()
    await uplink._client.async_wait_connected(5)
    await uplink.async_stop()  # the site goes dark; its session stays on the broker
    dispatch = Dispatch(
        gateway_id=GW, activity=activity("act-9"), holder="ana", dispatched_at=now()
    )
    await central.client.async_publish(topics.topic(GW, topics.DOWN_DISPATCH), encode(dispatch))
    uplink = Uplink(gateway_config(broker, tmp_path), store)
    await uplink.async_start()
    try:

        async def arrived() -> bool:
            return await store.async_read(
                SqlRead(
                    lambda c: (
                        c.execute(select(activities.c.id).where(activities.c.id == "act-9")).first()
                        is not None
                    )
                )
            )

        await wait_for(arrived)
    finally:
        await uplink.async_stop()


async def test_checkout_asks_central_and_fails_fast_when_dark(
    broker: Broker, central: FakeCentral, store: Store, tmp_path: Path
) -> None:
    uplink = Uplink(gateway_config(broker, tmp_path), store)
    await uplink.async_start()
    try:
        await uplink._client.async_wait_connected(5)
        answer = await uplink.async_checkout("act-7", "ana")
        assert answer.ok
        assert answer.activity is not None and answer.activity.id == "act-7"
        broker.stop()
        await wait_for(lambda: not uplink.is_up)
        started = asyncio.get_running_loop().time()
        with pytest.raises(BackhaulDownError):
            await uplink.async_checkout("act-8", "ana")
        assert asyncio.get_running_loop().time() - started < 0.1
    finally:
        await uplink.async_stop()

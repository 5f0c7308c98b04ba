"""The bridge's MQTT side: every gateway's uplink in, results and dispatches down.

Built on :class:`outpost.mqtt.MqttClient` with a persistent session, so what
gateways sent while the bridge was down is delivered when it returns. The
client acknowledges a message only after :meth:`_async_on_message` returns,
and that returns only after the database commit and the answers' PUBACKs:
a crash before the commit means the broker delivers the message again, and
replay makes the second delivery harmless.

Messages are handled per gateway (the client's partition is the topic's
gateway id), so one gateway's slow or bad traffic never holds up another's.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time

from cloud_bridge.config import BridgeMqttSection
from cloud_bridge.handler import Outgoing, UplinkHandler, short
from outpost.mqtt import MqttClient, NotConnected, PublishFailed, Received
from outpost.wire import topics
from outpost.wire.codec import CODEC_NEWEST, CODEC_PROPERTY, encode
from outpost.wire.schemas import Dispatch, Recall, UserPush

logger = logging.getLogger(__name__)

PUBLISH_RETRIES = 3
# On every message down: the newest codec this bridge reads, so a gateway
# uses it (and an old gateway, which never looks, keeps writing version 1).
CODEC_ADVERT = [(CODEC_PROPERTY, str(CODEC_NEWEST))]


def default_client_id(worker: str = "") -> str:
    """Stable across restarts (the broker keeps our session), unique per host and worker."""
    host = socket.gethostname().split(".")[0].lower() or "central"
    return f"outpost-bridge-{host}{worker}"[:64]


def _partition(topic: str) -> str:
    parsed = topics.parse(topic)
    return parsed[0] if parsed else ""


class MqttBridge:
    def __init__(
        self, settings: BridgeMqttSection, handler: UplinkHandler, client_id: str | None = None
    ) -> None:
        self.handler = handler
        self.client_id = client_id or settings.client_id or default_client_id()
        subs = (
            topics.bridge_subscriptions(settings.shared, settings.share_group)
            if settings.uplink
            else []  # an admin worker: downlink only
        )
        self.client = MqttClient(
            settings,
            client_id=self.client_id,
            on_message=self._async_on_message,
            subscriptions=[(s, 1) for s in subs],
            # An admin worker keeps no session: one left from when it took uplink would
            # still hold that subscription at the broker.
            clean_start=not settings.uplink,
            session_expiry_s=settings.session_expiry_s if settings.uplink else 0,
            partition=_partition,
            receive_maximum=settings.receive_maximum,
        )

    async def async_start(self) -> None:
        await self.client.async_start()

    async def async_stop(self) -> None:
        await self.client.async_stop()

    @property
    def connected(self) -> bool:
        return self.client.is_connected

    async def _async_on_message(self, msg: Received) -> None:
        try:
            answers = await self.handler.async_handle(msg)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Loop boundary: an unexpected failure (e.g. the database went away) must not
            # stop the bridge. Nothing was committed for this message; the gateway sends
            # its envelopes again when no result arrives.
            logger.exception("could not handle a message on %s", short(msg.topic))
            return
        for answer in answers:
            await self.async_send(answer)

    async def async_send(self, out: Outgoing) -> bool:
        """Publish one answer (QoS 1, waiting for PUBACK); False when the broker is away."""
        payload = encode(out.message)
        parsed = topics.parse(out.topic)
        took = self.handler.metrics.publish_took(parsed[1] if parsed else "other")
        for attempt in range(1, PUBLISH_RETRIES + 1):
            try:
                started = time.monotonic()
                await self.client.async_publish(
                    out.topic,
                    payload,
                    qos=1,
                    correlation_data=out.correlation_data,
                    user_properties=CODEC_ADVERT,
                )
                took.observe(time.monotonic() - started)
                return True
            except (NotConnected, PublishFailed) as exc:
                if attempt == PUBLISH_RETRIES:
                    logger.warning("could not publish to %s: %s", short(out.topic), exc)
                    return False
                try:
                    await self.client.async_wait_connected(timeout=2.0 * attempt)
                except TimeoutError:
                    continue
        return False

    # --- downlink for the admin side ---------------------------------------------

    async def async_dispatch(self, dispatch: Dispatch) -> bool:
        return await self.async_send(
            Outgoing(topics.topic(dispatch.gateway_id, topics.DOWN_DISPATCH), dispatch)
        )

    async def async_recall(self, recall: Recall) -> bool:
        return await self.async_send(
            Outgoing(topics.topic(recall.gateway_id, topics.DOWN_DISPATCH), recall)
        )

    async def async_push_users(self, pushes: list[UserPush]) -> int:
        """Send each gateway its snapshot; returns how many the broker took."""
        sent = 0
        for push in pushes:
            if await self.async_send(
                Outgoing(topics.topic(push.gateway_id, topics.DOWN_USERS), push)
            ):
                sent += 1
        return sent

"""Which uplink payloads the bridge reads on its event loop (``handler.read_inline``).

Small ones are read there (a thread's round trip costs more than reading them);
anything whose reading could take the loop away from the admin API and every
gateway's answers goes to the decode threads: a large payload, and a small one
that inflates to a lot (2 KiB of zstd holds megabytes of JSON). A payload the
loop refuses goes to the threads too, which give its real error.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import zstandard

from cloud_bridge.handler import INLINE_DECODE_MAX, INLINE_INFLATED_MAX, read_inline, read_payload
from outpost.wire import topics
from outpost.wire.codec import CODEC_ZSTD, MAX_BYTES, ZSTD, DecodeError, encode
from outpost.wire.schemas import EnvelopeBatch
from tests.support.fleet_sim import envelope

LIMIT = MAX_BYTES["envelope_batch"]


def _batch(n: int = 2) -> EnvelopeBatch:
    return EnvelopeBatch(
        gateway_id="site-a",
        batch_id=uuid.uuid4(),
        sent_at=datetime.now(UTC),
        envelopes=[envelope("act-inline", seq) for seq in range(1, n + 1)],
    )


def _zstd(body: bytes) -> bytes:
    return bytes([CODEC_ZSTD, ZSTD]) + zstandard.ZstdCompressor(level=19).compress(body)


def test_a_small_batch_is_read_on_the_loop_as_the_threads_read_it() -> None:
    batch = _batch()
    payload = encode(batch)
    assert len(payload) <= INLINE_DECODE_MAX
    assert read_inline(payload, LIMIT) == batch
    arrived = datetime.now(UTC)
    assert read_payload(payload, LIMIT, topics.UP_ENVELOPES, arrived) == batch


def test_a_small_payload_that_inflates_to_megabytes_goes_to_the_threads() -> None:
    text = _batch().model_dump_json().encode()
    bomb = _zstd(text[:-1] + b" " * (8 * 1024 * 1024) + b"}")  # valid JSON, 8 MiB of spaces
    assert len(bomb) <= INLINE_DECODE_MAX
    assert read_inline(bomb, LIMIT) is None
    # In the threads it is read in full (it is within the batch's limit), as before.
    arrived = datetime.now(UTC)
    assert isinstance(read_payload(bomb, LIMIT, topics.UP_ENVELOPES, arrived), EnvelopeBatch)
    # Just under the bound it is still read on the loop.
    near = _zstd(text[:-1] + b" " * (INLINE_INFLATED_MAX - len(text) - 1) + b"}")
    assert isinstance(read_inline(near, LIMIT), EnvelopeBatch)


def test_a_large_payload_and_a_refused_one_go_to_the_threads() -> None:
    big = encode(_batch(40), compress=False)
    assert len(big) > INLINE_DECODE_MAX
    assert read_inline(big, LIMIT) is None
    broken = encode(_batch())[:-7]
    assert read_inline(broken, LIMIT) is None
    arrived = datetime.now(UTC)
    assert isinstance(read_payload(broken, LIMIT, topics.UP_ENVELOPES, arrived), DecodeError)

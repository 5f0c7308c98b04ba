import hashlib
import json
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
import zstandard

from outpost.wire import (
    DecodeError,
    EnvelopeBatch,
    GatewayState,
    WireEnvelope,
    decode,
    encode,
    topics,
)
from outpost.wire.codec import (
    CODEC_DICT,
    CODEC_VERSION,
    CODEC_ZSTD,
    ENVELOPE_DICT_1,
    encode_for_peer,
    encode_json,
    encode_json_zstd,
)


def _envelope(seq: int = 1) -> WireEnvelope:
    now = datetime.now(UTC)
    return WireEnvelope(
        envelope_id=uuid.uuid4(),
        activity_id="act-1",
        seq=seq,
        base_version=1,
        status="draft",
        created_at=now,
        received_at=now,
        author="ana",
        form_version=1,
        record={"site_ok": True, "notes": "fence cut on north side " * 4},
        tables={"readings": [{"meter": f"A{i}", "value": i * 1.5} for i in range(5)]},
        attachments=[],
    )


def test_round_trip_and_compression() -> None:
    batch = EnvelopeBatch(
        gateway_id="site-a",
        batch_id=uuid.uuid4(),
        sent_at=datetime.now(UTC),
        envelopes=[_envelope(i) for i in range(1, 51)],
    )
    raw = encode(batch)
    assert raw[:2] == b"\x01\x01"
    assert decode(raw) == batch
    assert len(raw) < 0.35 * len(batch.model_dump_json())


def test_small_messages_are_not_compressed() -> None:
    msg = GatewayState(gateway_id="site-a", state="online", at=datetime.now(UTC))
    assert encode(msg)[:2] == b"\x01\x00"
    assert decode(encode(msg)) == msg


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b"", "too short"),
        (b"\x04\x00{}", "unsupported codec version 4"),
        (b"\x02\x03{}", "unknown compression 3"),  # the dictionary needs version 3
        (b"\x03\x03not zstd", "zstd body is corrupt"),
        (b"\x01\x02" + zstandard.ZstdCompressor().compress(b"{}"), "unknown compression"),
        (b"\x02\x02not zstd", "zstd body is corrupt"),
        (b"\x02\x02" + zstandard.ZstdCompressor().compress(b"{}" * 500)[:-6], "corrupt"),
        (
            b"\x02\x02" + zstandard.ZstdCompressor(write_content_size=False).compress(b"{}"),
            "does not state its size",
        ),
        (
            b"\x02\x02" + zstandard.ZstdCompressor().compress(b" " * (17 * 1024 * 1024)),
            "inflates past",
        ),
        (b"\x01\x07{}", "unknown compression"),
        (b"\x01\x01not zlib", "corrupt"),
        (b"\x01\x00{not json", "not JSON"),
        (b'\x01\x00{"kind": "nope"}', "kind"),
        (
            b'\x01\x00{"kind": "state", "gateway_id": "site-a", "state": "online",'
            b' "at": "2026-11-23T09:00:00Z", "extra": 1}',
            "extra: unknown field",
        ),
        (
            b'\x01\x00{"kind": "state", "gateway_id": "site-a", "state": "online"}',
            "at: Field required",
        ),
    ],
)
def test_bad_payloads_have_readable_reasons(payload: bytes, problem: str) -> None:
    with pytest.raises(DecodeError) as err:
        decode(payload)
    assert problem in str(err.value)


def test_zip_bomb_is_refused() -> None:
    bomb = b"\x01\x01" + zlib.compress(b"[" + b" " * (20 * 1024 * 1024) + b"]")
    with pytest.raises(DecodeError, match="inflates past"):
        decode(bomb)


def test_topics() -> None:
    assert topics.topic("site-a", topics.UP_ENVELOPES) == "outpost/v1/gw/site-a/up/envelopes"
    assert topics.parse("outpost/v1/gw/site-a/up/envelopes") == ("site-a", "up/envelopes")
    assert topics.parse("other/x") is None
    assert topics.parse("outpost/v1/gw/+/up") is None
    with pytest.raises(ValueError, match="invalid gateway id"):
        topics.topic("a/#", "state")


def test_codec_2_carries_zstd_and_version_1_stays_readable() -> None:
    state = GatewayState(gateway_id="site-a", state="online", at=datetime.now(UTC))
    doc = state.model_dump_json().encode()
    v2 = encode_json_zstd(doc)
    assert v2[:2] == bytes((CODEC_ZSTD, 2))
    assert decode(v2) == state
    assert decode(encode_json(doc)) == state  # what old gateways send
    assert encode(state)[0] == 1  # central and the downlink keep writing version 1


def test_codec_3_uses_the_frozen_dictionary_where_it_is_smaller() -> None:
    # The dictionary's bytes are part of the wire contract: messages in
    # flight across an upgrade decode with exactly these.
    assert hashlib.sha256(ENVELOPE_DICT_1).hexdigest() == (
        "a8c5dae2550ea3a18736744cf4426afb55dc840fde15170216a8821c3f3fde23"
    )
    one = EnvelopeBatch(
        gateway_id="site-a",
        batch_id=uuid.uuid4(),
        sent_at=datetime.now(UTC),
        envelopes=[_envelope(1)],
    )
    doc = one.model_dump_json().encode()
    # Each peer gets what it reads: zlib, plain zstd, the dictionary.
    assert encode_for_peer(doc, CODEC_VERSION)[:2] == bytes((CODEC_VERSION, 1))
    v2 = encode_for_peer(doc, CODEC_ZSTD)
    assert v2[:2] == bytes((CODEC_ZSTD, 2))
    v3 = encode_for_peer(doc, CODEC_DICT, level=19)
    assert v3[:2] == bytes((CODEC_DICT, 3))
    assert len(v3) < 0.9 * len(v2)
    assert decode(v3) == one
    # A big batch repeats its own keys: the plain frame is smaller and goes.
    many = one.model_copy(update={"envelopes": [_envelope(i) for i in range(1, 201)]})
    big = encode_for_peer(many.model_dump_json().encode(), CODEC_DICT)
    assert big[:2] == bytes((CODEC_ZSTD, 2))
    assert decode(big) == many


def test_a_reused_zstd_decompressor_reads_after_a_corrupt_frame_and_in_threads() -> None:
    # Each thread keeps its decompressors: one frame's failure must not leak into the next.
    state = GatewayState(gateway_id="site-a", state="online", at=datetime.now(UTC))
    doc = state.model_dump_json().encode()
    good = [encode_json_zstd(doc), encode_json_zstd(doc, dictionary=True)]
    for frame in good:
        with pytest.raises(DecodeError, match="corrupt"):
            decode(frame[:-4] + b"\xff\xff\xff\xff")
        with pytest.raises(DecodeError, match="inflates past"):
            decode(frame, max_bytes=len(doc) - 1)
        assert decode(frame) == state
    with ThreadPoolExecutor(4) as pool:
        assert all(m == state for m in pool.map(decode, good * 200))


def test_batch_deferred_is_a_wire_message_and_the_contract_names_its_fields() -> None:
    from pathlib import Path

    from outpost.wire import BatchDeferred

    deferred = BatchDeferred(gateway_id="site-a", batch_id=uuid.uuid4(), retry_after_s=10)
    assert decode(encode(deferred)) == deferred
    for bad in (0, -1, 3601):
        with pytest.raises(DecodeError, match="retry_after_s"):
            doc = {**deferred.model_dump(mode="json"), "retry_after_s": bad}
            decode(encode_json(json.dumps(doc).encode()))
    contract = (Path(__file__).resolve().parents[2] / "docs" / "contract.md").read_text()
    row = next(line for line in contract.splitlines() if line.startswith("| `BatchDeferred`"))
    for name in BatchDeferred.model_fields:
        if name != "kind":
            assert f"`{name}`" in row, name
    assert "`batch_deferred`" in row

"""The codec against arbitrary input: decoding raises nothing but DecodeError.

A payload comes from a gateway central does not control (or from anyone who
can publish): whatever its bytes, the bridge must get a message or a drop
reason, never an error it does not map (which would be a traceback and a
message handled by nobody).
"""

from __future__ import annotations

import contextlib
import json
import uuid
import zlib
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud_bridge.intake import placeholder, read_batch
from outpost.wire.codec import (
    MAX_BYTES,
    DecodeError,
    _body,
    decode,
    encode_json,
    encode_json_zstd,
    validate_document,
)
from outpost.wire.schemas import Heartbeat

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["\x00", "\ud800", "a\nb", "9" * 40, "0001-01-01T00:30:00+01:00"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)


def frame(document: str, compress: bool, zstd: bool = False) -> bytes:
    # surrogatepass: a lone surrogate reaches the wire as bytes no UTF-8 decoder takes
    body = document.encode("utf-8", "surrogatepass")
    # With compression, zstd frames alternate between codec 2 and 3 (dictionary).
    return (
        encode_json_zstd(body, dictionary=len(body) % 2 == 1)
        if zstd
        else encode_json(body, compress)
    )


def decodes_or_drops(payload: bytes, max_bytes: int = MAX_BYTES["envelope_batch"]) -> None:
    with contextlib.suppress(DecodeError):
        decode(payload, max_bytes)


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes(payload: bytes) -> None:
    decodes_or_drops(payload)
    decodes_or_drops(b"\x01\x00" + payload)
    decodes_or_drops(b"\x01\x01" + payload)
    decodes_or_drops(b"\x01\x01" + zlib.compress(payload))
    decodes_or_drops(b"\x02\x02" + payload)
    decodes_or_drops(b"\x03\x03" + payload)
    decodes_or_drops(encode_json_zstd(payload))
    decodes_or_drops(encode_json_zstd(payload, dictionary=True))


@FUZZ
@given(json_values, st.booleans(), st.booleans())
def test_arbitrary_json(value: Any, compress: bool, zstd: bool) -> None:
    decodes_or_drops(frame(json.dumps(value), compress, zstd))


def heartbeat() -> dict[str, Any]:
    hb = Heartbeat(
        gateway_id="site-a",
        sent_at=datetime.now(UTC),
        version="0.3.0",
        uptime_s=12.5,
        counts={"queued": 1},
        rejected=0,
        disk_free_bytes=10**9,
        db_bytes=10**6,
        devices=1,
    )
    return hb.model_dump(mode="json")


def envelope_batch() -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    return {
        "kind": "envelope_batch",
        "gateway_id": "site-a",
        "batch_id": str(uuid.uuid4()),
        "sent_at": now,
        "envelopes": [
            {
                "envelope_id": str(uuid.uuid4()),
                "activity_id": "act-1",
                "seq": 1,
                "base_version": 1,
                "status": "draft",
                "created_at": now,
                "received_at": now,
                "author": "ana",
                "form_version": 1,
                "record": {"site_ok": True},
                "tables": {},
                "attachments": [],
            }
        ],
    }


@FUZZ
@given(st.sampled_from(["heartbeat", "envelope_batch"]), st.data())
def test_valid_messages_with_one_field_replaced(kind: str, data: st.DataObject) -> None:
    document = heartbeat() if kind == "heartbeat" else envelope_batch()
    target = document if kind == "heartbeat" else document["envelopes"][0]
    key = data.draw(st.sampled_from(sorted(target)))
    target[key] = data.draw(json_values)
    payload = frame(json.dumps(document), data.draw(st.booleans()))
    decodes_or_drops(payload, MAX_BYTES[kind])
    if kind == "envelope_batch":
        try:
            intake = read_batch(payload, datetime.now(UTC))
        except DecodeError:
            return
        # Every envelope is replayed, refused with a reason, or noted as unanswerable.
        assert len(intake.batch.envelopes) + len(intake.unanswerable) == 1
        assert all(reason for _, reason in intake.refused.values())


@FUZZ
@given(st.dictionaries(st.sampled_from(sorted(envelope_batch()["envelopes"][0])), json_values))
def test_a_placeholder_is_made_of_anything(raw: dict[str, Any]) -> None:
    stand_in = placeholder(raw, datetime.now(UTC))
    if stand_in is not None:
        assert 0 <= stand_in.seq <= 2**31 - 1
        assert stand_in.created_at.tzinfo is not None


@pytest.mark.parametrize(
    "document",
    [
        "[" * 200_000 + "]" * 200_000,
        '{"kind": "heartbeat", "uptime_s": ' + "9" * 5000 + "}",
        '{"kind": "heartbeat", "uptime_s": 1e999999}',
        '{"kind": "heartbeat", "uptime_s": NaN}',
        '{"kind": "heartbeat", "counts": ' + '{"a": ' * 5000 + "1" + "}" * 5000 + "}",
        '{"kind": "heartbeat", "version": "\\ud800"}',
        '{"kind": "envelope_batch", "envelopes": [' + "9" * 5000 + "]}",
    ],
    ids=["nested", "5000-digits", "huge-exponent", "nan", "nested-counts", "surrogate", "batch"],
)
def test_what_once_escaped_the_codec(document: str) -> None:
    for compress, zstd in ((False, False), (True, False), (True, True)):
        with pytest.raises(DecodeError):
            decode(frame(document, compress, zstd))


def test_each_uplink_kind_has_its_own_cap() -> None:
    padded = json.dumps(heartbeat()) + " " * MAX_BYTES["heartbeat"]
    with pytest.raises(DecodeError, match="larger than"):
        decode(frame(padded, False), MAX_BYTES["heartbeat"])
    with pytest.raises(DecodeError, match="inflates past"):
        decode(frame(padded, True), MAX_BYTES["heartbeat"])
    assert isinstance(decode(frame(padded, True)), Heartbeat)  # the batch limit takes it


def test_a_lone_surrogate_is_refused_a_pair_is_text() -> None:
    hb = heartbeat()
    hb["version"] = "\ud800"
    for compress in (False, True):
        with pytest.raises(DecodeError, match="surrogate"):
            decode(frame(json.dumps(hb), compress))
    hb["version"] = "\U0001f600"  # json.dumps writes it as the pair \ud83d\ude00
    assert decode(frame(json.dumps(hb), True)).version == "\U0001f600"


def test_a_lone_surrogate_in_one_envelope_refuses_only_that_one() -> None:
    document = envelope_batch()
    second = dict(document["envelopes"][0], envelope_id=str(uuid.uuid4()), activity_id="act-2")
    second["record"] = {"notes": "\udc80"}
    document["envelopes"].append(second)
    intake = read_batch(frame(json.dumps(document), True), datetime.now(UTC))
    assert len(intake.batch.envelopes) == 2
    ((code, reason),) = intake.refused.values()
    assert code == "invalid_envelope" and "surrogate" in reason


# --- the one-pass reading (pydantic from the bytes) against the reference -------------


def reading(read: Any, *args: Any) -> tuple[str, str]:
    """What a reader made of a payload: the message (by its repr: types and floats too) or the error."""
    try:
        return "message", repr(read(*args))
    except DecodeError as exc:
        return "refused", str(exc)


def same_reading(payload: bytes, max_bytes: int = MAX_BYTES["envelope_batch"]) -> None:
    try:
        body = _body(payload, max_bytes)
    except DecodeError:
        return  # refused before either reader runs
    assert reading(decode, payload, max_bytes) == reading(validate_document, body)


@FUZZ
@given(st.sampled_from(["heartbeat", "envelope_batch"]), st.data())
def test_one_pass_reads_a_changed_message_as_the_reference_does(
    kind: str, data: st.DataObject
) -> None:
    document = heartbeat() if kind == "heartbeat" else envelope_batch()
    target = document if kind == "heartbeat" else document["envelopes"][0]
    key = data.draw(st.sampled_from(sorted(target)))
    target[key] = data.draw(json_values)
    same_reading(frame(json.dumps(document), data.draw(st.booleans())), MAX_BYTES[kind])


@FUZZ
@given(json_values, st.binary(max_size=8), st.integers(min_value=0, max_value=400))
def test_one_pass_reads_spliced_bytes_as_the_reference_does(
    value: Any, junk: bytes, at: int
) -> None:
    document = envelope_batch()
    document["envelopes"][0]["record"] = {"v": value}
    body = json.dumps(document).encode("utf-8", "surrogatepass")
    at = min(at, len(body))
    same_reading(encode_json(body[:at] + junk + body[at:], False))


@pytest.mark.parametrize(
    "change",
    [
        ('"gateway_id": "site-a"', '"gateway_id": "site-a", "gateway_id": "site-b"'),
        ('"kind": "envelope_batch"', '"kind": "heartbeat", "kind": "envelope_batch"'),
        ('"site_ok": true', '"site_ok": true, "site_ok": false'),
        ('"seq": 1', '"seq": 1.0'),
        ('"seq": 1', '"seq": "1"'),
        ('"site_ok": true', '"site_ok": -0.0, "n": 1e400, "m": 123456789012345678901234567890'),
        ('"site_ok": true', '"site_ok": "\\u00e9\\t\\/"'),
        ('"site_ok": true', '"site_ok": "\\udc80"'),
        ('"site_ok": true', '"site_ok": Infinity'),
        ('"site_ok": true', '"site_ok": ' + "9" * 4300),
        ('"site_ok": true', '"site_ok": [' * 300 + "]" * 300),
    ],
    ids=[
        "twice-gateway",
        "twice-kind",
        "twice-in-record",
        "whole-float",
        "int-as-text",
        "numbers",
        "escapes",
        "lone-surrogate",
        "infinity",
        "4300-digits",
        "deep",
    ],
)
def test_one_pass_reads_an_edge_as_the_reference_does(change: tuple[str, str]) -> None:
    text = json.dumps(envelope_batch())
    assert change[0] in text
    edited = text.replace(change[0], change[1], 1)
    same_reading(encode_json(edited.encode(), False))
    same_reading(encode_json(edited.encode("utf-16"), False))  # json.loads detects UTF-16


def test_one_pass_takes_a_valid_batch() -> None:
    payload = encode_json(json.dumps(envelope_batch()).encode(), False)
    assert reading(decode, payload)[0] == "message"
    same_reading(payload)

"""The wire contract refuses, naming the field, every value a database would refuse.

A value that passes here travels to central and must fit every supported
database (``tests/cloud_bridge/test_wire_bounds_fit.py`` writes the extremes
into SQLite and PostgreSQL); one that does not is refused at the edge.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from outpost.wire.schemas import (
    INT32_MAX,
    INT64_MAX,
    MAX_JSON_DEPTH,
    MAX_JSON_TEXT,
    MAX_TIME,
    MIN_TIME,
    ActivityWire,
    EnvelopeBody,
    Heartbeat,
    UserWire,
    WireEnvelope,
)


def _body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "envelope_id": str(uuid.uuid4()),
        "activity_id": "act-1",
        "seq": 1,
        "base_version": 3,
        "status": "completed",
        "created_at": "2026-11-23T09:00:00Z",
        "record": {"site_ok": True, "notes": "ok"},
        "tables": {"readings": [{"meter": "A1", "value": 14.2}]},
    }
    body.update(changes)
    return body


def _wire(**changes: Any) -> dict[str, Any]:
    body = _body(**changes)
    body.setdefault("received_at", "2026-11-23T09:00:01Z")
    body.setdefault("author", "ana")
    body.setdefault("form_version", 1)
    body.setdefault("attachments", [])
    return body


def _refused_fields(model: Any, data: dict[str, Any]) -> set[str]:
    with pytest.raises(ValidationError) as info:
        model.model_validate_json(_dumps(data))
    return {".".join(str(p) for p in e["loc"]) for e in info.value.errors()}


def _dumps(data: dict[str, Any]) -> str:
    import json

    return json.dumps(data)


BAD_VALUES = [
    ("base_version", INT32_MAX + 1),
    ("base_version", 2**63),
    ("base_version", -1),
    ("seq", 2**31),
    ("form_version", 2**31),
    ("created_at", "0001-01-01T00:30:00+01:00"),  # year 0 once in UTC
    ("created_at", "9999-12-31T23:30:00-01:00"),  # year 10000 once in UTC
    ("created_at", "2026-11-23T09:00:00"),  # no offset: which clock?
]


@pytest.mark.parametrize(("field", "value"), BAD_VALUES)
@pytest.mark.parametrize("model", [EnvelopeBody, WireEnvelope])
def test_out_of_range_scalars_are_refused_naming_the_field(
    model: Any, field: str, value: Any
) -> None:
    make = _body if model is EnvelopeBody else _wire
    assert field in _refused_fields(model, make(**{field: value}))


BAD_RECORDS = [
    {"notes": "a\x00b"},  # PostgreSQL text cannot hold NUL
    {"a\x00": 1},
    {"big": 2**63},
    {"big": -(2**63) - 1},
    {"long": "x" * (MAX_JSON_TEXT + 1)},
    {"k" * 129: 1},
]


@pytest.mark.parametrize("record", BAD_RECORDS)
@pytest.mark.parametrize("model", [EnvelopeBody, WireEnvelope])
def test_record_values_a_database_refuses_are_refused(model: Any, record: dict[str, Any]) -> None:
    make = _body if model is EnvelopeBody else _wire
    assert "record" in _refused_fields(model, make(record=record))
    assert "tables" in _refused_fields(model, make(tables={"readings": [record]}))


def test_non_finite_and_huge_numbers_in_a_record_are_refused() -> None:
    for raw in ('{"v": NaN}', '{"v": Infinity}', '{"v": 1e400}', '{"v": ' + "9" * 5000 + "}"):
        text = _dumps(_body()).replace('{"site_ok": true, "notes": "ok"}', raw)
        with pytest.raises(ValidationError):
            EnvelopeBody.model_validate_json(text)


def test_deep_nesting_is_refused() -> None:
    deep: Any = 1
    for _ in range(MAX_JSON_DEPTH):
        deep = [deep]
    assert "record" in _refused_fields(EnvelopeBody, _body(record={"v": deep}))
    ok: Any = 1
    for _ in range(MAX_JSON_DEPTH - 1):
        ok = [ok]
    EnvelopeBody.model_validate_json(_dumps(_body(record={"v": ok})))


def test_table_names_fit_the_central_column() -> None:
    refused = _refused_fields(EnvelopeBody, _body(tables={"t" * 65: []}))
    assert any(f.startswith("tables") for f in refused), refused


def test_the_extremes_inside_the_bounds_are_accepted() -> None:
    body = EnvelopeBody.model_validate_json(
        _dumps(
            _body(
                seq=1_000_000,
                base_version=INT32_MAX,
                form_version=INT32_MAX,
                created_at="0001-01-02T01:00:00+01:00",
                record={"big": INT64_MAX, "small": -(2**63), "text": "x" * MAX_JSON_TEXT},
            )
        )
    )
    assert body.created_at.astimezone(UTC) == MIN_TIME
    late = EnvelopeBody.model_validate_json(_dumps(_body(created_at="9999-12-30T23:00:00-01:00")))
    assert late.created_at.astimezone(UTC) == MAX_TIME
    # The offset the device sent is kept (three clocks, never rewritten).
    assert late.created_at.utcoffset() is not None
    assert late.created_at.utcoffset().total_seconds() == -3600  # type: ignore[union-attr]


def test_stored_text_of_other_messages_has_no_nul_and_a_bound() -> None:
    with pytest.raises(ValidationError, match="display_name"):
        UserWire(username="ana", password_hash="$argon2id$x" * 2, offline=True, display_name="a\0")
    with pytest.raises(ValidationError, match="type"):
        ActivityWire.model_validate(
            {
                "id": "a",
                "title": "t",
                "type": "x" * 65,
                "form": {"fields": []},
                "form_version": 1,
                "responsible": "ana",
                "version": 1,
            }
        )
    beat: dict[str, Any] = {
        "gateway_id": "site-a",
        "sent_at": "2026-11-23T09:00:00Z",
        "version": "0.2.0",
        "uptime_s": 1.0,
        "counts": {"queued": 1},
        "rejected": 0,
        "disk_free_bytes": 2**40,
        "db_bytes": 1,
        "devices": 0,
    }
    Heartbeat.model_validate(beat)
    for field, value in (
        ("uptime_s", float("inf")),
        ("disk_free_bytes", 2**63),
        ("counts", {"queued": 2**64}),
        ("replica_error", "x\0"),
        ("last_sync", "0001-01-01T00:00:00+05:00"),
    ):
        with pytest.raises(ValidationError, match=field):
            Heartbeat.model_validate({**beat, field: value})


def test_identifiers_are_matched_whole() -> None:
    """pydantic's patterns end at the end of the text: ``eve\\n`` is not ``eve``."""
    for field, value in (
        ("author", "eve\n"),
        ("activity_id", "act-1\n"),
        ("attachments", ["a" * 64 + "\n"]),
    ):
        assert any(
            f.startswith(field) for f in _refused_fields(WireEnvelope, _wire(**{field: value}))
        )


_json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50)
_json = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(record=st.dictionaries(st.text(max_size=20), _json, max_size=5))
def test_any_record_either_is_refused_or_survives_a_round_trip(record: dict[str, Any]) -> None:
    """Property: whatever a device sends is refused at the edge or travels intact."""
    import json

    try:
        text = json.dumps(_body(record=record), allow_nan=True)
    except ValueError:
        return  # not even JSON Python can write
    try:
        body = EnvelopeBody.model_validate_json(text)
    except ValidationError:
        return
    again = json.loads(body.model_dump_json())  # what central's reader sees
    assert again["record"] == json.loads(text)["record"]
    assert datetime.fromisoformat(again["created_at"]) == body.created_at


_hostile_scalars = (
    _json_scalars
    | st.sampled_from(["a\x00b", "x" * (MAX_JSON_TEXT + 1), float("inf"), float("nan")])
    | st.sampled_from([INT64_MAX, INT64_MAX + 1, -INT64_MAX - 1, -INT64_MAX - 2])
)
_hostile_keys = st.text(max_size=10) | st.sampled_from(["k\x00", "k" * 129, "k" * 128])
_hostile = st.recursive(
    _hostile_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_hostile_keys, inner, max_size=4),
    max_leaves=40,
)


def _verdict(check: Any, value: Any) -> str:
    try:
        check(value)
    except ValueError as exc:
        return str(exc)
    return "ok"


@settings(max_examples=500, deadline=None)
@given(value=_hostile)
def test_the_fast_record_check_refuses_what_the_reference_refuses_in_its_words(
    value: Any,
) -> None:
    """Every envelope's body goes through the fast loop; its verdict must be the
    reference's, nesting (depth) included, for any value a device can send."""
    from outpost.wire.schemas import _bounded_json, _bounded_value

    assert _verdict(_bounded_json, value) == _verdict(lambda v: _bounded_value(v, 0), value)
    deep: Any = value
    for _ in range(MAX_JSON_DEPTH - 1):
        deep = [deep]
    assert _verdict(_bounded_json, deep) == _verdict(lambda v: _bounded_value(v, 0), deep)


_offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda m: timezone(timedelta(minutes=m))
)
_near_edges = st.one_of(
    st.datetimes(max_value=datetime(4, 1, 1)),
    st.datetimes(min_value=datetime(9996, 12, 31)),
    st.datetimes(),
)


@settings(max_examples=1000, deadline=None)
@given(local=_near_edges, tz=st.one_of(st.none(), _offsets))
def test_the_time_range_check_by_year_agrees_with_comparing_instants(
    local: datetime, tz: timezone | None
) -> None:
    """Most times are settled by their year alone; at any offset a device can send, that
    verdict must be the comparison of UTC instants (naive times read as UTC)."""
    from outpost.wire.schemas import _in_time_range

    value = local.replace(tzinfo=tz)
    aware = value if tz is not None else value.replace(tzinfo=UTC)
    expected = "ok" if MIN_TIME <= aware <= MAX_TIME else "time must be between"
    assert _verdict(_in_time_range, value)[: len(expected)] == expected

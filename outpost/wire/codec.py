"""The one versioned codec for every MQTT payload.

Layout: one byte codec version, one byte compression, then UTF-8 JSON.

- version 1: compression 0 none, 1 zlib. Every peer reads it; central and
  the downlink always write it, so gateways of any age read what they get.
- version 2: also compression 2, a zstd frame (with its content size). A
  gateway writes it for envelope batches only once central said it reads
  it (``CODEC_PROPERTY`` on central's messages), so a new gateway keeps
  working with an old central.
- version 3: also compression 3, a zstd frame made with the frozen
  envelope-batch dictionary below (``ENVELOPE_DICT_1``: the batch and
  envelope keys, which a lone envelope otherwise spends a sixth of its
  bytes on). Negotiated the same way; a gateway uses it only where it is
  smaller (small batches), so version 2 frames keep flowing too.

Batches cross metered satellite links, so anything over a small threshold
is compressed. Decoding is strict and bounded: a payload that inflates past
``MAX_DECODED`` bytes is refused (no zip bombs), and the JSON must validate
against the message schemas.
"""

from __future__ import annotations

import json
import re
import threading
import zlib
from contextlib import suppress
from typing import Any

import zstandard
from pydantic import TypeAdapter, ValidationError

from outpost.wire.schemas import Message

CODEC_VERSION = 1
CODEC_ZSTD = 2
CODEC_DICT = 3
CODEC_NEWEST = CODEC_DICT  # the newest version this side reads
RAW = 0
ZLIB = 1
ZSTD = 2
ZSTD_DICT = 3
# Raw-content zstd dictionary of compression 3: the skeleton of a batch of a
# draft and a completed envelope, keys in the order the schemas write them.
# Frozen: a message in flight (or redelivered after an upgrade) is decoded
# with exactly these bytes. A better dictionary is a new compression number.
ENVELOPE_DICT_1 = (
    b'{"kind":"envelope_batch","gateway_id": "", "batch_id": "", "sent_at": "T00:00:00+00:00",'
    b'"envelopes":[{"envelope_id":"","activity_id":"act-","seq":1,"base_version":1,'
    b'"status":"draft","created_at":"T00:00:00Z","received_at":"T00:00:00Z","author":"",'
    b'"form_version":1,"record":{},"tables":{},"attachments":[""]},{"envelope_id":"",'
    b'"activity_id":"act-","seq":1,"base_version":1,"status":"completed",'
    b'"created_at":"T00:00:00Z","received_at":"T00:00:00Z","author":"","form_version":1,'
    b'"record":{},"tables":{},"attachments":[""]}]}'
)
_DICT_1 = zstandard.ZstdCompressionDict(ENVELOPE_DICT_1, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
# Above this a batch's own repeats outweigh the dictionary's (measured on
# bench/corpus.py: from ~20 envelopes, 24 KiB, the plain frame is smaller).
DICT_MAX_INPUT = 16 * 1024
# MQTT 5 user property on central's messages: the newest codec version it reads.
CODEC_PROPERTY = "outpost-codec"
COMPRESS_OVER = 256  # bytes of JSON; smaller payloads gain nothing
MAX_DECODED = 16 * 1024 * 1024
# What each uplink message needs at most, as JSON text (docs/uplink.md, "Limits"):
# a batch of up to 500 envelopes; a 256 KiB chunk as base64 (349,528 bytes) and
# its fields; a heartbeat of 32 counts and its bounded strings (under 4 KiB);
# a check-out request and a state message of a few hundred bytes. The receiver
# refuses a payload over its kind's limit before parsing it.
MAX_BYTES: dict[str, int] = {
    "envelope_batch": MAX_DECODED,
    "blob_chunk": 512 * 1024,
    "heartbeat": 16 * 1024,
    "checkout_request": 4 * 1024,
    "state": 4 * 1024,
}
_HEADER = 2

_adapter: TypeAdapter[Any] = TypeAdapter(Message)


class DecodeError(ValueError):
    """A payload that is not a valid message; the text says why, for logs and rejections."""


def encode(message: Any, compress: bool | None = None) -> bytes:
    """Serialise a schema message; compress when large enough (or when told)."""
    return encode_json(message.model_dump_json().encode(), compress)


def encode_json(body: bytes, compress: bool | None = None) -> bytes:
    """Frame an already-serialised message document (the receiver validates it)."""
    if compress is None:
        compress = len(body) > COMPRESS_OVER
    if compress:
        return bytes((CODEC_VERSION, ZLIB)) + zlib.compress(body, 6)
    return bytes((CODEC_VERSION, RAW)) + body


def encode_json_zstd(body: bytes, level: int = 9, dictionary: bool = False) -> bytes:
    """Frame a document as codec version 2 (zstd), or 3 with the dictionary; only for a peer that reads it."""
    if dictionary:
        compressor = zstandard.ZstdCompressor(
            level=level, dict_data=_DICT_1, write_content_size=True, write_dict_id=False
        )
        return bytes((CODEC_DICT, ZSTD_DICT)) + compressor.compress(body)
    compressor = zstandard.ZstdCompressor(level=level, write_content_size=True)
    return bytes((CODEC_ZSTD, ZSTD)) + compressor.compress(body)


def encode_for_peer(body: bytes, peer_codec: int, level: int = 9) -> bytes:
    """The smallest framing of ``body`` that a peer reading up to ``peer_codec`` takes.

    Blocking (zstd at level 19: 0.2-0.5 s per 256 KiB at load ~18 here): call from a thread.
    """
    if peer_codec < CODEC_ZSTD:
        return encode_json(body)
    plain = encode_json_zstd(body, level)
    if peer_codec < CODEC_DICT or len(body) > DICT_MAX_INPUT:
        return plain
    with_dict = encode_json_zstd(body, level, dictionary=True)
    return with_dict if len(with_dict) < len(plain) else plain


_local = threading.local()


def _decompressor(
    dict_data: zstandard.ZstdCompressionDict | None,
) -> zstandard.ZstdDecompressor:
    """This thread's decompressor (with or without the dictionary), made once.

    Making one costs ~18 us, ten times decoding a small batch with it; one is not
    safe to share between threads, and each call starts a fresh frame (also after
    a corrupt one)."""
    name = "plain" if dict_data is None else f"dict_{id(dict_data)}"
    made: zstandard.ZstdDecompressor | None = getattr(_local, name, None)
    if made is None:
        made = (
            zstandard.ZstdDecompressor()
            if dict_data is None
            else zstandard.ZstdDecompressor(dict_data=dict_data)
        )
        setattr(_local, name, made)
    return made


def _unzstd(
    data: bytes, limit: int, dict_data: zstandard.ZstdCompressionDict | None = None
) -> bytes:
    try:
        size = zstandard.frame_content_size(data)
    except zstandard.ZstdError:
        raise DecodeError("zstd body is corrupt: no frame header") from None
    if size < 0:
        raise DecodeError("zstd body does not state its size")
    if size > limit:
        raise DecodeError(f"payload inflates past {limit} bytes")
    try:
        return _decompressor(dict_data).decompress(data, max_output_size=limit)
    except zstandard.ZstdError as exc:
        raise DecodeError(f"zstd body is corrupt: {exc}") from None


def _inflate(data: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise DecodeError(f"compressed body is corrupt: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise DecodeError(f"payload inflates past {limit} bytes")
    if not inflater.eof:
        raise DecodeError("compressed body is truncated")
    return out


def _body(payload: bytes, max_bytes: int) -> bytes:
    if len(payload) < _HEADER:
        raise DecodeError("payload is too short to carry a codec header")
    if len(payload) > max_bytes + _HEADER:
        raise DecodeError(f"payload is larger than {max_bytes} bytes")
    version, compression = payload[0], payload[1]
    if not CODEC_VERSION <= version <= CODEC_NEWEST:
        raise DecodeError(
            f"unsupported codec version {version} (this side speaks {CODEC_VERSION} to {CODEC_NEWEST})"
        )
    body = payload[_HEADER:]
    if compression == ZLIB:
        return _inflate(body, max_bytes)
    if compression == ZSTD and version >= CODEC_ZSTD:
        return _unzstd(body, max_bytes)
    if compression == ZSTD_DICT and version >= CODEC_DICT:
        return _unzstd(body, max_bytes, _DICT_1)
    if compression != RAW:
        raise DecodeError(f"unknown compression {compression}")
    return body


def _parse(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DecodeError(f"body is not JSON: {exc}") from None
    except ValueError as exc:  # an integer of more digits than int() takes
        raise DecodeError(f"body holds a number central cannot read: {exc}") from None
    except RecursionError:
        raise DecodeError("body is nested too deeply") from None


def decode_document(payload: bytes, max_bytes: int = MAX_DECODED) -> Any:
    """The JSON document inside a payload, not yet checked against the schemas.

    ``max_bytes`` bounds the JSON text (after inflating). Every way a payload
    can be wrong ends in :class:`DecodeError`: numbers past what Python parses
    (over 4,300 digits), nesting past its recursion limit, bytes that are not
    UTF-8. A string may still hold a lone surrogate (see :func:`decode`).
    """
    return _parse(_body(payload, max_bytes))


def has_lone_surrogate(document: Any) -> bool:
    """Whether a string in ``document`` holds half a UTF-16 pair (``"\\ud800"``): not Unicode.

    JSON's escapes can spell one; no database, hash or UTF-8 encoder takes it.
    """
    stack = [document]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return False


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def decode(payload: bytes, max_bytes: int = MAX_DECODED) -> Any:
    """Parse and validate a payload into one of the schema messages."""
    body = _body(payload, max_bytes)
    if not _SURROGATE_ESCAPE.search(body):
        # One pass from the bytes (pydantic's own JSON parser): a 2-envelope batch in
        # ~20 us instead of ~32. It refuses a superset of what json.loads does (UTF-16,
        # a BOM, numbers past 4,300 digits) and reads the rest the same; whatever it
        # refuses is read again by the reference path, so a bad payload gets the same
        # error text either way (tests/outpost/test_codec_fuzz.py holds the two equal).
        with suppress(ValidationError, RecursionError):
            return _adapter.validate_json(body)
    return validate_document(body)


def validate_document(body: bytes) -> Any:
    """The reference reading of a JSON body: ``json.loads``, the lone-surrogate check, the schemas."""
    data = _parse(body)
    if _SURROGATE_ESCAPE.search(body) and has_lone_surrogate(data):
        raise DecodeError("a text holds a lone UTF-16 surrogate (it is not Unicode)")
    try:
        return _adapter.validate_python(data)
    except ValidationError as exc:
        raise DecodeError(describe_validation(exc)) from None
    except RecursionError:
        raise DecodeError("body is nested too deeply") from None


def describe_validation(exc: ValidationError, limit: int = 3) -> str:
    """A readable one-line summary of a pydantic error: where and what."""
    parts = []
    for err in exc.errors()[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "message"
        msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{loc}: {msg}")
    more = len(exc.errors()) - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)

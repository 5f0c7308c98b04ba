"""Resumable, hash-verified attachment uploads and the envelopes that use them."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.store import Store
from tests.gateway.conftest import (
    ClientFactory,
    envelope_body,
    make_gateway_config,
    sha256_hex,
    sign_in,
)

BLOB = os.urandom(300_000)
SHA = sha256_hex(BLOB)
URL = f"/api/v1/attachments/{SHA}"


async def _head(client: TestClient[Any, Any], headers: dict[str, str], url: str = URL) -> Any:
    return await client.head(url, headers=headers)


async def test_whole_upload_then_envelope_uses_it(
    client: TestClient[Any, Any], alice: dict[str, str], gateway_config: Any
) -> None:
    assert (await _head(client, alice)).status == 404
    resp = await client.put(URL, data=BLOB, headers=alice)
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["complete"] is True
    head = await _head(client, alice)
    assert head.status == 200
    assert head.headers["Upload-Offset"] == str(len(BLOB))
    assert head.headers["X-Upload-Complete"] == "true"
    on_disk = gateway_config.gateway.data_dir / "blobs" / SHA[:2] / SHA
    assert on_disk.read_bytes() == BLOB
    # uploading it again is a no-op
    again = await client.put(URL, data=BLOB, headers=alice)
    assert again.status == 200 and (await again.json())["complete"] is True
    resp = await client.post(
        "/api/v1/envelopes", json=envelope_body(attachments=[SHA]), headers=alice
    )
    assert resp.status == 201, await resp.text()


async def test_resume_with_content_range(
    client: TestClient[Any, Any], alice: dict[str, str]
) -> None:
    half = 123_457
    total = len(BLOB)
    first = await client.put(
        URL,
        data=BLOB[:half],
        headers={**alice, "Content-Range": f"bytes 0-{half - 1}/{total}"},
    )
    assert first.status == 202
    assert (await first.json())["received"] == half
    head = await _head(client, alice)
    assert head.headers["Upload-Offset"] == str(half)
    assert head.headers["Upload-Length"] == str(total)
    assert head.headers["X-Upload-Complete"] == "false"
    # an envelope may not use it yet
    resp = await client.post(
        "/api/v1/envelopes", json=envelope_body(attachments=[SHA]), headers=alice
    )
    assert resp.status == 422
    # a gap is refused with where to continue
    gap = await client.put(
        URL,
        data=BLOB[half + 10 :],
        headers={**alice, "Content-Range": f"bytes {half + 10}-{total - 1}/{total}"},
    )
    assert gap.status == 416
    assert gap.headers["Upload-Offset"] == str(half)
    rest = await client.put(
        URL,
        data=BLOB[half:],
        headers={**alice, "Content-Range": f"bytes {half}-{total - 1}/{total}"},
    )
    assert rest.status == 201, await rest.text()
    resp = await client.post(
        "/api/v1/envelopes", json=envelope_body(attachments=[SHA]), headers=alice
    )
    assert resp.status == 201


async def test_hash_mismatch_does_not_count(
    client: TestClient[Any, Any], alice: dict[str, str], gateway_config: Any
) -> None:
    wrong = BLOB[:-1] + bytes([BLOB[-1] ^ 1])
    resp = await client.put(URL, data=wrong, headers=alice)
    assert resp.status == 422
    body = await resp.json()
    assert body["error"]["code"] == "hash_mismatch"
    head = await _head(client, alice)
    assert head.headers["Upload-Offset"] == "0"
    assert head.headers["X-Upload-Complete"] == "false"
    assert not (gateway_config.gateway.data_dir / "blobs" / SHA[:2] / SHA).exists()
    resp = await client.post(
        "/api/v1/envelopes", json=envelope_body(attachments=[SHA]), headers=alice
    )
    assert resp.status == 422
    assert (await client.put(URL, data=BLOB, headers=alice)).status == 201


async def test_bad_upload_requests(client: TestClient[Any, Any], alice: dict[str, str]) -> None:
    resp = await client.put("/api/v1/attachments/NOTAHASH", data=b"x", headers=alice)
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_sha256"
    for header in ("bytes=0-1/2", "bytes 5-1/10", "bytes 0-10/10", "items 0-1/2"):
        resp = await client.put(URL, data=b"xx", headers={**alice, "Content-Range": header})
        assert resp.status == 400, header
        assert (await resp.json())["error"]["code"] == "invalid_range"


async def test_attachment_size_limit(aiohttp_client: ClientFactory, seeded_store: Store) -> None:
    config = make_gateway_config(seeded_store.path.parent, lan={"max_attachment_bytes": 100_000})
    client = await aiohttp_client(create_app(config, seeded_store))
    alice = await sign_in(client)
    resp = await client.put(URL, data=BLOB, headers=alice)
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "attachment_too_large"


async def test_cut_link_keeps_what_arrived(
    client: TestClient[Any, Any], alice: dict[str, str], gateway_config: Any
) -> None:
    """A raw socket sends half the body and hangs up; the next upload resumes there."""
    half = 150_000
    host, port = client.server.host, client.server.port
    assert isinstance(port, int)
    partial = gateway_config.gateway.data_dir / "blobs" / "partial" / f"{SHA}.part"
    loop = asyncio.get_running_loop()
    sock = await loop.run_in_executor(None, socket.create_connection, (host, port))
    try:
        head = (
            f"PUT {URL} HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: {alice['Authorization']}\r\n"
            f"Content-Length: {len(BLOB)}\r\n\r\n"
        ).encode()
        await loop.run_in_executor(None, sock.sendall, head + BLOB[:half])
        deadline = time.monotonic() + 10
        # wait for the condition: the gateway is writing the part that arrived
        while time.monotonic() < deadline:
            if partial.exists() and partial.stat().st_size >= half - 64 * 1024:
                break
            await asyncio.sleep(0.02)
    finally:
        sock.close()  # the link is cut mid-upload
    deadline = time.monotonic() + 10
    offset = 0
    while time.monotonic() < deadline:  # wait for the condition: the server saw the cut
        resp = await _head(client, alice)
        offset = int(resp.headers.get("Upload-Offset", "0"))
        if offset == half:
            break
        await asyncio.sleep(0.05)
    assert offset == half
    rest = await client.put(
        URL,
        data=BLOB[half:],
        headers={**alice, "Content-Range": f"bytes {half}-{len(BLOB) - 1}/{len(BLOB)}"},
    )
    assert rest.status == 201, await rest.text()


async def _chunked(data: bytes) -> Any:
    """A body sent with chunked transfer encoding: no Content-Length to check it by."""
    for i in range(0, len(data), 16_384):
        yield data[i : i + 16_384]


async def test_a_chunk_longer_than_its_range_is_refused_and_not_stored(
    client: TestClient[Any, Any], alice: dict[str, str], gateway_config: Any
) -> None:
    total = len(BLOB)
    resp = await client.put(
        URL,
        data=_chunked(BLOB[:200_000]),
        headers={**alice, "Content-Range": f"bytes 0-99999/{total}"},
    )
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "range_mismatch"
    head = await _head(client, alice)
    assert int(head.headers["Upload-Offset"]) <= 100_000  # nothing past END was kept
    partial = gateway_config.gateway.data_dir / "blobs" / "partial" / f"{SHA}.part"
    assert partial.stat().st_size <= 100_000


async def test_a_chunk_shorter_than_its_range_is_refused_and_resumable(
    client: TestClient[Any, Any], alice: dict[str, str]
) -> None:
    total = len(BLOB)
    resp = await client.put(
        URL,
        data=_chunked(BLOB[:50_000]),
        headers={**alice, "Content-Range": f"bytes 0-99999/{total}"},
    )
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "range_mismatch"
    assert resp.headers["Upload-Offset"] == "50000"
    rest = await client.put(
        URL,
        data=BLOB[50_000:],
        headers={**alice, "Content-Range": f"bytes 50000-{total - 1}/{total}"},
    )
    assert rest.status == 201, await rest.text()


async def test_another_users_put_cannot_truncate_an_upload_in_progress(
    client: TestClient[Any, Any], alice: dict[str, str]
) -> None:
    bob = await sign_in(client, "bob")
    half, total = 150_000, len(BLOB)
    first = await client.put(
        URL, data=BLOB[:half], headers={**alice, "Content-Range": f"bytes 0-{half - 1}/{total}"}
    )
    assert first.status == 202
    for headers in (
        {**bob},  # the whole file from byte 0 (would truncate alice's part)
        {**bob, "Content-Range": f"bytes 0-9/{total}"},
        {**bob, "Content-Range": f"bytes 0-9/{total + 1}"},
    ):
        data = BLOB if "Content-Range" not in headers else BLOB[:10]
        resp = await client.put(URL, data=data, headers=headers)
        assert resp.status == 409, await resp.text()
        assert (await resp.json())["error"]["code"] == "upload_in_progress"
    head = await _head(client, alice)
    assert head.headers["Upload-Offset"] == str(half)  # alice's part is intact
    rest = await client.put(
        URL,
        data=BLOB[half:],
        headers={**alice, "Content-Range": f"bytes {half}-{total - 1}/{total}"},
    )
    assert rest.status == 201, await rest.text()
    # Complete now: everyone may use it, and a PUT by bob is the no-op 200.
    assert (await client.put(URL, data=BLOB, headers=bob)).status == 200


async def test_an_abandoned_upload_can_be_taken_over(
    client: TestClient[Any, Any], alice: dict[str, str], gateway_config: Any
) -> None:
    bob = await sign_in(client, "bob")
    total = len(BLOB)
    await client.put(
        URL, data=BLOB[:1000], headers={**alice, "Content-Range": f"bytes 0-999/{total}"}
    )
    partial = gateway_config.gateway.data_dir / "blobs" / "partial" / f"{SHA}.part"
    old = time.time() - 2 * 3600  # idle for two hours
    os.utime(partial, (old, old))
    resp = await client.put(URL, data=BLOB, headers=bob)
    assert resp.status == 201, await resp.text()

"""Attachment blobs from gateways: chunked, resumable, verified, downloadable by the admin."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

from sqlalchemy import select

from cloud_bridge.blobs import HASH_MISMATCH, BlobStore
from cloud_bridge.db import Database
from cloud_bridge.handler import receive_chunk
from cloud_bridge.migration import migrate
from cloud_bridge.models import Blob
from cloud_bridge.service import Bridge
from outpost.wire import topics
from outpost.wire.schemas import BlobChunk, BlobReceipt
from tests.cloud_bridge.conftest import TOKEN, Admin, FakeGateway, bridge_config, envelope
from tests.support.broker import Broker

MakeGateway = Callable[[str], Awaitable[FakeGateway]]

CHUNK = 100_000


def blob(size: int, seed: int = 0) -> tuple[bytes, str]:
    data = bytes((i * 7 + seed) % 251 for i in range(size))
    return data, hashlib.sha256(data).hexdigest()


async def send(gw: FakeGateway, sha: str, size: int, offset: int, data: bytes) -> BlobReceipt:
    """One chunk up, its receipt back (the way the gateway works: one at a time)."""
    await gw.publish(
        topics.UP_BLOBS,
        BlobChunk(gateway_id=gw.gateway_id, sha256=sha, size=size, offset=offset, data=data),
    )
    receipt = await gw.expect(topics.DOWN_BLOBS)
    assert isinstance(receipt, BlobReceipt)
    assert (receipt.gateway_id, receipt.sha256) == (gw.gateway_id, sha)
    return receipt


async def upload(gw: FakeGateway, data: bytes, sha: str, chunk: int = CHUNK) -> BlobReceipt:
    """Send ``data`` as the gateway does: always from where central's receipt stands."""
    offset = 0
    for _ in range(4 * (len(data) // chunk + 2)):
        receipt = await send(gw, sha, len(data), offset, data[offset : offset + chunk])
        if receipt.complete or receipt.problem:
            return receipt
        offset = receipt.received
    raise AssertionError("the upload did not finish")


def blobs_dir(bridge: Bridge) -> Path:
    return Path(bridge.config.central.data_dir) / "blobs"


async def download(admin: Admin, sha: str, token: str | None = TOKEN) -> tuple[int, str, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with admin.session.get(f"{admin.base}/api/v1/attachments/{sha}", headers=headers) as r:
        return r.status, r.headers.get("Content-Type", ""), await r.read()


async def blob_rows(bridge: Bridge) -> list[tuple[str, int, str]]:
    assert bridge.runner is not None
    return await bridge.runner.async_tx(
        lambda s: [(b.sha256, b.size, b.gateway_id) for b in s.scalars(select(Blob))]
    )


def counter(bridge: Bridge, name: str, **labels: str) -> float:
    value = bridge.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def test_chunks_arrive_whole_and_the_admin_sees_what_is_missing(
    bridge: Bridge, admin: Admin, gateways: MakeGateway
) -> None:
    gw = await gateways("site-a")
    photo, sha = blob(2 * CHUNK + 12_345)
    aid = await admin.seed()
    await admin.ok("POST", f"/api/v1/activities/{aid}/dispatch", {"gateway_id": "site-a"})
    dispatch = await gw.expect(topics.DOWN_DISPATCH)
    env = envelope(aid, 1, base_version=dispatch.activity.version, status="completed")
    env = env.model_copy(update={"attachments": [sha]})
    await gw.publish(topics.UP_ENVELOPES, gw.batch([env]))
    (result,) = (await gw.results(1)).values()
    assert result.outcome == "applied"

    # Central knows the envelope expects the photo, and that it does not hold it.
    one = await admin.ok("GET", f"/api/v1/envelopes/{env.envelope_id}")
    assert (one["attachments"], one["missing_attachments"]) == ([sha], [sha])
    listed = await admin.ok("GET", f"/api/v1/envelopes?activity_id={aid}")
    assert listed["envelopes"][0]["missing_attachments"] == [sha]
    record = await admin.ok("GET", f"/api/v1/activities/{aid}/record")
    assert (record["attachments"], record["missing_attachments"]) == ([sha], [sha])
    status, _, body = await download(admin, sha)
    assert status == 404

    offset = 0
    while offset < len(photo):
        part = photo[offset : offset + CHUNK]
        receipt = await send(gw, sha, len(photo), offset, part)
        offset += len(part)
        assert receipt.received == offset and receipt.problem is None
        assert receipt.complete == (offset == len(photo))

    stored = blobs_dir(bridge) / sha[:2] / sha
    assert stored.read_bytes() == photo
    assert not (blobs_dir(bridge) / "partial" / f"{sha}.part").exists()
    assert await blob_rows(bridge) == [(sha, len(photo), "site-a")]
    status, content_type, body = await download(admin, sha)
    assert (status, content_type) == (200, "application/octet-stream")
    assert body == photo
    one = await admin.ok("GET", f"/api/v1/envelopes/{env.envelope_id}")
    assert one["missing_attachments"] == []
    listed = await admin.ok("GET", f"/api/v1/envelopes?activity_id={aid}")
    assert listed["envelopes"][0]["missing_attachments"] == []
    record = await admin.ok("GET", f"/api/v1/activities/{aid}/record")
    assert record["missing_attachments"] == []
    assert counter(bridge, "outpost_bridge_blob_bytes_total") == len(photo)
    assert counter(bridge, "outpost_bridge_blobs_total") == 1
    assert bridge.handler is not None and len(bridge.handler.blob_locks) == 0


async def test_attachment_download_errors(bridge: Bridge, admin: Admin) -> None:
    _, sha = blob(10)
    status, _, body = await download(admin, sha, token=None)
    assert status == 401 and b"unauthorized" in body
    for bad in ("abc", sha.upper(), sha + "0", sha[:-1], sha[:-1] + "g"):
        status, data = await admin.call("GET", f"/api/v1/attachments/{bad}")
        assert (status, data["error"]["code"]) == (400, "invalid_sha256"), bad
    # A control character is refused for every address before any route runs.
    status, data = await admin.call("GET", f"/api/v1/attachments/{sha}%0A")
    assert (status, data["error"]["code"]) == (400, "invalid_path")
    status, data = await admin.call("GET", f"/api/v1/attachments/{sha}")
    assert (status, data["error"]["code"]) == (404, "not_found")
    assert sha in data["error"]["message"]
    doc = await admin.ok("GET", "/api/v1/openapi.json")
    op = doc["paths"]["/api/v1/attachments/{sha256}"]["get"]
    assert "application/octet-stream" in op["responses"]["200"]["content"]


async def test_duplicate_and_stale_chunks_are_answered_with_what_central_holds(
    bridge: Bridge, gateways: MakeGateway
) -> None:
    gw = await gateways("site-a")
    data, sha = blob(3 * CHUNK, seed=3)
    size = len(data)
    partial = blobs_dir(bridge) / "partial" / f"{sha}.part"
    first = data[:CHUNK]
    assert (await send(gw, sha, size, 0, first)).received == CHUNK
    # The same chunk again (the receipt was slow): nothing appended twice.
    again = await send(gw, sha, size, 0, first)
    assert (again.received, again.complete, again.problem) == (CHUNK, False, None)
    assert partial.read_bytes() == first
    # A stale chunk with other bytes at an old offset does not overwrite what is held.
    assert (await send(gw, sha, size, 0, b"\xff" * CHUNK)).received == CHUNK
    assert (await send(gw, sha, size, 10, b"\xff" * 10)).received == CHUNK
    # A chunk from beyond the end of what central holds is not written either.
    assert (await send(gw, sha, size, 2 * CHUNK, data[2 * CHUNK :])).received == CHUNK
    assert partial.read_bytes() == first
    # The gateway continues from the receipt and the blob arrives intact.
    assert (await send(gw, sha, size, CHUNK, data[CHUNK : 2 * CHUNK])).received == 2 * CHUNK
    done = await send(gw, sha, size, 2 * CHUNK, data[2 * CHUNK :])
    assert (done.received, done.complete) == (size, True)
    assert (blobs_dir(bridge) / sha[:2] / sha).read_bytes() == data
    assert counter(bridge, "outpost_bridge_blob_bytes_total") == size


async def test_a_blob_central_holds_is_complete_for_every_gateway(
    bridge: Bridge, admin: Admin, gateways: MakeGateway
) -> None:
    a = await gateways("site-a")
    b = await gateways("site-b")
    data, sha = blob(CHUNK + 1, seed=5)
    assert (await upload(a, data, sha)).complete
    # The last receipt was lost: the gateway sends the last chunk again.
    last = await send(a, sha, len(data), CHUNK, data[CHUNK:])
    assert (last.received, last.complete, last.problem) == (len(data), True, None)
    # It restarted from zero: still complete, nothing written again.
    assert (await send(a, sha, len(data), 0, data[:CHUNK])).complete
    # Another gateway with the same photo: content-addressed, central has it already.
    other = await send(b, sha, len(data), 0, data[:CHUNK])
    assert (other.received, other.complete) == (len(data), True)
    assert await blob_rows(bridge) == [(sha, len(data), "site-a")]
    assert counter(bridge, "outpost_bridge_blob_bytes_total") == len(data)
    assert counter(bridge, "outpost_bridge_blobs_total") == 1
    status, _, body = await download(admin, sha)
    assert (status, body) == (200, data)


async def test_two_gateways_sending_one_blob_at_once(bridge: Bridge, gateways: MakeGateway) -> None:
    a, b = await gateways("site-a"), await gateways("site-b")
    data, sha = blob(6 * 20_000 + 7, seed=11)
    receipts = await asyncio.gather(
        upload(a, data, sha, chunk=20_000), upload(b, data, sha, chunk=20_000)
    )
    assert all(r.complete and r.problem is None for r in receipts)
    assert (blobs_dir(bridge) / sha[:2] / sha).read_bytes() == data
    assert [row[:2] for row in await blob_rows(bridge)] == [(sha, len(data))]
    assert counter(bridge, "outpost_bridge_blob_bytes_total") == len(data)


async def test_content_not_matching_its_hash_is_refused_and_not_kept(
    bridge: Bridge, admin: Admin, gateways: MakeGateway
) -> None:
    gw = await gateways("site-a")
    data, _ = blob(CHUNK + 500, seed=7)
    sha = hashlib.sha256(b"what the photo should have been").hexdigest()
    assert (await send(gw, sha, len(data), 0, data[:CHUNK])).received == CHUNK
    refused = await send(gw, sha, len(data), CHUNK, data[CHUNK:])
    assert (refused.received, refused.complete) == (0, False)
    assert refused.problem == HASH_MISMATCH
    assert not (blobs_dir(bridge) / sha[:2] / sha).exists()
    assert not (blobs_dir(bridge) / "partial" / f"{sha}.part").exists()
    assert await blob_rows(bridge) == []
    status, _, _ = await download(admin, sha)
    assert status == 404
    info = await admin.ok("GET", "/api/v1/gateways/site-a")
    assert sha in info["last_error"] and HASH_MISMATCH in info["last_error"]
    assert counter(bridge, "outpost_bridge_blobs_refused_total", problem="hash_mismatch") == 1
    assert counter(bridge, "outpost_bridge_blobs_total") == 0


async def test_a_blob_over_the_limit_is_refused_with_a_reason(
    bridge: Bridge, admin: Admin, gateways: MakeGateway
) -> None:
    gw = await gateways("site-a")
    limit = bridge.config.central.max_blob_bytes
    assert limit == 64 * 1024 * 1024  # the default
    _, sha = blob(100, seed=1)
    refused = await send(gw, sha, limit + 1, 0, b"x" * 100)
    assert (refused.received, refused.complete) == (0, False)
    assert refused.problem is not None
    assert "larger than" in refused.problem and str(limit + 1) in refused.problem
    assert not (blobs_dir(bridge) / "partial" / f"{sha}.part").exists()
    info = await admin.ok("GET", "/api/v1/gateways/site-a")
    assert refused.problem in info["last_error"]
    assert counter(bridge, "outpost_bridge_blobs_refused_total", problem="too_large") == 1
    # Exactly the limit is accepted (only a first chunk sent here).
    _, sha2 = blob(100, seed=2)
    accepted = await send(gw, sha2, limit, 0, b"x" * 100)
    assert (accepted.received, accepted.problem) == (100, None)


async def test_a_restarted_bridge_resumes_from_the_partial_file(
    central_db_url: str, tmp_path: Path, broker: Broker
) -> None:
    config = bridge_config(central_db_url, tmp_path / "central", broker.port)
    data, sha = blob(3 * CHUNK + 99, seed=9)
    size = len(data)
    gw = await FakeGateway("site-a", broker.port).start()
    try:
        first = Bridge(config)
        await first.async_start()
        try:
            await first.async_wait_mqtt(10)
            assert (await send(gw, sha, size, 0, data[:CHUNK])).received == CHUNK
            assert (await send(gw, sha, size, CHUNK, data[CHUNK : 2 * CHUNK])).received == (
                2 * CHUNK
            )
        finally:
            await first.async_stop()
        second = Bridge(config)
        await second.async_start()
        try:
            await second.async_wait_mqtt(10)
            # The gateway lost the last receipt and sends from the one before it.
            resumed = await send(gw, sha, size, CHUNK, data[CHUNK : 2 * CHUNK])
            assert resumed.received == 2 * CHUNK
            done = await send(gw, sha, size, 2 * CHUNK, data[2 * CHUNK :])
            assert (done.received, done.complete) == (size, True)
            assert (blobs_dir(second) / sha[:2] / sha).read_bytes() == data
            assert await blob_rows(second) == [(sha, size, "site-a")]
        finally:
            await second.async_stop()
    finally:
        await gw.stop()


async def test_a_stop_between_the_steps_of_completion_is_repaired(
    bridge: Bridge, gateways: MakeGateway
) -> None:
    gw = await gateways("site-a")
    root = blobs_dir(bridge)
    # Every byte fsynced, then a stop before the hash: the next chunk completes it.
    data, sha = blob(CHUNK + 10, seed=13)
    (root / "partial").mkdir(parents=True, exist_ok=True)
    (root / "partial" / f"{sha}.part").write_bytes(data)
    receipt = await send(gw, sha, len(data), CHUNK, data[CHUNK:])
    assert (receipt.received, receipt.complete) == (len(data), True)
    assert (root / sha[:2] / sha).read_bytes() == data
    # Renamed into place, then a stop before the row: the file counts, the row is added.
    data2, sha2 = blob(50, seed=17)
    (root / sha2[:2]).mkdir(parents=True, exist_ok=True)
    (root / sha2[:2] / sha2).write_bytes(data2)
    receipt = await send(gw, sha2, len(data2), 0, data2)
    assert (receipt.received, receipt.complete) == (len(data2), True)
    rows = sorted(await blob_rows(bridge))
    assert rows == sorted([(sha, len(data), "site-a"), (sha2, len(data2), "site-a")])
    # A partial longer than the blob (left by chunks claiming another size) starts over.
    data3, sha3 = blob(20, seed=19)
    (root / "partial" / f"{sha3}.part").write_bytes(os.urandom(40))
    receipt = await send(gw, sha3, len(data3), 0, data3)
    assert (receipt.received, receipt.complete) == (len(data3), True)


def test_two_workers_writing_one_blob_at_once_keep_it_whole(
    central_db_url: str, tmp_path: Path
) -> None:
    """Two bridge processes (own engines, own BlobStores, one data_dir) get the same chunks."""
    data, sha = blob(40 * 1024, seed=3)
    step = 1024
    workers = []
    for _ in range(2):
        db = Database.from_url(central_db_url)
        migrate(db.engine)
        workers.append((db, BlobStore(tmp_path / "central", 1 << 20)))
    stored = []
    barrier = threading.Barrier(2)

    def worker(db: Database, store: BlobStore, gateway_id: str) -> None:
        barrier.wait()
        offset = 0
        while offset < len(data):
            chunk = BlobChunk(
                gateway_id=gateway_id,
                sha256=sha,
                size=len(data),
                offset=offset,
                data=data[offset : offset + step],
            )
            progress = receive_chunk(db, store, gateway_id, chunk)
            assert progress.problem is None
            if progress.stored:
                stored.append(gateway_id)
            if progress.complete:
                return
            offset = progress.received  # where central stands, as a gateway resumes

    threads = [
        threading.Thread(target=worker, args=(db, store, f"site-{i}"))
        for i, (db, store) in enumerate(workers)
    ]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(stored) == 1
        assert workers[0][1].path_of(sha).read_bytes() == data
        with workers[0][0].session() as s:
            assert s.scalars(select(Blob.sha256)).all() == [sha]
    finally:
        for db, _ in workers:
            db.dispose()

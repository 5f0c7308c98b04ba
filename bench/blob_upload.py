"""Attachment upload benchmark: files from a gateway to central's disk, against the raw broker.

    .venv/bin/python bench/blob_upload.py [--files 10] [--mib 2] [--chunk-kib 128] [--window 4]

In one run, through the same local Mosquitto:

1. raw limit — paho publishes the same bytes in the same chunk size as QoS 1
   messages (100 in flight) to a paho subscriber: what the broker and a
   Python client can move;
2. Outpost — a gateway holding ``--files`` random (JPEG-like, incompressible)
   files of ``--mib`` MiB, each referenced by a completed envelope, uploads
   them through the real uplink (``--window`` chunks in flight) to a real
   ``outpost-bridge`` process; the
   clock stops when the gateway has committed central's last ``complete``
   receipt (central fsynced every chunk, hashed every file, moved it into
   place and committed its row).

Prints both rates, their ratio, and the bytes on the wire beside the file bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select, update

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.peers import bridge_process, raw_transfer  # noqa: E402
from gateway.config import GatewayConfig  # noqa: E402
from gateway.store.activities import upsert_activity  # noqa: E402
from gateway.store.blobs import BlobFiles  # noqa: E402
from gateway.store.schema import APPLIED, attachments, envelopes  # noqa: E402
from gateway.store.store import open_store  # noqa: E402
from gateway.store.submissions import body_hash, store_envelope  # noqa: E402
from gateway.uplink import Uplink  # noqa: E402
from outpost.forms import FormDefinition  # noqa: E402
from outpost.wire.schemas import ActivityWire, EnvelopeBody  # noqa: E402
from tests.support.broker import Broker  # noqa: E402
from tests.support.store_tasks import SqlRead, SqlWrite  # noqa: E402

GW = "bench-gw"
FORM = {"fields": [{"name": "photo", "type": "attachment"}], "tables": []}


def seed_gateway(workdir: Path, files: list[bytes]) -> Any:
    """A store whose completed (already applied) envelopes reference ``files``."""
    store = open_store(workdir / "gw")
    blobs = BlobFiles(workdir / "gw")
    now = datetime.now(UTC)
    act = ActivityWire(
        id="act-bench",
        title="bench",
        type="bench",
        form=FormDefinition.model_validate(FORM),
        form_version=1,
        responsible="crew",
        version=1,
    )
    store.write_sync(SqlWrite(lambda c: upsert_activity(c, act, "crew", now)))
    for seq, data in enumerate(files, 1):
        sha = hashlib.sha256(data).hexdigest()
        fh = blobs.open_at(sha, 0)
        blobs.write(fh, data)
        blobs.finish(fh)
        assert blobs.verify_and_commit(sha)
        row = {
            "sha256": sha,
            "size": len(data),
            "received": len(data),
            "complete": True,
            "path": blobs.relative(blobs.final_path(sha)),
            "uploaded_by": "crew",
            "created_at": now,
            "completed_at": now,
        }
        store.write_sync(SqlWrite(lambda c, row=row: c.execute(insert(attachments).values(row))))
        body = EnvelopeBody(
            envelope_id=uuid.uuid4(),
            activity_id=act.id,
            seq=seq,
            base_version=1,
            status="draft" if seq < len(files) else "completed",
            created_at=now,
            record={"photo": sha},
            attachments=[sha],
        )
        store.write_sync(
            SqlWrite(lambda c, b=body: store_envelope(c, b, body_hash(b), "crew", now))
        )
    # Only the files should move: the envelopes count as applied already.
    store.write_sync(SqlWrite(lambda c: c.execute(update(envelopes).values(state=APPLIED))))
    return store


async def upload(
    broker: Broker, workdir: Path, files: list[bytes], chunk: int, window: int
) -> tuple[float, int]:
    with bridge_process(broker, workdir):
        loop = asyncio.get_running_loop()
        store = await loop.run_in_executor(None, seed_gateway, workdir, files)
        config = GatewayConfig.model_validate(
            {
                "gateway": {"id": GW, "data_dir": str(workdir / "gw")},
                "mqtt": {
                    "host": broker.host,
                    "port": broker.port,
                    "blob_chunk_bytes": chunk,
                    "blob_window": window,
                },
            }
        )

        def uploaded(c: Any) -> int:
            return int(
                c.execute(
                    select(func.count()).where(attachments.c.uploaded_at.is_not(None))
                ).scalar_one()
            )

        uplink = Uplink(config, store)
        start = time.perf_counter()
        await uplink.async_start()
        while await store.async_read(SqlRead(uploaded)) < len(files):
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - start
        sent = uplink.blobs.bytes_sent
        await uplink.async_stop()
        await store.async_close()
        for data in files:
            sha = hashlib.sha256(data).hexdigest()
            held = (workdir / "central" / "blobs" / sha[:2] / sha).read_bytes()
            assert held == data, f"central's copy of {sha[:12]} differs"
        return elapsed, sent


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--mib", type=float, default=2.0)
    parser.add_argument("--chunk-kib", type=int, default=128)
    parser.add_argument("--window", type=int, default=4, help="mqtt.blob_window")
    args = parser.parse_args()
    chunk = args.chunk_kib * 1024
    files = [os.urandom(int(args.mib * 1024 * 1024)) for _ in range(args.files)]
    total = sum(len(f) for f in files)
    workdir = Path(tempfile.mkdtemp(prefix="outpost-blobs-"))
    broker = Broker(workdir / "broker", persistence=True).start()
    try:
        pieces = [f[i : i + chunk] for f in files for i in range(0, len(f), chunk)]
        raw_s = raw_transfer(broker, pieces)
        outpost_s, wire = asyncio.run(upload(broker, workdir, files, chunk, args.window))
        mib = total / 1024 / 1024
        print(
            f"files                    : {len(files)} x {args.mib:g} MiB, chunks of {args.chunk_kib} KiB"
        )
        print(f"raw paho QoS 1 transfer  : {raw_s:.2f} s ({mib / raw_s:.1f} MiB/s, 100 in flight)")
        print(
            f"outpost to central disk  : {outpost_s:.2f} s ({mib / outpost_s:.1f} MiB/s, {args.window} in flight)"
        )
        print(f"outpost / raw time       : {outpost_s / raw_s:.2f}x")
        print(f"bytes on the wire        : {wire / total:.3f}x the file bytes")
    finally:
        broker.stop()
        if not os.environ.get("OUTPOST_BENCH_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir}")


if __name__ == "__main__":
    main()

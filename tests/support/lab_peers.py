"""The two ends of the link laboratory, each run inside its network namespace.

``central WORKDIR``: a Mosquitto listening on every address of the central
namespace, a real ``outpost-bridge`` (SQLite) beside it, seeded with the
drain benchmark's activity type, user and activities checked out to
``bench-gw``. Prints one JSON line (the activities) and runs until stdin
closes.

``gateway CONFIG_JSON``: a gateway store and the real :class:`Uplink`
connected to that broker across the shaped link. Prints ``{"ready": …}``
once central's user snapshot arrived (the link is up and quiet), then reads
one command line from stdin and runs it, printing one JSON result line:

- ``{"envelopes": N}``: N completed envelopes; done when all are applied;
- ``{"photo": BYTES}``: one random (incompressible) file referenced by an
  envelope central already applied; done when central confirmed it complete;
- ``{"photo": BYTES, "envelope_after_s": T}``: the same, and T seconds in,
  one completed envelope: also reports how long that envelope took to be
  applied while the photo was going up;
- ``{"envelope": true}``: one completed envelope on an idle link.

Round N uses activity N for its envelope (one completed envelope checks an
activity in).

Both stop by themselves at ``deadline_s``.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.support.store_tasks import SqlRead, SqlWrite  # noqa: E402

GW = "bench-gw"
LAB_PORT = 1883
SINGLES = 6  # activities kept for lone envelopes (one per command round)


def _print(obj: Any) -> None:
    print(json.dumps(obj), flush=True)


# --- central -----------------------------------------------------------------------


def run_central(workdir: Path) -> None:
    from bench.drain import seed_central
    from bench.peers import bridge_process
    from tests.support.broker import Broker

    broker = Broker(workdir / "broker", port=LAB_PORT, extra=f"listener {LAB_PORT} 0.0.0.0")
    broker.start()
    try:
        with bridge_process(broker, workdir) as admin:
            acts = asyncio.run(seed_central(admin))
            _print({"activities": acts})
            sys.stdin.read()  # until the laboratory closes our stdin
    finally:
        broker.stop()


# --- gateway -----------------------------------------------------------------------


async def run_gateway(spec: dict[str, Any]) -> None:
    from bench.drain import FORM, make_bodies
    from gateway.config import GatewayConfig
    from gateway.store.activities import upsert_activity
    from gateway.store.blobs import BlobFiles
    from gateway.store.schema import APPLIED, attachments, envelopes
    from gateway.store.store import open_store
    from gateway.store.submissions import body_hash, store_envelope
    from gateway.uplink import Uplink
    from outpost.forms import FormDefinition
    from outpost.wire.schemas import ActivityWire, EnvelopeBody

    workdir = Path(spec["workdir"])
    loop = asyncio.get_running_loop()
    store = await loop.run_in_executor(None, open_store, workdir)
    form = FormDefinition.model_validate(FORM)
    acts: list[tuple[str, int]] = [tuple(a) for a in spec["activities"]]  # type: ignore[misc]
    for act_id, version in acts:
        act = ActivityWire(
            id=act_id,
            title="lab",
            type="bench",
            form=form,
            form_version=1,
            responsible="crew",
            version=version,
        )
        await store.async_write(
            SqlWrite(lambda c, a=act: upsert_activity(c, a, "crew", datetime.now(UTC)))
        )
    # The photos' own envelopes never go to central (they count as applied):
    # a local activity holds them.
    holder_act = ActivityWire(
        id="act-lab-photos",
        title="lab photos",
        type="bench",
        form=form,
        form_version=1,
        responsible="crew",
        version=1,
    )
    await store.async_write(
        SqlWrite(lambda c: upsert_activity(c, holder_act, "crew", datetime.now(UTC)))
    )
    config = GatewayConfig.model_validate(
        {
            "gateway": {"id": GW, "data_dir": str(workdir)},
            "mqtt": {"host": spec["host"], "port": LAB_PORT, **spec.get("mqtt", {})},
        }
    )
    users_seen = asyncio.Event()
    uplink = Uplink(config, store)
    uplink.on_users_replaced = users_seen.set
    await uplink.async_start()
    await asyncio.wait_for(users_seen.wait(), spec.get("deadline_s", 600))
    await asyncio.sleep(spec.get("settle_s", 1.0))  # the rest of the connect traffic
    _print({"ready": True})

    photo_seq = itertools.count(1)  # the holder's envelopes, one per photo

    async def one_round(command: dict[str, Any], round_no: int) -> dict[str, Any]:
        deadline = time.monotonic() + spec.get("deadline_s", 600)
        result: dict[str, Any] = {}
        connects = uplink._client.connect_count
        sent0, json0, blob0 = uplink.bytes_sent, uplink.json_bytes_sent, uplink.blobs.bytes_sent
        start = time.monotonic()

        def count(state: str) -> Any:
            return lambda c: int(
                c.execute(select(func.count()).where(envelopes.c.state == state)).scalar_one()
            )

        async def until(cond: Any) -> bool:
            while time.monotonic() < deadline:
                if await cond():
                    return True
                await asyncio.sleep(0.05)
            return False

        # Bulk envelopes use activities 6 on; a lone one activity ``round_no``
        # (a completed envelope checks its activity in: each is used once).
        bulk_acts = [a for a, _ in acts[SINGLES:]]
        bodies = make_bodies(
            max(len(bulk_acts), command.get("envelopes", 0)), bulk_acts, acts[0][1]
        )
        singles = make_bodies(len(acts), [a for a, _ in acts], acts[0][1])

        async def one_completed() -> float:
            """A completed envelope of activity ``round_no``; seconds until applied."""
            late = singles[round_no - 1].model_copy(
                update={"status": "completed", "envelope_id": uuid.uuid4(), "seq": 1}
            )
            before = await store.async_read(SqlRead(count(APPLIED)))
            stored_at = time.monotonic()
            await store.async_write(
                SqlWrite(
                    lambda c: store_envelope(c, late, body_hash(late), "crew", datetime.now(UTC))
                )
            )
            ok = await until(lambda: _ge(store.async_read(SqlRead(count(APPLIED))), before + 1))
            return time.monotonic() - stored_at if ok else -1.0

        if command.get("envelope"):
            result.update(envelope_seconds=await one_completed())
            result["done"] = result["envelope_seconds"] >= 0
        if "envelopes" in command:
            chosen = bodies[: command["envelopes"]]
            n = len(chosen) + await store.async_read(SqlRead(count(APPLIED)))

            def put(c: Any) -> None:
                for b in chosen:
                    store_envelope(c, b, body_hash(b), "crew", datetime.now(UTC))

            await store.async_write(SqlWrite(put))
            ok = await until(lambda: _ge(store.async_read(SqlRead(count(APPLIED))), n))
            result.update(done=ok, seconds=time.monotonic() - start)
        if "photo" in command:
            data = os.urandom(command["photo"])
            sha = hashlib.sha256(data).hexdigest()
            blobs = BlobFiles(workdir)
            fh = blobs.open_at(sha, 0)
            blobs.write(fh, data)
            blobs.finish(fh)
            assert blobs.verify_and_commit(sha)
            now = datetime.now(UTC)
            holder = EnvelopeBody(
                envelope_id=uuid.uuid4(),
                activity_id=holder_act.id,
                seq=next(photo_seq),
                base_version=1,
                status="draft",
                created_at=now,
                record={"site_ok": True},
                attachments=[sha],
            )
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

            def put_photo(c: Any) -> None:
                c.execute(insert(attachments).values(row))
                store_envelope(c, holder, body_hash(holder), "crew", now)
                # Only the file moves: its envelope counts as applied already.
                c.execute(
                    envelopes.update()
                    .where(envelopes.c.envelope_id == str(holder.envelope_id))
                    .values(state=APPLIED)
                )

            start = time.monotonic()
            await store.async_write(SqlWrite(put_photo))

            def uploaded(c: Any) -> bool:
                return bool(
                    c.execute(
                        select(attachments.c.uploaded_at).where(attachments.c.sha256 == sha)
                    ).scalar_one()
                )

            async def photo_done() -> tuple[bool, float]:
                ok = await until(lambda: store.async_read(SqlRead(uploaded)))
                return ok, time.monotonic() - start

            # Timed on its own: the envelope's wait must not bound the photo's.
            photo = asyncio.create_task(photo_done())
            if "envelope_after_s" in command:
                await asyncio.sleep(command["envelope_after_s"])
                seconds = await one_completed()
                result.update(
                    envelope_done=seconds >= 0,
                    envelope_seconds=seconds,
                    # Whether the photo was still going up when it was applied.
                    envelope_during_photo=not photo.done(),
                )
            ok, photo_s = await photo
            result.update(
                done=ok,
                seconds=photo_s,
                chunk_bytes_last=uplink.blobs.last_chunk_bytes,
                attachment_payload_bytes=uplink.blobs.bytes_sent - blob0,
            )
        result.update(
            reconnects=uplink._client.connect_count - connects,
            bytes_sent=uplink.bytes_sent - sent0,
            json_bytes_sent=uplink.json_bytes_sent - json0,
            status=uplink.status(),
        )
        return result

    round_no = 0
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line.strip():
            break
        round_no += 1
        _print(await one_round(json.loads(line), round_no))
    await uplink.async_stop()
    await store.async_close()


async def _ge(value: Any, n: int) -> bool:
    return bool(await value >= n)


def main() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if os.environ.get("OUTPOST_LAB_DEBUG"):
        logging.getLogger("gateway.blob_upload").setLevel(logging.DEBUG)
    role = sys.argv[1]
    if role == "central":
        run_central(Path(sys.argv[2]))
    else:
        try:
            asyncio.run(run_gateway(json.loads(sys.argv[2])))
        except Exception as exc:
            _print({"error": f"{type(exc).__name__}: {exc}"})
            raise


if __name__ == "__main__":
    main()

"""Drain benchmark: a gateway's queued backlog to central, against the raw broker.

    .venv/bin/python bench/drain.py [--envelopes 10000]

In one run, through the same local Mosquitto:

1. raw limit — paho publishes the same envelope JSON documents as QoS 1
   messages (one per envelope, 100 in flight) to a paho subscriber: the
   time the broker and a Python client need to move those bytes;
2. Outpost — a gateway store holding N completed envelopes (~2 KiB, 5 child
   rows each) drains through the real uplink to a real ``outpost-bridge``
   process (SQLite central DB); the clock stops when every envelope is
   ``applied`` on the gateway, i.e. central committed it and its ack came
   back and was committed on the gateway.

Prints the drain time beside the raw transfer time (ratio; aim <= 2x) and
the bytes the uplink put on the wire beside the raw JSON size (aim <= 0.35x).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.peers import ADMIN_TOKEN, bridge_process, raw_transfer  # noqa: E402
from gateway.config import GatewayConfig  # noqa: E402
from gateway.store.activities import upsert_activity  # noqa: E402
from gateway.store.schema import APPLIED, envelopes  # noqa: E402
from gateway.store.store import open_store  # noqa: E402
from gateway.store.submissions import body_hash, store_envelope  # noqa: E402
from gateway.uplink import Uplink  # noqa: E402
from outpost.forms import FormDefinition  # noqa: E402
from outpost.wire.schemas import ActivityWire, EnvelopeBody  # noqa: E402
from tests.support.broker import Broker  # noqa: E402
from tests.support.store_tasks import SqlRead, SqlWrite  # noqa: E402

GW = "bench-gw"
MQTT_OVERRIDES: dict[str, Any] = {}
ACTIVITIES = 20
FORM = {
    "fields": [
        {"name": "site_ok", "type": "boolean", "required": True},
        {"name": "notes", "type": "text"},
        {"name": "inspector_remarks", "type": "text"},
    ],
    "tables": [
        {
            "name": "readings",
            "fields": [
                {"name": "meter", "type": "text", "required": True},
                {"name": "value", "type": "number"},
                {"name": "comment", "type": "text"},
            ],
        }
    ],
}
WORDS = [
    "north",
    "fence",
    "cut",
    "gate",
    "rusted",
    "meter",
    "reading",
    "transformer",
    "oil",
    "level",
    "normal",
    "high",
    "low",
]


def text(rng: Any, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def make_bodies(n: int, activity_ids: list[str], version: int = 0) -> list[EnvelopeBody]:
    import random

    rng = random.Random(7)
    per = n // len(activity_ids)
    out = []
    for a, activity_id in enumerate(activity_ids):
        for s in range(1, per + 1):
            out.append(
                EnvelopeBody(
                    envelope_id=uuid.uuid4(),
                    activity_id=activity_id,
                    seq=s,
                    base_version=version,
                    status="completed" if s == per else "draft",
                    created_at=datetime.now(UTC),
                    record={
                        "site_ok": rng.random() > 0.2,
                        "notes": text(rng, 90),
                        "inspector_remarks": text(rng, 90),
                    },
                    tables={
                        "readings": [
                            {
                                "meter": f"M{a}-{i}",
                                "value": round(rng.uniform(0, 500), 2),
                                "comment": text(rng, 8),
                            }
                            for i in range(5)
                        ]
                    },
                )
            )
    return out


async def drain(broker: Broker, workdir: Path, n: int) -> tuple[float, int, int]:
    with bridge_process(broker, workdir) as admin:
        acts = await seed_central(admin)
        bodies = make_bodies(n, [a for a, _v in acts], acts[0][1])
        config = GatewayConfig.model_validate(
            {
                "gateway": {"id": GW, "data_dir": str(workdir / "gw")},
                "mqtt": {"host": broker.host, "port": broker.port, **MQTT_OVERRIDES},
            }
        )
        store = await asyncio.get_running_loop().run_in_executor(None, open_store, workdir / "gw")
        form = FormDefinition.model_validate(FORM)
        for act_id, version in acts:
            act = ActivityWire(
                id=act_id,
                title="bench",
                type="bench",
                form=form,
                form_version=1,
                responsible="crew",
                version=version,
            )
            await store.async_write(
                SqlWrite(lambda c, act=act: upsert_activity(c, act, "crew", datetime.now(UTC)))
            )
        for i in range(0, len(bodies), 500):
            chunk = bodies[i : i + 500]

            def put(c: Any, chunk: list[EnvelopeBody] = chunk) -> None:
                for b in chunk:
                    store_envelope(c, b, body_hash(b), "crew", datetime.now(UTC))

            await store.async_write(SqlWrite(put))
        uplink = Uplink(config, store)
        start = time.perf_counter()
        await uplink.async_start()

        def applied(c: Any) -> int:
            return int(
                c.execute(select(func.count()).where(envelopes.c.state == APPLIED)).scalar_one()
            )

        while await store.async_read(SqlRead(applied)) < len(bodies):
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - start
        sent = uplink.bytes_sent
        await uplink.async_stop()
        await store.async_close()
        return elapsed, sent, len(bodies)


async def seed_central(admin: int) -> list[tuple[str, int]]:
    """Central needs the type, the user and the activities checked out to the gateway."""
    import aiohttp

    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    base = f"http://127.0.0.1:{admin}/api/v1"
    async with aiohttp.ClientSession(headers=headers) as http:

        async def call(method: str, path: str, body: Any) -> Any:
            async with http.request(method, base + path, json=body) as r:
                data = await r.json(content_type=None)
                if r.status >= 300:
                    raise RuntimeError(f"{method} {path}: {r.status} {data}")
                return data

        await call("POST", "/activity-types", {"name": "bench", "offline": True, "form": FORM})
        await call(
            "PUT", "/users/crew", {"password": "bench-password", "offline": True, "sites": [GW]}
        )
        acts = []
        for _a in range(ACTIVITIES):
            act = await call(
                "POST", "/activities", {"title": "bench", "type": "bench", "responsible": "crew"}
            )
            await call("POST", f"/activities/{act['id']}/approve", {"approver": "crew"})
            await call("POST", f"/activities/{act['id']}/dispatch", {"gateway_id": GW})
            acts.append((act["id"], act["version"]))
        return acts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--envelopes", type=int, default=10_000)
    parser.add_argument("--batch-bytes", type=int, help="mqtt.batch_max_bytes (default: config)")
    parser.add_argument("--window", type=int, help="mqtt.inflight_batches (default: config)")
    args = parser.parse_args()
    if args.batch_bytes:
        MQTT_OVERRIDES["batch_max_bytes"] = args.batch_bytes
    if args.window:
        MQTT_OVERRIDES["inflight_batches"] = args.window
    workdir = Path(tempfile.mkdtemp(prefix="outpost-drain-"))
    broker = Broker(workdir / "broker", persistence=True).start()
    try:
        bodies = make_bodies(args.envelopes, [f"act-{i}" for i in range(ACTIVITIES)])
        raw_json = [b.model_dump_json().encode() for b in bodies]
        raw_bytes = sum(len(p) for p in raw_json)
        raw_s = raw_transfer(broker, raw_json)
        outpost_s, wire_bytes, n = asyncio.run(drain(broker, workdir, len(bodies)))
        print(
            f"envelopes                : {n} ({raw_bytes / n:.0f} B JSON each, {ACTIVITIES} activities)"
        )
        print(f"raw paho QoS 1 transfer  : {raw_s:.2f} s ({n / raw_s:.0f} msg/s)")
        print(f"outpost drain to applied : {outpost_s:.2f} s ({n / outpost_s:.0f} envelopes/s)")
        print(f"drain / raw time         : {outpost_s / raw_s:.2f}x (aim <= 2x)")
        print(
            f"bytes on the wire        : {wire_bytes} vs raw JSON {raw_bytes} = {wire_bytes / raw_bytes:.3f}x (aim <= 0.35x)"
        )
    finally:
        broker.stop()
        if not os.environ.get("OUTPOST_BENCH_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir}")


if __name__ == "__main__":
    main()

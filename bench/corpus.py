"""A realistic envelope corpus: what crews actually send, for measuring compression.

Three forms a utility's field crews fill in (an inspection, a maintenance
work order, a safety walk), each with free-text prose written the way
people write it on a phone (sentences drawn from a bank of a few hundred
observations, with numbers, places and names varied per envelope), child
rows (meter readings, parts used, findings), choices, dates, UUIDs and
attachment hashes. Deterministic for a seed.

``envelopes(n, seed)`` gives :class:`WireEnvelope` objects; ``batch_json``
the document the uplink sends (the same splice as ``gateway/uplink.py``).
"""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from outpost.wire.schemas import WireEnvelope

PLACES = [
    "north fence",
    "substation B",
    "pump house 2",
    "the east gate",
    "tank farm",
    "culvert under the haul road",
    "transformer T4",
    "the control room",
    "conveyor 3 tail pulley",
    "pit 7 ramp",
    "the laydown yard",
    "feeder 11 pole 42",
    "switchroom A",
    "the diesel bay",
    "weir on the west drain",
    "crusher feed chute",
    "bore 14",
    "the workshop roller door",
    "reservoir inlet tower",
    "the camp kitchen",
    "RMU 5 on Kowhai Street",
    "the fuel farm",
    "load-out bin 2",
    "the water treatment clarifier",
    "sample station 9",
    "the old tailings dam wall",
]
THINGS = [
    "gasket",
    "breaker",
    "bearing",
    "hinge",
    "padlock",
    "cable tray",
    "earth strap",
    "relief valve",
    "drain cock",
    "belt splice",
    "guard rail",
    "sight glass",
    "fuse",
    "isolator",
    "fire extinguisher",
    "eye wash station",
    "bund wall",
    "signage",
    "RCD",
    "flange bolts",
    "vent cowl",
    "manhole lid",
    "pressure transmitter",
    "junction box",
    "door seal",
    "conduit",
    "first aid kit",
    "light tower",
]
STATES = [
    "rusted through",
    "loose",
    "missing",
    "cracked",
    "leaking slowly",
    "in good order",
    "worn but serviceable",
    "damaged by a vehicle",
    "overgrown",
    "corroded at the base",
    "tagged out",
    "replaced last month",
    "hot to the touch",
    "vibrating more than usual",
]
NAMES = ["Ana", "Ben", "Chloe", "Dev", "Eru", "Fatima", "Gus", "Hemi", "Iris", "Jono"]
SENTENCES = [
    "Checked the {thing} at {place}, it is {state}.",
    "{name} says the {thing} at {place} has been {state} since {day}.",
    "Found the {thing} {state}; tagged it and told {name}.",
    "Reading on {place} was {num} at {time}, up from {num2} last visit.",
    "Access to {place} was blocked by a parked truck, waited {mins} minutes.",
    "Replaced the {thing} at {place} with a spare from the store, part number {part}.",
    "Could not isolate {place}: the {thing} is {state}. Needs a second visit.",
    "Water pooling near {place} after last night's rain, about {num} mm deep.",
    "Cleaned the {thing} and re-torqued to {num} Nm.",
    "No issues at {place}.",
    "Photo taken of the {thing} at {place}.",
    "Heard a knocking from {place} every {mins} seconds or so, could be the {thing}.",
    "Left the {thing} {state}, will order a new one (job {part}).",
    "Permit {part} signed off by {name} at {time}.",
    "Weather {weather}, wind from the {dir}, visibility ok.",
    "Spoke to {name} about the {thing}; they will raise a work order.",
    "Oil level in {place} at {num} percent, topped up {num2} litres.",
    "Fence line walked from {place} to {place2}, {state} near the gate.",
    "Lock on {place} {state}, fitted a new one.",
    "Gauge at {place} stuck at {num}, tapped it and it read {num2}.",
    "Arrived {time}, signed in with {name} at the gatehouse.",
    "The {thing} on {place} needs replacing before winter; quote requested from the supplier.",
    "Measured {num2} V across the {thing}, expected about {num}.",
    "Drove the {dir} boundary, two stock gates open, closed both.",
    "Contractor vehicle left a rut about {num} cm deep beside {place}.",
    "Vegetation cleared around {place} for a radius of {mins} m.",
    "Isolation confirmed by {name}, lock number {part}, test before touch done.",
    "Spare {thing} is not in the van, borrowed one from {place2}.",
    "Customer at {place} complained about noise at night, could not reproduce.",
    "Thermal scan of {place} shows {num2} degrees on the {thing}, others around {num}.",
    "Flushed the line at {place} for {mins} minutes until it ran clear.",
    "Bird nest in the {thing} at {place}, left it alone and reported to environment team.",
    "Cable marker at {place} missing, sprayed a temporary mark.",
    "Pressure held at {num} kPa for {mins} minutes, test passed.",
    "Sump at {place} about {num} percent full, pump started on float as expected.",
    "Graffiti on {place}, photo attached, no damage to the {thing}.",
    "Battery bank at {place} reads {num2} V float, cells {num} and {mins} a bit low.",
    "Couldn't get signal at {place}, wrote this up back at the truck.",
    "Handed over to {name} at {time}; the {thing} is still {state}.",
    "Lubricated the {thing} and checked alignment, within {num2} mm.",
    "Trench at {place} is unsupported past {num} cm, barricaded it and called {name}.",
    "Snake seen near {place}, kept clear, finished the rest of the round.",
    "Drawings for {place} do not match what is installed: the {thing} is on the {dir} side.",
    "Reset the alarm on {place} ({part}); cause looks like the {thing} being {state}.",
    "Road to {place} washed out in two spots after the rain, 4WD only.",
]
WEATHER = ["dry", "light rain", "heavy rain", "overcast", "hot and still", "foggy", "windy"]
DIRS = ["north", "south", "east", "west", "north-west", "south-east"]


def prose(rng: random.Random, sentences: int) -> str:
    out = []
    for _ in range(sentences):
        out.append(
            rng.choice(SENTENCES).format(
                thing=rng.choice(THINGS),
                place=rng.choice(PLACES),
                place2=rng.choice(PLACES),
                state=rng.choice(STATES),
                name=rng.choice(NAMES),
                day=rng.choice(["Monday", "Tuesday", "last week", "the storm", "the shutdown"]),
                num=rng.randint(1, 480),
                num2=round(rng.uniform(0, 480), 1),
                time=f"{rng.randint(6, 18):02d}:{rng.randint(0, 59):02d}",
                mins=rng.randint(2, 45),
                part=f"{rng.choice('ABCDEFGH')}{rng.randint(1000, 99999)}",
                weather=rng.choice(WEATHER),
                dir=rng.choice(DIRS),
            )
        )
    return " ".join(out)


def _sha(rng: random.Random) -> str:
    return hashlib.sha256(rng.randbytes(32)).hexdigest()


def _inspection(rng: random.Random) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    record = {
        "site_ok": rng.random() > 0.25,
        "weather": rng.choice(WEATHER),
        "visited_on": f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        "notes": prose(rng, rng.randint(3, 9)),
        "follow_up": rng.choice(["none", "work order", "urgent", "next visit"]),
    }
    rows = [
        {
            "meter": f"M-{rng.randint(100, 999)}-{rng.choice('ABC')}",
            "value": round(rng.uniform(0, 9999), 2),
            "unit": rng.choice(["kWh", "kPa", "m3", "degC", "A"]),
            "comment": prose(rng, 1) if rng.random() < 0.4 else "",
        }
        for _ in range(rng.randint(2, 12))
    ]
    return record, {"readings": rows}


def _work_order(rng: random.Random) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    record = {
        "job_number": f"WO-{rng.randint(100000, 999999)}",
        "asset_id": f"{rng.choice(['PMP', 'TRF', 'CNV', 'VLV'])}-{rng.randint(1, 400):04d}",
        "hours": round(rng.uniform(0.5, 9), 1),
        "completed_ok": rng.random() > 0.1,
        "work_done": prose(rng, rng.randint(2, 7)),
        "signed_by": rng.choice(NAMES),
    }
    parts = [
        {
            "part_no": f"{rng.choice('ABCDEFGH')}{rng.randint(1000, 99999)}",
            "description": f"{rng.choice(THINGS)} {rng.choice(['kit', 'set', 'assembly', ''])}".strip(),
            "qty": rng.randint(1, 6),
        }
        for _ in range(rng.randint(0, 6))
    ]
    return record, {"parts_used": parts}


def _safety_walk(rng: random.Random) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    record = {
        "area": rng.choice(PLACES),
        "ppe_ok": rng.random() > 0.15,
        "people_on_site": rng.randint(1, 30),
        "summary": prose(rng, rng.randint(1, 5)),
    }
    findings = [
        {
            "hazard": rng.choice(THINGS) + " " + rng.choice(STATES),
            "risk": rng.choice(["low", "medium", "high"]),
            "action": prose(rng, 1),
            "closed": rng.random() > 0.5,
        }
        for _ in range(rng.randint(0, 5))
    ]
    return record, {"findings": findings}


FORMS = [_inspection, _work_order, _safety_walk]


def envelopes(n: int, seed: int = 1) -> list[WireEnvelope]:
    rng = random.Random(seed)
    start = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)
    activities = [f"act-{uuid.UUID(int=rng.getrandbits(128))}" for _ in range(max(1, n // 4))]
    seqs: dict[str, int] = {}
    out = []
    for i in range(n):
        activity = rng.choice(activities)
        seqs[activity] = seqs.get(activity, 0) + 1
        form = FORMS[activities.index(activity) % len(FORMS)]
        record, tables = form(rng)
        photos = [_sha(rng) for _ in range(rng.choice([0, 0, 1, 2, 3]))]
        created = start + timedelta(seconds=i * 97 + rng.randint(0, 60))
        out.append(
            WireEnvelope(
                envelope_id=uuid.UUID(int=rng.getrandbits(128), version=4),
                activity_id=activity,
                seq=seqs[activity],
                base_version=rng.randint(1, 5),
                status="completed" if rng.random() < 0.3 else "draft",
                created_at=created,
                received_at=created + timedelta(seconds=rng.randint(1, 900)),
                author=rng.choice(NAMES).lower(),
                form_version=rng.randint(1, 3),
                record=record,
                tables=tables,
                attachments=photos,
            )
        )
    return out


def batch_json(gateway_id: str, envs: list[WireEnvelope]) -> bytes:
    """The batch document as the uplink builds it (canonical envelope JSON spliced in)."""
    head = json.dumps(
        {
            "gateway_id": gateway_id,
            "batch_id": str(uuid.UUID(int=len(envs), version=4)),
            "sent_at": datetime(2026, 11, 23, 12, 0, tzinfo=UTC).isoformat(),
        }
    )
    bodies = ",".join(e.model_dump_json() for e in envs)
    return f'{{"kind":"envelope_batch",{head[1:-1]},"envelopes":[{bodies}]}}'.encode()

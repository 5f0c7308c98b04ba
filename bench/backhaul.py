"""Backhaul benchmark: the real uplink and bridge across shaped links, against each link's limit.

    sudo .venv/bin/python bench/backhaul.py [--repeat 3] [--links 16,64,1000,10000] [--markdown]

For each link (kbit/s, 300 ms each way: 600 ms RTT; built as in the link
laboratory, ``tests/support/shaped_link.py``; needs root), in one run:

1. the link checked: connect RTT and a raw TCP bulk transfer of the photo's
   size (the physical limit as this kernel's TCP reaches it, slow start
   included);
2. 200 completed envelopes (the drain benchmark's, ~1.9 KiB JSON each)
   until all are applied: seconds, bytes on the wire (every byte on the
   gateway's veth, headers included) and their ratio to the JSON, against
   the time those wire bytes take at the link's rate;
3. one photo (random bytes: 300 KiB at 16 kbit/s, 600 KiB at 64 kbit/s,
   4 MiB above) until central confirmed it, twice (cold: first on this
   connection; warm: the next), with one completed envelope stored 5 s in
   (how long it took to be applied while the photo went up): seconds,
   reconnects, wire bytes / photo size, and link utilisation (the photo's
   size at the nominal rate over the time taken).

Prints each repetition and the median with min-max.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.shaped_link import lab_peers, probe, shaped_link, unavailable  # noqa: E402


def photo_size(kbit: float) -> int:
    if kbit <= 16:
        return 300 * 1024
    if kbit <= 64:
        return 600 * 1024
    return 4 * 1024 * 1024


def one(kbit: float, workdir: Path) -> dict[str, Any]:
    size = photo_size(kbit)
    out: dict[str, Any] = {}
    with shaped_link(kbit, delay_ms=300) as link:
        rate = link.rate_bytes_per_s
        rtt, bulk = probe(link, size)
        out["rtt"] = rtt
        out["raw_photo_s"] = bulk
        deadline = max(300.0, size / rate * 4)
        with lab_peers(link, workdir, deadline_s=deadline) as gw:
            env = gw.run({"envelopes": 200})
            out["env_s"] = env["seconds"]
            out["env_wire"] = env["wire_up"]
            out["env_json"] = env["json_bytes_sent"]
            out["env_limit_s"] = env["wire_up"] / rate
            for label in ("cold", "warm"):
                r = gw.run({"photo": size, "envelope_after_s": 5})
                out[f"{label}_s"] = r["seconds"]
                out[f"{label}_ok"] = r["done"]
                out[f"{label}_reconnects"] = r["reconnects"]
                out[f"{label}_wire"] = r["wire_up"] / size
                out[f"{label}_util"] = (size / rate) / r["seconds"]
                out[f"{label}_env_s"] = r.get("envelope_seconds")
            idle = gw.run({"envelope": True})
            out["idle_env_s"] = idle.get("envelope_seconds")
    out["photo_limit_s"] = size / rate
    return out


def spread(values: list[float], fmt: str = "{:.2f}") -> str:
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--links", default="16,64,1000,10000", help="kbit/s, comma separated")
    args = parser.parse_args()
    why = unavailable()
    if why:
        sys.exit(f"bench/backhaul.py: {why}")
    links = [float(x) for x in args.links.split(",")]
    results: dict[float, list[dict[str, Any]]] = {k: [] for k in links}
    for rep in range(args.repeat):
        for kbit in links:
            with tempfile.TemporaryDirectory(prefix="outpost-backhaul-") as tmp:
                r = one(kbit, Path(tmp))
            results[kbit].append(r)
            print(
                f"run {rep + 1} {kbit:g} kbit/s: "
                + ", ".join(
                    f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()
                ),
                flush=True,
            )
    print()
    print("| link (600 ms RTT) | what | time s | bytes on the wire | physical limit s | ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    for kbit, runs in results.items():
        name = f"{kbit:g} kbit/s" if kbit < 1000 else f"{kbit / 1000:g} Mbit/s"

        def col(k: str, runs: list[dict[str, Any]] = runs) -> list[float]:
            return [float(r[k]) for r in runs if r.get(k) is not None]

        env_ratio = [r["env_s"] / r["env_limit_s"] for r in runs]
        print(
            f"| {name} | 200 envelopes applied | {spread(col('env_s'))} | "
            f"{spread([r['env_wire'] / 1000 for r in runs], '{:.1f}')} KB "
            f"({spread([r['env_wire'] / r['env_json'] for r in runs], '{:.3f}')}x the JSON) | "
            f"{spread(col('env_limit_s'))} for those bytes | {spread(env_ratio)} |"
        )
        size = photo_size(kbit)
        for label in ("cold", "warm"):
            ratio = [r[f"{label}_s"] / r["photo_limit_s"] for r in runs]
            print(
                f"| {name} | {size // 1024} KiB photo ({label}) | {spread(col(f'{label}_s'))} | "
                f"{spread(col(f'{label}_wire'), '{:.3f}')}x its size; reconnects "
                f"{sum(r[f'{label}_reconnects'] for r in runs)} | {runs[0]['photo_limit_s']:.2f} "
                f"(raw TCP here: {spread(col('raw_photo_s'))}) | {spread(ratio)} "
                f"(link use {spread(col(f'{label}_util'), '{:.0%}')}) |"
            )
        print(
            f"| {name} | an envelope completed while the photo goes up | applied after "
            f"{spread(col('cold_env_s') + col('warm_env_s'))} s (idle link: {spread(col('idle_env_s'))}) | — | — | — |"
        )


if __name__ == "__main__":
    main()

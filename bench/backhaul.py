"""Backhaul benchmark: the real uplink and bridge across shaped links, against each link's limit.

    sudo .venv/bin/python bench/backhaul.py [--repeat 3] [--links 9.6,16,64,1000,10000]
        [--loss 0,0.01] [--keep-cwnd]

For each link (kbit/s, 300 ms each way: 600 ms RTT, the given packet loss
each way; built as in the link laboratory, ``tests/support/shaped_link.py``;
needs root), in one run:

1. the link checked: connect RTT and a raw TCP bulk transfer (the photo's
   size, at most 30 s of the link): the physical limit as this kernel's
   TCP reaches it, slow start included;
2. 200 completed envelopes (the drain benchmark's, ~1.9 KiB JSON each)
   until all are applied: seconds, bytes on the wire (every byte on the
   gateway's veth, headers included) and their ratio to the JSON, against
   the time those wire bytes take at the link's rate plus one round trip
   (the results' way back);
3. photos (random bytes: 120 KiB at 9.6 kbit/s, 300 KiB at 16, 600 KiB at
   64, 4 MiB above) until central confirmed each, with one completed
   envelope stored a few seconds in (how long it took to be applied while
   the photo went up). Slow links send one; fast ones three: ``cold`` (the
   first on the connection, TCP's window still small), ``warm`` (right
   after) and ``idle`` (after 15 s of silence, longer than the meter's
   10 s window). Seconds, reconnects, wire bytes / photo size, link use
   (the photo's size at the nominal rate over the time taken).

``--keep-cwnd`` sets ``net.ipv4.tcp_slow_start_after_idle = 0`` in the
gateway's namespace (what a site on a long fat link may set; the default
restarts TCP's window after an idle spell); ``--initcwnd N`` starts each
connection's congestion and receive windows at N segments (both ends'
route; Linux's default is 10). The load average (1 min) is
sampled before and after each run and printed with the figures.

Prints each run and a Markdown table: median (min-max) over the repeats.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.shaped_link import lab_peers, probe, shaped_link, unavailable  # noqa: E402

FAST_KBIT = 1000  # from here on: three photos, cold / warm / idle
IDLE_S = 15.0


def photo_size(kbit: float) -> int:
    if kbit < 16:
        return 120 * 1024
    if kbit <= 16:
        return 300 * 1024
    if kbit <= 64:
        return 600 * 1024
    return 4 * 1024 * 1024


def photo_labels(kbit: float) -> tuple[str, ...]:
    return ("cold", "warm", "idle") if kbit >= FAST_KBIT else ("cold",)


def one(kbit: float, loss: float, keep_cwnd: bool, initcwnd: int, workdir: Path) -> dict[str, Any]:
    size = photo_size(kbit)
    out: dict[str, Any] = {"load_before": os.getloadavg()[0]}
    with shaped_link(kbit, delay_ms=300, loss=loss) as link:
        if keep_cwnd:
            subprocess.run(
                link.argv("gw", "sysctl", "-qw", "net.ipv4.tcp_slow_start_after_idle=0"),
                check=True,
            )
        if initcwnd:
            for role in ("gw", "central"):
                subprocess.run(
                    ["ip", "-n", link.ns[role], "route", "change", f"{link.subnet}.0/24",
                     "dev", link.ifname[role], "src", link.addr[role],
                     "initcwnd", str(initcwnd), "initrwnd", str(initcwnd)],
                    check=True,
                )  # fmt: skip
        rate = link.rate_bytes_per_s
        probe_bytes = int(min(size, rate * 30))
        rtt, bulk = probe(link, probe_bytes)
        out["rtt"] = rtt
        out["raw_tcp_use"] = (probe_bytes / rate) / bulk
        out["raw_tcp_s"] = bulk * size / probe_bytes
        deadline = max(300.0, size / rate * 4)
        with lab_peers(link, workdir, deadline_s=deadline) as gw:
            env = gw.run({"envelopes": 200})
            out["env_ok"] = env["done"]
            out["env_s"] = env["seconds"]
            out["env_wire"] = env["wire_up"]
            out["env_json"] = env["json_bytes_sent"]
            # Those bytes at the link's rate, and the round trip central's
            # result needs to come back.
            out["env_limit_s"] = env["wire_up"] / rate + link.rtt_s
            out["env_reconnects"] = env["reconnects"]
            after = min(5.0, size / rate / 4)
            for label in photo_labels(kbit):
                if label == "idle":
                    time.sleep(IDLE_S)
                r = gw.run({"photo": size, "envelope_after_s": after})
                out[f"{label}_s"] = r["seconds"]
                out[f"{label}_ok"] = r["done"]
                out[f"{label}_reconnects"] = r["reconnects"]
                out[f"{label}_wire"] = r["wire_up"] / size
                out[f"{label}_util"] = (size / rate) / r["seconds"]
                if r.get("envelope_during_photo"):
                    out[f"{label}_env_s"] = r.get("envelope_seconds")
            idle = gw.run({"envelope": True})
            out["idle_env_s"] = idle.get("envelope_seconds")
    out["photo_limit_s"] = size / rate
    out["load_after"] = os.getloadavg()[0]
    return out


def spread(values: list[float], fmt: str = "{:.2f}") -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def link_name(kbit: float) -> str:
    return f"{kbit:g} kbit/s" if kbit < 1000 else f"{kbit / 1000:g} Mbit/s"


def table(results: dict[tuple[float, float], list[dict[str, Any]]]) -> None:
    print(
        "| link (600 ms RTT) | loss | what | time s | on the wire | physical limit s | ratio | load |"
    )
    print("| --- | ---: | --- | --- | --- | --- | --- | --- |")
    for (kbit, loss), runs in results.items():
        name = link_name(kbit)
        lost = f"{loss:.0%}"
        load = [r["load_before"] for r in runs] + [r["load_after"] for r in runs]
        load_s = f"{min(load):.1f}-{max(load):.1f}"

        def col(k: str, runs: list[dict[str, Any]] = runs) -> list[float]:
            return [float(r[k]) for r in runs if r.get(k) is not None]

        env_ratio = [r["env_s"] / r["env_limit_s"] for r in runs]
        failed = sum(not r["env_ok"] for r in runs)
        print(
            f"| {name} | {lost} | 200 envelopes applied{f' ({failed} runs failed)' if failed else ''} "
            f"| {spread(col('env_s'))} | "
            f"{spread([r['env_wire'] / 1000 for r in runs], '{:.1f}')} KB "
            f"({spread([r['env_wire'] / r['env_json'] for r in runs], '{:.3f}')}x the JSON); "
            f"reconnects {int(sum(r['env_reconnects'] for r in runs))} | "
            f"{spread(col('env_limit_s'))} for those bytes + 1 RTT | {spread(env_ratio)} | {load_s} |"
        )
        size = photo_size(kbit)
        for label in photo_labels(kbit):
            ratio = [r[f"{label}_s"] / r["photo_limit_s"] for r in runs]
            raw = [r[f"{label}_s"] / r["raw_tcp_s"] for r in runs]
            failed = sum(not r[f"{label}_ok"] for r in runs)
            what = f"{size // 1024} KiB photo" + (f" ({label})" if kbit >= FAST_KBIT else "")
            print(
                f"| {name} | {lost} | {what}{f' ({failed} runs failed)' if failed else ''} | "
                f"{spread(col(f'{label}_s'))} | "
                f"{spread(col(f'{label}_wire'), '{:.3f}')}x its size; reconnects "
                f"{int(sum(r[f'{label}_reconnects'] for r in runs))} | {runs[0]['photo_limit_s']:.1f} "
                f"(raw TCP uses {spread(col('raw_tcp_use'), '{:.0%}')} of the link) | "
                f"{spread(ratio)} (link use {spread(col(f'{label}_util'), '{:.0%}')}; "
                f"{spread(raw, '{:.2f}')}x raw TCP) | {load_s} |"
            )
        during = [v for label in photo_labels(kbit) for v in col(f"{label}_env_s")]
        print(
            f"| {name} | {lost} | an envelope completed while the photo goes up | applied after "
            f"{spread(during)} s ({len(during)} of {len(runs) * len(photo_labels(kbit))} "
            f"applied before the photo finished; idle link: {spread(col('idle_env_s'))} s) "
            f"| — | — | — | {load_s} |"
        )


RUN_LINE = re.compile(r"^run \d+ ([\d.]+) kbit/s loss ([\d.e-]+): (.*)$")


def runs_from(paths: list[str]) -> dict[tuple[float, float], list[dict[str, Any]]]:
    """The runs printed by earlier invocations (``run N … kbit/s loss …: k=v, …`` lines)."""
    results: dict[tuple[float, float], list[dict[str, Any]]] = {}
    for path in paths:
        for line in Path(path).read_text().splitlines():
            m = RUN_LINE.match(line)
            if m is None:
                continue
            r: dict[str, Any] = {}
            for item in m.group(3).split(", "):
                k, v = item.split("=", 1)
                r[k] = {"True": True, "False": False, "None": None}.get(v, v)
                if isinstance(r[k], str):
                    r[k] = float(v)
            results.setdefault((float(m.group(1)), float(m.group(2))), []).append(r)
    return dict(sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--links", default="9.6,16,64,1000,10000", help="kbit/s, comma separated")
    parser.add_argument("--loss", default="0", help="fractions lost each way, comma separated")
    parser.add_argument("--keep-cwnd", action="store_true", help="see the docstring")
    parser.add_argument("--initcwnd", type=int, default=0, help="see the docstring")
    parser.add_argument(
        "--table-from",
        nargs="+",
        metavar="LOG",
        help="only print the table from earlier runs' output",
    )
    args = parser.parse_args()
    why = unavailable()
    if why:
        sys.exit(f"bench/backhaul.py: {why}")
    if args.table_from:
        table(runs_from(args.table_from))
        return
    links = [float(x) for x in args.links.split(",")]
    losses = [float(x) for x in args.loss.split(",")]
    results: dict[tuple[float, float], list[dict[str, Any]]] = {
        (k, p): [] for p in losses for k in links
    }
    print(f"keep-cwnd: {args.keep_cwnd}, initcwnd: {args.initcwnd or 'default'}", flush=True)
    for rep in range(args.repeat):
        for key in results:
            kbit, loss = key
            with tempfile.TemporaryDirectory(prefix="outpost-backhaul-") as tmp:
                try:
                    r = one(kbit, loss, args.keep_cwnd, args.initcwnd, Path(tmp))
                except Exception as exc:  # one failed run must not lose the others
                    kept = Path(tempfile.mkdtemp(prefix="outpost-backhaul-failed-"))
                    for log in Path(tmp).glob("*.log"):
                        shutil.copy(log, kept / log.name)
                    print(f"run {rep + 1} {kbit:g} kbit/s loss {loss:g} failed: {exc!r}; "
                          f"logs in {kept}", flush=True)  # fmt: skip
                    continue
            results[key].append(r)
            print(
                f"run {rep + 1} {kbit:g} kbit/s loss {loss:g}: "
                + ", ".join(
                    f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()
                ),
                flush=True,
            )
    print()
    table(results)


if __name__ == "__main__":
    main()

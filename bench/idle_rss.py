"""Benchmark: what a Pi pays in memory at start — idle RSS of the gateway, against its floor.

Not a test. Starts a real ``outpost-gateway run`` (MQTT on, towards a port
nobody listens on, as a gateway out of coverage; mDNS on or off; no
replication), waits until it answers ``/healthz``, lets it idle, and reads
its resident set size (VmRSS) from /proc. Also measures
``python -c "import gateway.app"`` (what the imports alone cost) and the
floors: a bare ``python -c pass`` of the same interpreter, and the libraries
the gateway cannot run without, imported alone, in the same run.
Each figure is repeated ``--repeat`` times (median, min-max).

Outpost's own modules are byte-compiled first, as ``pip install`` leaves
them on a Pi: a start that compiles its sources (an editable install under
``PYTHONDONTWRITEBYTECODE``, as this machine's checkouts run) holds ~1.4 MiB
more, the compiler's memory.

    .venv/bin/python bench/idle_rss.py [--repeat 5] [--idle 5] [--markdown]
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gateway_ingest import _free_port, start, stop  # noqa: E402

MIB = 1024 * 1024
# What `outpost-gateway run` cannot do without: HTTP, the store, MQTT, the
# contract's models, the scheduler, metrics, password hashing.
LIBS = (
    "import aiohttp.web, sqlalchemy, sqlalchemy.dialects.sqlite, sqlite3, paho.mqtt.client, "
    "pydantic, "
    "zstandard, argon2, prometheus_client, apscheduler.schedulers.asyncio"
)
# Pydantic loads its schema builder only when the first model is made: a floor too.
LIBS_AND_A_MODEL = LIBS + "\nclass M(pydantic.BaseModel):\n    x: int"
RSS_OF_SELF = (
    "import sys\n"
    "{imports}\n"
    "for line in open('/proc/self/status'):\n"
    "    if line.startswith('VmRSS:'):\n"
    "        print(int(line.split()[1]) * 1024)\n"
)


def rss_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def import_rss(imports: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTPOST_")}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run(
        [sys.executable, "-c", RSS_OF_SELF.format(imports=imports)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=ROOT,
    )
    return int(out.stdout.strip())


def gateway_rss(tmp: Path, discovery: bool, idle_s: float) -> int:
    port, mqtt_port = _free_port(), _free_port()
    data = tmp / f"gw-{port}"
    cfg = tmp / f"gw-{port}.toml"
    cfg.write_text(
        f'[gateway]\nid = "site-rss"\ndata_dir = "{data}"\n'
        f'[lan]\nhost = "127.0.0.1"\nport = {port}\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {mqtt_port}\n'
        f"[discovery]\nenabled = {'true' if discovery else 'false'}\n"
        'interfaces = ["127.0.0.1"]\n'
        "[replication]\nenabled = false\n"
    )
    proc = start(
        [sys.executable, "-m", "gateway", "run", "--config", str(cfg)], tmp / f"gw-{port}.log"
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((tmp / f"gw-{port}.log").read_text()[-2000:]) from None
                time.sleep(0.1)
        time.sleep(idle_s)
        return rss_of(proc.pid)
    finally:
        stop(proc)


def summary(values: list[int], floor: float) -> str:
    med = statistics.median(values)
    return (
        f"{med / MIB:.1f} MiB (min {min(values) / MIB:.1f}, max {max(values) / MIB:.1f}; "
        f"{med / floor:.1f}x the bare interpreter)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--idle", type=float, default=5.0, help="seconds idle before reading")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    for package in ("outpost", "gateway"):  # as installed: bytecode next to the sources
        compileall.compile_dir(ROOT / package, quiet=1)
    load = os.getloadavg()
    rows: dict[str, list[int]] = {
        "python -c pass (floor)": [],
        "the libraries a gateway must load (second floor)": [],
        "the libraries and one pydantic model (third floor)": [],
        "python -c 'import gateway.app'": [],
        "python -c 'import gateway.cli'": [],
        "outpost-gateway run, idle, mDNS off": [],
        "outpost-gateway run, idle, mDNS on": [],
    }
    with tempfile.TemporaryDirectory(prefix="outpost-rss-") as work:
        tmp = Path(work)
        for _ in range(args.repeat):
            rows["python -c pass (floor)"].append(import_rss(""))
            rows["the libraries a gateway must load (second floor)"].append(import_rss(LIBS))
            rows["the libraries and one pydantic model (third floor)"].append(
                import_rss(LIBS_AND_A_MODEL)
            )
            rows["python -c 'import gateway.app'"].append(import_rss("import gateway.app"))
            rows["python -c 'import gateway.cli'"].append(import_rss("import gateway.cli"))
            rows["outpost-gateway run, idle, mDNS off"].append(gateway_rss(tmp, False, args.idle))
            rows["outpost-gateway run, idle, mDNS on"].append(gateway_rss(tmp, True, args.idle))
    floor = statistics.median(rows["python -c pass (floor)"])
    after = os.getloadavg()
    if args.markdown:
        print("| process | RSS (median, min-max, x floor) |")
        print("| --- | --- |")
        for name, values in rows.items():
            print(f"| `{name}` | {summary(values, floor)} |")
    else:
        for name, values in rows.items():
            print(f"{name:40s} {summary(values, floor)}")
    print(
        f"\n{args.repeat} runs each, {args.idle:.0f} s idle; load average "
        f"{load[0]:.2f} before, {after[0]:.2f} after ({os.cpu_count()} cores)"
    )


if __name__ == "__main__":
    main()

"""The gateway as Debian's ``avahi-browse`` sees it: a browser no one here wrote.

avahi-daemon runs in a network namespace the test creates (only ``lo``), on a
private D-Bus system bus and a private ``/run`` (``unshare -m`` + tmpfs), so
nothing touches this machine's own avahi, D-Bus or network. Needs root, ``ip``,
``unshare`` and the packages ``avahi-daemon avahi-utils dbus``
(``scripts/ensure-system-deps.sh`` installs them); skipped with the reason
otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.mdns import ADVERTISER, PeerProcess

REPO = Path(__file__).resolve().parents[2]

BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <!-- without this avahi never hears its own bus name and gives up after 25 s -->
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""

AVAHI_CONF = """[server]
use-ipv4=yes
use-ipv6=no
allow-interfaces=lo
enable-dbus=yes
ratelimit-interval-usec=0
[publish]
disable-publishing=yes
"""

# Runs inside the namespace under `unshare -m`: private /run, D-Bus, avahi-daemon,
# then `avahi-browse -p -r` (parseable, resolving) until stdin closes.
AVAHI_BROWSE = r"""
set -eu
here=$1
mount -t tmpfs outpost-test-run /run
mkdir -p /run/dbus /run/avahi-daemon
ip link set lo up
ip link set lo multicast on
dbus-daemon --config-file="$here/bus.conf" --nofork --nopidfile 2>/dev/null & dbus=$!
avahi=; browse=
trap 'kill $browse $avahi $dbus 2>/dev/null; wait' EXIT
for _ in $(seq 200); do [ -S /run/dbus/system_bus_socket ] && break; sleep 0.05; done
avahi-daemon -f "$here/avahi.conf" --no-drop-root --no-chroot --no-rlimits -s & avahi=$!
for _ in $(seq 200); do avahi-browse -t -p _outpost._tcp >/dev/null 2>&1 && break; sleep 0.05; done
echo '{"event": "ready"}'
avahi-browse -p -r -k _outpost._tcp & browse=$!
read -r _ || true
"""


def avahi_unescape(text: str) -> str:
    """avahi-browse -p writes DNS labels with ``\\DDD`` (decimal) escapes."""
    return re.sub(r"\\(\d{3})", lambda m: chr(int(m.group(1))), text)


@pytest.fixture
def avahi_netns(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    if os.geteuid() != 0:
        pytest.skip("avahi-daemon in a private network namespace needs root; avahi test skipped")
    missing = [
        tool
        for tool in ("ip", "unshare", "dbus-daemon", "avahi-daemon", "avahi-browse")
        if shutil.which(tool) is None
    ]
    if missing:
        pytest.skip(
            f"missing {', '.join(missing)}: install avahi-daemon avahi-utils dbus "
            "(scripts/ensure-system-deps.sh does); avahi test skipped"
        )
    ns = f"outpost-avahi-{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", ns], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {made.stderr.strip()}")
    here = tmp_path / "avahi"
    here.mkdir()
    (here / "bus.conf").write_text(BUS_CONF, encoding="utf-8")
    (here / "avahi.conf").write_text(AVAHI_CONF, encoding="utf-8")
    (here / "browse.sh").write_text(AVAHI_BROWSE, encoding="utf-8")
    try:
        yield ns, here
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False, timeout=10)


async def test_avahi_browse_resolves_the_gateway_and_sees_its_goodbye(
    avahi_netns: tuple[str, Path],
) -> None:
    ns, here = avahi_netns
    gateway_id = f"av-{uuid.uuid4().hex[:8]}"
    avahi = await PeerProcess.start(
        "ip", "netns", "exec", ns, "unshare", "-m", "bash", str(here / "browse.sh"), str(here)
    )
    gateway: PeerProcess | None = None
    try:
        await avahi.expect(event="ready")
        config = {
            "gateway": {"id": gateway_id, "site": "Quarry 7"},
            "lan": {"host": "127.0.0.1", "port": 0},
            "discovery": {"interfaces": ["127.0.0.1"]},
        }
        gateway = await PeerProcess.start(
            "ip", "netns", "exec", ns, sys.executable, "-c", ADVERTISER, json.dumps(config),
            env={**os.environ, "PYTHONPATH": str(REPO)},
            cwd=str(REPO),
        )  # fmt: skip
        announced = await gateway.expect(event="announced")
        label = f"Outpost Quarry 7 ({gateway_id})"

        def avahi_line(kind: str) -> Callable[[dict[str, Any]], bool]:
            def matches(event: dict[str, Any]) -> bool:
                text = str(event.get("text", ""))
                parts = text.split(";")
                return text.startswith(f"{kind};lo;IPv4;") and avahi_unescape(parts[3]) == label

            return matches

        resolved = await avahi.expect(event="output", where=avahi_line("="))
        fields = str(resolved["text"]).rstrip("\n").split(";")
        assert fields[4:9] == [
            "_outpost._tcp",
            "local",
            f"outpost-{gateway_id}.local",
            "127.0.0.1",
            str(announced["port"]),
        ]
        txt = set(re.findall(r'"([^"]*)"', fields[9]))
        assert {f"id={gateway_id}", "site=Quarry 7", "api=v1", "path=/"} <= txt

        await gateway.close()  # goodbye
        await avahi.expect(event="output", where=avahi_line("-"))
    finally:
        if gateway is not None:
            await gateway.close()
        await avahi.close()

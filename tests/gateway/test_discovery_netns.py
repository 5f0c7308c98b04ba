"""mDNS with real multicast between two network namespaces joined by a veth pair.

The test creates the namespaces (``ip netns add``) with 10.x addresses that
exist only inside them and removes them after: nothing is multicast on this
machine's real interfaces. Needs root and ``ip``; skipped with the reason
otherwise.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.mdns import ADVERTISER, THIRD_PARTY_BROWSER, PeerProcess

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class NetnsPair:
    ns_a: str
    ns_b: str
    if_a: str
    if_b: str
    addr_a: str
    addr_b: str
    subnet: str  # "10.x.y"

    def exec_argv(self, ns: str, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", ns, *argv]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


@pytest.fixture
def netns_pair() -> Iterator[NetnsPair]:
    if os.geteuid() != 0:
        pytest.skip(
            "creating network namespaces needs root (ip netns add); mDNS netns test skipped"
        )
    if shutil.which("ip") is None:
        pytest.skip("the `ip` command (iproute2) is missing; mDNS netns test skipped")
    tag = uuid.uuid4().hex[:6]
    subnet = f"10.{random.randint(200, 250)}.{random.randint(0, 255)}"
    pair = NetnsPair(
        ns_a=f"outpost-mdns-{tag}-a",
        ns_b=f"outpost-mdns-{tag}-b",
        if_a=f"opm{tag}a",
        if_b=f"opm{tag}b",
        addr_a=f"{subnet}.1",
        addr_b=f"{subnet}.2",
        subnet=subnet,
    )
    made: list[str] = []
    try:
        for ns in (pair.ns_a, pair.ns_b):
            _ip("netns", "add", ns)
            made.append(ns)
        make_link(pair)
        for ns in made:
            _ip("-n", ns, "link", "set", "lo", "up")
    except subprocess.CalledProcessError as exc:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
        pytest.skip(f"cannot create network namespaces here: {exc.stderr.strip() or exc}")
    try:
        yield pair
    finally:
        for ns in made:  # deleting a namespace deletes its end of the veth pair too
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True, timeout=10)


def gateway_config(gateway_id: str, site: str, interfaces: list[str], poll_s: float = 0.2) -> str:
    return json.dumps(
        {
            "gateway": {"id": gateway_id, "site": site},
            "lan": {"host": "0.0.0.0", "port": 0},
            "discovery": {"interfaces": interfaces, "address_poll_s": poll_s},
        }
    )


def make_link(pair: NetnsPair) -> None:
    """The veth pair between the namespaces, addressed and up."""
    _ip(
        "link",
        "add",
        pair.if_a,
        "netns",
        pair.ns_a,
        "type",
        "veth",
        "peer",
        "name",
        pair.if_b,
        "netns",
        pair.ns_b,
    )
    for ns, ifname, addr in (
        (pair.ns_a, pair.if_a, pair.addr_a),
        (pair.ns_b, pair.if_b, pair.addr_b),
    ):
        _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", ifname)
        _ip("-n", ns, "link", "set", ifname, "up")


async def start_in(pair: NetnsPair, ns: str, *argv: str) -> PeerProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return await PeerProcess.start(*pair.exec_argv(ns, *argv), env=env, cwd=str(REPO))


async def run_in(pair: NetnsPair, ns: str, *argv: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *pair.exec_argv(ns, *argv),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=str(REPO),
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_discover_in_one_namespace_finds_the_gateway_in_the_other(
    netns_pair: NetnsPair,
) -> None:
    pair = netns_pair
    gateway_id = f"ns-{uuid.uuid4().hex[:8]}"
    gateway = await start_in(
        pair,
        pair.ns_a,
        sys.executable,
        "-c",
        ADVERTISER,
        gateway_config(gateway_id, "Pit 3", [pair.if_a]),
    )
    try:
        announced = await gateway.expect(event="announced")
        assert announced["addresses"] == [pair.addr_a]

        # the technician's command, run on the other side of the link (browsing for its
        # default 3 s: 1.5 s is a tight window for both processes on a loaded machine)
        rc, out, err = await run_in(
            pair, pair.ns_b, sys.executable, "-m", "gateway.mdns_browser",
            "--timeout", "3", "--interface", pair.addr_b,
        )  # fmt: skip
        assert rc == 0, err
        header, row = out.splitlines()
        assert header.split() == ["ID", "SITE", "ADDRESS", "PORT", "HOST"]
        port = str(announced["port"])
        assert row.split() == [
            gateway_id,
            "Pit",
            "3",
            pair.addr_a,
            port,
            f"outpost-{gateway_id}.local",
        ]

        # the advertised address serves the web app across the link
        rc, out, err = await run_in(
            pair, pair.ns_b, sys.executable, "-c",
            "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=30).read().decode())",
            f"http://{pair.addr_a}:{port}/",
        )  # fmt: skip
        assert (rc, out.strip()) == (0, "outpost web app"), err
    finally:
        await gateway.close()


async def test_address_change_is_reannounced_and_stop_says_goodbye(netns_pair: NetnsPair) -> None:
    pair = netns_pair
    gateway_id = f"ns-{uuid.uuid4().hex[:8]}"
    browser = await start_in(
        pair,
        pair.ns_b,
        sys.executable,
        "-c",
        THIRD_PARTY_BROWSER,
        pair.addr_b,
        "_outpost._tcp.local.",
    )
    gateway = await start_in(
        pair,
        pair.ns_a,
        sys.executable,
        "-c",
        ADVERTISER,
        gateway_config(gateway_id, "Pit 4", [pair.if_a]),
    )
    try:
        await browser.expect(event="browsing")
        announced = await gateway.expect(event="announced")
        name = next(n for n in announced["names"] if n.endswith("._outpost._tcp.local."))
        added = await browser.expect(event="added", name=name)
        assert added["addresses"] == [pair.addr_a]

        # DHCP hands the gateway a new address: the browser learns it without a restart
        new_addr = f"{pair.subnet}.3"
        # (as DHCP clients do: the new address is kept when the old primary goes)
        subprocess.run(
            [
                *pair.exec_argv(pair.ns_a, "sysctl", "-qw"),
                f"net.ipv4.conf.{pair.if_a}.promote_secondaries=1",
            ],
            check=True,
            timeout=10,
        )
        _ip("-n", pair.ns_a, "addr", "add", f"{new_addr}/24", "dev", pair.if_a)
        _ip("-n", pair.ns_a, "addr", "del", f"{pair.addr_a}/24", "dev", pair.if_a)
        # the re-announcement reaches the browser at once; its cache-flush bit
        # retires the old address within 1 s (RFC 6762 10.2)
        await browser.expect(event="updated", name=name, where=lambda e: new_addr in e["addresses"])
        # A poll between the add and the delete announces both first; ask afresh
        # once the gateway has announced the new address alone.
        await gateway.expect(event="addresses", where=lambda e: e["addresses"] == [new_addr])
        rc, out, err = await run_in(
            pair, pair.ns_b, sys.executable, "-m", "gateway.mdns_browser",
            "--timeout", "3", "--interface", pair.addr_b, "--json",
        )  # fmt: skip
        assert rc == 0, err
        assert [g["addresses"] for g in json.loads(out)] == [[new_addr]]

        await gateway.close()  # stdin closed: runner cleanup -> goodbye
        await browser.expect(event="removed", name=name)
    finally:
        await gateway.close()
        await browser.close()


async def test_a_replugged_interface_is_announced_again(netns_pair: NetnsPair) -> None:
    """A USB adapter pulled and plugged back: same name and address, new interface
    (its multicast memberships are gone). The gateway must be found again."""
    pair = netns_pair
    gateway_id = f"ns-{uuid.uuid4().hex[:8]}"
    gateway = await start_in(
        pair, pair.ns_a, sys.executable, "-c", ADVERTISER,
        gateway_config(gateway_id, "Pit 5", [pair.if_a], poll_s=0.5),
    )  # fmt: skip
    browser: PeerProcess | None = None
    try:
        announced = await gateway.expect(event="announced")
        _ip("-n", pair.ns_a, "link", "del", pair.if_a)  # takes its peer along
        make_link(pair)
        # a browser on the new link hears the gateway only if it re-joined the group
        browser = await start_in(
            pair,
            pair.ns_b,
            sys.executable,
            "-c",
            THIRD_PARTY_BROWSER,
            pair.addr_b,
            "_outpost._tcp.local.",
        )
        name = next(n for n in announced["names"] if n.endswith("._outpost._tcp.local."))
        added = await browser.expect(event="added", name=name)
        assert added["addresses"] == [pair.addr_a]
    finally:
        if browser is not None:
            await browser.close()
        await gateway.close()


async def test_two_gateways_with_one_name_are_kept_apart(netns_pair: NetnsPair) -> None:
    pair = netns_pair
    gateway_id = f"ns-{uuid.uuid4().hex[:8]}"
    first = await start_in(
        pair,
        pair.ns_a,
        sys.executable,
        "-c",
        ADVERTISER,
        gateway_config(gateway_id, "Twin", [pair.addr_a]),
    )
    second: PeerProcess | None = None
    try:
        first_names = (await first.expect(event="announced"))["names"]
        second = await start_in(
            pair,
            pair.ns_b,
            sys.executable,
            "-c",
            ADVERTISER,
            gateway_config(gateway_id, "Twin", [pair.addr_b]),
        )
        second_names = (await second.expect(event="announced"))["names"]
        assert first_names == [
            f"Outpost Twin ({gateway_id})._outpost._tcp.local.",
            f"Outpost Twin ({gateway_id})._http._tcp.local.",
        ]
        assert second_names == [
            f"Outpost Twin ({gateway_id})-2._outpost._tcp.local.",
            f"Outpost Twin ({gateway_id})-2._http._tcp.local.",
        ]
    finally:
        if second is not None:
            await second.close()
        await first.close()


async def test_real_gateway_run_is_found_serves_its_qr_and_says_goodbye_on_sigterm(
    netns_pair: NetnsPair, tmp_path: Path
) -> None:
    """`outpost-gateway run` in one namespace; a technician's laptop in the other."""
    pair = netns_pair
    gateway_id = f"ns-{uuid.uuid4().hex[:8]}"
    config = tmp_path / "gateway.toml"
    config.write_text(
        f"""
[gateway]
id = "{gateway_id}"
site = "Substation 9"
data_dir = "{tmp_path / "data"}"
[lan]
host = "0.0.0.0"
port = 8080
[mqtt]
enabled = false
[discovery]
interfaces = ["{pair.if_a}"]
""",
        encoding="utf-8",
    )
    browser = await start_in(
        pair, pair.ns_b, sys.executable, "-c", THIRD_PARTY_BROWSER, pair.addr_b, "_http._tcp.local."
    )
    gateway = await start_in(
        pair, pair.ns_a, sys.executable, "-m", "gateway", "run", "--config", str(config)
    )
    try:
        await browser.expect(event="browsing")
        # a generic DNS-SD browser finds the web app: _http._tcp with path=/
        added = await browser.expect(
            event="added", where=lambda e: e.get("props", {}).get("id") == gateway_id
        )
        assert (added["addresses"], added["port"]) == ([pair.addr_a], 8080)
        assert added["props"]["path"] == "/"
        assert added["server"] == f"outpost-{gateway_id}.local."

        # at once, from the other side: the technician's command, and the status
        # page's QR code (it names the address the phone reached the gateway by)
        (rc, out, err), (qr_rc, qr_out, qr_err) = await asyncio.gather(
            run_in(
                pair, pair.ns_b, sys.executable, "-m", "gateway", "discover",
                "--timeout", "3", "--interface", pair.addr_b, "--json",
            ),
            run_in(
                pair, pair.ns_b, sys.executable, "-c",
                "import urllib.request, sys; r = urllib.request.urlopen(sys.argv[1], timeout=30); "
                "print(r.headers['Content-Type']); print(r.read().decode())",
                f"http://{pair.addr_a}:8080/qr.svg",
            ),
        )  # fmt: skip
        assert rc == 0, err
        (found,) = [g for g in json.loads(out) if g["gateway_id"] == gateway_id]
        assert (found["site"], found["url"]) == ("Substation 9", f"http://{pair.addr_a}:8080/")

        rc, out, err = qr_rc, qr_out, qr_err
        assert rc == 0, err
        content_type, svg = out.split("\n", 1)
        assert content_type.startswith("image/svg+xml")
        assert f"<title>http://{pair.addr_a}:8080/</title>" in svg

        assert gateway.proc.pid is not None
        # SIGTERM to the gateway (the child of `ip netns exec`, which execs it)
        gateway.proc.send_signal(signal.SIGTERM)
        await browser.expect(event="removed", name=added["name"])
        assert await asyncio.wait_for(gateway.proc.wait(), 30) == 0
    finally:
        await gateway.close()
        await browser.close()

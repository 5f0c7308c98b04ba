"""A shaped link between two network namespaces: the link laboratory.

``shaped_link(rate_kbit, delay_ms, loss)`` makes two namespaces (``gw`` and
``central``) joined by a veth pair with 10.x addresses that exist only inside
them, and shapes both directions the way this kernel allows (no
``sch_netem`` here, see PITFALLS.md):

- rate: ``tc qdisc … tbf`` on each veth end (egress);
- delay: an iptables-legacy ``NFQUEUE`` rule on each end's ingress and
  :mod:`tests.support.nfqueue_delay` holding every packet ``delay_ms``
  (one way) before accepting it;
- loss: iptables-legacy ``-m statistic --mode random`` dropping a fraction
  of the packets arriving on each end.

Everything runs inside the namespaces; nothing is sent on the machine's
real interfaces. Whatever happens, leaving the context stops the processes
it started (by their pids) and deletes both namespaces (which takes the
veth pair and the rules with them). Needs root, ``ip``, ``tc`` and
``iptables-legacy``; :func:`unavailable` says why not, for a skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DELAY_DAEMON = Path(__file__).resolve().parent / "nfqueue_delay.py"
IPTABLES = shutil.which("iptables-legacy") or "/usr/sbin/iptables-legacy"


def unavailable() -> str | None:
    """Why a shaped link cannot be built here (None when it can)."""
    if os.geteuid() != 0:
        return "building network namespaces and shaping their link needs root"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            return f"the `{tool}` command (iproute2) is missing"
    if not Path(IPTABLES).exists():
        return "iptables-legacy is missing (apt-get install iptables)"
    return None


def _run(*argv: str, timeout: float = 15) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


@dataclass
class ShapedLink:
    rate_kbit: float
    delay_ms: float  # one way
    loss: float
    tag: str
    subnet: str
    ns: dict[str, str] = field(default_factory=dict)  # role -> namespace name
    ifname: dict[str, str] = field(default_factory=dict)
    addr: dict[str, str] = field(default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def rate_bytes_per_s(self) -> float:
        return self.rate_kbit * 1000 / 8

    @property
    def rtt_s(self) -> float:
        return 2 * self.delay_ms / 1000

    def argv(self, role: str, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns[role], *argv]

    def popen(self, role: str, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        """Start a process inside ``role``'s namespace; stopped when the link goes."""
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(self.argv(role, *argv), env=env, cwd=str(REPO), **kwargs)  # type: ignore[call-overload]
        self.procs.append(proc)
        return proc  # type: ignore[no-any-return]

    def python(self, role: str, *argv: str, **kwargs: object) -> subprocess.Popen[bytes]:
        return self.popen(role, [sys.executable, *argv], **kwargs)

    def counters(self, role: str) -> tuple[int, int]:
        """(tx_bytes, rx_bytes) of ``role``'s veth end: every byte on the wire, headers too."""
        out = _run("ip", "-n", self.ns[role], "-s", "-j", "link", "show", "dev", self.ifname[role])
        stats = json.loads(out)[0]["stats64"]
        return int(stats["tx"]["bytes"]), int(stats["rx"]["bytes"])

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def close(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                self.stop(proc)
        self.procs.clear()
        for name in self.ns.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=15)


def _setup(link: ShapedLink) -> None:
    for role in ("gw", "central"):
        name = f"outpost-lab-{link.tag}-{role}"
        _run("ip", "netns", "add", name)
        link.ns[role] = name
        link.ifname[role] = f"opl{link.tag}{role[0]}"
    link.addr = {"gw": f"{link.subnet}.1", "central": f"{link.subnet}.2"}
    _run(
        "ip",
        "link",
        "add",
        link.ifname["gw"],
        "netns",
        link.ns["gw"],
        "type",
        "veth",
        "peer",
        "name",
        link.ifname["central"],
        "netns",
        link.ns["central"],
    )
    rate = link.rate_bytes_per_s
    # One MTU of burst at low rates (a packet at a time, as a modem sends);
    # a few ms of it at high rates, where the timer cannot tick per packet.
    burst = max(1600, int(rate * 0.004))
    # The queue a modem holds before dropping: at least 48 kB (as measured
    # on GPRS-class links), or 300 ms of the rate.
    limit = max(48_000, int(rate * float(os.environ.get("LAB_Q", "0.3"))))
    for role in ("gw", "central"):
        ns, dev = link.ns[role], link.ifname[role]
        _run("ip", "-n", ns, "addr", "add", f"{link.addr[role]}/24", "dev", dev)
        _run("ip", "-n", ns, "link", "set", dev, "up")
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        # Segmentation offload would hand tbf 64 kB super-packets.
        subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                ns,
                "ethtool",
                "-K",
                dev,
                "tso",
                "off",
                "gso",
                "off",
                "gro",
                "off",
            ],
            capture_output=True,
            timeout=10,
        )
        _run(
            "tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf",
            "rate", f"{int(link.rate_kbit * 1000)}bit", "burst", str(burst), "limit", str(limit),
        )  # fmt: skip
        ipt = ["ip", "netns", "exec", ns, IPTABLES, "-w", "5"]
        if link.loss > 0:
            _run(
                *ipt, "-t", "mangle", "-A", "PREROUTING", "-i", dev, "-m", "statistic",
                "--mode", "random", "--probability", f"{link.loss:.4f}", "-j", "DROP",
            )  # fmt: skip
        if link.delay_ms > 0:
            _run(*ipt, "-t", "mangle", "-A", "PREROUTING", "-i", dev, "-j", "NFQUEUE",
                 "--queue-num", "0")  # fmt: skip
    if link.delay_ms > 0:
        for role in ("gw", "central"):
            proc = link.python(
                role,
                str(DELAY_DAEMON),
                "--queue",
                "0",
                "--delay-ms",
                str(link.delay_ms),
                "--seconds",
                "3600",
                stdout=subprocess.PIPE,
            )
            assert proc.stdout is not None
            line = proc.stdout.readline().decode().strip()
            if line != "ready":
                raise RuntimeError(f"the delay daemon in {role} did not start ({line!r})")


@contextlib.contextmanager
def shaped_link(rate_kbit: float, delay_ms: float = 300, loss: float = 0.0) -> Iterator[ShapedLink]:
    """See the module docstring. Raises RuntimeError when the link cannot be built."""
    link = ShapedLink(
        rate_kbit=rate_kbit,
        delay_ms=delay_ms,
        loss=loss,
        tag=uuid.uuid4().hex[:6],
        subnet=f"10.{random.randint(200, 250)}.{random.randint(0, 255)}",
    )
    try:
        _setup(link)
        yield link
    finally:
        link.close()


PROBE = r"""
import socket, sys, time
host, port, nbytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
t0 = time.monotonic()
s = socket.create_connection((host, port), timeout=30)
rtt = time.monotonic() - t0
s.settimeout(None)  # a slow link takes minutes for the bulk part
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
t1 = time.monotonic()
s.sendall(b"x" * nbytes)
s.shutdown(socket.SHUT_WR)
s.recv(1)
print(rtt, time.monotonic() - t1, flush=True)
"""
SINK = r"""
import socket, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", int(sys.argv[1]))); srv.listen(1); print("ready", flush=True)
c, _ = srv.accept()
while c.recv(1 << 16): pass
c.sendall(b"k"); c.close()
"""


def probe(link: ShapedLink, nbytes: int, port: int = 9009) -> tuple[float, float]:
    """Check the link before measuring: (connect RTT, seconds to move ``nbytes`` up)."""
    sink = link.python("central", "-c", SINK, str(port), stdout=subprocess.PIPE)
    assert sink.stdout is not None
    sink.stdout.readline()
    out = subprocess.run(
        link.argv("gw", sys.executable, "-c", PROBE, link.addr["central"], str(port), str(nbytes)),
        capture_output=True,
        text=True,
        timeout=max(60.0, nbytes / link.rate_bytes_per_s * 3 + 10),
    )
    link.stop(sink)
    rtt, bulk = (float(x) for x in out.stdout.split())
    return rtt, bulk


def wait_listening(link: ShapedLink, role: str, port: int, timeout: float = 20) -> None:
    """Wait until something listens on ``port`` inside ``role``'s namespace."""
    deadline = time.monotonic() + timeout
    code = (
        "import socket,sys\n"
        "s=socket.socket();s.settimeout(0.5)\n"
        f"sys.exit(s.connect_ex(('127.0.0.1',{port})))\n"
    )
    while time.monotonic() < deadline:
        if (
            subprocess.run(
                link.argv(role, sys.executable, "-c", code), capture_output=True
            ).returncode
            == 0
        ):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port} in {role} after {timeout}s")


LAB_PEERS = Path(__file__).resolve().parent / "lab_peers.py"


def _read_json(proc: subprocess.Popen[bytes], what: str, timeout: float) -> dict[str, object]:
    import select as _select

    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = _select.select([proc.stdout], [], [], 1.0)
        if ready:
            line = proc.stdout.readline()
            if not line:
                break
            with contextlib.suppress(ValueError):
                value = json.loads(line)
                if isinstance(value, dict):
                    return value
        elif proc.poll() is not None:
            break
    raise RuntimeError(f"{what} gave no answer in {timeout:.0f}s (exit {proc.poll()})")


@contextlib.contextmanager
def lab_peers(
    link: ShapedLink, workdir: Path, mqtt: dict[str, object] | None = None, deadline_s: float = 600
) -> Iterator[LabGateway]:
    """Central (broker + bridge) in one namespace, a gateway uplink in the other, connected."""
    central_dir, gw_dir = workdir / "central", workdir / "gw"
    central_dir.mkdir(parents=True)
    gw_dir.mkdir(parents=True)
    log = open(workdir / "central.log", "wb")  # noqa: SIM115
    central = link.python(
        "central", str(LAB_PEERS), "central", str(central_dir),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
    )  # fmt: skip
    gateway: subprocess.Popen[bytes] | None = None
    try:
        seeded = _read_json(central, "central", 120)
        spec = {
            "workdir": str(gw_dir),
            "host": link.addr["central"],
            "activities": seeded["activities"],
            "mqtt": mqtt or {},
            "deadline_s": deadline_s,
        }
        gw_log = open(workdir / "gateway.log", "wb")  # noqa: SIM115
        gateway = link.python(
            "gw", str(LAB_PEERS), "gateway", json.dumps(spec),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=gw_log,
        )  # fmt: skip
        _read_json(gateway, "the gateway (connect and central's user snapshot)", deadline_s)
        yield LabGateway(link, gateway, deadline_s)
    finally:
        # Both ends stop on their own when their stdin closes: at once, not in turn.
        ends = [p for p in (gateway, central) if p is not None]
        for proc in ends:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
        for proc in ends:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(20)
        log.close()


@dataclass
class LabGateway:
    link: ShapedLink
    proc: subprocess.Popen[bytes]
    deadline_s: float

    def run(self, command: dict[str, object]) -> dict[str, object]:
        """Run one command; the result has ``wire_up``/``wire_down``: bytes on the veth."""
        assert self.proc.stdin is not None
        tx0, rx0 = self.link.counters("gw")
        self.proc.stdin.write((json.dumps(command) + "\n").encode())
        self.proc.stdin.flush()
        result = _read_json(self.proc, "the gateway", self.deadline_s + 30)
        tx1, rx1 = self.link.counters("gw")
        result["wire_up"] = tx1 - tx0
        result["wire_down"] = rx1 - rx0
        return result

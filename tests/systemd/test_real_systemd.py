"""The installed unit under a real systemd: READY, sandbox, credentials, watchdog.

systemd boots as PID 1 of private namespaces (tests/systemd/boot_systemd.sh),
Outpost is installed there by scripts/install.sh with a real provisioning
bundle, and the hardened outpost-gateway.service starts the real gateway.
Then the test stalls the gateway's event loop and watches systemd's watchdog
kill it (SIGABRT, faulthandler's stacks in the journal) and restart it.

Needs root, util-linux's unshare/nsenter, overlayfs, and Debian's
/usr/bin/python3 of this Python's minor version (ProtectHome= hides a venv
interpreter living under /root, so the unit runs Debian's Python with this
checkout and venv on its path). Skips with a reason otherwise.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SYSTEM_PYTHON = Path("/usr/bin/python3")
SYSTEMD = Path("/lib/systemd/systemd")
SCRIPTS = {
    "outpost-gateway": "gateway.cli",
    "outpost-bridge": "cloud_bridge.cli",
    "outpost-provision": "provisioning.cli",
}


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root (namespaces, overlayfs)"
    for tool in ("unshare", "nsenter", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is missing"
    if not SYSTEMD.exists():
        return "systemd is not installed"
    if not SYSTEM_PYTHON.exists():
        return "no /usr/bin/python3"
    minor = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    if minor != str(sys.version_info[:2]):
        return f"/usr/bin/python3 is {minor}, the venv is {sys.version_info[:2]}"
    probe = subprocess.run(
        ["unshare", "--mount", "sh", "-c", "mount -t tmpfs t /mnt && mount --make-rshared /"],
        capture_output=True,
    )
    if probe.returncode != 0:
        return "cannot mount in a private mount namespace here"
    return None


WHY_NOT = _why_not()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")


def _make_venv(opt: Path) -> None:
    """/opt/outpost/venv as the unit sees it: Debian's Python + this checkout."""
    venv = opt / "venv"
    subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3.*/site-packages"))
    purelib = sysconfig.get_paths()["purelib"]
    # The units run with PrivateTmp: a checkout under /tmp (a CI clone) is
    # reached through the bind mount boot_systemd.sh makes at /opt/outpost-src.
    src = "/opt/outpost-src"
    if Path(purelib).is_relative_to(REPO):
        purelib = f"{src}/{Path(purelib).relative_to(REPO)}"
    # The last line arms the test-only SIGUSR2 stall (tests/support/stall.py)
    # in the processes whose unit sets OUTPOST_TEST_STALL_SIGNAL=1.
    (site / "outpost-checkout.pth").write_text(
        f"{src}\nimport site; site.addsitedir({purelib!r})\n"
        "import tests.support.stall; tests.support.stall.arm()\n"
    )
    for name, module in SCRIPTS.items():
        script = venv / "bin" / name
        script.write_text(
            f"#!/opt/outpost/venv/bin/python\nimport sys\nfrom {module} import main\n"
            "sys.exit(main())\n"
        )
        script.chmod(0o755)


@dataclass
class Machine:
    pid: int  # systemd, PID 1 inside

    def run(self, *cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["nsenter", "-t", str(self.pid), "-a", *cmd], capture_output=True, text=True
        )

    def show(self, unit: str) -> dict[str, str]:
        out = self.run(
            "systemctl", "show", unit,
            "-p", "ActiveState,SubState,MainPID,NRestarts,StatusText,Result",
        ).stdout  # fmt: skip
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str) -> str:
        return self.run("journalctl", "-u", unit, "--no-pager", "-o", "cat").stdout

    def wait(
        self,
        what: str,
        cond: Callable[[], bool],
        timeout: float = 60.0,
        unit: str = "outpost-gateway.service",
    ) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                state = self.show(unit)
                tail = self.journal(unit)[-3000:]
                raise AssertionError(f"timed out waiting for {what}; {state}\n{tail}")
            time.sleep(0.2)


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machine]:
    """One booted machine for this module's tests (a boot costs ~5 s)."""
    tmp_path = tmp_path_factory.mktemp("machine")
    opt = tmp_path / "opt"
    opt.mkdir()
    _make_venv(opt)
    provision = [str(Path(sys.executable).with_name("outpost-provision"))]
    fleet, bundle = tmp_path / "fleet", tmp_path / "site-sd.bundle"
    for args in (
        ["init-ca", "--dir", str(fleet)],
        ["add-gateway", "site-sd", "--site", "Site SD", "--broker", "central.invalid:8883",
         "--dir", str(fleet), "--out", str(bundle)],
    ):  # fmt: skip
        subprocess.run([*provision, *args], check=True, capture_output=True)
    # The bridge's bundle where the machine sees it: /opt/outpost/central.bundle.
    subprocess.run(
        [*provision, "add-bridge", "--broker", "127.0.0.1:8883", "--dir", str(fleet),
         "--out", str(opt / "central.bundle")],
        check=True, capture_output=True,
    )  # fmt: skip
    log = (tmp_path / "boot.log").open("wb")
    unshare = subprocess.Popen(
        ["unshare", "--fork", "--pid", "--mount", "--net", "--uts", "--ipc", "--cgroup",
         str(HERE / "boot_systemd.sh"), str(tmp_path), str(REPO), str(bundle)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        children = Path(f"/proc/{unshare.pid}/task/{unshare.pid}/children")
        deadline = time.monotonic() + 30
        pid = 0
        while pid == 0:
            assert unshare.poll() is None, (tmp_path / "boot.log").read_text()
            assert time.monotonic() < deadline, "systemd did not come up"
            kids = children.read_text().split()
            if kids and Path(f"/proc/{kids[0]}/comm").read_text().strip() == "systemd":
                pid = int(kids[0])
            else:
                time.sleep(0.05)
        m = Machine(pid)
        m.wait("systemd's manager", lambda: m.run("systemctl", "is-system-running").stdout != "")
        yield m
    finally:
        # Killing PID 1 of the namespace ends every process in it.
        if unshare.poll() is None:
            for p in Path(f"/proc/{unshare.pid}/task/{unshare.pid}/children").read_text().split():
                os.kill(int(p), signal.SIGKILL)
        unshare.wait(timeout=30)
        log.close()


def test_hardened_unit_serves_and_the_watchdog_restarts_a_stalled_gateway(
    machine: Machine,
) -> None:
    unit = "outpost-gateway.service"
    # Type=notify: "active" only after READY=1, which carries the status line.
    machine.wait("READY", lambda: machine.show(unit).get("ActiveState") == "active")
    state = machine.show(unit)
    assert state["StatusText"] == "gateway site-sd serving on http://0.0.0.0:8080"
    first_pid = state["MainPID"]
    healthz = machine.run(
        str(SYSTEM_PYTHON), "-c",
        "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8080/healthz').status)",
    )  # fmt: skip
    assert healthz.stdout.strip() == "200", healthz.stderr
    # Sandboxed as the unit says: the outpost user, no capabilities, no new privileges.
    status = machine.run("cat", f"/proc/{first_pid}/status").stdout
    assert "CapEff:\t0000000000000000" in status and "NoNewPrivs:\t1" in status
    uid = machine.run("id", "-u", "outpost").stdout.strip()
    assert f"Uid:\t{uid}\t" in status
    # The key came in as a credential and the uplink is trying the (unreachable) broker.
    machine.wait("the uplink", lambda: "central.invalid" in machine.journal(unit))
    journal = machine.journal(unit)
    assert "not readable" not in journal
    # systemd itself had nothing to complain about in the unit.
    assert "ignoring" not in journal.lower(), journal

    # Stall the event loop (test-only hook): pings stop, systemd kills and restarts.
    assert (
        machine.run("systemctl", "kill", "-s", "SIGUSR2", "--kill-whom=main", unit).returncode == 0
    )
    machine.wait(
        "a watchdog restart",
        lambda: (
            (s := machine.show(unit))["NRestarts"] == "1"
            and s["ActiveState"] == "active"
            and s["MainPID"] not in ("0", first_pid)
        ),
    )
    journal = machine.journal(unit)
    assert "Watchdog timeout" in journal
    assert "in stall" in journal  # faulthandler: the main thread's stack at SIGABRT

    # A clean stop is not a failure: STOPPING=1, exit 0.
    assert machine.run("systemctl", "stop", unit).returncode == 0
    state = machine.show(unit)
    assert state["ActiveState"] == "inactive" and state["Result"] == "success", state


def test_bridge_unit_installs_and_serves_under_systemd(machine: Machine) -> None:
    unit = "outpost-bridge.service"
    installed = machine.run(
        "bash", f"{REPO}/scripts/install.sh", "--no-venv", "--bridge", "--no-gateway",
        "--bundle", "/opt/outpost/central.bundle",
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    assert f"{unit} started" in installed.stdout
    machine.wait(
        "the bridge's READY", lambda: machine.show(unit).get("ActiveState") == "active", unit=unit
    )
    assert machine.show(unit)["StatusText"] == "bridge admin API on http://127.0.0.1:8090"
    answer = machine.run(
        str(SYSTEM_PYTHON), "-c",
        "import urllib.request as u, urllib.error as e\n"
        "try: u.urlopen('http://127.0.0.1:8090/api/v1/gateways')\n"
        "except e.HTTPError as x: print(x.code)",
    )  # fmt: skip
    assert answer.stdout.strip() == "401", answer.stderr  # served, and a token is required
    assert machine.run("systemctl", "stop", unit).returncode == 0
    assert machine.show(unit)["Result"] == "success"


def test_uninstall_under_systemd_stops_and_keeps_data(machine: Machine) -> None:
    """Last in this module: the way back, on the running machine."""
    result = machine.run("bash", f"{REPO}/scripts/uninstall.sh")
    assert result.returncode == 0, result.stderr
    assert "kept /var/lib/outpost" in result.stdout
    for unit in ("outpost-gateway.service", "outpost-bridge.service"):
        assert machine.run("systemctl", "is-active", unit).stdout.strip() in ("inactive", "")
        assert machine.run("test", "-e", f"/etc/systemd/system/{unit}").returncode == 1
    for kept in ("/var/lib/outpost/gateway.db", "/etc/outpost/gateway.toml",
                 "/etc/outpost/tls/gateway.key"):  # fmt: skip
        assert machine.run("test", "-f", kept).returncode == 0, kept
    assert machine.run("id", "outpost").returncode == 0


def test_purge_under_systemd_removes_data_and_user(machine: Machine) -> None:
    result = machine.run("bash", f"{REPO}/scripts/uninstall.sh", "--purge")
    assert result.returncode == 0, result.stderr
    for gone in ("/var/lib/outpost", "/etc/outpost"):
        assert machine.run("test", "-e", gone).returncode == 1, gone
    assert machine.run("id", "outpost").returncode != 0

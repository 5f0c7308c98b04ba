"""`outpost-provision`: what each command writes, says, and refuses."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from cryptography import x509

from gateway.config import GatewayConfig
from outpost.config import load_config
from outpost.tls import check_credentials
from provisioning.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def fleet_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    d = tmp_path / "fleet"
    assert run(capsys, "init-ca", "--dir", str(d))[0] == 0
    return d


def test_init_ca_writes_a_p256_ca_with_a_private_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "fleet"
    rc, out, err = run(capsys, "init-ca", "--dir", str(d), "--name", "Acme")
    assert rc == 0 and err == ""
    assert len(out.splitlines()) == 2 and "fingerprint" in out
    assert mode(d / "ca.key") == 0o600
    assert mode(d) == 0o700
    ca = x509.load_pem_x509_certificate((d / "ca.crt").read_bytes())
    assert ca.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert (d / "crl.pem").exists()


def test_init_ca_refuses_to_replace_a_ca(
    fleet_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (fleet_dir / "ca.key").read_bytes()
    rc, out, err = run(capsys, "init-ca", "--dir", str(fleet_dir))
    assert rc == 1 and out == ""
    assert err.count("\n") == 1 and "already holds a fleet CA" in err
    assert (fleet_dir / "ca.key").read_bytes() == before


def test_add_gateway_writes_one_bundle_with_a_ready_config(
    fleet_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_file = tmp_path / "site-a.bundle"
    rc, out, err = run(
        capsys,
        "add-gateway",
        "site-a",
        "--site",
        'North "A"',
        "--broker",
        "mq.example.org:8883",
        "--dir",
        str(fleet_dir),
        "--out",
        str(out_file),
    )
    assert rc == 0 and err == "" and len(out.splitlines()) == 2
    assert mode(out_file) == 0o600
    doc = json.loads(out_file.read_text())
    assert sorted(doc["files"]) == [
        "gateway.toml",
        "tls/ca.crt",
        "tls/gateway.crt",
        "tls/gateway.key",
    ]
    cfg = GatewayConfig.model_validate(tomllib.loads(doc["files"]["gateway.toml"]))
    assert cfg.gateway.id == "site-a" and cfg.gateway.site == 'North "A"'
    assert (cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.tls) == ("mq.example.org", 8883, True)
    assert str(cfg.mqtt.key) == "/etc/outpost/tls/gateway.key"
    cert = x509.load_pem_x509_certificate(doc["files"]["tls/gateway.crt"].encode())
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "site-a"
    assert "site-a" in (fleet_dir / "index.json").read_text()


@pytest.mark.parametrize(
    "bad", ["Site-A", "site/a", "site+", "#", "-site", "a" * 64, "site a", "bridge.x"]
)
def test_add_gateway_refuses_an_id_that_is_not_a_topic_segment(
    fleet_dir: Path, capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    rc, out, err = run(
        capsys, "add-gateway", "--site", "S", "--broker", "h:1", "--dir", str(fleet_dir), "--", bad
    )
    assert rc == 1 and out == ""
    assert err.startswith("outpost-provision: error: invalid gateway id") and err.count("\n") == 1
    assert not (fleet_dir / "bundles").exists() or not any((fleet_dir / "bundles").iterdir())


def test_add_gateway_refuses_an_existing_id_until_revoked(
    fleet_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("add-gateway", "site-a", "--site", "S", "--broker", "h:8883", "--dir", str(fleet_dir))
    assert run(capsys, *args)[0] == 0
    first = (fleet_dir / "bundles" / "site-a.bundle").read_bytes()
    rc, _out, err = run(capsys, *args)
    assert rc == 1 and "already exists" in err and err.count("\n") == 1
    assert (fleet_dir / "bundles" / "site-a.bundle").read_bytes() == first  # untouched
    assert run(capsys, "revoke", "site-a", "--dir", str(fleet_dir))[0] == 0
    assert run(capsys, *args)[0] == 0  # a replacement device after revocation


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["add-gateway", "s", "--site", "S", "--broker", "h:1", "--dir", "{missing}"],
            "no fleet directory",
        ),
        (["revoke", "s", "--dir", "{missing}"], "no fleet directory"),
        (["broker-config", "--host", "h", "--dir", "{missing}"], "no fleet directory"),
        (
            ["add-gateway", "s", "--site", "S", "--broker", "h:x", "--dir", "{fleet}"],
            "port must be a number",
        ),
        (["add-gateway", "s", "--site", "S", "--broker", "h:99999", "--dir", "{fleet}"], "1-65535"),
        (["revoke", "nobody", "--dir", "{fleet}"], "no certificate was ever issued"),
        (["install", "{missing}/x.bundle", "--root", "{fleet}/root"], "bundle not found"),
        (["install", "{fleet}", "--root", "{fleet}/root"], "is a directory"),
        (["broker-config", "--dir", "{fleet}"], "--host"),
        (["broker-config", "--host", "h", "--listen", "x:y", "--dir", "{fleet}"], "[ADDRESS:]PORT"),
        (["add-bridge", "Bad_Name", "--broker", "h:1", "--dir", "{fleet}"], "invalid bridge name"),
    ],
)
def test_errors_are_one_clear_line(
    fleet_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    subst = {"{missing}": str(tmp_path / "nowhere"), "{fleet}": str(fleet_dir)}
    for key, value in subst.items():
        argv = [a.replace(key, value) for a in argv]
    rc, out, err = run(capsys, *argv)
    assert rc == 1 and out == ""
    assert err.startswith("outpost-provision: error: ") and err.count("\n") == 1
    assert message in err
    assert "Traceback" not in err


def test_the_console_command_fails_without_a_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "provisioning.cli", "revoke", "x", "--dir", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[2],
    )
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "run `outpost-provision init-ca" in proc.stderr


def test_revoke_rewrites_the_crl_in_the_fleet_and_the_broker_dir(
    fleet_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(
        capsys,
        "add-gateway",
        "site-a",
        "--site",
        "S",
        "--broker",
        "127.0.0.1:8883",
        "--dir",
        str(fleet_dir),
    )
    out_dir = tmp_path / "broker"
    assert run(capsys, "broker-config", "--dir", str(fleet_dir), "--out", str(out_dir))[0] == 0
    serial = x509.load_pem_x509_certificate(
        (next((fleet_dir / "issued").glob("site-a-*.crt"))).read_bytes()
    ).serial_number
    rc, out, err = run(capsys, "revoke", "site-a", "--dir", str(fleet_dir))
    assert rc == 0 and len(out.splitlines()) == 2 and "reload" in out
    ca = x509.load_pem_x509_certificate((fleet_dir / "ca.crt").read_bytes())
    for path in (fleet_dir / "crl.pem", out_dir / "crl.pem"):
        crl = x509.load_pem_x509_crl(path.read_bytes())
        assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
        assert crl.get_revoked_certificate_by_serial_number(serial) is not None
        assert crl.next_update_utc is not None and crl.next_update_utc >= ca.not_valid_after_utc
    rc, _, err = run(capsys, "revoke", "site-a", "--dir", str(fleet_dir))
    assert rc == 1 and "already revoked" in err


def test_broker_config_defaults_hosts_from_bundles_and_lists_bridges(
    fleet_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(
        capsys,
        "add-gateway",
        "site-a",
        "--site",
        "S",
        "--broker",
        "mq.example.org:8883",
        "--dir",
        str(fleet_dir),
    )
    run(capsys, "add-bridge", "--broker", "10.0.0.5:8883", "--dir", str(fleet_dir))
    out_dir = tmp_path / "b"
    rc, out, _ = run(
        capsys,
        "broker-config",
        "--dir",
        str(fleet_dir),
        "--out",
        str(out_dir),
        "--conf-dir",
        "/etc/mosquitto/outpost",
    )
    assert rc == 0 and "bridge.central" in out
    conf = (out_dir / "outpost.conf").read_text()
    for line in (
        "allow_anonymous false",
        "require_certificate true",
        "use_identity_as_username true",
        "max_queued_messages 100000",
        "set_tcp_nodelay true",
        "crlfile /etc/mosquitto/outpost/crl.pem",
        "acl_file /etc/mosquitto/outpost/outpost.acl",
        "listener 8883",
    ):
        assert line in conf.splitlines()
    acl = (out_dir / "outpost.acl").read_text().splitlines()
    assert "pattern write outpost/v1/gw/%u/up/#" in acl
    assert "pattern read outpost/v1/gw/%u/down/#" in acl
    assert "user bridge.central" in acl and "topic write outpost/v1/gw/+/down/#" in acl
    assert mode(out_dir / "server.key") == 0o600
    server = x509.load_pem_x509_certificate((out_dir / "server.crt").read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "mq.example.org" in san.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    # Running it again keeps the server certificate.
    before = (out_dir / "server.crt").read_bytes()
    run(capsys, "broker-config", "--dir", str(fleet_dir), "--out", str(out_dir))
    assert (out_dir / "server.crt").read_bytes() == before


def test_list_shows_identities(fleet_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(
        capsys,
        "add-gateway",
        "site-a",
        "--site",
        "Quarry",
        "--broker",
        "h:8883",
        "--dir",
        str(fleet_dir),
    )
    run(capsys, "revoke", "site-a", "--dir", str(fleet_dir))
    rc, out, _ = run(capsys, "list", "--dir", str(fleet_dir))
    assert rc == 0 and "site-a" in out and "revoked" in out and "Quarry" in out


def test_installed_gateway_config_loads_and_its_credentials_check(
    fleet_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(
        capsys,
        "add-gateway",
        "site-a",
        "--site",
        "S",
        "--broker",
        "h:8883",
        "--dir",
        str(fleet_dir),
    )
    root = tmp_path / "etc-outpost"
    rc, out, err = run(
        capsys, "install", str(fleet_dir / "bundles" / "site-a.bundle"), "--root", str(root)
    )
    assert rc == 0 and err == "" and len(out.splitlines()) == 2
    assert "systemctl enable --now outpost-gateway" in out
    assert mode(root / "tls" / "gateway.key") == 0o600
    assert mode(root / "gateway.toml") == 0o644
    cfg = load_config(GatewayConfig, root / "gateway.toml", environ={})
    assert cfg.mqtt.key == root / "tls" / "gateway.key"
    creds = check_credentials(cfg.mqtt)
    assert creds.cert_expires is not None
    assert os.access(root / "tls" / "ca.crt", os.R_OK)


def test_renew_issues_a_new_certificate_with_the_same_settings(
    fleet_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(
        capsys,
        "add-gateway",
        "site-a",
        "--site",
        "Quarry",
        "--broker",
        "mq:8883",
        "--interface",
        "eth0",
        "--replica",
        "/mnt/usb/replica",
        "--dir",
        str(fleet_dir),
    )
    path = fleet_dir / "bundles" / "site-a.bundle"
    old = json.loads(path.read_text())
    root = tmp_path / "root"
    assert run(capsys, "install", str(path), "--root", str(root))[0] == 0
    rc, out, err = run(capsys, "renew", "site-a", "--dir", str(fleet_dir))
    assert rc == 0 and err == "" and len(out.splitlines()) == 2 and "--force" in out
    new = json.loads(path.read_text())
    assert new["files"]["tls/gateway.crt"] != old["files"]["tls/gateway.crt"]
    assert new["files"]["tls/gateway.key"] != old["files"]["tls/gateway.key"]
    cfg = GatewayConfig.model_validate(tomllib.loads(new["files"]["gateway.toml"]))
    assert (cfg.gateway.site, cfg.mqtt.host, cfg.discovery.interfaces) == ("Quarry", "mq", ["eth0"])
    assert cfg.replication.enabled and cfg.replication.path == Path("/mnt/usb/replica")
    rc, _, err = run(capsys, "install", str(path), "--root", str(root))
    assert rc == 1 and "--force" in err
    assert run(capsys, "install", str(path), "--root", str(root), "--force")[0] == 0
    installed = x509.load_pem_x509_certificate((root / "tls" / "gateway.crt").read_bytes())
    assert installed == x509.load_pem_x509_certificate(new["files"]["tls/gateway.crt"].encode())
    # Revoking the id revokes both certificates; a revoked id cannot be renewed.
    assert run(capsys, "revoke", "site-a", "--dir", str(fleet_dir))[0] == 0
    crl = x509.load_pem_x509_crl((fleet_dir / "crl.pem").read_bytes())
    assert len(list(crl)) == 2
    rc, _, err = run(capsys, "renew", "site-a", "--dir", str(fleet_dir))
    assert rc == 1 and "no valid certificate to renew" in err


def test_add_gateway_with_an_s3_replica(
    fleet_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["add-gateway", "site-s3", "--site", "S", "--broker", "h:8883", "--dir", str(fleet_dir)]
    assert run(capsys, *args, "--replica", "s3://fleet-backups/site-s3")[0] == 0
    doc = json.loads((fleet_dir / "bundles" / "site-s3.bundle").read_text())
    cfg = GatewayConfig.model_validate(tomllib.loads(doc["files"]["gateway.toml"]))
    assert cfg.replication.enabled and cfg.replication.s3_url == "s3://fleet-backups/site-s3"

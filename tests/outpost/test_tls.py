"""outpost.tls: the MQTT client's SSL context and the start-up check of its files."""

from __future__ import annotations

import datetime as dt
import logging
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from outpost.config import ConfigError
from outpost.mqtt_config import MqttSection
from outpost.tls import certificate_expiry, check_credentials, client_context, days_until_expiry
from provisioning.ca import Fleet
from provisioning.files import write_file

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    fleet = Fleet.create(tmp_path / "fleet", "T", 365)
    issued = fleet.issue("gw-a", "gateway", 30)
    other = fleet.issue("gw-b", "gateway", 30)
    paths = {
        "ca": tmp_path / "fleet" / "ca.crt",
        "cert": tmp_path / "gw-a.crt",
        "key": tmp_path / "gw-a.key",
        "other_key": tmp_path / "gw-b.key",
    }
    write_file(paths["cert"], issued.cert_pem)
    write_file(paths["key"], issued.key_pem, 0o600)
    write_file(paths["other_key"], other.key_pem, 0o600)
    return paths


def section(files: dict[str, Path], **over: Path) -> MqttSection:
    kw = {"tls": True, "ca": files["ca"], "cert": files["cert"], "key": files["key"], **over}
    return MqttSection.model_validate(kw)


def self_signed(
    tmp_path: Path, name: str, before: dt.datetime, after: dt.datetime
) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(before)
        .not_valid_after(after)
        .sign(key, hashes.SHA256())
    )
    c, k = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return c, k


def test_no_tls_no_context(tmp_path: Path) -> None:
    assert client_context(MqttSection()) is None
    unused = MqttSection(ca=tmp_path / "missing-ca.crt")
    assert check_credentials(unused).cert_expires is None  # files not used are not read


def test_context_for_mutual_tls(files: dict[str, Path]) -> None:
    ctx = client_context(section(files))
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_context_with_system_cas_and_no_client_cert() -> None:
    ctx = client_context(MqttSection(tls=True))
    assert ctx is not None and ctx.verify_mode == ssl.CERT_REQUIRED


def test_missing_file_names_it(files: dict[str, Path], tmp_path: Path) -> None:
    for key in ("ca", "cert", "key"):
        missing = tmp_path / f"missing-{key}.pem"
        with pytest.raises(ConfigError) as err:
            client_context(section(files, **{key: missing}))
        assert str(err.value).startswith(f"{missing}: ") and "not found" in str(err.value)
        assert "\n" not in str(err.value)


def test_unreadable_file_names_it(files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"is a directory"):
        client_context(section(files, key=tmp_path))
    files["key"].chmod(0)
    try:
        files["key"].read_bytes()
    except PermissionError:
        with pytest.raises(ConfigError, match=r"gw-a.key: private key file is not readable"):
            client_context(section(files))
    else:
        pytest.skip("running as root: permissions do not stop reads")


def test_not_pem(files: dict[str, Path], tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("hello")
    with pytest.raises(ConfigError, match=r"junk.pem: not a PEM certificate"):
        client_context(section(files, cert=junk))
    with pytest.raises(ConfigError, match=r"junk.pem: not a PEM private key"):
        client_context(section(files, key=junk))


def test_key_that_does_not_match_the_certificate(files: dict[str, Path]) -> None:
    with pytest.raises(ConfigError) as err:
        client_context(section(files, key=files["other_key"]))
    assert (
        str(err.value)
        == f"{files['other_key']}: private key does not match the certificate {files['cert']}"
    )


def test_certificate_from_another_ca(files: dict[str, Path], tmp_path: Path) -> None:
    cert, key = self_signed(
        tmp_path, "stranger", NOW - dt.timedelta(days=1), NOW + dt.timedelta(days=1)
    )
    with pytest.raises(ConfigError, match="was not issued by the CA"):
        client_context(section(files, cert=cert, key=key))


def test_expired_certificate(files: dict[str, Path], tmp_path: Path) -> None:
    cert, key = self_signed(
        tmp_path, "old", NOW - dt.timedelta(days=10), NOW - dt.timedelta(days=1)
    )
    with pytest.raises(ConfigError, match=r"old.crt: certificate expired on \d{4}-\d\d-\d\d"):
        client_context(MqttSection(tls=True, cert=cert, key=key))
    with pytest.raises(ConfigError, match=r"CA certificate expired"):
        client_context(MqttSection(tls=True, ca=cert))
    # The same check, against a clock 31 days ahead, for a provisioned one.
    with pytest.raises(ConfigError, match=r"gw-a\.crt: certificate expired"):
        check_credentials(section(files), now=NOW + dt.timedelta(days=31))


def test_not_yet_valid_is_a_warning_not_a_failure(
    files: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="outpost.tls"):
        creds = check_credentials(section(files), now=NOW - dt.timedelta(days=3))
    assert creds.cert_expires is not None
    assert "clock" in caplog.text


def test_passphrase_protected_key(files: dict[str, Path], tmp_path: Path) -> None:
    key = serialization.load_pem_private_key(files["key"].read_bytes(), None)
    enc = tmp_path / "enc.key"
    enc.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    with pytest.raises(ConfigError, match="passphrase-protected"):
        client_context(section(files, key=enc))


def test_certificate_expiry(files: dict[str, Path]) -> None:
    expires = certificate_expiry(files["cert"])
    assert expires.tzinfo is not None
    assert dt.timedelta(days=29) < expires - NOW < dt.timedelta(days=31)
    assert 29 < days_until_expiry(files["cert"]) < 31
    with pytest.raises(ConfigError, match="not found"):
        certificate_expiry(files["cert"].with_name("nope.crt"))


def _rsa_pss_pair(tmp_path: Path, ca_name: str, tag: str) -> tuple[Path, Path, Path]:
    """A CA and a client certificate, both RSA keys, both signed with RSA-PSS."""
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_subject)
        .issuer_name(ca_subject)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256(), rsa_padding=pss)
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gw-pss")]))
        .issuer_name(ca_subject)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .sign(ca_key, hashes.SHA256(), rsa_padding=pss)
    )
    paths = tmp_path / f"{tag}-ca.crt", tmp_path / f"{tag}.crt", tmp_path / f"{tag}.key"
    paths[0].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def test_an_rsa_pss_certificate_is_checked_as_pss(tmp_path: Path) -> None:
    """Issued by the CA with RSA-PSS: accepted (it was once checked as PKCS#1 v1.5 and refused)."""
    ca, cert, key = _rsa_pss_pair(tmp_path, "Fleet PSS CA", "ours")
    mqtt = MqttSection.model_validate({"tls": True, "ca": ca, "cert": cert, "key": key})
    assert check_credentials(mqtt, now=NOW).cert_subject == "CN=gw-pss"
    # Another CA of the same name: the signature, not the name, decides.
    _, stranger, stranger_key = _rsa_pss_pair(tmp_path, "Fleet PSS CA", "theirs")
    mqtt = MqttSection.model_validate(
        {"tls": True, "ca": ca, "cert": stranger, "key": stranger_key}
    )
    with pytest.raises(ConfigError, match="was not issued by the CA"):
        check_credentials(mqtt, now=NOW)

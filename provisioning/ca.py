"""The fleet's certificate authority and its state directory.

Layout of the state directory (``--dir``, default ``./fleet``)::

    ca.key        the CA's private key (ECDSA P-256, 0600) - keep this directory offline
    ca.crt        the CA certificate every gateway, bridge and broker trusts
    crl.pem       the certificate revocation list, regenerated on every revoke
    index.json    every certificate issued: id, kind, serial, expiry, revoked or not
    issued/       a copy of each issued certificate (never the keys: those live only
                  in the bundle handed to the device)

Identities: a gateway's certificate has CN = its gateway id (the broker uses
the CN as the MQTT username, and the ACL confines that username to its own
topic subtree). A bridge's CN is ``bridge.<name>``: the dot can never occur
in a gateway id, so no gateway can be issued a bridge's name.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from outpost.wire.topics import GATEWAY_ID_PATTERN, valid_gateway_id
from provisioning.errors import ProvisionError
from provisioning.files import PUBLIC, SECRET, locked, make_dir, read_file, write_file

CA_KEY = "ca.key"
CA_CERT = "ca.crt"
CRL = "crl.pem"
INDEX = "index.json"
ISSUED = "issued"

BRIDGE_PREFIX = "bridge."
BRIDGE_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,40}$"
_BRIDGE_NAME_RE = re.compile(BRIDGE_NAME_PATTERN)

# Field clocks drift; a certificate valid from a day ago survives modest skew.
BACKDATE = dt.timedelta(days=1)

Kind = Literal["gateway", "bridge", "broker"]


def bridge_cn(name: str) -> str:
    if not _BRIDGE_NAME_RE.fullmatch(name):
        raise ProvisionError(
            f"invalid bridge name {name!r}: use lower-case letters, digits and '-' "
            f"(pattern {BRIDGE_NAME_PATTERN})"
        )
    return BRIDGE_PREFIX + name


def check_gateway_id(gateway_id: str) -> None:
    if not valid_gateway_id(gateway_id):
        raise ProvisionError(
            f"invalid gateway id {gateway_id!r}: it must be one MQTT topic segment of "
            f"lower-case letters, digits and '-', at most 63 characters (pattern {GATEWAY_ID_PATTERN})"
        )


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint, ``AB:CD:…`` as ``openssl x509 -fingerprint -sha256`` prints it."""
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


@dataclass
class Record:
    """One issued certificate, as kept in ``index.json``."""

    cn: str
    kind: Kind
    serial: str  # hex
    issued_at: str
    not_after: str
    status: Literal["valid", "revoked"] = "valid"
    revoked_at: str | None = None
    details: dict[str, str] = field(default_factory=dict)


@dataclass
class Issued:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    record: Record

    @property
    def key_pem(self) -> bytes:
        return pem_key(self.key)

    @property
    def cert_pem(self) -> bytes:
        return pem_cert(self.cert)


class Fleet:
    """A loaded fleet state directory. Mutating methods run under :meth:`lock`."""

    def __init__(
        self,
        directory: Path,
        ca_key: ec.EllipticCurvePrivateKey,
        ca_cert: x509.Certificate,
        index: dict[str, Any],
    ) -> None:
        self.directory = directory
        self.ca_key = ca_key
        self.ca_cert = ca_cert
        self._index = index

    # --- creating and opening -------------------------------------------------

    @classmethod
    def create(cls, directory: Path, name: str, days: int) -> Fleet:
        make_dir(directory, 0o700)
        if (directory / CA_KEY).exists() or (directory / CA_CERT).exists():
            raise ProvisionError(
                f"{directory} already holds a fleet CA; refusing to replace it "
                "(every issued certificate depends on it)"
            )
        with locked(directory):
            key = ec.generate_private_key(ec.SECP256R1())
            subject = x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
                    x509.NameAttribute(NameOID.COMMON_NAME, f"{name} fleet CA"),
                ]
            )
            now = _now()
            ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
            cert = (
                x509.CertificateBuilder()
                .subject_name(subject)
                .issuer_name(subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - BACKDATE)
                .not_valid_after(now + dt.timedelta(days=days))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(
                    x509.KeyUsage(
                        digital_signature=True,
                        content_commitment=False,
                        key_encipherment=False,
                        data_encipherment=False,
                        key_agreement=False,
                        key_cert_sign=True,
                        crl_sign=True,
                        encipher_only=False,
                        decipher_only=False,
                    ),
                    critical=True,
                )
                .add_extension(ski, critical=False)
                .sign(key, hashes.SHA256())
            )
            write_file(directory / CA_KEY, pem_key(key), SECRET)
            write_file(directory / CA_CERT, pem_cert(cert), PUBLIC)
            make_dir(directory / ISSUED, 0o755)
            fleet = cls(
                directory,
                key,
                cert,
                {"version": 1, "name": name, "crl_number": 0, "certificates": []},
            )
            fleet.save()
            fleet.write_crl()
        return fleet

    @classmethod
    def open(cls, directory: Path) -> Fleet:
        if not directory.is_dir():
            raise ProvisionError(
                f"{directory}: no fleet directory here; run `outpost-provision init-ca --dir {directory}` first"
            )
        if not (directory / CA_KEY).exists():
            raise ProvisionError(
                f"{directory}: no fleet CA here ({CA_KEY} missing); run `outpost-provision init-ca` first"
            )
        key_raw = read_file(directory / CA_KEY, "CA key")
        cert_raw = read_file(directory / CA_CERT, "CA certificate")
        index_raw = read_file(directory / INDEX, "fleet index")
        try:
            key = serialization.load_pem_private_key(key_raw, password=None)
        except (ValueError, TypeError):
            raise ProvisionError(f"{directory / CA_KEY}: not a usable PEM private key") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ProvisionError(f"{directory / CA_KEY}: expected an ECDSA key")
        try:
            cert = x509.load_pem_x509_certificate(cert_raw)
        except ValueError:
            raise ProvisionError(f"{directory / CA_CERT}: not a PEM certificate") from None
        try:
            index = json.loads(index_raw)
        except json.JSONDecodeError as exc:
            raise ProvisionError(f"{directory / INDEX}: not valid JSON ({exc.msg})") from None
        if not isinstance(index, dict) or index.get("version") != 1:
            raise ProvisionError(f"{directory / INDEX}: unknown index format")
        return cls(directory, key, cert, index)

    def lock(self) -> Any:
        return locked(self.directory)

    def save(self) -> None:
        text = json.dumps(self._index, indent=2, sort_keys=True) + "\n"
        write_file(self.directory / INDEX, text, PUBLIC)

    # --- the index ------------------------------------------------------------

    @property
    def name(self) -> str:
        return str(self._index.get("name", "outpost"))

    @property
    def ca_fingerprint(self) -> str:
        return fingerprint(self.ca_cert)

    def records(self) -> list[Record]:
        return [Record(**r) for r in self._index["certificates"]]

    def active(self, cn: str, kind: Kind | None = None) -> Record | None:
        """The certificate currently valid (not revoked, not expired) for ``cn``."""
        now = _now()
        for rec in reversed(self.records()):
            if rec.cn != cn or (kind is not None and rec.kind != kind):
                continue
            if rec.status == "valid" and dt.datetime.fromisoformat(rec.not_after) > now:
                return rec
        return None

    def get(self, key: str, default: Any = None) -> Any:
        return self._index.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self._index[key] = value

    # --- issuing and revoking -------------------------------------------------

    def issue(
        self,
        cn: str,
        kind: Kind,
        days: int,
        *,
        server_names: list[str] | None = None,
        details: dict[str, str] | None = None,
    ) -> Issued:
        """A new key and certificate signed by the CA, recorded in the index (call :meth:`save`)."""
        ca_expires = self.ca_cert.not_valid_after_utc
        now = _now()
        not_after = min(now + dt.timedelta(days=days), ca_expires)
        key = ec.generate_private_key(ec.SECP256R1())
        ou = {"gateway": "gateway", "bridge": "bridge", "broker": "broker"}[kind]
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.name),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou),
                x509.NameAttribute(NameOID.COMMON_NAME, cn),
            ]
        )
        eku = (
            ExtendedKeyUsageOID.SERVER_AUTH if kind == "broker" else ExtendedKeyUsageOID.CLIENT_AUTH
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=True,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()),
                critical=False,
            )
        )
        if server_names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_general_name(n) for n in server_names]),
                critical=False,
            )
        cert = builder.sign(self.ca_key, hashes.SHA256())
        record = Record(
            cn=cn,
            kind=kind,
            serial=f"{cert.serial_number:x}",
            issued_at=now.isoformat(),
            not_after=cert.not_valid_after_utc.isoformat(),
            details=dict(details or {}),
        )
        self._index["certificates"].append(asdict(record))
        make_dir(self.directory / ISSUED, 0o755)
        write_file(self.directory / ISSUED / f"{cn}-{record.serial[:16]}.crt", pem_cert(cert))
        return Issued(key=key, cert=cert, record=record)

    def revoke(self, cn: str) -> Record:
        """Mark every valid certificate of ``cn`` revoked; returns the newest one."""
        revoked: Record | None = None
        now = _now().isoformat()
        known = False
        for raw in self._index["certificates"]:
            if raw["cn"] != cn:
                continue
            known = True
            if raw["status"] == "valid":
                raw["status"] = "revoked"
                raw["revoked_at"] = now
                revoked = Record(**raw)
        if not known:
            raise ProvisionError(f"no certificate was ever issued to {cn!r} in {self.directory}")
        if revoked is None:
            raise ProvisionError(f"{cn!r} is already revoked")
        return revoked

    def crl(self) -> x509.CertificateRevocationList:
        """A CRL of every revoked serial, valid as long as the CA.

        An expired CRL makes the broker refuse every client, and a fleet
        offline for months must not be locked out by one: so the CRL lasts
        as long as the CA, and every revoke writes a new one.
        """
        now = _now()
        number = int(self._index.get("crl_number", 0)) + 1
        self._index["crl_number"] = number
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.ca_cert.subject)
            .last_update(now - dt.timedelta(minutes=5))
            .next_update(max(self.ca_cert.not_valid_after_utc, now + dt.timedelta(days=1)))
            .add_extension(x509.CRLNumber(number), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()),
                critical=False,
            )
        )
        for rec in self.records():
            if rec.status != "revoked":
                continue
            when = dt.datetime.fromisoformat(rec.revoked_at or rec.issued_at)
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(int(rec.serial, 16))
                .revocation_date(when)
                .build()
            )
        return builder.sign(self.ca_key, hashes.SHA256())

    def write_crl(self, *extra_paths: Path) -> bytes:
        """Regenerate the CRL into the fleet directory (and ``extra_paths``); saves the index."""
        pem = self.crl().public_bytes(serialization.Encoding.PEM)
        write_file(self.directory / CRL, pem, PUBLIC)
        for path in extra_paths:
            write_file(path, pem, PUBLIC)
        self.save()
        return pem


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()

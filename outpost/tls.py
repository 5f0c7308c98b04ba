"""Mutual TLS for the MQTT link: the client's SSL context and a start-up check.

``client_context(mqtt)`` is what the MQTT client calls: ``None`` when
``mqtt.tls`` is false, otherwise a context that verifies the broker against
the configured CA (or the system's CAs when ``ca`` is unset) and presents the
client's certificate. Before building it, :func:`check_credentials` reads every
configured file and raises :class:`~outpost.config.ConfigError` with one line
naming the file and the problem (missing, unreadable, not PEM, key and
certificate that do not belong together, not issued by the CA, expired; a
certificate not yet valid is only logged, since field clocks drift), so a
bad install stops start-up instead of looping on TLS errors.

:func:`certificate_expiry` lets status and heartbeat show an expiring
certificate weeks ahead. All functions here do blocking file IO: call them at
start-up or from an executor, not from the event loop.
"""

from __future__ import annotations

import datetime as dt
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from outpost.config import ConfigError
from outpost.files import read_error
from outpost.mqtt_config import MqttSection

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

# cryptography (its own OpenSSL, ~8 MiB resident) is imported by the functions
# that read certificates, so a gateway without TLS never loads it.

logger = logging.getLogger(__name__)

__all__ = [
    "Credentials",
    "certificate_expiry",
    "check_credentials",
    "client_context",
    "days_until_expiry",
    "load_certificate",
    "load_certificates",
    "load_private_key",
    "public_keys_match",
    "signed_by",
]


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(read_error(path, f"{what} file", exc)) from None


def load_certificates(path: Path, what: str = "certificate") -> list[x509.Certificate]:
    """Every certificate in a PEM file (at least one), or ConfigError."""
    from cryptography import x509

    data = _read(path, what)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise ConfigError(f"{path}: not a PEM {what} (no certificate found)")
    return certs


def load_certificate(path: Path, what: str = "certificate") -> x509.Certificate:
    """The first certificate of a PEM file, or ConfigError."""
    return load_certificates(path, what)[0]


def load_private_key(path: Path) -> PrivateKeyTypes:
    """An unencrypted PEM private key, or ConfigError."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    data = _read(path, "private key")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigError(
            f"{path}: private key is passphrase-protected; an unattended service needs an unencrypted key (mode 0600)"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"{path}: not a PEM private key") from None


def public_keys_match(key: PrivateKeyTypes, cert: x509.Certificate) -> bool:
    """Whether ``cert`` carries the public half of ``key``."""
    from cryptography.hazmat.primitives import serialization

    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    return key.public_key().public_bytes(enc, fmt) == cert.public_key().public_bytes(enc, fmt)


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether ``issuer``'s key signed ``cert`` (signature check only; any algorithm
    cryptography knows, RSA-PSS included)."""
    from cryptography.exceptions import InvalidSignature

    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        # Another issuer's name, an unsupported algorithm or key type, a bad signature.
        return False
    return True


def certificate_expiry(path: str | Path) -> dt.datetime:
    """When the certificate at ``path`` stops being valid (timezone-aware UTC).

    Raises ConfigError (one line, naming the file) if it cannot be read.
    """
    return load_certificate(Path(path)).not_valid_after_utc


def days_until_expiry(path: str | Path, now: dt.datetime | None = None) -> float:
    """Days left on the certificate at ``path`` (negative once expired)."""
    now = now or dt.datetime.now(dt.UTC)
    return (certificate_expiry(path) - now).total_seconds() / 86400


def _check_validity(path: Path, cert: x509.Certificate, what: str, now: dt.datetime) -> None:
    if now > cert.not_valid_after_utc:
        raise ConfigError(
            f"{path}: {what} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )
    if now < cert.not_valid_before_utc:
        # A gateway without a real-time clock may boot in the past; refusing to
        # start would take the LAN service down too. Say it, and let TLS decide.
        logger.warning(
            "%s: %s is not valid before %s UTC; is this machine's clock right?",
            path,
            what,
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M}",
        )


@dataclass(frozen=True)
class Credentials:
    """What :func:`check_credentials` found: the client certificate's expiry, if any."""

    cert_expires: dt.datetime | None
    cert_subject: str | None


def check_credentials(mqtt: MqttSection, now: dt.datetime | None = None) -> Credentials:
    """Read and check every TLS file ``mqtt`` names; ConfigError on the first problem.

    Nothing to check (and no file read) when ``mqtt.tls`` is false.
    """
    if not mqtt.tls:
        return Credentials(cert_expires=None, cert_subject=None)
    now = now or dt.datetime.now(dt.UTC)
    ca_certs: list[x509.Certificate] = []
    if mqtt.ca is not None:
        ca_certs = load_certificates(mqtt.ca, "CA certificate")
        for ca_cert in ca_certs:
            _check_validity(mqtt.ca, ca_cert, "CA certificate", now)
    if mqtt.cert is None or mqtt.key is None:
        return Credentials(cert_expires=None, cert_subject=None)
    cert = load_certificate(mqtt.cert)
    key = load_private_key(mqtt.key)
    if not public_keys_match(key, cert):
        raise ConfigError(f"{mqtt.key}: private key does not match the certificate {mqtt.cert}")
    _check_validity(mqtt.cert, cert, "certificate", now)
    if ca_certs and not any(signed_by(cert, ca) for ca in ca_certs):
        raise ConfigError(f"{mqtt.cert}: certificate was not issued by the CA in {mqtt.ca}")
    return Credentials(
        cert_expires=cert.not_valid_after_utc, cert_subject=cert.subject.rfc4514_string()
    )


def client_context(mqtt: MqttSection) -> ssl.SSLContext | None:
    """The SSL context for the MQTT connection, or None when ``mqtt.tls`` is false.

    The broker's certificate is verified (chain and host name) against
    ``mqtt.ca``, or the system's CAs when it is unset; the client presents
    ``mqtt.cert``/``mqtt.key`` when given. Raises ConfigError (one line naming
    the file) for a missing, unreadable, mismatched or expired file.
    """
    if not mqtt.tls:
        return None
    check_credentials(mqtt)
    try:
        if mqtt.ca is not None:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(mqtt.ca))
        else:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    except ssl.SSLError as exc:
        raise ConfigError(f"{mqtt.ca}: CA certificate rejected by OpenSSL: {exc.reason}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if mqtt.cert is not None and mqtt.key is not None:
        try:
            ctx.load_cert_chain(certfile=str(mqtt.cert), keyfile=str(mqtt.key))
        except ssl.SSLError as exc:
            raise ConfigError(
                f"{mqtt.cert}: certificate/key rejected by OpenSSL: {exc.reason}"
            ) from None
    return ctx

"""``outpost-provision install``: a bundle's config and credentials, written in place and checked.

Nothing is written until the bundle has passed every check (integrity,
signature, the key belongs to the certificate, the certificate was issued by
the bundle's CA to this identity and has not expired). After writing, the
installed config is loaded exactly as the service will load it and its TLS
files are checked again from disk, so a finished install is one that starts.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from cloud_bridge.config import BridgeConfig
from gateway.config import GatewayConfig
from outpost.config import ConfigError
from outpost.tls import check_credentials, public_keys_match, signed_by
from provisioning import bundle as bundles
from provisioning.ca import fingerprint
from provisioning.configs import load_installed
from provisioning.errors import ProvisionError
from provisioning.files import make_dir, write_file


@dataclass(frozen=True)
class Installed:
    kind: str
    id: str
    root: Path
    config: Path
    cert_expires: dt.datetime
    ca_fingerprint: str
    written: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)

    @property
    def next_step(self) -> str:
        service = f"outpost-{self.kind}"
        return f"systemctl enable --now {service}  (or: {service} run --config {self.config})"


def _norm_fp(value: str) -> str:
    return value.replace(":", "").replace(" ", "").upper()


def _check_credentials(b: bundles.Bundle, source: str, now: dt.datetime) -> x509.Certificate:
    """Check the bundle's key, certificate and CA in memory; returns the certificate."""
    try:
        ca = x509.load_pem_x509_certificate(b.ca_pem)
        cert = x509.load_pem_x509_certificate(b.cert_pem)
    except ValueError:
        raise ProvisionError(f"{source}: corrupt bundle (a certificate does not parse)") from None
    try:
        key = serialization.load_pem_private_key(b.key_pem, password=None)
    except (ValueError, TypeError):
        raise ProvisionError(f"{source}: corrupt bundle (the private key does not parse)") from None
    if not public_keys_match(key, cert):
        raise ProvisionError(f"{source}: the bundle's private key does not match its certificate")
    if not signed_by(cert, ca):
        raise ProvisionError(f"{source}: the bundle's certificate was not issued by its CA")
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = cns[0].value if cns else None
    if cn != b.id:
        raise ProvisionError(f"{source}: the certificate is for {cn!r}, not {b.id!r}")
    if now > cert.not_valid_after_utc:
        raise ProvisionError(
            f"{source}: the certificate expired on {cert.not_valid_after_utc:%Y-%m-%d}; "
            "issue a new bundle"
        )
    return cert


def _rebase(config: str, old_root: str, new_root: str) -> str:
    """Point the config's TLS paths at where they are actually installed."""
    if old_root == new_root:
        return config
    old = json.dumps(f"{old_root}/tls/")[:-1]
    new = json.dumps(f"{new_root}/tls/")[:-1]
    return config.replace(old, new)


def install(
    bundle_path: Path,
    root: Path,
    *,
    force: bool = False,
    expect_ca: str | None = None,
    now: dt.datetime | None = None,
) -> Installed:
    now = now or dt.datetime.now(dt.UTC)
    source = str(bundle_path)
    b = bundles.read(bundle_path)
    ca_fp = fingerprint(x509.load_pem_x509_certificate(b.ca_pem))
    if expect_ca is not None and _norm_fp(expect_ca) != _norm_fp(ca_fp):
        raise ProvisionError(
            f"{source}: the bundle's CA ({ca_fp}) is not the fleet CA you expected ({expect_ca})"
        )
    cert = _check_credentials(b, source, now)
    root = root.absolute()
    files = dict(b.files)
    config_name = bundles.config_name(b.kind)
    files[config_name] = _rebase(files[config_name], b.install_root, str(root))

    targets = {name: root / name for name in files}
    unchanged = []
    for name, path in targets.items():
        if path.is_dir():
            raise ProvisionError(f"{path} is a directory; cannot install {name} there")
        if not path.exists():
            continue
        try:
            same = path.read_text() == files[name]
        except (OSError, UnicodeDecodeError):
            same = False
        if same:
            unchanged.append(path)
        elif not force:
            raise ProvisionError(
                f"{path} already exists with different content; pass --force to replace it"
            )

    make_dir(root, 0o755)
    make_dir(root / "tls", 0o755)
    written = []
    # Credentials first, config last: a half-finished install has no config
    # pointing at files that are not there yet.
    for name in sorted(files, key=lambda n: n == config_name):
        write_file(targets[name], files[name], bundles.LAYOUT[b.kind][name])
        written.append(targets[name])

    model: type[GatewayConfig] | type[BridgeConfig] = (
        GatewayConfig if b.kind == "gateway" else BridgeConfig
    )
    cfg = load_installed(model, str(targets[config_name]))
    try:
        check_credentials(cfg.mqtt, now=now)
    except ConfigError as exc:
        raise ProvisionError(f"installed, but the service would not start: {exc}") from None
    if isinstance(cfg, GatewayConfig) and cfg.gateway.id != b.id:
        raise ProvisionError(
            f"{targets[config_name]}: gateway.id is {cfg.gateway.id!r} but the certificate is for {b.id!r}"
        )
    return Installed(
        kind=b.kind,
        id=b.id,
        root=root,
        config=targets[config_name],
        cert_expires=cert.not_valid_after_utc,
        ca_fingerprint=ca_fp,
        written=written,
        unchanged=unchanged,
    )

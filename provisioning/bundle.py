"""The one-file bundle a device is provisioned from, and its integrity check.

A bundle is a JSON document (mode 0600: it holds a private key)::

    {"format": "outpost-bundle/1", "kind": "gateway", "id": "site-a",
     "created_at": "…", "install_root": "/etc/outpost", "ca_fingerprint": "AB:…",
     "files": {"gateway.toml": "…", "tls/ca.crt": "…", "tls/gateway.crt": "…",
               "tls/gateway.key": "…"},
     "manifest": {"gateway.toml": "<sha256>", …},
     "signature": "<base64 ECDSA-SHA256 by the fleet CA over the header + manifest>"}

Reading one checks, in order: it is a bundle, every file's SHA-256 matches
the manifest and no file is missing or extra, file names are the known ones
(nothing can be written outside the install root), and the fleet CA signed
the manifest. Any failure is one :class:`ProvisionError` line.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from provisioning.ca import fingerprint, sha256_hex
from provisioning.errors import ProvisionError
from provisioning.files import SECRET, read_file, write_file

FORMAT = "outpost-bundle/1"
DEFAULT_ROOT = "/etc/outpost"

BundleKind = Literal["gateway", "bridge"]

# The files each kind of bundle holds, and the mode each is installed with.
LAYOUT: dict[str, dict[str, int]] = {
    "gateway": {
        "gateway.toml": 0o644,
        "tls/ca.crt": 0o644,
        "tls/gateway.crt": 0o644,
        "tls/gateway.key": 0o600,
    },
    "bridge": {
        "bridge.toml": 0o644,
        "tls/ca.crt": 0o644,
        "tls/bridge.crt": 0o644,
        "tls/bridge.key": 0o600,
    },
}


def config_name(kind: str) -> str:
    return f"{kind}.toml"


def tls_paths(kind: str, root: str) -> dict[str, str]:
    """Where the CA, certificate and key of a ``kind`` bundle live under ``root``."""
    return {
        "ca": f"{root}/tls/ca.crt",
        "cert": f"{root}/tls/{kind}.crt",
        "key": f"{root}/tls/{kind}.key",
    }


@dataclass(frozen=True)
class Bundle:
    kind: BundleKind
    id: str
    created_at: str
    install_root: str
    files: dict[str, str]

    @property
    def config(self) -> str:
        return self.files[config_name(self.kind)]

    @property
    def ca_pem(self) -> bytes:
        return self.files["tls/ca.crt"].encode()

    @property
    def cert_pem(self) -> bytes:
        return self.files[f"tls/{self.kind}.crt"].encode()

    @property
    def key_pem(self) -> bytes:
        return self.files[f"tls/{self.kind}.key"].encode()


def _signed_part(doc: dict[str, Any]) -> bytes:
    part = {k: doc[k] for k in ("format", "kind", "id", "created_at", "install_root", "manifest")}
    return json.dumps(part, sort_keys=True, separators=(",", ":")).encode()


def build(
    kind: BundleKind,
    ident: str,
    files: dict[str, str],
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    install_root: str = DEFAULT_ROOT,
) -> bytes:
    """The bundle document, signed by the fleet CA."""
    if set(files) != set(LAYOUT[kind]):
        raise ValueError(f"a {kind} bundle holds exactly {sorted(LAYOUT[kind])}")
    doc: dict[str, Any] = {
        "format": FORMAT,
        "kind": kind,
        "id": ident,
        "created_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "install_root": install_root,
        "ca_fingerprint": fingerprint(ca_cert),
        "files": files,
        "manifest": {name: sha256_hex(text.encode()) for name, text in sorted(files.items())},
    }
    sig = ca_key.sign(_signed_part(doc), ec.ECDSA(hashes.SHA256()))
    doc["signature"] = base64.b64encode(sig).decode()
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


def write(path: Path, data: bytes) -> None:
    write_file(path, data, SECRET)


def parse(data: bytes, source: str) -> Bundle:
    """Check a bundle's integrity and signature; ProvisionError naming ``source`` if it fails."""
    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ProvisionError(f"{source}: not an Outpost bundle (not a JSON document)") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ProvisionError(f"{source}: not an Outpost bundle (format is not {FORMAT})")
    kind = doc.get("kind")
    if kind not in LAYOUT:
        raise ProvisionError(f"{source}: corrupt bundle (unknown kind {kind!r})")
    files, manifest = doc.get("files"), doc.get("manifest")
    if not isinstance(files, dict) or not isinstance(manifest, dict):
        raise ProvisionError(f"{source}: corrupt bundle (files or manifest missing)")
    for key in ("id", "created_at", "install_root", "signature"):
        if not isinstance(doc.get(key), str):
            raise ProvisionError(f"{source}: corrupt bundle ({key} missing)")
    expected = set(LAYOUT[kind])
    if set(manifest) != expected or set(files) != expected:
        extra = sorted((set(files) | set(manifest)) - expected)
        missing = sorted(expected - (set(files) & set(manifest)))
        what = f"unexpected {extra}" if extra else f"missing {missing}"
        raise ProvisionError(f"{source}: corrupt bundle ({what})")
    for name in sorted(expected):
        text = files[name]
        if not isinstance(text, str) or sha256_hex(text.encode()) != manifest[name]:
            raise ProvisionError(
                f"{source}: corrupt or tampered bundle ({name} does not match its SHA-256)"
            )
    try:
        ca_cert = x509.load_pem_x509_certificate(files["tls/ca.crt"].encode())
    except ValueError:
        raise ProvisionError(
            f"{source}: corrupt bundle (tls/ca.crt is not a certificate)"
        ) from None
    pub = ca_cert.public_key()
    if not isinstance(pub, ec.EllipticCurvePublicKey):
        raise ProvisionError(f"{source}: corrupt bundle (the CA key is not ECDSA)")
    try:
        pub.verify(base64.b64decode(doc["signature"]), _signed_part(doc), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise ProvisionError(
            f"{source}: tampered bundle (the manifest's signature does not verify with its CA)"
        ) from None
    return Bundle(
        kind=kind,
        id=doc["id"],
        created_at=doc["created_at"],
        install_root=doc["install_root"],
        files={name: files[name] for name in sorted(expected)},
    )


def read(path: Path) -> Bundle:
    return parse(read_file(path, "bundle"), str(path))

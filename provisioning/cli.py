"""``outpost-provision``: the fleet CA, per-device bundles, the broker's config, install.

Every command says what it did in one or two lines; a failure is one line on
stderr and exit status 1 (2 for a malformed command line), never a traceback.
"""

from __future__ import annotations

import argparse
import ipaddress
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path

from outpost.cli import add_version
from provisioning import broker, bundle, configs
from provisioning.bundle import BundleKind
from provisioning.ca import (
    BRIDGE_PREFIX,
    CA_KEY,
    CRL,
    Fleet,
    Issued,
    bridge_cn,
    check_gateway_id,
    pem_cert,
)
from provisioning.errors import ProvisionError
from provisioning.files import locked, make_dir
from provisioning.install import install

PROG = "outpost-provision"
DEFAULT_DIR = Path("fleet")


def _say(*lines: str) -> None:
    for line in lines:
        print(line)


def _parse_broker(value: str) -> tuple[str, int]:
    """``HOST[:PORT]`` (IPv6 as ``[::1]:8883``); the port defaults to 8883."""
    host, port = value, 8883
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise ProvisionError(f"--broker {value!r}: missing ']' after the IPv6 address")
        host, rest = value[1:end], value[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ProvisionError(f"--broker {value!r}: expected [ADDRESS]:PORT")
            port_s = rest[1:]
        else:
            port_s = "8883"
    elif value.count(":") == 1:
        host, port_s = value.split(":")
    elif ":" in value:
        try:
            ipaddress.IPv6Address(value)
        except ValueError:
            raise ProvisionError(f"--broker {value!r}: expected HOST:PORT") from None
        port_s = "8883"
    else:
        port_s = "8883"
    if not host or any(c.isspace() for c in host) or "/" in host:
        raise ProvisionError(
            f"--broker {value!r}: expected HOST:PORT, e.g. broker.example.org:8883"
        )
    try:
        port = int(port_s)
    except ValueError:
        raise ProvisionError(f"--broker {value!r}: the port must be a number") from None
    if not 1 <= port <= 65535:
        raise ProvisionError(f"--broker {value!r}: the port must be 1-65535")
    return host, port


def _date(value: str) -> str:
    return value[:10]


def _bundle_out(args: argparse.Namespace, directory: Path, cn: str) -> Path:
    if args.out is not None:
        out: Path = args.out
        if out.is_dir():
            out = out / f"{cn}.bundle"
        return out
    make_dir(directory / "bundles", 0o700)
    return directory / "bundles" / f"{cn}.bundle"


# --- commands -----------------------------------------------------------------


def cmd_init_ca(args: argparse.Namespace) -> None:
    fleet = Fleet.create(args.dir, args.name, args.days)
    _say(
        f"Created the fleet CA {fleet.name!r} in {args.dir}/ ({CA_KEY} is 0600 and is the key to the "
        f"whole fleet: keep it offline), valid until {fleet.ca_cert.not_valid_after_utc:%Y-%m-%d}.",
        f"CA fingerprint (SHA-256) {fleet.ca_fingerprint}; "
        f"next: {PROG} add-gateway ID --site NAME --broker HOST:PORT",
    )


def _render_config(fleet: Fleet, kind: str, cn: str, details: dict[str, str]) -> str:
    """The bundle's config, from what the index records about the identity."""
    host, port = _parse_broker(details["broker"])
    root = bundle.DEFAULT_ROOT
    data_dir = details.get("data_dir", configs.DEFAULT_DATA_DIR)
    if kind == "gateway":
        interfaces = [i for i in details.get("interfaces", "").split(",") if i]
        return configs.gateway_toml(
            cn,
            details["site"],
            host,
            port,
            root,
            data_dir=data_dir,
            interfaces=interfaces,
            replica=details.get("replica") or None,
        )
    group = fleet.get("share_group")
    if not isinstance(group, str):
        group = f"outpost-bridge-{secrets.token_hex(8)}"
        fleet.set("share_group", group)
    return configs.bridge_toml(
        cn,
        host,
        port,
        root,
        share_group=group,
        data_dir=data_dir,
        database_url=details.get("database_url", configs.DEFAULT_DATABASE_URL),
    )


def _issue_bundle(
    fleet: Fleet, kind: BundleKind, cn: str, details: dict[str, str], days: int, out: Path
) -> Issued:
    """A new key and certificate for ``cn`` and the bundle holding them, written to ``out``."""
    toml = _render_config(fleet, kind, cn, details)  # fails before anything is issued
    issued = fleet.issue(cn, kind, days, details=details)
    data = bundle.build(
        kind,
        cn,
        {
            f"{kind}.toml": toml,
            "tls/ca.crt": pem_cert(fleet.ca_cert).decode(),
            f"tls/{kind}.crt": issued.cert_pem.decode(),
            f"tls/{kind}.key": issued.key_pem.decode(),
        },
        fleet.ca_key,
        fleet.ca_cert,
        bundle.DEFAULT_ROOT,
    )
    bundle.write(out, data)
    fleet.save()
    return issued


def cmd_add_gateway(args: argparse.Namespace) -> None:
    gateway_id: str = args.id
    check_gateway_id(gateway_id)
    if not args.site.strip() or len(args.site) > 63:
        raise ProvisionError(f"--site {args.site!r}: give the site's name in 1 to 63 characters")
    host, port = _parse_broker(args.broker)
    Fleet.open(args.dir)  # a clear error before taking the lock if there is no fleet
    with locked(args.dir):
        fleet = Fleet.open(args.dir)
        existing = fleet.active(gateway_id)
        if existing is not None:
            raise ProvisionError(
                f"gateway {gateway_id!r} already exists (certificate valid until "
                f"{_date(existing.not_after)}); use `renew` for a new certificate, "
                "or revoke it first to issue a new identity"
            )
        details = {
            "site": args.site,
            "broker": f"{host}:{port}",
            "data_dir": args.data_dir,
            "interfaces": ",".join(args.interface or []),
            "replica": args.replica or "",
        }
        out = _bundle_out(args, args.dir, gateway_id)
        issued = _issue_bundle(fleet, "gateway", gateway_id, details, args.days, out)
    _say(
        f"Issued gateway {gateway_id!r} ({args.site}, broker {host}:{port}), certificate valid until "
        f"{_date(issued.record.not_after)}.",
        f"Bundle: {out} (0600, holds the private key); on the device: {PROG} install {out.name}",
    )


def cmd_add_bridge(args: argparse.Namespace) -> None:
    cn = bridge_cn(args.name)
    host, port = _parse_broker(args.broker)
    Fleet.open(args.dir)
    with locked(args.dir):
        fleet = Fleet.open(args.dir)
        existing = fleet.active(cn)
        if existing is not None:
            raise ProvisionError(
                f"bridge {cn!r} already exists (certificate valid until {_date(existing.not_after)}); "
                "use `renew`, revoke it first, or give another name"
            )
        details = {
            "broker": f"{host}:{port}",
            "data_dir": args.data_dir,
            "database_url": args.database_url,
        }
        out = _bundle_out(args, args.dir, cn)
        issued = _issue_bundle(fleet, "bridge", cn, details, args.days, out)
    _say(
        f"Issued bridge identity {cn!r} (broker {host}:{port}), certificate valid until "
        f"{_date(issued.record.not_after)}; bundle: {out} (0600).",
        f"Run `{PROG} broker-config` again so the broker's ACL lets {cn!r} in.",
    )


def cmd_renew(args: argparse.Namespace) -> None:
    cn: str = args.id
    Fleet.open(args.dir)
    with locked(args.dir):
        fleet = Fleet.open(args.dir)
        current = fleet.active(cn)
        if current is None or current.kind == "broker":
            raise ProvisionError(
                f"{cn!r} has no valid certificate to renew in {args.dir} "
                "(revoked or expired identities get a new one with add-gateway/add-bridge)"
            )
        details = dict(current.details)
        if args.broker is not None:
            host, port = _parse_broker(args.broker)
            details["broker"] = f"{host}:{port}"
        kind: BundleKind = "gateway" if current.kind == "gateway" else "bridge"
        out = _bundle_out(args, args.dir, cn)
        issued = _issue_bundle(fleet, kind, cn, details, args.days, out)
    _say(
        f"Renewed {kind} {cn!r}: new key and certificate valid until {_date(issued.record.not_after)}; "
        f"the old one stays valid until {_date(current.not_after)}.",
        f"Bundle: {out}; on the device: {PROG} install {out.name} --force "
        f"(replaces {kind}.toml: keep local settings in /etc/outpost/{kind}.env), then restart outpost-{kind}",
    )


def cmd_broker_config(args: argparse.Namespace) -> None:
    Fleet.open(args.dir)
    with locked(args.dir):
        fleet = Fleet.open(args.dir)
        hosts: list[str] = list(dict.fromkeys(args.host or []))
        if not hosts:
            seen = []
            for rec in fleet.records():
                addr = rec.details.get("broker")
                if addr and rec.status == "valid":
                    seen.append(_parse_broker(addr)[0])
            hosts = list(dict.fromkeys(seen))
        if not hosts:
            raise ProvisionError(
                "name the host(s) the gateways dial with --host (no issued bundle names one yet)"
            )
        out: Path = args.out if args.out is not None else args.dir / "broker"
        files = broker.write(fleet, out, hosts, args.listen, args.conf_dir, args.days)
    cert_note = (
        "new server certificate" if files.server_cert_reissued else "server certificate kept"
    )
    bridges = ", ".join(files.bridges) or "none yet"
    _say(
        f"Wrote the Mosquitto config to {out}/ ({broker.CONF}, {broker.ACL}, CA, CRL, {cert_note} "
        f"for {', '.join(hosts)}); bridge identities allowed: {bridges}.",
        f"Use it: include {files.conf} from mosquitto.conf (or copy {out}/ to the broker and "
        "pass --conf-dir), then restart Mosquitto.",
    )


def cmd_revoke(args: argparse.Namespace) -> None:
    cn: str = args.id
    Fleet.open(args.dir)
    with locked(args.dir):
        fleet = Fleet.open(args.dir)
        record = fleet.revoke(cn)
        extra: list[Path] = []
        broker_dir = fleet.get("broker_dir")
        if isinstance(broker_dir, str) and Path(broker_dir).is_dir():
            extra.append(Path(broker_dir) / broker.CRL_FILE)
        fleet.write_crl(*extra)
    where = " and ".join(str(p) for p in [args.dir / CRL, *extra])
    _say(
        f"Revoked {record.kind} {cn!r} (serial {record.serial}); CRL rewritten: {where}.",
        "Reload the broker so it rereads the CRL (systemctl reload mosquitto); "
        "restart it to also drop a connection already open.",
    )


def cmd_install(args: argparse.Namespace) -> None:
    result = install(args.bundle, args.root, force=args.force, expect_ca=args.ca_fingerprint)
    what = "gateway" if result.kind == "gateway" else "bridge identity"
    changed = "installed" if len(result.unchanged) < len(result.written) else "already in place"
    _say(
        f"{what.capitalize()} {result.id!r} {changed} in {result.root} ({result.config.name}, tls/; "
        f"key 0600), checked; certificate valid until {result.cert_expires:%Y-%m-%d}, "
        f"CA {result.ca_fingerprint}.",
        f"Next: {result.next_step}",
    )


def cmd_list(args: argparse.Namespace) -> None:
    fleet = Fleet.open(args.dir)
    records = fleet.records()
    if not records:
        _say(f"No certificates issued yet in {args.dir}.")
        return
    for rec in records:
        if rec.kind == "broker":
            continue
        state = rec.status if rec.status == "valid" else f"revoked {_date(rec.revoked_at or '')}"
        site = rec.details.get("site", "")
        _say(f"{rec.cn:<32} {rec.kind:<8} {state:<18} until {_date(rec.not_after)}  {site}")


# --- the command line -------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Fleet identity for Outpost: CA, per-device bundles, broker config, install.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def fleet_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--dir",
            type=Path,
            default=DEFAULT_DIR,
            help="the fleet state directory: CA, index, CRL (default ./fleet)",
        )

    p = sub.add_parser("init-ca", help="create the fleet's certificate authority")
    fleet_dir(p)
    p.add_argument("--name", default="Outpost", help="organisation name in certificates")
    p.add_argument("--days", type=int, default=3650, help="CA validity in days (default 3650)")
    p.set_defaults(func=cmd_init_ca)

    p = sub.add_parser("add-gateway", help="issue a gateway identity and write its bundle")
    fleet_dir(p)
    p.add_argument("id", help="gateway id: one topic segment, e.g. site-a")
    p.add_argument("--site", required=True, help="the site's human name")
    p.add_argument("--broker", required=True, help="HOST:PORT the gateway dials (TLS)")
    p.add_argument("--out", type=Path, help="bundle file or directory (default DIR/bundles/)")
    p.add_argument("--days", type=int, default=825, help="certificate validity (default 825)")
    p.add_argument("--data-dir", default=configs.DEFAULT_DATA_DIR, help="gateway data directory")
    p.add_argument(
        "--interface", action="append", help="LAN interface or address to advertise mDNS on"
    )
    p.add_argument(
        "--replica",
        help="litestream replica: a path (e.g. /mnt/usb/outpost-replica) or s3://bucket/path",
    )
    p.set_defaults(func=cmd_add_gateway)

    p = sub.add_parser("add-bridge", help="issue a central bridge identity and write its bundle")
    fleet_dir(p)
    p.add_argument("name", nargs="?", default="central", help="bridge name (default central)")
    p.add_argument("--broker", required=True, help="HOST:PORT the bridge dials (TLS)")
    p.add_argument("--out", type=Path, help="bundle file or directory (default DIR/bundles/)")
    p.add_argument("--days", type=int, default=825, help="certificate validity (default 825)")
    p.add_argument("--data-dir", default=configs.DEFAULT_DATA_DIR, help="bridge data directory")
    p.add_argument("--database-url", default=configs.DEFAULT_DATABASE_URL, help="central DB URL")
    p.set_defaults(func=cmd_add_bridge)

    p = sub.add_parser("renew", help="a new key and certificate for an identity, same settings")
    fleet_dir(p)
    p.add_argument("id", help=f"gateway id, or {BRIDGE_PREFIX}NAME for a bridge")
    p.add_argument("--broker", help="HOST:PORT, if the broker address changed")
    p.add_argument("--out", type=Path, help="bundle file or directory (default DIR/bundles/)")
    p.add_argument("--days", type=int, default=825, help="certificate validity (default 825)")
    p.set_defaults(func=cmd_renew)

    p = sub.add_parser("broker-config", help="write the Mosquitto config, ACL, CA and CRL")
    fleet_dir(p)
    p.add_argument(
        "--host",
        action="append",
        help="a name or address clients dial (repeatable; default: those in issued bundles)",
    )
    p.add_argument("--listen", default="8883", help="[ADDRESS:]PORT to listen on (default 8883)")
    p.add_argument("--out", type=Path, help="output directory (default DIR/broker)")
    p.add_argument(
        "--conf-dir", help="where the files will live on the broker host (default: --out)"
    )
    p.add_argument("--days", type=int, default=825, help="server certificate validity")
    p.set_defaults(func=cmd_broker_config)

    p = sub.add_parser("revoke", help="revoke an identity and rewrite the CRL")
    fleet_dir(p)
    p.add_argument("id", help=f"gateway id, or {BRIDGE_PREFIX}NAME for a bridge")
    p.set_defaults(func=cmd_revoke)

    p = sub.add_parser("install", help="on the device: install a bundle's config and credentials")
    p.add_argument("bundle", type=Path, help="the bundle file from add-gateway/add-bridge")
    p.add_argument(
        "--root", type=Path, default=Path(bundle.DEFAULT_ROOT), help="default /etc/outpost"
    )
    p.add_argument("--force", action="store_true", help="replace existing files that differ")
    p.add_argument("--ca-fingerprint", help="refuse a bundle whose CA has another fingerprint")
    p.set_defaults(func=cmd_install)

    p = sub.add_parser("list", help="list issued identities")
    fleet_dir(p)
    p.set_defaults(func=cmd_list)
    return add_version(parser)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("days",):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            parser.error(f"--{name} must be at least 1")
    try:
        args.func(args)
    except ProvisionError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

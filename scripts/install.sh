#!/usr/bin/env bash
# Install Outpost as systemd services: a venv under PREFIX, the hardened units,
# the `outpost` system user, and (optionally) a provisioning bundle.
# See docs/install.md. Run as root from the source tree (or an unpacked sdist).
#
#   scripts/install.sh [--bundle FILE] [--bridge] [--no-gateway] [--port80]
#                      [--prefix DIR] [--root DIR] [--no-venv] [--no-start]
#
#   --bundle FILE  install this provisioning bundle (outpost-provision install)
#   --bridge       also install and enable outpost-bridge (the central host)
#   --no-gateway   do not enable outpost-gateway (a central host only)
#   --port80       serve the crews' web app on port 80 (a unit drop-in)
#   --prefix DIR   where the venv and docs go (default /opt/outpost)
#   --root DIR     stage into DIR instead of / (image builds, tests): nothing
#                  is started, users and unit links are made inside DIR
#   --no-venv      leave PREFIX/venv alone (it is built some other way)
#   --no-start     enable the services but do not start them now
set -euo pipefail

PREFIX=/opt/outpost
ROOT=
BUNDLE=
BRIDGE=0
GATEWAY=1
PORT80=0
VENV=1
START=1

die() { echo "install: $*" >&2; exit 1; }
say() { echo "install: $*"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --bundle) BUNDLE=${2:?--bundle needs a file}; shift 2 ;;
    --bridge) BRIDGE=1; shift ;;
    --no-gateway) GATEWAY=0; shift ;;
    --port80) PORT80=1; shift ;;
    --prefix) PREFIX=${2:?--prefix needs a directory}; shift 2 ;;
    --root) ROOT=${2:?--root needs a directory}; shift 2 ;;
    --no-venv) VENV=0; shift ;;
    --no-start) START=0; shift ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

case "$PREFIX" in /*) ;; *) die "--prefix must be an absolute path, got $PREFIX" ;; esac
[ -n "$ROOT" ] && { ROOT=$(realpath -m "$ROOT"); mkdir -p "$ROOT"; }
[ "$ROOT" = / ] && ROOT=
[ -z "$ROOT" ] && [ "$(id -u)" != 0 ] && die "run as root (or stage with --root DIR)"
[ -n "$BUNDLE" ] && [ ! -r "$BUNDLE" ] && die "bundle $BUNDLE not found or not readable"
[ -n "$BUNDLE" ] && [ "$VENV" = 0 ] && [ ! -x "$ROOT$PREFIX/venv/bin/outpost-provision" ] &&
  die "--bundle needs the venv: drop --no-venv"

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[ -f "$SRC/pyproject.toml" ] && [ -d "$SRC/systemd" ] || die "run me from an Outpost source tree ($SRC)"

UNITS=()
[ "$GATEWAY" = 1 ] && UNITS+=(outpost-gateway.service)
[ "$BRIDGE" = 1 ] && UNITS+=(outpost-bridge.service)
[ ${#UNITS[@]} -gt 0 ] || die "nothing to install: --no-gateway without --bridge"
SYSTEMD_RUNNING=0
[ -z "$ROOT" ] && [ -d /run/systemd/system ] && SYSTEMD_RUNNING=1

# 1. The Python package in its own venv (pinned by requirements.lock).
if [ "$VENV" = 1 ]; then
  command -v python3 >/dev/null || die "python3 is missing: apt-get install python3 python3-venv"
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "Python 3.11 or newer is needed (Debian 12 / Raspberry Pi OS bookworm have it)"
  python3 -c 'import ensurepip' 2>/dev/null || die "python3-venv is missing: apt-get install python3-venv"
  say "building the venv in $ROOT$PREFIX/venv (a few minutes on a Pi)"
  mkdir -p "$ROOT$PREFIX"
  [ -x "$ROOT$PREFIX/venv/bin/python" ] || python3 -m venv "$ROOT$PREFIX/venv"
  # Build from a clean copy: pip builds in the tree it is given.
  BUILD=$(mktemp -d)
  trap 'rm -rf "$BUILD"' EXIT
  cp -r "$SRC/pyproject.toml" "$SRC/README.md" "$SRC/outpost" "$SRC/gateway" \
    "$SRC/cloud_bridge" "$SRC/provisioning" "$BUILD/"
  find "$BUILD" -name __pycache__ -prune -exec rm -rf {} +
  # Only the roles this host runs (pyproject extras): a Pi gets the gateway's
  # dependencies, not PostgreSQL's driver, Alembic or the web platform's.
  EXTRAS=()
  [ "$GATEWAY" = 1 ] && EXTRAS+=(gateway)
  [ "$BRIDGE" = 1 ] && EXTRAS+=(central)
  ROLES=$(IFS=,; echo "${EXTRAS[*]}")
  say "installing outpost[$ROLES]"
  "$ROOT$PREFIX/venv/bin/pip" install --quiet --no-warn-script-location \
    -c "$SRC/requirements.lock" "$BUILD[$ROLES]" 2> "$BUILD/pip.log" ||
    { cat "$BUILD/pip.log" >&2; die "pip could not install Outpost into $ROOT$PREFIX/venv"; }
  "$ROOT$PREFIX/venv/bin/outpost-gateway" --help >/dev/null || die "the venv in $ROOT$PREFIX/venv does not run"
fi

# 2. Files: units (ExecStart under PREFIX), drop-in, system user, docs.
install -d -m 0755 "$ROOT/etc/systemd/system" "$ROOT/etc/sysusers.d" "$ROOT$PREFIX/share/doc"
for unit in "${UNITS[@]}"; do
  sed "s#/opt/outpost/#$PREFIX/#g" "$SRC/systemd/$unit" > "$ROOT/etc/systemd/system/$unit.tmp"
  chmod 0644 "$ROOT/etc/systemd/system/$unit.tmp"
  mv "$ROOT/etc/systemd/system/$unit.tmp" "$ROOT/etc/systemd/system/$unit"
done
DROPIN_DIR="$ROOT/etc/systemd/system/outpost-gateway.service.d"
if [ "$PORT80" = 1 ] && [ "$GATEWAY" = 1 ]; then
  install -d -m 0755 "$DROPIN_DIR"
  install -m 0644 "$SRC/systemd/port80.conf" "$DROPIN_DIR/port80.conf"
fi
install -m 0644 "$SRC/systemd/outpost.sysusers" "$ROOT/etc/sysusers.d/outpost.conf"
install -m 0644 "$SRC/docs/install.md" "$ROOT$PREFIX/share/doc/install.md"
# /etc/outpost: config readable by the service, keys root-only (0600) inside.
install -d -m 0755 "$ROOT/etc/outpost"
if [ -n "$ROOT" ]; then
  systemd-sysusers --root="$ROOT" "$ROOT/etc/sysusers.d/outpost.conf"
else
  systemd-sysusers /etc/sysusers.d/outpost.conf
fi
# The data directory exists before the first start, so a restore can fill it.
OUTPOST_UID=$(awk -F: '$1 == "outpost" {print $3}' "$ROOT/etc/passwd")
OUTPOST_GID=$(awk -F: '$1 == "outpost" {print $3}' "$ROOT/etc/group")
install -d -m 0750 -o "$OUTPOST_UID" -g "$OUTPOST_GID" "$ROOT/var/lib/outpost"
say "installed ${UNITS[*]} and the 'outpost' system user"

# 3. Identity and config from the provisioning bundle.
if [ -n "$BUNDLE" ]; then
  "$ROOT$PREFIX/venv/bin/outpost-provision" install "$BUNDLE" --root "$ROOT/etc/outpost"
fi

# 4. Enable (and start, when there is a config to start with).
if [ "$SYSTEMD_RUNNING" = 1 ]; then
  systemctl daemon-reload
  systemctl enable --quiet "${UNITS[@]}"
  for unit in "${UNITS[@]}"; do
    conf=/etc/outpost/${unit#outpost-}
    conf=${conf%.service}.toml
    if [ "$START" = 0 ]; then
      say "$unit enabled; start it with: systemctl start $unit"
    elif [ -f "$conf" ]; then
      systemctl restart "$unit"
      say "$unit started; follow it with: journalctl -u $unit -f"
    else
      say "$unit enabled but not started: no $conf yet (outpost-provision install BUNDLE, then systemctl start $unit)"
    fi
  done
else
  systemctl --root="${ROOT:-/}" enable --quiet "${UNITS[@]}"
  say "enabled ${UNITS[*]} in ${ROOT:-/}; they start at the next boot"
fi

#!/usr/bin/env bash
# Remove Outpost's services and software. Data and identity stay unless told:
# /var/lib/outpost (the database: unsynced field work may be in it),
# /etc/outpost (config, certificates, keys) and the `outpost` user are kept,
# so reinstalling picks up where the gateway left off. See docs/install.md.
#
#   scripts/uninstall.sh [--purge] [--prefix DIR] [--root DIR]
#
#   --purge       also delete /var/lib/outpost, /etc/outpost and the user.
#                 The gateway's database may hold envelopes central never got.
#   --prefix DIR  where the venv was installed (default /opt/outpost)
#   --root DIR    act on a staged root instead of /
set -euo pipefail

PREFIX=/opt/outpost
ROOT=
PURGE=0
UNITS=(outpost-gateway.service outpost-bridge.service)

die() { echo "uninstall: $*" >&2; exit 1; }
say() { echo "uninstall: $*"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --purge) PURGE=1; shift ;;
    --prefix) PREFIX=${2:?--prefix needs a directory}; shift 2 ;;
    --root) ROOT=${2:?--root needs a directory}; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

case "$PREFIX" in /?*) ;; *) die "--prefix must be an absolute path other than /, got $PREFIX" ;; esac
[ -n "$ROOT" ] && { [ -d "$ROOT" ] || die "$ROOT is not a directory"; ROOT=$(realpath "$ROOT"); }
[ "$ROOT" = / ] && ROOT=
[ -z "$ROOT" ] && [ "$(id -u)" != 0 ] && die "run as root (or use --root DIR)"

# 1. Stop and disable the services that are installed.
for unit in "${UNITS[@]}"; do
  [ -f "$ROOT/etc/systemd/system/$unit" ] || continue
  if [ -z "$ROOT" ] && [ -d /run/systemd/system ]; then
    systemctl disable --now --quiet "$unit" || true
  else
    systemctl --root="${ROOT:-/}" disable --quiet "$unit" || true
  fi
done

# 2. Units, drop-ins, the sysusers entry, the software.
for unit in "${UNITS[@]}"; do
  rm -f "$ROOT/etc/systemd/system/$unit"
  rm -rf "$ROOT/etc/systemd/system/$unit.d"
done
rm -f "$ROOT/etc/sysusers.d/outpost.conf"
rm -rf "$ROOT$PREFIX/venv" "$ROOT$PREFIX/share/doc/install.md"
rmdir "$ROOT$PREFIX/share/doc" "$ROOT$PREFIX/share" "$ROOT$PREFIX" 2>/dev/null || true
[ -z "$ROOT" ] && [ -d /run/systemd/system ] && systemctl daemon-reload
say "removed the Outpost services and $PREFIX/venv"

# 3. Data and identity: kept unless --purge.
if [ "$PURGE" = 1 ]; then
  rm -rf "$ROOT/var/lib/outpost" "$ROOT/var/lib/private/outpost" "$ROOT/etc/outpost"
  if [ -n "$ROOT" ]; then
    userdel --root "$ROOT" outpost 2>/dev/null || true
  else
    userdel outpost 2>/dev/null || true
  fi
  say "purged /var/lib/outpost, /etc/outpost and the 'outpost' user"
else
  say "kept /var/lib/outpost (data), /etc/outpost (config and keys) and the 'outpost' user;" \
    "scripts/uninstall.sh --purge deletes them"
fi

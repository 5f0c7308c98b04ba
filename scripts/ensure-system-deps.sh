#!/usr/bin/env bash
# Make sure the system programs Outpost's tests and demo run for real exist:
# mosquitto (broker), chromium (browser tests), systemd-analyze (unit checks).
# On Debian as root they are installed; otherwise one line says what to install.
set -euo pipefail

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)

[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing system packages: ${need[*]}"
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  exit 0
fi
echo "missing system packages: ${need[*]} — install them (e.g. sudo apt-get install ${need[*]}) and run again" >&2
exit 1

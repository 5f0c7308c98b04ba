#!/usr/bin/env bash
# Make sure the system programs Outpost's tests and demo run for real exist:
# mosquitto (broker), chromium (browser tests), systemd-analyze (unit checks),
# iproute2 + avahi-daemon/avahi-utils/dbus (mDNS tests in network namespaces).
# On Debian as root they are installed; otherwise one line says what to install.
set -euo pipefail

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# mDNS tests: network namespaces (ip), and Debian's avahi-browse as a third-party
# browser; the test runs avahi-daemon on a private D-Bus inside its own namespace.
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || need+=(iproute2)
command -v avahi-browse >/dev/null 2>&1 || need+=(avahi-utils)
command -v avahi-daemon >/dev/null 2>&1 || [ -x /usr/sbin/avahi-daemon ] || need+=(avahi-daemon)
command -v dbus-daemon >/dev/null 2>&1 || need+=(dbus)
# The link laboratory (tests/e2e/test_link_lab.py) shapes a link between
# namespaces: iptables-legacy for its NFQUEUE delay and random loss.
command -v iptables-legacy >/dev/null 2>&1 || [ -x /usr/sbin/iptables-legacy ] || need+=(iptables)
# zbarimg reads back the gateway's QR codes in the tests
command -v zbarimg >/dev/null 2>&1 || need+=(zbar-tools)

[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing system packages: ${need[*]}"
  apt-get update -qq >/dev/null
  # Install only, start nothing: a freshly installed avahi-daemon (or mosquitto)
  # must not begin serving on this machine's real network; tests start their own.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  exit 0
fi
echo "missing system packages: ${need[*]} — install them (e.g. sudo apt-get install ${need[*]}) and run again" >&2
exit 1

#!/bin/bash
# Boot a real systemd in the namespaces `unshare` gave us (mount, pid, net,
# uts, ipc, cgroup), with Outpost installed by scripts/install.sh into
# copy-on-write views of /etc and /var: nothing on the host changes.
#
# Usage (as root): unshare --fork --pid --mount --net --uts --ipc --cgroup \
#   boot_systemd.sh BASE REPO BUNDLE
# BASE holds opt/ (bound at /opt/outpost) and the overlay layers.
set -euo pipefail
BASE=$1 REPO=$2 BUNDLE=$3

mount --make-rprivate /
for d in etc var; do
  mkdir -p "$BASE/$d-upper" "$BASE/$d-work"
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=$BASE/$d-upper,workdir=$BASE/$d-work" "/$d"
done
mount -t tmpfs tmpfs /opt
mkdir /opt/outpost /opt/outpost-src
mount --bind "$BASE/opt" /opt/outpost
# The checkout may live under /tmp (a CI clone), which gets a fresh tmpfs below.
mount --bind "$REPO" /opt/outpost-src
mount -t proc proc /proc
umount -R /sys/fs/cgroup 2>/dev/null || true
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ip link set lo up

bash "$REPO/scripts/install.sh" --no-venv --bundle "$BUNDLE"
mkdir -p /etc/systemd/system/outpost-gateway.service.d
cat > /etc/systemd/system/outpost-gateway.service.d/test.conf <<'CONF'
# Test only: a short watchdog, a quick restart, and the stall hook armed.
[Service]
WatchdogSec=3s
RestartSec=1s
Environment=OUTPOST_TEST_STALL_SIGNAL=1 OUTPOST_TEST_STALL_S=30
CONF
cat > /etc/systemd/system/outpost-test.target <<'CONF'
[Unit]
Description=Outpost under test
Wants=outpost-gateway.service
CONF

mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
case "$REPO" in
  /tmp/*) mkdir -p "$REPO" && mount --bind /opt/outpost-src "$REPO" ;;
esac
# What a container manager does: systemd makes / shared only when it boots
# a machine, and credentials are set up through mount propagation.
mount --make-rshared /
exec env container=outpost-test /lib/systemd/systemd --system \
  --unit=outpost-test.target --log-target=journal

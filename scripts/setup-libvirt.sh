#!/usr/bin/env bash
# What the libvirt provider needs, set up only where missing (called by `make setup-vm`, and so by `make test`;
# `make demo` and `make setup` need none of it). It first says what it will change on this machine, then:
#  1. Debian packages: libvirt + QEMU, the headers libvirt-python builds against, mmdebstrap for guest images;
#  2. on a fresh libvirt install, libvirt's `default` NAT network is kept from autostarting (labs never use it);
#  3. the daemons running (virtlogd, libvirtd; started directly where PID 1 is not systemd);
#  4. QEMU run as root, but only where a probe shows it is needed: on machines whose /dev/kvm is present but
#     unusable for libvirt's unprivileged QEMU user, every defineXML stalls 30-60 s while libvirt re-probes
#     KVM; with user/group root in qemu.conf a define takes 0.01-0.04 s (measured on the CI machine kind).
# Silent when all is there. SETUP_DRY_RUN=1: say what it would change, change nothing.
set -euo pipefail

PACKAGES=(libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 qemu-utils
          libvirt-dev pkg-config mmdebstrap e2fsprogs)
QEMU_CONF=${QEMU_CONF:-/etc/libvirt/qemu.conf}
URI=qemu:///system

say() { echo "setup-libvirt: $*"; }

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
answers() { timeout 10 virsh -c "$URI" version >/dev/null 2>&1; }
plan=()
[ ${#missing[@]} -gt 0 ] && plan+=("install the Debian packages ${missing[*]}")
if ! dpkg-query -W -f='${Status}' libvirt-daemon-system 2>/dev/null | grep -q "install ok installed"; then
  plan+=("keep libvirt's 'default' NAT network from autostarting (a fresh install; labs never use it)")
fi
command -v virsh >/dev/null 2>&1 && answers || plan+=("start virtlogd and libvirtd")
if ! grep -qsE '^[[:space:]]*user[[:space:]]*=' "$QEMU_CONF"; then
  plan+=("time one libvirt define; only if it takes over 5 s, add user/group root to $QEMU_CONF and restart libvirtd")
fi
if [ ${#plan[@]} -gt 0 ]; then
  say "for VMs this changes the machine:"
  for step in "${plan[@]}"; do say "  - $step"; done
fi
[ "${SETUP_DRY_RUN:-0}" = 1 ] && exit 0

fresh=0
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    say "missing Debian packages: ${missing[*]}; run 'make setup-vm' as root" >&2
    exit 1
  fi
  dpkg-query -W -f='${Status}' libvirt-daemon-system 2>/dev/null | grep -q "install ok installed" || fresh=1
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[ "$(id -u)" -eq 0 ] || exit 0          # the rest configures the machine's libvirt: root only

if [ "$fresh" = 1 ] && [ -L /etc/libvirt/qemu/networks/autostart/default.xml ]; then
  rm -f /etc/libvirt/qemu/networks/autostart/default.xml
  say "libvirt's 'default' NAT network will not autostart (worm-testbed labs never use it)"
fi

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
systemd_pid1() { [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; }

start_daemons() {
  if systemd_pid1; then
    systemctl start virtlogd.socket libvirtd.service >/dev/null 2>&1 || systemctl start libvirtd
  else
    alive /run/virtlogd.pid || virtlogd -d
    alive /run/libvirtd.pid || libvirtd -d
  fi
  for _ in $(seq 1 100); do answers && return 0; sleep 0.2; done
  say "libvirtd does not answer at $URI after 20 s; see /var/log/libvirt/" >&2
  return 1
}

restart_libvirtd() {
  if systemd_pid1; then
    systemctl restart libvirtd
  else
    # the libvirtd this script started (its own pid file); never by name
    if alive /run/libvirtd.pid; then
      pid=$(cat /run/libvirtd.pid)
      kill "$pid"
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    libvirtd -d
  fi
  for _ in $(seq 1 100); do answers && return 0; sleep 0.2; done
  say "libvirtd did not come back after a restart" >&2
  return 1
}

answers || start_daemons

# qemu.conf: only if nobody set user= already, and only if a define is measurably slow here
if ! grep -qE '^[[:space:]]*user[[:space:]]*=' "$QEMU_CONF"; then
  xml=$(mktemp)
  name="wt-define-probe-$$"
  printf "<domain type='qemu'><name>%s</name><memory unit='MiB'>64</memory><os><type arch='x86_64'>hvm</type></os></domain>" \
    "$name" >"$xml"
  t0=$(date +%s%N)
  timeout 120 virsh -c "$URI" define "$xml" >/dev/null 2>&1 || true
  t1=$(date +%s%N)
  virsh -c "$URI" undefine "$name" >/dev/null 2>&1 || true
  rm -f "$xml"
  ms=$(( (t1 - t0) / 1000000 ))
  if [ "$ms" -gt 5000 ]; then
    say "a libvirt define took ${ms} ms here (libvirt re-probes KVM for its unprivileged QEMU user);"
    say "running QEMU as root (user/group in $QEMU_CONF) and restarting libvirtd"
    printf '\n# worm-testbed (scripts/setup-libvirt.sh): a define took %s ms with the unprivileged QEMU user\nuser = "root"\ngroup = "root"\n' \
      "$ms" >>"$QEMU_CONF"
    restart_libvirtd
  fi
fi

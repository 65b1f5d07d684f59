#!/usr/bin/env bash
# Installs the Debian packages worm-testbed needs, only those that are missing; silent when none are.
# Called by `make setup`. Extra packages may be named on the command line (e.g. for benchmarks).
set -euo pipefail

PACKAGES=(
  iproute2          # ip, tc, bridge: the netns provider
  iptables          # -j NFQUEUE for the throttle daemon (nft's queue statement is not built in here)
  nftables          # nft: rule inspection, netdev tables
  conntrack         # conntrack tables in the throttle's tests
  tcpdump           # the sniffer's capture
  tshark            # independent pcap reader used to cross-check ours in tests
  openssh-server    # one sshd per lab host on the admin LAN
  openssh-client    # ssh-keygen for lab keys
  libnetfilter-queue-dev  # headers the NetfilterQueue binding compiles against
  gcc               # builds NetfilterQueue
  procps            # ps, pgrep used only for diagnostics
  make
)
PACKAGES+=("$@")

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: missing Debian packages: ${missing[*]}" >&2
  echo "setup: run 'make setup' as root (or: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

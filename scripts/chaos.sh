#!/usr/bin/env bash
# Fault-injection harness: real keyraft processes in network namespaces,
# faults, and checkers (see docs/chaos.md).
#   scripts/chaos.sh [--short] [--seed N] [--duration D] [other flags of chaos/cmd/chaos]
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "chaos.sh: needs root: it creates network namespaces, veth pairs, a bridge and iptables rules" >&2
  exit 2
fi
for tool in ip iptables; do
  if ! command -v "$tool" >/dev/null; then
    echo "chaos.sh: '$tool' is missing (Debian: apt-get install iproute2 iptables)" >&2
    exit 2
  fi
done

bin=$(mktemp -d /tmp/keyraft-chaos-bin.XXXXXX)
cleanup() {
  # The harness cleans up after itself; this catches a harness killed hard.
  for ns in $(ip netns list 2>/dev/null | awk '/^krc-(n[0-9]+|probe)/ {print $1}'); do ip netns del "$ns" 2>/dev/null || true; done
  for l in $(ip -o link show 2>/dev/null | awk -F": " '{print $2}' | cut -d@ -f1 | grep "^krcv[0-9]"); do ip link del "$l" 2>/dev/null || true; done
  while iptables -D FORWARD -i krcbr0 -o krcbr0 -j ACCEPT 2>/dev/null; do :; done
  ip link del krcbr0 2>/dev/null || true
  rm -rf "$bin"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

go build -o "$bin/keyraft" ./cmd/keyraft
go build -o "$bin/chaos" ./chaos/cmd/chaos
"$bin/chaos" --bin "$bin/keyraft" "$@"

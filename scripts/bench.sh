#!/usr/bin/env bash
# keyraft's benchmark suite (issue "keyraft performance"), on loopback.
#
#   scripts/bench.sh            default sizes (1M keys), about 10 minutes
#   scripts/bench.sh --quick    small sizes and short runs, under 3 minutes
#   scripts/bench.sh --long     10M keys too
#   scripts/bench.sh --only http,writes   some steps (inproc, http, revoke, writes, scale)
#
# Installs what it needs (Debian: wrk, redis-server, etcd-server; vegeta
# v12.13.0 with `go install` into a cache dir, so go.mod is untouched),
# builds keyraft, the HTTP floor and the runner, then runs bench/cmd/benchrun,
# which prints one table and writes bench/results/latest.json (and latest.md).
# See bench/README.md.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null || missing+=(redis-server redis-tools)
command -v etcd >/dev/null || missing+=(etcd-server)
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench.sh: installing ${missing[*]}" >&2
  $sudo apt-get install -y "${missing[@]}" >&2 || { $sudo apt-get update >&2 && $sudo apt-get install -y "${missing[@]}" >&2; }
fi

tools=${KEYRAFT_BENCH_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/keyraft-bench}
mkdir -p "$tools"
if [ ! -x "$tools/vegeta" ]; then
  echo "bench.sh: installing vegeta v12.13.0 into $tools" >&2
  GOBIN="$tools" go install github.com/tsenart/vegeta/v12@v12.13.0
fi

build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
go build -o "$build/keyraft" ./cmd/keyraft
go build -o "$build/httpfloor" ./bench/cmd/httpfloor
go build -o "$build/benchrun" ./bench/cmd/benchrun

"$build/benchrun" --keyraft "$build/keyraft" --floor "$build/httpfloor" --vegeta "$tools/vegeta" --repo "$root" "$@"

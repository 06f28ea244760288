#!/usr/bin/env bash
# A local keyraft cluster of real processes on loopback.
#
#   scripts/cluster.sh up N     build keyraft, start N nodes, print the root key and addresses
#   scripts/cluster.sh status   the processes and the cluster as the nodes see it
#   scripts/cluster.sh down     stop every node (SIGTERM) and delete the cluster dir
#
# Environment: KEYRAFT_CLUSTER_DIR (default ./.keyraft-cluster), KEYRAFT_PORT_BASE
# (default 18000: node i gets HTTP base+i, Raft base+100+i, gossip base+200+i),
# KEYRAFT_BIN (a prebuilt binary; default: go build into the cluster dir),
# KEYRAFT_GOSSIP_KEY (optional base64 gossip key). Extra `up` arguments go to every node.
set -euo pipefail
umask 077 # the nodes' output holds the root key

dir=${KEYRAFT_CLUSTER_DIR:-./.keyraft-cluster}
case $dir in /*) ;; *) dir=$PWD/$dir ;; esac # the build runs elsewhere
base=${KEYRAFT_PORT_BASE:-18000}
root=$(cd "$(dirname "$0")/.." && pwd)

die() { echo "cluster.sh: $*" >&2; exit 1; }

node_count() { ls "$dir"/node*.pid 2>/dev/null | wc -l; }

# root_key waits (up to 30 s) for a node to print the root key: a node is
# ready once the cluster is initialized, a moment before it prints it.
root_key() {
  local i key
  for ((i = 0; i < 300; i++)); do
    key=$(cat "$dir"/node*.out 2>/dev/null | grep -o 'rk_live_[0-9A-Za-z]*' | head -1 || true)
    if [ -n "$key" ]; then echo "$key"; return 0; fi
    sleep 0.1
  done
  return 1
}

wait_ready() { # port, seconds
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    if curl -fs "http://127.0.0.1:$1/readyz" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  return 1
}

up() {
  local n=${1:-}
  [[ $n =~ ^[1-9][0-9]*$ ]] || die "usage: cluster.sh up N [serve flags]"
  shift
  [ -e "$dir" ] && die "$dir exists: run 'cluster.sh down' first"
  mkdir -p "$dir"
  local bin=${KEYRAFT_BIN:-}
  if [ -z "$bin" ]; then
    bin="$dir/keyraft"
    (cd "$root" && go build -o "$bin" ./cmd/keyraft) || die "build failed"
  fi
  echo "$bin" >"$dir/bin"
  local i j join
  for ((i = 1; i <= n; i++)); do
    join=""
    for ((j = 1; j <= n; j++)); do
      [ "$j" = "$i" ] || join+="${join:+,}127.0.0.1:$((base + 200 + j))"
    done
    local args=(serve --data-dir "$dir/node$i" --node-id "node$i"
      --http-addr "127.0.0.1:$((base + i))" --raft-addr "127.0.0.1:$((base + 100 + i))"
      --gossip-addr "127.0.0.1:$((base + 200 + i))" --gossip-profile local)
    [ "$n" -gt 1 ] && args+=(--bootstrap-expect "$n" --join "$join")
    # KEYRAFT_GOSSIP_KEY, when set, reaches every node through the
    # environment: on the command line ps would show it.
    mkdir -p "$dir/node$i"
    "$bin" "${args[@]}" "$@" >"$dir/node$i.out" 2>"$dir/node$i.log" &
    echo $! >"$dir/node$i.pid"
  done
  for ((i = 1; i <= n; i++)); do
    if ! wait_ready $((base + i)) 30; then
      kill -0 "$(cat "$dir/node$i.pid")" 2>/dev/null || echo "cluster.sh: node$i exited" >&2
      tail -20 "$dir/node$i.log" >&2
      die "node$i is not ready; see $dir/node$i.log (the others are still running: 'cluster.sh down' stops them)"
    fi
  done
  local key
  key=$(root_key) || die "no root key printed; see $dir/node*.out (the nodes are still running: 'cluster.sh down' stops them)"
  echo "$key" >"$dir/root.key"
  echo "root key: $key"
  for ((i = 1; i <= n; i++)); do
    echo "node$i  http=127.0.0.1:$((base + i))  raft=127.0.0.1:$((base + 100 + i))  gossip=127.0.0.1:$((base + 200 + i))  pid=$(cat "$dir/node$i.pid")"
  done
  echo "export KEYRAFT_ADDR=http://127.0.0.1:$((base + 1)) KEYRAFT_TOKEN=$key"
}

status() {
  [ -d "$dir" ] || die "no cluster in $dir"
  local i n pid state
  n=$(node_count)
  for ((i = 1; i <= n; i++)); do
    pid=$(cat "$dir/node$i.pid" 2>/dev/null || echo)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then state=running; else state=stopped; fi
    echo "node$i  $state  pid=${pid:--}  http=127.0.0.1:$((base + i))  ready=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$((base + i))/readyz" 2>/dev/null || echo -)"
  done
  for ((i = 1; i <= n; i++)); do
    if curl -fs "http://127.0.0.1:$((base + i))/healthz" >/dev/null 2>&1; then
      KEYRAFT_ADDR="http://127.0.0.1:$((base + i))" KEYRAFT_TOKEN=$(cat "$dir/root.key") "$(cat "$dir/bin")" cluster status
      return
    fi
  done
  echo "no node answers"
}

down() {
  [ -d "$dir" ] || { echo "no cluster in $dir"; return 0; }
  local f pid
  for f in "$dir"/node*.pid; do
    [ -e "$f" ] || continue
    pid=$(cat "$f")
    kill -TERM "$pid" 2>/dev/null || true
  done
  for f in "$dir"/node*.pid; do
    [ -e "$f" ] || continue
    pid=$(cat "$f")
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$dir"
  echo "cluster stopped and $dir removed"
}

case "${1:-}" in
  up) shift; up "$@" ;;
  status) status ;;
  down) down ;;
  *) die "usage: cluster.sh up N | status | down" ;;
esac

#!/usr/bin/env bash
# Cluster mode on one machine: redis-server, 6 gateways sharing it, one upstream and 100,000 SSE
# clients from several load-generator processes (bench/loadgen's `sse-cluster`). Reports upstream
# requests per interval for the whole cluster, the time one 1 KB change takes to reach every
# client, PSS per client on each gateway against one gateway alone, Redis's CPU and commands per
# change, and the takeover after a SIGKILL of the lease holder. Prints a table, writes JSON.
#
#   bench/cluster.sh               100,000 clients -> bench/results/cluster.json
#   bench/cluster.sh --quick       6,000 clients, shorter phases -> bench/results/cluster-quick.json
#   bench/cluster.sh --no-cluster  the same gateways without `cluster:` (each polls alone)
#   BENCH_CLIENTS=20000 BENCH_GATEWAYS=3 bench/cluster.sh --quick    any size
#
# Needs redis-server and redis-cli (Debian's redis-server package), python3 and `ulimit -n` of
# 20,000 (each process stays under it: a gateway holds ~16,700 clients, a load generator at most
# 15,000). Never uses port 6379. Stops every process it started, however it exits.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target=${CARGO_TARGET_DIR:-$root/target}
lg_target=${CARGO_TARGET_DIR:-$root/bench/loadgen/target}

mode=full cluster=1
for arg in "$@"; do
  case $arg in
    --quick) mode=quick ;;
    --no-cluster) cluster=0 ;;
    *) echo "usage: bench/cluster.sh [--quick] [--no-cluster]" >&2; exit 2 ;;
  esac
done
case $mode in
  full)  clients=100000; changes=5; idle=10; out=cluster.json ;;
  quick) clients=6000; changes=3; idle=5; out=cluster-quick.json ;;
esac
[ $cluster = 1 ] || out=${out%.json}-no-cluster.json
clients=${BENCH_CLIENTS:-$clients}
n_gw=${BENCH_GATEWAYS:-6}
interval=1   # seconds between polls: the unit of "upstream requests per interval"
ulimit -n 20000 2>/dev/null || true
if [ "$(ulimit -n)" -lt 20000 ]; then
  echo "bench: ulimit -n is $(ulimit -n) (hard $(ulimit -Hn)); 20,000 is needed" >&2; exit 1
fi
for tool in redis-server redis-cli python3; do
  command -v $tool >/dev/null || { echo "bench: $tool is not installed" >&2; exit 1; }
done

cargo build --release --quiet
(cd bench/loadgen && CARGO_TARGET_DIR=$lg_target cargo build --release --quiet)
gateway=$target/release/sse-gateway
loadgen=$lg_target/release/sse-cluster
work=$(mktemp -d)
pids=()
# Every process this script started, by pid: TERM, then KILL what is left after 5 s.
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 50); do
    local alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# N distinct free loopback ports (all held until all are chosen, so no two are the same; the
# kernel picks them from the ephemeral range, which never holds 6379).
free_ports() { python3 -c 'import socket,sys; ss=[socket.socket() for _ in range(int(sys.argv[1]))]; [s.bind(("127.0.0.1",0)) for s in ss]; print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.05; done; return 1; }

# start_redis: sets redis_pid, redis_port.
start_redis() {
  redis_port=$(free_ports 1)
  [ "$redis_port" != 6379 ] || { echo "bench: refusing port 6379" >&2; exit 1; }
  redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no --dir "$work" \
    --daemonize no --loglevel warning >"$work/redis.log" 2>&1 & redis_pid=$!
  pids+=("$redis_pid")
  for _ in $(seq 100); do
    [ "$(redis-cli -h 127.0.0.1 -p "$redis_port" PING 2>/dev/null)" = PONG ] && return
    sleep 0.05
  done
  echo "bench: redis-server did not start:" >&2; cat "$work/redis.log" >&2; exit 1
}

# start_gateway NODE UPSTREAM_PORT WITH_CLUSTER: appends "pid,port,admin" to gw_args.
start_gateway() {
  local node=$1 up=$2 port admin pid
  read -r port admin <<< "$(free_ports 2)"
  {
    echo "listen: 127.0.0.1:$port"
    echo "admin: { listen: 127.0.0.1:$admin }"
    echo "limits: { max_clients: 19900 }"
    if [ "$3" = 1 ]; then
      echo "cluster: { redis: \"redis://127.0.0.1:$redis_port/0\", prefix: bench, node_id: $node, lease_ttl: 2s, timeout: 500ms }"
    fi
    cat <<YAML
upstreams: { bench: { url: "http://127.0.0.1:$up", headers: { x-bench-node: $node } } }
streams:
  - path: /sse/doc
    upstream: bench
    poll: /doc
    interval: ${interval}s
    refresh_limit: 1ms   # each change is pushed with a refresh, a second apart
YAML
  } > "$work/$node.yaml"
  RUST_LOG=warn "$gateway" --config "$work/$node.yaml" 2>"$work/$node.log" & pid=$!
  pids+=("$pid")
  if ! wait_port "$port" || ! kill -0 "$pid" 2>/dev/null; then
    echo "bench: gateway $node did not start:" >&2; cat "$work/$node.log" >&2; exit 1
  fi
  gw_args+=(--gateway "$pid,$port,$admin")
}

# measure OUT ARGS...: the coordinator in the background (so the trap can stop it), its JSON.
measure() {
  local out=$1 pid; shift
  "$loadgen" run "$@" >"$out" 2>"$work/loadgen.log" & pid=$!
  pids+=("$pid")
  if ! wait "$pid"; then echo "bench: sse-cluster failed:" >&2; cat "$work/loadgen.log" >&2; exit 1; fi
}

stop_all() {  # the gateways and Redis of one phase, before the next starts
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}

# 1. One gateway alone with one gateway's share of the clients: the PSS figure to compare with.
per_gw=$(( clients / n_gw ))
echo "bench: one gateway alone, $per_gw clients (memory baseline)" >&2
up_port=$(free_ports 1); gw_args=()
start_gateway g0 "$up_port" 0
measure "$work/single.json" "${gw_args[@]}" --upstream "127.0.0.1:$up_port" --clients "$per_gw" \
  --changes 0 --idle 0
stop_all

# 2. Redis and the gateways, all the clients.
echo "bench: $n_gw gateways ($([ $cluster = 1 ] && echo "cluster on redis-server" || echo "no cluster")), $clients clients" >&2
[ $cluster = 1 ] && start_redis
up_port=$(free_ports 1); gw_args=()
for i in $(seq "$n_gw"); do start_gateway "g$i" "$up_port" $cluster; done
extra=(--kill-holder)
[ $cluster = 1 ] && extra+=(--redis-pid "$redis_pid" --redis-port "$redis_port") || extra+=(--refresh-all)
measure "$work/cluster.json" "${gw_args[@]}" --upstream "127.0.0.1:$up_port" --clients "$clients" \
  --changes "$changes" --idle "$idle" --interval "$interval" "${extra[@]}"
for i in $(seq "$n_gw"); do
  if grep -qi 'panick' "$work/g$i.log"; then echo "bench: g$i logged:" >&2; tail -5 "$work/g$i.log" >&2; fi
done
stop_all

python3 bench/cluster_report.py "$work/single.json" "$work/cluster.json" "bench/results/$out" \
  "bench/cluster.sh $*" "$cluster"

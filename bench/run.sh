#!/usr/bin/env bash
# Benchmarks the gateway with bench/loadgen: memory per idle client, fan-out latency, CPU per
# change, upstream cost. Prints a table and writes bench/results.json.
#   bench/run.sh [--quick]      (--quick: 1,000 clients, one repetition)
#   BENCH_CLIENTS="1000 10000" BENCH_REPS=1 bench/run.sh
# Needs: a release build (done here), python3, `ulimit -n` of 20,000. Installs nothing.
# Peers, each run when installed: a minimal Node SSE server (bench/peers/node-sse.js) and nchan
# (Debian: nginx libnginx-mod-nchan). Pushpin is not wired in yet (issue 6).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target=${CARGO_TARGET_DIR:-$root/target}
lg_target=${CARGO_TARGET_DIR:-$root/bench/loadgen/target}

quick=0; [ "${1:-}" = "--quick" ] && quick=1
if [ $quick = 1 ]; then sizes=(1000); reps=1; else sizes=(1000 10000 19000); reps=3; fi
# Overrides for a quicker look: BENCH_CLIENTS="10000" BENCH_REPS=1 bench/run.sh
read -r -a sizes <<< "${BENCH_CLIENTS:-${sizes[*]}}"
reps=${BENCH_REPS:-$reps}
ulimit -n 20000 || true

cargo build --release --quiet
(cd bench/loadgen && cargo build --release --quiet)
gateway=$target/release/sse-gateway
loadgen=$lg_target/release/sse-loadgen

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

run_gateway() {  # mode clients -> one JSON line
  local mode=$1 n=$2 port admin up dir pid
  port=$(free_port); admin=$(free_port); up=$(free_port); dir=$(mktemp -d)
  cat > "$dir/g.yaml" <<YAML
listen: 127.0.0.1:$port
admin: { listen: 127.0.0.1:$admin }
limits: { max_clients: 30000 }
upstreams: { bench: { url: "http://127.0.0.1:$up" } }
streams:
  - path: /sse/doc
    upstream: bench
    poll: /doc
    interval: 1h
    diff: $mode
YAML
  RUST_LOG=warn "$gateway" --config "$dir/g.yaml" 2>"$dir/stderr" & pid=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done
  "$loadgen" --url "http://127.0.0.1:$port/sse/doc" --clients "$n" --changes 5 \
    --upstream "127.0.0.1:$up" --refresh "http://127.0.0.1:$admin/streams/refresh?path=/sse/doc" \
    --pid $pid | python3 -c "import json,sys; d=json.load(sys.stdin); d['server']='gateway-$mode'; print(json.dumps(d))"
  kill $pid; wait $pid 2>/dev/null || true
  rm -rf "$dir"
}

wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.05; done; }

tag() { python3 -c "import json,sys; d=json.load(sys.stdin); d['server']='$1'; print(json.dumps(d))"; }

run_node() {  # clients -> one JSON line
  local n=$1 port pid
  port=$(free_port)
  node bench/peers/node-sse.js "$port" & pid=$!
  wait_port "$port"
  "$loadgen" --url "http://127.0.0.1:$port/sub" --clients "$n" --changes 5 \
    --publish "http://127.0.0.1:$port/pub" --pid $pid | tag node
  kill $pid; wait $pid 2>/dev/null || true
}

run_nchan() {  # clients -> one JSON line (nginx + libnginx-mod-nchan, 2 workers)
  local n=$1 port dir pid
  port=$(free_port); dir=$(mktemp -d)
  cat > "$dir/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_nchan_module.so;
worker_processes 2;
worker_rlimit_nofile 25000;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 25000; }
http {
  access_log off;
  client_body_temp_path $dir;
  server {
    listen 127.0.0.1:$port;
    location = /sub { nchan_subscriber eventsource; nchan_channel_id bench; nchan_eventsource_ping_interval 0; }
    location = /pub { nchan_publisher; nchan_channel_id bench; }
  }
}
CONF
  nginx -c "$dir/nginx.conf" -p "$dir" -g 'daemon off;' 2>"$dir/stderr" & pid=$!
  wait_port "$port"
  "$loadgen" --url "http://127.0.0.1:$port/sub" --clients "$n" --changes 5 \
    --publish "http://127.0.0.1:$port/pub" --pid $pid | tag nchan
  kill $pid; wait $pid 2>/dev/null || true
  rm -rf "$dir"
}

results=()
for n in "${sizes[@]}"; do
  for r in $(seq $reps); do
    # Peers interleaved within a repetition; each that is installed runs.
    for mode in json-patch snapshot; do
      results+=("$(run_gateway $mode "$n")")
    done
    if command -v node >/dev/null; then results+=("$(run_node "$n")"); fi
    if [ -e /usr/lib/nginx/modules/ngx_nchan_module.so ]; then results+=("$(run_nchan "$n")"); fi
  done
done
lines=$(mktemp)
printf '%s\n' "${results[@]}" > "$lines"
python3 - "$root/bench/results.json" "$lines" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
json.dump(rows, open(sys.argv[1], "w"), indent=1)
groups = {}
for r in rows:
    groups.setdefault((r["server"], r["clients"]), []).append(r)
print(f'{"server":22} {"N":>6} {"PSS KB/client":>14} {"p50 ms":>8} {"p99 ms":>8} {"last ms":>8} {"CPU ms/chg":>10} {"dropped":>7} {"missing":>7} {"upstream req":>12}')
for (server, n), rs in sorted(groups.items()):
    med = lambda f: statistics.median(f(r) for r in rs)
    spread = lambda f: max(f(r) for r in rs) - min(f(r) for r in rs)
    print(f'{server:22} {n:>6} {med(lambda r: r["pss_kb_per_client"]):>9.1f} ±{spread(lambda r: r["pss_kb_per_client"]):<4.1f}'
          f' {med(lambda r: r["latency_ms"]["p50"]):>8.1f} {med(lambda r: r["latency_ms"]["p99"]):>8.1f}'
          f' {med(lambda r: r["last_client_ms_median"]):>8.1f} {med(lambda r: r["server_cpu_ms_per_change"]):>10.1f}'
          f' {max(r["dropped"] for r in rs):>7} {max(r["events_missing"] for r in rs):>7} {med(lambda r: r["upstream_requests"]):>12}')
PY
rm -f "$lines"

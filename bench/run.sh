#!/usr/bin/env bash
# Benchmarks the gateway against nchan, Pushpin and a minimal Node server with bench/loadgen:
# memory per idle client, fan-out latency and CPU per change, upstream cost, and the Streamdata
# scenario. Prints tables, writes JSON and (with gnuplot) a chart.
#
#   bench/run.sh            full run: N = 1,000 / 10,000 / 19,000, 3 repetitions
#                           -> bench/results/results.json, bench/results/chart.svg
#   bench/run.sh --quick    N = 1,000, one repetition, shorter scenarios (under 10 minutes)
#                           -> bench/results/quick.json
#   bench/run.sh --smoke    the gateway alone with 50 clients; fails unless every client got
#                           every event and the upstream saw one request per change (CI)
#   BENCH_CLIENTS="10000" BENCH_REPS=1 bench/run.sh     any sizes and repetitions
#
# Needs python3 and `ulimit -n` of 20,000; installs nothing. Peers run when installed (Debian):
# nodejs (Node), nginx + libnginx-mod-nchan (nchan), pushpin (Pushpin); gnuplot for the chart.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target=${CARGO_TARGET_DIR:-$root/target}
lg_target=${CARGO_TARGET_DIR:-$root/bench/loadgen/target}

mode=full
case "${1:-}" in
  --quick) mode=quick ;;
  --smoke) mode=smoke ;;
  "") ;;
  *) echo "usage: bench/run.sh [--quick|--smoke]" >&2; exit 2 ;;
esac
case $mode in
  full)  sizes=(1000 10000 19000); reps=3; scenario_s=20; cost_sizes=(1 100 10000); out=results.json ;;
  quick) sizes=(1000); reps=1; scenario_s=10; cost_sizes=(1 100); out=quick.json ;;
  smoke) sizes=(50); reps=1; scenario_s=0; cost_sizes=(); out="" ;;
esac
read -r -a sizes <<< "${BENCH_CLIENTS:-${sizes[*]}}"
reps=${BENCH_REPS:-$reps}
ulimit -n 20000 || true

cargo build --release --quiet
(cd bench/loadgen && CARGO_TARGET_DIR=$lg_target cargo build --release --quiet)
gateway=$target/release/sse-gateway
loadgen=$lg_target/release/sse-loadgen
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# N distinct free ports (all held until all are chosen, so no two are the same).
free_ports() { python3 -c 'import socket,sys; ss=[socket.socket() for _ in range(int(sys.argv[1]))]; [s.bind(("127.0.0.1",0)) for s in ss]; print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.05; done; }
tag() { python3 -c "import json,sys; d=json.load(sys.stdin); d['server']='$1'; d['run']='$2'; print(json.dumps(d))"; }
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# start_gateway DIFF PATH POLL INTERVAL: starts the gateway; sets gw_pid, gw_port, gw_admin, gw_up.
start_gateway() {
  read -r gw_port gw_admin gw_up <<< "$(free_ports 3)"
  cat > "$work/g.yaml" <<YAML
listen: 127.0.0.1:$gw_port
admin: { listen: 127.0.0.1:$gw_admin }
limits: { max_clients: 19900 }
upstreams: { bench: { url: "http://127.0.0.1:$gw_up" } }
streams:
  - path: $2
    upstream: bench
    poll: $3
    interval: $4
    diff: $1
    refresh_limit: 1ms   # the fan-out runs push each change with a refresh, 200 ms apart
YAML
  RUST_LOG=warn "$gateway" --config "$work/g.yaml" 2>"$work/gateway.log" & gw_pid=$!
  wait_port "$gw_port"
  if ! kill -0 "$gw_pid" 2>/dev/null; then
    echo "bench: the gateway did not start:" >&2; cat "$work/gateway.log" >&2
  fi
}

# The gateway's log when a run lost every client: a broken start, not a measurement.
check_run() {  # json-line
  if python3 -c 'import json,sys; d=json.loads(sys.argv[1]); sys.exit(0 if d.get("connected",0) else 1)' "$1"; then
    echo "$1"
  else
    echo "bench: no client connected; gateway log:" >&2; tail -20 "$work/gateway.log" >&2
    echo "$1"
  fi
}

# Fan-out: N clients on one stream, 5 changes of a 1 KB document, each pushed by the source.
run_gateway() {  # diff clients
  start_gateway "$1" /sse/doc /doc 1h
  local line
  line=$("$loadgen" --url "http://127.0.0.1:$gw_port/sse/doc" --clients "$2" --changes 5 \
    --upstream "127.0.0.1:$gw_up" --refresh "http://127.0.0.1:$gw_admin/streams/refresh?path=/sse/doc" \
    --pid $gw_pid | tag "gateway-$1" fanout)
  stop $gw_pid
  check_run "$line"
}

run_node() {  # clients
  local port pid; port=$(free_port)
  node bench/peers/node-sse.js "$port" & pid=$!
  wait_port "$port"
  "$loadgen" --url "http://127.0.0.1:$port/sub" --clients "$1" --changes 5 \
    --publish "http://127.0.0.1:$port/pub" --pid $pid | tag node fanout
  stop $pid
}

run_nchan() {  # clients (nginx + libnginx-mod-nchan, 2 workers)
  local port pid dir; port=$(free_port); dir=$(mktemp -d -p "$work")
  sed -e "s|@DIR@|$dir|g" -e "s|@PORT@|$port|g" bench/peers/nchan.conf > "$dir/nginx.conf"
  nginx -c "$dir/nginx.conf" -p "$dir" -g 'daemon off;' 2>"$dir/stderr" & pid=$!
  wait_port "$port"
  "$loadgen" --url "http://127.0.0.1:$port/sub" --clients "$1" --changes 5 \
    --publish "http://127.0.0.1:$port/pub" --pid $pid | tag nchan fanout
  stop $pid
}

run_pushpin() {  # clients (Pushpin with a GRIP origin; settings in bench/peers/pushpin.sh)
  local http ctl origin pid dir; read -r http ctl origin <<< "$(free_ports 3)"
  dir=$(mktemp -d -p "$work")
  setsid bash bench/peers/pushpin.sh "$dir" "$http" "$ctl" "$origin" >"$dir/stdout" 2>&1 & pid=$!
  wait_port "$http"; wait_port "$ctl"; wait_port "$origin"; sleep 1
  # The runner's tree (condure, zurl, proxy, handler) is the server; the origin is not.
  "$loadgen" --url "http://127.0.0.1:$http/sub" --clients "$1" --changes 5 \
    --publish "http://127.0.0.1:$ctl/publish/" --publish-format pushpin \
    --pid "$(cat "$dir/pushpin.pid")" | tag pushpin fanout
  kill -TERM -- -"$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
  sleep 1
}

# Upstream cost: N clients on one stream polled every second, for 10 s; unchanged (304s) and
# changing on every poll.
run_cost() {  # clients ratio
  start_gateway json-patch /sse/doc/{id} /doc/{id} 1s
  "$loadgen" --url "http://127.0.0.1:$gw_port/sse/doc/0" --clients "$1" --streams 1 --size 1000 \
    --change-ratio "$2" --duration 10 --settle 1 --upstream "127.0.0.1:$gw_up" --pid $gw_pid \
    | tag gateway "cost-$2"
  stop $gw_pid
}

# The Streamdata scenario: 3,000 clients over 100 streams, 50 KB documents with 20% of the
# items changed on every poll, 500 ms interval; latency from the upstream serving a version.
run_streamdata() {
  start_gateway json-patch /sse/doc/{id} /doc/{id} 500ms
  "$loadgen" --url "http://127.0.0.1:$gw_port/sse/doc/{i}" --clients 3000 --streams 100 \
    --size 50000 --change-ratio 0.2 --duration "$scenario_s" --upstream "127.0.0.1:$gw_up" \
    --pid $gw_pid | tag gateway streamdata
  stop $gw_pid
}

have_node() { command -v node >/dev/null; }
have_nchan() { command -v nginx >/dev/null && [ -e /usr/lib/nginx/modules/ngx_nchan_module.so ]; }
have_pushpin() { command -v pushpin >/dev/null && [ -f bench/peers/pushpin.sh ]; }

lines=$work/lines
: > "$lines"
for n in "${sizes[@]}"; do
  for r in $(seq "$reps"); do
    # Peers interleaved within a repetition, so a noisy minute hits them alike.
    run_gateway json-patch "$n" >> "$lines"
    [ $mode = smoke ] && continue
    run_gateway snapshot "$n" >> "$lines"
    if have_nchan; then run_nchan "$n" >> "$lines"; fi
    if have_pushpin; then run_pushpin "$n" >> "$lines"; fi
    if have_node; then run_node "$n" >> "$lines"; fi
  done
done
if [ $mode != smoke ]; then
  for n in "${cost_sizes[@]}"; do
    run_cost "$n" 0 >> "$lines"
    run_cost "$n" 0.2 >> "$lines"
  done
  for r in $(seq "$reps"); do run_streamdata >> "$lines"; done
fi

python3 bench/report.py "$lines" "$mode" ${out:+"bench/results/$out"}
if [ -n "$out" ] && [ $mode = full ] && command -v gnuplot >/dev/null; then
  python3 bench/report.py --chart-data "bench/results/$out" > "$work/chart.dat"
  blocks=$(grep -c '^"' "$work/chart.dat")
  gnuplot -e "data='$work/chart.dat'; out='bench/results/chart.svg'; blocks=$blocks" bench/chart.gp
  echo "chart: bench/results/chart.svg"
fi

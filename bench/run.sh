#!/usr/bin/env bash
# Benchmarks the gateway against nchan, Pushpin and a minimal Node server with bench/loadgen:
# memory per idle client, fan-out latency and CPU per change, upstream cost, and the Streamdata
# scenario. Prints tables, writes JSON and (with gnuplot) a chart.
#
#   bench/run.sh            full run: N = 1,000 / 10,000 / 19,000, 3 repetitions
#                           -> bench/results/results.json, bench/results/chart.svg
#   bench/run.sh --quick    N = 1,000, one repetition, shorter scenarios (under 10 minutes)
#                           -> bench/results/quick.json
#   bench/run.sh --smoke    the gateway alone with 50 clients, then 50 over TLS (HTTP/1.1) and
#                           50 over HTTP/2; fails unless every client got every event and the
#                           upstream saw one request per change (CI)
#   bench/run.sh --tls      the gateway and nchan over TLS, N = 1,000 / 10,000, 3 repetitions:
#                           HTTP/1.1 over TLS, HTTP/2 (a connection per client), HTTP/2 with 100
#                           clients per connection, and handshakes per second; plain HTTP/1.1 of
#                           both for reference -> bench/results/tls.json, tls.svg (about 12 minutes)
#   BENCH_CLIENTS="10000" BENCH_REPS=1 bench/run.sh     any sizes and repetitions
#
# Needs python3, openssl (--tls, --smoke) and `ulimit -n` of 20,000; installs nothing. Peers run
# when installed (Debian): nodejs (Node), nginx + libnginx-mod-nchan (nchan), pushpin (Pushpin);
# gnuplot for the chart.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target=${CARGO_TARGET_DIR:-$root/target}
# LOADGEN_TARGET_DIR keeps the load generator's build apart from the gateway's CARGO_TARGET_DIR;
# BENCH_GATEWAY names a gateway binary to use instead of building one.
lg_target=${LOADGEN_TARGET_DIR:-${CARGO_TARGET_DIR:-$root/bench/loadgen/target}}

mode=full
case "${1:-}" in
  --quick) mode=quick ;;
  --smoke) mode=smoke ;;
  --tls) mode=tls ;;
  "") ;;
  *) echo "usage: bench/run.sh [--quick|--smoke|--tls]" >&2; exit 2 ;;
esac
case $mode in
  full)  sizes=(1000 10000 19000); reps=3; scenario_s=20; cost_sizes=(1 100 10000); out=results.json ;;
  quick) sizes=(1000); reps=1; scenario_s=10; cost_sizes=(1 100); out=quick.json ;;
  smoke) sizes=(50); reps=1; scenario_s=0; cost_sizes=(); out="" ;;
  tls)   sizes=(1000 10000); reps=3; scenario_s=0; cost_sizes=(); out=tls.json ;;
esac
handshake_s=${BENCH_HANDSHAKE_S:-10}
read -r -a sizes <<< "${BENCH_CLIENTS:-${sizes[*]}}"
reps=${BENCH_REPS:-$reps}
ulimit -n 20000 || true

if [ -z "${BENCH_GATEWAY:-}" ]; then cargo build --release --quiet; fi
(cd bench/loadgen && CARGO_TARGET_DIR=$lg_target cargo build --release --quiet)
gateway=${BENCH_GATEWAY:-$target/release/sse-gateway}
loadgen=$lg_target/release/sse-loadgen
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# One self-signed certificate for the gateway and nginx alike, trusted by the load generator:
# ECDSA P-256, what certbot and most CDNs issue by default (an RSA key would make the
# handshake measure RSA signing). CA:FALSE, since webpki refuses a CA certificate as a
# server's own.
make_cert() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -addext "basicConstraints=critical,CA:FALSE" \
    -keyout "$work/key.pem" -out "$work/cert.pem" 2>"$work/openssl.log"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# N distinct free ports (all held until all are chosen, so no two are the same).
free_ports() { python3 -c 'import socket,sys; ss=[socket.socket() for _ in range(int(sys.argv[1]))]; [s.bind(("127.0.0.1",0)) for s in ss]; print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.05; done; }
tag() { python3 -c "import json,sys; d=json.load(sys.stdin); d['server']='$1'; d['run']='$2'; print(json.dumps(d))"; }
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# start_gateway DIFF PATH POLL INTERVAL: starts the gateway; sets gw_pid, gw_port, gw_admin, gw_up.
# With gw_tls set, the client listener speaks TLS (and HTTP/2 by ALPN) with make_cert's pair.
start_gateway() {
  read -r gw_port gw_admin gw_up <<< "$(free_ports 3)"
  local tls=""
  if [ -n "${gw_tls:-}" ]; then
    tls="tls: { cert: $work/cert.pem, key: $work/key.pem }"
  fi
  cat > "$work/g.yaml" <<YAML
listen: 127.0.0.1:$gw_port
admin: { listen: 127.0.0.1:$gw_admin }
limits: { max_clients: 19900 }
$tls
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

# start_nchan CONF: nginx + libnginx-mod-nchan (2 workers) with bench/peers/CONF; sets nx_pid,
# nx_port (subscribers) and nx_pub (the publisher: the same port, or plain HTTP beside TLS).
start_nchan() {
  local dir; dir=$(mktemp -d -p "$work")
  read -r nx_port nx_pub <<< "$(free_ports 2)"
  [ "$1" = nchan.conf ] && nx_pub=$nx_port
  sed -e "s|@DIR@|$dir|g" -e "s|@PORT@|$nx_port|g" -e "s|@PUBPORT@|$nx_pub|g" \
    -e "s|@CERT@|$work/cert.pem|g" -e "s|@KEY@|$work/key.pem|g" "bench/peers/$1" > "$dir/nginx.conf"
  nginx -c "$dir/nginx.conf" -p "$dir" -g 'daemon off;' 2>"$dir/stderr" & nx_pid=$!
  wait_port "$nx_port"; wait_port "$nx_pub"
}

run_nchan() {  # clients
  start_nchan nchan.conf
  "$loadgen" --url "http://127.0.0.1:$nx_port/sub" --clients "$1" --changes 5 \
    --publish "http://127.0.0.1:$nx_pub/pub" --pid $nx_pid | tag nchan fanout
  stop $nx_pid
}

# TLS fan-out, as run_gateway and run_nchan over TRANSPORT: h1 (plain, the reference), tls,
# h2 or h2mux (100 clients per connection); tagged run "tls".
run_gateway_over() {  # transport clients
  local scheme=https line; gw_tls=yes
  [ "$1" = h1 ] && scheme=http gw_tls=""
  start_gateway json-patch /sse/doc /doc 1h
  line=$("$loadgen" --url "$scheme://127.0.0.1:$gw_port/sse/doc" --transport "$1" \
    --ca "$work/cert.pem" --clients "$2" --changes 5 --upstream "127.0.0.1:$gw_up" \
    --refresh "http://127.0.0.1:$gw_admin/streams/refresh?path=/sse/doc" --pid $gw_pid | tag gateway tls)
  stop $gw_pid; gw_tls=""
  check_run "$line"
}

run_nchan_over() {  # transport clients
  local scheme=https conf=nchan-tls.conf
  [ "$1" = h1 ] && scheme=http conf=nchan.conf
  start_nchan $conf
  "$loadgen" --url "$scheme://127.0.0.1:$nx_port/sub" --transport "$1" --ca "$work/cert.pem" \
    --clients "$2" --changes 5 --publish "http://127.0.0.1:$nx_pub/pub" --pid $nx_pid | tag nchan tls
  stop $nx_pid
}

# Handshakes per second over tls and h2 for SERVER (gateway, nchan), on a fresh server.
run_handshakes() {  # server
  local t
  if [ "$1" = gateway ]; then
    gw_tls=yes; start_gateway json-patch /sse/doc /doc 1h; gw_tls=""
    for t in tls h2; do
      "$loadgen" --url "https://127.0.0.1:$gw_port/sse/doc" --transport $t --ca "$work/cert.pem" \
        --handshakes "$handshake_s" --upstream "127.0.0.1:$gw_up" --pid $gw_pid | tag gateway handshakes
    done
    stop $gw_pid
  else
    start_nchan nchan-tls.conf
    for t in tls h2; do
      "$loadgen" --url "https://127.0.0.1:$nx_port/sub" --transport $t --ca "$work/cert.pem" \
        --handshakes "$handshake_s" --publish "http://127.0.0.1:$nx_pub/pub" --pid $nx_pid | tag nchan handshakes
    done
    stop $nx_pid
  fi
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
if [ $mode = tls ] || [ $mode = smoke ]; then make_cert; fi
if [ $mode = tls ]; then
  have_nchan || echo "bench: nchan is not installed; the gateway runs alone" >&2
  for n in "${sizes[@]}"; do
    for r in $(seq "$reps"); do
      for t in h1 tls h2 h2mux; do
        run_gateway_over $t "$n" >> "$lines"
        if have_nchan; then run_nchan_over $t "$n" >> "$lines"; fi
      done
    done
  done
  for r in $(seq "$reps"); do
    run_handshakes gateway >> "$lines"
    if have_nchan; then run_handshakes nchan >> "$lines"; fi
  done
  sizes=()
fi
for n in "${sizes[@]}"; do
  for r in $(seq "$reps"); do
    # Peers interleaved within a repetition, so a noisy minute hits them alike.
    run_gateway json-patch "$n" >> "$lines"
    if [ $mode = smoke ]; then
      run_gateway_over tls "$n" >> "$lines"
      run_gateway_over h2 "$n" >> "$lines"
      continue
    fi
    run_gateway snapshot "$n" >> "$lines"
    if have_nchan; then run_nchan "$n" >> "$lines"; fi
    if have_pushpin; then run_pushpin "$n" >> "$lines"; fi
    if have_node; then run_node "$n" >> "$lines"; fi
  done
done
if [ $mode = full ] || [ $mode = quick ]; then
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
if [ $mode = tls ] && command -v gnuplot >/dev/null; then
  python3 bench/report.py --tls-chart-data "bench/results/$out" > "$work/tls.dat"
  gnuplot -e "data='$work/tls.dat'; out='bench/results/tls.svg'" bench/chart_tls.gp
  echo "chart: bench/results/tls.svg"
fi

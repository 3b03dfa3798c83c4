#!/bin/bash
# Pushpin 1.36.0 (Debian: condure + zurl + pushpin-proxy + pushpin-handler) as an SSE fan-out
# server on loopback, fed by its HTTP publish API, with a tiny GRIP origin (origin.js).
#   usage: pushpin.sh DIR P C O   DIR = an empty work dir; P = client port, C = publish port,
#                                 O = origin port (all 127.0.0.1)
# Foreground until killed: SIGTERM/SIGINT to this script (or its process group) stops pushpin and
# the origin. The pushpin runner's PID (for sse-loadgen --pid) is written to $DIR/pushpin.pid; the
# origin is its sibling, so the loadgen does not count it as server.
# Settings changed from Debian's defaults, and why:
# - internal.conf points pushpin-proxy at a system zurl (ipc:///var/run/zurl/...) that is not
#   running: its sockets move into DIR and the runner starts zurl itself.
# - message_rate=-1 (was 2500 deliveries/s) and message_hwm=1000000 (was 25000): the pacing
#   would spread one publish to 10,000 clients over 4 s.
# - max_open_requests=20: unlimited, a burst of 10,000 subscriptions overflows the proxy's fixed
#   internal queues (100 messages) into 500/502 answers; capped, they wait in condure.
# env: LOG_LEVEL (default 1 = warnings; 2 logs every request), PROXY_MAX_OPEN (default 20)
set -eu
DIR=${1:?usage: pushpin.sh DIR P C O}; P=${2:?}; C=${3:?}; O=${4:?}
LOG_LEVEL=${LOG_LEVEL:-1}
PROXY_MAX_OPEN=${PROXY_MAX_OPEN:-20}
ulimit -n 20000

mkdir -p "$DIR/lib/runner" "$DIR/run" "$DIR/log"
rm -f "$DIR"/run/*

# Private libdir. Debian's internal.conf points pushpin-proxy at a system zurl
# (ipc:///var/run/zurl/...) that is not running here, which is why clients got no response:
# move those specs into our rundir and let the runner start zurl (services= below).
# Also drop the proxy's per-request inspect RPC to the handler (it only serves response
# sharing/caching; the handler still needs its own proxy_inspect_spec set, so that stays).
sed -e 's#ipc:///var/run/zurl/zurl-#ipc://{rundir}/{ipc_prefix}zurl-#' \
    -e 's#^handler_inspect_spec=.*#handler_inspect_spec=#' \
    /usr/lib/pushpin/internal.conf > "$DIR/lib/internal.conf"
cp /usr/lib/pushpin/runner/*.template "$DIR/lib/runner/"

echo "* 127.0.0.1:$O" > "$DIR/routes"

cat > "$DIR/pushpin.conf" <<CONF
[global]
libdir=$DIR/lib
include={libdir}/internal.conf
rundir=$DIR/run
ipc_prefix=pp-peer-
port_offset=0
stats_connection_ttl=120

[runner]
services=condure,zurl,pushpin-proxy,pushpin-handler
http_port=127.0.0.1:$P
logdir=$DIR/log
log_level=$LOG_LEVEL
client_buffer_size=8192
client_maxconn=50000
condure_bin=condure
zurl_bin=zurl

[proxy]
routesfile=routes
# at most this many requests in the proxy at once (origin round trip + accept hand-off);
# the rest wait in condure. Unlimited (-1) makes 10k-client bursts fail with 500/502.
max_open_requests=$PROXY_MAX_OPEN
debug=false
auto_cross_origin=false
sig_iss=pushpin
sig_key=changeme
updates_check=off

[handler]
push_in_spec=ipc://{rundir}/{ipc_prefix}push-in
push_in_sub_specs=ipc://{rundir}/{ipc_prefix}push-in-sub
push_in_sub_connect=false
push_in_http_addr=127.0.0.1
push_in_http_port=$C
stats_spec=ipc://{rundir}/{ipc_prefix}stats
command_spec=ipc://{rundir}/{ipc_prefix}command
# deliveries per second (per subscriber per message); <= 0 disables the rate limiter
message_rate=-1
# max queued deliveries before messages are dropped
message_hwm=1000000
message_wait=5000
id_cache_ttl=60
connection_subscription_max=20
subscription_linger=60
stats_subscription_ttl=60
stats_report_interval=10
stats_format=tnetstring
CONF

node "$(dirname "$0")/grip-origin.js" "$O" &
ORIGIN=$!
echo "$ORIGIN" > "$DIR/origin.pid"
pushpin --config "$DIR/pushpin.conf" --loglevel "$LOG_LEVEL" -m &
PUSHPIN=$!
echo "$PUSHPIN" > "$DIR/pushpin.pid"

stop() { trap - TERM INT EXIT; kill "$PUSHPIN" "$ORIGIN" 2>/dev/null || true; wait 2>/dev/null || true; }
trap stop TERM INT EXIT
wait "$PUSHPIN"

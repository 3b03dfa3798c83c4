#!/usr/bin/env bash
# Soak: 100,000 connect / first event / disconnect cycles against the release build, half of
# them closed with RST and half with FIN, 200 at a time; fails unless the gateway's memory (PSS)
# and open files end no more than 5 % above where they were after a 1,000-cycle warm-up, no
# client is still counted attached, and no cycle failed.
#
#   bench/soak.sh            100,000 cycles (a few minutes)
#   bench/soak.sh --quick    2,000 cycles
#   bench/soak.sh --cycles 500000 --concurrency 500     any of bench/soak.py's options
#
# Loopback only, ports chosen free at run time; needs python3 (stdlib) and installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-$PWD/target}

args=()
for a in "$@"; do
  case $a in
    --quick) args+=(--cycles 2000 --warmup 200) ;;
    *) args+=("$a") ;;
  esac
done
ulimit -n 20000 2>/dev/null || true

cargo build --release --quiet
exec python3 bench/soak.py --gateway "$target/release/sse-gateway" ${args[@]+"${args[@]}"}

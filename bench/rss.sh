#!/usr/bin/env bash
# Memory per worker: VmRSS and Pss (shared pages divided among the processes sharing them) of
# each worker and of the master, after 2000 keep-alive requests to APP.
#   bench/rss.sh [APP] [PATH]                         the release binary
#   FERRICORN_BIN=/srv/app/venv/bin/ferricorn bench/rss.sh hello:app /    a wheel's script
# One worker (-w 1); prints one line per process.
set -euo pipefail
cd "$(dirname "$0")/.."
APP=${1:-hello:app}; P=${2:-/}
BIN=${FERRICORN_BIN:-$PWD/target/release/ferricorn}
OUT=$(mktemp -d)
trap 'kill -TERM "$master" 2>/dev/null; rm -rf "$OUT"' EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(cd examples && exec "$BIN" -w 1 -b 127.0.0.1:$PORT --access-logfile '' "$APP" >"$OUT/log" 2>&1) &
master=$!
for _ in $(seq 1 300); do grep -q "Ready:" "$OUT/log" 2>/dev/null && break; sleep 0.1; done
python3 bench/callgrind_load.py "$PORT" 2000 "$P" >/dev/null
sleep 0.5
kb() { awk -v k="$2:" '$1==k{print $2}' "$1"; }
for pid in $master $(pgrep -P "$master"); do
  role=worker; [ "$pid" = "$master" ] && role=master
  r=$(kb "/proc/$pid/status" VmRSS); p=$(kb "/proc/$pid/smaps_rollup" Pss)
  echo "$role $pid: VmRSS $r kB, Pss $p kB"
done
echo "($BIN)"

#!/usr/bin/env bash
# Instructions per request in a worker, counted by callgrind: stable on a noisy machine.
#   bench/callgrind.sh [APP] [PATH]      e.g. bench/callgrind.sh hello:app /
#   FERRICORN_BIN=/srv/app/venv/bin/ferricorn bench/callgrind.sh hello:app /
# Runs the release binary (or FERRICORN_BIN: another build, or a virtualenv's `ferricorn`
# script from the wheel, which valgrind runs through its `#!` interpreter) under valgrind twice
# (500 and 2500 keep-alive requests) and prints the difference per request, so interpreter
# start-up and app import cancel out.
set -euo pipefail
cd "$(dirname "$0")/.."
APP=${1:-hello:app}; P=${2:-/}
BIN=${FERRICORN_BIN:-$PWD/target/release/ferricorn}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
run() {
  (cd examples && PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.%p" \
     "$BIN" -w 1 -b 127.0.0.1:$PORT --access-logfile '' "$APP" >"$OUT/log" 2>&1) &
  local shell=$!
  for _ in $(seq 1 300); do grep -q "Ready:" "$OUT/log" 2>/dev/null && break; sleep 0.2; done
  local master; master=$(pgrep -P "$shell" | head -1)
  local worker; worker=$(pgrep -P "$master" | head -1)
  python3 bench/callgrind_load.py "$PORT" "$1" "$P"
  kill -TERM "$master"; wait "$shell" 2>/dev/null || true
  callgrind_annotate "$OUT/cg.$worker" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}'
}
A=$(run 500); B=$(run 2500)
echo "$APP $P: $(( (B - A) / 2000 )) instructions per request ($BIN)"

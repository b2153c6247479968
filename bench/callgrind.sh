#!/usr/bin/env bash
# Instructions per request in a worker, counted by callgrind: stable on a noisy machine.
#   bench/callgrind.sh [APP] [PATH]      e.g. bench/callgrind.sh hello:app /
#   FERRICORN_BIN=/srv/app/venv/bin/ferricorn bench/callgrind.sh hello:app /
# Runs the release binary (or FERRICORN_BIN: another build, or a virtualenv's `ferricorn`
# script from the wheel, which valgrind runs through its `#!` interpreter) under valgrind twice
# (500 and 2500 keep-alive requests) and prints the difference per request, so interpreter
# start-up and app import cancel out.
#   LAYERS=1 bench/callgrind.sh ...      also the inclusive cost per request of each layer
#   APP_DIR=bench/apps FERRICORN_ARGS="--virtualenv $PWD/bench/.venv" bench/callgrind.sh ahello:app /
#                                        an app elsewhere, more flags (here: ASGI hello on uvloop;
#                                        both threads of the worker are counted)
#   FERRICORN_ARGS='--metrics-bind 127.0.0.1:0' bench/callgrind.sh ...   more server flags
set -euo pipefail
cd "$(dirname "$0")/.."
APP=${1:-hello:app}; P=${2:-/}
BIN=${FERRICORN_BIN:-$PWD/target/release/ferricorn}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# Functions whose inclusive cost is a layer of the request path (LTO inlines the rest into them).
FUNCS='tokio::runtime::task::raw::poll|ferricorn::http::conn::exchange::\{\{closure\}\}|ferricorn::http::parse::parse|ferricorn::wsgi::WsgiApp::call|ferricorn::wsgi::request::Template::build|ferricorn::wsgi::request::Template::set_header|ferricorn::wsgi::start_response::StartResponse::__pymethod___call____|ferricorn::http::response::ResponseHead::push|ferricorn::http::response::encode|ferricorn::logging::access::AccessLog::emit|_PyEval_EvalFrameDefault \['
run() {
  # shellcheck disable=SC2086 # FERRICORN_ARGS is a list of flags
  (cd "${APP_DIR:-examples}" && PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.%p" \
     "$BIN" -w 1 -b 127.0.0.1:$PORT --access-logfile '' ${FERRICORN_ARGS:-} "$APP" >"$OUT/log" 2>&1) &
  local shell=$!
  for _ in $(seq 1 300); do grep -q "Ready:" "$OUT/log" 2>/dev/null && break; sleep 0.2; done
  local master; master=$(pgrep -P "$shell" | head -1)
  local worker; worker=$(pgrep -P "$master" | head -1)
  python3 bench/callgrind_load.py "$PORT" "$1" "$P"
  kill -TERM "$master"; wait "$shell" 2>/dev/null || true
  callgrind_annotate "$OUT/cg.$worker" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}'
  if [ -n "${LAYERS:-}" ]; then
    callgrind_annotate --inclusive=yes --threshold=100 "$OUT/cg.$worker" 2>/dev/null \
      | grep -E "$FUNCS" \
      | sed -E 's/^ *([0-9,]+) \( *[0-9.]+%\) +/\1\t/; s/,//g; s/ \[[^]]*\]$//' >"$OUT/layers.$1"
  fi
}
A=$(run 500); B=$(run 2500)
echo "$APP $P: $(( (B - A) / 2000 )) instructions per request ($BIN)"
if [ -n "${LAYERS:-}" ]; then
  echo "inclusive instructions per request, by layer (functions LTO kept out of line):"
  join -t $'\t' -1 2 -2 2 <(sort -t $'\t' -k2 "$OUT/layers.500") <(sort -t $'\t' -k2 "$OUT/layers.2500") \
    | awk -F'\t' '{printf "%8d  %s\n", ($3-$2)/2000, $1}' | sort -rn
fi

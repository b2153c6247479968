#!/usr/bin/env bash
# Interleaved A/B of ferricorn builds (and bjoern) on one app, reporting what is steady on a
# noisy machine: the serving process's CPU time per request (utime+stime from /proc/PID/stat),
# next to req/s and p99. How src/coalesce.rs was measured.
#
#   bench/cpu_ab.sh [-r ROUNDS] [-d SECONDS] [-c CONNS] [-a APP] [-t TRANSPORT] [-x 'ARGS'] SERVER...
#
# SERVER: a ferricorn binary (e.g. a copy of target/release/ferricorn from another commit), or
# `bjoern`. TRANSPORT: tcp (wrk), unix (oha), nginx-tcp, nginx-unix (wrk → nginx with a
# keep-alive upstream → the server). -x: extra ferricorn arguments (e.g. '--threads 64').
# Server on CPU 0, load generator (and nginx) on CPU 1, as in bench/run.sh; needs its tools
# (bench/run.sh installs them). Only loopback; every run is bounded by -d.
set -euo pipefail
ORIG=$PWD
cd "$(dirname "$0")"
BENCH=$PWD
R=3 D=5 C=50 APP=json4k T=tcp X=''
while getopts r:d:c:a:t:x: o; do
  case $o in
    r) R=$OPTARG ;; d) D=$OPTARG ;; c) C=$OPTARG ;; a) APP=$OPTARG ;; t) T=$OPTARG ;;
    x) X=$OPTARG ;; *) sed -n 2,12p "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || { sed -n 2,12p "$0"; exit 2; }
SERVERS=()
for s in "$@"; do
  case $s in bjoern | /*) ;; *) s=$ORIG/$s ;; esac
  [ "$s" = bjoern ] || [ -x "$s" ] || { echo "not an executable: $s" >&2; exit 2; }
  SERVERS+=("$s")
done
TMP=$(mktemp -d)
trap 'jobs -p | xargs -r kill 2>/dev/null; rm -rf "$TMP"' EXIT
TCK=$(getconf CLK_TCK) PORT=18861 NGX_PORT=18862 SOCK=$TMP/app.sock OHA=$BENCH/.tools/bin/oha
cat >"$TMP/nginx.conf" <<EOF
user root;
worker_processes 1;
daemon off;
pid $TMP/nginx.pid;
error_log $TMP/nginx.err warn;
events { worker_connections 1024; }
http {
  access_log off;
  upstream app { server $([ "$T" = nginx-unix ] && echo "unix:$SOCK" || echo "127.0.0.1:$PORT"); keepalive 64; }
  server {
    listen 127.0.0.1:$NGX_PORT;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
EOF

run() { # run SERVER -> one line of figures
  local server=$1 bind pid spid npid=''
  case $T in tcp | nginx-tcp) bind=tcp ;; *) bind=unix ;; esac
  rm -f "$SOCK"
  cd "$BENCH/apps"
  if [ "$server" = bjoern ]; then
    if [ $bind = tcp ]; then set -- 127.0.0.1 $PORT; else set -- "unix:$SOCK"; fi
    taskset -c 0 "$BENCH/.venv/bin/python" "$BENCH/bjoern_run.py" "$APP" "$@" 2>/dev/null &
  else
    if [ $bind = tcp ]; then set -- 127.0.0.1:$PORT; else set -- "unix:$SOCK"; fi
    # shellcheck disable=SC2086
    taskset -c 0 "$server" -w 1 $X --access-logfile '' -b "$1" "$APP:app" 2>/dev/null &
  fi
  pid=$!
  local probe=(curl -s -o /dev/null --max-time 1)
  [ $bind = tcp ] && probe+=("http://127.0.0.1:$PORT/") || probe+=(--unix-socket "$SOCK" http://x/)
  for _ in $(seq 100); do "${probe[@]}" && break; sleep 0.05; done
  spid=$pid
  [ "$server" = bjoern ] || spid=$(pgrep -P "$pid" | head -1)
  local url="http://127.0.0.1:$PORT/"
  if [[ $T == nginx-* ]]; then
    taskset -c 1 nginx -p "$TMP" -c "$TMP/nginx.conf" &
    npid=$!
    url="http://127.0.0.1:$NGX_PORT/"
    for _ in $(seq 100); do curl -s -o /dev/null --max-time 1 "$url" && break; sleep 0.05; done
  fi
  local load=(taskset -c 1 wrk -t1 "-c$C" "-d${D}s" --latency "$url")
  local warm=(taskset -c 1 wrk -t1 "-c$C" -d1s "$url")
  if [ "$T" = unix ]; then
    load=(taskset -c 1 "$OHA" --unix-socket "$SOCK" -z "${D}s" -c "$C" --no-tui --output-format json http://localhost/)
    warm=(taskset -c 1 "$OHA" --unix-socket "$SOCK" -z 1s -c "$C" --no-tui http://localhost/)
  fi
  "${warm[@]}" >/dev/null
  read -r u0 s0 < <(awk '{print $14, $15}' /proc/"$spid"/stat)
  "${load[@]}" >"$TMP/out"
  read -r u1 s1 < <(awk '{print $14, $15}' /proc/"$spid"/stat)
  BENCH=$BENCH python3 - "$TMP/out" "$T" $((u1 - u0)) $((s1 - s0)) "$TCK" <<'EOF'
import os, sys
sys.path.insert(0, os.environ["BENCH"])
from driver import parse_oha, parse_wrk  # the suite's own readers of wrk's and oha's output
out, t, du, ds, tck = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
res = (parse_oha if t == "unix" else parse_wrk)(open(out).read())
n = max(res["requests"] or 0, 1)
errors = f"  ERRORS {res['errors']}" if res["errors"] else ""
print(f"{res['rps']:8.0f} req/s  p99 {res['p99_ms']:7.2f} ms  cpu {(du + ds) / tck / n * 1e6:6.1f} us/req"
      f" (user {du / tck / n * 1e6:5.1f}){errors}", end="")
EOF
  [ -n "$npid" ] && { kill -QUIT "$npid"; wait "$npid" 2>/dev/null || true; }
  kill -TERM "$pid"; sleep 0.3; kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
}

echo "app $APP, transport $T, c$C, $R rounds of ${D}s"
for r in $(seq "$R"); do
  for s in "${SERVERS[@]}"; do echo "r$r  $(run "$s")  $s"; done
done

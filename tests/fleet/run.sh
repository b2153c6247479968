#!/usr/bin/env bash
# The fleet scenario (issue 17): three ferricorn hosts, each its own master on its own loopback
# address (127.0.0.11, .12, .13), its own pid file, logs and metrics listener, behind a real
# nginx upstream and (when installed) HAProxy with active health checks on --health-path, under
# a bounded request loop (tests/fleet/load.py) through both balancers at once:
#   reload   every host in turn (HUP)                     -> 0 failed requests
#   upgrade  every host in turn (USR2)                    -> 0 failed requests
#   restart  every host in turn (TERM, then start again)  -> 0 failed requests
#   kill     SIGKILL one host's master                    -> at most its in-flight requests fail
#   account  N requests with the load paused around them  -> the three hosts' metrics add up to N
# Prints each phase's request and failure counts; exits non-zero if a check fails.
#   bash tests/fleet/run.sh          (FERRICORN_BIN=... for another build; default: release)
# Traffic goes to 127.0.0.1 (the balancers) and 127.0.0.11-13 (the hosts) only.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BIN=${FERRICORN_BIN:-$ROOT/target/release/ferricorn}
[ -x "$BIN" ] || { echo "fleet: $BIN is missing: cargo build --release first" >&2; exit 1; }
command -v nginx >/dev/null || { echo "fleet: nginx is needed (apt-get install nginx)" >&2; exit 1; }
HOSTS=(127.0.0.11 127.0.0.12 127.0.0.13)
APP_PORT=18000
METRICS_PORT=19100
THREADS_PER_TARGET=4
ACCOUNT_N=2000
WORK=$(mktemp -d /tmp/ferricorn-fleet.XXXXXX)
start_s=$(date +%s)
failures=0

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { echo $(( $(date +%s) - start_s )); }
say() { printf '[fleet %3ss] %s\n' "$(now)" "$*"; }
fail() { say "FAILED: $*"; failures=$((failures + 1)); }

# A process exists and is not a zombie.
alive() { local st; st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) && [ -n "$st" ] && [ "$st" != Z ]; }
wait_for() { # SECONDS COMMAND...: polls every 50 ms
  local until=$(( $(date +%s) + $1 )); shift
  while ! "$@"; do
    [ "$(date +%s)" -lt "$until" ] || return 1
    sleep 0.05
  done
}
count_in() { local n; n=$(grep -c -- "$2" "$1" 2>/dev/null) || true; echo "${n:-0}"; }
more_in() { [ "$(count_in "$1" "$2")" -gt "$3" ]; }  # FILE TEXT N: more than N lines have TEXT
gone() { ! alive "$1"; }
pid_changed() { local p; p=$(pid_of "$1"); [ -n "$p" ] && [ "$p" != "$2" ]; }
pid_of() { cat "$WORK/h$1/pid" 2>/dev/null || true; }

start_host() { # INDEX
  local i=$1 ip=${HOSTS[$1]} d=$WORK/h$1
  mkdir -p "$d"
  local ready_before; ready_before=$(count_in "$d/error.log" "Ready:")
  (cd "$ROOT/tests/fixtures/apps" && exec "$BIN" -w 2 --threads 4 \
      -b "$ip:$APP_PORT" --metrics-bind "$ip:$METRICS_PORT" \
      --health-path /healthz --drain-delay 1 --graceful-timeout 10 --keep-alive 5 \
      -p "$d/pid" --access-logfile '' --error-logfile "$d/error.log" \
      -n "fleet-h$i" fleet:app >>"$d/out.log" 2>&1) &
  wait_for 30 more_in "$d/error.log" "Ready:" "$ready_before" \
    || { fail "host $ip did not start"; tail -n 5 "$d/error.log" "$d/out.log"; return 1; }
}

stop_all() {
  for i in 0 1 2; do
    local p; p=$(pid_of "$i")
    [ -n "$p" ] && alive "$p" && kill -TERM "$p" 2>/dev/null || true
  done
  [ -f "$WORK/nginx/nginx.pid" ] && kill -QUIT "$(cat "$WORK/nginx/nginx.pid")" 2>/dev/null || true
  [ -f "$WORK/haproxy.pid" ] && kill -TERM "$(cat "$WORK/haproxy.pid")" 2>/dev/null || true
  [ -n "${load_pid:-}" ] && kill -TERM "$load_pid" 2>/dev/null || true
  for i in 0 1 2; do
    local p; p=$(pid_of "$i")
    [ -n "$p" ] && wait_for 15 gone "$p" || true
  done
}
trap 'stop_all; wait 2>/dev/null; [ -n "${FLEET_KEEP:-}" ] || rm -rf "$WORK"' EXIT

# ---- the hosts ------------------------------------------------------------------------------
for i in 0 1 2; do start_host "$i"; done
say "3 hosts serving: ${HOSTS[*]} (port $APP_PORT; metrics on $METRICS_PORT)"

# ---- the balancers --------------------------------------------------------------------------
NGINX_PORT=$(free_port)
mkdir -p "$WORK/nginx/logs"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
user root;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 1024; }
http {
    log_format fleet '\$request_uri|\$upstream_addr|\$upstream_status';
    access_log $WORK/nginx/access.log fleet;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    upstream fleet {
        server ${HOSTS[0]}:$APP_PORT max_fails=1 fail_timeout=2s;
        server ${HOSTS[1]}:$APP_PORT max_fails=1 fail_timeout=2s;
        server ${HOSTS[2]}:$APP_PORT max_fails=1 fail_timeout=2s;
        keepalive 16;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://fleet;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_next_upstream error timeout http_502 http_503;
            proxy_next_upstream_tries 3;
            proxy_connect_timeout 1s;
            proxy_read_timeout 15s;
        }
    }
}
EOF
nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf"
targets=(--target "nginx=http://127.0.0.1:$NGINX_PORT")
say "nginx $(nginx -v 2>&1 | sed 's/.*\///') on 127.0.0.1:$NGINX_PORT"
if command -v haproxy >/dev/null; then
  HAPROXY_PORT=$(free_port)
  cat >"$WORK/haproxy.cfg" <<EOF
global
    maxconn 1000
    log stdout format raw local0
defaults
    mode http
    log global
    log-format "%HU|%rc|%ST|%s|%tsc"
    timeout connect 1s
    timeout client 15s
    timeout server 15s
    retries 3
    option redispatch
    retry-on all-retryable-errors
frontend fe
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend fleet
backend fleet
    balance roundrobin
    option httpchk GET /healthz
    http-check expect status 200
    default-server inter 200ms fall 1 rise 2
    server h11 ${HOSTS[0]}:$APP_PORT check
    server h12 ${HOSTS[1]}:$APP_PORT check
    server h13 ${HOSTS[2]}:$APP_PORT check
EOF
  haproxy -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
  echo $! >"$WORK/haproxy.pid"
  targets+=(--target "haproxy=http://127.0.0.1:$HAPROXY_PORT")
  say "HAProxy $(haproxy -v | head -1 | awk '{print $3}') on 127.0.0.1:$HAPROXY_PORT (health checks on /healthz every 200 ms)"
else
  say "HAProxy is not installed: nginx only (apt-get install haproxy)"
fi
wait_for 10 curl -sf -o /dev/null "http://127.0.0.1:$NGINX_PORT/" || fail "nginx does not answer"
if [ -n "${HAPROXY_PORT:-}" ]; then
  wait_for 10 curl -sf -o /dev/null "http://127.0.0.1:$HAPROXY_PORT/" || fail "HAProxy does not answer"
fi

# ---- the load -------------------------------------------------------------------------------
CONTROL=$WORK/phase ACK=$WORK/ack SUMMARY=$WORK/summary.json
phase() { echo "$1" >"$CONTROL.new" && mv "$CONTROL.new" "$CONTROL"; }  # atomically
paused() { [ "$(cat "$ACK" 2>/dev/null)" = "$1" ]; }
phase warmup
python3 tests/fleet/load.py --control "$CONTROL" --ack "$ACK" --summary "$SUMMARY" \
  --threads "$THREADS_PER_TARGET" --max-seconds 170 "${targets[@]}" &
load_pid=$!
sleep 2

# ---- reload every host in turn --------------------------------------------------------------
phase reload
for i in 0 1 2; do
  d=$WORK/h$i; before=$(count_in "$d/error.log" "Reload complete")
  kill -HUP "$(pid_of "$i")"
  wait_for 30 more_in "$d/error.log" "Reload complete" "$before" \
    || fail "host ${HOSTS[$i]}: reload did not complete"
  sleep 0.5
done
say "reloaded every host (HUP)"

# ---- upgrade every host in turn -------------------------------------------------------------
phase upgrade
for i in 0 1 2; do
  old=$(pid_of "$i")
  kill -USR2 "$old"
  wait_for 30 pid_changed "$i" "$old" \
    || fail "host ${HOSTS[$i]}: no new master"
  wait_for 30 gone "$old" || fail "host ${HOSTS[$i]}: the old master $old did not leave"
  sleep 0.5
done
say "upgraded every host (USR2): new masters $(pid_of 0) $(pid_of 1) $(pid_of 2)"

# ---- restart every host in turn -------------------------------------------------------------
phase restart
for i in 0 1 2; do
  old=$(pid_of "$i")
  kill -TERM "$old"
  wait_for 30 gone "$old" || fail "host ${HOSTS[$i]}: did not stop"
  start_host "$i"
  sleep 0.5
done
say "restarted every host (TERM, then start)"

# ---- SIGKILL one host's master --------------------------------------------------------------
phase kill
sleep 0.5
victim=1
kill -KILL "$(pid_of $victim)"
sleep 3
say "killed the master of ${HOSTS[$victim]} (SIGKILL)"
phase recover
# Its workers drain and exit (they die with their master); then it starts again.
wait_for 30 bash -c "! pgrep -f 'worker \\[fleet-h$victim\\]' >/dev/null" || true
rm -f "$WORK/h$victim/pid"
start_host "$victim"
sleep 1

# ---- metrics add up -------------------------------------------------------------------------
scrape_sum() {
  local sum=0 n
  for ip in "${HOSTS[@]}"; do
    n=$(curl -sf "http://$ip:$METRICS_PORT/metrics" \
        | awk '/^ferricorn_requests_total\{/ {s += $2} END {printf "%d", s}') || { echo "x"; return; }
    sum=$((sum + n))
  done
  echo "$sum"
}
snapshot() { # FILE: every host's request series
  for ip in "${HOSTS[@]}"; do
    curl -sf "http://$ip:$METRICS_PORT/metrics" | sed -n "s/^ferricorn_requests_total/$ip &/p"
  done >"$1"
}
phase pause
wait_for 30 paused pause || fail "the load did not pause"
before=$(scrape_sum)
snapshot "$WORK/before.txt"
phase "count:$ACCOUNT_N"
wait_for 60 paused "count:$ACCOUNT_N" || fail "the counted requests did not finish"
after=$(scrape_sum)
snapshot "$WORK/after.txt"
# What the balancers passed on (their logs: one line per request, the upstreams tried in it).
for p in restart kill; do
  say "$p: nginx passed $(grep "phase=$p&\|phase=$p|" "$WORK/nginx/access.log" | grep -c ',' || true) requests on to another host after a failed attempt; \
HAProxy retried $(grep "phase=$p|" "$WORK/haproxy.log" 2>/dev/null | awk -F'|' '$2 != "0"' | wc -l)"
done
say "the counted requests, as the balancers logged them: nginx $(count_in "$WORK/nginx/access.log" "phase=count") \
(passed to a second host: $(grep "phase=count" "$WORK/nginx/access.log" | grep -c ',' || true)), \
HAProxy $(count_in "$WORK/haproxy.log" "phase=count") \
(retried: $(grep "phase=count" "$WORK/haproxy.log" 2>/dev/null | awk -F'|' '$2 != "0"' | wc -l))"
if [ "$(( after - before ))" != "$ACCOUNT_N" ]; then
  say "the series that moved:"
  join -j1 <(awk '{print $1"|"$2, $3}' "$WORK/before.txt" | sort) \
           <(awk '{print $1"|"$2, $3}' "$WORK/after.txt" | sort) \
    | awk '$3 != $2 {print "  " $1, $2, "->", $3}'
fi
phase stop
wait "$load_pid" || fail "the load client failed"
load_pid=

# ---- report ---------------------------------------------------------------------------------
python3 - "$SUMMARY" "$ACCOUNT_N" "$before" "$after" "$THREADS_PER_TARGET" <<'EOF' || failures=$((failures + 1))
import json, sys
summary = json.load(open(sys.argv[1]))
n, before, after, threads = int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
bad = 0
print(f"{'phase':<10} {'balancer':<8} {'requests':>9} {'failed':>7}  errors")
for phase in ["warmup", "reload", "upgrade", "restart", "kill", "recover", f"count:{n}"]:
    for target, c in sorted(summary.get(phase, {}).items()):
        errors = ", ".join(f"{k} x{v}" for k, v in c["errors"].items()) or "-"
        print(f"{phase:<10} {target:<8} {c['sent']:>9} {c['failed']:>7}  {errors}")
        # Every phase loses nothing, but the kill: at most what was in flight on the killed
        # host (each client thread has one request in flight at a time).
        limit = threads if phase == "kill" else 0
        if c["failed"] > limit:
            print(f"  FAILED: {c['failed']} failed requests in phase {phase} ({target}), at most {limit} allowed")
            bad += 1
    if not summary.get(phase):
        print(f"{phase:<10} (no requests)")
        bad += 1
known = {"warmup", "reload", "upgrade", "restart", "kill", "recover", f"count:{n}"}
for phase in set(summary) - known:
    print(f"  FAILED: requests under an unknown phase {phase!r}: {summary[phase]}")
    bad += 1
counted = summary.get(f"count:{n}", {})
ok = sum(c["ok"] for c in counted.values())
sent = sum(c["sent"] for c in counted.values())
delta = None if "x" in (before, after) else int(after) - int(before)
print(f"metrics: the three hosts' ferricorn_requests_total grew by {delta} while the client sent "
      f"{sent} requests ({ok} answered 200)")
if delta != sent or sent != n:
    print("  FAILED: the metrics do not add up to the requests sent")
    bad += 1
sys.exit(1 if bad else 0)
EOF
if [ "$failures" -gt 0 ]; then
  say "$failures check(s) failed; logs:"
  for i in 0 1 2; do grep -E "ERROR|WARNING|CRITICAL" "$WORK/h$i/error.log" | tail -5 || true; done
  tail -5 "$WORK/nginx/error.log" || true
  exit 1
fi
say "fleet scenario passed"

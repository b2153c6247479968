#!/usr/bin/env bash
# End to end: the files `ferricorn systemd generate` writes, under a real systemd, nginx, runit,
# supervisor, honcho and logrotate. The README's "Deploying" section walks through the same
# steps.
#
#   bash tests/e2e/run.sh        (as root; uses target/release/ferricorn, builds it if missing)
#
# systemd: PID 1 here is not systemd, so a real one (this machine's own, 252) boots in a
# container over this machine's /usr: systemd-nspawn --volatile=yes (a fresh tmpfs for /, /etc
# and /var; /usr read-only from here), its own network namespace (loopback only). The binary
# and the example app are bound in read-only under /opt/ferricorn; the units, the tmpfiles.d
# entry and nginx's configuration are copied into its /etc, as a user would install them.
# The deployment guide's own units run there too, with only /usr/bin/gunicorn changed to
# /usr/bin/ferricorn (the binary joins /usr/bin through a read-only overlay).
# runit, supervisor, honcho and logrotate run on this machine, each on its generated file, with
# everything under a temporary directory in /run (runit's log service writes /var/log/NAME, as
# generated, removed afterwards). So do a real nginx (stream module, `proxy_protocol on;`) and
# HAProxy (`send-proxy-v2`) in front of ferricorn --proxy-protocol, on loopback.
#
# Prints one line per check, PASS or FAIL (SKIP only where this machine cannot run a part at
# all), and a closing "N passed, N failed, N skipped"; exits 1 if any check failed.
# FERRICORN_E2E_REQUIRED=1 (set by .ci/run) turns a skipped systemd part into a failure;
# FERRICORN_E2E_KEEP=1 keeps the temporary directory (logs, generated files) for a look.
# Traffic goes only to unix sockets and to loopback; every wait and every request loop is
# bounded; everything started here is stopped in the exit trap.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
BIN=${FERRICORN_BIN:-$REPO/target/release/ferricorn}
HELPER=$REPO/tests/e2e/helper.py
PY=${PYTHON:-python3}
HONCHO=${HONCHO:-$(command -v honcho || echo "$REPO/target/e2e-venv/bin/honcho")}
case $HONCHO in /*) ;; */*) HONCHO=$REPO/$HONCHO ;; esac # it runs in another directory
T0=$SECONDS

passed=0 failed=0 skipped=0
pass() { echo "PASS $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1: $2"; failed=$((failed + 1)); }
skip() { echo "SKIP $1: $2"; skipped=$((skipped + 1)); }
systemd_skipped=no
note() { echo "     $*" >&2; }

# ---- set-up and clean-up -------------------------------------------------------------------

if [ "$(id -u)" -ne 0 ]; then
  echo "SKIP tests/e2e/run.sh: needs root (systemd-nspawn, runit, supervisor as www-data)"
  echo "0 passed, 0 failed, 1 skipped"
  [ "${FERRICORN_E2E_REQUIRED:-}" = 1 ] && exit 1
  exit 0
fi
if [ ! -x "$BIN" ]; then
  cargo build --release --quiet
fi
for tool in curl nginx hey runsv sv supervisord supervisorctl logrotate haproxy "$HONCHO"; do
  command -v "$tool" >/dev/null || { echo "FAIL setup: $tool is not installed (see .ci/run)"; exit 1; }
done
NGINX_STREAM=/usr/lib/nginx/modules/ngx_stream_module.so # libnginx-mod-stream
[ -e "$NGINX_STREAM" ] || { echo "FAIL setup: nginx's stream module is not installed (libnginx-mod-stream; see .ci/run)"; exit 1; }

W=$(mktemp -d /run/ferricorn-e2e.XXXXXX) # /run: the generator refuses /tmp (PrivateTmp=yes)
chmod 0755 "$W"
NSPAWN_PID='' SP='' RUNSV_PID='' SUPERVISORD_PID='' HONCHO_PID='' LOAD_PID=''
PP_FC_PID='' PP_NGINX_PID='' PP_HAPROXY_PID=''
RUNIT_NAME=fce2e-runit SUP_NAME=fce2e-sup PROC_NAME=fce2e-procfile

stop_pid() { # stop_pid PID GRACE_SECONDS: TERM, then KILL after the grace period
  local pid=$1 grace=$2 i
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  set +e
  stop_pid "$LOAD_PID" 2
  stop_pid "$PP_NGINX_PID" 10
  stop_pid "$PP_HAPROXY_PID" 10
  stop_pid "$PP_FC_PID" 20
  stop_pid "$HONCHO_PID" 10
  if [ -n "$SUPERVISORD_PID" ]; then
    timeout 20 supervisorctl -c "$W/supervisor/supervisord.conf" shutdown >/dev/null 2>&1
    stop_pid "$SUPERVISORD_PID" 10
  fi
  if [ -n "$RUNSV_PID" ]; then
    timeout 10 sv exit "$W/sv/$RUNIT_NAME" >/dev/null 2>&1
    stop_pid "$RUNSV_PID" 10
  fi
  stop_pid "$NSPAWN_PID" 20 # SIGTERM powers the container off cleanly
  if [ "${FERRICORN_E2E_KEEP:-}" = 1 ]; then
    echo "kept $W and /var/log/$RUNIT_NAME (FERRICORN_E2E_KEEP=1)" >&2
  else
    rm -rf "$W" "/var/log/$RUNIT_NAME"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for() { # wait_for SECONDS CMD...: until CMD succeeds, polling every 0.1 s
  local end=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep 0.1
  done
}
jget() { # jget FILE KEY: a top-level value of a JSON object
  "$PY" -c 'import json,sys; v=json.load(open(sys.argv[1])).get(sys.argv[2]); print(json.dumps(v) if isinstance(v,(dict,list)) else v)' "$1" "$2"
}
# start_load NAME ADDR PATH SECONDS: a bounded request loop in the background (at most SECONDS
# and 200000 requests, 4 clients); succeeds once a first request did. finish_load always follows.
start_load() {
  rm -f "$W/$1.go"
  timeout $(($4 + 30)) "$PY" "$HELPER" load "$2" "$3" --seconds "$4" --max 200000 \
    --concurrency 4 --go "$W/$1.go" >"$W/$1.json" 2>"$W/$1.err" &
  LOAD_PID=$!
  wait_for 15 test -e "$W/$1.go"
}
# finish_load NAME: waits for it (not in a subshell: it is this shell's child); sets LOAD_OK,
# LOAD_FAILED, LOAD_REFUSED (-1: the loop produced no result).
finish_load() {
  wait "$LOAD_PID" || true
  LOAD_PID=''
  LOAD_OK=0 LOAD_FAILED=-1 LOAD_REFUSED=-1
  if [ -s "$W/$1.json" ]; then
    LOAD_OK=$(jget "$W/$1.json" ok)
    LOAD_FAILED=$(jget "$W/$1.json" failed)
    LOAD_REFUSED=$(jget "$W/$1.json" refused)
  else
    note "load $1 produced nothing: $(head -c 300 "$W/$1.err")"
  fi
}
load_errors() { jget "$W/$1.json" errors 2>/dev/null || true; }

# ---- generate ------------------------------------------------------------------------------

# The units the container runs: exactly what a user gets from the generator, for the paths the
# binary and the app have inside the container.
GEN_ARGS=(--name app --exe /opt/ferricorn/bin/ferricorn --chdir /opt/ferricorn/examples
  --systemd-version 252 -w 2 spec:app)
"$BIN" systemd generate "${GEN_ARGS[@]}" --output "$W/gen" 2>/dev/null
"$BIN" systemd generate --watchdog 2 "${GEN_ARGS[@]}" --output "$W/gen-watchdog" 2>/dev/null
# An ASGI app (tests/e2e/asgi_app.py) as a second unit pair.
"$BIN" systemd generate --name asgi --exe /opt/ferricorn/bin/ferricorn --chdir /opt/ferricorn/e2e \
  --systemd-version 252 -w 2 asgi_app:app --output "$W/gen-asgi" 2>/dev/null
# The variant for systemd >= 253 is generated too (this machine's 252 cannot run it).
nr=$("$BIN" systemd generate --name app --exe /opt/ferricorn/bin/ferricorn \
  --chdir /opt/ferricorn/examples --systemd-version 253 -w 2 spec:app --only service)
if grep -qx 'Type=notify-reload' <<<"$nr" && ! grep -q '^ExecReload=' <<<"$nr" \
  && grep -qx 'Type=notify' "$W/gen/systemd/app.service" \
  && grep -qx 'ExecReload=/bin/kill -s HUP $MAINPID' "$W/gen/systemd/app.service"; then
  pass "generate: Type=notify + ExecReload= for 252 (run below), Type=notify-reload without ExecReload= for 253"
else
  fail "generate" "the two service variants are not as expected"
fi

# ---- systemd -------------------------------------------------------------------------------

systemd_part() {
  if ! command -v systemd-nspawn >/dev/null; then
    skip systemd "systemd-nspawn is not installed (apt-get install systemd-container)"
    systemd_skipped=yes
    return
  fi
  if ! unshare --mount --pid --net --fork true 2>/dev/null; then
    skip systemd "this machine cannot create namespaces, so systemd-nspawn cannot run at all"
    systemd_skipped=yes
    return
  fi
  echo 'disable *' >"$W/disable-all.preset" # else first boot enables every installed unit
  # journald's default limit (10000 entries per 30 s and priority, times 3-4 for the free
  # space) is a twentieth of that here, so that the check journal-complete sees within seconds
  # what a busy site sees: without the generated unit's own limit, access lines are dropped.
  printf '[Journal]\nRateLimitIntervalSec=30s\nRateLimitBurst=500\n' >"$W/journald-ratelimit.conf"
  # The deployment guide's unit runs /usr/bin/gunicorn, here /usr/bin/ferricorn: the binary
  # joins the host's /usr/bin in the container through a read-only overlay.
  mkdir -p "$W/usr-bin"
  cp "$BIN" "$W/usr-bin/ferricorn"
  chmod 0755 "$W/usr-bin/ferricorn"
  local machine="ferricorn-e2e-$$"
  systemd-nspawn -D / --volatile=yes -b --register=no --keep-unit --private-network \
    --overlay-ro="/usr/bin:$W/usr-bin:/usr/bin" \
    --console=pipe --machine="$machine" \
    --bind-ro="$W/disable-all.preset:/etc/systemd/system-preset/00-disable-all.preset" \
    --bind-ro="$W/journald-ratelimit.conf:/etc/systemd/journald.conf.d/50-e2e-ratelimit.conf" \
    --bind-ro="$BIN:/opt/ferricorn/bin/ferricorn" \
    --bind-ro="$REPO/examples:/opt/ferricorn/examples" \
    --bind-ro="$REPO/tests/e2e:/opt/ferricorn/e2e" \
    -- systemd.mask=systemd-firstboot.service </dev/null >"$W/console.log" 2>&1 &
  NSPAWN_PID=$!
  find_sp() { SP=$(pgrep -P "$NSPAWN_PID" -x systemd) && [ -n "$SP" ]; }
  if ! wait_for 30 find_sp; then
    fail boot "no systemd inside systemd-nspawn after 30 s: $(tail -n 5 "$W/console.log" | tr '\n' ' ')"
    return
  fi
  C() { timeout 60 nsenter -t "$SP" -a "$@"; }
  R=/proc/$SP/root
  local state
  # The manager answers on its private socket a moment after it started.
  wait_for 30 C systemctl is-system-running || wait_for 30 C systemctl show -p Version
  state=$(C timeout 60 systemctl is-system-running --wait 2>/dev/null || true)
  if [ "$state" = running ] || [ "$state" = degraded ]; then
    pass "boot: systemd $(C systemctl --version | awk 'NR==1{print $2}') in a container, $state$([ "$state" = degraded ] && echo " (failed: $(C systemctl --failed --plain --no-legend | awk '{print $1}' | tr '\n' ' '))")"
  else
    fail boot "is-system-running says '$state'; console: $(tail -n 5 "$W/console.log" | tr '\n' ' ')"
    return
  fi
  prop() { C systemctl show -p "$2" --value "$1"; }
  # For wait_for, which runs them again each time: UNIT PROPERTY VALUE.
  prop_is() { [ "$(prop "$1" "$2")" = "$3" ]; }
  prop_isnt() { [ "$(prop "$1" "$2")" != "$3" ]; }
  prop_gt() { [ "$(prop "$1" "$2")" -gt "$3" ]; }
  # journal_has TEXT: app.service's journal holds TEXT (read whole: no grep -q in a pipeline
  # under pipefail).
  journal_has() {
    C journalctl -u app.service --no-pager -o cat >"$W/journal.txt" 2>/dev/null || true
    grep -qF -- "$1" "$W/journal.txt"
  }
  SOCK=unix:$R/run/app/socket

  # 1. Install the generated units and tmpfiles.d entry; enable --now the socket.
  mkdir -p "$R/etc/systemd/system" "$R/etc/tmpfiles.d"
  install -m 0644 "$W/gen/systemd/app.socket" "$W/gen/systemd/app.service" "$R/etc/systemd/system/"
  install -m 0644 "$W/gen/tmpfiles.d/app.conf" "$R/etc/tmpfiles.d/"
  C systemd-tmpfiles --create /etc/tmpfiles.d/app.conf
  C systemctl daemon-reload
  C systemctl enable --now app.socket >/dev/null 2>&1 || true
  local sa ss mode
  sa=$(prop app.socket ActiveState)
  ss=$(prop app.service ActiveState)
  mode=$(stat -c '%A %U:%G' "$R/run/app/socket" 2>/dev/null || echo missing)
  if [ "$sa" = active ] && [ "$ss" = inactive ] && [ "$mode" = "srw-rw---- root:www-data" ]; then
    pass "enable-socket: systemctl enable --now app.socket: socket active, service inactive, /run/app/socket $mode"
  else
    fail enable-socket "socket $sa, service $ss, /run/app/socket $mode"
  fi

  # 2. The first request starts the service; MainPID is the master; our STATUS= text.
  local code mainpid title ppid worker status
  code=$(timeout 30 curl -s -o "$W/first.out" -w '%{http_code}' --unix-socket "$R/run/app/socket" http://localhost/ || true)
  wait_for 20 prop_is app.service ActiveState active || true
  mainpid=$(prop app.service MainPID)
  title=$(C ps -o args= -p "$mainpid" 2>/dev/null || true)
  worker=$(timeout 10 curl -s --unix-socket "$R/run/app/socket" http://localhost/pid || true)
  ppid=$(C ps -o ppid= -p "${worker:-0}" 2>/dev/null | tr -d ' ' || true)
  status=$(C systemctl status app.service --no-pager 2>/dev/null | grep -m1 'Status:' | sed 's/^ *//' || true)
  if [ "$code" = 200 ] && [ "$(prop app.service ActiveState)" = active ] \
    && [ "$title" = "ferricorn: master [app]" ] && [ "$ppid" = "$mainpid" ] \
    && [[ "$status" == 'Status: "Serving: 2 workers, generation 1'* ]]; then
    pass "activation: curl --unix-socket /run/app/socket: 200, app.service active, MainPID $mainpid is '$title' (parent of worker $worker), systemctl status: $status"
  else
    fail activation "HTTP $code, service $(prop app.service ActiveState), MainPID $mainpid '$title', worker $worker parent $ppid, $status"
  fi

  # 3. nginx in the same container with the generated server block. The nginx package's
  # configuration comes from this machine's /etc/nginx; its directories under /var are made
  # here only because the container's /var is empty (the package makes them).
  cp -a /etc/nginx "$R/etc/"
  mkdir -p "$R/var/log/nginx" "$R/var/lib/nginx"
  rm -f "$R/etc/nginx/sites-enabled/default" # the guide's step: it is the default_server on :80
  install -m 0644 "$W/gen/packaging/nginx/app.conf" "$R/etc/nginx/sites-enabled/app"
  if ! C systemctl start nginx.service >/dev/null 2>&1; then
    fail nginx "nginx does not start: $(C journalctl -u nginx --no-pager -n 5 | tr '\n' ' ')"
  fi
  N() { timeout 60 nsenter -t "$SP" -n "$@"; } # the container's network namespace
  N "$PY" "$HELPER" get 127.0.0.1:80 /environ --header 'X-Forwarded-For: 203.0.113.9' \
    --header 'X-Forwarded-Proto: https' >"$W/nginx-environ.json" || true
  "$PY" - "$W/nginx-environ.json" >"$W/nginx-check" <<'EOF' || true
import json, sys
r = json.load(open(sys.argv[1]))
if r.get("status") != 200:
    print("HTTP %s %s" % (r.get("status"), r.get("error", r.get("body", ""))[:200])); sys.exit()
e = json.loads(r["body"])
got = {k: e.get(k) for k in ("REMOTE_ADDR", "HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO",
                             "wsgi.url_scheme", "HTTP_HOST")}
want = {"REMOTE_ADDR": "", "HTTP_X_FORWARDED_FOR": "203.0.113.9, 127.0.0.1",
        "HTTP_X_FORWARDED_PROTO": "http", "wsgi.url_scheme": "http", "HTTP_HOST": "127.0.0.1"}
print("ok" if got == want else "got %s" % got)
EOF
  if [ "$(cat "$W/nginx-check")" = ok ]; then
    pass "nginx-forwarded: through nginx: REMOTE_ADDR '' (unix socket), X-Forwarded-For '203.0.113.9, 127.0.0.1', a client's X-Forwarded-Proto: https replaced by nginx's \$scheme, wsgi.url_scheme http"
  else
    fail nginx-forwarded "$(cat "$W/nginx-check")"
  fi
  # ... and the scheme does follow X-Forwarded-Proto from the (trusted) unix-socket peer.
  local scheme
  scheme=$(timeout 10 curl -s -H 'X-Forwarded-Proto: https' --unix-socket "$R/run/app/socket" http://localhost/scheme || true)
  if [ "$scheme" = https ]; then
    pass "forwarded-proto: X-Forwarded-Proto: https from the socket's peer (nginx) sets wsgi.url_scheme https"
  else
    fail forwarded-proto "wsgi.url_scheme '$scheme' with X-Forwarded-Proto: https"
  fi
  # Streaming: the buffered site delivers a slow stream at once, the streaming one piece by piece.
  local spath='/stream?n=5&size=10&delay=0.4'
  N "$PY" "$HELPER" stream 127.0.0.1:80 "$spath" >"$W/stream-buffered.json" || true
  install -m 0644 "$W/gen/packaging/nginx/app-streaming.conf" "$R/etc/nginx/sites-enabled/app"
  C systemctl reload nginx.service || true
  sleep 0.5 # nginx's old workers finish; the reload is asynchronous
  N "$PY" "$HELPER" stream 127.0.0.1:80 "$spath" >"$W/stream-streaming.json" || true
  "$PY" - "$W/stream-buffered.json" "$W/stream-streaming.json" >"$W/stream-check" <<'EOF' || true
import json, sys
b = json.load(open(sys.argv[1]))
s = json.load(open(sys.argv[2]))
if len(b) == 1 and b[0][0] > 1.4 and len(s) >= 4 and s[0][0] < 0.35 and s[-1][0] > 1.4:
    print("ok %d pieces, first at %.2f s, last at %.2f s" % (len(s), s[0][0], s[-1][0]))
else:
    print("buffered arrivals %s, streaming arrivals %s" % (b, s))
EOF
  if [[ "$(cat "$W/stream-check")" == ok* ]]; then
    pass "nginx-streaming: app-streaming.conf (proxy_buffering off): $(cut -c4- "$W/stream-check") (app.conf: all at the end)"
  else
    fail nginx-streaming "$(cat "$W/stream-check")"
  fi

  # Hey through nginx (the guide's tool to verify the proxy).
  if N hey -n 2000 -c 20 -t 10 http://127.0.0.1/ >"$W/hey.out" 2>&1 \
    && grep -Eq '^\s*\[200\]\s+2000 responses' "$W/hey.out" \
    && ! grep -q 'Error distribution' "$W/hey.out"; then
    pass "hey: 2000 requests, 20 concurrent, through nginx: 2000 x 200, no errors"
  else
    fail hey "$(grep -A3 -E 'Status code|Error distribution' "$W/hey.out" | tr '\n' ' ' | head -c 400)"
  fi

  # 4. systemctl reload during a bounded request loop.
  local before after states ok bad refused
  before=$(prop app.service MainPID)
  if start_load reload "$SOCK" / 5; then
    (for _ in $(seq 1 60); do prop app.service ActiveState; sleep 0.1; done) >"$W/reload-states" 2>&1 &
    local sampler=$!
    sleep 1
    C systemctl reload app.service || true
    wait "$sampler" || true
  fi
  finish_load reload
  after=$(prop app.service MainPID)
  states=$(sort -u "$W/reload-states" 2>/dev/null | tr '\n' ' ')
  local journal_ok=no
  if wait_for 10 journal_has 'Reload complete: generation 2 serving' \
    && journal_has 'Reloaded app.service'; then
    journal_ok=yes
  fi
  ok=$LOAD_OK bad=$LOAD_FAILED
  if [ "$ok" -gt 0 ] && [ "$bad" = 0 ] && [ "$before" = "$after" ] && [ "$journal_ok" = yes ] \
    && [[ "$states" =~ ^(active|reloading|\ )+$ ]] && [ "$(prop app.service ActiveState)" = active ]; then
    pass "reload: systemctl reload app during $ok requests: 0 failed, ActiveState only {$states}, MainPID $after unchanged, journal: 'Reload complete: generation 2 serving' + 'Reloaded app.service'"
  else
    fail reload "ok $ok failed $bad $(load_errors reload), states {$states}, MainPID $before -> $after, journal shows the reload: $journal_ok"
  fi

  # 5. systemctl restart during a bounded request loop: the socket stays with systemd.
  before=$(prop app.service MainPID)
  if start_load restart "$SOCK" / 5; then
    sleep 1
    C systemctl restart app.service || true
  fi
  finish_load restart
  after=$(prop app.service MainPID)
  ok=$LOAD_OK bad=$LOAD_FAILED refused=$LOAD_REFUSED
  if [ "$ok" -gt 0 ] && [ "$refused" = 0 ] && [ "$bad" = 0 ] && [ "$before" != "$after" ] \
    && [ "$(prop app.service ActiveState)" = active ]; then
    pass "restart: systemctl restart app.service during $ok requests: 0 refused, 0 failed, MainPID $before -> $after"
  else
    fail restart "ok $ok failed $bad refused $refused $(load_errors restart), MainPID $before -> $after"
  fi

  # 6. stop, then a request: the socket (and its directory) survive, and activate the service.
  C systemctl stop app.service 2>/dev/null || true # (it warns that app.socket can start it)
  ss=$(prop app.service ActiveState)
  sa=$(prop app.socket ActiveState)
  code=$(timeout 30 curl -s -o /dev/null -w '%{http_code}' --unix-socket "$R/run/app/socket" http://localhost/ || true)
  wait_for 20 prop_is app.service ActiveState active || true
  if [ "$ss" = inactive ] && [ "$sa" = active ] && [ "$code" = 200 ] \
    && [ "$(prop app.service ActiveState)" = active ]; then
    pass "stop-reactivate: after systemctl stop app.service (socket still active, /run/app/socket kept) a request gets 200 and starts the service again"
  else
    fail stop-reactivate "after stop: service $ss, socket $sa; then HTTP $code, service $(prop app.service ActiveState)"
  fi

  # 7. The journal: access lines at priority 6 with fields, an app exception at priority 3.
  timeout 10 curl -s -o /dev/null --unix-socket "$R/run/app/socket" 'http://localhost/status?code=201' || true
  timeout 10 curl -s -o /dev/null --unix-socket "$R/run/app/socket" http://localhost/raise || true
  local jc
  wait_for 10 journal_has 'boom from /raise' || true
  jc=$(C journalctl -u app.service -o json --no-pager | "$PY" "$HELPER" journal-check --path /status --exception 'RuntimeError: boom from /raise' || true)
  if [[ "$jc" == ok* ]]; then
    pass "journal: journalctl -u app.service -o json: access line PRIORITY=6 with CLIENT_ADDR REQUEST_METHOD REQUEST_PATH STATUS BYTES DURATION_USEC WORKER_PID (${jc#ok }), the /raise traceback at PRIORITY=3"
  else
    fail journal "$jc"
  fi
  C journalctl -u app -p err -o json --no-pager >"$W/journal-err.json" 2>/dev/null || true
  local perr
  perr=$("$PY" - "$W/journal-err.json" <<'EOF' || true
import json, sys
es = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
bad = [e.get("MESSAGE") for e in es if int(e.get("PRIORITY", 9)) > 3 or "REQUEST_PATH" in e]
tb = [e for e in es if "boom from /raise" in str(e.get("MESSAGE"))]
print("ok %d entries" % len(es) if es and not bad and tb else "entries %d, not errors %s, traceback %d" % (len(es), bad[:3], len(tb)))
EOF
)
  if [[ "$perr" == ok* ]]; then
    pass "journal-errors: journalctl -u app -p err: only errors (${perr#ok }, the traceback among them, no access line)"
  else
    fail journal-errors "$perr"
  fi

  # Every request of a loop has its access entry in the journal: the unit's
  # LogRateLimitIntervalSec=1s/LogRateLimitBurst=10000 hold, where journald's limit alone
  # (500 per 30 s here, some 1600 with the free-space factor) would drop most of them.
  if start_load journal-complete "$SOCK" /closed 4; then :; fi
  finish_load journal-complete
  local logged=0
  journal_count() {
    logged=$(C journalctl -u app.service REQUEST_PATH=/closed -o cat --no-pager 2>/dev/null | wc -l)
    [ "$logged" -ge "$LOAD_OK" ]
  }
  wait_for 15 journal_count || true
  C journalctl --no-pager -o cat _COMM=systemd-journald >"$W/journald.txt" 2>&1 || true
  if [ "$LOAD_OK" -gt 2000 ] && [ "$LOAD_FAILED" = 0 ] && [ "$logged" = "$LOAD_OK" ] \
    && ! grep -q 'Suppressed .* messages from app.service' "$W/journald.txt"; then
    pass "journal-complete: all $LOAD_OK requests of a 4 s loop have their entry in the journal, nothing suppressed (the unit's LogRateLimitBurst=10000 per 1 s; journald's limit here: 500 per 30 s)"
  else
    fail journal-complete "$logged entries for $LOAD_OK requests ($LOAD_FAILED failed); $(grep 'Suppressed' "$W/journald.txt" | tail -n 1)"
  fi

  # 8. Watchdog: the unit generated with --watchdog 2; a stopped master is restarted by systemd
  # while the socket keeps accepting.
  install -m 0644 "$W/gen-watchdog/systemd/app.service" "$R/etc/systemd/system/app.service"
  C systemctl daemon-reload
  C systemctl restart app.service || true
  local wd n0 n1 victim
  wd=$(prop app.service WatchdogUSec)
  n0=$(prop app.service NRestarts)
  victim=$(prop app.service MainPID)
  if start_load watchdog "$SOCK" / 8; then
    sleep 0.5
    C kill -STOP "$victim" || true
    wait_for 10 prop_gt app.service NRestarts "$n0" || true
    wait_for 10 prop_is app.service ActiveState active || true
  fi
  finish_load watchdog
  n1=$(prop app.service NRestarts)
  after=$(prop app.service MainPID)
  ok=$LOAD_OK bad=$LOAD_FAILED refused=$LOAD_REFUSED
  # A watchdog restart is not graceful: once the master is gone systemd SIGKILLs the workers,
  # so a request each of them was in the middle of is cut (at most one per client thread).
  # Every other connection waits in the socket's backlog for the new master: none is refused.
  if [ "$wd" = 2s ] && [ "$n1" -gt "$n0" ] && [ "$after" != "$victim" ] && [ "$refused" = 0 ] \
    && [ "$bad" -ge 0 ] && [ "$bad" -le 4 ] && [ "$ok" -gt 0 ] \
    && [ "$(prop app.service ActiveState)" = active ] \
    && journal_has "Failed with result 'watchdog'"; then
    pass "watchdog: WatchdogSec=2 (--watchdog 2), master $victim SIGSTOPped: systemd restarted the service (NRestarts $n0 -> $n1, MainPID $after, result 'watchdog'); $ok requests meanwhile, 0 refused ($bad in flight in the SIGKILLed workers cut)"
  else
    fail watchdog "WatchdogUSec $wd, NRestarts $n0 -> $n1, MainPID $victim -> $after, ok $ok failed $bad refused $refused $(load_errors watchdog)"
  fi

  # 9. USR2 upgrade under systemd (with the watchdog still on): MainPID moves to the new master.
  before=$(prop app.service MainPID)
  n0=$(prop app.service NRestarts)
  local newmain=''
  if start_load usr2 "$SOCK" / 6; then
    (for _ in $(seq 1 70); do prop app.service ActiveState; sleep 0.1; done) >"$W/usr2-states" 2>&1 &
    local sampler=$!
    sleep 1
    C systemctl kill -s USR2 --kill-whom=main app.service || true
    wait_for 15 prop_isnt app.service MainPID "$before" || true
    wait "$sampler" || true
  fi
  finish_load usr2
  sleep 5 # longer than WatchdogSec=2 twice: the new master's watchdog pings must reach systemd
  newmain=$(prop app.service MainPID)
  title=$(C ps -o args= -p "$newmain" 2>/dev/null || true)
  states=$(sort -u "$W/usr2-states" 2>/dev/null | tr '\n' ' ')
  ok=$LOAD_OK bad=$LOAD_FAILED
  if [ "$ok" -gt 0 ] && [ "$bad" = 0 ] && [ "$newmain" != "$before" ] \
    && [ "$title" = "ferricorn: master [app]" ] && ! C kill -0 "$before" 2>/dev/null \
    && [ "$states" = "active " ] && [ "$(prop app.service ActiveState)" = active ] \
    && [ "$(prop app.service NRestarts)" = "$n0" ]; then
    pass "usr2-upgrade: systemctl kill -s USR2 --kill-whom=main during $ok requests: 0 failed, MainPID $before -> $newmain ('$title'), old master gone, ActiveState always active, no restart (watchdog fed by the new master)"
  else
    fail usr2-upgrade "ok $ok failed $bad $(load_errors usr2), MainPID $before -> $newmain '$title', states {$states}, NRestarts $n0 -> $(prop app.service NRestarts)"
  fi

  # 10. An ASGI app under its own generated units: socket activation (lifespan startup before
  # READY), then systemctl reload during a request loop.
  install -m 0644 "$W/gen-asgi/systemd/asgi.socket" "$W/gen-asgi/systemd/asgi.service" "$R/etc/systemd/system/"
  install -m 0644 "$W/gen-asgi/tmpfiles.d/asgi.conf" "$R/etc/tmpfiles.d/"
  C systemd-tmpfiles --create /etc/tmpfiles.d/asgi.conf
  C systemctl daemon-reload
  C systemctl enable --now asgi.socket >/dev/null 2>&1 || true
  local asgi_body asgi_before asgi_after
  asgi_body=$(timeout 30 curl -s --unix-socket "$R/run/asgi/socket" http://localhost/ || true)
  wait_for 20 prop_is asgi.service ActiveState active || true
  if [ "$asgi_body" = "asgi lifespan-ok" ] && [ "$(prop asgi.service ActiveState)" = active ] \
    && [ "$(prop asgi.service Type)" = notify ]; then
    pass "asgi-activation: an ASGI app's generated asgi.socket/asgi.service: the first request starts it, '$asgi_body' (lifespan state in the scope), Type=notify active"
  else
    fail asgi-activation "body '$asgi_body', asgi.service $(prop asgi.service ActiveState)"
  fi
  asgi_before=$(prop asgi.service MainPID)
  if start_load asgi-reload "unix:$R/run/asgi/socket" / 5; then
    sleep 1
    C systemctl reload asgi.service || true
  fi
  finish_load asgi-reload
  asgi_after=$(prop asgi.service MainPID)
  ok=$LOAD_OK bad=$LOAD_FAILED
  C journalctl -u asgi.service --no-pager -o cat >"$W/journal-asgi.txt" 2>/dev/null || true
  if [ "$ok" -gt 0 ] && [ "$bad" = 0 ] && [ "$asgi_before" = "$asgi_after" ] \
    && grep -q 'Reload complete: generation 2 serving' "$W/journal-asgi.txt" \
    && grep -q 'ASGI lifespan shutdown complete' "$W/journal-asgi.txt"; then
    pass "asgi-reload: systemctl reload asgi during $ok requests: 0 failed, MainPID unchanged, the old workers' lifespan shutdown ran"
  else
    fail asgi-reload "ok $ok failed $bad $(load_errors asgi-reload), MainPID $asgi_before -> $asgi_after, journal: $(grep -E 'Reload|lifespan' "$W/journal-asgi.txt" | tail -n 3 | tr '\n' ' ')"
  fi

  guide_units
  # For a look afterwards (FERRICORN_E2E_KEEP=1).
  C journalctl --no-pager -o short-monotonic -u app.service -u app.socket -u nginx.service \
    -u gunicorn.service -u gunicorn.socket >"$W/journal-final.txt" 2>&1 || true
}

# 10. The deployment guide's own units (its systemd section, as published:
# tests/fixtures/guide), with only the program in ExecStart changed, /usr/bin/gunicorn to
# /usr/bin/ferricorn: its user, app module, pid file, RuntimeDirectory= and the rest as they
# are. (Runs inside systemd_part: C, R, prop.)
guide_units() {
  local g=$W/guide body mainpid pidfile title lines app=$R/home/someuser/applicationroot
  mkdir -p "$g"
  cp "$REPO"/tests/fixtures/guide/* "$g/"
  sed -i 's|^ExecStart=/usr/bin/gunicorn |ExecStart=/usr/bin/ferricorn |' "$g/gunicorn.service"
  lines=$(diff "$REPO/tests/fixtures/guide/gunicorn.service" "$g/gunicorn.service" | grep -c '^[<>]' || true)
  # What the guide takes for granted: its user and group (and the tmpfiles entry's group),
  # and an app `applicationname.wsgi` in the working directory.
  C groupadd -f someuser
  C groupadd -f somegroup
  C id someuser >/dev/null 2>&1 || C useradd -g someuser -d /home/someuser -M -s /usr/sbin/nologin someuser
  mkdir -p "$app/applicationname"
  : >"$app/applicationname/__init__.py"
  printf '%s\n' 'import os' '' '' 'def application(environ, start_response):' \
    '    body = b"guide app %d\n" % os.getpid()' \
    '    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])' \
    '    return [body]' >"$app/applicationname/wsgi.py"
  C chown -R someuser:someuser /home/someuser
  install -m 0644 "$g/gunicorn.service" "$g/gunicorn.socket" "$R/etc/systemd/system/"
  install -m 0644 "$g/gunicorn.tmpfiles.conf" "$R/etc/tmpfiles.d/gunicorn.conf"
  C systemd-tmpfiles --create /etc/tmpfiles.d/gunicorn.conf || true
  C systemctl daemon-reload
  C systemctl enable --now gunicorn.socket >/dev/null 2>&1 || true
  body=$(timeout 30 curl -s --unix-socket "$R/run/gunicorn/socket" http://localhost/ || true)
  wait_for 20 prop_is gunicorn.service ActiveState active || true
  mainpid=$(prop gunicorn.service MainPID)
  title=$(C ps -o args= -p "$mainpid" 2>/dev/null || true)
  pidfile=$(cat "$R/run/gunicorn/pid" 2>/dev/null || true)
  if [ "$lines" = 2 ] && [[ "$body" == "guide app "* ]] \
    && [ "$title" = "ferricorn: master [applicationname.wsgi]" ] \
    && [ "$(C ps -o user= -p "$mainpid" 2>/dev/null | tr -d ' ')" = someuser ] \
    && [ "$pidfile" = "$mainpid" ] && C test -x /usr/bin/ferricorn; then
    pass "guide-unit: the deployment guide's gunicorn.service, .socket and tmpfiles.d entry, only ExecStart's /usr/bin/gunicorn changed to /usr/bin/ferricorn: curl --unix-socket /run/gunicorn/socket starts it and gets '$body', MainPID $mainpid '$title' as someuser, /run/gunicorn/pid (--pid) holds the MainPID"
  else
    fail guide-unit "diff lines $lines, body '$body', service $(prop gunicorn.service ActiveState), MainPID $mainpid '$title', pid file '$pidfile'; $(C journalctl -u gunicorn.service --no-pager -n 5 -o cat | tr '\n' ' ')"
  fi
  # Its ExecReload= (kill -HUP $MAINPID) reloads; the master stays.
  guide_reloaded() { C journalctl -u gunicorn.service --no-pager -o cat | grep -q 'Reload complete: generation 2 serving'; }
  C systemctl reload gunicorn.service || true
  wait_for 20 guide_reloaded || true
  body=$(timeout 10 curl -s --unix-socket "$R/run/gunicorn/socket" http://localhost/ || true)
  if [[ "$body" == "guide app "* ]] && [ "$(prop gunicorn.service MainPID)" = "$mainpid" ] && guide_reloaded; then
    pass "guide-unit-reload: its ExecReload=/bin/kill -s HUP \$MAINPID: 'Reload complete: generation 2 serving', same MainPID $mainpid, serving"
  else
    fail guide-unit-reload "body '$body', MainPID $mainpid -> $(prop gunicorn.service MainPID)"
  fi
  # ferricorn systemd check on that layout reports the trap, and the trap is real: once the
  # service stops, RuntimeDirectory= removes /run/gunicorn and the socket file with it, while
  # gunicorn.socket stays active.
  local findings sa after
  findings=$("$BIN" systemd check "$g" 2>&1 || true)
  C systemctl stop gunicorn.service 2>/dev/null || true
  sa=$(prop gunicorn.socket ActiveState)
  after=$(timeout 10 curl -s -o /dev/null -w '%{http_code}' --unix-socket "$R/run/gunicorn/socket" http://localhost/ || true)
  if grep -q '\[runtime-directory-deletes-socket\]' <<<"$findings" && [ "$sa" = active ] \
    && [ ! -e "$R/run/gunicorn/socket" ] && [ "$after" = 000 ]; then
    pass "guide-check: ferricorn systemd check on that layout reports [runtime-directory-deletes-socket]; and after systemctl stop gunicorn.service the socket file is indeed gone while gunicorn.socket is still $sa (the next request fails)"
  else
    fail guide-check "check said: $(grep -o '\[[a-z-]*\]' <<<"$findings" | tr '\n' ' '); after stop: socket unit $sa, socket file $([ -e "$R/run/gunicorn/socket" ] && echo present || echo gone), request $after"
  fi
  C systemctl disable --now gunicorn.socket >/dev/null 2>&1 || true
}

# ---- runit ---------------------------------------------------------------------------------

# The host's part: the binary and the app copied where www-data can read them wherever this
# checkout is.
mkdir -p "$W/bin"
cp "$BIN" "$W/bin/ferricorn"
cp -r "$REPO/examples" "$W/examples"
chmod -R a+rX "$W/bin" "$W/examples"
host_gen() { # host_gen NAME [OPTIONS...]: generate for this machine's paths
  local name=$1
  shift
  "$BIN" systemd generate --name "$name" --exe "$W/bin/ferricorn" --chdir "$W/examples" \
    --bind "unix:$W/$name/socket" -w 2 "$@" spec:app --output "$W/gen-$name" 2>/dev/null
}
sv_pid() { sv status "$1" 2>/dev/null | sed -n 's/^run: [^(]*(pid \([0-9]*\)).*/\1/p'; }
serves() { [ "$(timeout 10 curl -s -o /dev/null -w '%{http_code}' --unix-socket "$1" http://localhost/ || true)" = 200 ]; }

runit_part() {
  host_gen "$RUNIT_NAME"
  mkdir -p "$W/sv"
  cp -a "$W/gen-$RUNIT_NAME/packaging/runit/$RUNIT_NAME" "$W/sv/"
  local d=$W/sv/$RUNIT_NAME sock=$W/$RUNIT_NAME/socket p1 p2 p3
  runsv "$d" >"$W/runsv.out" 2>&1 &
  RUNSV_PID=$!
  if wait_for 20 serves "$sock" && [[ "$(sv status "$d")" == run:*"run: log:"* ]]; then
    pass "runit-up: runsv on the generated service dir: sv status: $(sv status "$d" | sed "s|$W/sv/||"), serves on its socket"
  else
    fail runit-up "sv status: $(sv status "$d" 2>&1); $(tail -n 3 "/var/log/$RUNIT_NAME/current" 2>/dev/null | tr '\n' ' ')"
    return
  fi
  p1=$(sv_pid "$d")
  kill -KILL "$p1"
  p2=''
  new_master() { local p; p=$(sv_pid "$d"); [ -n "$p" ] && [ "$p" != "$p1" ]; }
  wait_for 20 new_master || true
  wait_for 20 serves "$sock" || true
  p2=$(sv_pid "$d")
  if [ -n "$p2" ] && [ "$p2" != "$p1" ] && serves "$sock"; then
    pass "runit-restart: master $p1 killed (SIGKILL): runsv started a new one ($p2), which serves"
  else
    fail runit-restart "master $p1 killed; now '$p2'; $(sv status "$d" 2>&1)"
  fi
  sv hup "$d"
  wait_for 20 grep -q 'Reload complete: generation 2 serving' "/var/log/$RUNIT_NAME/current" || true
  p3=$(sv_pid "$d")
  if grep -q 'Reload complete: generation 2 serving' "/var/log/$RUNIT_NAME/current" \
    && [ "$p3" = "$p2" ] && serves "$sock"; then
    pass "runit-hup: sv hup reloads: 'Reload complete: generation 2 serving' in /var/log/$RUNIT_NAME/current (svlogd), same master $p3, serving"
  else
    fail runit-hup "master $p2 -> $p3; $(tail -n 3 "/var/log/$RUNIT_NAME/current" 2>/dev/null | tr '\n' ' ')"
  fi
  timeout 20 sv exit "$d" >/dev/null 2>&1 || true
  stop_pid "$RUNSV_PID" 10
  RUNSV_PID=''
}

# ---- supervisor and logrotate ----------------------------------------------------------------

supervisor_part() {
  local logs=$W/log/$SUP_NAME sock=$W/$SUP_NAME/socket conf=$W/supervisor/supervisord.conf
  host_gen "$SUP_NAME" --access-logfile "$logs/access.log" --error-logfile "$logs/error.log"
  local prog=$W/gen-$SUP_NAME/packaging/supervisor/$SUP_NAME.conf
  # What the generated file's header says it needs: the socket's directory and the log
  # directory, owned by the program's user.
  install -d -o www-data -g www-data -m 0755 "$W/$SUP_NAME"
  install -d -o www-data -g www-data -m 0750 "$logs"
  grep -q "install -d -o www-data -g www-data -m 0750 $logs\$" "$prog" \
    || fail supervisor-file "its header does not name the log directory $logs"
  mkdir -p "$W/supervisor"
  # supervisord's own configuration (Debian's /etc/supervisor/supervisord.conf, relocated);
  # the program section is the generated file, included as from /etc/supervisor/conf.d.
  cat >"$conf" <<EOF
[unix_http_server]
file=$W/supervisor/supervisor.sock
chmod=0700

[supervisord]
logfile=$W/supervisor/supervisord.log
pidfile=$W/supervisor/supervisord.pid
childlogdir=$W/supervisor

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://$W/supervisor/supervisor.sock

[include]
files = $prog
EOF
  supervisord -n -c "$conf" >"$W/supervisor/out" 2>&1 &
  SUPERVISORD_PID=$!
  sup_status() { timeout 10 supervisorctl -c "$conf" status "$SUP_NAME" 2>/dev/null || true; }
  sup_pid() { sup_status | sed -n 's/.*RUNNING *pid \([0-9]*\),.*/\1/p'; }
  local p1 p2
  sup_running() { [[ "$(sup_status)" == *RUNNING* ]]; } # after startsecs (1 s)
  if wait_for 20 serves "$sock" && wait_for 20 sup_running; then
    pass "supervisor-running: supervisord with the generated program section: $(sup_status | tr -s ' '), serves on its socket"
  else
    fail supervisor-running "$(sup_status); $(tail -n 3 "$W/supervisor/supervisord.log" 2>/dev/null | tr '\n' ' ')"
    return
  fi
  p1=$(sup_pid)
  kill -KILL "$p1"
  new_master() { local p; p=$(sup_pid); [ -n "$p" ] && [ "$p" != "$p1" ]; }
  wait_for 20 new_master || true
  wait_for 20 serves "$sock" || true
  p2=$(sup_pid)
  if [ -n "$p2" ] && [ "$p2" != "$p1" ] && serves "$sock"; then
    pass "supervisor-restart: master $p1 killed (SIGKILL): supervisord started a new one ($p2), which serves"
  else
    fail supervisor-restart "master $p1 killed; now: $(sup_status)"
  fi
  timeout 10 curl -s -o /dev/null --unix-socket "$sock" http://localhost/raise || true
  timeout 10 curl -s -o /dev/null --unix-socket "$sock" 'http://localhost/?id=supervisor-log' || true
  if wait_for 10 grep -q 'id=supervisor-log' "$logs/access.log" \
    && grep -q 'boom from /raise' "$logs/error.log" && [ -f "$logs/stdout.log" ] \
    && [ -f "$logs/stderr.log" ]; then
    pass "supervisor-logs: access lines in $logs/access.log, the traceback in error.log, supervisord's stdout.log/stderr.log beside them (as the file says)"
  else
    fail supervisor-logs "$(ls -l "$logs" 2>&1 | tr '\n' ' ')"
  fi

  # logrotate with the generated stanza, while requests keep coming: every line is in one of
  # the two files, the new ones in the new file.
  local lr=$W/gen-$SUP_NAME/packaging/logrotate/$SUP_NAME i
  for i in $(seq 1 20); do
    "$PY" "$HELPER" get "unix:$sock" "/?id=before-$i" >/dev/null
  done
  local ok bad rc=0
  if start_load logrotate "unix:$sock" '/?id=during' 4; then
    sleep 1
    timeout 60 logrotate -f -s "$W/logrotate.state" "$lr" >"$W/logrotate.out" 2>&1 || rc=$?
  fi
  finish_load logrotate
  local after_ok=0
  for i in $(seq 1 20); do
    "$PY" "$HELPER" get "unix:$sock" "/?id=after-$i" >"$W/after.json"
    if [ "$(jget "$W/after.json" status)" = 200 ]; then
      after_ok=$((after_ok + 1))
    else
      note "after-$i: $(cat "$W/after.json")"
    fi
  done
  timeout 10 curl -s -o /dev/null --unix-socket "$sock" http://localhost/raise || true
  ok=$LOAD_OK bad=$LOAD_FAILED
  local cnt_before cnt_during cnt_after_new cnt_after_old during_old during_new
  cnt_before=$(cat "$logs/access.log.1" 2>/dev/null | grep -c 'id=before-' || true)
  during_old=$(grep -c 'id=during' "$logs/access.log.1" 2>/dev/null || true)
  during_new=$(grep -c 'id=during' "$logs/access.log" 2>/dev/null || true)
  cnt_during=$((during_old + during_new))
  cnt_after_new=$(grep -c 'id=after-' "$logs/access.log" 2>/dev/null || true)
  cnt_after_old=$(grep -c 'id=after-' "$logs/access.log.1" 2>/dev/null || true)
  if [ "$rc" = 0 ] && [ "$bad" = 0 ] && [ "$cnt_before" = 20 ] && [ "$cnt_during" = "$ok" ] \
    && [ "$cnt_after_new" = 20 ] && [ "$cnt_after_old" = 0 ] && [ "$during_new" -gt 0 ] \
    && grep -q 'boom from /raise' "$logs/error.log" && [ -f "$logs/error.log.1" ]; then
    pass "logrotate: logrotate -f with the generated stanza during $ok requests: all $ok lines kept ($during_old in access.log.1, $during_new in the new access.log), the 20 later ones all in the new file, the error log reopened too"
  else
    fail logrotate "rc $rc ($(tail -n 2 "$W/logrotate.out" | tr '\n' ' ')), load ok $ok failed $bad, before in .1: $cnt_before, during: $cnt_during of $ok, after: $cnt_after_new new / $cnt_after_old old of $after_ok answered"
  fi
  timeout 30 supervisorctl -c "$conf" shutdown >/dev/null 2>&1 || true
  stop_pid "$SUPERVISORD_PID" 10
  SUPERVISORD_PID=''
}

# ---- Procfile ------------------------------------------------------------------------------

procfile_part() {
  # The Procfile has no --bind and no --chdir: the platform (honcho here) sets PORT and runs
  # it in the app's directory, with ferricorn on PATH.
  "$BIN" systemd generate --name "$PROC_NAME" -w 2 spec:app --output "$W/gen-$PROC_NAME" 2>/dev/null
  mkdir -p "$W/procfile-app"
  cp -r "$W/examples/." "$W/procfile-app/"
  cp "$W/gen-$PROC_NAME/packaging/Procfile" "$W/procfile-app/Procfile"
  local port
  port=$("$PY" "$HELPER" free-port)
  (cd "$W/procfile-app" && PATH="$W/bin:$PATH" exec setsid "$HONCHO" start -f Procfile -p "$port") \
    >"$W/honcho.out" 2>&1 &
  HONCHO_PID=$!
  http_ok() { [ "$(timeout 10 curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/" || true)" = 200 ]; }
  if wait_for 20 http_ok && grep -q "master \[$PROC_NAME\]" <(ps -eo args); then
    pass "procfile: honcho start runs the generated Procfile line ($(cat "$W/procfile-app/Procfile" | tr -d '\n')) and it serves on 127.0.0.1:\$PORT"
  else
    fail procfile "$(tail -n 5 "$W/honcho.out" | tr '\n' ' ')"
  fi
  stop_pid "$HONCHO_PID" 15
  HONCHO_PID=''
}

# ---- PROXY protocol ------------------------------------------------------------------------

# A real nginx (its stream module, `proxy_protocol on;`: v1) and a real HAProxy
# (`send-proxy-v2`) in front of ferricorn --proxy-protocol, on loopback; the client connects
# from 127.0.0.2, which is what the app and the access log must see.
proxy_protocol_part() {
  local d=$W/pp pfc png pha
  mkdir -p "$d"
  pfc=$("$PY" "$HELPER" free-port)
  png=$("$PY" "$HELPER" free-port)
  pha=$("$PY" "$HELPER" free-port)
  "$W/bin/ferricorn" --chdir "$W/examples" -b "127.0.0.1:$pfc" -w 1 --proxy-protocol auto \
    --proxy-allow-from 127.0.0.1 --access-logfile "$d/access.log" --error-logfile "$d/error.log" \
    spec:app >"$d/out" 2>&1 &
  PP_FC_PID=$!
  printf '%s\n' "load_module $NGINX_STREAM;" 'daemon off;' "pid $d/nginx.pid;" \
    "error_log $d/nginx-error.log;" 'events { worker_connections 64; }' 'stream {' \
    "    server { listen 127.0.0.1:$png; proxy_pass 127.0.0.1:$pfc; proxy_protocol on; }" \
    '}' >"$d/nginx.conf"
  nginx -e "$d/nginx-error.log" -p "$d" -c "$d/nginx.conf" >"$d/nginx.out" 2>&1 &
  PP_NGINX_PID=$!
  printf '%s\n' 'global' '    maxconn 64' 'defaults' '    mode tcp' '    timeout connect 5s' \
    '    timeout client 30s' '    timeout server 30s' 'frontend pp' "    bind 127.0.0.1:$pha" \
    '    default_backend ferricorn' 'backend ferricorn' \
    "    server fc 127.0.0.1:$pfc send-proxy-v2" >"$d/haproxy.cfg"
  haproxy -db -f "$d/haproxy.cfg" >"$d/haproxy.out" 2>&1 &
  PP_HAPROXY_PID=$!
  port_open() { "$PY" -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$1"; }
  wait_for 30 grep -q 'Ready:' "$d/error.log" || true
  wait_for 20 port_open "$png" || true
  wait_for 20 port_open "$pha" || true
  local via r
  for via in "nginx v1 $png" "haproxy v2 $pha"; do
    set -- $via
    "$PY" "$HELPER" get "127.0.0.1:$3" /environ --source 127.0.0.2 >"$d/$1.json" || true
    r=$("$PY" -c '
import json, sys
r = json.load(open(sys.argv[1]))
if r.get("status") != 200:
    print("HTTP %s %s" % (r.get("status"), r.get("error", r.get("body", ""))[:200])); sys.exit()
e = json.loads(r["body"])
keys = ("REMOTE_ADDR", "REMOTE_PORT", "PROXY_PROTOCOL", "PROXY_ADDR", "PROXY_PORT")
got = {k: e.get(k) for k in keys}
want = dict(zip(keys, ("127.0.0.2", str(r["local_port"]), "TCP4", "127.0.0.1", sys.argv[2])))
print("ok %s" % got if got == want else "got %s, want %s" % (got, want))
' "$d/$1.json" "$3" || true)
    if [[ "$r" == ok* ]]; then
      pass "proxy-protocol-$2: client 127.0.0.2 -> $1 ($([ "$1" = nginx ] && echo 'stream module, proxy_protocol on' || echo 'send-proxy-v2')) -> ferricorn --proxy-protocol: the app sees ${r#ok }"
    else
      fail "proxy-protocol-$2" "$r; $(tail -n 3 "$d/error.log" 2>/dev/null | tr '\n' ' ')"
    fi
  done
  logged() { [ "$(grep -c '^127\.0\.0\.2 - - .*"GET /environ HTTP/1.1" 200' "$d/access.log" 2>/dev/null)" -ge 2 ]; }
  if wait_for 10 logged; then
    pass "proxy-protocol-log: the access log's %(h)s is the proxied client, 127.0.0.2, for both"
  else
    fail proxy-protocol-log "$(tail -n 2 "$d/access.log" 2>/dev/null | tr '\n' ' ')"
  fi
  stop_pid "$PP_NGINX_PID" 10
  stop_pid "$PP_HAPROXY_PID" 10
  stop_pid "$PP_FC_PID" 20
  PP_NGINX_PID='' PP_HAPROXY_PID='' PP_FC_PID=''
}

# Each part runs to its end even when a command in it fails (its checks say what went wrong).
for part in ${FERRICORN_E2E_PARTS:-systemd_part runit_part supervisor_part procfile_part proxy_protocol_part}; do
  "$part" || fail "$part" "stopped early (exit status $?)"
done
skip upstart "upstart cannot run here; its generated job is checked against init(5)'s stanza grammar by cargo test (tests/units.rs upstart_job_follows_the_stanza_grammar)"

echo "e2e took $((SECONDS - T0)) s"
if [ "${FERRICORN_E2E_REQUIRED:-}" = 1 ] && [ "$systemd_skipped" = yes ]; then
  echo "FAIL systemd: skipped, but FERRICORN_E2E_REQUIRED=1 (CI must run it)"
  failed=$((failed + 1))
fi
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]

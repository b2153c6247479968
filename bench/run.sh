#!/usr/bin/env bash
# The benchmark suite in one command: installs what it needs, builds ferricorn, runs the matrix
# (bench/driver.py) and writes bench/RESULTS.md and bench/results.json.
#
#   bench/run.sh                  # full run: 3 rounds of 10 s (about an hour on 2 cores)
#   bench/run.sh --quick          # smoke run: 1 round of 3 s
#   bench/run.sh --rounds 5 --duration 15 --only hello,json4k --servers ferricorn,granian
#   bench/run.sh --only ahello,asleep,wsecho --servers ferricorn,uvicorn,granian-asgi \
#       --out bench/ASGI.md --json bench/asgi.json      # the ASGI apps and servers
#   bench/run.sh slowclient       # the slow-client scenario (bench/slowclient.py) instead
#
# Every option is passed to bench/driver.py (see `python3 bench/driver.py --help`), or after
# `slowclient` to bench/slowclient.py.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s ==\n' "$*"; }

# The peers' versions, pinned. Recorded in RESULTS.md as installed.
PEERS=(
  gunicorn==27.0.1
  granian==2.8.7
  pyuwsgi==2.0.30.post1
  bjoern==3.2.2
  waitress==3.0.2
  # ASGI: uvicorn with httptools and uvloop (and websockets for its WebSocket support);
  # granian above serves ASGI too (--interface asgi). ferricorn takes uvloop from here.
  uvicorn==0.54.0
  httptools==0.9.0
  uvloop==0.23.0
  websockets==17.4
)
OHA_VERSION=1.16.0

log "system packages"
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v taskset >/dev/null || need+=(util-linux)
[ -e /usr/include/ev.h ] || need+=(libev-dev)
command -v cc >/dev/null || need+=(gcc)
if [ "${#need[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

log "python peers (bench/.venv)"
# The same python3 that ferricorn embeds (build.rs links the python3 on PATH).
if [ ! -x bench/.venv/bin/python ]; then
  python3 -m venv bench/.venv
fi
if ! bench/.venv/bin/python -c '
import importlib.metadata as m, sys
want = dict(a.split("==") for a in sys.argv[1:])
sys.exit(any(m.version(n) != v for n, v in want.items()))' "${PEERS[@]}" 2>/dev/null; then
  bench/.venv/bin/pip install -q --disable-pip-version-check "${PEERS[@]}"
fi
bench/.venv/bin/python --version

log "oha (bench/.tools)"
if [ ! -x bench/.tools/bin/oha ]; then
  cargo install --locked oha --version "$OHA_VERSION" --root bench/.tools
fi
bench/.tools/bin/oha --version

log "ferricorn (release build) and the WebSocket load generator (bench/wsload.rs)"
cargo build --release
cargo build --release --example wsload
target/release/ferricorn --version

if [ "${1:-}" = slowclient ]; then
  shift
  log "slow-client scenario"
  exec python3 bench/slowclient.py "$@"
fi
log "benchmark"
exec python3 bench/driver.py "$@"

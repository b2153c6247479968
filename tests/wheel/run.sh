#!/usr/bin/env bash
# The wheel on every CPython 3.9+ on this machine: build, install into a fresh virtualenv, and
# run the smoke matrix (tests/wheel/smoke.py) from that virtualenv's own `ferricorn`.
#
#   tests/wheel/run.sh                  every interpreter found (see `interpreters` below)
#   tests/wheel/run.sh PYTHON...        only these interpreters
#
# Interpreters are discovered, never listed: pyenv's versions, then every `python3.N` on PATH
# (Debian's /usr/bin/python3.11, statically linked, among them), deduplicated by the real path
# of `sys.executable`, 3.9 or newer, free-threaded builds left out. Wheels are built with
# maturin's `--profile ci-wheel` (Cargo.toml: no LTO) into the shared cargo target directory.
# Debian's interpreter gets ferricorn the way a user does it, `venv/bin/pip install CHECKOUT`
# (the pyproject.toml build); the others install the wheel maturin built for them.
# Ends with "N passed, N failed"; exit status 1 if anything failed.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
work=${FERRICORN_WHEEL_WORK:-$repo/target/wheel-matrix}
tools=$repo/target/wheel-tools
profile=${FERRICORN_WHEEL_PROFILE:-ci-wheel}
rm -rf "$work"
mkdir -p "$work/wheels"
t_all=$(date +%s)

log() { printf '\n== %s ==\n' "$*"; }

interpreters() {
  local c=()
  if command -v pyenv >/dev/null 2>&1; then
    local root; root=$(pyenv root)
    while read -r v; do
      [ -x "$root/versions/$v/bin/python" ] && c+=("$root/versions/$v/bin/python")
    done < <(pyenv versions --bare 2>/dev/null)
  elif [ -d "$HOME/.pyenv/versions" ]; then
    for p in "$HOME"/.pyenv/versions/*/bin/python; do [ -x "$p" ] && c+=("$p"); done
  fi
  local IFS=:
  for d in $PATH; do
    for p in "$d"/python3.*; do
      [[ "$(basename "$p")" =~ ^python3\.[0-9]+$ ]] && [ -x "$p" ] && c+=("$p")
    done
  done
  printf '%s\n' "${c[@]}"
}

declare -A seen=()
pythons=()
candidates=("$@")
[ "${#candidates[@]}" -gt 0 ] || mapfile -t candidates < <(interpreters)
for p in "${candidates[@]}"; do
  info=$("$p" -c 'import os, sys, sysconfig
print(os.path.realpath(sys.executable), "%d.%d" % sys.version_info[:2],
      int(sys.version_info >= (3, 9)), int(bool(sysconfig.get_config_var("Py_GIL_DISABLED"))))' \
    2>/dev/null) || continue
  read -r real ver ok ft <<<"$info"
  [ "$ok" = 1 ] || continue
  if [ "$ft" = 1 ]; then echo "left out: $p (free-threaded; ferricorn refuses it at start)"; continue; fi
  [ -n "${seen[$real]:-}" ] && continue
  seen[$real]=1
  pythons+=("$real")
done
[ "${#pythons[@]}" -gt 0 ] || { echo "no CPython 3.9+ found"; echo "0 passed, 1 failed"; exit 1; }
log "interpreters"
for p in "${pythons[@]}"; do echo "$p ($("$p" -c 'import sys; print(sys.version.split()[0])'))"; done

if [ ! -x "$tools/bin/maturin" ]; then
  python3 -m venv "$tools"
  "$tools/bin/pip" install -q 'maturin>=1.9,<2'
fi
"$tools/bin/maturin" --version

passed=0
failed=0
summary=()
for py in "${pythons[@]}"; do
  tag=$("$py" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
  case "$py" in /usr/bin/*) label="$tag-system" ;; *) label="$tag-$(basename "$(dirname "$(dirname "$py")")")" ;; esac
  # (ldd's output captured first: with pipefail, `ldd | grep -q` fails when grep exits early.)
  static=no
  deps=$(ldd "$py" 2>/dev/null || true)
  grep -q libpython <<<"$deps" || static=yes
  log "$label: $py (libpython linked statically: $static)"
  venv=$work/venv-$label
  "$py" -m venv "$venv"
  t0=$(date +%s)
  if [ "$py" = /usr/bin/python3.11 ] || [[ "$label" == *-system ]]; then
    # The user's way: pip builds the checkout (pyproject.toml, maturin) for this interpreter.
    how="pip install $repo"
    if ! MATURIN_PEP517_ARGS="--profile $profile" "$venv/bin/pip" install -q "$repo"; then
      echo "FAIL build        $label: pip install $repo"; failed=$((failed + 1)); continue
    fi
  else
    how="maturin build -i $py, pip install the wheel"
    if ! "$tools/bin/maturin" build -q --profile "$profile" -i "$py" -o "$work/wheels/$label"; then
      echo "FAIL build        $label: maturin build"; failed=$((failed + 1)); continue
    fi
    "$venv/bin/pip" install -q "$work/wheels/$label"/ferricorn-*.whl
  fi
  t_build=$(( $(date +%s) - t0 ))
  so=$(ls "$venv"/lib/python*/site-packages/ferricorn/_ferricorn*.so)
  deps=$(ldd "$so")
  if grep -q libpython <<<"$deps"; then
    echo "FAIL no-libpython $label: $so links a libpython:"; grep libpython <<<"$deps"
    failed=$((failed + 1))
  else
    echo "PASS no-libpython $label: the extension module links no libpython"
    passed=$((passed + 1))
  fi
  t0=$(date +%s)
  out=$(python3 tests/wheel/smoke.py "$venv" "$label" 2>&1) || true
  printf '%s\n' "$out"
  t_smoke=$(( $(date +%s) - t0 ))
  p=$(printf '%s\n' "$out" | grep -c '^PASS' || true)
  f=$(printf '%s\n' "$out" | grep -c '^FAIL' || true)
  [ "$p" -gt 0 ] || f=$((f + 1))
  passed=$((passed + p))
  failed=$((failed + f))
  summary+=("$(printf '%-16s build %4ss  smoke %3ss  %2d passed %d failed  (%s)' \
    "$label" "$t_build" "$t_smoke" "$p" "$f" "$how")")
done

log "summary (profile $profile)"
printf '%s\n' "${summary[@]}"
echo "wheel matrix: $(( $(date +%s) - t_all )) s in all"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

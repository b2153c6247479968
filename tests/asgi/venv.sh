#!/usr/bin/env bash
# Makes (or reuses) the virtualenv the ASGI tests run their apps and clients in:
# target/asgi-venv, from tests/asgi/requirements.txt, with the python3 ferricorn embeds (the
# venv must be of that Python version). Reused while the requirements file is unchanged;
# serialised with flock, since test binaries run at the same time. Prints the venv's path.
# Used by tests/asgi_support (once per test binary) and by .ci/run.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${FERRICORN_ASGI_VENV:-$root/target/asgi-venv}"
req="$root/tests/asgi/requirements.txt"
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
want="$(sha256sum "$req" | cut -d' ' -f1) $(python3 -c 'import sys; print(sys.version.split()[0])')"
if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.requirements" 2>/dev/null)" = "$want" ]; then
  echo "$venv"
  exit 0
fi
rm -rf "$venv"
python3 -m venv "$venv" >&2
"$venv/bin/pip" install -q --disable-pip-version-check -r "$req" >&2
echo "$want" >"$venv/.requirements"
echo "$venv"

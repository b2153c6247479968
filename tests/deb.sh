#!/usr/bin/env bash
# Acceptance for the Debian package: `cargo deb` builds it, `dpkg -c` lists the binary, both
# units and the tmpfiles.d entry, and `dpkg -i` installs it into a throwaway root (its own
# dpkg database; nothing on this machine changes).
#
#   tests/deb.sh            build (cargo deb, release build included) and check
#   tests/deb.sh --no-build package the existing target/release/ferricorn
#   tests/deb.sh --system   also install it on this machine with dpkg -i, run the installed
#                           binary, and purge it again
#
# Needs cargo-deb (cargo install --locked cargo-deb) and dpkg. Prints a loud SKIP and exits 0
# when cargo-deb is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

build=(cargo deb)
system=no
for a in "$@"; do
  case "$a" in
    --no-build) build+=(--no-build) ;;
    --system) system=yes ;;
    *) echo "usage: $0 [--no-build] [--system]" >&2; exit 2 ;;
  esac
done

if ! cargo deb --version >/dev/null 2>&1; then
  echo "SKIP tests/deb.sh: cargo-deb is not installed (cargo install --locked cargo-deb)"
  exit 0
fi

fail() { echo "FAIL tests/deb.sh: $*" >&2; exit 1; }

out=$("${build[@]}" 2>&1) || { echo "$out" >&2; fail "cargo deb failed"; }
deb=$(printf '%s\n' "$out" | grep -E '\.deb$' | tail -n1)
[ -f "$deb" ] || fail "no .deb in the output of cargo deb: $out"
echo "built $deb"

contents=$(dpkg -c "$deb")
for f in ./usr/bin/ferricorn ./lib/systemd/system/app.service ./lib/systemd/system/app.socket \
         ./usr/lib/tmpfiles.d/app.conf ./usr/share/ferricorn/examples/hello.py; do
  printf '%s\n' "$contents" | awk '{print $6}' | grep -qxF "$f" || fail "dpkg -c lacks $f"
done
printf '%s\n' "$contents" | grep -E ' \./usr/bin/ferricorn$' | grep -q '^-rwxr-xr-x' \
  || fail "usr/bin/ferricorn is not mode 755"
# The packaged units are the committed (generated) ones.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dpkg-deb -x "$deb" "$tmp/x"
cmp "$tmp/x/lib/systemd/system/app.service" systemd/app.service || fail "app.service differs"
cmp "$tmp/x/lib/systemd/system/app.socket" systemd/app.socket || fail "app.socket differs"
cmp "$tmp/x/usr/lib/tmpfiles.d/app.conf" tmpfiles.d/app.conf || fail "tmpfiles entry differs"
echo "dpkg -c: binary, units, tmpfiles.d entry and example present"

# dpkg -i into a throwaway root with its own database.
root="$tmp/root"
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates"
touch "$root/var/lib/dpkg/status" "$root/var/lib/dpkg/available"
# The throwaway root has no libc6/libpython3.11 packages: --force-depends.
if ! inst=$(dpkg --root="$root" --force-depends --force-not-root --force-script-chrootless \
  --log=/dev/null -i "$deb" 2>&1); then
  echo "$inst" >&2
  fail "dpkg -i into $root failed"
fi
[ -x "$root/usr/bin/ferricorn" ] || fail "usr/bin/ferricorn not installed"
[ -f "$root/lib/systemd/system/app.service" ] || fail "app.service not installed"
dpkg --root="$root" -s ferricorn | grep -q '^Status: install ok installed' \
  || fail "dpkg does not list ferricorn as installed in $root"
"$root/usr/bin/ferricorn" --version >/dev/null || fail "the installed binary does not run"
"$root/usr/bin/ferricorn" systemd check "$root/lib/systemd/system/app.service" \
  "$root/lib/systemd/system/app.socket" "$root/usr/lib/tmpfiles.d/app.conf" >/dev/null \
  || fail "systemd check reports findings on the installed units"
echo "dpkg -i into a throwaway root: ok"

if [ "$system" = yes ]; then
  if dpkg -s ferricorn >/dev/null 2>&1; then
    fail "ferricorn is already installed on this machine; not touching it"
  fi
  dpkg -i "$deb"
  trap 'dpkg -P ferricorn >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
  /usr/bin/ferricorn --version
  (cd /usr/share/ferricorn/examples && /usr/bin/ferricorn --check-config hello:app)
  systemd-analyze verify /lib/systemd/system/app.socket /lib/systemd/system/app.service
  dpkg -P ferricorn
  echo "dpkg -i on this machine, run, dpkg -P: ok"
fi
echo "1 passed, 0 failed"

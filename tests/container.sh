#!/usr/bin/env bash
# Builds the Dockerfile and checks the image (issue 17): ferricorn runs as PID 1, answers the
# app and the health path, serves metrics, and exits 0 on `docker stop` (SIGTERM) after
# draining. Needs a container engine: when `docker info` fails (a docker client without an
# engine, no docker at all), it prints why and skips (exit 0) — the PID-1 behaviour itself is
# tested without an engine by tests/pid1.rs (a new PID namespace).
# Traffic goes to 127.0.0.1 only (the published ports are bound there).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v docker >/dev/null; then
  echo "container: skipped: no docker command on this machine"
  exit 0
fi
if ! why=$(docker info 2>&1 >/dev/null); then
  echo "container: skipped: no container engine answers ($(echo "$why" | tail -n 1))"
  exit 0
fi
tag=ferricorn-ci:$$
name=ferricorn-ci-$$
docker build -t "$tag" .
trap 'docker rm -f "$name" >/dev/null 2>&1 || true; docker rmi "$tag" >/dev/null 2>&1 || true' EXIT
docker run -d --name "$name" -p 127.0.0.1::8000 -p 127.0.0.1::9100 "$tag" >/dev/null
app=$(docker port "$name" 8000/tcp | head -n 1)
metrics=$(docker port "$name" 9100/tcp | head -n 1)
for _ in $(seq 1 100); do curl -sf "http://$app/healthz" >/dev/null && break; sleep 0.2; done
test "$(curl -sf "http://$app/")" = "Hello, World!" || { docker logs "$name"; exit 1; }
curl -sf "http://$metrics/metrics" | grep -q '^ferricorn_requests_total' || { docker logs "$name"; exit 1; }
docker exec "$name" sh -c 'tr "\0" " " </proc/1/cmdline' | grep -q ferricorn \
  || { echo "container: ferricorn is not PID 1"; exit 1; }
docker stop -t 30 "$name" >/dev/null
code=$(docker inspect -f '{{.State.ExitCode}}' "$name")
test "$code" = 0 || { echo "container: exit code $code after docker stop"; docker logs "$name"; exit 1; }
echo "container: image built; PID 1, app, health path and metrics answer; docker stop exits 0"

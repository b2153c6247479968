#!/usr/bin/env python3
"""The fleet scenario's client (tests/fleet/run.sh): keep-alive GETs through each balancer
from a few threads each, every result counted under the phase that was current when the
request started. The phase comes from a control file the scenario writes:

  NAME        send continuously, counting under NAME
  pause       send nothing; once every thread is idle, write the ack file
  count:N     send exactly N requests in all (then idle, and ack)
  stop        write the summary (JSON) and exit

Bounded in time (--max-seconds) and count (--max-requests) whatever the control file says.
Only loopback targets are accepted."""

import argparse
import http.client
import ipaddress
import json
import os
import threading
import time
from urllib.parse import urlsplit


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--control", required=True)
    ap.add_argument("--ack", required=True)
    ap.add_argument("--summary", required=True)
    ap.add_argument("--target", action="append", required=True, help="NAME=http://127.0.0.1:PORT")
    ap.add_argument("--threads", type=int, default=4, help="per target")
    ap.add_argument("--path", default="/sleep?s=0.005")
    ap.add_argument("--max-seconds", type=float, default=170)
    ap.add_argument("--max-requests", type=int, default=400000)
    a = ap.parse_args()

    targets = []
    for t in a.target:
        name, url = t.split("=", 1)
        u = urlsplit(url)
        if not ipaddress.ip_address(u.hostname).is_loopback:
            raise SystemExit(f"not a loopback address: {url}")
        targets.append((name, u.hostname, u.port))

    lock = threading.Lock()
    counts = {}  # phase -> target -> {"sent", "ok", "failed", "errors"}
    state = {"phase": "pause", "budget": 0, "sent": 0, "busy": 0, "stop": False}
    deadline = time.monotonic() + a.max_seconds

    def record(phase, target, ok, err=None):
        with lock:
            c = counts.setdefault(phase, {}).setdefault(
                target, {"sent": 0, "ok": 0, "failed": 0, "errors": {}})
            c["sent"] += 1
            if ok:
                c["ok"] += 1
            else:
                c["failed"] += 1
                c["errors"][err] = c["errors"].get(err, 0) + 1

    def take():
        """The phase to send a request under, or None to idle."""
        with lock:
            p = state["phase"]
            if state["stop"] or p == "pause" or state["sent"] >= a.max_requests:
                return None
            if p.startswith("count:"):
                if state["budget"] <= 0:
                    return None
                state["budget"] -= 1
            state["sent"] += 1
            state["busy"] += 1
            return p

    def done():
        with lock:
            state["busy"] -= 1

    def worker(name, host, port):
        conn = None
        while not state["stop"] and time.monotonic() < deadline:
            phase = take()
            if phase is None:
                time.sleep(0.005)
                continue
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(host, port, timeout=15)
                # The phase in the query: the balancers' logs tell which phase a request was.
                conn.request("GET", f"{a.path}&phase={phase.replace(':', '-')}")
                r = conn.getresponse()
                r.read()
                if r.status == 200:
                    record(phase, name, True)
                else:
                    record(phase, name, False, f"status {r.status}")
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except Exception as e:  # noqa: BLE001 - every failure is counted by its kind
                record(phase, name, False, type(e).__name__)
                if conn is not None:
                    conn.close()
                conn = None
            finally:
                done()

    threads = [threading.Thread(target=worker, args=t, daemon=True)
               for t in targets for _ in range(a.threads)]
    for t in threads:
        t.start()

    last = None
    while time.monotonic() < deadline:
        try:
            with open(a.control) as f:
                want = f.read().strip()
        except FileNotFoundError:
            want = "pause"
        if not want:
            # Never half a phase name (the scenario renames the file into place; belt and braces).
            want = last or "pause"
        if want != last:
            with lock:
                state["budget"] = int(want.split(":", 1)[1]) if want.startswith("count:") else 0
                state["phase"] = want
            if want == "stop":
                break
            acked = False
            last = want
        if not acked and (want == "pause" or want.startswith("count:")):
            with lock:
                idle = state["busy"] == 0 and state["budget"] <= 0
            if idle:
                with open(a.ack, "w") as f:
                    f.write(want)
                acked = True
        time.sleep(0.01)
    state["stop"] = True
    for t in threads:
        t.join(timeout=20)
    with open(a.summary, "w") as f:
        json.dump(counts, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Slow-client scenario: hostile slow clients against each server, a normal client beside them.

For each server (started as bench/driver.py starts it: one worker, pinned to CPU 0, the echo app
of bench/apps/), for --duration seconds at once:
  - slow heads: --heads connections send a request head one byte a second (slowloris);
  - slow bodies: --bodies connections declare a 1 MB body and send it at 100 B/s;
  - stalled uploads: --stalled connections declare 2 MB, send 1 MB as fast as the server takes
    it, then send nothing;
  - a normal client sends a 1 KiB POST every 50 ms on a new connection (5 s timeout each).
Reported: the normal client's success rate and latency, the worker's peak RSS (sampled every
0.5 s), and whether the server still serves afterwards. Results go to bench/SLOWCLIENT.md and
bench/slowclient.json. Loopback only; every loop is bounded in time.

Run through bench/run.sh slowclient [options] (which installs the peers first), or directly:
python3 bench/slowclient.py --servers ferricorn,gunicorn-sync,granian.
"""

import argparse
import datetime
import json
import os
import selectors
import socket
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import driver  # noqa: E402  (the servers' command lines, process handling, RSS)

BODY = b"n" * 1024


class Attack:
    """The hostile connections, driven by one thread with a selector (non-blocking sockets)."""

    def __init__(self, port, heads, bodies, stalled):
        self.port = port
        self.plan = [("head", heads), ("body", bodies), ("stalled", stalled)]
        self.conns = []  # [sock, kind, payload, pos, next_time]
        self.opened = {"head": 0, "body": 0, "stalled": 0}
        self.refused = 0
        self.stop = threading.Event()

    def _open(self, kind):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", self.port))
        except BlockingIOError:
            pass
        except OSError:
            self.refused += 1
            s.close()
            return
        if kind == "head":
            payload = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000
        elif kind == "body":
            payload = (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"
                       + b"b" * 1_000_000)
        else:
            payload = (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n"
                       + b"s" * 1_000_000)
        self.conns.append([s, kind, payload, 0, 0.0])
        self.opened[kind] += 1

    def run(self, seconds):
        end = time.monotonic() + seconds
        for kind, n in self.plan:
            for _ in range(n):
                self._open(kind)
        while not self.stop.is_set() and time.monotonic() < end:
            now = time.monotonic()
            for c in self.conns:
                s, kind, payload, pos, nxt = c
                if s is None or pos >= len(payload) or now < nxt:
                    continue
                if kind == "head":
                    want, c[4] = 1, now + 1.0
                elif kind == "body":
                    # the head at once, then 10 bytes every 100 ms
                    head_end = payload.index(b"\r\n\r\n") + 4
                    want = head_end - pos if pos < head_end else 10
                    c[4] = now + 0.1
                else:
                    want = 65536
                try:
                    n = s.send(payload[pos:pos + want])
                    c[3] = pos + n
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    s.close()
                    c[0] = None
            time.sleep(0.02)
        for c in self.conns:
            if c[0] is not None:
                c[0].close()


def post(port, timeout=5.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n"
                  % len(BODY) + BODY)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data.startswith(b"HTTP/1.1 200") or data.startswith(b"HTTP/1.0 200")
    finally:
        s.close()


def one(server, args, logdir):
    build, forks, note = driver.SERVERS[server]
    port = driver.free_port()
    argv = build("echo", ("tcp", port), False)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    rec = {"server": server, "note": note, "cmd": argv}
    with open(os.path.join(logdir, f"slowclient-{server}.log"), "w") as log:
        p = driver.spawn(argv, log, driver.SERVER_CPU, cwd=driver.APPS_DIR, env=env)
        try:
            driver.wait_ready(p, ("tcp", port), time.monotonic() + driver.START_TIMEOUT)
            worker = driver.worker_pid(p, forks)
            rec["rss_idle_kib"] = driver.rss_kib(worker)
            attack = Attack(port, args.heads, args.bodies, args.stalled)
            t = threading.Thread(target=attack.run, args=(args.duration,), daemon=True)
            t.start()
            time.sleep(1.0)  # let the attackers connect and fill their buffers
            ok, lat, peak, end = 0, [], rec["rss_idle_kib"] or 0, time.monotonic() + args.duration - 1
            tries, next_sample = 0, 0.0
            while time.monotonic() < end:
                t0 = time.monotonic()
                tries += 1
                try:
                    if post(port):
                        ok += 1
                        lat.append((time.monotonic() - t0) * 1e3)
                except OSError:
                    pass
                if time.monotonic() >= next_sample:
                    peak = max(peak, driver.rss_kib(worker) or 0)
                    next_sample = time.monotonic() + 0.5
                time.sleep(max(0.0, 0.05 - (time.monotonic() - t0)))
            peak = max(peak, driver.rss_kib(worker) or 0)
            attack.stop.set()
            t.join(10)
            rec.update({
                "attackers": dict(attack.opened), "refused": attack.refused,
                "normal_tries": tries, "normal_ok": ok,
                "p50_ms": statistics.median(lat) if lat else None,
                "p99_ms": (statistics.quantiles(lat, n=100)[98] if len(lat) >= 100
                           else (max(lat) if lat else None)),
                "rss_peak_kib": peak,
            })
            time.sleep(1.0)
            try:
                rec["serves_after"] = post(port, timeout=10.0)
            except OSError:
                rec["serves_after"] = False
            rec["alive"] = p.poll() is None
        except Exception as e:  # noqa: BLE001 - one failed server must not stop the others
            rec["failure"] = str(e)
        finally:
            driver.stop(p)
    return rec


def report(path, recs, args):
    lines = [
        "# Slow-client scenario",
        "",
        f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by "
        "`bench/slowclient.py` (see its docstring), "
        f"{args.duration:.0f} s: {args.heads} slow heads (1 B/s), {args.bodies} slow bodies "
        f"(100 B/s of 1 MB), {args.stalled} stalled uploads (1 MB of 2 MB, then nothing), and a "
        "normal client sending a 1 KiB POST every 50 ms on a new connection (5 s timeout). "
        "One worker each, echo app, server on CPU 0.",
        "",
        "| server | normal client ok | p50 | p99 | worker RSS idle → peak | serves after |",
        "|---|---|---|---|---|---|",
    ]
    for r in recs:
        if "failure" in r:
            lines.append(f"| {r['server']} | failed: {r['failure']} | | | | |")
            continue
        ms = lambda v: "-" if v is None else f"{v:.1f} ms"  # noqa: E731
        lines.append(
            f"| {r['server']} | {r['normal_ok']}/{r['normal_tries']} "
            f"({100.0 * r['normal_ok'] / max(1, r['normal_tries']):.0f}%) | {ms(r['p50_ms'])} | "
            f"{ms(r['p99_ms'])} | {(r['rss_idle_kib'] or 0) // 1024} → "
            f"{r['rss_peak_kib'] // 1024} MiB | {'yes' if r['serves_after'] else 'no'} |")
    lines += ["", "Servers: " + "; ".join(f"{r['server']}: {r.get('note', '')}" for r in recs), ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--servers", default="ferricorn,gunicorn-sync,granian")
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--heads", type=int, default=200)
    ap.add_argument("--bodies", type=int, default=200)
    ap.add_argument("--stalled", type=int, default=200)
    ap.add_argument("--out", default=os.path.join(driver.BENCH, "SLOWCLIENT.md"))
    ap.add_argument("--json", default=os.path.join(driver.BENCH, "slowclient.json"))
    args = ap.parse_args()
    logdir = os.path.join(driver.BENCH, ".logs")
    os.makedirs(logdir, exist_ok=True)
    recs = []
    try:
        for server in args.servers.split(","):
            print(f"== {server}", flush=True)
            rec = one(server, args, logdir)
            print(json.dumps(rec), flush=True)
            recs.append(rec)
    finally:
        driver.stop_all()
    with open(args.json, "w") as f:
        json.dump(recs, f, indent=1)
    report(args.out, recs, args)
    print(open(args.out).read())


if __name__ == "__main__":
    main()

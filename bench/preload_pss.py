#!/usr/bin/env python3
"""PSS of ferricorn's workers with and without --preload (issue 14).

An app allocates 100 MiB at import (100 distinct 1 MiB bytes objects, written, so resident).
Without --preload each of the 4 workers imports it; with --preload the master does, and the
workers share those pages copy-on-write. Pss (proportional set size, /proc/PID/smaps_rollup)
divides each shared page among the processes that map it, so the sum over the processes is
the memory the server really costs.

    bench/preload_pss.py                 # target/release/ferricorn, else target/debug
    FERRICORN_BIN=/path/to/ferricorn bench/preload_pss.py

Loopback only: the server binds a unix socket in a temporary directory; one request per
worker count check, nothing else is sent.
"""
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKERS = 4
MIB = 1 << 20

APP = """
DATA = [bytes([i % 251 + 1]) * (1 << 20) for i in range(100)]

def app(environ, start_response):
    body = b"%d" % len(DATA)
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"""


def binary():
    if os.environ.get("FERRICORN_BIN"):
        return os.path.abspath(os.environ["FERRICORN_BIN"])
    for build in ("release", "debug"):
        p = os.path.join(ROOT, "target", build, "ferricorn")
        if os.path.exists(p):
            return p
    sys.exit("no ferricorn binary: cargo build --release")


def smaps_kib(pid, field):
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    out.append(int(d))
            except OSError:
                pass
    return sorted(out)


def get(sock_path):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(sock_path)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    return data


def measure(preload):
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "fat.py"), "w") as f:
            f.write(APP)
        sock = os.path.join(d, "s.sock")
        args = [binary(), "-w", str(WORKERS), "-b", "unix:" + sock, "--access-logfile", ""]
        if preload:
            args.append("--preload")
        args.append("fat:app")
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        env.pop("GUNICORN_CMD_ARGS", None)
        p = subprocess.Popen(args, cwd=d, env=env, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.time() + 120
            while time.time() < deadline:
                line = p.stderr.readline()
                if not line or "Ready:" in line:
                    break
            # Keep reading the log so the server never blocks on a full pipe.
            threading.Thread(target=p.stderr.read, daemon=True).start()
            workers = children(p.pid)
            assert len(workers) == WORKERS, workers
            for _ in range(WORKERS * 4):
                assert get(sock).endswith(b"100")
            time.sleep(1)
            master = smaps_kib(p.pid, "Pss")
            per = [smaps_kib(w, "Pss") for w in workers]
            rss = [smaps_kib(w, "Rss") for w in workers]
            return master, per, rss
        finally:
            p.terminate()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def main():
    rows = []
    for preload in (False, True):
        master, per, rss = measure(preload)
        rows.append((preload, master, per, rss))
    print("binary: %s" % binary())
    print("| --preload | master Pss | worker Pss (each) | worker Rss (each) | workers' Pss | total Pss |")
    print("|---|---|---|---|---|---|")
    for preload, master, per, rss in rows:
        total_w = sum(per)
        print(
            "| %s | %.1f MiB | %s | %s | %.1f MiB | %.1f MiB |"
            % (
                "yes" if preload else "no",
                master / 1024,
                ", ".join("%.1f" % (x / 1024) for x in per),
                ", ".join("%.1f" % (x / 1024) for x in rss),
                total_w / 1024,
                (total_w + master) / 1024,
            )
        )


if __name__ == "__main__":
    main()

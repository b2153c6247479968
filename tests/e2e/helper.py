#!/usr/bin/env python3
"""Small stdlib-only helpers for tests/e2e/run.sh.

  load ADDR PATH --seconds S --max N --concurrency C [--go FILE]
      A bounded request loop (at most N requests, at most S seconds, C threads, one new
      connection per request, as nginx makes them). ADDR is unix:PATH or HOST:PORT (loopback
      only). Prints one JSON object: ok, failed, refused, statuses, errors (first few).
      With --go FILE, FILE is created once the first request succeeded.
  get ADDR PATH [--header K:V ...] [--source IP]
                                       one request (from the loopback address IP, if given);
                                       prints JSON {status, headers, body, local_port}
  stream ADDR PATH                     prints JSON [[seconds, bytes], ...] as they arrive
  journal-check                        reads `journalctl -o json` from stdin (see below)
  free-port                            prints a free loopback TCP port
"""

import argparse
import errno
import http.client
import json
import os
import socket
import sys
import threading
import time

LOOPBACK = ("127.", "::1", "localhost")


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self.unix_path)
        except BaseException:
            s.close()
            raise
        self.sock = s


def connection(addr, timeout=10.0, source=None):
    if addr.startswith("unix:"):
        return UnixHTTPConnection(addr[5:], timeout)
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    if not host.startswith(LOOPBACK) or (source and not source.startswith(LOOPBACK)):
        sys.exit("refusing non-loopback address %s" % addr)
    return http.client.HTTPConnection(host, int(port), timeout=timeout,
                                      source_address=(source, 0) if source else None)


def request(addr, path, headers=None, timeout=10.0, source=None, local=None):
    c = connection(addr, timeout, source)
    try:
        c.request("GET", path, headers=dict(headers or {}, Connection="close"))
        if local is not None and not addr.startswith("unix:"):
            local.append(c.sock.getsockname()[1])
        r = c.getresponse()
        body = r.read()
        return r.status, dict(r.getheaders()), body
    finally:
        c.close()


def cmd_load(a):
    lock = threading.Lock()
    res = {"ok": 0, "failed": 0, "refused": 0, "statuses": {}, "errors": []}
    deadline = time.monotonic() + a.seconds
    issued = [0]

    def take():
        with lock:
            if issued[0] >= a.max or time.monotonic() >= deadline:
                return False
            issued[0] += 1
            return True

    def worker():
        while take():
            try:
                status, _, _ = request(a.addr, a.path)
                with lock:
                    res["statuses"][str(status)] = res["statuses"].get(str(status), 0) + 1
                    if status == 200:
                        res["ok"] += 1
                        if a.go and res["ok"] == 1:
                            open(a.go, "w").close()
                    else:
                        res["failed"] += 1
            except Exception as e:  # every failure is counted, and the first few named
                with lock:
                    res["failed"] += 1
                    if isinstance(e, ConnectionRefusedError) or getattr(e, "errno", None) in (
                            errno.ECONNREFUSED, errno.ENOENT):
                        res["refused"] += 1
                    if len(res["errors"]) < 5:
                        res["errors"].append("%s: %s" % (type(e).__name__, e))

    threads = [threading.Thread(target=worker) for _ in range(a.concurrency)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    res["seconds"] = round(time.monotonic() - t0, 2)
    print(json.dumps(res))


def cmd_get(a):
    headers = dict(h.split(":", 1) for h in a.header)
    local = []
    try:
        status, hdrs, body = request(a.addr, a.path, {k: v.strip() for k, v in headers.items()},
                                     source=a.source, local=local)
    except Exception as e:
        print(json.dumps({"status": 0, "error": "%s: %s" % (type(e).__name__, e)}))
        return
    print(json.dumps({"status": status, "headers": hdrs,
                      "body": body.decode("utf-8", "replace"),
                      "local_port": local[0] if local else None}))


def cmd_stream(a):
    if a.addr.startswith("unix:"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(a.addr[5:])
    else:
        host, _, port = a.addr.rpartition(":")
        if not host.startswith(LOOPBACK):
            sys.exit("refusing non-loopback address %s" % a.addr)
        s = socket.create_connection((host, int(port)), timeout=10)
    t0 = time.monotonic()
    s.sendall(("GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
               % a.path).encode())
    arrivals = []
    while True:
        d = s.recv(65536)
        if not d:
            break
        arrivals.append([round(time.monotonic() - t0, 3), len(d)])
    s.close()
    print(json.dumps(arrivals))


def cmd_journal_check(a):
    """Checks `journalctl -u UNIT -o json` output (stdin).

    Needs: an access entry for a.path at PRIORITY 6 with every structured field, and an
    error entry (PRIORITY 3) whose message names a.exception. Prints one line: ok or why not.
    """
    fields = ["CLIENT_ADDR", "REQUEST_METHOD", "REQUEST_PATH", "STATUS", "BYTES",
              "DURATION_USEC", "WORKER_PID"]
    access = None
    error = None
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        e = json.loads(line)
        msg = e.get("MESSAGE")
        if isinstance(msg, list):  # journald sends non-UTF-8 messages as byte arrays
            msg = bytes(msg).decode("utf-8", "replace")
        if e.get("REQUEST_PATH") == a.path and access is None:
            access = e
        if msg and a.exception in msg and e.get("PRIORITY") == "3" and error is None:
            error = e
    if access is None:
        print("no access entry with REQUEST_PATH=%s" % a.path)
        return
    missing = [f for f in fields if f not in access]
    if missing:
        print("access entry lacks %s" % ",".join(missing))
        return
    if access.get("PRIORITY") != "6":
        print("access entry at PRIORITY=%s, not 6" % access.get("PRIORITY"))
        return
    if access["REQUEST_METHOD"] != "GET" or not access["STATUS"].isdigit():
        print("access entry fields wrong: %s" % {f: access[f] for f in fields})
        return
    if error is None:
        print("no PRIORITY=3 entry naming %r" % a.exception)
        return
    print("ok STATUS=%s BYTES=%s WORKER_PID=%s DURATION_USEC=%s" % (
        access["STATUS"], access["BYTES"], access["WORKER_PID"], access["DURATION_USEC"]))


def cmd_free_port(a):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
    s.close()


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("load")
    s.add_argument("addr")
    s.add_argument("path")
    s.add_argument("--seconds", type=float, required=True)
    s.add_argument("--max", type=int, required=True)
    s.add_argument("--concurrency", type=int, default=4)
    s.add_argument("--go")
    s.set_defaults(f=cmd_load)
    s = sub.add_parser("get")
    s.add_argument("addr")
    s.add_argument("path")
    s.add_argument("--header", action="append", default=[])
    s.add_argument("--source")
    s.set_defaults(f=cmd_get)
    s = sub.add_parser("stream")
    s.add_argument("addr")
    s.add_argument("path")
    s.set_defaults(f=cmd_stream)
    s = sub.add_parser("journal-check")
    s.add_argument("--path", required=True)
    s.add_argument("--exception", required=True)
    s.set_defaults(f=cmd_journal_check)
    s = sub.add_parser("free-port")
    s.set_defaults(f=cmd_free_port)
    a = p.parse_args()
    a.f(a)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Benchmark driver for ferricorn and its peers (Python 3 standard library only).

Run through bench/run.sh, which installs the peers and the load generators first. For every app,
transport (TCP through wrk, unix socket through oha, wrk through nginx to a unix socket) and
round, every server is started fresh, pinned to CPU 0, checked for a correct response, warmed
up, then loaded from CPU 1 (nginx too); its worker's RSS is read after the run and it is stopped.
Servers are interleaved within a round (A B C ... A B C ...). The `-w 2` scaling pair runs
unpinned instead. Writes bench/results.json (every run) and bench/RESULTS.md (medians, ratios,
RSS, start-up time, targets).
"""

import argparse
import datetime
import http.client
import importlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
APPS_DIR = os.path.join(BENCH, "apps")
VENV_BIN = os.path.join(BENCH, ".venv", "bin")
FERRICORN = os.path.join(ROOT, "target", "release", "ferricorn")
RUST_HELLO = os.path.join(ROOT, "target", "release", "examples", "rust_hello")
SERVER_CPU = "0"
LOAD_CPU = "1"
ALL_CPUS = "0,1"  # the -w 2 scaling pair: server and load generator share both CPUs
START_TIMEOUT = 30.0  # seconds a server gets to serve its first request
STOP_TIMEOUT = 5.0  # seconds a server gets to exit after SIGINT before SIGKILL
SLEEP_THREADS = 64  # Python threads for the I/O-bound app, for every server that has threads
WRK_TIMEOUT = "10s"  # wrk's per-request timeout (its default, 2 s, is below the queueing delay
# of a single-threaded server on the sleep app at c256: 256 x 10 ms)

sys.path.insert(0, APPS_DIR)

# --------------------------------------------------------------------------------------------
# Apps
# --------------------------------------------------------------------------------------------

ECHO_BODY = bytes((i * 7 + 3) & 0xFF for i in range(256)) * 256  # 64 KiB


def _expected():
    hello = importlib.import_module("hello")
    json4k = importlib.import_module("json4k")
    stream = importlib.import_module("stream")
    sleep = importlib.import_module("sleep")
    ahello = importlib.import_module("ahello")
    asleep = importlib.import_module("asleep")
    wsecho = importlib.import_module("wsecho")
    return {
        "hello": lambda body: body == hello.BODY,
        "json4k": lambda body: len(body) == json4k.SIZE and json.loads(body) == json4k.DATA,
        "stream": lambda body: body == stream.expected(),
        "echo": lambda body: body == ECHO_BODY,
        "sleep": lambda body: body == sleep.BODY,
        "ahello": lambda body: body == ahello.BODY,
        "asleep": lambda body: body == asleep.BODY,
        # the HTTP answer of the WebSocket app (the echo itself is checked by wsload)
        "wsecho": lambda body: body == wsecho.BODY,
    }


APPS = {
    "hello": {"module": "hello", "method": "GET", "conns": 50,
              "what": "hello world, 13 bytes, Content-Length set"},
    "json4k": {"module": "json4k", "method": "GET", "conns": 50,
               "what": "4096 bytes of JSON built with json.dumps per request"},
    "stream": {"module": "stream", "method": "GET", "conns": 50,
               "what": "1 MiB from a generator in 16 chunks of 64 KiB"},
    "echo": {"module": "echo", "method": "POST", "conns": 50,
             "what": "POST of 64 KiB, read exactly CONTENT_LENGTH, echoed back"},
    "sleep": {"module": "sleep", "method": "GET", "conns": 256,
              "what": "time.sleep(0.010) per request (I/O-bound)"},
    # ASGI apps (served by ferricorn, uvicorn, granian-asgi)
    "ahello": {"module": "ahello", "method": "GET", "conns": 50, "interface": "asgi",
               "what": "ASGI hello world, 13 bytes, Content-Length set"},
    "asleep": {"module": "asleep", "method": "GET", "conns": 256, "interface": "asgi",
               "what": "ASGI, await asyncio.sleep(0.010) per request (I/O-bound)"},
    "wsecho": {"module": "wsecho", "method": "GET", "conns": 50, "interface": "asgi",
               "what": "ASGI WebSocket echo of 16-byte text messages, one in flight per "
                       "connection (bench/wsload.rs); rate is messages/s"},
}


def interface(app):
    return APPS[app].get("interface", "wsgi")

# --------------------------------------------------------------------------------------------
# Servers: each returns the argv for (app module, address, whether this is the sleep app).
# address is ("tcp", port) or ("unix", path). One worker process everywhere.
# --------------------------------------------------------------------------------------------


def _venv(name):
    return os.path.join(VENV_BIN, name)


def _ferricorn(mod, addr, sleep, workers):
    bind = f"127.0.0.1:{addr[1]}" if addr[0] == "tcp" else f"unix:{addr[1]}"
    argv = [FERRICORN, "-w", str(workers), "--access-logfile", "", "--chdir", APPS_DIR, "-b", bind]
    if mod in ASGI_MODULES:
        # The ASGI app is recognised as such; uvloop comes from the peers' venv.
        argv += ["--virtualenv", os.path.join(BENCH, ".venv")]
    if sleep:
        argv += ["--threads", str(SLEEP_THREADS)]
    return argv + [f"{mod}:app"]


def cmd_ferricorn(mod, addr, sleep):
    return _ferricorn(mod, addr, sleep, 1)


def cmd_ferricorn_w2(mod, addr, sleep):
    return _ferricorn(mod, addr, sleep, 2)


def cmd_rust_hello(mod, addr, sleep):
    return [RUST_HELLO, f"127.0.0.1:{addr[1]}" if addr[0] == "tcp" else f"unix:{addr[1]}"]


def _gunicorn(mod, addr, extra):
    bind = f"127.0.0.1:{addr[1]}" if addr[0] == "tcp" else f"unix:{addr[1]}"
    return [_venv("gunicorn"), "-w", "1", *extra, "--chdir", APPS_DIR, "-b", bind, f"{mod}:app"]


def cmd_gunicorn_sync(mod, addr, sleep):
    return _gunicorn(mod, addr, ["-k", "sync"])


def cmd_gunicorn_gthread(mod, addr, sleep):
    return _gunicorn(mod, addr, ["-k", "gthread", "--threads", str(SLEEP_THREADS if sleep else 4)])


def _granian(mod, addr, extra):
    where = (["--host", "127.0.0.1", "--port", str(addr[1])] if addr[0] == "tcp"
             else ["--uds", addr[1]])
    return [_venv("granian"), "--interface", "wsgi", "--workers", "1", "--no-access-log",
            *where, *extra, f"{mod}:app"]


def cmd_granian(mod, addr, sleep):
    # Its defaults: blocking threads = backpressure // 2 = 512 for WSGI, started on demand.
    return _granian(mod, addr, [])


def cmd_granian_bt1(mod, addr, sleep):
    return _granian(mod, addr, ["--blocking-threads", str(SLEEP_THREADS if sleep else 1)])


def cmd_uvicorn(mod, addr, sleep):
    where = (["--host", "127.0.0.1", "--port", str(addr[1])] if addr[0] == "tcp"
             else ["--uds", addr[1]])
    return [_venv("uvicorn"), "--loop", "uvloop", "--http", "httptools", "--ws", "websockets",
            "--no-access-log", "--log-level", "warning", "--lifespan", "off",
            "--app-dir", APPS_DIR, *where, f"{mod}:app"]


def cmd_granian_asgi(mod, addr, sleep):
    where = (["--host", "127.0.0.1", "--port", str(addr[1])] if addr[0] == "tcp"
             else ["--uds", addr[1]])
    return [_venv("granian"), "--interface", "asgi", "--workers", "1", "--no-access-log",
            "--loop", "uvloop", *where, f"{mod}:app"]


def _uwsgi(mod, addr, sleep, socket_opt, extra):
    sock = f"127.0.0.1:{addr[1]}" if addr[0] == "tcp" else addr[1]
    argv = [_venv("pyuwsgi"), "--master", "--processes", "1", socket_opt, sock, *extra,
            "--module", f"{mod}:app", "--chdir", APPS_DIR, "--disable-logging",
            "--listen", "1024"]  # uWSGI's default listen queue, 100, is below c256
    if sleep:
        argv += ["--threads", str(SLEEP_THREADS)]
    return argv


def cmd_uwsgi(mod, addr, sleep):
    # --http-socket closes the connection after every response without saying so, which wrk
    # counts as a read error per request: the header makes the close explicit.
    return _uwsgi(mod, addr, sleep, "--http-socket", ["--add-header", "Connection: close"])


def cmd_bjoern(mod, addr, sleep):
    launcher = os.path.join(BENCH, "bjoern_run.py")
    if addr[0] == "tcp":
        return [_venv("python"), launcher, mod, "127.0.0.1", str(addr[1])]
    return [_venv("python"), launcher, mod, f"unix:{addr[1]}"]


def cmd_waitress(mod, addr, sleep):
    where = f"--listen=127.0.0.1:{addr[1]}" if addr[0] == "tcp" else f"--unix-socket={addr[1]}"
    argv = [_venv("waitress-serve"), where, f"--threads={SLEEP_THREADS if sleep else 4}"]
    if sleep:
        argv.append("--connection-limit=512")  # default 100 is below c256
    return argv + [f"{mod}:app"]


def cmd_asleep_ceiling(mod, addr, sleep):
    return [_venv("python"), os.path.join(BENCH, "asleep_ceiling.py"), str(addr[1])]


# name: (argv builder, worker is a child of the spawned process, note)
SERVERS = {
    "ferricorn": (cmd_ferricorn, True, "-w 1, --threads 1 (64 for sleep), access log off"),
    "rust-hello": (cmd_rust_hello, False, "bench/rust_hello.rs: plain Rust hello world on ferricorn's stack (tokio current-thread, httparse); hello only"),
    "ferricorn-w1-2cpu": (cmd_ferricorn, True, "-w 1, server and load generator unpinned on both CPUs (the -w 2 pair's baseline); hello only"),
    "ferricorn-w2-2cpu": (cmd_ferricorn_w2, True, "-w 2, server and load generator unpinned on both CPUs; hello only"),
    "gunicorn-sync": (cmd_gunicorn_sync, True, "-w 1 -k sync (one request at a time, no keep-alive)"),
    "gunicorn-gthread": (cmd_gunicorn_gthread, True, "-w 1 -k gthread --threads 4 (64 for sleep)"),
    "granian": (cmd_granian, True, "--interface wsgi --workers 1, defaults (512 blocking threads)"),
    "granian-bt1": (cmd_granian_bt1, True, "--interface wsgi --workers 1 --blocking-threads 1 (64 for sleep)"),
    "uwsgi": (cmd_uwsgi, True, "pyuwsgi --master --processes 1 --http-socket (no keep-alive), --listen 1024; --threads 64 for sleep"),
    "bjoern": (cmd_bjoern, False, "bjoern.run(app, host, port): single-threaded, no threads for sleep"),
    "waitress": (cmd_waitress, False, "--threads 4 (64 and --connection-limit 512 for sleep)"),
    "uvicorn": (cmd_uvicorn, False, "ASGI: --loop uvloop --http httptools --ws websockets, one process"),
    "granian-asgi": (cmd_granian_asgi, True, "ASGI: --interface asgi --workers 1 --loop uvloop"),
    "asleep-ceiling": (cmd_asleep_ceiling, False, "bench/asleep_ceiling.py: a bare asyncio protocol on uvloop (no HTTP parser, no ASGI), the most one loop allows; asleep over TCP only"),
}

# Servers that run only some apps (the others are skipped), and servers run unpinned.
ONLY_APPS = {"rust-hello": {"hello"}, "ferricorn-w1-2cpu": {"hello"}, "ferricorn-w2-2cpu": {"hello"},
             "asleep-ceiling": {"asleep"}}
UNPINNED = {"ferricorn-w1-2cpu", "ferricorn-w2-2cpu"}
# Servers a run includes unless --servers names its own.
DEFAULT_SERVERS = ["ferricorn", "rust-hello", "ferricorn-w1-2cpu", "ferricorn-w2-2cpu",
                   "gunicorn-sync", "gunicorn-gthread", "granian", "granian-bt1", "uwsgi",
                   "bjoern", "waitress", "uvicorn", "granian-asgi", "asleep-ceiling"]
TRANSPORTS = ["tcp", "unix", "nginx-unix"]
TRANSPORT_NAMES = {"tcp": "TCP", "unix": "unix socket", "nginx-unix": "nginx → unix socket"}
# Which interfaces each server serves (ferricorn: both, by the app).
SERVES = {name: {"wsgi"} for name in SERVERS}
SERVES["ferricorn"] = {"wsgi", "asgi"}
SERVES["uvicorn"] = {"asgi"}
SERVES["granian-asgi"] = {"asgi"}
SERVES["asleep-ceiling"] = {"asgi"}
ASGI_MODULES = {spec["module"] for spec in APPS.values() if spec.get("interface") == "asgi"}
WSLOAD = os.path.join(ROOT, "target", "release", "examples", "wsload")


def runs_app(server, app, transport):
    """Whether a run serves `app` on `server` over `transport` (the nginx front proxies plain
    HTTP only: no WebSocket echo through it)."""
    return (interface(app) in SERVES[server] and app in ONLY_APPS.get(server, {app})
            and not (app == "wsecho" and transport == "nginx-unix")
            and not (server == "asleep-ceiling" and transport != "tcp"))

# --------------------------------------------------------------------------------------------
# Process handling: every server runs in its own session; all are killed on the way out.
# --------------------------------------------------------------------------------------------

LIVE = {}  # pid -> Popen, servers and load generators still running


def spawn(argv, out, cpu, err=subprocess.STDOUT, **kw):
    p = subprocess.Popen(["taskset", "-c", cpu, *argv], stdin=subprocess.DEVNULL, stdout=out,
                         stderr=err, start_new_session=True, **kw)
    LIVE[p.pid] = p
    return p


def stop(p, sig=signal.SIGINT):
    """Stops the process group of p: sig first, SIGKILL to the whole group after STOP_TIMEOUT."""
    # SIGKILL second: stragglers (workers) of the group, if any.
    for s in (sig, signal.SIGKILL):
        try:
            os.killpg(p.pid, s)
        except ProcessLookupError:
            pass
        try:
            p.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
    LIVE.pop(p.pid, None)


def stop_all():
    for p in list(LIVE.values()):
        stop(p, signal.SIGKILL)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def children(pid):
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[1]) == pid:
            out.append(int(entry))
    return out


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_ticks(pid):
    """utime + stime of pid and its children (clock ticks)."""
    total = 0
    for q in [pid, *children(pid)]:
        try:
            with open(f"/proc/{q}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total


def worker_pid(p, forks):
    if not forks:
        return p.pid
    kids = [k for k in children(p.pid) if rss_kib(k)]
    if not kids:
        return p.pid
    return max(kids, key=lambda k: rss_kib(k) or 0)


# --------------------------------------------------------------------------------------------
# HTTP client for checks (TCP or unix socket)
# --------------------------------------------------------------------------------------------


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self.unix_path)
        except OSError:
            s.close()
            raise
        self.sock = s


def request(addr, method="GET", body=None, timeout=5.0):
    if addr[0] == "nginx":
        addr = ("tcp", addr[2])
    if addr[0] == "tcp":
        conn = http.client.HTTPConnection("127.0.0.1", addr[1], timeout=timeout)
    else:
        conn = UnixHTTPConnection(addr[1], timeout)
    try:
        headers = {"Content-Type": "application/octet-stream"} if body is not None else {}
        conn.request(method, "/", body=body, headers=headers)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def wait_ready(p, addr, deadline):
    """Polls every 10 ms until a request is served; returns the time it took or raises."""
    while True:
        if p.poll() is not None:
            raise RuntimeError(f"server exited with status {p.returncode} before serving")
        try:
            status, _ = request(addr, timeout=2.0)
            if status == 200:
                return
        except (OSError, http.client.HTTPException):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"no response within {START_TIMEOUT:.0f} s")
        time.sleep(0.010)


# --------------------------------------------------------------------------------------------
# Load generators
# --------------------------------------------------------------------------------------------

UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def to_ms(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        raise ValueError(f"cannot read latency {text!r}")
    return float(m.group(1)) * UNIT[m.group(2)]


def parse_wrk(out):
    res = {"errors": {}}
    m = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    if not m:
        raise ValueError("no Requests/sec in wrk output")
    res["rps"] = float(m.group(1))
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s+{pct}(?:\.0+)?%\s+(\S+)", out, re.M)
        if not m:
            raise ValueError(f"no {pct}% latency in wrk output")
        res[key] = to_ms(m.group(1))
    m = re.search(r"(\d+) requests in", out)
    res["requests"] = int(m.group(1)) if m else None
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        for k, v in zip(("connect", "read", "write", "timeout"), m.groups()):
            if int(v):
                res["errors"][k] = int(v)
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m and int(m.group(1)):
        res["errors"]["non-2xx"] = int(m.group(1))
    return res


def parse_oha(out):
    d = json.loads(out)
    s = d["summary"]
    lat = d.get("latencyPercentiles") or {}
    res = {"errors": {}}
    res["p50_ms"] = float(lat["p50"]) * 1e3 if lat.get("p50") is not None else None
    res["p99_ms"] = float(lat["p99"]) * 1e3 if lat.get("p99") is not None else None
    codes = d.get("statusCodeDistribution") or {}
    res["requests"] = sum(codes.values())
    # oha's requestsPerSec also counts the requests aborted at the deadline: count responses.
    res["rps"] = res["requests"] / float(s["total"])
    bad = sum(n for c, n in codes.items() if not str(c).startswith("2"))
    if bad:
        res["errors"]["non-2xx"] = bad
    for err, n in (d.get("errorDistribution") or {}).items():
        # oha reports the requests still in flight when -z expires as aborted: not an error.
        if "aborted due to deadline" in err:
            continue
        res["errors"][err] = n
    sr = s.get("successRate")
    if sr is not None and sr < 1.0 and not res["errors"]:
        res["errors"]["unsuccessful"] = round((1.0 - sr) * res["requests"])
    return res


def parse_wsload(out):
    d = json.loads(out.strip().splitlines()[-1])
    res = {"errors": {}, "rps": d["rate"], "p50_ms": d["p50_ms"], "p99_ms": d["p99_ms"],
           "requests": d["messages"]}
    if d["errors"]:
        res["errors"]["connections failed"] = d["errors"]
    return res


class Load:
    def __init__(self, tools, tmp):
        self.wrk = tools["wrk"]
        self.oha = tools["oha"]
        self.lua = os.path.join(tmp, "post.lua")
        self.body = os.path.join(tmp, "body.bin")
        with open(self.body, "wb") as f:
            f.write(ECHO_BODY)
        with open(self.lua, "w") as f:
            f.write(
                'wrk.method = "POST"\n'
                'wrk.headers["Content-Type"] = "application/octet-stream"\n'
                f'local f = assert(io.open("{self.body}", "rb"))\n'
                'wrk.body = f:read("*a")\n'
                "f:close()\n"
            )

    def argv(self, app, addr, seconds):
        spec = APPS[app]
        conns = str(spec["conns"])
        post = spec["method"] == "POST"
        if addr[0] == "nginx":
            addr = ("tcp", addr[2])
        if app == "wsecho":
            argv = [WSLOAD, "-c", conns, "-d", str(seconds)]
            if addr[0] == "tcp":
                return argv + [f"ws://127.0.0.1:{addr[1]}/"], parse_wsload
            return argv + ["--unix", addr[1], "ws://localhost/"], parse_wsload
        if addr[0] == "tcp":
            argv = [self.wrk, "-t1", f"-c{conns}", f"-d{seconds}s", "--latency",
                    "--timeout", WRK_TIMEOUT]
            if post:
                argv += ["-s", self.lua]
            return argv + [f"http://127.0.0.1:{addr[1]}/"], parse_wrk
        argv = [self.oha, "--unix-socket", addr[1], "-z", f"{seconds}s", "-c", conns,
                "--no-tui", "--output-format", "json", "-t", WRK_TIMEOUT]
        if post:
            argv += ["-m", "POST", "-T", "application/octet-stream", "-D", self.body]
        return argv + ["http://localhost/"], parse_oha

    def run(self, app, addr, seconds, log, cpu=LOAD_CPU):
        argv, parse = self.argv(app, addr, seconds)
        log.write(f"$ {' '.join(argv)}\n")
        log.flush()
        with tempfile.TemporaryFile("w+") as out:
            p = spawn(argv, out, cpu, err=log)
            try:
                p.wait(seconds + 60)
            except subprocess.TimeoutExpired:
                stop(p, signal.SIGKILL)
                raise RuntimeError("load generator did not finish in time")
            LIVE.pop(p.pid, None)
            out.seek(0)
            text = out.read()
        log.write(f"{text}\n")
        if p.returncode != 0:
            raise RuntimeError(f"load generator exited with {p.returncode}: {text[-500:]}")
        res = parse(text)
        res["tool"] = os.path.basename(argv[0])
        return res


# --------------------------------------------------------------------------------------------
# One run: start, check, warm up, measure, RSS, stop
# --------------------------------------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


NGINX_CONF = """\
user root;
worker_processes 1;
daemon off;
pid {prefix}/nginx-{port}.pid;
error_log {prefix}/nginx-{port}.err warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_buffer_size 128k;
  client_body_temp_path {prefix}/body-{port};
  proxy_temp_path {prefix}/proxy-{port};
  upstream app {{ server unix:{sock}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
    }}
  }}
}}
"""


def start_nginx(tmp, sock, log):
    """nginx on CPU 1 in front of the unix socket `sock`, with a keep-alive upstream (the
    deployment of Gunicorn's guide); returns (process, port)."""
    port = free_port()
    conf = os.path.join(tmp, f"nginx-{port}.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(prefix=tmp, port=port, sock=sock))
    p = spawn(["nginx", "-p", tmp, "-c", conf], log, LOAD_CPU)
    return p, port


def one_run(server, app, transport, rnd, load, checks, args, tmp, logdir):
    build, forks, _ = SERVERS[server]
    spec = APPS[app]
    if transport == "tcp":
        addr = ("tcp", free_port())
    else:
        addr = ("unix", os.path.join(tmp, f"{server}.sock"))
        if os.path.exists(addr[1]):
            os.unlink(addr[1])
    cpu, load_cpu = (ALL_CPUS, ALL_CPUS) if server in UNPINNED else (SERVER_CPU, LOAD_CPU)
    served = addr  # what the checks and the load generator talk to
    nginx = None
    argv = build(spec["module"], addr, app == "sleep")
    rec = {"server": server, "app": app, "transport": transport, "round": rnd,
           "cmd": argv, "valid": False}
    logpath = os.path.join(logdir, f"{app}-{transport}-r{rnd}-{server}.log")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    with open(logpath, "w") as log:
        log.write(f"$ {' '.join(argv)}\n")
        log.flush()
        t0 = time.monotonic()
        p = spawn(argv, log, cpu, cwd=APPS_DIR, env=env)
        try:
            wait_ready(p, addr, t0 + START_TIMEOUT)
            rec["startup_ms"] = (time.monotonic() - t0) * 1e3
            if transport == "nginx-unix":
                nginx, port = start_nginx(tmp, addr[1], log)
                served = ("nginx", addr[1], port)
                wait_ready(nginx, served, time.monotonic() + START_TIMEOUT)
            body = ECHO_BODY if spec["method"] == "POST" else None
            status, got = request(served, spec["method"], body, timeout=10.0)
            if status != 200 or not checks[app](got):
                raise RuntimeError(f"wrong response: status {status}, {len(got)} bytes: {got[:80]!r}")
            if args.warmup > 0:
                load.run(app, served, args.warmup, log, load_cpu)
                # Requests the warm-up left queued (a one-at-a-time server on the sleep app has
                # hundreds) would eat into the timed run: wait until a fresh request is served.
                status, _ = request(served, spec["method"], body, timeout=60.0)
                if status != 200:
                    raise RuntimeError(f"status {status} after the warm-up")
            ticks = cpu_ticks(p.pid)
            res = load.run(app, served, args.duration, log, load_cpu)
            ticks = cpu_ticks(p.pid) - ticks
            rec.update(res)
            if res.get("requests"):
                # The server's CPU time per request (or message): steadier than req/s on a
                # shared machine.
                rec["cpu_us"] = ticks / os.sysconf("SC_CLK_TCK") * 1e6 / res["requests"]
            rec["rss_kib"] = rss_kib(worker_pid(p, forks))
            if p.poll() is not None:
                raise RuntimeError(f"server exited with status {p.returncode} during the run")
            if not res.get("requests"):
                res["errors"]["no response in time"] = 1
            rec["valid"] = not res["errors"]
        except Exception as e:  # noqa: BLE001 - one failed run must not stop the matrix
            rec["failure"] = str(e)
            log.write(f"\n!! {e}\n")
        finally:
            if nginx is not None:
                stop(nginx, signal.SIGQUIT)
            stop(p)
            if addr[0] == "unix" and os.path.exists(addr[1]):
                os.unlink(addr[1])
    return rec


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt_ms(x):
    if x is None:
        return "—"
    return f"{x * 1e3:.0f} µs" if x < 1 else f"{x:.2f} ms" if x < 100 else f"{x:.0f} ms"


def fmt_num(x, nd=0):
    return "—" if x is None else f"{x:,.{nd}f}"


def summarise(runs, servers):
    """(app, transport, server) -> medians over valid rounds and the median per-round ratio."""
    out = {}
    for r in runs:
        out.setdefault((r["app"], r["transport"], r["server"]), []).append(r)
    summary = {}
    for key, rs in out.items():
        app, transport, server = key
        valid = [r for r in rs if r["valid"]]
        use = valid or [r for r in rs if r.get("rps") is not None]
        ratios = []
        # The unpinned -w 2 pair is compared with itself (Targets), not with pinned ferricorn.
        if server != "ferricorn" and server not in UNPINNED:
            for r in valid:
                f = [x for x in runs if x["app"] == app and x["transport"] == transport
                     and x["round"] == r["round"] and x["server"] == "ferricorn" and x["valid"]]
                if f and r["rps"]:
                    ratios.append(f[0]["rps"] / r["rps"])
        summary[key] = {
            "rounds": len(rs), "valid": len(valid),
            "rps": med(r.get("rps") for r in use),
            "p50_ms": med(r.get("p50_ms") for r in use),
            "p99_ms": med(r.get("p99_ms") for r in use),
            "ratio": med(ratios),
            "rss_kib": med(r.get("rss_kib") for r in rs),
            "startup_ms": med(r.get("startup_ms") for r in rs),
            "cpu_us": med(r.get("cpu_us") for r in use),
            "failures": sorted({r["failure"] for r in rs if r.get("failure")}),
            "errors": [r["errors"] for r in rs if r.get("errors")],
        }
    return summary


def pair_ratio(runs, app, transport, a, b):
    """Median over rounds of a's req/s divided by b's in the same round (valid runs only)."""
    ratios = []
    for r in runs:
        if (r["app"], r["transport"], r["server"]) != (app, transport, a) or not r["valid"]:
            continue
        o = [x for x in runs if (x["app"], x["transport"], x["server"], x["round"])
             == (app, transport, b, r["round"]) and x["valid"]]
        if o and o[0]["rps"]:
            ratios.append(r["rps"] / o[0]["rps"])
    return med(ratios)


def evaluate_targets(summary, runs):
    """The targets of issue 16 (and the earlier ones it keeps), from the medians of this run;
    returns rows (target, value, verdict)."""
    rows = []

    def s(app, server, t="tcp"):
        return summary.get((app, t, server))

    def verdict(ok, how):
        return f"{'met' if ok else 'NOT met'} ({how})"

    def ratio_target(label, app, server, need, t="tcp"):
        x = s(app, server, t)
        if not x or x["ratio"] is None:
            rows.append((label, "no data", "not evaluated"))
            return
        ok = x["ratio"] >= need
        rows.append((label, f"{x['ratio']:.2f}×",
                     verdict(ok, f"{x['ratio'] / need * 100 - 100:+.0f}% vs {need}×")))

    def p99_target(label, app, server, factor, t="tcp"):
        f, x = s(app, "ferricorn", t), s(app, server, t)
        if not f or not x or f["p99_ms"] is None or x["p99_ms"] is None:
            rows.append((label, "no data", "not evaluated"))
            return
        limit = x["p99_ms"] * factor
        ok = f["p99_ms"] <= limit
        rows.append((label, f"{fmt_ms(f['p99_ms'])} vs limit {fmt_ms(limit)}",
                     verdict(ok, f"{f['p99_ms'] / limit * 100 - 100:+.0f}% of the limit")))

    # Issue 16.
    ratio_target("hello ≥ 1.05× bjoern (TCP)", "hello", "bjoern", 1.05)
    ratio_target("hello ≥ 0.8× a plain Rust hello server on the same stack (TCP)", "hello",
                 "rust-hello", 0.8)
    p99_target("hello p99 ≤ bjoern's (TCP)", "hello", "bjoern", 1.0)
    ratio_target("json4k ≥ 1.1× bjoern (TCP)", "json4k", "bjoern", 1.1)
    ratio_target("hello through nginx to a unix socket ≥ 1.0× bjoern behind the same nginx",
                 "hello", "bjoern", 1.0, "nginx-unix")
    r = pair_ratio(runs, "hello", "tcp", "ferricorn-w2-2cpu", "ferricorn-w1-2cpu")
    label = "-w 2 ≥ 1.8× -w 1 (hello, TCP, both CPUs shared with the load generator)"
    if r is None:
        rows.append((label, "no data", "not evaluated"))
    else:
        rows.append((label, f"{r:.2f}×", verdict(r >= 1.8, f"{r / 1.8 * 100 - 100:+.0f}% vs 1.8×; "
                     f"{os.cpu_count()} CPUs: the load generator needs one of them")))
    # Kept from the earlier issues.
    ratio_target("hello ≥ 1.5× granian", "hello", "granian", 1.5)
    ratio_target("hello ≥ 10× gunicorn sync", "hello", "gunicorn-sync", 10)
    p99_target("hello p99 ≤ granian's", "hello", "granian", 1.0)
    p99_target("json4k p99 ≤ 0.5× granian's", "json4k", "granian", 0.5)
    f = s("sleep", "ferricorn")
    limit = 64 / 0.010
    if f and f["rps"] is not None:
        ok = f["rps"] >= 0.9 * limit
        rows.append(("sleep 10 ms, --threads 64, c256 ≥ 90% of 6400 req/s",
                     f"{f['rps']:,.0f} req/s = {f['rps'] / limit * 100:.1f}%",
                     f"{'met' if ok else 'NOT met'}"))
    else:
        rows.append(("sleep 10 ms ≥ 90% of 6400 req/s", "no data", "not evaluated"))
    ratio_target("stream 1 MiB ≥ 1.0× granian", "stream", "granian", 1.0)
    ratio_target("echo 64 KiB ≥ 1.0× granian", "echo", "granian", 1.0)
    ratio_target("ASGI hello ≥ 1.5× uvicorn", "ahello", "uvicorn", 1.5)
    ratio_target("ASGI hello ≥ 1.0× granian-asgi", "ahello", "granian-asgi", 1.0)
    ratio_target("WebSocket echo ≥ 1.0× granian-asgi", "wsecho", "granian-asgi", 1.0)
    f = s("asleep", "ferricorn")
    limit = 256 / 0.010
    if f and f["rps"] is not None:
        rows.append(("ASGI sleep 10 ms, c256 ≥ 90% of Little's-law 25,600 req/s",
                     f"{f['rps']:,.0f} req/s = {f['rps'] / limit * 100:.1f}%",
                     "met" if f["rps"] >= 0.9 * limit else "NOT met"))
    c = s("asleep", "asleep-ceiling")
    if c and c["rps"] is not None:
        rows.append(("(the one-loop ceiling, bench/asleep_ceiling.py, same run)",
                     f"{c['rps']:,.0f} req/s = {c['rps'] / limit * 100:.1f}%"
                     + (f"; ferricorn reaches {f['rps'] / c['rps'] * 100:.0f}% of it"
                        if f and f["rps"] is not None else ""),
                     "not a target: what uvloop's timers and one Python thread leave here"))
    f, g = s("hello", "ferricorn"), s("hello", "gunicorn-sync")
    if f and g and f["rss_kib"] and g["rss_kib"]:
        r = f["rss_kib"] / g["rss_kib"]
        rows.append(("RSS per worker ≤ 1.2× gunicorn sync (hello, TCP)",
                     f"{f['rss_kib'] / 1024:.1f} MiB vs {g['rss_kib'] / 1024:.1f} MiB = {r:.2f}×",
                     f"{'met' if r <= 1.2 else 'NOT met'}"))
    else:
        rows.append(("RSS per worker ≤ 1.2× gunicorn sync", "no data", "not evaluated"))
    return rows


def machine_info():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "kernel": platform.release(),
            "memory": mem, "loadavg_at_start": open("/proc/loadavg").read().split()[:3]}


def run_out(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        return (r.stdout + r.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unavailable ({e})"


def versions(tools):
    v = {"python": run_out([os.path.join(VENV_BIN, "python"), "--version"]).replace("Python ", "")}
    code = ("import importlib.metadata as m\n"
            "for n in ('gunicorn','granian','pyuwsgi','bjoern','waitress','uvicorn',"
            "'httptools','uvloop','websockets'):\n"
            "    try:\n"
            "        print(n, m.version(n))\n"
            "    except m.PackageNotFoundError:\n"
            "        pass")
    for line in run_out([os.path.join(VENV_BIN, "python"), "-c", code]).splitlines():
        if " " in line:
            k, val = line.split(" ", 1)
            v[k] = val
    v["wrk"] = run_out([tools["wrk"], "--version"]).splitlines()[0].split(" [")[0]
    v["oha"] = run_out([tools["oha"], "--version"])
    if "nginx" in tools:
        v["nginx"] = run_out([tools["nginx"], "-v"]).replace("nginx version: ", "")
    v["ferricorn"] = run_out([FERRICORN, "--version"])
    v["ferricorn git"] = run_out(["git", "-C", ROOT, "describe", "--always", "--dirty", "--tags"])
    return v


def write_report(path, meta, summary, runs, apps, servers, transports):
    L = []
    if meta["quick"]:
        L += ["# Benchmark results — SMOKE RUN (`--quick`), not a measurement", "",
              "> Produced by `bench/run.sh --quick`: 1 round of a few seconds on a shared machine. It",
              "> proves the pipeline works end to end; the numbers mean little. Replace it with a full",
              "> run (`bench/run.sh`).", ""]
    else:
        L += ["# Benchmark results", ""]
    m, v = meta["machine"], meta["versions"]
    L += [f"Date: {meta['date']} (took {meta['elapsed_s'] / 60:.1f} min)", "",
          "## Machine", "",
          f"- CPU: {m['cpu']}, {m['cores']} cores; memory {m['memory']}; kernel {m['kernel']}",
          f"- load average at start: {' '.join(m['loadavg_at_start'])}"
          + (f", at end: {' '.join(m['loadavg_at_end'])}" if "loadavg_at_end" in m else ""),
          f"- server pinned to CPU {SERVER_CPU}, load generator (and nginx) to CPU {LOAD_CPU} "
          f"(`taskset`); the -w 2 scaling pair (ferricorn-w1-2cpu, ferricorn-w2-2cpu) runs with "
          f"server and load generator on CPUs {ALL_CPUS}", "",
          "## Versions", ""]
    L += [f"- {k}: {val}" for k, val in v.items()]
    L += ["", "## Method", "",
          f"- {meta['rounds']} round(s); each run {meta['duration']} s after a {meta['warmup']} s"
          " warm-up; a fresh server per run, one worker process each.",
          "- Order: for each app, for each transport, for each round, every server in turn "
          "(A B C … A B C …).",
          "- TCP on 127.0.0.1: `wrk -t1 -c50 -d<S>s --latency --timeout 10s` (c256 for sleep). "
          "Unix socket: `oha --unix-socket PATH -z <S>s -c50` (c256 for sleep). nginx → unix "
          "socket: the same wrk against nginx 1 worker (on the load generator's CPU) proxying "
          "to the server's unix socket with a keep-alive upstream (64 connections), the "
          "deployment of Gunicorn's guide. wrk and oha measure latency differently: compare "
          "servers within a table, not across tables.",
          "- Every server's response was checked (status 200, exact body) before it was timed. "
          "A run with socket errors or non-2xx responses is invalid; medians use the valid rounds "
          "(column *valid*) and fall back to all rounds, marked ⚠, when none is valid.",
          "- req/s, p50, p99: medians over rounds. *ferricorn ÷ server*: median over rounds of "
          "ferricorn's req/s divided by the server's in the same round.",
          "- CPU µs/req: user + system CPU time of the server's processes during the timed run, "
          "divided by the requests (messages for wsecho) served; on a shared machine it moves "
          "less than req/s.",
          "- RSS: VmRSS of the worker process after the timed run (the master's child for "
          "ferricorn, gunicorn, granian, uWSGI; the process itself for bjoern and waitress).",
          "- Start-up: from spawning the server to its first successful response (polled every 10 ms).",
          "", "### Apps (`bench/apps/`)", ""]
    L += [f"- `{a}`: {APPS[a]['what']} (c{APPS[a]['conns']})" for a in apps]
    L += ["", "### Servers", "", "| server | configuration | command (hello, TCP) |",
          "|---|---|---|"]
    for s in servers:
        build, _, note = SERVERS[s]
        argv = build("hello" if "wsgi" in SERVES[s] else "ahello", ("tcp", "PORT"), False)
        cmd = " ".join(shlex.quote(os.path.relpath(x, ROOT) if x.startswith(ROOT) else x)
                       for x in argv)
        L.append(f"| {s} | {note} | `{cmd}` |")
    for a in apps:
        L += ["", f"## {a} — {APPS[a]['what']}", ""]
        for t in transports:
            tool = "wsload" if a == "wsecho" else {"tcp": "wrk", "unix": "oha",
                                                   "nginx-unix": "wrk → nginx"}[t]
            L += [f"**{TRANSPORT_NAMES[t]}** ({tool}, c{APPS[a]['conns']})", "",
                  "| server | req/s (median) | p50 | p99 | ferricorn ÷ server | CPU µs/req | valid |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
            for s in servers:
                x = summary.get((a, t, s))
                if not x:
                    continue
                warn = " ⚠" if x["valid"] == 0 else ""
                ratio = "—" if x["ratio"] is None else f"{x['ratio']:.2f}×"
                if s == "ferricorn":
                    ratio = "1"
                cpu = "—" if x.get("cpu_us") is None else f"{x['cpu_us']:.0f}"
                L.append(f"| {s} | {fmt_num(x['rps'])}{warn} | {fmt_ms(x['p50_ms'])} | "
                         f"{fmt_ms(x['p99_ms'])} | {ratio} | {cpu} | {x['valid']}/{x['rounds']} |")
            notes = []
            for s in servers:
                x = summary.get((a, t, s))
                if x and (x["failures"] or x["errors"]):
                    what = "; ".join(x["failures"][:2])
                    errs = ", ".join(json.dumps(e) for e in x["errors"][:3])
                    notes.append(f"- {s}: {what}{' ' if what and errs else ''}{('errors ' + errs) if errs else ''}")
            L += (["", *notes, ""]) if notes else [""]
    L += ["## RSS per worker after the run (MiB, median over runs)", "",
          "| server | " + " | ".join(apps) + " |", "|---|" + "---:|" * len(apps)]
    for s in servers:
        cells = []
        for a in apps:
            vals = [summary[(a, t, s)]["rss_kib"] for t in transports if (a, t, s) in summary]
            x = med(vals)
            cells.append("—" if x is None else f"{x / 1024:.1f}")
        L.append(f"| {s} | " + " | ".join(cells) + " |")
    L += ["", "## Start-up: spawn to first served request (ms)", "",
          "| server | median | min | max | runs |", "|---|---:|---:|---:|---:|"]
    for s in servers:
        xs = [r["startup_ms"] for r in runs if r["server"] == s and r.get("startup_ms") is not None]
        if xs:
            L.append(f"| {s} | {statistics.median(xs):.0f} | {min(xs):.0f} | {max(xs):.0f} | {len(xs)} |")
    L += ["", "## Targets (medians of this run; TCP unless named)", "",
          "| target | measured | verdict |", "|---|---|---|"]
    rows = evaluate_targets(summary, runs)
    if set(apps) != set(APPS):
        rows = [r for r in rows if r[1] != "no data"]  # targets of apps this run left out
    L += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    L += ["", "## Notes", "",
          "- bjoern and gunicorn sync serve one request at a time: on the sleep app they are "
          "bounded by 100 req/s, whatever the concurrency.",
          "- gunicorn sync and uWSGI's `--http-socket` close the connection after every response "
          "(no keep-alive), so the load generator reconnects per request. (uWSGI's keep-alive "
          "`--http11-socket` is worse with one non-threaded worker: it serves one connection "
          "while the other 49 wait.) uWSGI's `--http-socket` does not send "
          "`Connection: close` by itself (wrk then counts every response as a read error), so it "
          "is added with `--add-header`.",
          "- Threads for the sleep app: ferricorn, gunicorn gthread, granian-bt1, uWSGI and "
          f"waitress get {SLEEP_THREADS}; granian keeps its default (up to 512 blocking threads).",
          f"- Raw per-run data: `{meta.get('json', 'bench/results.json')}`. Server and "
          "load-generator output: "
          f"`{os.path.relpath(meta['logdir'], ROOT)}/`.", ""]
    with open(path, "w") as f:
        f.write(re.sub(r"\n{3,}", "\n\n", "\n".join(L)))


# --------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 round of 3 s after 1 s of warm-up (smoke test)")
    ap.add_argument("--rounds", type=int, help="rounds (default 3)")
    ap.add_argument("--duration", type=float, help="seconds per timed run (default 10)")
    ap.add_argument("--warmup", type=float, help="seconds of warm-up load per run (default 1)")
    ap.add_argument("--only", help="apps, comma-separated: " + ",".join(APPS))
    ap.add_argument("--servers", help="servers, comma-separated: " + ",".join(SERVERS))
    ap.add_argument("--transports", default=",".join(TRANSPORTS),
                    help=",".join(TRANSPORTS) + " (default all)")
    ap.add_argument("--oha", default=os.path.join(BENCH, ".tools", "bin", "oha"))
    ap.add_argument("--wrk", default="wrk")
    ap.add_argument("--out", default=os.path.join(BENCH, "RESULTS.md"))
    ap.add_argument("--json", default=os.path.join(BENCH, "results.json"))
    args = ap.parse_args()
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.duration = args.duration or (3 if args.quick else 10)
    args.warmup = args.warmup if args.warmup is not None else 1
    if not 1 <= args.rounds <= 50 or not 0.5 <= args.duration <= 600 or not 0 <= args.warmup <= 60:
        ap.error("--rounds 1..50, --duration 0.5..600, --warmup 0..60")
    # wrk takes whole seconds (so does the report)
    args.duration = max(1, round(args.duration))
    args.warmup = 0 if args.warmup == 0 else max(1, round(args.warmup))

    def pick(arg, known, what):
        if not arg:
            return list(known)
        chosen = [x.strip() for x in arg.split(",") if x.strip()]
        bad = [x for x in chosen if x not in known]
        if bad:
            ap.error(f"unknown {what}: {', '.join(bad)} (known: {', '.join(known)})")
        return [x for x in known if x in chosen]

    apps = pick(args.only, APPS, "app")
    servers = pick(args.servers or ",".join(DEFAULT_SERVERS), SERVERS, "server")
    transports = pick(args.transports, TRANSPORTS, "transport")
    tools = {"wrk": shutil.which(args.wrk) or args.wrk, "oha": shutil.which(args.oha) or args.oha}
    if "nginx-unix" in transports:
        tools["nginx"] = shutil.which("nginx") or "/usr/sbin/nginx"
    for need in ([tools["wrk"]] if {"tcp", "nginx-unix"} & set(transports) else []) + (
            [tools["oha"]] if "unix" in transports else []) + (
            [tools["nginx"]] if "nginx-unix" in transports else []) + (
            [FERRICORN] if any(x.startswith("ferricorn") for x in servers) else []) + (
            [RUST_HELLO] if "rust-hello" in servers else []) + (
            [WSLOAD] if "wsecho" in apps else []):
        if not (os.path.isfile(need) and os.access(need, os.X_OK)):
            sys.exit(f"driver: {need} not found (run bench/run.sh, which installs it)")

    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    logdir = os.path.join(BENCH, ".logs", stamp)
    os.makedirs(logdir, exist_ok=True)
    checks = _expected()
    total = args.rounds * sum(
        runs_app(sv, a, t) for a in apps for sv in servers for t in transports)
    est = total * (args.duration + args.warmup + 2)
    print(f"driver: {total} runs ({len(servers)} servers, {len(apps)} apps, {len(transports)} "
          f"transports, {args.rounds} rounds), about {est / 60:.0f} min; logs in {logdir}",
          flush=True)
    runs = []
    started = time.time()
    meta = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": machine_info(), "versions": versions(tools), "quick": args.quick,
            "rounds": args.rounds, "duration": args.duration, "warmup": args.warmup,
            "apps": apps, "servers": servers, "transports": transports, "logdir": logdir}
    tmp = tempfile.mkdtemp(prefix="ferricorn-bench-")
    try:
        load = Load(tools, tmp)
        n = 0
        for app in apps:
            for transport in transports:
                for rnd in range(1, args.rounds + 1):
                    for server in servers:
                        if not runs_app(server, app, transport):
                            continue
                        n += 1
                        rec = one_run(server, app, transport, rnd, load, checks, args, tmp, logdir)
                        runs.append(rec)
                        if rec.get("rps") is not None:
                            what = (f"{rec['rps']:>10,.0f} req/s  p50 {fmt_ms(rec['p50_ms']):>9}  "
                                    f"p99 {fmt_ms(rec['p99_ms']):>9}")
                            if rec.get("errors"):
                                what += f"  INVALID {rec['errors']}"
                        else:
                            what = f"FAILED: {rec.get('failure')}"
                        print(f"[{n}/{total}] {app:6} {transport:4} r{rnd} {server:16} {what}",
                              flush=True)
    except KeyboardInterrupt:
        print("\ndriver: interrupted; servers stopped, no report written", file=sys.stderr)
        return 130
    finally:
        stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    meta["elapsed_s"] = time.time() - started
    meta["machine"]["loadavg_at_end"] = open("/proc/loadavg").read().split()[:3]
    meta["json"] = os.path.relpath(os.path.abspath(args.json), ROOT)
    summary = summarise(runs, servers)
    with open(args.json, "w") as f:
        json.dump({"meta": meta, "runs": runs,
                   "summary": [{"app": k[0], "transport": k[1], "server": k[2], **v}
                               for k, v in summary.items()]}, f, indent=1)
    write_report(args.out, meta, summary, runs, apps, servers, transports)
    print(f"driver: wrote {args.out} and {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Smoke matrix for one virtualenv with ferricorn installed from the wheel.

    python3 tests/wheel/smoke.py VENV [LABEL]

Runs VENV/bin/ferricorn (the console script pip wrote) and checks, one line each:
  bare-env     it starts from / with PATH and VIRTUAL_ENV cleared, nothing activated
  tcp, unix    it serves over TCP and a unix socket
  identity     sys.version and sys.prefix seen by the app are the virtualenv's
  post-300k    a 300 KB POST arrives whole
  hup          HUP: new worker pids, 0 failed requests during the reload
  kill-worker  a SIGKILLed worker is replaced
  usr2         USR2: a new master (VENV/bin/python -m ferricorn, so the same virtualenv and
               the code installed now) takes over, 0 failed requests, the old master exits 0
  activation   under systemd-socket-activate it serves the inherited socket
  term         TERM: exit status 0
  python-m     VENV/bin/python -m ferricorn --version names the virtualenv's Python
  generate     `VENV/bin/ferricorn systemd generate` writes ExecStart=VENV/bin/ferricorn, with
               ProtectHome=read-only when the venv's base interpreter is under /home or /root,
               and `systemd check` finds nothing in what it wrote
  validate     wsgiref.validate (around the app) reported nothing
and ends with "N passed, N failed" (exit status 1 if any failed). Every request goes to
127.0.0.1 or a unix socket in a temporary directory; every loop is bounded in count and time.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
LIMIT = 30.0  # seconds any one wait may take


class Failed(Exception):
    pass


def request(addr, method="GET", path="/", body=b"", timeout=10.0):
    """One HTTP/1.1 request on a new connection; returns (status, body bytes)."""
    if isinstance(addr, str):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(addr)
        head = (
            "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
            "Content-Length: %d\r\n\r\n" % (method, path, len(body))
        )
        s.sendall(head.encode() + body)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    m = re.match(rb"HTTP/1\.1 (\d{3})", head)
    if not m:
        raise Failed("not an HTTP response: %r" % data[:200])
    return int(m.group(1)), rest


def get_json(addr, path):
    status, body = request(addr, path=path)
    if status != 200:
        raise Failed("GET %s: %d %r" % (path, status, body[:200]))
    return json.loads(body)


def wait_for(what, cond, limit=LIMIT):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise Failed("timed out after %.0f s waiting for %s" % (limit, what))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def children(pid, title):
    """Pids whose parent is `pid` and whose command line starts with `title`."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                stat = f.read()
            with open("/proc/%s/cmdline" % d, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and cmd.startswith(title):
            out.append(int(d))
    return sorted(out)


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Load:
    """Sequential requests on new connections until stopped (at most 3000, at most LIMIT s)."""

    def __init__(self, addr):
        self.addr, self.ok, self.failed, self.errors = addr, 0, 0, []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        deadline = time.monotonic() + LIMIT
        while not self.stop.is_set() and self.ok + self.failed < 3000:
            if time.monotonic() > deadline:
                break
            try:
                status, _ = request(self.addr, timeout=5.0)
                if status == 200:
                    self.ok += 1
                else:
                    self.failed += 1
                    self.errors.append("status %d" % status)
            except (OSError, Failed) as e:
                self.failed += 1
                self.errors.append(repr(e))

    def finish(self):
        self.stop.set()
        self.thread.join(LIMIT)
        if self.failed or not self.ok:
            raise Failed(
                "%d ok, %d failed: %s" % (self.ok, self.failed, self.errors[:3])
            )
        return "%d requests, 0 failed" % self.ok


class Matrix:
    def __init__(self, venv, label):
        self.venv = os.path.abspath(venv)
        self.label = label
        self.exe = os.path.join(self.venv, "bin", "ferricorn")
        self.python = os.path.join(self.venv, "bin", "python")
        self.tmp = tempfile.mkdtemp(prefix="ferricorn-wheel-")
        self.app_dir = os.path.join(self.tmp, "app")
        os.mkdir(self.app_dir)
        shutil.copy(os.path.join(HERE, "smoke_app.py"), self.app_dir)
        self.passed, self.failed = 0, 0
        self.logs = []
        self.cleanup = []
        info = subprocess.run(
            [self.python, "-c", "import json, sys; print(json.dumps([sys.version, sys.prefix]))"],
            check=True, capture_output=True, text=True,
        ).stdout
        self.version, self.prefix = json.loads(info)

    def check(self, name, fn):
        t0 = time.monotonic()
        try:
            detail = fn() or ""
            self.passed += 1
            print("PASS %-12s %-14s %5.1fs %s" % (name, self.label, time.monotonic() - t0, detail))
        except Exception as e:  # noqa: BLE001 - every failure is reported the same way
            self.failed += 1
            print("FAIL %-12s %-14s %s" % (name, self.label, e))
            for log in self.logs[-1:]:
                print("     --- %s (last 20 lines)" % log)
                with open(log, errors="replace") as f:
                    for line in f.readlines()[-20:]:
                        print("     " + line.rstrip())
        sys.stdout.flush()

    def spawn(self, name, args, env=None, cwd="/", prefix=()):
        log = os.path.join(self.tmp, name + ".log")
        self.logs.append(log)
        out = open(log, "wb")
        p = subprocess.Popen(
            list(prefix) + [self.exe] + args, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, cwd=cwd, env=env, start_new_session=True,
        )
        out.close()
        self.cleanup.append(p.pid)
        return p, log

    def log_has(self, log, text):
        with open(log, errors="replace") as f:
            return text in f.read()

    def ready(self, p, log, count=1):
        def done():
            if p.poll() is not None:
                raise Failed("exited with %s" % p.returncode)
            with open(log, errors="replace") as f:
                return f.read().count("Ready:") >= count
        wait_for("Ready: in %s" % log, done)

    # ---- the checks -------------------------------------------------------------------------

    def run(self):
        sock = os.path.join(self.tmp, "app.sock")
        bare = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PATH")}
        bare["PATH"] = ""
        bare["PYTHONDONTWRITEBYTECODE"] = "1"
        # A fixed port: a reload re-binds "127.0.0.1:0" (to another port).
        port = free_port()
        args = ["-w", "2", "-b", "127.0.0.1:%d" % port, "-b", "unix:" + sock,
                "--chdir", self.app_dir, "smoke_app:app"]
        master, log = self.spawn("main", args, env=bare, cwd="/")
        state = {}

        def bare_env():
            self.ready(master, log)
            state["tcp"] = ("127.0.0.1", port)
            return "from / with PATH='' and no VIRTUAL_ENV"

        self.check("bare-env", bare_env)
        if "tcp" not in state:
            return self.finish()
        tcp = state["tcp"]

        def serves(addr):
            status, body = request(addr)
            if (status, body) != (200, b"ok"):
                raise Failed("%d %r" % (status, body[:100]))

        self.check("tcp", lambda: serves(tcp))
        self.check("unix", lambda: serves(sock))

        def identity():
            s = get_json(tcp, "/sys")
            if s["version"] != self.version:
                raise Failed("sys.version %r, the venv's is %r" % (s["version"], self.version))
            if os.path.realpath(s["prefix"]) != os.path.realpath(self.venv):
                raise Failed("sys.prefix %s, not the venv %s" % (s["prefix"], self.venv))
            if s["prefix"] != self.prefix:
                raise Failed("sys.prefix %s, the venv's python says %s" % (s["prefix"], self.prefix))
            return "%s, %s" % (s["version"].split()[0], s["prefix"])

        self.check("identity", identity)

        def post():
            data = os.urandom(300 * 1024)
            status, body = request(tcp, "POST", "/post", data)
            got = json.loads(body)
            import hashlib
            if status != 200 or got != {"len": len(data), "sha256": hashlib.sha256(data).hexdigest()}:
                raise Failed("%d %r" % (status, got))
            return "%d bytes echoed" % len(data)

        self.check("post-300k", post)

        def hup():
            old = children(master.pid, "ferricorn: worker")
            if len(old) != 2:
                raise Failed("want 2 workers, found %s" % old)
            load = Load(tcp)
            time.sleep(0.3)
            os.kill(master.pid, signal.SIGHUP)
            wait_for("Reload complete", lambda: self.log_has(log, "Reload complete"))
            new = wait_for(
                "the old workers to exit",
                lambda: (lambda n: n if len(n) == 2 and not set(n) & set(old) else None)(
                    children(master.pid, "ferricorn: worker")
                ),
            )
            time.sleep(0.3)
            return "workers %s -> %s; %s" % (old, new, load.finish())

        self.check("hup", hup)

        def kill_worker():
            old = children(master.pid, "ferricorn: worker")
            victim = old[0]
            os.kill(victim, signal.SIGKILL)
            new = wait_for(
                "a replacement worker",
                lambda: (lambda n: n if len(n) == 2 and victim not in n else None)(
                    children(master.pid, "ferricorn: worker")
                ),
            )
            wait_for("the replacement to serve", lambda: self.log_has(log, "was sent SIGKILL"))
            serves(tcp)
            return "killed %d, workers now %s" % (victim, new)

        self.check("kill-worker", kill_worker)

        def usr2():
            init = os.path.join(
                subprocess.run(
                    [self.python, "-c", "import ferricorn, os; print(os.path.dirname(ferricorn.__file__))"],
                    check=True, capture_output=True, text=True,
                ).stdout.strip(),
                "__init__.py",
            )
            with open(init) as f:
                original = f.read()
            # "New code": the package as installed in the venv now, not the running master's.
            with open(init, "a") as f:
                f.write("\nimport os as _os\n_os.environ['FERRICORN_SMOKE_MARK'] = 'new-code'\n")
            try:
                load = Load(tcp)
                time.sleep(0.3)
                os.kill(master.pid, signal.SIGUSR2)
                def started():
                    with open(log, errors="replace") as f:
                        m = re.search(r"started a new master \(pid (\d+)\)", f.read())
                    return m and int(m.group(1))

                new = wait_for("the new master", started)
                code = master.wait(LIMIT)
                if code != 0:
                    raise Failed("the old master exited with %s" % code)
                self.cleanup.append(new)
                state["new_master"] = new
                time.sleep(0.3)
                done = load.finish()
            finally:
                with open(init, "w") as f:
                    f.write(original)
            s = get_json(tcp, "/sys")
            if s["mark"] != "new-code":
                raise Failed("the new master did not load the installed code: %r" % s)
            if os.path.realpath(s["prefix"]) != os.path.realpath(self.venv):
                raise Failed("after USR2 sys.prefix is %s, not the venv" % s["prefix"])
            serves(sock)
            return "master %d -> %d (same venv, new code); %s" % (master.pid, new, done)

        self.check("usr2", usr2)
        new = state.get("new_master")
        if new:
            os.kill(new, signal.SIGTERM)
            try:
                wait_for("the new master to stop", lambda: not alive(new))
            except Failed:
                os.kill(new, signal.SIGKILL)
        else:
            master.kill()
            master.wait()

        def activation():
            port = free_port()
            env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
            p, alog = self.spawn(
                "activation",
                ["-w", "1", "--chdir", self.app_dir, "smoke_app:app"],
                env=env,
                prefix=[shutil.which("systemd-socket-activate") or "systemd-socket-activate",
                        "-l", "127.0.0.1:%d" % port],
            )
            state["activation"] = p
            # systemd-socket-activate starts ferricorn on the first connection.
            wait_for("systemd-socket-activate to listen", lambda: self.log_has(alog, "Listening on"))
            status, body = request(("127.0.0.1", port), timeout=LIMIT)
            if (status, body) != (200, b"ok"):
                raise Failed("%d %r" % (status, body[:100]))
            self.ready(p, alog)
            if not self.log_has(alog, "Inherited socket fd 3"):
                raise Failed("the log does not show the inherited socket")
            return "fd 3 from systemd-socket-activate on port %d" % port

        self.check("activation", activation)

        def term():
            p = state.get("activation")
            if p is None or p.poll() is not None:
                raise Failed("no running server to stop")
            p.send_signal(signal.SIGTERM)
            code = p.wait(LIMIT)
            if code != 0:
                raise Failed("exit status %s" % code)
            return "exit 0"

        self.check("term", term)

        def python_m():
            out = subprocess.run(
                [self.python, "-m", "ferricorn", "--version"],
                capture_output=True, text=True, timeout=LIMIT, cwd="/",
            )
            want = " ".join(self.version.split())
            if out.returncode != 0 or want not in out.stdout:
                raise Failed("%d %r %r" % (out.returncode, out.stdout, out.stderr))
            return out.stdout.strip()

        self.check("python-m", python_m)

        def generate():
            out_dir = os.path.join(self.tmp, "deploy")
            gen = subprocess.run(
                [self.exe, "systemd", "generate", "--chdir", "/srv/app", "app:application",
                 "--output", out_dir],
                capture_output=True, text=True, timeout=LIMIT, cwd="/",
            )
            if gen.returncode != 0:
                raise Failed("generate: %d %s" % (gen.returncode, gen.stderr))
            with open(os.path.join(out_dir, "systemd", "app.service")) as f:
                unit = f.read()
            exec_start = re.search(r"^ExecStart=(\S+)", unit, re.M).group(1)
            if exec_start != self.exe:
                raise Failed("ExecStart=%s, want %s" % (exec_start, self.exe))
            homes = ("/home/", "/root/")
            base = os.path.realpath(self.python)
            want = "read-only" if (base.startswith(homes) or self.venv.startswith(homes)) else "yes"
            got = re.search(r"^ProtectHome=(\S+)", unit, re.M).group(1)
            if got != want:
                raise Failed("ProtectHome=%s, want %s (base interpreter %s)" % (got, want, base))
            chk = subprocess.run(
                [self.exe, "systemd", "check",
                 os.path.join(out_dir, "systemd", "app.service"),
                 os.path.join(out_dir, "systemd", "app.socket"),
                 os.path.join(out_dir, "tmpfiles.d", "app.conf")],
                capture_output=True, text=True, timeout=LIMIT,
            )
            if chk.returncode != 0:
                raise Failed("systemd check: %d %s%s" % (chk.returncode, chk.stdout, chk.stderr))
            return "ExecStart=%s, ProtectHome=%s, check clean" % (exec_start, got)

        self.check("generate", generate)

        def validate():
            bad = ("AssertionError", "WSGIWarning", "Traceback", "Exception ignored")
            for log in self.logs:
                with open(log, errors="replace") as f:
                    text = f.read()
                for b in bad:
                    if b in text:
                        raise Failed("%s in %s" % (b, log))
            return "no complaint in %d logs" % len(self.logs)

        self.check("validate", validate)
        return self.finish()

    def finish(self):
        for pid in self.cleanup:
            for kill in (os.killpg, os.kill):
                try:
                    kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        if not self.failed:
            shutil.rmtree(self.tmp, ignore_errors=True)
        print("%s: %d passed, %d failed" % (self.label, self.passed, self.failed))
        return 1 if self.failed else 0


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    venv = sys.argv[1]
    sys.exit(Matrix(venv, sys.argv[2] if len(sys.argv) == 3 else os.path.basename(venv)).run())

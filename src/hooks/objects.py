"""The objects ferricorn passes to Gunicorn's server hooks: `server` (Gunicorn's Arbiter),
`worker`, their `cfg` and `log`, with the attributes real hooks use.

The master keeps one `Arbiter` and updates it (pid, number of workers, timeout, the
configuration, `WORKERS`) under the GIL as things change, so that a thread a hook started
(Gunicorn's memory watchdog in examples/when_ready.conf.py) sees it current. `_log` is
ferricorn's error log (Rust), set when the module is made.
"""
import errno
import json
import os
import sys
import traceback

_log = None  # set by ferricorn: _log(level, text)


class Log:
    """Gunicorn's logger interface, writing to ferricorn's error log (and journald)."""

    def _emit(self, level, msg, args, exc_info=False):
        text = str(msg)
        if args:
            try:
                text = text % args
            except (TypeError, ValueError):
                text = " ".join([text] + [str(a) for a in args])
        if exc_info:
            tb = traceback.format_exc()
            if tb and tb.strip() != "NoneType: None":
                text = text + "\n" + tb.rstrip()
        _log(level, text)

    def debug(self, msg, *args, **kwargs):
        self._emit("debug", msg, args, kwargs.get("exc_info", False))

    def info(self, msg, *args, **kwargs):
        self._emit("info", msg, args, kwargs.get("exc_info", False))

    def warning(self, msg, *args, **kwargs):
        self._emit("warning", msg, args, kwargs.get("exc_info", False))

    warn = warning

    def error(self, msg, *args, **kwargs):
        self._emit("error", msg, args, kwargs.get("exc_info", False))

    def critical(self, msg, *args, **kwargs):
        self._emit("critical", msg, args, kwargs.get("exc_info", False))

    def exception(self, msg, *args, **kwargs):
        self._emit("error", msg, args, True)

    def log(self, lvl, msg, *args, **kwargs):
        names = {10: "debug", 20: "info", 30: "warning", 40: "error", 50: "critical"}
        self._emit(names.get(lvl, "info") if isinstance(lvl, int) else str(lvl).lower(), msg, args)

    def reopen_files(self):
        pass

    def close_on_exec(self):
        pass


class Config:
    """`server.cfg` / `worker.cfg`: the settings by Gunicorn's name (`cfg.workers`,
    `cfg.bind`), read-only, as Gunicorn's Config is."""

    def __init__(self, values):
        object.__setattr__(self, "_values", values)

    def __getattr__(self, name):
        values = object.__getattribute__(self, "_values")
        if name in values:
            return values[name]
        raise AttributeError("No configuration setting for: %s" % name)

    def __setattr__(self, name, value):
        raise AttributeError("Invalid access!")

    @property
    def settings(self):
        return dict(object.__getattribute__(self, "_values"))

    @property
    def env(self):
        out = {}
        for kv in self._values.get("raw_env") or []:
            k, _, v = kv.partition("=")
            out[k] = v
        return out

    @property
    def worker_class_str(self):
        return "gthread" if self._values.get("threads", 1) > 1 else self._values.get("worker_class")

    @property
    def address(self):
        return list(self._values.get("bind") or [])

    @property
    def proc_name(self):
        return self._values.get("proc_name") or self._values.get("wsgi_app") or "ferricorn"


def make_config(text):
    return Config(json.loads(text))


LOG = Log()


class Worker:
    """Gunicorn's worker, as hooks see it."""

    def __init__(self, age, ppid, cfg, timeout):
        self.age = age
        self.pid = "[booting]"
        self.ppid = ppid
        self.cfg = cfg
        self.log = LOG
        self.timeout = timeout
        self.alive = True
        self.booted = False
        self.aborted = False
        self.nr = 0
        self.wsgi = None

    def __repr__(self):
        return "<Worker %s>" % self.pid


class Arbiter:
    """Gunicorn's Arbiter, as hooks see it (`server`)."""

    def __init__(self):
        self.pid = os.getpid()
        self.cfg = None
        self.log = LOG
        self.num_workers = 0
        self.timeout = 30
        self.WORKERS = {}
        self.LISTENERS = []
        self.worker_age = 0
        self.proc_name = "ferricorn"
        self.master_name = "Master"
        self.app = None
        self._forking = None

    def kill_worker(self, pid, sig):
        """Gunicorn's kill_worker: signal one worker; the master reaps and replaces it."""
        try:
            os.kill(pid, sig)
        except OSError as e:
            if e.errno != errno.ESRCH:
                raise
            self.WORKERS.pop(pid, None)

    def kill_workers(self, sig):
        for pid in list(self.WORKERS):
            self.kill_worker(pid, sig)

    # The master's side, called by ferricorn under the GIL.

    def _update(self, cfg, num_workers, timeout, proc_name):
        self.cfg = cfg
        self.num_workers = num_workers
        self.timeout = timeout
        self.proc_name = proc_name

    def _prepare_fork(self, cfg, timeout):
        self.worker_age += 1
        w = Worker(self.worker_age, os.getpid(), cfg, timeout)
        self._forking = w
        return w

    def _forked(self, pid):
        w = self._forking
        self._forking = None
        if w is not None:
            w.pid = pid
            self.WORKERS[pid] = w

    def _exited(self, pid):
        w = self.WORKERS.pop(pid, None)
        if w is not None:
            w.alive = False
        return w


SERVER = Arbiter()
# In a worker: the one it is.
WORKER = None


def in_worker():
    """In a freshly forked worker: its `worker` object, with its pid."""
    global WORKER
    w = SERVER._forking
    SERVER._forking = None
    SERVER.WORKERS = {}
    if w is None:
        return None
    w.pid = os.getpid()
    WORKER = w
    return w


class Request:
    """`req` of pre_request/post_request: Gunicorn's parsed request."""

    def __init__(self, method, uri, path, query, version, headers, peer):
        self.method = method
        self.uri = uri
        self.path = path
        self.query = query
        self.fragment = ""
        self.version = version
        self.headers = headers
        self.peer_addr = peer
        self.remote_addr = peer
        self.scheme = "http"

    def __repr__(self):
        return "<Request %s %s>" % (self.method, self.uri)


class Response:
    """`resp` of post_request: the status and headers the app answered with."""

    def __init__(self, status, headers, sent):
        self.status = status
        self.headers = headers
        self.sent = sent

    @property
    def status_code(self):
        try:
            return int(str(self.status).split(None, 1)[0])
        except (ValueError, IndexError):
            return None


def format_exception():
    return traceback.format_exc()


def flush():
    for s in (sys.stdout, sys.stderr):
        try:
            s.flush()
        except Exception:
            pass

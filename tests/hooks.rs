//! Gunicorn's server hooks (issue 14), from a Gunicorn-style config file whose every hook
//! records that it ran, in which process, and its arguments' attributes, into a file the test
//! reads; hooks that raise keep Gunicorn's effect; a `when_ready` that starts a thread calling
//! `server.kill_worker` (Gunicorn's memory watchdog) works, and the master's signals still
//! reach it afterwards.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::client::{Addr, Conn, get};
use common::server::{Server, ServerBuilder, ferricorn, pid_alive, wait_until};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

const APP: &str = r#"import time
def app(environ, start_response):
    if environ["PATH_INFO"] == "/sleep":
        time.sleep(30)
    if environ["PATH_INFO"] == "/gen":
        return gen_app(environ, start_response)
    body = b"hello"
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-App", "yes"),
                              ("Content-Length", str(len(body)))])
    return [body]

def gen_app(environ, start_response):
    start_response("201 Created", [("Content-Type", "text/plain")])
    yield b"a"
    yield b"b"
"#;

/// Every hook of Gunicorn's settings documentation, recording what it saw.
const RECORDING: &str = r#"import json, os

bind = "unix:" + os.environ["HOOK_SOCK"]
workers = 2
wsgi_app = "hookapp:app"

def _record(hook, **what):
    what["hook"] = hook
    what["pid"] = os.getpid()
    with open(os.environ["HOOK_LOG"], "a") as f:
        f.write(json.dumps(what, default=str) + "\n")

def _server(s):
    return {"server_pid": s.pid, "num_workers": s.num_workers, "timeout": s.timeout,
            "cfg_workers": s.cfg.workers, "cfg_bind": s.cfg.bind,
            "worker_pids": sorted(s.WORKERS)}

def _worker(w):
    return {"worker_pid": w.pid, "ppid": w.ppid, "age": w.age, "alive": w.alive,
            "wcfg_workers": w.cfg.workers}

def on_starting(server):
    server.log.info("on_starting hook says hello")
    _record("on_starting", **_server(server))

def on_reload(server):
    _record("on_reload", **_server(server))

def when_ready(server):
    _record("when_ready", **_server(server))

def pre_fork(server, worker):
    _record("pre_fork", **_server(server), **_worker(worker))

def post_fork(server, worker):
    _record("post_fork", **_server(server), **_worker(worker))

def post_worker_init(worker):
    _record("post_worker_init", app_callable=callable(worker.wsgi), **_worker(worker))

def worker_int(worker):
    _record("worker_int", **_worker(worker))

def worker_abort(worker):
    _record("worker_abort", **_worker(worker))

def pre_exec(server):
    _record("pre_exec", **_server(server))

def pre_request(worker, req):
    _record("pre_request", method=req.method, path=req.path, query=req.query, uri=req.uri,
            headers=req.headers, **_worker(worker))

def post_request(worker, req, environ, resp):
    _record("post_request", path=req.path, environ_path=environ["PATH_INFO"],
            status=resp.status, resp_headers=resp.headers, **_worker(worker))

def child_exit(server, worker):
    _record("child_exit", **_server(server), **_worker(worker))

def worker_exit(server, worker):
    _record("worker_exit", **_worker(worker))

def nworkers_changed(server, new_value, old_value):
    _record("nworkers_changed", new=new_value, old=old_value)

def on_exit(server):
    _record("on_exit", **_server(server))
"#;

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(conf: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hookapp.py"), APP).unwrap();
        std::fs::write(dir.path().join("gunicorn.conf.py"), conf).unwrap();
        Setup { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn builder(&self) -> ServerBuilder {
        ferricorn()
            .cwd(self.dir.path())
            .env("HOOK_LOG", self.path("hooks.log").to_str().unwrap())
            .env("HOOK_SOCK", self.path("s.sock").to_str().unwrap())
            .env_remove("WEB_CONCURRENCY")
            .env_remove("VIRTUAL_ENV")
    }

    fn addr(&self) -> Addr {
        Addr::Unix(self.path("s.sock"))
    }

    fn records(&self) -> Vec<Value> {
        read_records(&self.path("hooks.log"))
    }

    fn of(&self, hook: &str) -> Vec<Value> {
        self.records()
            .into_iter()
            .filter(|r| r["hook"] == hook)
            .collect()
    }

    fn wait_for(&self, s: &Server, hook: &str, n: usize) -> Vec<Value> {
        assert!(
            wait_until(T, || self.of(hook).len() >= n),
            "want {n} {hook} records, have {:?}\n{}",
            self.records(),
            s.report()
        );
        self.of(hook)
    }
}

fn read_records(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn pid(v: &Value) -> i32 {
    v["pid"].as_i64().unwrap() as i32
}

fn ok(addr: &Addr, path: &str) -> String {
    let r = get(addr, path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

#[test]
fn every_hook_runs_where_gunicorn_runs_it_with_the_objects_hooks_use() {
    let st = Setup::new(RECORDING);
    let mut s = st.builder().spawn();
    s.wait_ready(T);
    let master = s.pid();
    s.wait_for_stderr("on_starting hook says hello", T);

    // At start: nworkers_changed(2, None), on_starting, when_ready, in the master, in that order.
    let names: Vec<String> = st
        .records()
        .iter()
        .map(|r| r["hook"].as_str().unwrap().to_string())
        .collect();
    let at = |h: &str| names.iter().position(|n| n == h).unwrap_or(usize::MAX);
    assert!(at("nworkers_changed") < at("on_starting"), "{names:?}");
    assert!(at("on_starting") < at("when_ready"), "{names:?}");
    assert!(at("when_ready") < at("pre_fork"), "{names:?}");
    let n = &st.of("nworkers_changed")[0];
    assert_eq!(
        (n["new"].as_i64(), n["old"].is_null()),
        (Some(2), true),
        "{n}"
    );
    for h in ["on_starting", "when_ready"] {
        let r = &st.of(h)[0];
        assert_eq!(pid(r), master, "{h} runs in the master: {r}");
        assert_eq!(r["server_pid"].as_i64(), Some(master as i64), "{r}");
        assert_eq!(r["cfg_workers"].as_i64(), Some(2), "{r}");
        assert_eq!(r["num_workers"].as_i64(), Some(2), "{r}");
        assert_eq!(r["timeout"].as_i64(), Some(30), "{r}");
        let bind = format!("unix:{}", st.path("s.sock").display());
        assert_eq!(r["cfg_bind"], serde_json::json!([bind]), "{r}");
    }

    // Each worker: pre_fork in the master (pid not known yet), post_fork and post_worker_init
    // in the worker.
    let pre = st.wait_for(&s, "pre_fork", 2);
    let post = st.wait_for(&s, "post_fork", 2);
    let init = st.wait_for(&s, "post_worker_init", 2);
    let workers: BTreeSet<i32> = s.children().into_iter().collect();
    for r in &pre {
        assert_eq!(pid(r), master, "{r}");
        assert_eq!(r["worker_pid"], "[booting]", "{r}");
    }
    for r in post.iter().chain(&init) {
        assert!(workers.contains(&pid(r)), "{r} is not one of {workers:?}");
        assert_eq!(r["worker_pid"].as_i64(), Some(pid(r) as i64), "{r}");
        assert_eq!(r["ppid"].as_i64(), Some(master as i64), "{r}");
        assert_eq!(r["wcfg_workers"].as_i64(), Some(2), "{r}");
    }
    let ages: BTreeSet<i64> = post.iter().map(|r| r["age"].as_i64().unwrap()).collect();
    assert_eq!(ages, BTreeSet::from([1, 2]), "{post:?}");
    assert!(init.iter().all(|r| r["app_callable"] == true), "{init:?}");

    // A request: pre_request and post_request with Gunicorn's req and resp.
    let mut c = Conn::connect(&st.addr()).unwrap();
    let r = c
        .request("GET", "/x?a=1", &[("X-Test", "yes")], None)
        .unwrap();
    assert_eq!(r.status, 200);
    let pre_req = &st.wait_for(&s, "pre_request", 1)[0];
    assert_eq!(pre_req["method"], "GET", "{pre_req}");
    assert_eq!(pre_req["path"], "/x", "{pre_req}");
    assert_eq!(pre_req["query"], "a=1", "{pre_req}");
    assert_eq!(pre_req["uri"], "/x?a=1", "{pre_req}");
    let headers = pre_req["headers"].as_array().unwrap();
    assert!(
        headers.contains(&serde_json::json!(["X-TEST", "yes"])),
        "{pre_req}"
    );
    assert!(workers.contains(&pid(pre_req)), "{pre_req}");
    let post_req = &st.wait_for(&s, "post_request", 1)[0];
    assert_eq!(post_req["status"], "200 OK", "{post_req}");
    assert_eq!(post_req["environ_path"], "/x", "{post_req}");
    assert!(
        post_req["resp_headers"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(["X-App", "yes"])),
        "{post_req}"
    );

    // TTIN: nworkers_changed(3, 2).
    s.signal(libc::SIGTTIN);
    assert!(
        wait_until(T, || st
            .of("nworkers_changed")
            .iter()
            .any(|r| r["new"] == 3 && r["old"] == 2)),
        "{:?}",
        st.records()
    );
    assert!(wait_until(T, || s.children().len() == 3), "{}", s.report());

    // A worker killed: child_exit in the master, with that worker; it has left WORKERS.
    let victim = *workers.iter().next().unwrap();
    unsafe { libc::kill(victim, libc::SIGKILL) };
    let exit = st.wait_for(&s, "child_exit", 1);
    let e = &exit[0];
    assert_eq!(pid(e), master, "{e}");
    assert_eq!(e["worker_pid"].as_i64(), Some(victim as i64), "{e}");
    assert_eq!(e["alive"], false, "{e}");
    assert!(
        !e["worker_pids"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(victim)),
        "{e}"
    );

    // QUIT to a worker: worker_int and worker_exit in it.
    assert!(wait_until(T, || s.children().len() == 3), "{}", s.report());
    let quitter = *s
        .children()
        .iter()
        .find(|p| **p != victim)
        .expect("a worker");
    unsafe { libc::kill(quitter, libc::SIGQUIT) };
    let int = st.wait_for(&s, "worker_int", 1);
    assert_eq!(pid(&int[0]), quitter, "{int:?}");
    assert!(
        wait_until(T, || st.of("worker_exit").iter().any(|r| pid(r) == quitter)),
        "{:?}",
        st.records()
    );

    // HUP: on_reload in the master.
    s.signal(libc::SIGHUP);
    s.wait_for_stderr("Reload complete", T);
    let rl = st.wait_for(&s, "on_reload", 1);
    assert_eq!(pid(&rl[0]), master);

    // TERM: each worker's worker_exit, then on_exit in the master.
    let before = st.of("worker_exit").len();
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(T), Some(0), "{}", s.report());
    let on_exit = st.of("on_exit");
    assert_eq!(on_exit.len(), 1, "{:?}", st.records());
    assert_eq!(pid(&on_exit[0]), master);
    assert!(st.of("worker_exit").len() > before, "{:?}", st.records());
}

#[test]
fn worker_abort_runs_on_the_timeout_and_post_request_sees_a_streamed_response() {
    let st = Setup::new(RECORDING);
    let s = st
        .builder()
        .args(["--timeout", "2", "-w", "1", "--threads", "2"])
        .spawn();
    s.wait_ready(T);
    let worker = s.children()[0];
    // A generator app's response: post_request once it is done.
    let r = get(&st.addr(), "/gen").unwrap();
    assert_eq!((r.status, r.text().as_str()), (201, "ab"));
    let done = &st.wait_for(&s, "post_request", 1)[0];
    assert_eq!(done["status"], "201 Created", "{done}");
    let mut c = Conn::connect(&st.addr()).unwrap();
    c.set_timeout(Duration::from_secs(20));
    c.send_raw(b"GET /sleep HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let abort = st.wait_for(&s, "worker_abort", 1);
    assert_eq!(pid(&abort[0]), worker, "{abort:?}");
    s.wait_for_stderr("WORKER TIMEOUT", T);
    // Replaced, and serving.
    assert!(
        wait_until(T, || s.children().iter().any(|p| *p != worker)),
        "{}",
        s.report()
    );
    assert!(wait_until(T, || get(&st.addr(), "/").is_ok_and(|r| r.status == 200)));
}

/// A hook file that records only `name`'s calls, where `name` raises.
fn raising(hook: &str, args: &str) -> String {
    format!(
        "import os\nbind = 'unix:' + os.environ['HOOK_SOCK']\nworkers = 1\n\
         wsgi_app = 'hookapp:app'\n\ndef {hook}({args}):\n    raise ValueError('{hook} is broken')\n"
    )
}

fn assert_traceback(s: &Server, hook: &str) {
    // The worker logs before it answers, but the harness reads its stderr on a thread of its
    // own, which can lag behind the reply on a loaded machine.
    s.wait_for_stderr(&format!("ValueError: {hook} is broken"), T);
    let err = s.stderr();
    assert!(
        err.contains(&format!("Exception in {hook} hook")),
        "{}",
        s.report()
    );
    assert!(
        err.contains("Traceback (most recent call last)"),
        "{}",
        s.report()
    );
    assert!(
        err.contains(&format!("ValueError: {hook} is broken")),
        "{}",
        s.report()
    );
}

#[test]
fn a_hook_that_raises_at_start_stops_the_start() {
    for (hook, args, code) in [
        ("on_starting", "server", 1),
        ("nworkers_changed", "server, new, old", 1),
        ("post_fork", "server, worker", 3),
        ("post_worker_init", "worker", 3),
    ] {
        let st = Setup::new(&raising(hook, args));
        let mut s = st.builder().spawn();
        assert_eq!(s.wait_exit(T), Some(code), "{hook}\n{}", s.report());
        assert_traceback(&s, hook);
        assert!(
            !st.path("s.sock").exists(),
            "{hook}: the socket is left behind"
        );
    }
}

/// The issue's rule (Gunicorn's own master would exit): a failing `when_ready` does not stop
/// the server.
#[test]
fn a_raising_when_ready_is_logged_and_the_server_serves() {
    let st = Setup::new(&raising("when_ready", "server"));
    let s = st.builder().spawn();
    s.wait_ready(T);
    assert_traceback(&s, "when_ready");
    assert_eq!(ok(&st.addr(), "/"), "hello");
}

#[test]
fn a_raising_request_hook_fails_that_request_or_is_only_logged() {
    let st = Setup::new(&raising("pre_request", "worker, req"));
    let s = st.builder().spawn();
    s.wait_ready(T);
    let r = get(&st.addr(), "/").unwrap();
    assert_eq!(r.status, 500, "{}", s.report());
    assert_traceback(&s, "pre_request");
    drop(s);
    let st = Setup::new(&raising("post_request", "worker, req, environ, resp"));
    let s = st.builder().spawn();
    s.wait_ready(T);
    assert_eq!(ok(&st.addr(), "/"), "hello");
    s.wait_for_stderr("Exception in post_request hook", T);
    assert_eq!(ok(&st.addr(), "/"), "hello");
}

#[test]
fn a_raising_on_reload_refuses_the_reload_and_a_raising_child_exit_stops_the_server() {
    let st = Setup::new(&raising("on_reload", "server"));
    let s = st.builder().spawn();
    s.wait_ready(T);
    let worker = s.children()[0];
    s.signal(libc::SIGHUP);
    s.wait_for_stderr("Reload failed: the on_reload hook raised", T);
    assert_traceback(&s, "on_reload");
    assert_eq!(s.children(), vec![worker]);
    assert_eq!(ok(&st.addr(), "/"), "hello");
    drop(s);

    let st = Setup::new(&raising("child_exit", "server, worker"));
    let mut s = st.builder().spawn();
    s.wait_ready(T);
    unsafe { libc::kill(s.children()[0], libc::SIGKILL) };
    assert_eq!(s.wait_exit(T), Some(1), "{}", s.report());
    assert_traceback(&s, "child_exit");

    let st = Setup::new(&raising("on_exit", "server"));
    let mut s = st.builder().spawn();
    s.wait_ready(T);
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(T), Some(1), "{}", s.report());
    assert_traceback(&s, "on_exit");
}

/// Gunicorn's examples/when_ready.conf.py: a watchdog thread started in `when_ready` that
/// kills workers with `server.kill_worker`. The worker is replaced, the server keeps serving,
/// and the master's signals keep arriving at its signalfd (the thread inherited the mask):
/// HUP reloads and TERM stops.
#[test]
fn a_when_ready_thread_kills_a_worker_and_the_master_still_hears_its_signals() {
    let conf = r#"import os, signal, threading, time, json
bind = "unix:" + os.environ["HOOK_SOCK"]
workers = 2
wsgi_app = "hookapp:app"

class Watch(threading.Thread):
    def __init__(self, server):
        super().__init__(daemon=True)
        self.server = server

    def run(self):
        while len(self.server.WORKERS) < 2:
            time.sleep(0.05)
        time.sleep(0.5)
        pid = sorted(self.server.WORKERS)[0]
        self.server.log.info("Watchdog killing %s", pid)
        self.server.kill_worker(pid, signal.SIGTERM)
        with open(os.environ["HOOK_LOG"], "a") as f:
            f.write(json.dumps({"hook": "killed", "pid": pid}) + "\n")
        while True:
            time.sleep(0.01)
            list(self.server.WORKERS.items())

def when_ready(server):
    Watch(server).start()
"#;
    let st = Setup::new(conf);
    let mut s = st.builder().spawn();
    s.wait_ready(T);
    let killed = pid(&st.wait_for(&s, "killed", 1)[0]);
    s.wait_for_stderr(&format!("Watchdog killing {killed}"), T);
    assert!(wait_until(T, || !pid_alive(killed)), "{}", s.report());
    assert!(
        wait_until(T, || {
            let c = s.children();
            c.len() == 2 && !c.contains(&killed)
        }),
        "{}",
        s.report()
    );
    for _ in 0..20 {
        assert_eq!(ok(&st.addr(), "/"), "hello");
    }
    // The thread runs on; the master forks and hears its signals.
    s.signal(libc::SIGHUP);
    s.wait_for_stderr("Reload complete", T);
    assert_eq!(ok(&st.addr(), "/"), "hello");
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(T), Some(0), "{}", s.report());
}

/// USR2: `pre_exec(server)` runs in the new master's process before the exec (the same pid as
/// the new master), and a raising one fails only that upgrade.
#[test]
fn pre_exec_runs_in_the_new_master_before_it_executes() {
    let st = Setup::new(RECORDING);
    let s = st.builder().spawn();
    s.wait_ready(T);
    s.signal(libc::SIGUSR2);
    let line = s.wait_for_stderr("Upgrading: started a new master", T);
    let rest = &line[line.find("(pid ").unwrap() + 5..];
    let new: i32 = rest[..rest.find(')').unwrap()].parse().unwrap();
    let r = &st.wait_for(&s, "pre_exec", 1)[0];
    assert_eq!(pid(r), new, "{r}");
    assert_eq!(r["server_pid"].as_i64(), Some(s.pid() as i64), "{r}");
    s.wait_for_stderr("Taking over from the previous master", T);
    assert_eq!(ok(&st.addr(), "/"), "hello");
    unsafe { libc::kill(new, libc::SIGTERM) };
    assert!(wait_until(T, || !pid_alive(new)));

    let st = Setup::new(&raising("pre_exec", "server"));
    let s = st.builder().spawn();
    s.wait_ready(T);
    s.signal(libc::SIGUSR2);
    s.wait_for_stderr("Upgrade failed: the new master", T);
    assert_traceback(&s, "pre_exec");
    assert_eq!(ok(&st.addr(), "/"), "hello");
}

//! The interpreter lives in the master (issue 13): it starts once there, workers fork through
//! CPython's fork protocol and set up `sys.path` and `os.environ` for their own generation, the
//! master never imports the app, a reload cannot move the interpreter to another virtualenv
//! (USR2 can), and `--version` names the Python ferricorn runs on. Every test runs the real
//! binary; the wheel's side of the same is `tests/wheel/` (run by `.ci/run`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::client::{Addr, get};
use common::server::{ServerBuilder, ferricorn, pid_alive, wait_until};

const T: Duration = Duration::from_secs(30);

/// Imported by `site` when the interpreter starts: records where that happened, and registers
/// an `os.register_at_fork` hook, which only CPython's fork protocol runs.
const SITECUSTOMIZE: &str = r#"import os
with open(os.environ["PROBE_LOG"], "a") as f:
    f.write("start %d\n" % os.getpid())
FORKED = []
os.register_at_fork(after_in_child=lambda: FORKED.append(os.getpid()))
"#;

const PROBE_APP: &str = r#"import json, os, sys
import sitecustomize
import probe_dep
with open(os.environ["PROBE_LOG"], "a") as f:
    f.write("import %d\n" % os.getpid())

def app(environ, start_response):
    body = json.dumps({
        "pid": os.getpid(),
        "forked": sitecustomize.FORKED,
        "dep": probe_dep.VALUE,
        "greeting": os.environ.get("GREETING"),
        "listen_fds": os.environ.get("LISTEN_FDS"),
        "prefix": sys.prefix,
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
"#;

struct Probe {
    dir: tempfile::TempDir,
}

impl Probe {
    fn new() -> Probe {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        for (sub, value) in [("dep-a", "A"), ("dep-b", "B")] {
            std::fs::create_dir(p.join(sub)).unwrap();
            std::fs::write(
                p.join(sub).join("probe_dep.py"),
                format!("VALUE = {value:?}\n"),
            )
            .unwrap();
        }
        std::fs::create_dir(p.join("site")).unwrap();
        std::fs::write(p.join("site/sitecustomize.py"), SITECUSTOMIZE).unwrap();
        std::fs::create_dir(p.join("app")).unwrap();
        std::fs::write(p.join("app/probe.py"), PROBE_APP).unwrap();
        Probe { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn sock(&self) -> Addr {
        Addr::Unix(self.path("s.sock"))
    }

    /// The config file the server reads again on HUP.
    fn write_config(&self, extra: &str) {
        let text = format!(
            "app = \"probe:app\"\nworkers = 2\nbind = [\"unix:{}\"]\nchdir = \"{}\"\n{extra}",
            self.path("s.sock").display(),
            self.path("app").display()
        );
        let tmp = self.path("conf.toml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, self.path("conf.toml")).unwrap();
    }

    fn server(&self) -> ServerBuilder {
        ferricorn()
            .args(["-c", self.path("conf.toml").to_str().unwrap()])
            .env("PYTHONPATH", self.path("site").to_str().unwrap())
            .env("PROBE_LOG", self.path("probe.log").to_str().unwrap())
            .env_remove("VIRTUAL_ENV")
    }

    /// (what, pid) lines of the probe log.
    fn log(&self) -> Vec<(String, i32)> {
        std::fs::read_to_string(self.path("probe.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let (what, pid) = l.split_once(' ').unwrap();
                (what.to_string(), pid.parse().unwrap())
            })
            .collect()
    }

    fn get(&self) -> serde_json::Value {
        let r = get(&self.sock(), "/").unwrap_or_else(|e| panic!("GET /: {e}"));
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }
}

#[test]
fn interpreter_starts_once_in_the_master_and_each_generation_sets_up_its_own_path_and_env() {
    let p = Probe::new();
    p.write_config(&format!(
        "pythonpath = [\"{}\"]\nenv = [\"GREETING=one\"]\n",
        p.path("dep-a").display()
    ));
    let s = p.server().spawn();
    s.wait_ready(T);
    let master = s.pid();
    let r = p.get();
    let worker = r["pid"].as_i64().unwrap() as i32;
    assert_ne!(worker, master);
    // The at-fork hook registered in the master ran in the worker: the fork protocol.
    assert_eq!(r["forked"], serde_json::json!([worker]), "{r}");
    assert_eq!(
        (r["dep"].as_str(), r["greeting"].as_str()),
        (Some("A"), Some("one"))
    );

    // A reload: new --pythonpath and -e for the new generation only.
    p.write_config(&format!(
        "pythonpath = [\"{}\"]\nenv = [\"GREETING=two\"]\n",
        p.path("dep-b").display()
    ));
    s.signal(libc::SIGHUP);
    s.wait_for_stderr("Reload complete", T);
    let r = p.get();
    assert_eq!(
        (r["dep"].as_str(), r["greeting"].as_str()),
        (Some("B"), Some("two")),
        "{r}\n{}",
        s.report()
    );

    let log = p.log();
    let starts: Vec<i32> = log
        .iter()
        .filter(|(w, _)| w == "start")
        .map(|l| l.1)
        .collect();
    assert_eq!(
        starts,
        [master],
        "the interpreter started once, in the master: {log:?}"
    );
    let imports: Vec<i32> = log
        .iter()
        .filter(|(w, _)| w == "import")
        .map(|l| l.1)
        .collect();
    assert_eq!(
        imports.len(),
        4,
        "two workers per generation imported the app: {log:?}"
    );
    assert!(
        !imports.contains(&master),
        "the master imported the app: {log:?}"
    );
}

#[test]
fn systemd_variables_never_reach_the_apps_environ() {
    // The interpreter starts in the master before it removes LISTEN_* (and NOTIFY_SOCKET):
    // the worker's os.environ must still not have them.
    let p = Probe::new();
    let sock = p.path("act.sock");
    p.write_config(&format!(
        "pythonpath = [\"{}\"]\n",
        p.path("dep-a").display()
    ));
    // systemd-socket-activate passes on only the variables named with -E.
    let s = common::server::program("systemd-socket-activate")
        .args(["-l", sock.to_str().unwrap()])
        .arg(format!("--setenv=PYTHONPATH={}", p.path("site").display()))
        .arg(format!(
            "--setenv=PROBE_LOG={}",
            p.path("probe.log").display()
        ))
        .arg(env!("CARGO_BIN_EXE_ferricorn"))
        .args(["-c", p.path("conf.toml").to_str().unwrap()])
        .spawn();
    s.wait_for_stderr("Listening on", T);
    let r = get(&Addr::Unix(sock), "/").unwrap_or_else(|e| panic!("{e}\n{}", s.report()));
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["listen_fds"],
        serde_json::Value::Null,
        "{}",
        r.text()
    );
}

fn make_venv(dir: &Path) {
    let python = std::env::var("PYO3_PYTHON")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "python3".into());
    let ok = Command::new(python)
        .args(["-m", "venv", "--without-pip"])
        .arg(dir)
        .status()
        .expect("python -m venv")
        .success();
    assert!(ok, "python -m venv {} failed", dir.display());
}

#[test]
fn hup_that_changes_the_virtualenv_is_refused_and_usr2_takes_it() {
    let p = Probe::new();
    let (v1, v2) = (p.path("venv1"), p.path("venv2"));
    make_venv(&v1);
    make_venv(&v2);
    let conf = |venv: &Path| {
        format!(
            "pythonpath = [\"{}\"]\nvirtualenv = \"{}\"\n",
            p.path("dep-a").display(),
            venv.display()
        )
    };
    p.write_config(&conf(&v1));
    let s = p.server().spawn();
    s.wait_ready(T);
    let before = p.get();
    assert_eq!(before["prefix"].as_str(), v1.to_str(), "{before}");

    p.write_config(&conf(&v2));
    s.signal(libc::SIGHUP);
    let line = s.wait_for_stderr("Reload failed", T);
    assert!(
        line.contains("--virtualenv") && line.contains("USR2"),
        "{line}\n{}",
        s.report()
    );
    // Still the first generation, still the first virtualenv.
    let after = p.get();
    assert_eq!(after["prefix"].as_str(), v1.to_str(), "{after}");
    let still = s.children();
    assert!(
        still.contains(&(before["pid"].as_i64().unwrap() as i32)),
        "{still:?}"
    );

    // USR2: a new master reads the new configuration and starts in the new virtualenv.
    s.signal(libc::SIGUSR2);
    s.wait_for_stderr("Taking over from the previous master", T);
    let old = s.pid();
    assert!(wait_until(T, || !pid_alive(old)), "{}", s.report());
    let upgraded = p.get();
    assert_eq!(
        upgraded["prefix"].as_str(),
        v2.to_str(),
        "{upgraded}\n{}",
        s.report()
    );
}

#[test]
fn version_names_the_python_it_runs_on() {
    let out = Command::new(env!("CARGO_BIN_EXE_ferricorn"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let python = std::env::var("PYO3_PYTHON")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "python3".into());
    let v = Command::new(python)
        .args(["-c", "import sys; print(' '.join(sys.version.split()))"])
        .output()
        .unwrap();
    let want = String::from_utf8_lossy(&v.stdout).trim().to_string();
    assert!(
        text.starts_with(&format!(
            "ferricorn {} (Python {want}, ",
            env!("CARGO_PKG_VERSION")
        )),
        "{text} (want Python {want})"
    );
    assert!(text.contains("libpython"), "{text}");
}

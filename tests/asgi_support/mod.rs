//! Helpers for the ASGI tests: the test virtualenv (real frameworks and clients from PyPI,
//! pinned in `tests/asgi/requirements.txt`, made once by `tests/asgi/venv.sh`), a server on
//! the apps in `tests/asgi/apps/`, and the Python clients (`tests/asgi/client.py`: httpx and
//! websockets).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use super::common::client::Addr;
use super::common::server::{Server, ferricorn};

pub const BOOT: Duration = Duration::from_secs(60);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn apps_dir() -> PathBuf {
    root().join("tests/asgi/apps")
}

/// The test virtualenv, made or reused (once per test binary; the script locks).
pub fn venv() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let out = Command::new("bash")
            .arg(root().join("tests/asgi/venv.sh"))
            .output()
            .expect("run tests/asgi/venv.sh");
        assert!(
            out.status.success(),
            "tests/asgi/venv.sh failed (it installs tests/asgi/requirements.txt from PyPI):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

/// Spawns `ferricorn --chdir tests/asgi/apps --virtualenv VENV [extra...] APP` with
/// `MARK_DIR` set to the server's temp dir; `{tmp}` in an argument is that dir. Binds
/// `127.0.0.1:0` unless `extra` has a `-b`.
pub fn spawn_env(app: &str, extra: &[&str], env: &[(&str, &str)]) -> Server {
    let mut b = ferricorn();
    for k in [
        "WEB_CONCURRENCY",
        "PORT",
        "FORWARDED_ALLOW_IPS",
        "VIRTUAL_ENV",
    ] {
        b = b.env_remove(k);
    }
    let tmp = b.tmp_path().display().to_string();
    b = b.env("MARK_DIR", &tmp);
    for (k, v) in env {
        b = b.env(k, v);
    }
    let mut args: Vec<String> = vec![
        "--chdir".into(),
        apps_dir().display().to_string(),
        "--virtualenv".into(),
        venv().display().to_string(),
    ];
    if !extra.iter().any(|a| *a == "-b" || *a == "--bind") {
        args.extend(["-b".into(), "127.0.0.1:0".into()]);
    }
    args.extend(extra.iter().map(|a| a.replace("{tmp}", &tmp)));
    args.push(app.to_string());
    b.args(args).spawn()
}

pub fn spawn(app: &str, extra: &[&str]) -> Server {
    spawn_env(app, extra, &[])
}

/// Spawns and waits until it serves; returns its address.
pub fn start(app: &str, extra: &[&str]) -> (Server, Addr) {
    let s = spawn(app, extra);
    s.wait_ready(BOOT);
    let a = s.addr();
    (s, a)
}

/// The `url`/`uds` part of a client plan for `path` on `addr` (`ws`: a WebSocket URL).
pub fn target(addr: &Addr, path: &str, ws: bool) -> serde_json::Value {
    let scheme = if ws { "ws" } else { "http" };
    match addr {
        Addr::Tcp(a) => serde_json::json!({ "url": format!("{scheme}://{a}{path}") }),
        Addr::Unix(p) => serde_json::json!({
            "url": format!("{scheme}://localhost{path}"),
            "uds": p.display().to_string(),
        }),
    }
}

/// Runs the Python client with `plan` (merged over `target`); its JSON answer.
pub fn client(
    server: &Server,
    addr: &Addr,
    path: &str,
    plan: serde_json::Value,
) -> serde_json::Value {
    let ws = plan.get("ws").and_then(|v| v.as_bool()).unwrap_or(false);
    let mut full = target(addr, path, ws);
    for (k, v) in plan.as_object().expect("a plan is an object") {
        full[k] = v.clone();
    }
    let out = Command::new(venv().join("bin/python"))
        .arg(root().join("tests/asgi/client.py"))
        .arg(full.to_string())
        .output()
        .expect("run the Python client");
    assert!(
        out.status.success(),
        "client failed for {full}:\n{}\n--- server ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.report()
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "client output is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Waits for `name` in the server's temp dir (written by the apps' `mark`); its content.
pub fn wait_mark(server: &Server, name: &str, timeout: Duration) -> Option<String> {
    let p = server.tmp_path().join(name);
    let until = std::time::Instant::now() + timeout;
    loop {
        if let Ok(s) = std::fs::read_to_string(&p) {
            return Some(s);
        }
        if std::time::Instant::now() > until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

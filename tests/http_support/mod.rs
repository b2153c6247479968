//! Helpers shared by the hardening tests (`tests/http_*.rs`, `tests/fuzz.rs`): a server on the
//! hardening fixture app, raw exchanges, the worker's RSS and log lines.

#![allow(dead_code)]

use std::io::ErrorKind;
use std::path::PathBuf;
use std::time::Duration;

use super::common::{client::*, server::*};

pub const BOOT: Duration = Duration::from_secs(30);
pub const LOG_WAIT: Duration = Duration::from_secs(10);

/// `tests/fixtures/apps`
pub fn apps_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/apps")
}

/// The binary under test: this build's, or `HARDENING_TEST_BIN` (to check that a regression
/// test fails on an older build: `HARDENING_TEST_BIN=/path/to/old/ferricorn cargo test --test
/// http_strict`).
pub fn binary() -> ServerBuilder {
    match std::env::var_os("HARDENING_TEST_BIN") {
        Some(p) if !p.is_empty() => program(p),
        _ => ferricorn(),
    }
}

/// Spawns ferricorn on `hardening:app` (or `app`) with `extra` flags, on `127.0.0.1:0`
/// unless `extra` binds elsewhere, and waits until it serves.
pub fn start_app(app: &str, extra: &[&str]) -> (Server, Addr) {
    let b = binary().cwd(apps_dir());
    let tmp = b.tmp_path().display().to_string();
    let mut args: Vec<String> = vec!["--chdir".into(), apps_dir().display().to_string()];
    if !extra.iter().any(|a| *a == "-b" || *a == "--bind") {
        args.extend(["-b".into(), "127.0.0.1:0".into()]);
    }
    args.extend(extra.iter().map(|a| a.replace("{tmp}", &tmp)));
    args.push(app.to_string());
    let server = b.args(args).spawn();
    server.wait_ready(BOOT);
    let addr = server.addr();
    (server, addr)
}

pub fn start(extra: &[&str]) -> (Server, Addr) {
    start_app("hardening:app", extra)
}

pub fn connect(server: &Server, addr: &Addr, timeout: Duration) -> Conn {
    let mut c = Conn::connect(addr)
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}\n{}", server.report()));
    c.set_timeout(timeout);
    c
}

/// Sends `raw` on a new connection and reads until the server closes (at most `wait`).
/// Returns everything received.
pub fn exchange(server: &Server, addr: &Addr, raw: &[u8], wait: Duration) -> Vec<u8> {
    let mut c = connect(server, addr, wait);
    if let Err(e) = c.send_raw(raw) {
        assert!(
            matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset),
            "sending: {e}"
        );
    }
    match c.read_until_close() {
        Ok(d) => d,
        Err(e) if e.kind() == ErrorKind::ConnectionReset => c.buffered().to_vec(),
        Err(e) => panic!(
            "the server neither answered nor closed within {wait:?} ({e}); got {:?}\n{}",
            String::from_utf8_lossy(c.buffered()),
            server.report()
        ),
    }
}

/// The status code of the first response in `data`, if any.
pub fn status_of(data: &[u8]) -> Option<u16> {
    let t = String::from_utf8_lossy(data);
    t.strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|s| s.parse().ok())
}

/// A plain GET on a new connection answers 200.
pub fn assert_serves(server: &Server, addr: &Addr) {
    let r = request(addr, "GET", "/", &[], None)
        .unwrap_or_else(|e| panic!("GET / failed: {e}\n{}", server.report()));
    assert_eq!(r.status, 200, "GET /: {r:?}\n{}", server.report());
}

/// The pid of the (only) worker.
pub fn worker_pid(server: &Server, addr: &Addr) -> i32 {
    let r = request(addr, "GET", "/pid", &[], None)
        .unwrap_or_else(|e| panic!("GET /pid: {e}\n{}", server.report()));
    r.text().trim().parse().expect("a pid")
}

/// VmRSS of `pid` in KiB, from /proc.
pub fn rss_kib(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Lines of `text` containing `needle`.
pub fn lines_with<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.contains(needle)).collect()
}

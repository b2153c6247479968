//! A server on one of the example apps (`examples/spec.py`, `examples/hello.py`), and the
//! one-request helpers the WSGI, HTTP and access-log tests share: every connection has a
//! timeout, and a failure panics with the server's output.
//!
//! Every server binds `127.0.0.1:0` or a unix socket inside its own temp dir and reads the
//! address back from the log, so the tests run in parallel.

use std::time::Duration;

use serde_json::Value;

use super::{client::*, server::*};

pub const BOOT: Duration = Duration::from_secs(30);

/// Read/write timeout of every connection the tests open.
pub const IO: Duration = Duration::from_secs(10);

/// How long to wait for a log line that should appear.
pub const LOG_WAIT: Duration = Duration::from_secs(10);

pub const HELLO: &[u8] = b"Hello, World!";

/// Spawns `ferricorn --chdir examples [extra...] APP` (not waiting for it) with
/// a hermetic environment. `{tmp}` in an argument is replaced by the server's
/// temp dir. Without a `-b` in `extra` it binds `127.0.0.1:0`.
pub fn spawn(app: &str, extra: &[&str]) -> Server {
    spawn_with(ferricorn(), app, extra)
}

/// [`spawn`] from a builder the test prepared (an environment variable, say).
pub fn spawn_with(b: ServerBuilder, app: &str, extra: &[&str]) -> Server {
    let b = b.cwd(examples_dir());
    let tmp = b.tmp_path().display().to_string();
    let mut args: Vec<String> = vec!["--chdir".into(), examples_dir().display().to_string()];
    if !extra.iter().any(|a| *a == "-b" || *a == "--bind") {
        args.extend(["-b".into(), "127.0.0.1:0".into()]);
    }
    args.extend(extra.iter().map(|a| a.replace("{tmp}", &tmp)));
    args.push(app.to_string());
    b.args(args).spawn()
}

/// Waits until `server` is ready; returns its (first) address.
pub fn ready(server: &Server) -> Addr {
    server.wait_ready(BOOT);
    server.addr()
}

/// Spawns a TCP server and waits until it is ready.
pub fn start(app: &str, extra: &[&str]) -> (Server, Addr) {
    let server = spawn(app, extra);
    let addr = ready(&server);
    assert!(
        matches!(addr, Addr::Tcp(_)),
        "expected a TCP listener, got {addr}"
    );
    (server, addr)
}

/// Spawns a server on `unix:<tmp>/s.sock` and waits until it is ready.
pub fn start_unix(app: &str, extra: &[&str]) -> (Server, Addr) {
    let mut args = vec!["-b", "unix:{tmp}/s.sock"];
    args.extend_from_slice(extra);
    let server = spawn(app, &args);
    let addr = ready(&server);
    assert!(
        matches!(&addr, Addr::Unix(p) if p.starts_with(server.tmp_path())),
        "expected the unix socket in the temp dir, got {addr}"
    );
    (server, addr)
}

/// A new connection with the tests' timeout.
pub fn connect(server: &Server, addr: &Addr) -> Conn {
    let mut c = Conn::connect(addr)
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}\n{}", server.report()));
    c.set_timeout(IO);
    c
}

/// One request on a new connection with `Connection: close` (unless given);
/// panics with the server's output if it fails.
pub fn fetch(
    server: &Server,
    addr: &Addr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Response {
    let mut h = headers.to_vec();
    if !h.iter().any(|(k, _)| k.eq_ignore_ascii_case("connection")) {
        h.push(("Connection", "close"));
    }
    connect(server, addr)
        .request(method, target, &h, body)
        .unwrap_or_else(|e| panic!("{method} {target} failed: {e}\n{}", server.report()))
}

/// GET on a new connection.
pub fn get_ok(server: &Server, addr: &Addr, target: &str) -> Response {
    fetch(server, addr, "GET", target, &[], None)
}

/// A new connection GET / answers 200 with `body`.
pub fn assert_serves(server: &Server, addr: &Addr, body: &[u8]) {
    let r = get_ok(server, addr, "/");
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, body),
        "GET / after the previous request: {r:?}\n{}",
        server.report()
    );
}

/// GET /environ (or `target`) and parse the JSON.
pub fn environ(
    server: &Server,
    addr: &Addr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Value {
    let r = fetch(server, addr, method, target, headers, body);
    assert_eq!(
        r.status,
        200,
        "{method} {target}: {r:?}\n{}",
        server.report()
    );
    r.json()
}

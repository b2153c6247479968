//! Servers whose worker processes a test watches: start one on an example app, wait until the
//! master has a given number of workers, ask which worker answered (`/pid`), and send a request
//! from another thread while the test signals the master.

use std::io;
use std::thread;
use std::time::{Duration, Instant};

use super::{client::*, server::*};

pub const BOOT: Duration = Duration::from_secs(30);

/// A builder for `ferricorn [extra...] APP` in examples/, with a hermetic environment.
pub fn builder(app: &str, extra: &[&str]) -> ServerBuilder {
    ferricorn()
        .args(extra.iter().copied())
        .arg(app)
        .cwd(examples_dir())
}

/// Starts `ferricorn -b 127.0.0.1:0 [extra...] APP` and waits until it is ready.
pub fn start(app: &str, extra: &[&str]) -> (Server, Addr) {
    let mut args = vec!["-b", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let server = builder(app, &args).spawn();
    server.wait_ready(BOOT);
    let addr = server.addr();
    (server, addr)
}

/// GET /pid on a fresh connection; the worker's pid, or an error (also for a non-200).
pub fn get_pid(addr: &Addr) -> io::Result<i32> {
    let r = get(addr, "/pid")?;
    if r.status != 200 {
        return Err(io::Error::other(format!(
            "status {} for /pid: {:?}",
            r.status,
            r.text()
        )));
    }
    r.text()
        .trim()
        .parse()
        .map_err(|e| io::Error::other(format!("bad /pid body {:?}: {e}", r.text())))
}

/// Waits until the master has exactly `n` children; returns them.
pub fn wait_children(server: &Server, n: usize, timeout: Duration) -> Vec<i32> {
    let mut kids = Vec::new();
    let ok = wait_until(timeout, || {
        kids = server.children();
        kids.len() == n
    });
    assert!(
        ok,
        "expected {n} workers within {timeout:?}, have {kids:?}\n{}",
        server.report()
    );
    kids
}

/// Sends `GET target` on a new connection from another thread; returns the
/// join handle (the result carries the time the response took).
pub fn request_in_background(
    addr: &Addr,
    target: &str,
    timeout: Duration,
) -> thread::JoinHandle<(io::Result<Response>, Duration)> {
    let addr = addr.clone();
    let target = target.to_string();
    thread::spawn(move || {
        let t0 = Instant::now();
        let r = (|| {
            let mut c = Conn::connect(&addr)?;
            c.set_timeout(timeout);
            c.request("GET", &target, &[("Connection", "close")], None)
        })();
        (r, t0.elapsed())
    })
}

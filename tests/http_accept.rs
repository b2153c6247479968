//! The accept loop under descriptor exhaustion (issue 11, item 19's log flood): a worker that
//! cannot accept (EMFILE) keeps retrying but logs the failure at most once per 10 s with a count,
//! instead of an ERROR line every 100 ms; once descriptors are free again it serves.

mod common;
mod http_support;

use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use common::{client::*, server::*};
use http_support::*;

#[test]
fn accept_errors_under_fd_exhaustion_are_rate_limited() {
    let bin = std::env::var("HARDENING_TEST_BIN")
        .ok()
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_ferricorn").to_string());
    let server = program("prlimit")
        .cwd(apps_dir())
        .env_remove("WEB_CONCURRENCY")
        .env_remove("PORT")
        .args([
            "--nofile=64:64",
            bin.as_str(),
            "--chdir",
            &apps_dir().display().to_string(),
            "-b",
            "127.0.0.1:0",
            "hardening:app",
        ])
        .spawn();
    server.wait_ready(BOOT);
    let addr = server.addr();
    let Addr::Tcp(sa) = addr.clone() else {
        panic!("expected TCP")
    };
    // Hold more connections than the worker has descriptors for, for 2.5 s.
    let held: Vec<TcpStream> = (0..100)
        .filter_map(|_| TcpStream::connect(sa).ok())
        .collect();
    assert!(held.len() > 64, "only {} connections", held.len());
    thread::sleep(Duration::from_millis(2500));
    let lines = server.count_stderr("accept() on fd");
    assert!(
        lines >= 1,
        "the failure was not logged at all\n{}",
        server.report()
    );
    assert!(
        lines <= 2,
        "{lines} accept() error lines in 2.5 s: the log is flooded\n{}",
        server.report()
    );
    drop(held);
    // Descriptors are free again: the worker serves.
    let ok = wait_until(Duration::from_secs(10), || {
        request(&addr, "GET", "/probe/after", &[], None).is_ok_and(|r| r.status == 200)
    });
    assert!(
        ok,
        "not serving after the descriptors came back\n{}",
        server.report()
    );
}

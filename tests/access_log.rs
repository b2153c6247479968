//! The access log (issue 2: `--access-logfile`, `--access-log-format` with Gunicorn's atoms and
//! its default format): Gunicorn's default line on stdout, a custom format with request and
//! response headers, a file instead of stdout, and nothing at all when disabled.
//!
//! USR1 reopening the log file is in `signals.rs`; JSON access logs in `json_logs.rs`.

mod common;

use std::path::Path;
use std::thread;
use std::time::Duration;

use common::{examples::*, server::*};

/// The lines of `text` containing `needle`.
fn lines_with<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.contains(needle)).collect()
}

#[test]
fn access_log_default_format() {
    let (server, addr) = start("hello:app", &[]);
    let r = fetch(
        &server,
        &addr,
        "GET",
        "/",
        &[("User-Agent", "wsgi-http-test")],
        None,
    );
    assert_eq!(r.status, 200);
    let line = server.wait_for_stdout("\"GET / HTTP/1.1\" 200 13", LOG_WAIT);
    assert!(
        line.starts_with("127.0.0.1 - - [") && line.ends_with("\"-\" \"wsgi-http-test\""),
        "access log line: {line:?}"
    );
}

#[test]
fn access_log_custom_format() {
    let (server, addr) = start(
        "hello:app",
        &[
            "--access-log-format",
            "%(m)s %(U)s %(s)s %({x-test}i)s %({content-type}o)s",
        ],
    );
    let r = fetch(&server, &addr, "GET", "/", &[("X-Test", "val")], None);
    assert_eq!(r.status, 200);
    let line = server.wait_for_stdout("GET / 200", LOG_WAIT);
    assert_eq!(line.trim_end(), "GET / 200 val text/plain");
}

#[test]
fn access_log_to_file() {
    let server = spawn("hello:app", &["--access-logfile", "{tmp}/access.log"]);
    let addr = ready(&server);
    let path = server.tmp_path().join("access.log");
    assert_serves(&server, &addr, HELLO);
    let needle = "\"GET / HTTP/1.1\" 200 13";
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let ok = wait_until(LOG_WAIT, || read(&path).contains(needle));
    assert!(
        ok,
        "{needle:?} not in {}: {:?}\n{}",
        path.display(),
        read(&path),
        server.report()
    );
    assert!(
        lines_with(&server.stdout(), needle).is_empty(),
        "access log also on stdout\n{}",
        server.report()
    );
}

#[test]
fn access_log_disabled() {
    let quiet = spawn("hello:app", &["--access-logfile", ""]);
    let loud = spawn("hello:app", &[]);
    let (qaddr, laddr) = (ready(&quiet), ready(&loud));
    assert_serves(&quiet, &qaddr, HELLO);
    assert_serves(&loud, &laddr, HELLO);
    // By the time the control server has logged its request, the quiet
    // one would have logged too.
    loud.wait_for_stdout("\"GET / HTTP/1.1\" 200 13", LOG_WAIT);
    thread::sleep(Duration::from_millis(500));
    let all = format!("{}{}", quiet.stdout(), quiet.stderr());
    assert!(
        lines_with(&all, "GET /").is_empty(),
        "access log written although disabled\n{}",
        quiet.report()
    );
}

//! A connection has one timer, moved from deadline to deadline (the next keep-alive wait, a
//! head's `--header-timeout`, a body's `--body-timeout`): each deadline still holds after the
//! timer was moved later, moved earlier, or has fired for an older deadline.

mod common;
mod http_support;

use std::thread;
use std::time::{Duration, Instant};

use http_support::*;

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn keep_alive_counts_from_the_last_response() {
    let (server, addr) = start(&["--keep-alive", "1"]);
    let mut c = connect(&server, &addr, WAIT);
    // Five requests 0.6 s apart: 3 s in all, each within a second of the one before.
    for i in 0..5 {
        let r = c
            .request("GET", &format!("/probe/{i}"), &[], None)
            .unwrap_or_else(|e| panic!("request {i}: {e}\n{}", server.report()));
        assert_eq!(r.status, 200);
        thread::sleep(Duration::from_millis(600));
    }
    // Then idle: closed about a second after the last response (0.6 s of it already waited).
    let t0 = Instant::now();
    assert!(c.peer_closed(Duration::from_secs(3)), "never closed");
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "closed after {:?}",
        t0.elapsed()
    );
}

#[test]
fn keep_alive_after_a_body_and_a_slow_head() {
    let (server, addr) = start(&["--keep-alive", "1", "--header-timeout", "3"]);
    let mut c = connect(&server, &addr, WAIT);
    // A body (its deadline is --body-timeout, 20 s) then idle: the keep-alive second again.
    let r = c.request("POST", "/echo", &[], Some(b"hello")).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
    let t0 = Instant::now();
    assert!(c.peer_closed(Duration::from_secs(5)), "never closed");
    let idle = t0.elapsed();
    assert!(idle < Duration::from_millis(2500), "closed after {idle:?}");
    // A head sent in two parts 1.5 s apart: --header-timeout (3 s) applies, not --keep-alive.
    let mut c = connect(&server, &addr, WAIT);
    c.send_raw(b"GET /probe/a HTTP/1.1\r\n").unwrap();
    thread::sleep(Duration::from_millis(1500));
    c.send_raw(b"Host: x\r\n\r\n").unwrap();
    let r = c.read_response("GET").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "/probe/a"));
    // And then the keep-alive second once more.
    let t0 = Instant::now();
    assert!(c.peer_closed(Duration::from_secs(5)), "never closed");
    assert!(
        t0.elapsed() < Duration::from_millis(2500),
        "closed after {:?}",
        t0.elapsed()
    );
}

//! The WSGI contract's odd corners (review findings 3, 4, 6, 10 and 11): `file_wrapper` on an
//! object without a real descriptor, a `wsgi.input` the app keeps after its request, `write()`
//! (sends as it goes; nothing written after the last yield is lost), and `100 Continue` for an
//! app that starts its reply before it reads the body.

mod common;
mod http_support;

use std::time::{Duration, Instant};

use common::client::is_timeout;
use http_support::*;

const WAIT: Duration = Duration::from_secs(15);

fn get(
    server: &common::server::Server,
    addr: &common::client::Addr,
    target: &str,
) -> (u16, String) {
    let mut c = connect(server, addr, WAIT);
    let r = c
        .request("GET", target, &[], None)
        .unwrap_or_else(|e| panic!("GET {target}: {e}\n{}", server.report()));
    (r.status, r.text())
}

/// Finding 3: `fileno()` returning -1 (or a number that is not open) made the server panic on
/// the Python thread, which died: every later generator or file reply on that worker was a 500.
/// Now such an object is read with `read()`, and the thread goes on.
#[test]
fn file_wrapper_without_a_real_descriptor_is_read_and_the_thread_survives() {
    let (server, addr) = start_app("review:app", &["--threads", "1"]);
    for fd in ["-1", "-5", "99999"] {
        let (status, body) = get(&server, &addr, &format!("/fw-fd?fd={fd}"));
        assert_eq!(
            (status, body.as_str()),
            (200, "fallback body from read()\n"),
            "fileno() = {fd}\n{}",
            server.report()
        );
        assert_eq!(
            get(&server, &addr, "/stream"),
            (200, "0;1;2;".to_string()),
            "a generator reply after fileno() = {fd}\n{}",
            server.report()
        );
    }
    assert_eq!(server.count_stderr("panicked"), 0, "{}", server.report());
}

/// Finding 4: an app that keeps its `wsgi.input` objects (a debug toolbar, a request log) used
/// to keep their bytes counted against the worker's 32 MiB body budget; once it was spent, every
/// upload hung for ever. A request's input is now closed (its memory released) when the request
/// ends, whoever keeps the object.
#[test]
fn kept_inputs_do_not_drain_the_body_budget() {
    let (server, addr) = start_app("review:app", &["--threads", "2"]);
    let body = vec![b'k'; 2 << 20];
    // Each holds the ~1 MiB read before the app was called: 40 of them are past the budget.
    for i in 0..40 {
        let mut c = connect(&server, &addr, Duration::from_secs(10));
        let r = c
            .request(
                "POST",
                "/keep-input",
                &[("Connection", "close")],
                Some(&body),
            )
            .unwrap_or_else(|e| panic!("upload #{}: {e}\n{}", i + 1, server.report()));
        assert_eq!(r.status, 200, "upload #{}: {r:?}", i + 1);
    }
    let small = vec![b'e'; 200_000];
    let mut c = connect(&server, &addr, Duration::from_secs(10));
    let r = c
        .request("POST", "/echo-len", &[], Some(&small))
        .unwrap_or_else(|e| panic!("a later upload: {e}\n{}", server.report()));
    assert_eq!((r.status, r.text().as_str()), (200, "200000"));
}

/// Finding 4: while the worker's body budget is spent (uploads held by requests that wait for a
/// Python thread), a further upload used to wait for budget with no limit; it now waits at most
/// `--body-timeout` and is answered 503.
#[test]
fn an_upload_waiting_for_the_body_budget_gets_503_after_the_body_timeout() {
    let (server, addr) = start_app("review:app", &["--threads", "2", "--body-timeout", "2"]);
    let body = vec![b'w'; 1 << 20];
    let started = Instant::now();
    let clients: Vec<_> = (0..40)
        .map(|_| {
            let addr = addr.clone();
            let body = body.clone();
            std::thread::spawn(move || {
                let mut c = common::client::Conn::connect(&addr).unwrap();
                c.set_timeout(Duration::from_secs(8));
                let r = c.request(
                    "POST",
                    "/sleep?s=30",
                    &[("Connection", "close")],
                    Some(&body),
                );
                (r.map(|r| r.status).ok(), started.elapsed())
            })
        })
        .collect();
    let results: Vec<_> = clients.into_iter().map(|t| t.join().unwrap()).collect();
    let refused: Vec<_> = results.iter().filter(|(s, _)| *s == Some(503)).collect();
    assert!(
        !refused.is_empty(),
        "no upload was refused while the budget was spent: {results:?}\n{}",
        server.report()
    );
    for (_, t) in &refused {
        assert!(*t < Duration::from_secs(7), "a 503 after {t:?}");
    }
}

/// Finding 11 (with 4): reading a `wsgi.input` kept from an earlier request raised a Rust panic
/// (`PanicException`, a BaseException) on the event-loop thread; it is now a closed file
/// (`ValueError`), on either kind of thread.
#[test]
fn a_stale_input_reads_as_a_closed_file() {
    for threads in ["1", "2"] {
        let (server, addr) = start_app("review:app", &["--threads", threads]);
        // 2 MiB: more than is read before the app is called, so the body streams.
        for size in [10usize, 2 << 20] {
            let body = vec![b's'; size];
            let mut c = connect(&server, &addr, WAIT);
            let r = c
                .request(
                    "POST",
                    "/keep-input",
                    &[("Connection", "close")],
                    Some(&body),
                )
                .unwrap();
            assert_eq!(r.status, 200);
            let (status, text) = get(&server, &addr, "/read-kept");
            assert_eq!(status, 200);
            assert!(
                text.starts_with("ValueError: I/O operation on closed file"),
                "threads {threads}, body {size}: {text:?}\n{}",
                server.report()
            );
        }
    }
}

/// Finding 6: what `write()` gives after the generator's last yield used to be dropped.
#[test]
fn write_after_the_last_yield_is_sent() {
    for threads in ["1", "2"] {
        let (server, addr) = start_app("review:app", &["--threads", threads]);
        for _ in 0..2 {
            assert_eq!(
                get(&server, &addr, "/write-after-last-yield"),
                (200, "first;written-after-last-yield;".to_string()),
                "threads {threads}\n{}",
                server.report()
            );
        }
    }
}

/// Finding 6: `write()` sends (PEP 3333: it returns once the data is handed on), so what is
/// written arrives before the app returns; it used to be kept (all of it, in memory) until then.
#[test]
fn write_sends_before_the_app_returns() {
    let (server, addr) = start_app("review:app", &["--threads", "2"]);
    let mut c = connect(&server, &addr, Duration::from_millis(1500));
    c.send_raw(b"GET /write-then-sleep?s=4 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let t0 = Instant::now();
    match c.read_until_close() {
        Err(e) if is_timeout(&e) => {}
        other => panic!("{other:?}"),
    }
    let early = String::from_utf8_lossy(c.buffered()).into_owned();
    assert!(t0.elapsed() < Duration::from_secs(3));
    assert!(
        early.starts_with("HTTP/1.1 200 ") && early.contains("early;") && !early.contains("late;"),
        "within 1.5 s of a write(), before the app returned: {early:?}\n{}",
        server.report()
    );
    // The rest follows when the app returns, on the same (chunked) reply.
    c.set_timeout(WAIT);
    let r = c.read_response("GET").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "early;late;"));
}

/// Finding 10: an app that starts its reply before it reads the body (a generator that yields
/// first) never got the client's body: `100 Continue` was not sent, and the client waits for it.
#[test]
fn continue_is_sent_when_the_app_replies_before_reading() {
    for threads in ["1", "2"] {
        let (server, addr) = start_app("review:app", &["--threads", threads]);
        let mut c = connect(&server, &addr, Duration::from_secs(3));
        c.send_raw(
            b"POST /yield-then-read HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\
              Content-Length: 5\r\n\r\n",
        )
        .unwrap();
        // The interim response must come first: a client sends the body only after it.
        let mut first = Vec::new();
        let t0 = Instant::now();
        while !first.windows(4).any(|w| w == b"\r\n\r\n") && t0.elapsed() < Duration::from_secs(3) {
            match c.read_until_close() {
                Err(e) if is_timeout(&e) => {}
                other => panic!("{other:?}"),
            }
            first = c.buffered().to_vec();
        }
        assert!(
            first.starts_with(b"HTTP/1.1 100 Continue\r\n\r\n"),
            "threads {threads}: the first bytes were {:?}\n{}",
            String::from_utf8_lossy(&first),
            server.report()
        );
        c.send_raw(b"hello").unwrap();
        c.set_timeout(WAIT);
        let r = c.read_response("POST").unwrap();
        assert_eq!(r.interim, vec![100]);
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "started;read 5;"),
            "threads {threads}"
        );
    }
}

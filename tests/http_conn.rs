//! The connection state machine: pipelined requests answered in order (with bodies, chunked,
//! and with a slow first request on a pool thread), HTTP/1.0 keep-alive and close-delimited
//! streaming, `--keep-alive 0`.

mod common;
mod http_support;

use std::time::Duration;

use http_support::*;

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn pipelined_requests_are_answered_in_order() {
    for threads in ["1", "4"] {
        let (server, addr) = start(&["--threads", threads, "--keep-alive", "10"]);
        let mut c = connect(&server, &addr, WAIT);
        let mut wire = Vec::new();
        wire.extend_from_slice(b"GET /sleep?s=0.3 HTTP/1.1\r\nHost: x\r\n\r\n");
        wire.extend_from_slice(b"GET /probe/2 HTTP/1.1\r\nHost: x\r\n\r\n");
        wire.extend_from_slice(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nthree");
        wire.extend_from_slice(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nfour\r\n0\r\n\r\n",
        );
        wire.extend_from_slice(b"\r\nGET /probe/5 HTTP/1.1\r\nHost: x\r\n\r\n");
        c.send_raw(&wire).unwrap();
        let want = ["slept", "/probe/2", "three", "four", "/probe/5"];
        for w in want {
            let r = c
                .read_response("GET")
                .unwrap_or_else(|e| panic!("threads {threads}, waiting for {w}: {e}"));
            assert_eq!((r.status, r.text().as_str()), (200, w), "threads {threads}");
        }
        assert!(c.buffered().is_empty());
    }
}

#[test]
fn http10_keep_alive_and_close_delimited_streaming() {
    let (server, addr) = start(&["--keep-alive", "10"]);
    let mut c = connect(&server, &addr, WAIT);
    c.send_raw(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let r = c.read_response("GET").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("keep-alive"), "{r:?}");
    // A streamed body without a length on HTTP/1.0: delimited by the close.
    c.send_raw(b"GET /stream?n=3&size=4 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let data = c.read_until_close().unwrap();
    let t = String::from_utf8_lossy(&data);
    assert!(
        t.starts_with("HTTP/1.") && t[8..].starts_with(" 200 "),
        "{t:?}"
    );
    assert!(
        !t.to_ascii_lowercase().contains("transfer-encoding"),
        "{t:?}"
    );
    assert!(t.ends_with("\r\n\r\n0:..1:..2:.."), "{t:?}");
}

#[test]
fn keep_alive_zero_closes_after_each_response() {
    let (server, addr) = start(&["--keep-alive", "0"]);
    let mut c = connect(&server, &addr, WAIT);
    let r = c.request("GET", "/probe/x", &[], None).unwrap();
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    assert!(c.peer_closed(Duration::from_secs(2)));
}

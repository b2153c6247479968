//! Response framing that cannot desynchronise a connection (issue 11, items 6–8): the app's
//! `Content-Length` is checked against what it yields, conflicting values are a 500, identical
//! duplicates are one header, hop-by-hop headers from the app are dropped, and its
//! `Connection: close` is honoured; HEAD, 204 and 304 answers carry no body (with the app's
//! reason phrase). Every case runs on a kept-alive connection, then checks that the next request
//! on it (when it stays open) gets its own response.

mod common;
mod http_support;

use std::time::Duration;

use common::client::*;
use common::examples;
use http_support::*;

const WAIT: Duration = Duration::from_secs(5);

/// Sends `GET target` on a kept-alive connection and returns everything received until the
/// server closes it or `quiet` passes without a byte.
fn raw_get(c: &mut Conn, target: &str) -> Vec<u8> {
    c.send_raw(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let _ = c.peer_closed(Duration::from_millis(1500));
    c.buffered().to_vec()
}

#[test]
fn item6_conflicting_content_lengths_are_a_500() {
    let (server, addr) = start(&["--keep-alive", "10"]);
    let mut c = connect(&server, &addr, WAIT);
    let r = c.request("GET", "/conflicting", &[], None).unwrap();
    assert_eq!(r.status, 500, "{r:?}");
    server.wait_for_stderr("conflicts with an earlier Content-Length", LOG_WAIT);
    // The connection is still in step.
    let r = c.request("GET", "/probe/next", &[], None).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "/probe/next"), "{r:?}");
}

#[test]
fn item7_a_body_shorter_than_its_content_length_closes_the_connection() {
    let (server, addr) = start(&["--keep-alive", "10"]);
    for target in ["/declared?cl=10&len=5", "/declared?cl=10&len=5&gen=1"] {
        let mut c = connect(&server, &addr, WAIT);
        let t0 = std::time::Instant::now();
        let data = raw_get(&mut c, target);
        let text = String::from_utf8_lossy(&data);
        assert!(
            text.starts_with("HTTP/1.1 200 ") && text.contains("Content-Length: 10\r\n"),
            "{target}: {text:?}"
        );
        assert!(
            text.ends_with("\r\n\r\nxxxxx"),
            "{target}: the 5 bytes the app made, nothing else: {text:?}"
        );
        assert!(
            c.peer_closed(Duration::from_millis(100)) && t0.elapsed() < Duration::from_secs(2),
            "{target}: the connection must be closed at once, or the client reads the next \
             response as the missing bytes"
        );
    }
    server.wait_for_stderr("declared Content-Length 10 but sent 5 bytes", LOG_WAIT);
}

#[test]
fn item7_a_body_longer_than_its_content_length_is_truncated() {
    let (server, addr) = start(&["--keep-alive", "10"]);
    for target in [
        "/declared?cl=5&len=12",
        "/declared?cl=5&len=12&gen=1",
        // duplicate identical lengths with a longer list body (the case that sent it whole)
        "/declared?cl=5&n=2&len=12",
        "/declared?cl=5&n=2&len=12&gen=1",
    ] {
        let mut c = connect(&server, &addr, WAIT);
        let r = c.request("GET", target, &[], None).unwrap();
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "xxxxx"),
            "{target}: {r:?}"
        );
        assert_eq!(
            r.header_all("content-length"),
            ["5"],
            "{target}: identical duplicates are one header"
        );
        let r = c.request("GET", "/probe/after", &[], None).unwrap();
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "/probe/after"),
            "{target}: the next response on the connection: {r:?}"
        );
    }
}

#[test]
fn item8_hop_by_hop_headers_from_the_app_are_dropped() {
    let (server, addr) = start(&["--keep-alive", "10"]);
    let mut c = connect(&server, &addr, WAIT);
    for (name, value) in [
        ("Transfer-Encoding", "chunked"),
        ("Keep-Alive", "timeout=5"),
        ("Upgrade", "websocket"),
        ("TE", "trailers"),
        ("Trailer", "X-Sum"),
        ("Proxy-Authenticate", "Basic"),
        ("Connection", "keep-alive"),
    ] {
        let r = c
            .request("GET", &format!("/hop?name={name}&value={value}"), &[], None)
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", server.report()));
        assert_eq!(r.status, 200, "{name}: {r:?}");
        assert_eq!(r.text(), "framed by the server\n", "{name}");
        assert!(
            r.header(name).is_none() || name == "Connection",
            "{name} reached the client: {r:?}"
        );
        server.wait_for_stderr(&format!("hop-by-hop header \"{name}\""), LOG_WAIT);
    }
    // Still one connection, in step.
    let r = c.request("GET", "/probe/end", &[], None).unwrap();
    assert_eq!(r.text(), "/probe/end");
    // Logged once per name, not per request.
    let _ = c.request(
        "GET",
        "/hop?name=Transfer-Encoding&value=chunked",
        &[],
        None,
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        server.count_stderr("hop-by-hop header \"Transfer-Encoding\""),
        1,
        "{}",
        server.report()
    );
}

#[test]
fn item8_connection_close_from_the_app_is_honoured() {
    let (server, addr) = start(&["--keep-alive", "10"]);
    let mut c = connect(&server, &addr, WAIT);
    let r = c
        .request("GET", "/hop?name=Connection&value=close", &[], None)
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    assert!(
        c.peer_closed(Duration::from_secs(2)),
        "connection kept open"
    );
    assert_serves(&server, &addr);
}

#[test]
fn an_interim_status_as_the_final_answer_is_a_500() {
    let (server, addr) = start(&["--keep-alive", "10"]);
    for code in [100, 102, 199] {
        let mut c = connect(&server, &addr, WAIT);
        let r = c
            .request("GET", &format!("/status?code={code}"), &[], None)
            .unwrap_or_else(|e| panic!("{code}: {e}\n{}", server.report()));
        assert_eq!(r.status, 500, "{code}: {r:?}");
    }
    server.wait_for_stderr("invalid final status 102", LOG_WAIT);
}

#[test]
fn an_endless_body_stops_when_nothing_more_can_be_sent() {
    // One Python thread: if the generator went on after HEAD, or past its Content-Length,
    // nothing else would be served.
    let (server, addr) = start(&["--threads", "1", "--keep-alive", "10"]);
    for (method, target) in [("HEAD", "/forever"), ("GET", "/forever?cl=5000")] {
        let mut c = connect(&server, &addr, WAIT);
        let r = c
            .request(method, target, &[], None)
            .unwrap_or_else(|e| panic!("{method} {target}: {e}\n{}", server.report()));
        assert_eq!(r.status, 200);
        if method == "GET" {
            assert_eq!(r.body.len(), 5000);
        }
        let r = c.request("GET", "/probe/after", &[], None).unwrap();
        assert_eq!(r.text(), "/probe/after", "{method} {target}");
    }
}

#[test]
fn head_has_no_body() {
    let (server, addr) = examples::start("hello:app", &["--keep-alive", "10"]);
    let mut c = examples::connect(&server, &addr);
    let r = c.request("HEAD", "/", &[], None).unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-length"), Some("13"), "{:?}", r.headers);
    assert!(r.body.is_empty());
    assert!(
        !c.peer_closed(Duration::from_millis(300)),
        "connection closed after HEAD"
    );
    assert!(
        c.buffered().is_empty(),
        "bytes after the HEAD response: {:?}",
        String::from_utf8_lossy(c.buffered())
    );
    // The next response on the same connection parses cleanly.
    let r = c.request("GET", "/", &[], None).unwrap();
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, examples::HELLO),
        "{r:?}"
    );
}

#[test]
fn status_codes_and_reasons() {
    let (server, addr) = examples::start("spec:app", &["--keep-alive", "10"]);
    let mut c = examples::connect(&server, &addr);
    for code in [204u16, 304] {
        let r = c
            .request("GET", &format!("/status?code={code}"), &[], None)
            .unwrap_or_else(|e| panic!("/status?code={code}: {e}"));
        assert_eq!(r.status, code, "{r:?}");
        assert_eq!(r.reason, "Custom Reason", "{r:?}");
        assert!(r.body.is_empty());
        assert_eq!(r.header("transfer-encoding"), None, "{r:?}");
        assert!(
            !c.peer_closed(Duration::from_millis(200)) && c.buffered().is_empty(),
            "stray bytes (or close) after {code}: {:?}",
            String::from_utf8_lossy(c.buffered())
        );
    }
    // The next response on the same connection parses cleanly.
    let r = c.request("GET", "/status?code=418", &[], None).unwrap();
    assert_eq!(r.status, 418, "{r:?}");
    assert_eq!(r.reason, "Custom Reason", "{r:?}");
    assert_eq!(r.body, b"status 418");
}

/// Changed with the own HTTP/1.1 layer (issue 11 item 8): a hop-by-hop header from the app is
/// dropped with a warning, as Gunicorn does, instead of a 500; its `Connection: close` is honoured.
#[test]
fn hop_by_hop_header_is_dropped_and_close_honoured() {
    let (server, addr) = examples::start("spec:app", &["--keep-alive", "10"]);
    let mut c = examples::connect(&server, &addr);
    let r = c.request("GET", "/hop-by-hop", &[], None).unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "should not be sent\n");
    assert_eq!(r.header_all("connection"), ["close"], "{r:?}");
    assert!(
        c.peer_closed(Duration::from_secs(2)),
        "the app's Connection: close was not honoured"
    );
    server.wait_for_stderr("hop-by-hop header \"Connection\"", examples::LOG_WAIT);
    examples::assert_serves(&server, &addr, b"spec app\n");
}

//! HTTP strictness (issue 11, items 9–11): what RFC 9110/9112 and Gunicorn 26 refuse is refused
//! with the right status and one warning naming the peer and the reason; what they accept is
//! accepted; the request limits (request line 414, header count and size 431; issue 2), default
//! and lowered; malformed requests get a 4xx or a close, never a hang. Each case runs on its own
//! connection against the real binary, and the server keeps serving other clients after each.

mod common;
mod http_support;

use std::io::{ErrorKind, Read, Write};
use std::time::Duration;

use common::client::*;
use common::examples;
use common::server::Server;
use http_support::*;

const WAIT: Duration = Duration::from_secs(5);

/// (what, raw request, expected status)
const REFUSED: [(&str, &str, u16); 19] = [
    // item 9
    (
        "two Host headers",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        400,
    ),
    (
        "Host with a space",
        "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        400,
    ),
    (
        "Host with a slash",
        "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
        400,
    ),
    // item 10
    (
        "Content-Length and Transfer-Encoding",
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        400,
    ),
    (
        "duplicate identical Content-Length",
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        400,
    ),
    (
        "chunked twice in one field",
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        400,
    ),
    (
        "chunked in two fields",
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        400,
    ),
    (
        "chunk size with trailing whitespace",
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n",
        400,
    ),
    ("bare LF line endings", "GET / HTTP/1.1\nHost: x\n\n", 400),
    (
        "one bare LF in the head",
        "GET / HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n",
        400,
    ),
    (
        "Content-Length in trailers",
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nContent-Length: 3\r\n\r\n",
        400,
    ),
    (
        "Host in trailers",
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nHost: y\r\n\r\n",
        400,
    ),
    (
        "Transfer-Encoding in trailers",
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n",
        400,
    ),
    (
        "a method that is not a token",
        "G(T / HTTP/1.1\r\nHost: x\r\n\r\n",
        400,
    ),
    (
        "a method with a slash",
        "GE/T / HTTP/1.1\r\nHost: x\r\n\r\n",
        400,
    ),
    ("GET *", "GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (
        "authority-form outside CONNECT",
        "GET example.com:80 HTTP/1.1\r\nHost: x\r\n\r\n",
        400,
    ),
    (
        "Expect other than 100-continue",
        "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: fancy\r\nContent-Length: 3\r\n\r\nabc",
        417,
    ),
    (
        "HTTP/2.0 on HTTP/1",
        "GET / HTTP/2.0\r\nHost: x\r\n\r\n",
        505,
    ),
];

#[test]
fn refused_requests_get_their_status_and_the_server_keeps_serving() {
    let (server, addr) = start(&[]);
    let mut wrong = Vec::new();
    for (what, raw, want) in REFUSED {
        let data = exchange(&server, &addr, raw.as_bytes(), WAIT);
        let text = String::from_utf8_lossy(&data);
        // The status, and a short body naming it; then the connection closed.
        if status_of(&data) != Some(want) || !text.contains(&format!("\r\n\r\n{want} ")) {
            wrong.push(format!("{what}: want {want}, got {text:?}"));
        }
        assert_serves(&server, &addr);
    }
    assert!(
        wrong.is_empty(),
        "{}\n{}",
        wrong.join("\n"),
        server.report()
    );
}

#[test]
fn accepted_where_gunicorn_accepts() {
    let (server, addr) = start(&[]);
    let cases: [(&str, &str); 7] = [
        (
            "a quote and braces in the target",
            "GET /probe/a\"b{c}|d HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        (
            "angle brackets, a backtick, non-ASCII bytes in the target",
            "GET /probe/<b>`\u{e9} HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        (
            "HTTP/1.2 as 1.1",
            "GET /probe/v12 HTTP/1.2\r\nHost: x\r\n\r\n",
        ),
        ("OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"),
        (
            "IPv6 literal Host",
            "GET /probe/v6 HTTP/1.1\r\nHost: [::1]:8000\r\n\r\n",
        ),
        ("empty Host", "GET /probe/e HTTP/1.1\r\nHost:\r\n\r\n"),
        (
            "a chunk extension and an allowed trailer",
            "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;name=v\r\nabc\r\n0\r\nX-Checksum: 1\r\n\r\n",
        ),
    ];
    let mut wrong = Vec::new();
    for (what, raw) in cases {
        let mut c = connect(&server, &addr, WAIT);
        c.send_raw(raw.as_bytes()).unwrap();
        let r = match c.read_response("GET") {
            Ok(r) => r,
            Err(e) => {
                wrong.push(format!("{what}: {e}"));
                continue;
            }
        };
        let body_ok = if what.contains("quote") {
            r.text() == "/probe/a\"b{c}|d"
        } else if what.contains("backtick") {
            r.body == "/probe/<b>`\u{e9}".as_bytes()
        } else if what.contains("chunk") {
            r.text() == "abc"
        } else {
            true
        };
        if r.status != 200 || !body_ok || r.version != "HTTP/1.1" {
            wrong.push(format!("{what}: {r:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{}\n{}",
        wrong.join("\n"),
        server.report()
    );
}

#[test]
fn a_rejected_request_is_logged_once_with_peer_and_reason() {
    let (server, addr) = start(&[]);
    let Addr::Tcp(sa) = addr else {
        panic!("expected TCP")
    };
    let mut c = std::net::TcpStream::connect(sa).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    let local = c.local_addr().unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        .unwrap();
    let mut data = Vec::new();
    c.read_to_end(&mut data).unwrap();
    assert_eq!(status_of(&data), Some(400));
    let needle = format!("Rejected request from {local}: more than one Host header (400)");
    server.wait_for_stderr(&needle, LOG_WAIT);
    std::thread::sleep(Duration::from_millis(200));
    let err = server.stderr();
    let lines = lines_with(&err, &needle);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("[WARNING]"), "{lines:?}");
}

#[test]
fn limit_request_line_zero_means_8190_and_http10_gets_no_100_continue() {
    let (server, addr) = start(&["--limit-request-line", "0"]);
    let long = format!(
        "GET /probe/{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(9000)
    );
    assert_eq!(
        status_of(&exchange(&server, &addr, long.as_bytes(), WAIT)),
        Some(414)
    );
    let fine = format!(
        "GET /probe/{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "a".repeat(8000)
    );
    assert_eq!(
        status_of(&exchange(&server, &addr, fine.as_bytes(), WAIT)),
        Some(200)
    );
    // An HTTP/1.0 client sends its body without waiting for 100 Continue.
    let data = exchange(
        &server,
        &addr,
        b"POST /echo HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
        WAIT,
    );
    let t = String::from_utf8_lossy(&data);
    assert!(
        t.starts_with("HTTP/1.1 200 ") && t.ends_with("abc"),
        "{t:?}"
    );
    assert!(!t.contains("100 Continue"), "{t:?}");
}

/// GET `target` with `headers` on a new connection; the status.
fn get_status(server: &Server, addr: &Addr, target: &str, headers: &[(&str, &str)]) -> u16 {
    examples::fetch(server, addr, "GET", target, headers, None).status
}

#[test]
fn default_request_limits() {
    let (server, addr) = examples::start("hello:app", &[]);

    // Request line: "GET " + target + " HTTP/1.1" is 13 bytes + target.
    let long = format!("/{}", "a".repeat(5000));
    assert_eq!(
        get_status(&server, &addr, &long, &[]),
        414,
        "5 KB request line"
    );
    examples::assert_serves(&server, &addr, examples::HELLO);
    let ok = format!("/{}", "a".repeat(4000));
    assert_eq!(
        get_status(&server, &addr, &ok, &[]),
        200,
        "4 KB request line"
    );

    // Header count: Host + 100 others = 101 fields.
    let names: Vec<String> = (0..100).map(|i| format!("X-H{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    assert_eq!(
        get_status(&server, &addr, "/", &many),
        431,
        "101 header fields"
    );
    examples::assert_serves(&server, &addr, examples::HELLO);
    assert_eq!(
        get_status(&server, &addr, "/", &many[..80]),
        200,
        "81 header fields"
    );

    // Header size.
    let big = "b".repeat(9000);
    assert_eq!(
        get_status(&server, &addr, "/", &[("X-Big", &big)]),
        431,
        "9000-byte header"
    );
    examples::assert_serves(&server, &addr, examples::HELLO);
    let fine = "b".repeat(7000);
    assert_eq!(
        get_status(&server, &addr, "/", &[("X-Big", &fine)]),
        200,
        "7000-byte header"
    );
}

#[test]
fn lowered_request_line_limit() {
    let (server, addr) = examples::start("hello:app", &["--limit-request-line", "100"]);
    let long = format!("/{}", "a".repeat(150));
    assert_eq!(
        get_status(&server, &addr, &long, &[]),
        414,
        "~160-byte line"
    );
    examples::assert_serves(&server, &addr, examples::HELLO);
    let short = format!("/{}", "a".repeat(50));
    assert_eq!(
        get_status(&server, &addr, &short, &[]),
        200,
        "~64-byte line"
    );
}

/// Sends raw bytes on a new connection and reads until the server closes.
/// Returns the status code of the response, if any was sent. Panics if the
/// server neither answers nor closes within 5 s (a hang).
fn send_malformed(server: &Server, addr: &Addr, raw: &[u8]) -> Option<u16> {
    let mut c = examples::connect(server, addr);
    c.set_timeout(Duration::from_secs(5));
    let show = String::from_utf8_lossy(raw).into_owned();
    if let Err(e) = c.send_raw(raw) {
        // The server may already have closed on us; what it sent still counts.
        assert!(
            matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset),
            "sending {show:?}: {e}"
        );
    }
    let data = match c.read_until_close() {
        Ok(d) => d,
        Err(e) if e.kind() == ErrorKind::ConnectionReset => c.buffered().to_vec(),
        Err(e) => panic!(
            "server neither answered nor closed the connection for {show:?} ({e}); got {:?}\n{}",
            String::from_utf8_lossy(c.buffered()),
            server.report()
        ),
    };
    if data.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(&data);
    assert!(
        text.starts_with("HTTP/1.1 ") || text.starts_with("HTTP/1.0 "),
        "response to {show:?} is not HTTP: {text:?}"
    );
    Some(
        text[9..12]
            .parse()
            .unwrap_or_else(|_| panic!("bad status line in {text:?}")),
    )
}

#[test]
fn malformed_requests() {
    let (server, addr) = examples::start("spec:app", &[]);
    let cases: [(&str, &[u8]); 4] = [
        ("no target and version", b"GET\r\n\r\n"),
        ("unknown method and version", b"BLAH / HTTP/9.9\r\n\r\n"),
        (
            "header line without colon",
            b"GET / HTTP/1.1\r\nHost: localhost\r\nBad Header\r\n\r\n",
        ),
        (
            "invalid chunk size",
            b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n\
              zz\r\nabc\r\n0\r\n\r\n",
        ),
    ];
    for (what, raw) in cases {
        let status = send_malformed(&server, &addr, raw);
        // 505 is the specific answer to an unsupported HTTP version.
        let ok = match status {
            None => true,
            Some(s) => (400..500).contains(&s) || (what.contains("version") && s == 505),
        };
        assert!(
            ok,
            "{what}: expected a 4xx or a close, got {status:?}\n{}",
            server.report()
        );
        examples::assert_serves(&server, &addr, b"spec app\n");
    }
}

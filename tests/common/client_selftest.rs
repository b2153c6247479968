//! The raw HTTP client's own tests (`tests/common/client.rs`), against scripted in-process
//! servers. Compiled into `harness_selftest` only, so that they run once, not in every test
//! binary that uses the harness.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::client::*;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::sync::mpsc;
use std::thread;

/// What the scripted server does after writing its canned responses.
#[derive(Clone, Copy)]
enum After {
    Close,
    /// Keep the connection open this long, then close.
    Linger(Duration),
}

/// Reads one request (head + Content-Length body) from a raw stream.
fn read_request(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut req = Vec::new();
    let mut byte = [0u8; 1];
    while !req.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => req.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&req).to_ascii_lowercase();
    let cl = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse::<usize>().unwrap())
        .unwrap_or(0);
    let mut body = vec![0u8; cl];
    s.read_exact(&mut body).ok()?;
    req.extend_from_slice(&body);
    Some(req)
}

/// A one-connection scripted server: for each canned response, reads one
/// request and writes the bytes. Received requests are sent on the channel.
fn scripted(responses: Vec<&'static [u8]>, after: After) -> (Addr, mpsc::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = Addr::Tcp(listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        for r in responses {
            let Some(req) = read_request(&mut s) else {
                return;
            };
            let _ = tx.send(req);
            if s.write_all(r).is_err() {
                return;
            }
        }
        if let After::Linger(d) = after {
            thread::sleep(d);
        }
    });
    (addr, rx)
}

fn one(resp: &'static [u8], method: &str) -> io::Result<Response> {
    let (addr, _rx) = scripted(vec![resp], After::Close);
    let mut c = Conn::connect(&addr).unwrap();
    c.request(method, "/", &[], None)
}

fn err_kind(resp: &'static [u8]) -> ErrorKind {
    match one(resp, "GET") {
        Ok(r) => panic!("expected an error, got {r:?}"),
        Err(e) => e.kind(),
    }
}

#[test]
fn content_length_keep_alive() {
    let (addr, rx) = scripted(
        vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\n\r\nhello",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
        ],
        After::Linger(Duration::from_secs(2)),
    );
    let mut c = Conn::connect(&addr).unwrap();
    let r = c
        .request("POST", "/p?q=1", &[("X-Test", "yes")], Some(b"abc"))
        .unwrap();
    assert_eq!(r.version, "HTTP/1.1");
    assert_eq!((r.status, r.reason.as_str()), (200, "OK"));
    assert_eq!(r.body, b"hello");
    assert!(!r.chunked);
    assert_eq!(r.header("content-LENGTH"), Some("5"));
    assert_eq!(r.header_all("x-a"), vec!["1", "2"]);
    assert_eq!(r.header("missing"), None);
    let req = rx.recv().unwrap();
    assert_eq!(
        req,
        b"POST /p?q=1 HTTP/1.1\r\nHost: localhost\r\nX-Test: yes\r\nContent-Length: 3\r\n\r\nabc"
    );
    let r = c.request("GET", "/two", &[], None).unwrap();
    assert_eq!(r.status, 404);
    assert!(r.body.is_empty());
    assert!(!c.peer_closed(Duration::from_millis(100)));
}

#[test]
fn chunked_body() {
    let r = one(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n1;ext=1\r\n \r\nA \t;x\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n",
        "GET",
    )
    .unwrap();
    assert!(r.chunked);
    assert_eq!(r.body, b"hello 0123456789");
    assert_eq!(r.chunk_sizes, vec![5, 1, 10]);
    assert_eq!(r.trailers, vec![("X-Trailer".to_string(), "t".to_string())]);
}

#[test]
fn chunked_then_next_response_on_same_conn() {
    let (addr, _rx) = scripted(
        vec![
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ],
        After::Close,
    );
    let mut c = Conn::connect(&addr).unwrap();
    assert_eq!(c.request("GET", "/", &[], None).unwrap().body, b"abc");
    assert_eq!(c.request("GET", "/", &[], None).unwrap().body, b"ok");
    assert!(c.peer_closed(Duration::from_secs(5)));
}

#[test]
fn large_bodies_across_buffer_refills() {
    let big: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let mut sizes = Vec::new();
    for part in big.chunks(7_777) {
        chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        chunked.extend_from_slice(part);
        chunked.extend_from_slice(b"\r\n");
        sizes.push(part.len());
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let mut cl = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", big.len()).into_bytes();
    cl.extend_from_slice(&big);
    let (addr, _rx) = scripted(vec![chunked.leak(), cl.leak()], After::Close);
    let mut c = Conn::connect(&addr).unwrap();
    let r = c.request("GET", "/", &[], None).unwrap();
    assert_eq!(r.chunk_sizes, sizes);
    assert!(r.body == big);
    let r = c.request("GET", "/", &[], None).unwrap();
    assert!(r.body == big);
}

#[test]
fn close_delimited_body() {
    let r = one(b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\nuntil the end", "GET").unwrap();
    assert_eq!(r.version, "HTTP/1.0");
    assert_eq!(r.text(), "until the end");
}

#[test]
fn head_has_no_body() {
    let (addr, _rx) = scripted(
        vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx",
        ],
        After::Close,
    );
    let mut c = Conn::connect(&addr).unwrap();
    let r = c.request("HEAD", "/", &[], None).unwrap();
    assert_eq!(r.header("content-length"), Some("100"));
    assert!(r.body.is_empty());
    let r = c.request("head", "/", &[], None).unwrap();
    assert!(r.body.is_empty() && !r.chunked);
    let r = c.request("GET", "/", &[], None).unwrap();
    assert_eq!((r.status, r.body.as_slice()), (201, &b"x"[..]));
}

#[test]
fn skips_100_continue() {
    let r = one(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\n\
          HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone",
        "POST",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.interim, vec![100, 103]);
    assert_eq!(r.body, b"done");
}

#[test]
fn no_body_for_204_and_304() {
    let (addr, _rx) = scripted(
        vec![
            b"HTTP/1.1 204 No Content\r\nX: y\r\n\r\n",
            b"HTTP/1.1 304 Not Modified\r\nETag: \"a\"\r\nContent-Length: 10\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nend",
        ],
        After::Close,
    );
    let mut c = Conn::connect(&addr).unwrap();
    let r = c.request("GET", "/", &[], None).unwrap();
    assert_eq!((r.status, r.reason.as_str()), (204, "No Content"));
    assert!(r.body.is_empty());
    let r = c.request("GET", "/", &[], None).unwrap();
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(c.request("GET", "/", &[], None).unwrap().text(), "end");
}

#[test]
fn empty_reason_phrase() {
    let r = one(b"HTTP/1.1 299 \r\nContent-Length: 0\r\n\r\n", "GET").unwrap();
    assert_eq!((r.status, r.reason.as_str()), (299, ""));
}

#[test]
fn malformed_status_lines() {
    for bad in [
        &b"HTTP/1.1 20 OK\r\n\r\n"[..],
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1  200 OK\r\n\r\n",
        b"HTTP/1.1 200\r\n\r\n",
        b"HTTP/1.1 600 Nope\r\n\r\n",
        b"http/1.1 200 OK\r\n\r\n",
        b"garbage\r\n\r\n",
        b"HTTP/1.1 200 OK\n\n",
    ] {
        let (addr, _rx) = scripted(vec![bad], After::Close);
        let mut c = Conn::connect(&addr).unwrap();
        let e = c.request("GET", "/", &[], None).unwrap_err();
        assert_eq!(
            e.kind(),
            ErrorKind::InvalidData,
            "{:?}: {e}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn malformed_headers() {
    assert_eq!(
        err_kind(b"HTTP/1.1 200 OK\r\nNoColon\r\n\r\n"),
        ErrorKind::InvalidData
    );
    assert_eq!(
        err_kind(b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n"),
        ErrorKind::InvalidData
    );
    assert_eq!(
        err_kind(b"HTTP/1.1 200 OK\r\nA: b\r\n folded\r\n\r\n"),
        ErrorKind::InvalidData
    );
    assert_eq!(
        err_kind(b"HTTP/1.1 200 OK\r\nA: b\rc\r\n\r\n"),
        ErrorKind::InvalidData
    );
    assert_eq!(
        err_kind(b"HTTP/1.1 200 OK\r\nA: b\x01\r\n\r\n"),
        ErrorKind::InvalidData
    );
}

#[test]
fn bad_framing_headers() {
    for bad in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
    ] {
        let (addr, _rx) = scripted(vec![bad], After::Close);
        let mut c = Conn::connect(&addr).unwrap();
        let e = c.request("GET", "/", &[], None).unwrap_err();
        assert_eq!(
            e.kind(),
            ErrorKind::InvalidData,
            "{:?}: {e}",
            String::from_utf8_lossy(bad)
        );
    }
    // Equal duplicate Content-Length values are tolerated.
    let r = one(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        "GET",
    )
    .unwrap();
    assert_eq!(r.body, b"x");
}

#[test]
fn bad_chunks() {
    let base = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (chunks, kind) in [
        ("zz\r\nab\r\n0\r\n\r\n", ErrorKind::InvalidData),
        ("\r\n", ErrorKind::InvalidData),
        ("-1\r\n", ErrorKind::InvalidData),
        ("0x2\r\nab\r\n0\r\n\r\n", ErrorKind::InvalidData),
        ("2 junk\r\nab\r\n0\r\n\r\n", ErrorKind::InvalidData),
        ("11111111111111111\r\n", ErrorKind::InvalidData),
        ("2\r\nabc\r\n0\r\n\r\n", ErrorKind::InvalidData),
        ("2\nab\n0\n\n", ErrorKind::InvalidData),
        ("5\r\nab", ErrorKind::UnexpectedEof),
        ("2\r\nab\r\n", ErrorKind::UnexpectedEof),
        ("2\r\nab\r\n0\r\n", ErrorKind::UnexpectedEof),
        ("", ErrorKind::UnexpectedEof),
    ] {
        let resp: &'static [u8] = format!("{base}{chunks}").into_bytes().leak();
        let (addr, _rx) = scripted(vec![resp], After::Close);
        let mut c = Conn::connect(&addr).unwrap();
        let e = c.request("GET", "/", &[], None).unwrap_err();
        assert_eq!(e.kind(), kind, "{chunks:?}: {e}");
    }
}

#[test]
fn eof_errors() {
    assert_eq!(
        err_kind(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"),
        ErrorKind::UnexpectedEof
    );
    assert_eq!(err_kind(b""), ErrorKind::UnexpectedEof);
    assert_eq!(
        err_kind(b"HTTP/1.1 200 OK\r\nContent-Le"),
        ErrorKind::UnexpectedEof
    );
    assert_eq!(err_kind(b"HTTP/1.1 200 O"), ErrorKind::UnexpectedEof);
}

#[test]
fn read_timeout_is_an_error_not_a_hang() {
    let (addr, _rx) = scripted(
        vec![b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"],
        After::Linger(Duration::from_secs(3)),
    );
    let mut c = Conn::connect(&addr).unwrap();
    c.set_timeout(Duration::from_millis(200));
    let e = c.request("GET", "/", &[], None).unwrap_err();
    assert!(is_timeout(&e), "{e:?}");
}

#[test]
fn module_request_sends_connection_close() {
    let (addr, rx) = scripted(
        vec![b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"],
        After::Close,
    );
    let r = get(&addr, "/x").unwrap();
    assert_eq!(r.text(), "hi");
    assert_eq!(
        rx.recv().unwrap(),
        b"GET /x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    );
}

#[test]
fn custom_host_and_transfer_encoding_are_respected() {
    let req = build_request(
        "POST",
        "/",
        &[("host", "example"), ("Transfer-Encoding", "chunked")],
        Some(b"1\r\na\r\n0\r\n\r\n"),
    );
    assert_eq!(
        req,
        b"POST / HTTP/1.1\r\nhost: example\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n"
    );
}

#[test]
fn peer_closed_detects_close_and_open() {
    let (addr, _rx) = scripted(
        vec![b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"],
        After::Linger(Duration::from_millis(500)),
    );
    let mut c = Conn::connect(&addr).unwrap();
    c.request("GET", "/", &[], None).unwrap();
    assert!(!c.peer_closed(Duration::from_millis(100)));
    assert!(c.peer_closed(Duration::from_secs(5)));
}

#[test]
fn peer_closed_keeps_late_data() {
    let (addr, _rx) = scripted(vec![b"HTTP/1.1 408 Request Timeout\r\n\r\n"], After::Close);
    let mut c = Conn::connect(&addr).unwrap();
    c.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(c.peer_closed(Duration::from_secs(5)));
    assert_eq!(c.buffered(), b"HTTP/1.1 408 Request Timeout\r\n\r\n");
}

#[test]
fn json_ok() {
    let r = one(
        b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{\"a\": 1}\n",
        "GET",
    )
    .unwrap();
    assert_eq!(r.json()["a"], 1);
}

#[test]
#[should_panic(expected = "not json at all")]
fn json_panics_with_body() {
    let r = Response {
        body: b"not json at all".to_vec(),
        ..Default::default()
    };
    r.json();
}

#[test]
fn unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let t = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = Vec::new();
        let mut b = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut b).unwrap();
            buf.push(b[0]);
        }
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nunix")
            .unwrap();
    });
    let r = get(&Addr::Unix(path), "/").unwrap();
    assert_eq!(r.text(), "unix");
    t.join().unwrap();
}

#[test]
fn addr_parse_and_display() {
    let a = Addr::parse("http://127.0.0.1:8000").unwrap();
    assert_eq!(a, Addr::Tcp("127.0.0.1:8000".parse().unwrap()));
    assert_eq!(a.port(), Some(8000));
    assert_eq!(a.to_string(), "http://127.0.0.1:8000");
    assert_eq!(
        Addr::parse("http://[::1]:9/").unwrap(),
        Addr::Tcp("[::1]:9".parse().unwrap())
    );
    assert_eq!(
        Addr::parse("unix:/tmp/x.sock").unwrap(),
        Addr::Unix("/tmp/x.sock".into())
    );
    assert_eq!(
        Addr::parse("unix:///tmp/x.sock").unwrap(),
        Addr::Unix("/tmp/x.sock".into())
    );
    assert_eq!(
        Addr::Unix("/tmp/x.sock".into()).to_string(),
        "unix:/tmp/x.sock"
    );
    assert_eq!(Addr::parse("unix:"), None);
    assert_eq!(Addr::parse("nonsense"), None);
}

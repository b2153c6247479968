//! HTTP and WSGI behaviour against the real binary: bodies in and out
//! (Content-Length, chunked, spilled to disk), keep-alive, HEAD, streaming,
//! write(), file_wrapper, error handling, status lines and headers, the WSGI
//! environ (TCP and unix sockets), url_scheme and proxies, request limits,
//! malformed requests, the access log, wsgi.errors and threads.
//!
//! Every server binds `127.0.0.1:0` or a unix socket inside its own temp dir
//! and reads the address back from the log, so the tests run in parallel.
//! Every network read and write has a timeout.

mod common;

use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::{client::*, server::*};
use serde_json::{Value, json};

const BOOT: Duration = Duration::from_secs(30);
/// Read/write timeout of every connection the tests open.
const IO: Duration = Duration::from_secs(10);
/// How long to wait for a log line that should appear.
const LOG_WAIT: Duration = Duration::from_secs(10);

const HELLO: &[u8] = b"Hello, World!";

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

/// Spawns `ferricorn --chdir examples [extra...] APP` (not waiting for it) with
/// a hermetic environment. `{tmp}` in an argument is replaced by the server's
/// temp dir. Without a `-b` in `extra` it binds `127.0.0.1:0`.
fn spawn(app: &str, extra: &[&str]) -> Server {
    let b = ferricorn().cwd(examples_dir());
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
fn ready(server: &Server) -> Addr {
    server.wait_ready(BOOT);
    server.addr()
}

/// Spawns a TCP server and waits until it is ready.
fn start(app: &str, extra: &[&str]) -> (Server, Addr) {
    let server = spawn(app, extra);
    let addr = ready(&server);
    assert!(
        matches!(addr, Addr::Tcp(_)),
        "expected a TCP listener, got {addr}"
    );
    (server, addr)
}

/// Spawns a server on `unix:<tmp>/s.sock` and waits until it is ready.
fn start_unix(app: &str, extra: &[&str]) -> (Server, Addr) {
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
fn connect(server: &Server, addr: &Addr) -> Conn {
    let mut c = Conn::connect(addr)
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}\n{}", server.report()));
    c.set_timeout(IO);
    c
}

/// One request on a new connection with `Connection: close` (unless given);
/// panics with the server's output if it fails.
fn fetch(
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
fn get_ok(server: &Server, addr: &Addr, target: &str) -> Response {
    fetch(server, addr, "GET", target, &[], None)
}

/// GET /pid: the worker's pid.
fn pid_of(server: &Server, addr: &Addr) -> i32 {
    let r = get_ok(server, addr, "/pid");
    assert_eq!(r.status, 200, "/pid: {r:?}\n{}", server.report());
    r.text()
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("bad /pid body {:?}: {e}", r.text()))
}

/// A new connection GET / answers 200 with `body`.
fn assert_serves(server: &Server, addr: &Addr, body: &[u8]) {
    let r = get_ok(server, addr, "/");
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, body),
        "GET / after the previous request: {r:?}\n{}",
        server.report()
    );
}

/// `len` bytes with every byte value, in a scrambled order.
fn binary_body(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|i| {
            if i % 4 == 3 {
                // xorshift32 for some noise...
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 24) as u8
            } else {
                // ...and a plain cycle through all 256 values.
                (i % 256) as u8
            }
        })
        .collect()
}

/// The chunked encoding of `parts` (sizes in upper- and lowercase hex), with the last chunk.
fn chunked(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        assert!(!p.is_empty(), "an empty chunk would end the body");
        let size = if i % 2 == 0 {
            format!("{:x}", p.len())
        } else {
            format!("{:X}", p.len())
        };
        out.extend_from_slice(size.as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(p);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// Splits `data` at the given offsets.
fn split_at<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    let mut from = 0;
    for &c in cuts {
        parts.push(&data[from..c]);
        from = c;
    }
    parts.push(&data[from..]);
    parts
}

/// The /stream body for n chunks of `size` bytes.
fn stream_body(n: usize, size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let mut c = format!("{i}:").into_bytes();
        c.resize(size, b'.');
        c.truncate(size);
        out.extend_from_slice(&c);
    }
    out
}

/// `bytes(i % 251 for i in range(n))`
fn file_content(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses a chunked body; returns the data and whether the last chunk was seen.
fn dechunk(mut data: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    loop {
        let Some(eol) = find(data, b"\r\n") else {
            return (out, false);
        };
        let line = std::str::from_utf8(&data[..eol]).expect("chunk size line is ASCII");
        let hex = line.split(';').next().unwrap().trim();
        let size = usize::from_str_radix(hex, 16).expect("valid chunk size");
        data = &data[eol + 2..];
        if size == 0 {
            return (out, data.starts_with(b"\r\n"));
        }
        if data.len() < size + 2 {
            return (out, false);
        }
        out.extend_from_slice(&data[..size]);
        assert_eq!(&data[size..size + 2], b"\r\n", "CRLF after chunk data");
        data = &data[size + 2..];
    }
}

/// GET /environ (or `target`) and parse the JSON.
fn environ(
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

/// Sends raw bytes on a new connection and reads until the server closes.
/// Returns the status code of the response, if any was sent. Panics if the
/// server neither answers nor closes within 5 s (a hang).
fn send_malformed(server: &Server, addr: &Addr, raw: &[u8]) -> Option<u16> {
    let mut c = connect(server, addr);
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

/// The lines of `text` containing `needle`.
fn lines_with<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.contains(needle)).collect()
}

/// Runs `n` concurrent `GET target` requests, each on its own connection;
/// returns the total wall time once all are done. Each must answer 200.
fn concurrent_gets(server: &Server, addr: &Addr, target: &str, n: usize) -> Duration {
    let t0 = Instant::now();
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let addr = addr.clone();
            let target = target.to_string();
            thread::spawn(move || -> io::Result<Response> {
                let mut c = Conn::connect(&addr)?;
                c.set_timeout(IO);
                c.request("GET", &target, &[("Connection", "close")], None)
            })
        })
        .collect();
    for h in handles {
        let r = h
            .join()
            .expect("request thread panicked")
            .unwrap_or_else(|e| panic!("GET {target}: {e}\n{}", server.report()));
        assert_eq!(r.status, 200, "GET {target}: {r:?}");
    }
    t0.elapsed()
}

// ---------------------------------------------------------------------------
// 1. hello world
// ---------------------------------------------------------------------------

#[test]
fn hello_world() {
    let (server, addr) = start("hello:app", &[]);
    let r = get_ok(&server, &addr, "/");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, HELLO, "body: {:?}", r.text());
    assert_eq!(r.header("content-length"), Some("13"), "{:?}", r.headers);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain"),
        "{:?}",
        r.headers
    );
}

// ---------------------------------------------------------------------------
// 2. request bodies with Content-Length
// ---------------------------------------------------------------------------

#[test]
fn echo_binary_body() {
    let (server, addr) = start("spec:app", &[]);
    let body = binary_body(300 * 1024);
    let r = fetch(
        &server,
        &addr,
        "POST",
        "/echo",
        &[("Content-Type", "application/x-test")],
        Some(&body),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/x-test"));
    assert_eq!(r.body.len(), body.len());
    assert!(r.body == body, "300 KB echo differs from what was sent");
}

#[test]
fn echo_large_body_spilled_to_disk() {
    let (server, addr) = start("spec:app", &[]);
    let body = binary_body(2_500_000);
    let r = fetch(&server, &addr, "POST", "/echo", &[], Some(&body));
    assert_eq!(r.status, 200, "status {} {}", r.status, r.reason);
    assert_eq!(r.header("content-length"), Some("2500000"));
    assert_eq!(r.body.len(), body.len());
    assert!(r.body == body, "2.5 MB echo differs from what was sent");
    // And the worker carries on.
    assert_serves(&server, &addr, b"spec app\n");
}

// ---------------------------------------------------------------------------
// 3. chunked request bodies
// ---------------------------------------------------------------------------

#[test]
fn chunked_request_bodies() {
    let (server, addr) = start("spec:app", &[]);
    let te = [("Transfer-Encoding", "chunked")];

    // /echo: read() to EOF.
    let data = binary_body(70_000);
    let parts = split_at(&data, &[1, 26, 4096, 4097, 40_000]);
    let r = fetch(&server, &addr, "POST", "/echo", &te, Some(&chunked(&parts)));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body.len(), data.len());
    assert!(r.body == data, "de-chunked echo differs from what was sent");

    // /echo-lines: readline(), with chunk boundaries in the middle of lines.
    let text: &[u8] = b"line one\nline two\r\nthree\n\n\xe9 latin-1\nlast without newline";
    let expected = json!([
        "line one\n",
        "line two\r\n",
        "three\n",
        "\n",
        "\u{e9} latin-1\n",
        "last without newline"
    ]);
    let body = chunked(&split_at(text, &[3, 9, 10, 30, 31]));
    let r = fetch(&server, &addr, "POST", "/echo-lines", &te, Some(&body));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json(), expected, "/echo-lines");

    // /echo-iter: iterating wsgi.input.
    let r = fetch(&server, &addr, "POST", "/echo-iter", &te, Some(&body));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json(), expected, "/echo-iter");

    // /echo-read-chunks?size=7: read(7) returns 7 bytes until the end.
    let data: Vec<u8> = (0..30u8).collect();
    let body = chunked(&split_at(&data, &[5, 6, 20]));
    let r = fetch(
        &server,
        &addr,
        "POST",
        "/echo-read-chunks?size=7",
        &te,
        Some(&body),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json(), json!({"sizes": [7, 7, 7, 7, 2], "total": 30}));
}

// ---------------------------------------------------------------------------
// 4. keep-alive
// ---------------------------------------------------------------------------

#[test]
fn keep_alive() {
    let (server, addr) = start("spec:app", &["-w", "2", "--keep-alive", "10"]);
    let mut c = connect(&server, &addr);
    let mut pids = Vec::new();
    for i in 0..5 {
        let r = c
            .request("GET", "/pid", &[], None)
            .unwrap_or_else(|e| panic!("request {i} on the kept-alive connection: {e}"));
        assert_eq!(r.status, 200, "request {i}: {r:?}");
        pids.push(r.text());
    }
    assert!(
        pids.iter().all(|p| *p == pids[0]),
        "one connection was served by several processes: {pids:?}"
    );
    assert!(
        !c.peer_closed(Duration::from_millis(500)),
        "HTTP/1.1 connection closed after the requests"
    );

    // HTTP/1.0 without keep-alive: the server closes after the response.
    let mut c = connect(&server, &addr);
    c.send_raw(b"GET /pid HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let r = c.read_response("GET").unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        c.peer_closed(Duration::from_secs(3)),
        "HTTP/1.0 connection without keep-alive was left open"
    );
    assert!(c.buffered().is_empty(), "stray bytes: {:?}", c.buffered());
}

// ---------------------------------------------------------------------------
// 5. HEAD
// ---------------------------------------------------------------------------

#[test]
fn head_has_no_body() {
    let (server, addr) = start("hello:app", &["--keep-alive", "10"]);
    let mut c = connect(&server, &addr);
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
    assert_eq!((r.status, r.body.as_slice()), (200, HELLO), "{r:?}");
}

// ---------------------------------------------------------------------------
// 6. streaming responses
// ---------------------------------------------------------------------------

#[test]
fn streaming_response() {
    let (server, addr) = start("spec:app", &["-w", "1"]);

    let r = get_ok(&server, &addr, "/stream?n=5&size=10");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.chunked, "no chunked encoding: {:?}", r.headers);
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.text(), String::from_utf8(stream_body(5, 10)).unwrap());

    // With a delay between chunks, they arrive as they are produced.
    let Addr::Tcp(sa) = addr else { unreachable!() };
    let mut s = TcpStream::connect_timeout(&sa, IO).unwrap();
    s.set_read_timeout(Some(IO)).unwrap();
    s.set_write_timeout(Some(IO)).unwrap();
    s.write_all(
        b"GET /stream?n=5&size=10&delay=0.3 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let t0 = Instant::now();
    let (mut first, mut last) = (None, None);
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("reading the stream: {e}\n{}", server.report()));
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buf[..n]);
        if first.is_none() && find(&data, b"0:........").is_some() {
            first = Some(t0.elapsed());
        }
        if last.is_none() && find(&data, b"4:........").is_some() {
            last = Some(t0.elapsed());
        }
    }
    let head_end = find(&data, b"\r\n\r\n").expect("response head") + 4;
    let head = String::from_utf8_lossy(&data[..head_end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 "), "{head}");
    assert!(
        head.contains("transfer-encoding: chunked\r\n"),
        "not chunked: {head}"
    );
    let (body, complete) = dechunk(&data[head_end..]);
    assert!(
        complete,
        "no last chunk: {:?}",
        String::from_utf8_lossy(&data)
    );
    assert_eq!(body, stream_body(5, 10));
    let (first, last) = (first.unwrap(), last.unwrap());
    assert!(
        last >= first + Duration::from_millis(900),
        "chunks were not sent as produced: first after {first:?}, last after {last:?}"
    );

    // Both response iterables were closed (same single worker).
    let mut closed = Value::Null;
    let ok = wait_until(Duration::from_secs(3), || {
        closed = get_ok(&server, &addr, "/closed").json();
        closed == json!({"closed": 2})
    });
    assert!(ok, "close() not called on both /stream bodies: {closed}");
}

// ---------------------------------------------------------------------------
// 7. write()
// ---------------------------------------------------------------------------

#[test]
fn write_callable() {
    let (server, addr) = start("spec:app", &[]);
    let r = get_ok(&server, &addr, "/write");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, b"first;second;third", "{:?}", r.text());
}

// ---------------------------------------------------------------------------
// 8. wsgi.file_wrapper
// ---------------------------------------------------------------------------

#[test]
fn file_responses() {
    let (server, addr) = start("spec:app", &[]);
    let expected = file_content(100_000);
    for target in ["/file?size=100000", "/file-like?size=100000"] {
        let r = get_ok(&server, &addr, target);
        assert_eq!(r.status, 200, "{target}: {r:?}");
        assert_eq!(r.header("content-length"), Some("100000"), "{target}");
        assert_eq!(r.body.len(), expected.len(), "{target}");
        assert!(r.body == expected, "{target}: content differs");
    }
}

// ---------------------------------------------------------------------------
// 9. / 10. / 11. application errors
// ---------------------------------------------------------------------------

#[test]
fn exception_before_start_response() {
    let (server, addr) = start("spec:app", &["-w", "1"]);
    let pid = pid_of(&server, &addr);
    let r = get_ok(&server, &addr, "/raise");
    assert_eq!(r.status, 500, "{r:?}");
    assert!(
        !r.text().contains("boom"),
        "the traceback leaked: {:?}",
        r.text()
    );
    assert_serves(&server, &addr, b"spec app\n");
    assert_eq!(pid_of(&server, &addr), pid, "the worker was replaced");
    server.wait_for_stderr("Error handling request /raise", LOG_WAIT);
    server.wait_for_stderr("RuntimeError: boom from /raise", LOG_WAIT);
}

#[test]
fn exception_after_start_response_cuts_the_response() {
    let (server, addr) = start("spec:app", &["-w", "1", "--keep-alive", "10"]);
    let pid = pid_of(&server, &addr);
    let mut c = connect(&server, &addr);
    match c.request("GET", "/raise-after-start", &[], None) {
        Err(e) => assert!(
            matches!(
                e.kind(),
                ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
            ),
            "expected the connection to be closed mid-body, got {e}\n{}",
            server.report()
        ),
        // Nothing was sent yet when the error happened: a 500 is fine too.
        Ok(r) => assert_eq!(
            r.status,
            500,
            "the cut response looks complete: {r:?}\n{}",
            server.report()
        ),
    }
    server.wait_for_stderr("RuntimeError: boom from /raise-after-start", LOG_WAIT);
    assert_serves(&server, &addr, b"spec app\n");
    assert_eq!(pid_of(&server, &addr), pid, "the worker was replaced");
}

#[test]
fn exc_info_replaces_the_status() {
    let (server, addr) = start("spec:app", &[]);
    let r = get_ok(&server, &addr, "/exc-info");
    assert_eq!(r.status, 500, "{r:?}");
    assert_eq!(r.body, b"handled", "{:?}", r.text());
}

// ---------------------------------------------------------------------------
// 12. / 13. / 14. status lines and headers
// ---------------------------------------------------------------------------

#[test]
fn status_codes_and_reasons() {
    let (server, addr) = start("spec:app", &["--keep-alive", "10"]);
    let mut c = connect(&server, &addr);
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

#[test]
fn repeated_response_headers() {
    let (server, addr) = start("spec:app", &[]);
    let r = get_ok(&server, &addr, "/headers");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header_all("set-cookie"),
        ["a=1", "b=2"],
        "{:?}",
        r.headers
    );
    assert_eq!(r.header("x-custom"), Some("yes"));
    assert_eq!(r.body, b"headers\n");
}

/// Changed with the own HTTP/1.1 layer (issue 11 item 8): a hop-by-hop header from the app is
/// dropped with a warning, as Gunicorn does, instead of a 500; its `Connection: close` is honoured.
#[test]
fn hop_by_hop_header_is_dropped_and_close_honoured() {
    let (server, addr) = start("spec:app", &["--keep-alive", "10"]);
    let mut c = connect(&server, &addr);
    let r = c.request("GET", "/hop-by-hop", &[], None).unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "should not be sent\n");
    assert_eq!(r.header_all("connection"), ["close"], "{r:?}");
    assert!(
        c.peer_closed(Duration::from_secs(2)),
        "the app's Connection: close was not honoured"
    );
    server.wait_for_stderr("hop-by-hop header \"Connection\"", LOG_WAIT);
    assert_serves(&server, &addr, b"spec app\n");
}

#[test]
fn latin1_header_values_are_equal_to_python_literals() {
    let (server, addr) = start("spec:app", &[]);
    let mut c = connect(&server, &addr);
    // Twice on one connection: the second request's wsgi.input is the shared empty one too.
    for _ in 0..2 {
        c.send_raw(
            b"GET /latin1 HTTP/1.1\r\nHost: x\r\nX-Latin: caf\xe9\r\nX-Plain: plain\r\n\r\n",
        )
        .unwrap();
        let r = c.read_response("GET").unwrap();
        assert_eq!(r.status, 200, "{r:?}\n{}", server.report());
        let v = r.json();
        for key in [
            "header_eq",
            "header_key",
            "plain_eq",
            "plain_key",
            "plain_isascii",
            "input_empty",
        ] {
            assert_eq!(v[key], true, "{key}: {v}");
        }
    }
}

// ---------------------------------------------------------------------------
// 15. / 16. the environ
// ---------------------------------------------------------------------------

#[test]
fn environ_over_tcp() {
    let single = spawn("spec:app", &["-w", "1", "--threads", "1"]);
    let multi = spawn("spec:app", &["-w", "2", "--threads", "4"]);
    let addr = ready(&single);
    let port = addr.port().unwrap();

    // %65 is "e": PATH_INFO is decoded, RAW_URI and QUERY_STRING are not.
    let env = environ(
        &single,
        &addr,
        "GET",
        "/%65nviron?x=%20y",
        &[
            ("Host", "example.com:8081"),
            ("X-Multi", "a"),
            ("X-Multi", "b"),
            ("X_Bad", "1"),
            ("X-Good", "yes"),
        ],
        None,
    );
    let s = |k: &str| env.get(k).cloned().unwrap_or(Value::Null);
    assert_eq!(s("REQUEST_METHOD"), "GET");
    assert_eq!(s("SCRIPT_NAME"), "");
    assert_eq!(s("PATH_INFO"), "/environ");
    assert_eq!(s("QUERY_STRING"), "x=%20y");
    assert_eq!(s("RAW_URI"), "/%65nviron?x=%20y");
    assert_eq!(s("SERVER_PROTOCOL"), "HTTP/1.1");
    assert_eq!(s("SERVER_NAME"), "example.com");
    assert_eq!(s("SERVER_PORT"), "8081");
    assert_eq!(s("HTTP_HOST"), "example.com:8081");
    assert_eq!(s("HTTP_X_MULTI"), "a,b");
    assert_eq!(s("HTTP_X_GOOD"), "yes");
    let bad: Vec<&String> = env
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.to_ascii_uppercase().contains("X_BAD") || k.contains("X-BAD"))
        .collect();
    assert!(
        bad.is_empty(),
        "header with an underscore reached the environ: {bad:?}"
    );
    assert_eq!(s("REMOTE_ADDR"), "127.0.0.1");
    let rport = s("REMOTE_PORT");
    let rport: u16 = rport
        .as_str()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("REMOTE_PORT is not a port number: {rport}"));
    assert!(rport > 0 && rport != port, "REMOTE_PORT {rport}");
    assert!(
        s("SERVER_SOFTWARE")
            .as_str()
            .is_some_and(|v| v.starts_with("ferricorn/")),
        "SERVER_SOFTWARE {}",
        s("SERVER_SOFTWARE")
    );
    assert_eq!(s("wsgi.version"), json!([1, 0]));
    assert_eq!(s("wsgi.url_scheme"), "http");
    assert_eq!(s("wsgi.input_terminated"), true);
    assert_eq!(s("wsgi.multithread"), false);
    assert_eq!(s("wsgi.multiprocess"), false);
    assert_eq!(s("wsgi.run_once"), false);
    for k in ["wsgi.errors", "wsgi.input"] {
        assert!(
            env.get(k).is_some_and(|v| !v.is_null()),
            "{k} missing: {env}"
        );
    }

    // A POST: CONTENT_TYPE and CONTENT_LENGTH, without HTTP_ twins.
    let env = environ(
        &single,
        &addr,
        "POST",
        "/environ",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(b"a=1&b=2"),
    );
    let s = |k: &str| env.get(k).cloned().unwrap_or(Value::Null);
    assert_eq!(s("REQUEST_METHOD"), "POST");
    assert_eq!(s("PATH_INFO"), "/environ");
    assert_eq!(s("QUERY_STRING"), "");
    assert_eq!(s("CONTENT_TYPE"), "application/x-www-form-urlencoded");
    assert_eq!(s("CONTENT_LENGTH"), "7");
    assert_eq!(s("SERVER_NAME"), "localhost");
    for k in ["HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"] {
        assert!(env.get(k).is_none(), "{k} is in the environ: {env}");
    }

    // Threads and processes.
    let addr = ready(&multi);
    let env = environ(&multi, &addr, "GET", "/environ", &[], None);
    assert_eq!(env["wsgi.multithread"], true, "with --threads 4");
    assert_eq!(env["wsgi.multiprocess"], true, "with -w 2");
    assert_eq!(env["wsgi.run_once"], false);
}

#[test]
fn environ_over_unix_socket() {
    let (server, addr) = start_unix("spec:app", &[]);
    let env = environ(&server, &addr, "GET", "/environ", &[], None);
    assert_eq!(env["REMOTE_ADDR"], "", "{env}");
    assert!(env.get("REMOTE_PORT").is_none(), "REMOTE_PORT set: {env}");
    assert_eq!(env["PATH_INFO"], "/environ");
    assert_eq!(env["wsgi.url_scheme"], "http");
}

// ---------------------------------------------------------------------------
// 17. url_scheme and proxies
// ---------------------------------------------------------------------------

fn scheme(server: &Server, addr: &Addr, headers: &[(&str, &str)]) -> String {
    let r = fetch(server, addr, "GET", "/scheme", headers, None);
    assert_eq!(r.status, 200, "{r:?}");
    r.text()
}

const HTTPS: [(&str, &str); 1] = [("X-Forwarded-Proto", "https")];

#[test]
fn forwarded_proto_from_trusted_peer() {
    let (server, addr) = start("spec:app", &[]);
    assert_eq!(scheme(&server, &addr, &HTTPS), "https");
    assert_eq!(scheme(&server, &addr, &[]), "http");
    // X-Forwarded-For doesn't change REMOTE_ADDR.
    let env = environ(
        &server,
        &addr,
        "GET",
        "/environ",
        &[("X-Forwarded-For", "10.1.2.3")],
        None,
    );
    assert_eq!(env["REMOTE_ADDR"], "127.0.0.1", "{env}");
    assert_eq!(env["HTTP_X_FORWARDED_FOR"], "10.1.2.3", "{env}");
}

#[test]
fn forwarded_proto_from_untrusted_peer_is_ignored() {
    let (server, addr) = start("spec:app", &["--forwarded-allow-ips", "10.0.0.1"]);
    assert_eq!(scheme(&server, &addr, &HTTPS), "http");
    assert_eq!(scheme(&server, &addr, &[]), "http");
}

#[test]
fn forwarded_proto_over_unix_socket_is_trusted() {
    let (server, addr) = start_unix("spec:app", &["--forwarded-allow-ips", "10.0.0.1"]);
    assert_eq!(scheme(&server, &addr, &HTTPS), "https");
    assert_eq!(scheme(&server, &addr, &[]), "http");
}

// ---------------------------------------------------------------------------
// 18. request limits
// ---------------------------------------------------------------------------

/// GET `target` with `headers` on a new connection; the status.
fn status_of(server: &Server, addr: &Addr, target: &str, headers: &[(&str, &str)]) -> u16 {
    fetch(server, addr, "GET", target, headers, None).status
}

#[test]
fn default_request_limits() {
    let (server, addr) = start("hello:app", &[]);

    // Request line: "GET " + target + " HTTP/1.1" is 13 bytes + target.
    let long = format!("/{}", "a".repeat(5000));
    assert_eq!(
        status_of(&server, &addr, &long, &[]),
        414,
        "5 KB request line"
    );
    assert_serves(&server, &addr, HELLO);
    let ok = format!("/{}", "a".repeat(4000));
    assert_eq!(
        status_of(&server, &addr, &ok, &[]),
        200,
        "4 KB request line"
    );

    // Header count: Host + 100 others = 101 fields.
    let names: Vec<String> = (0..100).map(|i| format!("X-H{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    assert_eq!(
        status_of(&server, &addr, "/", &many),
        431,
        "101 header fields"
    );
    assert_serves(&server, &addr, HELLO);
    assert_eq!(
        status_of(&server, &addr, "/", &many[..80]),
        200,
        "81 header fields"
    );

    // Header size.
    let big = "b".repeat(9000);
    assert_eq!(
        status_of(&server, &addr, "/", &[("X-Big", &big)]),
        431,
        "9000-byte header"
    );
    assert_serves(&server, &addr, HELLO);
    let fine = "b".repeat(7000);
    assert_eq!(
        status_of(&server, &addr, "/", &[("X-Big", &fine)]),
        200,
        "7000-byte header"
    );
}

#[test]
fn lowered_request_line_limit() {
    let (server, addr) = start("hello:app", &["--limit-request-line", "100"]);
    let long = format!("/{}", "a".repeat(150));
    assert_eq!(status_of(&server, &addr, &long, &[]), 414, "~160-byte line");
    assert_serves(&server, &addr, HELLO);
    let short = format!("/{}", "a".repeat(50));
    assert_eq!(status_of(&server, &addr, &short, &[]), 200, "~64-byte line");
}

// ---------------------------------------------------------------------------
// 19. malformed requests
// ---------------------------------------------------------------------------

#[test]
fn malformed_requests() {
    let (server, addr) = start("spec:app", &[]);
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
        assert_serves(&server, &addr, b"spec app\n");
    }
}

// ---------------------------------------------------------------------------
// 20. access log
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// 21. wsgi.errors
// ---------------------------------------------------------------------------

#[test]
fn wsgi_errors_goes_to_stderr() {
    let (server, addr) = start("spec:app", &[]);
    let r = get_ok(&server, &addr, "/errors");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]), "{r:?}");
    server.wait_for_stderr("message to wsgi.errors", LOG_WAIT);
}

// ---------------------------------------------------------------------------
// 22. threads
// ---------------------------------------------------------------------------

#[test]
fn threads_serve_concurrently() {
    let four = spawn("spec:app", &["-w", "1", "--threads", "4"]);
    let one = spawn("spec:app", &["-w", "1", "--threads", "1"]);
    let (addr4, addr1) = (ready(&four), ready(&one));

    let t = concurrent_gets(&four, &addr4, "/sleep?s=0.5", 4);
    assert!(
        t < Duration::from_millis(1600),
        "4 x 0.5 s with --threads 4 took {t:?}"
    );

    let t = concurrent_gets(&one, &addr1, "/sleep?s=0.5", 4);
    assert!(
        t >= Duration::from_millis(1900),
        "4 x 0.5 s with --threads 1 -w 1 took only {t:?}"
    );
}

// ---------------------------------------------------------------------------
// 23. on TCP, responses ready in the same pass of the event loop go out together
// ---------------------------------------------------------------------------

/// With `--threads 1` the app runs on the event-loop thread. Makes two requests readable in one
/// poll of the worker (they are sent while another request holds the loop), each taking 0.2 s
/// in the app, and returns, for each response, whether the other request's app call had
/// already finished when that response arrived.
fn other_ran_before_each_response(server: &Server, addr: &Addr) -> [bool; 2] {
    let dir = server.tmp_path().to_path_buf();
    let file = |name: &str| dir.join(name).display().to_string();

    // Both connections are established (and idle in the worker) before anything is sent.
    let mut a = connect(server, addr);
    let mut b = connect(server, addr);
    // A request that holds the event loop for 0.5 s; while it runs, both requests arrive, so
    // the worker sees them readable in one poll once it is free.
    let mut blocker = connect(server, addr);
    let target = format!("/mark?started={}&s=0.5", file("blocker"));
    blocker
        .send_raw(&build_request("GET", &target, &[], None))
        .unwrap();
    let t0 = Instant::now();
    while !dir.join("blocker").exists() {
        assert!(t0.elapsed() < LOG_WAIT, "the blocker never started");
        thread::sleep(Duration::from_millis(5));
    }
    for (conn, name) in [(&mut a, "a"), (&mut b, "b")] {
        let target = format!("/mark?s=0.2&done={}", file(name));
        conn.send_raw(&build_request("GET", &target, &[], None))
            .unwrap();
    }
    assert!(
        !dir.join("a").exists() && !dir.join("b").exists(),
        "the requests ran while the blocker held the loop"
    );

    // Each response is checked the moment it is complete: has the other request run?
    let readers: Vec<_> = [(a, "b"), (b, "a")]
        .into_iter()
        .map(|(mut conn, other)| {
            let other = dir.join(other);
            thread::spawn(move || -> io::Result<(Response, bool)> {
                let r = conn.read_response("GET")?;
                Ok((r, other.exists()))
            })
        })
        .collect();
    let mut seen = [false; 2];
    for (i, reader) in readers.into_iter().enumerate() {
        let (r, other_ran) = reader
            .join()
            .expect("reader panicked")
            .unwrap_or_else(|e| panic!("response {i}: {e}\n{}", server.report()));
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, &b"marked"[..]),
            "{r:?}"
        );
        seen[i] = other_ran;
    }
    let r = blocker.read_response("GET").unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    seen
}

/// On TCP both responses are written after both app calls (src/coalesce.rs), so a client
/// waiting on both is woken once, not once per response.
#[test]
fn tcp_responses_ready_together_are_written_after_both_ran() {
    let (server, addr) = start("spec:app", &["-w", "1", "--threads", "1"]);
    assert_eq!(
        other_ran_before_each_response(&server, &addr),
        [true, true],
        "a response was written before the other ready request had run"
    );
}

/// On a unix socket (where coalescing measured as a loss) each response is written as soon as
/// its app call returns: the first one arrives before the other request has run.
#[test]
fn unix_responses_are_written_as_soon_as_ready() {
    let (server, addr) = start_unix("spec:app", &["-w", "1", "--threads", "1"]);
    let seen = other_ran_before_each_response(&server, &addr);
    assert_eq!(
        seen.iter().filter(|ran| **ran).count(),
        1,
        "expected exactly one response to arrive after the other request ran: {seen:?}"
    );
}

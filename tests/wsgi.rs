//! The WSGI contract (PEP 3333; issue 2, acceptance 1, 2 and 5) against the real binary: the
//! environ over TCP and over a unix socket, header values as latin-1 `str`, `wsgi.input`
//! (read to the end, readline, iteration, read(n); with Content-Length, chunked, and a body
//! spilled to disk), `start_response` (repeated headers, `exc_info`), `write()`, response
//! iterables sent as they are produced and always closed, `wsgi.file_wrapper` (a file and a
//! file-like object), an app that raises before or after `start_response`, and `wsgi.errors`.
//!
//! Every server binds `127.0.0.1:0` or a unix socket inside its own temp dir and reads the
//! address back from the log, so the tests run in parallel. Every network read and write has a
//! timeout.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{client::*, examples::*, server::*};
use serde_json::{Value, json};

/// GET /pid: the worker's pid.
fn pid_of(server: &Server, addr: &Addr) -> i32 {
    let r = get_ok(server, addr, "/pid");
    assert_eq!(r.status, 200, "/pid: {r:?}\n{}", server.report());
    r.text()
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("bad /pid body {:?}: {e}", r.text()))
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

#[test]
fn write_callable() {
    let (server, addr) = start("spec:app", &[]);
    let r = get_ok(&server, &addr, "/write");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, b"first;second;third", "{:?}", r.text());
}

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

#[test]
fn wsgi_errors_goes_to_stderr() {
    let (server, addr) = start("spec:app", &[]);
    let r = get_ok(&server, &addr, "/errors");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]), "{r:?}");
    server.wait_for_stderr("message to wsgi.errors", LOG_WAIT);
}

/// A WSGI worker imports nothing it does not use: telling an ASGI app from a WSGI one
/// (`--interface auto`) once imported asyncio in every worker, and ssl with it (libssl and
/// libcrypto mapped: about 8 MiB more RSS per worker, 15.9 -> 24 MiB on hello world).
#[test]
fn a_wsgi_worker_does_not_import_asyncio_or_ssl() {
    let apps = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/apps");
    let s = ferricorn()
        .cwd(&apps)
        .args(["-b", "127.0.0.1:0", "modules:app"])
        .spawn();
    s.wait_ready(Duration::from_secs(30));
    let r = get(&s.addr(), "/").unwrap();
    assert_eq!(r.status, 200, "{}", s.report());
    let got: Value = serde_json::from_str(&r.text()).unwrap();
    assert_eq!(
        got,
        json!({"asyncio": false, "ssl": false, "concurrent.futures": false}),
        "{}",
        s.report()
    );
}

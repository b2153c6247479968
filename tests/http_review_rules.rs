//! The request path review's smaller findings, each over a real socket: unfinished large heads
//! are bounded by a per-worker budget (finding 9), a flood of bad requests does not flood the log,
//! a new connection's header timeout runs from the accept, and the RFC 9110/9112 and Gunicorn
//! rules on chunk sizes, Host ports, absolute-form targets, CONNECT, duplicate Content-Type,
//! 204 framing and status lines.

mod common;
mod http_support;

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use common::client::{Addr, is_timeout};
use common::server::Server;
use http_support::*;

const WAIT: Duration = Duration::from_secs(10);

fn review(extra: &[&str]) -> (Server, Addr) {
    start_app("review:app", extra)
}

/// The first response to `raw` on a new connection (status, whole text).
fn first_reply(server: &Server, addr: &Addr, raw: &[u8]) -> (u16, String) {
    let data = exchange(server, addr, raw, WAIT);
    let text = String::from_utf8_lossy(&data).into_owned();
    (status_of(&data).unwrap_or(0), text)
}

/// Finding 9: a head of a valid size but never finished cost ~1 MiB of buffer outside any
/// budget (400 of them: +360 MiB). Bytes of a head past 32 KiB now come from a per-worker
/// budget of 16 MiB; a large head that finds it spent is refused with 503.
#[test]
fn large_unfinished_heads_are_bounded_by_the_head_budget() {
    let (server, addr) = review(&["--header-timeout", "60"]);
    // 95 fields of 7.5 KB: ~720 KB, within the default limits (100 fields of 8190 bytes).
    let mut head = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..95 {
        head.extend_from_slice(format!("X-Big-{i}: ").as_bytes());
        head.extend_from_slice(&[b'v'; 7500]);
        head.extend_from_slice(b"\r\n");
    }
    let mut conns = Vec::new();
    let mut refused = 0;
    for _ in 0..40 {
        let mut c = connect(&server, &addr, Duration::from_millis(300));
        match c.send_raw(&head) {
            Ok(()) => {}
            Err(e) if matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) => {}
            Err(e) => panic!("sending: {e}"),
        }
        let got = match c.read_until_close() {
            Ok(d) => d,
            Err(e) if is_timeout(&e) || e.kind() == ErrorKind::ConnectionReset => {
                c.buffered().to_vec()
            }
            Err(e) => panic!("{e}"),
        };
        if status_of(&got) == Some(503) {
            refused += 1;
            continue;
        }
        assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
        conns.push(c);
    }
    assert!(
        (10..=30).contains(&refused),
        "{refused} of 40 unfinished 720 KB heads were refused with 503 (the budget holds ~16)\n{}",
        server.report()
    );
    // Those that fit are still served once they finish their head.
    let mut served = 0;
    for c in conns.iter_mut() {
        c.set_timeout(WAIT);
        c.send_raw(b"\r\n").unwrap();
        let r = c.read_response("GET").unwrap();
        assert_eq!(r.status, 200);
        served += 1;
    }
    assert_eq!(served, 40 - refused);
    drop(conns);
    // The budget is returned when they close.
    let mut c = connect(&server, &addr, WAIT);
    let mut big = head.clone();
    big.extend_from_slice(b"\r\n");
    c.send_raw(&big).unwrap();
    assert_eq!(c.read_response("GET").unwrap().status, 200);
}

/// A flood of malformed requests logged one warning each (a slowloris or a scanner flooded the
/// log); now at most 20 per 10 s, the next line saying how many were not logged.
#[test]
fn rejected_requests_are_logged_at_a_bounded_rate() {
    let (server, addr) = review(&[]);
    for _ in 0..60 {
        let (status, _) = first_reply(
            &server,
            &addr,
            b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        );
        assert_eq!(status, 400);
    }
    server.wait_for_stderr_count("Rejected request", 1, LOG_WAIT);
    std::thread::sleep(Duration::from_millis(300));
    let n = server.count_stderr("Rejected request");
    assert!(
        n <= 20,
        "{n} lines for 60 rejected requests\n{}",
        server.report()
    );
}

/// The header timeout of a new connection runs from the accept: a client that sends its first
/// byte late does not get a fresh `--header-timeout` from that byte (it used to: up to twice the
/// setting).
#[test]
fn a_new_connections_header_timeout_runs_from_the_accept() {
    let (server, addr) = review(&["--header-timeout", "2"]);
    let mut c = connect(&server, &addr, Duration::from_secs(10));
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    c.send_raw(b"G").unwrap();
    let data = match c.read_until_close() {
        Ok(d) => d,
        Err(e) if e.kind() == ErrorKind::ConnectionReset => c.buffered().to_vec(),
        Err(e) => panic!("{e}"),
    };
    let took = t0.elapsed();
    assert_eq!(
        status_of(&data),
        Some(408),
        "{:?}",
        String::from_utf8_lossy(&data)
    );
    assert!(
        took < Duration::from_millis(3000),
        "closed {took:?} after the accept with --header-timeout 2"
    );
}

/// RFC 9112 §7.1 and Gunicorn: a chunk size may have leading zeros, and whitespace (BWS) may
/// come before `;ext`; both were refused with 400.
#[test]
fn chunk_sizes_with_leading_zeros_and_whitespace_before_extensions() {
    let (server, addr) = review(&[]);
    let (status, text) = first_reply(
        &server,
        &addr,
        b"POST /echo-len HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          00000003\r\nabc\r\n2 ;x=y\r\nde\r\n000\r\n\r\n",
    );
    assert_eq!(status, 200, "{text}");
    assert!(text.ends_with("\r\n\r\n5"), "{text}");
    // Whitespace with no extension after it is still refused.
    let (status, _) = first_reply(
        &server,
        &addr,
        b"POST /echo-len HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n",
    );
    assert_eq!(status, 400);
}

/// Requests the server now refuses: a Host port past 65535, a duplicate Content-Type (a
/// singleton field; Gunicorn refuses it too), an absolute-form target whose authority is not a
/// valid host, and CONNECT (501: an application server makes no tunnels; it used to reach the
/// app with PATH_INFO "example.com:443").
#[test]
fn bad_hosts_duplicate_content_type_and_connect_are_refused() {
    let (server, addr) = review(&[]);
    let cases: [(&[u8], u16); 6] = [
        (b"GET / HTTP/1.1\r\nHost: a:99999\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a:65536\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a:65535\r\nConnection: close\r\n\r\n", 200),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: a/b\r\nContent-Type: c/d\r\nContent-Length: 0\r\n\r\n",
            400,
        ),
        (b"GET http://u@h/x HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 501),
    ];
    for (raw, want) in cases {
        let (status, text) = first_reply(&server, &addr, raw);
        assert_eq!(
            status,
            want,
            "{:?} -> {text:?}",
            String::from_utf8_lossy(raw)
        );
    }
}

/// RFC 9112 §3.2.2: the authority of an absolute-form target wins over Host for SERVER_NAME
/// and SERVER_PORT (it gave Host's), and the scheme matches in any case (`HTTP://` was not
/// recognised).
#[test]
fn an_absolute_form_targets_authority_is_the_server_name() {
    let (server, addr) = review(&[]);
    let (_, text) = first_reply(
        &server,
        &addr,
        b"GET http://target.example:8080/environ HTTP/1.1\r\nHost: header.example\r\nConnection: close\r\n\r\n",
    );
    assert!(
        text.contains("SERVER_NAME=target.example\n") && text.contains("SERVER_PORT=8080\n"),
        "{text}"
    );
    let (_, text) = first_reply(
        &server,
        &addr,
        b"GET HTTP://upper.example:81/environ HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    assert!(
        text.contains("SERVER_NAME=upper.example\n") && text.contains("SERVER_PORT=81\n"),
        "{text}"
    );
}

/// RFC 9110 §8.6: no Content-Length on a 204 (the app's was passed on); status lines: a bare
/// code is accepted as Gunicorn does (was a 500), 600 is refused (was sent), and a latin-1
/// reason goes out as latin-1 bytes (was UTF-8).
#[test]
fn response_framing_and_status_lines_follow_the_rfcs() {
    let (server, addr) = review(&[]);
    let (status, text) = first_reply(
        &server,
        &addr,
        b"GET /status204-cl HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 204);
    assert!(
        !text.to_ascii_lowercase().contains("content-length"),
        "{text:?}"
    );
    let (status, text) = first_reply(
        &server,
        &addr,
        b"GET /status-line?s=bare HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200, "{text:?}");
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text:?}");
    let (status, _) = first_reply(
        &server,
        &addr,
        b"GET /status-line?s=big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 500);
    let data = exchange(
        &server,
        &addr,
        b"GET /status-line?s=latin1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        WAIT,
    );
    assert!(
        data.starts_with(b"HTTP/1.1 200 N\xf6 Problem\r\n"),
        "{:?}",
        String::from_utf8_lossy(&data)
    );
}

/// `bool(wsgi.input)` is true, as for a file, for a body streamed to the app (its `__len__`
/// counts only bytes already buffered, which made a 2 MiB upload's input false).
#[test]
fn wsgi_input_is_always_true() {
    let (server, addr) = review(&["--threads", "2"]);
    let body = vec![b'b'; 2 << 20];
    let mut c = connect(&server, &addr, WAIT);
    let r = c.request("POST", "/input-truth", &[], Some(&body)).unwrap();
    assert_eq!(
        r.text(),
        format!("bool=True read={}", 2 << 20),
        "{}",
        server.report()
    );
}

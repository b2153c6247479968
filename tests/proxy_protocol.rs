//! `--proxy-protocol` and `--proxy-allow-from` against the real binary, with raw sockets: a
//! PROXY v1 line or a v2 header, then requests; what the app sees (`REMOTE_ADDR`,
//! `REMOTE_PORT`, Gunicorn's `PROXY_*` keys) and what the access log says (`%(h)s`); headers
//! from untrusted peers, malformed ones, one of the wrong version and one that never ends.
//!
//! Every server binds `127.0.0.1:0` or a unix socket in its temp dir; every read has a timeout.

mod common;

use std::io::ErrorKind;
use std::time::Duration;

use common::{client::*, examples, server::*};
use serde_json::Value;

const IO: Duration = Duration::from_secs(10);
const LOG_WAIT: Duration = Duration::from_secs(10);

fn spawn(extra: &[&str]) -> (Server, Addr) {
    let server = examples::spawn("spec:app", extra);
    let addr = examples::ready(&server);
    (server, addr)
}

fn connect(server: &Server, addr: &Addr) -> Conn {
    let mut c = Conn::connect(addr)
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}\n{}", server.report()));
    c.set_timeout(IO);
    c
}

/// Sends `prefix`, then `GET /environ` (keep-alive) on the same connection; the environ.
fn environ_after(server: &Server, c: &mut Conn, prefix: &[u8]) -> Value {
    c.send_raw(prefix).unwrap();
    let r = c
        .request("GET", "/environ", &[], None)
        .unwrap_or_else(|e| panic!("GET /environ after the header: {e}\n{}", server.report()));
    assert_eq!(r.status, 200, "{r:?}\n{}", server.report());
    r.json()
}

/// Sends `raw`; the server must close without a byte of response within 5 s.
fn closed_silently(server: &Server, addr: &Addr, raw: &[u8]) {
    let mut c = connect(server, addr);
    c.set_timeout(Duration::from_secs(5));
    if let Err(e) = c.send_raw(raw) {
        assert!(
            matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset),
            "{e}"
        );
    }
    let got = match c.read_until_close() {
        Ok(d) => d,
        Err(e) if e.kind() == ErrorKind::ConnectionReset => c.buffered().to_vec(),
        Err(e) => panic!(
            "the server neither closed nor answered ({e}) for {:?}\n{}",
            String::from_utf8_lossy(raw),
            server.report()
        ),
    };
    assert!(
        got.is_empty(),
        "expected a silent close for {:?}, got {:?}",
        String::from_utf8_lossy(raw),
        String::from_utf8_lossy(&got)
    );
}

fn v2(cmd: u8, fam: u8, addrs: &[u8]) -> Vec<u8> {
    let mut v = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v.push(0x20 | cmd);
    v.push(fam);
    v.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
    v.extend_from_slice(addrs);
    v
}

fn v2_tcp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, tlvs: &[u8]) -> Vec<u8> {
    let mut a = Vec::new();
    a.extend_from_slice(&src);
    a.extend_from_slice(&dst);
    a.extend_from_slice(&sport.to_be_bytes());
    a.extend_from_slice(&dport.to_be_bytes());
    a.extend_from_slice(tlvs);
    v2(1, 0x11, &a)
}

fn s(env: &Value, k: &str) -> String {
    env.get(k)
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("{k} missing or not a string: {env}"))
        .to_string()
}

#[test]
fn v1_header_sets_the_client_for_the_app_and_the_access_log() {
    let (server, addr) = spawn(&["--proxy-protocol", "--access-logfile", "-"]);
    let mut c = connect(&server, &addr);
    let env = environ_after(
        &server,
        &mut c,
        b"PROXY TCP4 203.0.113.7 198.51.100.2 40001 443\r\n",
    );
    assert_eq!(s(&env, "REMOTE_ADDR"), "203.0.113.7");
    assert_eq!(s(&env, "REMOTE_PORT"), "40001");
    assert_eq!(s(&env, "PROXY_PROTOCOL"), "TCP4");
    assert_eq!(s(&env, "PROXY_ADDR"), "198.51.100.2");
    assert_eq!(s(&env, "PROXY_PORT"), "443");
    // The next request on the connection has no header of its own and keeps the client.
    let r = c.request("GET", "/environ", &[], None).unwrap();
    assert_eq!(s(&r.json(), "REMOTE_ADDR"), "203.0.113.7");
    server.wait_for_stdout("203.0.113.7 - - [", LOG_WAIT);
    // Without a header the connection is plain HTTP, its peer the client (as in Gunicorn).
    let mut plain = connect(&server, &addr);
    let env = environ_after(&server, &mut plain, b"");
    assert_eq!(s(&env, "REMOTE_ADDR"), "127.0.0.1");
    assert!(env.get("PROXY_PROTOCOL").is_none(), "{env}");
    // v1 over IPv6, and UNKNOWN (the real peer stays).
    let mut c = connect(&server, &addr);
    let env = environ_after(&server, &mut c, b"PROXY TCP6 2001:db8::7 ::1 5 80\r\n");
    assert_eq!(
        (s(&env, "REMOTE_ADDR"), s(&env, "REMOTE_PORT")),
        ("2001:db8::7".into(), "5".into())
    );
    let mut c = connect(&server, &addr);
    let env = environ_after(&server, &mut c, b"PROXY UNKNOWN\r\n");
    assert_eq!(s(&env, "REMOTE_ADDR"), "127.0.0.1");
    assert_eq!(s(&env, "PROXY_PROTOCOL"), "UNKNOWN");
}

#[test]
fn v2_header_with_tlvs_local_and_other_families() {
    let (server, addr) = spawn(&["--proxy-protocol", "v2"]);
    // TCP4 with two TLVs (an authority and a unique id), skipped.
    let tlvs = [
        0x02, 0x00, 0x03, b'a', b'p', b'p', 0x05, 0x00, 0x02, 0xaa, 0xbb,
    ];
    let mut c = connect(&server, &addr);
    let env = environ_after(
        &server,
        &mut c,
        &v2_tcp4([192, 0, 2, 44], 55555, [10, 0, 0, 1], 8443, &tlvs),
    );
    assert_eq!(s(&env, "REMOTE_ADDR"), "192.0.2.44");
    assert_eq!(s(&env, "REMOTE_PORT"), "55555");
    assert_eq!(s(&env, "PROXY_PROTOCOL"), "TCP4");
    assert_eq!(s(&env, "PROXY_PORT"), "8443");
    // TCP6.
    let mut a = vec![0u8; 36];
    a[0..2].copy_from_slice(&[0x20, 0x01]);
    a[15] = 9;
    a[31] = 1;
    a[32..34].copy_from_slice(&1234u16.to_be_bytes());
    a[34..36].copy_from_slice(&80u16.to_be_bytes());
    let mut c = connect(&server, &addr);
    let env = environ_after(&server, &mut c, &v2(1, 0x21, &a));
    assert_eq!(s(&env, "REMOTE_ADDR"), "2001::9");
    assert_eq!(s(&env, "PROXY_ADDR"), "::1");
    // LOCAL (the proxy's health check), UNSPEC, UDP and unix families: the real peer.
    for (cmd, fam, addrs, want) in [
        (0u8, 0x00u8, vec![], "LOCAL"),
        (1, 0x00, vec![], "UNSPEC"),
        (1, 0x12, vec![1; 12], "UNSPEC"),
        (1, 0x31, vec![0; 216], "UNSPEC"),
    ] {
        let mut c = connect(&server, &addr);
        let env = environ_after(&server, &mut c, &v2(cmd, fam, &addrs));
        assert_eq!(s(&env, "REMOTE_ADDR"), "127.0.0.1", "{want}");
        assert_eq!(s(&env, "PROXY_PROTOCOL"), want);
    }
    // A v1 line is refused when only v2 is on.
    closed_silently(
        &server,
        &addr,
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    server.wait_for_stderr("--proxy-protocol does not take v1", LOG_WAIT);
}

#[test]
fn header_from_a_peer_outside_proxy_allow_from_closes_the_connection() {
    let (server, addr) = spawn(&["--proxy-protocol", "--proxy-allow-from", "10.0.0.0/8"]);
    closed_silently(
        &server,
        &addr,
        b"PROXY TCP4 203.0.113.7 198.51.100.2 40001 443\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    let line = server.wait_for_stderr("not in --proxy-allow-from", LOG_WAIT);
    assert!(
        line.contains("[WARNING]") && line.contains("127.0.0.1:"),
        "{line}"
    );
    closed_silently(
        &server,
        &addr,
        &v2_tcp4([1, 2, 3, 4], 1, [5, 6, 7, 8], 2, &[]),
    );
    // The same peer may still speak plain HTTP; it is then its own client.
    let mut c = connect(&server, &addr);
    let env = environ_after(&server, &mut c, b"");
    assert_eq!(s(&env, "REMOTE_ADDR"), "127.0.0.1");
}

#[test]
fn malformed_and_stalled_headers_close_the_connection_with_a_warning() {
    let (server, addr) = spawn(&["--proxy-protocol", "--header-timeout", "1"]);
    for (raw, why) in [
        (
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\nGET / HTTP/1.1\r\n\r\n"[..],
            "two ports",
        ),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 70000\r\n", "invalid port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\nGET /", "CRLF"),
        (b"PROXY SCTP 1.2.3.4 5.6.7.8 1 2\r\n", "unknown protocol"),
        (
            &[b"PROXY UNKNOWN ".as_slice(), &[b'x'; 120]].concat(),
            "107 bytes",
        ),
    ] {
        closed_silently(&server, &addr, raw);
        server.wait_for_stderr(why, LOG_WAIT);
    }
    let mut bad_version = v2_tcp4([1, 2, 3, 4], 1, [5, 6, 7, 8], 2, &[]);
    bad_version[12] = 0x31;
    closed_silently(&server, &addr, &bad_version);
    server.wait_for_stderr("version other than 2", LOG_WAIT);
    closed_silently(&server, &addr, &v2(1, 0x11, &[1, 2, 3]));
    server.wait_for_stderr("too short for its addresses", LOG_WAIT);
    // A header that never ends is cut by --header-timeout.
    let start = std::time::Instant::now();
    closed_silently(&server, &addr, b"PROXY TCP4 1.2.3.4 5.6");
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    server.wait_for_stderr("not received in time (--header-timeout)", LOG_WAIT);
    // None of this touched the worker.
    assert!(!server.stderr().contains("panicked"), "{}", server.report());
    let mut c = connect(&server, &addr);
    let env = environ_after(&server, &mut c, b"PROXY TCP4 9.9.9.9 1.1.1.1 9 9\r\n");
    assert_eq!(s(&env, "REMOTE_ADDR"), "9.9.9.9");
}

#[test]
fn unix_socket_peer_may_send_a_header_whatever_proxy_allow_from_says() {
    let (server, addr) = spawn(&[
        "-b",
        "unix:{tmp}/pp.sock",
        "--proxy-protocol",
        "v1",
        "--proxy-allow-from",
        "10.9.9.9",
    ]);
    let mut c = connect(&server, &addr);
    let env = environ_after(
        &server,
        &mut c,
        b"PROXY TCP4 203.0.113.9 127.0.0.1 4000 80\r\n",
    );
    assert_eq!(s(&env, "REMOTE_ADDR"), "203.0.113.9");
    assert_eq!(s(&env, "REMOTE_PORT"), "4000");
}

#[test]
fn forwarded_headers_stay_trusted_by_the_proxy_not_by_the_client_it_names() {
    // The TCP peer (127.0.0.1) is the proxy and is trusted; the client it names is not in the
    // list, and does not need to be: it is the proxy that sets X-Forwarded-Proto.
    let (server, addr) = spawn(&["--proxy-protocol", "auto"]);
    let mut c = connect(&server, &addr);
    c.send_raw(b"PROXY TCP4 203.0.113.7 127.0.0.1 40001 80\r\n")
        .unwrap();
    let r = c
        .request("GET", "/scheme", &[("X-Forwarded-Proto", "https")], None)
        .unwrap();
    assert_eq!(r.text(), "https");
    let (server, addr) = spawn(&["--proxy-protocol", "--forwarded-allow-ips", "203.0.113.7"]);
    let mut c = connect(&server, &addr);
    c.send_raw(b"PROXY TCP4 203.0.113.7 127.0.0.1 40001 80\r\n")
        .unwrap();
    let r = c
        .request("GET", "/scheme", &[("X-Forwarded-Proto", "https")], None)
        .unwrap();
    assert_eq!(r.text(), "http", "{}", server.report());
}

#[test]
fn without_proxy_protocol_a_header_is_not_http() {
    let (server, addr) = spawn(&[]);
    let mut c = connect(&server, &addr);
    c.set_timeout(Duration::from_secs(5));
    c.send_raw(
        b"PROXY TCP4 203.0.113.7 198.51.100.2 40001 443\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    let r = c.read_response("GET").unwrap();
    assert_eq!(r.status, 400, "{r:?}");
}

//! ASGI WebSockets against the real binary (issue 15): echo of text and bytes over TCP and a
//! unix socket, subprotocols and accept headers, close codes both ways, the app raising (1011),
//! denial (403 and the `websocket.http.response` extension), a bad handshake, a client that
//! does not read, the access-log line at close, and a HUP with a WebSocket open (1001 after
//! `--graceful-timeout`, no failed request). Client: the `websockets` library
//! (`tests/asgi/client.py`), and a raw socket where the test needs one.

mod asgi_support;
mod common;

use std::time::{Duration, Instant};

use asgi_support::*;
use common::client::*;
use common::server::*;
use serde_json::json;

const T: Duration = Duration::from_secs(20);

fn echo_checks(s: &Server, addr: &Addr) {
    let r = client(
        s,
        addr,
        "/ws",
        json!({"ws": true, "subprotocols": ["superchat", "chat"], "send": ["hello", "subprotocols"]}),
    );
    assert_eq!(r["subprotocol"], "chat", "{r}");
    assert_eq!(r["headers"]["x-ferricorn-test"], "yes", "{r}");
    assert_eq!(r["received"][0], "hello", "{r}");
    assert_eq!(r["received"][1], "[\"superchat\", \"chat\"]", "{r}");
    assert_eq!(r["close_code"], 1000, "{r}");
    let r = client(
        s,
        addr,
        "/ws",
        json!({"ws": true, "binary": true, "send": ["bytes!"]}),
    );
    assert_eq!(r["received"][0], json!({"bytes": "bytes!"}), "{r}");
    assert_eq!(r["subprotocol"], serde_json::Value::Null, "{r}");
    // The app saw the client's close code.
    assert_eq!(wait_mark(s, "ws-disconnect", T).as_deref(), Some("1000"));
}

#[test]
fn echo_over_tcp() {
    let (s, addr) = start("raw:app", &[]);
    echo_checks(&s, &addr);
    // One access-log line per connection, when it ends, as a 101.
    s.wait_for_stdout("\"GET /ws HTTP/1.1\" 101", T);
}

#[test]
fn echo_over_a_unix_socket() {
    let (s, addr) = start("raw:app", &["-b", "unix:{tmp}/s.sock"]);
    echo_checks(&s, &addr);
}

#[test]
fn close_codes_errors_and_denials() {
    let (s, addr) = start("raw:app", &[]);
    let r = client(
        &s,
        &addr,
        "/ws",
        json!({"ws": true, "send": ["close:4321"]}),
    );
    assert_eq!(
        (r["close_code"].clone(), r["close_reason"].clone()),
        (json!(4321), json!("bye")),
        "{r}"
    );
    let r = client(&s, &addr, "/ws", json!({"ws": true, "send": ["raise"]}));
    assert_eq!(r["close_code"], 1011, "{r}");
    s.wait_for_stderr("RuntimeError: the app failed mid-conversation", T);
    let r = client(&s, &addr, "/ws-deny", json!({"ws": true}));
    assert_eq!(r["rejected"], 403, "{r}");
    let r = client(&s, &addr, "/ws-deny-body", json!({"ws": true}));
    assert_eq!(r["rejected"], 401, "{r}");
    assert_eq!(r["body"], "who are you?", "{r}");
}

/// A handshake by hand: `version` as the Sec-WebSocket-Version.
fn handshake(addr: &Addr, path: &str, version: &str) -> (Conn, Response) {
    let mut c = Conn::connect(addr).unwrap();
    c.set_timeout(T);
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: {version}\r\n\r\n"
    );
    c.send_raw(req.as_bytes()).unwrap();
    let r = c.read_response("GET").unwrap();
    (c, r)
}

#[test]
fn the_handshake_is_checked() {
    let (_s, addr) = start("raw:app", &[]);
    let (_, r) = handshake(&addr, "/ws", "8");
    assert_eq!(r.status, 426);
    assert_eq!(r.header("sec-websocket-version"), Some("13"));
    let (_, r) = handshake(&addr, "/ws", "13");
    assert_eq!(r.status, 101);
    // RFC 6455's example key and answer.
    assert_eq!(
        r.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
}

#[test]
fn a_client_that_does_not_read_holds_back_the_app() {
    let (s, addr) = start("raw:app", &[]);
    let (c, r) = handshake(&addr, "/ws-flood", "13");
    assert_eq!(r.status, 101);
    std::thread::sleep(Duration::from_secs(2));
    let a: u64 = wait_mark(&s, "ws-flood", T).unwrap().parse().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let b: u64 = wait_mark(&s, "ws-flood", T).unwrap().parse().unwrap();
    assert_eq!(a, b, "send() kept returning while the client read nothing");
    assert!(
        a < 200,
        "{a} messages of 64 KiB were accepted without a reader"
    );
    drop(c);
    // Once the client is gone, the app's send() fails (OSError) and it ends.
    assert!(
        wait_until(T, || s.stdout().contains("\"GET /ws-flood HTTP/1.1\" 101")),
        "{}",
        s.report()
    );
}

#[test]
fn hup_closes_an_open_websocket_with_1001_and_loses_no_request() {
    // A unix socket: a reload keeps it (127.0.0.1:0 would be bound anew, elsewhere).
    let (s, addr) = start(
        "raw:app",
        &["--graceful-timeout", "2", "-b", "unix:{tmp}/s.sock"],
    );
    let old = get(&addr, "/pid").unwrap().text();
    let ws = std::thread::spawn({
        let addr = addr.clone();
        move || {
            let mut c = Conn::connect(&addr).unwrap();
            c.set_timeout(Duration::from_secs(30));
            let req = "GET /ws-hold HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                       Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
            c.send_raw(req.as_bytes()).unwrap();
            let r = c.read_response("GET").unwrap();
            assert_eq!(r.status, 101);
            let opened = Instant::now();
            // The server's close frame: 0x88, length, code (big-endian), reason.
            let frame = c.read_bytes(4).unwrap_or_default();
            (frame, opened.elapsed())
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = std::thread::spawn({
        let (addr, stop) = (addr.clone(), stop.clone());
        move || {
            let (mut ok, mut failed) = (0, 0);
            let until = Instant::now() + Duration::from_secs(20);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < until {
                match get(&addr, "/pid") {
                    Ok(r) if r.status == 200 => ok += 1,
                    _ => failed += 1,
                }
            }
            (ok, failed)
        }
    });
    s.signal(libc::SIGHUP);
    let (frame, open_for) = ws.join().unwrap();
    assert!(
        frame.len() >= 4 && frame[0] == 0x88,
        "no close frame: {frame:?}\n{}",
        s.report()
    );
    assert_eq!(u16::from_be_bytes([frame[2], frame[3]]), 1001, "{frame:?}");
    assert!(
        open_for >= Duration::from_millis(1000),
        "closed after {open_for:?}"
    );
    assert!(
        wait_until(T, || get(&addr, "/pid").is_ok_and(|r| r.text() != old)),
        "{}",
        s.report()
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, failed) = load.join().unwrap();
    assert_eq!(failed, 0, "{ok} ok, {failed} failed\n{}", s.report());
    assert!(ok > 0);
    assert_eq!(wait_mark(&s, "ws-hold", T).as_deref(), Some("1001"));
}

#[test]
fn close_codes_from_the_client_reach_the_app() {
    let (s, addr) = start("raw:app", &[]);
    let (mut c, r) = handshake(&addr, "/ws", "13");
    assert_eq!(r.status, 101);
    // A masked close frame with code 4000 and no reason.
    let mask = [1u8, 2, 3, 4];
    let payload = 4000u16.to_be_bytes();
    let mut f = vec![0x88, 0x80 | 2];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    c.send_raw(&f).unwrap();
    assert_eq!(wait_mark(&s, "ws-disconnect", T).as_deref(), Some("4000"));
    // The server answered the close (echoing the code) and closed.
    let rest = c.read_until_close().unwrap_or_default();
    assert!(rest.starts_with(&[0x88, 2, 0x0f, 0xa0]), "{rest:?}");
}

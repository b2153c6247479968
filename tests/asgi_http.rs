//! ASGI over HTTP against the real binary (issue 15): the scope (TCP, unix socket, root path,
//! proxy trust), streaming both ways, `http.disconnect`, the app's exceptions, a slow reader,
//! lifespan success and failure, the interface choice, `--timeout` for a blocked event loop,
//! `--max-requests` and the access log. Apps: `tests/asgi/apps/raw.py`; clients: httpx
//! (`tests/asgi/client.py`) and the harness's raw client.

mod asgi_support;
mod common;

use std::io::Read;
use std::time::Duration;

use asgi_support::*;
use common::client::*;
use common::server::*;
use serde_json::json;

const T: Duration = Duration::from_secs(20);

fn scope(
    server: &Server,
    addr: &Addr,
    path: &str,
    headers: serde_json::Value,
) -> serde_json::Value {
    let r = client(server, addr, path, json!({ "headers": headers }));
    assert_eq!(r["status"], 200, "{r}\n{}", server.report());
    serde_json::from_str(r["body"].as_str().unwrap()).unwrap()
}

fn header<'a>(scope: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    scope["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0] == name)
        .and_then(|h| h[1].as_str())
}

#[test]
fn the_scope_over_tcp() {
    let (s, addr) = start("raw:app", &[]);
    let Addr::Tcp(sock) = &addr else { panic!() };
    let sc = scope(&s, &addr, "/scope?a=1&b=%20x", json!({"X-Custom": "Value"}));
    assert_eq!(sc["type"], "http");
    assert_eq!(sc["asgi"], json!({"version": "3.0", "spec_version": "2.4"}));
    assert_eq!(sc["http_version"], "1.1");
    assert_eq!(sc["method"], "GET");
    assert_eq!(sc["scheme"], "http");
    assert_eq!(sc["path"], "/scope");
    assert_eq!(sc["raw_path"], "/scope");
    assert_eq!(sc["query_string"], "a=1&b=%20x");
    assert_eq!(sc["root_path"], "");
    assert_eq!(sc["server"], json!(["127.0.0.1", sock.port()]));
    assert_eq!(sc["client"][0], "127.0.0.1");
    assert!(sc["client"][1].as_u64().unwrap() > 0, "{sc}");
    // Names lower-cased, values as sent.
    assert_eq!(header(&sc, "x-custom"), Some("Value"), "{sc}");
    assert_eq!(header(&sc, "host"), Some(sock.to_string().as_str()), "{sc}");
    // The access log line, as for WSGI.
    s.wait_for_stdout("\"GET /scope?a=1&b=%20x HTTP/1.1\" 200", T);
}

#[test]
fn the_scope_over_a_unix_socket() {
    let (s, addr) = start("raw:app", &["-b", "unix:{tmp}/s.sock"]);
    let Addr::Unix(p) = &addr else {
        panic!("{addr}")
    };
    let sc = scope(&s, &addr, "/scope", json!({}));
    assert_eq!(sc["client"], serde_json::Value::Null, "{sc}");
    assert_eq!(sc["server"], json!([p.display().to_string(), null]), "{sc}");
    // A unix-socket peer is the trusted proxy: its X-Forwarded-Proto counts.
    let sc = scope(&s, &addr, "/scope", json!({"X-Forwarded-Proto": "https"}));
    assert_eq!(sc["scheme"], "https", "{sc}");
}

#[test]
fn root_path_decoded_paths_and_proxy_trust() {
    let (s, addr) = start("raw:app", &["--root-path", "/api/"]);
    let sc = scope(
        &s,
        &addr,
        "/caf%C3%A9/scope",
        json!({"X-Forwarded-Proto": "https"}),
    );
    assert_eq!(sc["root_path"], "/api");
    assert_eq!(sc["path"], "/api/café/scope");
    assert_eq!(sc["raw_path"], "/api/caf%C3%A9/scope");
    // 127.0.0.1 is trusted by default.
    assert_eq!(sc["scheme"], "https");
    drop(s);
    let (s, addr) = start("raw:app", &["--forwarded-allow-ips", "10.0.0.1"]);
    let sc = scope(&s, &addr, "/scope", json!({"X-Forwarded-Proto": "https"}));
    assert_eq!(
        sc["scheme"], "http",
        "an untrusted peer cannot set the scheme"
    );
}

#[test]
fn streaming_both_ways() {
    let (s, addr) = start("raw:app", &[]);
    let r = client(&s, &addr, "/stream?n=200", json!({}));
    assert_eq!(r["status"], 200);
    assert_eq!(r["body"].as_str().unwrap().len(), 200_000);
    assert_eq!(
        r["headers"]["transfer-encoding"], "chunked",
        "{}",
        r["headers"]
    );
    // 5 MiB streamed up (chunked by httpx): it reaches receive() in pieces.
    let r = client(
        &s,
        &addr,
        "/echo",
        json!({"method": "POST", "body_size": 5 << 20}),
    );
    assert_eq!(r["status"], 200, "{r}");
    assert_eq!(r["body"].as_str().unwrap().len(), 5 << 20);
    let chunks: u64 = r["headers"]["x-chunks"].as_str().unwrap().parse().unwrap();
    assert!(chunks > 5, "the body came in {chunks} message(s)");
    // A small body comes whole, with Content-Length on the answer.
    let r = client(
        &s,
        &addr,
        "/echo",
        json!({"method": "POST", "body": "tiny"}),
    );
    assert_eq!(r["body"], "tiny");
    assert_eq!(r["headers"]["content-length"], "4");
    assert_eq!(r["headers"]["x-chunks"], "1");
}

/// A `receive()` the app cancels while it waits (a timeout; anyio's `is_disconnected()`) must
/// not take the body chunk it was waiting for with it. Before the fix the chunk that arrived
/// after the cancellation was dropped, and the app read an empty body.
#[test]
fn a_cancelled_receive_loses_no_body() {
    let (s, addr) = start("raw:app", &[]);
    let mut c = Conn::connect(&addr).unwrap();
    c.set_timeout(T);
    c.send_raw(
        b"POST /echo-cancel HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    // 100 Continue comes with the app's first receive(), which times out 50 ms later.
    assert_eq!(c.read_bytes(25).unwrap(), b"HTTP/1.1 100 Continue\r\n\r\n");
    std::thread::sleep(Duration::from_millis(300));
    c.send_raw(b"hello").unwrap();
    let r = c.read_response("POST").unwrap();
    assert_eq!(r.header("x-cancelled"), Some("yes"), "{}", s.report());
    assert_eq!(r.text(), "hello", "{}", s.report());
}

#[test]
fn keep_alive_and_pipelining() {
    let (s, addr) = start("raw:app", &[]);
    let mut c = Conn::connect(&addr).unwrap();
    c.set_timeout(T);
    c.send_raw(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\nGET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let a = c.read_response("GET").unwrap();
    let b = c.read_response("GET").unwrap();
    assert_eq!((a.status, b.status), (200, 200));
    assert_eq!(a.text(), b.text());
    let r = c.request("GET", "/pid", &[], None).unwrap();
    assert_eq!(r.text(), a.text(), "{}", s.report());
}

#[test]
fn the_app_learns_that_the_client_went_away() {
    let (s, addr) = start("raw:app", &[]);
    let mut c = Conn::connect(&addr).unwrap();
    c.send_raw(b"GET /wait-disconnect HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(wait_mark(&s, "disconnect", Duration::from_millis(10)).is_none());
    drop(c);
    assert_eq!(
        wait_mark(&s, "disconnect", T).as_deref(),
        Some("seen"),
        "{}",
        s.report()
    );
}

#[test]
fn exceptions_before_and_after_the_response_starts() {
    let (s, addr) = start("raw:app", &[]);
    let r = get(&addr, "/raise-early").unwrap();
    assert_eq!(r.status, 500);
    s.wait_for_stderr("RuntimeError: early failure", T);
    let r = get(&addr, "/no-response").unwrap();
    assert_eq!(r.status, 500);
    s.wait_for_stderr("returned without starting a response", T);
    // After the start: the client gets the head and part of a body, then the connection ends
    // without the last chunk.
    let mut c = Conn::connect(&addr).unwrap();
    c.set_timeout(T);
    c.send_raw(b"GET /raise-late HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let raw = String::from_utf8_lossy(&c.read_until_close().unwrap()).into_owned();
    assert!(raw.starts_with("HTTP/1.1 200 OK\r\n"), "{raw}");
    assert!(raw.contains("partial"), "{raw}");
    assert!(
        !raw.ends_with("0\r\n\r\n"),
        "the cut response looks complete: {raw:?}"
    );
    s.wait_for_stderr("RuntimeError: late failure", T);
    // The worker is fine.
    assert_eq!(get(&addr, "/pid").unwrap().status, 200);
}

#[test]
fn a_slow_reader_holds_back_the_app() {
    let (s, addr) = start("raw:app", &[]);
    let mut c = std::net::TcpStream::connect(match &addr {
        Addr::Tcp(a) => *a,
        _ => unreachable!(),
    })
    .unwrap();
    std::io::Write::write_all(&mut c, b"GET /slow-stream HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    // Not reading: the app's send() must stop returning once the buffers are full.
    std::thread::sleep(Duration::from_secs(2));
    let a: u64 = wait_mark(&s, "slow-stream", T).unwrap().parse().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let b: u64 = wait_mark(&s, "slow-stream", T).unwrap().parse().unwrap();
    assert_eq!(a, b, "send() kept returning while the client read nothing");
    // 64 KiB each: what is queued is the channel's bound (1 MiB) plus the sockets' buffers.
    assert!(
        a < 200,
        "{a} chunks of 64 KiB were accepted without a reader"
    );
    // Reading resumes the stream.
    let mut buf = vec![0u8; 1 << 20];
    c.set_read_timeout(Some(T)).unwrap();
    for _ in 0..64 {
        let _ = c.read(&mut buf).unwrap();
    }
    assert!(wait_until(T, || wait_mark(&s, "slow-stream", T)
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|v| v > b)));
}

#[test]
fn lifespan_startup_state_and_shutdown() {
    let (mut s, addr) = start("raw:app", &[]);
    s.wait_for_stderr("ASGI lifespan startup complete", T);
    let r = get(&addr, "/state").unwrap();
    assert_eq!(r.json(), json!({"greeting": "hello"}));
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(T), Some(0), "{}", s.report());
    assert!(
        wait_mark(&s, "lifespan-shutdown", Duration::from_secs(1)).is_some(),
        "{}",
        s.report()
    );
    assert!(s.stderr().contains("ASGI lifespan shutdown complete"));
}

#[test]
fn a_failed_lifespan_startup_is_a_failed_boot() {
    let out = spawn_env("raw:app", &[], &[("LIFESPAN", "fail")]);
    let mut out = out;
    assert_eq!(out.wait_exit(T), Some(4), "{}", out.report());
    assert!(out.stderr().contains("no database"), "{}", out.report());
    // Raising at startup: with --lifespan on a failed boot (with the traceback) ...
    let mut s = spawn_env("raw:app", &["--lifespan", "on"], &[("LIFESPAN", "raise")]);
    assert_eq!(s.wait_exit(T), Some(4), "{}", s.report());
    assert!(
        s.stderr().contains("RuntimeError: startup exploded"),
        "{}",
        s.report()
    );
    // ... with auto, an app that does not speak lifespan.
    let s = spawn_env("raw:app", &[], &[("LIFESPAN", "none")]);
    s.wait_ready(BOOT);
    s.wait_for_stderr("'lifespan' protocol appears unsupported", T);
    assert_eq!(get(&s.addr(), "/state").unwrap().text(), "null");
    // --lifespan off: never called.
    let s = spawn_env("raw:app", &["--lifespan", "off"], &[("LIFESPAN", "fail")]);
    s.wait_ready(BOOT);
    assert_eq!(get(&s.addr(), "/state").unwrap().text(), "null");
}

#[test]
fn the_interface_is_chosen_by_the_app_or_the_flags() {
    // A WSGI app next to the ASGI ones: auto serves it as WSGI.
    let wsgi = "def app(environ, start_response):\n    start_response('200 OK', [])\n    return [b'wsgi']\n";
    let s = spawn("raw:app", &["-k", "uvicorn.workers.UvicornWorker"]);
    std::fs::write(s.tmp_path().join("plainwsgi.py"), wsgi).unwrap();
    s.wait_ready(BOOT);
    assert!(s.stderr().contains("ASGI event loop"), "{}", s.report());
    assert_eq!(get(&s.addr(), "/pid").unwrap().status, 200);
    let tmp = s.tmp_path().display().to_string();
    let w = spawn("plainwsgi:app", &["--pythonpath", &tmp]);
    w.wait_ready(BOOT);
    assert_eq!(get(&w.addr(), "/").unwrap().text(), "wsgi");
    assert!(!w.stderr().contains("ASGI event loop"), "{}", w.report());
    // --interface asgi forces it; the asyncio loop when asked.
    let a = spawn(
        "raw:app",
        &["--interface", "asgi", "--asgi-loop", "asyncio"],
    );
    a.wait_ready(BOOT);
    assert!(
        a.stderr().contains("ASGI event loop: asyncio"),
        "{}",
        a.report()
    );
    assert_eq!(get(&a.addr(), "/pid").unwrap().status, 200);
}

/// An app module that imports nothing (`tests/asgi/apps/bare.py`, like `bench/apps/ahello.py`)
/// is served on either loop. `threading` used to be imported first on the loop's own thread, which
/// `threading.main_thread()` then named the main thread; uvloop installed its signal wake-up from
/// there, which Python refuses ("set_wakeup_fd only works in main thread"), and the worker could
/// not start.
#[test]
fn an_app_that_imports_nothing_is_served_from_a_loop_thread_that_is_not_the_main_one() {
    for lp in ["uvloop", "asyncio"] {
        let s = spawn("bare:app", &["--asgi-loop", lp]);
        s.wait_ready(BOOT);
        let r = get(&s.addr(), "/").unwrap();
        assert_eq!(r.status, 200, "--asgi-loop {lp}\n{}", s.report());
        assert_eq!(r.text(), "not-main", "--asgi-loop {lp}\n{}", s.report());
    }
}

#[test]
fn a_blocked_event_loop_is_killed_with_its_stack() {
    let (s, addr) = start("raw:app", &["--timeout", "2"]);
    let old = get(&addr, "/pid").unwrap().text();
    let hung = std::thread::spawn({
        let addr = addr.clone();
        move || get(&addr, "/block?s=60")
    });
    s.wait_for_stderr("WORKER TIMEOUT", T);
    // faulthandler's dump names the loop thread's frame in the app.
    s.wait_for_stderr("in http", T);
    let _ = hung.join();
    assert!(
        wait_until(T, || get(&addr, "/pid")
            .ok()
            .is_some_and(|r| r.status == 200 && r.text() != old)),
        "the worker was not replaced\n{}",
        s.report()
    );
    // A loop that is busy in awaits, not blocked, is not killed.
    let r = get(&addr, "/sleep?s=3").unwrap();
    assert_eq!(r.text(), "slept");
    assert_eq!(s.count_stderr("WORKER TIMEOUT"), 1, "{}", s.report());
}

#[test]
fn max_requests_replaces_the_worker() {
    let (s, addr) = start("raw:app", &["--max-requests", "3"]);
    let pids: Vec<String> = (0..6)
        .map(|_| {
            // A fresh connection each time: the retiring worker closes its own.
            let mut r = None;
            assert!(wait_until(T, || {
                r = get(&addr, "/pid").ok().filter(|r| r.status == 200);
                r.is_some()
            }));
            r.unwrap().text()
        })
        .collect();
    assert_eq!(pids[0], pids[2]);
    assert_ne!(pids[2], pids[3], "{pids:?}\n{}", s.report());
    s.wait_for_stderr("Autorestarting worker after 3 requests", T);
}

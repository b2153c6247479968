//! Self-test of the shared test harness in tests/common. It needs no ferricorn
//! server: the client is exercised against an in-process listener, and the
//! process-management side of `common::server` against `/bin/sh` scripts.

#[path = "common/client_selftest.rs"]
mod client_selftest;
mod common;
#[path = "common/server_selftest.rs"]
mod server_selftest;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use common::client::{self, Addr, Conn};
use common::server::{self, pid_alive, proc_cmdline, wait_until};

/// Reads one request head (no body) from a raw stream.
fn read_head(s: &mut TcpStream) -> Option<String> {
    let mut req = Vec::new();
    let mut b = [0u8; 1];
    while !req.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).ok()? == 0 {
            return None;
        }
        req.push(b[0]);
    }
    Some(String::from_utf8_lossy(&req).into_owned())
}

/// A tiny keep-alive server: answers `/chunked` with three chunks, anything
/// else with the request target as a Content-Length body. Serves `conns` connections.
fn tiny_server(conns: usize) -> Addr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = Addr::Tcp(listener.local_addr().unwrap());
    thread::spawn(move || {
        for _ in 0..conns {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            while let Some(head) = read_head(&mut s) {
                let target = head.split(' ').nth(1).unwrap_or("").to_string();
                let resp = if target == "/chunked" {
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                     3\r\nfoo\r\n3\r\nbar\r\n1\r\n!\r\n0\r\n\r\n"
                        .to_string()
                } else {
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{target}",
                        target.len()
                    )
                };
                if s.write_all(resp.as_bytes()).is_err() {
                    break;
                }
                if head.to_ascii_lowercase().contains("connection: close") {
                    break;
                }
            }
        }
    });
    addr
}

#[test]
fn client_keep_alive_against_in_process_listener() {
    let addr = tiny_server(1);
    let mut conn = Conn::connect(&addr).unwrap();
    let r = conn.request("GET", "/hello", &[], None).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "/hello"));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    let r = conn.request("GET", "/chunked", &[], None).unwrap();
    assert!(r.chunked);
    assert_eq!(r.text(), "foobar!");
    assert_eq!(r.chunk_sizes, vec![3, 3, 1]);
    assert!(!conn.peer_closed(Duration::from_millis(100)));
    let r = conn
        .request("GET", "/bye", &[("Connection", "close")], None)
        .unwrap();
    assert_eq!(r.text(), "/bye");
    assert!(conn.peer_closed(Duration::from_secs(5)));
}

#[test]
fn client_get_helper() {
    let addr = tiny_server(1);
    let r = client::get(&addr, "/x?y=1").unwrap();
    assert_eq!(r.text(), "/x?y=1");
}

#[test]
fn fake_server_addr_ready_children_and_signal() {
    let addr = tiny_server(1);
    let port = addr.port().unwrap();
    let srv = server::program("/bin/sh")
        .arg("-c")
        .arg(
            "trap 'echo got TERM >&2; kill $A $B; exit 7' TERM; \
             echo \"[INFO] Listening at: http://127.0.0.1:$PORT ($$)\" >&2; \
             echo \"[INFO] Listening at: unix:$TMP/s.sock ($$)\" >&2; \
             sleep 30 & A=$!; sleep 30 & B=$!; \
             echo 'Ready: 2 workers serving' >&2; echo to-stdout; wait",
        )
        .env("PORT", &port.to_string());
    let tmp = srv.tmp_path().to_path_buf();
    let mut srv = srv.env("TMP", tmp.to_str().unwrap()).spawn();
    assert_eq!(srv.addr(), addr);
    srv.wait_ready(Duration::from_secs(10));
    assert_eq!(
        srv.addrs(),
        vec![addr.clone(), Addr::Unix(tmp.join("s.sock"))]
    );
    assert_eq!(
        client::get(&srv.addr(), "/via-harness").unwrap().text(),
        "/via-harness"
    );
    srv.wait_for_stdout("to-stdout", Duration::from_secs(5));
    assert!(wait_until(Duration::from_secs(5), || {
        let kids = srv.children();
        kids.len() == 2
            && kids
                .iter()
                .all(|&p| pid_alive(p) && proc_cmdline(p) == "sleep 30")
    }));
    let kids = srv.children();
    assert!(pid_alive(srv.pid()));
    assert_eq!(srv.count_stderr("Listening at:"), 2);
    srv.signal(libc::SIGTERM);
    assert_eq!(srv.wait_exit(Duration::from_secs(10)), Some(7));
    assert!(srv.stderr().contains("got TERM"));
    assert!(!pid_alive(srv.pid()));
    assert!(wait_until(Duration::from_secs(5), || kids
        .iter()
        .all(|&p| !pid_alive(p))));
}

#[test]
fn drop_kills_the_whole_group() {
    let srv = server::program("/bin/sh")
        .arg("-c")
        .arg("sleep 30 & echo started >&2; wait")
        .spawn();
    srv.wait_for_stderr("started", Duration::from_secs(10));
    assert!(wait_until(Duration::from_secs(5), || srv.children().len() == 1));
    let kid = srv.children()[0];
    let master = srv.pid();
    drop(srv);
    assert!(wait_until(Duration::from_secs(5), || !pid_alive(kid)
        && !pid_alive(master)));
}

#[test]
fn killed_by_signal_has_no_exit_code() {
    let mut srv = server::program("/bin/sh")
        .arg("-c")
        .arg("echo up >&2; sleep 30")
        .spawn();
    srv.wait_for_stderr("up", Duration::from_secs(10));
    srv.signal_group(libc::SIGKILL);
    assert_eq!(srv.wait_exit(Duration::from_secs(10)), None);
    assert_eq!(srv.exit_signal(), Some(libc::SIGKILL));
}

#[test]
fn run_to_exit_env_and_cwd() {
    let dir = tempfile::tempdir().unwrap();
    let out = server::program("/bin/sh")
        .args([
            "-c",
            "echo \"$FOO|$BAR|$PYTHONUNBUFFERED|$(pwd)\"; echo oops >&2; exit 3",
        ])
        .env("FOO", "foo")
        .env("BAR", "bar")
        .env_remove("BAR")
        .cwd(dir.path())
        .run_to_exit(Duration::from_secs(10));
    assert_eq!(out.code, Some(3));
    assert_eq!(out.signal, None);
    let cwd = dir.path().canonicalize().unwrap();
    assert_eq!(out.stdout, format!("foo||1|{}\n", cwd.display()));
    assert_eq!(out.stderr, "oops\n");
}

#[test]
#[should_panic(expected = "did not exit within")]
fn run_to_exit_times_out() {
    server::program("/bin/sh")
        .args(["-c", "sleep 30"])
        .run_to_exit(Duration::from_millis(300));
}

#[test]
#[should_panic(expected = "server exited before printing")]
fn wait_for_stderr_fails_fast_when_the_server_dies() {
    let srv = server::program("/bin/sh")
        .args(["-c", "echo dying >&2; exit 1"])
        .spawn();
    // Must panic well before the 60 s timeout.
    srv.wait_for_stderr("never printed", Duration::from_secs(60));
}

#[test]
#[should_panic(expected = "timed out after")]
fn wait_for_stderr_times_out_with_output() {
    let srv = server::program("/bin/sh")
        .args(["-c", "echo something >&2; sleep 30"])
        .spawn();
    srv.wait_for_stderr("never printed", Duration::from_millis(300));
}

#[test]
fn examples_dir_is_in_the_manifest_dir() {
    assert!(server::examples_dir().ends_with("examples"));
    assert!(
        server::examples_dir()
            .parent()
            .unwrap()
            .join("Cargo.toml")
            .exists()
    );
}

//! What the master does, for ASGI workers (issue 15): `READY=1` only once the lifespan startup
//! is complete, and a USR2 upgrade without a failed request. (HUP with an open WebSocket:
//! `asgi_websocket.rs`; `--timeout` and `--max-requests`: `asgi_http.rs`.)

mod asgi_support;
mod common;

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use asgi_support::*;
use common::client::*;
use common::server::*;

const T: Duration = Duration::from_secs(30);

#[test]
fn ready_is_sent_only_after_the_lifespan_startup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(T)).unwrap();
    let started = Instant::now();
    let s = spawn_env(
        "raw:app",
        &[],
        &[
            ("LIFESPAN", "slow"),
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
        ],
    );
    let mut buf = vec![0u8; 4096];
    let ready_after = loop {
        let n = sock
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no READY=1 ({e})\n{}", s.report()));
        if String::from_utf8_lossy(&buf[..n]).contains("READY=1") {
            break started.elapsed();
        }
    };
    // The worker logs the startup's end before it reports Booted; the harness reads stderr on
    // a thread of its own, which may not have caught up yet (the timing below is the order).
    s.wait_for_stderr("ASGI lifespan startup complete", Duration::from_secs(5));
    assert!(
        ready_after >= Duration::from_millis(1500),
        "{ready_after:?}"
    );
    assert_eq!(
        get(&s.addr(), "/state").unwrap().text(),
        "{\"greeting\": \"hello\"}"
    );
}

#[test]
fn usr2_upgrades_an_asgi_server_without_a_failed_request() {
    let (s, addr) = start("raw:app", &["-b", "unix:{tmp}/s.sock"]);
    let old = get(&addr, "/pid").unwrap().text();
    let stop = Arc::new(AtomicBool::new(false));
    let results = Arc::new(Mutex::new((0u32, Vec::<String>::new())));
    let load = std::thread::spawn({
        let (addr, stop, results) = (addr.clone(), stop.clone(), results.clone());
        move || {
            let until = Instant::now() + Duration::from_secs(40);
            while !stop.load(Ordering::SeqCst) && Instant::now() < until {
                let r = get(&addr, "/pid");
                let mut g = results.lock().unwrap();
                match r {
                    Ok(r) if r.status == 200 => g.0 += 1,
                    Ok(r) => g.1.push(format!("status {}", r.status)),
                    Err(e) => g.1.push(e.to_string()),
                }
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    s.signal(libc::SIGUSR2);
    s.wait_for_stderr("Taking over from the previous master", T);
    assert!(
        wait_until(T, || !pid_alive(s.pid())),
        "the old master did not exit\n{}",
        s.report()
    );
    assert!(wait_until(T, || get(&addr, "/pid").is_ok_and(|r| r.text() != old)));
    stop.store(true, Ordering::SeqCst);
    load.join().unwrap();
    let (ok, failed) = results.lock().unwrap().clone();
    assert!(ok > 0);
    assert!(
        failed.is_empty(),
        "{ok} ok, failed: {failed:?}\n{}",
        s.report()
    );
    // The successor is in the server's process group: dropping `s` stops it too.
}

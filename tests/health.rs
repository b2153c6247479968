//! `--health-path` and `--drain-delay` (issue 17): ferricorn answers the path itself, 200
//! while the host serves and 503 once its master is stopping, so a load balancer stops
//! sending before the listeners close; a reload keeps the host healthy.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::client::{Conn, get, request};
use common::scrape::{metrics_addr, scrape, value};
use common::server::{Server, ferricorn, wait_until};

const T: Duration = Duration::from_secs(30);

fn apps() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/apps")
}

fn start(args: &[&str]) -> Server {
    let s = ferricorn()
        .args(["-b", "127.0.0.1:0", "--health-path", "/healthz"])
        .args(args.iter().copied())
        .arg("fleet:app")
        .cwd(apps())
        .spawn();
    s.wait_ready(T);
    s
}

#[test]
fn health_is_200_then_503_through_the_drain_delay() {
    let mut s = start(&["--drain-delay", "3", "--metrics-bind", "127.0.0.1:0"]);
    let (app, m) = (s.addr(), metrics_addr(&s));
    let r = get(&app, "/healthz").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "OK\n"));
    assert_eq!(r.header("Cache-Control"), Some("no-store"));
    assert_eq!(get(&app, "/healthz?probe=lb").unwrap().status, 200);
    assert_eq!(
        request(&app, "HEAD", "/healthz", &[], None).unwrap().status,
        200
    );
    // Another method is the app's.
    let r = request(&app, "POST", "/healthz", &[], Some(b"")).unwrap();
    assert_eq!(r.text(), "the app's own /healthz\n");

    s.signal(libc::SIGTERM);
    s.wait_for_stderr("Draining: the health path answers 503", T);
    let r = get(&app, "/healthz").unwrap();
    assert_eq!((r.status, r.text().as_str()), (503, "draining\n"));
    assert_eq!(r.header("Connection"), Some("close"));
    // Still accepting and serving during the delay.
    assert_eq!(get(&app, "/").unwrap().text(), "Hello, fleet!\n");
    let got = scrape(&m);
    assert_eq!(
        value(&got, "ferricorn_health_checks_total{status=\"200\"}"),
        3.0
    );
    assert_eq!(
        value(&got, "ferricorn_health_checks_total{status=\"503\"}"),
        1.0
    );
    assert_eq!(s.wait_exit(T), Some(0), "{}", s.report());
    // Health answers are not app requests: only the app's POST is in the access log.
    let out = s.stdout();
    assert_eq!(s.count_stdout("\"GET /healthz"), 0, "{out}");
    assert_eq!(s.count_stdout("\"POST /healthz"), 1, "{out}");
    assert_eq!(s.count_stdout("\"GET / "), 1, "{out}");
}

/// No delay: TERM stops accepting at once; a connection kept open (a balancer's keep-alive
/// pool) hears 503 and is closed.
#[test]
fn without_a_delay_a_kept_connection_hears_503() {
    let mut s = start(&["--keep-alive", "20"]);
    let app = s.addr();
    let mut kept = Conn::connect(&app).unwrap();
    let r = kept.request("GET", "/healthz", &[], None).unwrap();
    assert_eq!(r.status, 200);
    assert_ne!(r.header("Connection"), Some("close"));
    s.signal(libc::SIGTERM);
    // The master marks the host draining before it closes the listeners; the worker, which
    // drains the kept connection for up to 20 s, gives up its copy of the listener at once
    // (it used to keep it, and the kernel kept queueing connections no one accepted).
    assert!(
        wait_until(Duration::from_secs(5), || Conn::connect(&app).is_err()),
        "still accepting"
    );
    let r = kept.request("GET", "/healthz", &[], None).unwrap();
    assert_eq!((r.status, r.header("Connection")), (503, Some("close")));
    assert_eq!(s.wait_exit(T), Some(0), "{}", s.report());
}

/// A reload drains the old workers, but the host serves on: 200 everywhere, with
/// `Connection: close` from a draining worker.
#[test]
fn a_reload_keeps_the_host_healthy() {
    // A unix socket: a reload of `127.0.0.1:0` would bind another port.
    let b = ferricorn();
    let sock = b.tmp_path().join("app.sock");
    let s = b
        .args(["-b", &format!("unix:{}", sock.display())])
        .args([
            "--health-path",
            "/healthz",
            "--keep-alive",
            "20",
            "fleet:app",
        ])
        .cwd(apps())
        .spawn();
    s.wait_ready(T);
    let app = s.addr();
    let mut kept = Conn::connect(&app).unwrap();
    assert_eq!(
        kept.request("GET", "/healthz", &[], None).unwrap().status,
        200
    );
    s.signal(libc::SIGHUP);
    s.wait_for_stderr("Reload complete", T);
    // The master logs the reload complete just before it tells the old worker to drain: until
    // that worker has the TERM, the kept connection may get another keep-alive answer. Every
    // answer is 200 (healthy), and one says `Connection: close` once the old worker drains.
    let deadline = std::time::Instant::now() + T;
    loop {
        let r = kept.request("GET", "/healthz", &[], None).unwrap();
        assert_eq!(r.status, 200);
        if r.header("Connection") == Some("close") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the old worker never closed the kept connection\n{}",
            s.report()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(get(&app, "/healthz").unwrap().status, 200);
}

#[test]
fn a_health_path_must_be_a_path() {
    let out = ferricorn()
        .args(["--health-path", "healthz", "fleet:app"])
        .cwd(apps())
        .run_to_exit(T);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("health-path"), "{}", out.stderr);
}

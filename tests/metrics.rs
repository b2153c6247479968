//! Prometheus metrics (issue 17): `--metrics-bind`, served by the master, counted by the
//! workers in shared memory. A known request mix gives known counts; counters survive worker
//! restarts (by reason) and reloads; a scrape never waits for the app's Python threads, a
//! slow scraper stalls nothing, and an upgrade hands the listener over.

mod common;

use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use common::client::{Addr, Conn, get, request};
use common::scrape::{metrics_addr, scrape, total, value};
use common::server::{Server, ferricorn, wait_until};

const T: Duration = Duration::from_secs(30);

fn apps() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/apps")
}

fn start(args: &[&str]) -> Server {
    let s = ferricorn()
        .args(["-b", "127.0.0.1:0", "--metrics-bind", "127.0.0.1:0"])
        .args(["--access-logfile", ""])
        .args(args.iter().copied())
        .arg("fleet:app")
        .cwd(apps())
        .spawn();
    s.wait_ready(T);
    s
}

fn req(method: &str, path: &str) -> String {
    format!("ferricorn_requests_total{{method=\"{method}\",status=\"{path}\"}}")
}

#[test]
fn a_known_request_mix_is_counted() {
    let s = start(&[
        "-w",
        "2",
        "--limit-request-line",
        "100",
        "--limit-request-body",
        "1000",
        "--health-path",
        "/healthz",
    ]);
    let (app, m) = (s.addr(), metrics_addr(&s));
    for _ in 0..5 {
        assert_eq!(get(&app, "/").unwrap().text(), "Hello, fleet!\n");
    }
    for body in [&b"abcdef"[..], b"xyz"] {
        let r = request(&app, "POST", "/echo", &[], Some(body)).unwrap();
        assert_eq!(r.body, body);
    }
    assert_eq!(request(&app, "HEAD", "/", &[], None).unwrap().status, 200);
    assert_eq!(get(&app, "/status?code=503").unwrap().status, 503);
    // Refused by the HTTP layer before or after the head parsed.
    let two_hosts = request(&app, "GET", "/", &[("Host", "a"), ("Host", "b")], None).unwrap();
    assert_eq!(two_hosts.status, 400);
    assert_eq!(
        get(&app, &format!("/{}", "x".repeat(200))).unwrap().status,
        414
    );
    let big = request(&app, "POST", "/echo", &[("Content-Length", "5000")], None).unwrap();
    assert_eq!(big.status, 413);
    // Answered by ferricorn, not by the app, and not an app request.
    assert_eq!(get(&app, "/healthz").unwrap().text(), "OK\n");

    assert!(
        wait_until(T, || value(&scrape(&m), "ferricorn_connections") == 0.0),
        "connections stay open: {:?}",
        scrape(&m)
    );
    let got = scrape(&m);
    assert_eq!(value(&got, &req("GET", "2xx")), 5.0, "{got:#?}");
    assert_eq!(value(&got, &req("POST", "2xx")), 2.0);
    assert_eq!(value(&got, &req("HEAD", "2xx")), 1.0);
    assert_eq!(value(&got, &req("GET", "5xx")), 1.0);
    // The 413 had a head: it is a request (POST 4xx) and a rejected one.
    assert_eq!(value(&got, &req("POST", "4xx")), 1.0);
    assert_eq!(total(&got, "ferricorn_requests_total"), 10.0);
    assert_eq!(
        value(&got, "ferricorn_request_duration_seconds_count"),
        10.0
    );
    assert_eq!(
        value(
            &got,
            "ferricorn_request_duration_seconds_bucket{le=\"+Inf\"}"
        ),
        10.0
    );
    assert!(value(&got, "ferricorn_request_duration_seconds_sum") > 0.0);
    assert_eq!(value(&got, "ferricorn_request_body_bytes_total"), 9.0);
    assert_eq!(
        value(&got, "ferricorn_response_body_bytes_total"),
        (5 * 14 + 9 + 11) as f64
    );
    for (status, n) in [("400", 1.0), ("414", 1.0), ("413", 1.0), ("408", 0.0)] {
        let series = format!("ferricorn_rejected_requests_total{{status=\"{status}\"}}");
        assert_eq!(value(&got, &series), n, "{series}");
    }
    assert_eq!(
        value(&got, "ferricorn_health_checks_total{status=\"200\"}"),
        1.0
    );
    assert_eq!(value(&got, "ferricorn_requests_in_flight"), 0.0);
    assert_eq!(value(&got, "ferricorn_workers{state=\"serving\"}"), 2.0);
    assert_eq!(value(&got, "ferricorn_python_threads"), 2.0);
    assert!(value(&got, "ferricorn_app_import_seconds") > 0.0);
    let info = got
        .keys()
        .find(|k| k.starts_with("ferricorn_build_info{"))
        .expect("build info");
    assert!(
        info.contains("version=\"0.1.0\"") && info.contains("python=\"3."),
        "{info}"
    );
}

/// A worker's counts are kept when it exits (folded into the master's totals), and why each
/// worker was replaced is counted.
#[test]
fn counters_survive_worker_restarts_and_say_why() {
    let s = start(&["-w", "1", "--max-requests", "3", "-t", "1"]);
    let (app, m) = (s.addr(), metrics_addr(&s));
    let restarts = |why: &str| {
        value(
            &scrape(&m),
            &format!("ferricorn_worker_restarts_total{{reason=\"{why}\"}}"),
        )
    };
    for _ in 0..7 {
        assert_eq!(get(&app, "/").unwrap().status, 200);
    }
    assert!(
        wait_until(T, || restarts("max_requests") == 2.0),
        "{:?}",
        scrape(&m)
    );
    assert!(get(&app, "/crash").is_err(), "the crash answered");
    assert!(
        wait_until(T, || restarts("crash") == 1.0),
        "{:?}",
        scrape(&m)
    );
    s.wait_for_stderr_count("Booting worker", 4, T);
    // Silent for longer than --timeout: killed and replaced.
    assert!(get(&app, "/sleep?s=20").is_err());
    assert!(
        wait_until(T, || restarts("timeout") == 1.0),
        "{:?}",
        scrape(&m)
    );
    s.signal(libc::SIGHUP);
    s.wait_for_stderr("Reload complete", T);
    assert!(
        wait_until(T, || restarts("reload") == 1.0),
        "{:?}",
        scrape(&m)
    );
    let got = scrape(&m);
    assert_eq!(value(&got, "ferricorn_reloads_total{result=\"ok\"}"), 1.0);
    assert_eq!(
        value(&got, "ferricorn_reloads_total{result=\"failed\"}"),
        0.0
    );
    // Every request that finished is still there; the two that died with their worker are not.
    assert_eq!(value(&got, &req("GET", "2xx")), 7.0, "{got:#?}");
    assert_eq!(total(&got, "ferricorn_requests_total"), 7.0);
    assert_eq!(value(&got, "ferricorn_requests_in_flight"), 0.0);
}

/// The master reads the workers' counters from memory: a worker whose Python threads are all
/// busy is scraped at once, its requests in flight, busy threads and queued requests counted.
#[test]
fn a_scrape_does_not_wait_for_busy_python_threads() {
    let s = start(&["-w", "1", "--threads", "2"]);
    let (app, m) = (s.addr(), metrics_addr(&s));
    let slow: Vec<_> = (0..3)
        .map(|_| {
            let app = app.clone();
            thread::spawn(move || get(&app, "/sleep?s=4").map(|r| r.status))
        })
        .collect();
    // In flight as soon as the heads are read; busy once a pool thread has picked each up.
    assert!(
        wait_until(T, || {
            let got = scrape(&m);
            value(&got, "ferricorn_requests_in_flight") == 3.0
                && value(&got, "ferricorn_python_threads_busy") == 2.0
        }),
        "{:?}",
        scrape(&m)
    );
    let got = scrape(&m);
    assert!(slow.iter().all(|t| !t.is_finished()), "the sleeps ended");
    assert_eq!(
        value(&got, "ferricorn_python_threads_busy"),
        2.0,
        "{got:#?}"
    );
    assert_eq!(value(&got, "ferricorn_python_requests_queued"), 1.0);
    assert_eq!(value(&got, "ferricorn_connections"), 3.0);
    for t in slow {
        assert_eq!(t.join().unwrap().unwrap(), 200);
    }
    // A thread leaves its busy state just after its reply is on the wire, so the last client
    // can read its reply a moment before the gauge drops.
    let idle = |got: &std::collections::BTreeMap<String, f64>| {
        value(got, "ferricorn_python_threads_busy") == 0.0
            && value(got, "ferricorn_python_requests_queued") == 0.0
    };
    assert!(wait_until(T, || idle(&scrape(&m))), "{:#?}", scrape(&m));
    assert_eq!(value(&scrape(&m), &req("GET", "2xx")), 3.0);
}

/// On a unix socket; a scraper that sends half a request holds nothing up (another scrape, a
/// request, a reload all go on) and is cut after the endpoint's timeout.
#[test]
fn a_slow_scraper_stalls_nothing_on_a_unix_socket() {
    let b = ferricorn();
    let sock = b.tmp_path().join("metrics.sock");
    let s = b
        .args(["-b", "127.0.0.1:0", "--access-logfile", ""])
        .args(["--metrics-bind", &format!("unix:{}", sock.display())])
        .arg("fleet:app")
        .cwd(apps())
        .spawn();
    s.wait_ready(T);
    let m = metrics_addr(&s);
    assert_eq!(m, Addr::Unix(sock.clone()));
    let mut stalled = Conn::connect(&m).unwrap();
    stalled.send_raw(b"GET /metrics HTTP/1.1\r\nHost:").unwrap();
    assert_eq!(get(&s.addr(), "/").unwrap().status, 200);
    assert!(scrape(&m).contains_key("ferricorn_connections"));
    s.signal(libc::SIGHUP);
    s.wait_for_stderr("Reload complete", T);
    assert_eq!(get(&m, "/").unwrap().status, 404);
    assert!(stalled.peer_closed(Duration::from_secs(10)), "not cut");
}

/// USR2: the new master gets the metrics listener with the others, answers once it has taken
/// over, and counts the upgrade.
#[test]
fn an_upgrade_hands_the_metrics_listener_over() {
    let mut s = start(&["-w", "1"]);
    let m = metrics_addr(&s);
    assert_eq!(get(&s.addr(), "/").unwrap().status, 200);
    s.signal(libc::SIGUSR2);
    s.wait_for_stderr("took over", T);
    assert_eq!(s.wait_exit(T), Some(0), "{}", s.report());
    assert!(!s.stderr().contains("cannot bind"), "{}", s.report());
    let got = scrape(&m);
    assert_eq!(value(&got, "ferricorn_upgrades_total{result=\"ok\"}"), 1.0);
    // A new master: its counts start again.
    assert_eq!(total(&got, "ferricorn_requests_total"), 0.0);
    assert_eq!(value(&got, "ferricorn_workers{state=\"serving\"}"), 1.0);
    // The successor is in the old master's process group: stop it.
    s.signal_group(libc::SIGTERM);
}

#[test]
fn metrics_are_off_by_default_and_fd_is_refused() {
    let s = ferricorn()
        .args(["-b", "127.0.0.1:0", "fleet:app"])
        .cwd(apps())
        .spawn();
    s.wait_ready(T);
    assert!(!s.stderr().contains("Metrics at"), "{}", s.report());
    drop(s);
    let out = ferricorn()
        .args(["--metrics-bind", "fd://3", "fleet:app"])
        .cwd(apps())
        .run_to_exit(T);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("metrics-bind"), "{}", out.stderr);
}

/// A refused reload and an upgrade whose new master dies are counted as failed, by the master
/// that keeps serving.
#[test]
fn failed_reloads_and_upgrades_are_counted() {
    let b = ferricorn();
    let conf = b.tmp_path().join("ferricorn.toml");
    std::fs::write(&conf, "workers = 1\n").unwrap();
    let s = b
        .args(["-c", conf.to_str().unwrap()])
        .args(["-b", "127.0.0.1:0", "--metrics-bind", "127.0.0.1:0"])
        .arg("fleet:app")
        .cwd(apps())
        .spawn();
    s.wait_ready(T);
    let m = metrics_addr(&s);
    std::fs::write(&conf, "workers = 0\n").unwrap();
    s.signal(libc::SIGHUP);
    s.wait_for_stderr("Reload failed", T);
    // The new master reads the same broken file and exits at once.
    s.signal(libc::SIGUSR2);
    s.wait_for_stderr("Upgrade failed", T);
    let got = scrape(&m);
    assert_eq!(
        value(&got, "ferricorn_reloads_total{result=\"failed\"}"),
        1.0,
        "{got:#?}"
    );
    assert_eq!(value(&got, "ferricorn_reloads_total{result=\"ok\"}"), 0.0);
    assert_eq!(
        value(&got, "ferricorn_upgrades_total{result=\"failed\"}"),
        1.0
    );
    assert_eq!(value(&got, "ferricorn_upgrades_total{result=\"ok\"}"), 0.0);
    assert_eq!(get(&s.addr(), "/").unwrap().status, 200);
}

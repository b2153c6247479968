//! statsd as Gunicorn sends it, against the real binary: a test UDP (and unix datagram)
//! listener receives the expected lines for a burst of requests — `gunicorn.requests`,
//! `gunicorn.request.duration`, `gunicorn.request.status.NNN`, the master's
//! `gunicorn.workers` gauge, `gunicorn.log.*` — with `--statsd-prefix` and
//! `--dogstatsd-tags`; and a receiver that is not there costs the requests nothing.
//!
//! Every socket is on 127.0.0.1 or in a temp dir; every wait is bounded.

mod common;

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::{client::*, examples, server::*};

const BOOT: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(10);

fn spawn(extra: &[&str]) -> (Server, Addr) {
    spawn_with(builder(), extra)
}

fn builder() -> ServerBuilder {
    ferricorn()
}

fn spawn_with(b: ServerBuilder, extra: &[&str]) -> (Server, Addr) {
    let server = examples::spawn_with(b, "spec:app", extra);
    let addr = examples::ready(&server);
    (server, addr)
}

fn get(server: &Server, addr: &Addr, target: &str) -> u16 {
    request(addr, "GET", target, &[], None)
        .unwrap_or_else(|e| panic!("GET {target}: {e}\n{}", server.report()))
        .status
}

/// Datagrams received so far, as text.
struct Received(Vec<String>);

impl Received {
    fn lines(&self) -> impl Iterator<Item = &str> {
        self.0.iter().flat_map(|d| d.split('\n'))
    }

    fn count(&self, line: &str) -> usize {
        self.lines().filter(|l| *l == line).count()
    }
}

/// Receives from `recv` until `done` says so (or `WAIT` passes).
fn collect(
    recv: impl FnMut(&mut [u8]) -> std::io::Result<usize>,
    done: impl Fn(&Received) -> bool,
) -> Received {
    collect_within(WAIT, recv, done)
}

fn collect_within(
    wait: Duration,
    mut recv: impl FnMut(&mut [u8]) -> std::io::Result<usize>,
    done: impl Fn(&Received) -> bool,
) -> Received {
    let mut got = Received(Vec::new());
    let end = Instant::now() + wait;
    let mut buf = vec![0u8; 65536];
    while Instant::now() < end && !done(&got) {
        match recv(&mut buf) {
            Ok(n) => got.0.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("recv: {e}"),
        }
    }
    got
}

fn udp_listener() -> (UdpSocket, String) {
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let host = rx.local_addr().unwrap().to_string();
    (rx, host)
}

#[test]
fn a_burst_of_requests_arrives_as_gunicorns_lines() {
    let (rx, host) = udp_listener();
    let (server, addr) = spawn(&[
        "-w",
        "2",
        "--statsd-host",
        &host,
        "--statsd-prefix",
        "shop",
        "--dogstatsd-tags",
        "env:test,team:web",
    ]);
    const T: &str = "|#env:test,team:web";
    let mut want: BTreeMap<u16, usize> = BTreeMap::new();
    for i in 0..30 {
        let (target, status) = match i % 3 {
            0 => ("/", 200),
            1 => ("/status?code=404", 404),
            _ => ("/status?code=201", 201),
        };
        assert_eq!(get(&server, &addr, target), status);
        *want.entry(status).or_default() += 1;
    }
    assert_eq!(get(&server, &addr, "/raise"), 500);
    *want.entry(500).or_default() += 1;
    let total: usize = want.values().sum();
    let requests = format!("shop.gunicorn.requests:1|c|@1.0{T}");
    let got = collect(
        |b| rx.recv(b),
        |r| {
            r.count(&requests) >= total
                && r.count(&format!("shop.gunicorn.log.exception:1|c|@1.0{T}")) >= 1
                && r.count(&format!("shop.gunicorn.workers:2|g{T}")) >= 1
        },
    );
    let show = || format!("{:#?}\n{}", got.0, server.report());
    assert_eq!(got.count(&requests), total, "{}", show());
    for (status, n) in &want {
        let line = format!("shop.gunicorn.request.status.{status}:1|c|@1.0{T}");
        assert_eq!(got.count(&line), *n, "{line}\n{}", show());
    }
    // A duration (ms, a decimal) per request.
    let durations: Vec<f64> = got
        .lines()
        .filter_map(|l| l.strip_prefix("shop.gunicorn.request.duration:"))
        .map(|v| {
            let ms = v
                .strip_suffix(&format!("|ms{T}"))
                .unwrap_or_else(|| panic!("{v}"));
            assert!(ms.contains('.'), "{ms}");
            ms.parse().unwrap_or_else(|_| panic!("{ms}"))
        })
        .collect();
    assert_eq!(durations.len(), total, "{}", show());
    assert!(
        durations.iter().all(|d| (0.0..10_000.0).contains(d)),
        "{durations:?}"
    );
    // One datagram per request, its three metrics in it.
    let per_request: Vec<&String> = got.0.iter().filter(|d| d.contains(&requests)).collect();
    assert_eq!(per_request.len(), total);
    assert!(
        per_request.iter().all(|d| d.lines().count() == 3),
        "{}",
        show()
    );
    // The app's exception: gunicorn.log.exception (not .error), as Gunicorn's log.exception.
    assert_eq!(
        got.count(&format!("shop.gunicorn.log.exception:1|c|@1.0{T}")),
        1,
        "{}",
        show()
    );
    assert_eq!(
        got.count(&format!("shop.gunicorn.workers:2|g{T}")),
        1,
        "{}",
        show()
    );

    // The master's gauge follows TTIN; a refused request is a warning.
    server.signal(libc::SIGTTIN);
    let mut c = Conn::connect(&addr).unwrap();
    c.set_timeout(WAIT);
    c.send_raw(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        .unwrap();
    assert_eq!(c.read_response("GET").unwrap().status, 400);
    let got = collect(
        |b| rx.recv(b),
        |r| {
            r.count(&format!("shop.gunicorn.workers:3|g{T}")) >= 1
                && r.count(&format!("shop.gunicorn.log.warning:1|c|@1.0{T}")) >= 1
        },
    );
    assert_eq!(
        got.count(&format!("shop.gunicorn.workers:3|g{T}")),
        1,
        "{:#?}",
        got.0
    );
    assert!(
        got.count(&format!("shop.gunicorn.log.warning:1|c|@1.0{T}")) >= 1,
        "{:#?}",
        got.0
    );
}

#[test]
fn a_unix_datagram_socket_and_the_backlog_histogram() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("statsd.sock");
    let rx = UnixDatagram::bind(&path).unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let host = format!("unix://{}", path.display());
    let (server, addr) = spawn(&["--statsd-host", &host, "--enable-backlog-metric"]);
    for _ in 0..5 {
        assert_eq!(get(&server, &addr, "/"), 200);
    }
    let got = collect(
        |b| rx.recv(b),
        |r| {
            r.count("gunicorn.requests:1|c|@1.0") >= 5
                && r.lines()
                    .filter(|l| l.starts_with("gunicorn.backlog:"))
                    .count()
                    >= 2
        },
    );
    assert_eq!(got.count("gunicorn.requests:1|c|@1.0"), 5, "{:#?}", got.0);
    assert_eq!(
        got.count("gunicorn.request.status.200:1|c|@1.0"),
        5,
        "{:#?}",
        got.0
    );
    assert_eq!(got.count("gunicorn.workers:1|g"), 1, "{:#?}", got.0);
    // Every second, the number of connections waiting (none here), as Gunicorn's histogram.
    let backlog: Vec<&str> = got
        .lines()
        .filter(|l| l.starts_with("gunicorn.backlog:"))
        .collect();
    assert!(
        backlog.len() >= 2 && backlog.iter().all(|l| *l == "gunicorn.backlog:0|ms"),
        "{backlog:?}"
    );
}

#[test]
fn a_receiver_that_is_not_there_costs_the_requests_nothing() {
    // A UDP port nobody listens on (the kernel answers with ICMP errors), and a unix path
    // that does not exist: every request is served, none waits, one warning at most.
    let (rx, host) = udp_listener();
    drop(rx);
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("unix://{}", dir.path().join("none.sock").display());
    for statsd in [host.as_str(), missing.as_str()] {
        let (server, addr) = spawn(&["--statsd-host", statsd, "--threads", "2"]);
        let start = Instant::now();
        for _ in 0..200 {
            assert_eq!(get(&server, &addr, "/"), 200);
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{:?}",
            start.elapsed()
        );
        let warnings = server.count_stderr("statsd:");
        assert!(warnings <= 2, "{}", server.report());
        assert!(!server.stderr().contains("panicked"), "{}", server.report());
    }
}

#[test]
fn statsd_host_is_validated_as_gunicorn_does() {
    for bad in ["host:port", "unix://", ":8125"] {
        let out = ferricorn()
            .args(["--statsd-host", bad, "--check-config", "hello:app"])
            .run_to_exit(BOOT);
        assert_ne!(out.code, Some(0), "{bad}: {out:?}");
        assert!(out.stderr.contains("statsd"), "{bad}: {}", out.stderr);
    }
}

#[test]
fn a_reload_moves_the_metrics_to_the_new_statsd_host() {
    let (rx_a, host_a) = udp_listener();
    let (rx_b, host_b) = udp_listener();
    let b = builder();
    let conf = b.tmp_path().join("ferricorn.toml");
    std::fs::write(&conf, format!("statsd-host = \"{host_a}\"\n")).unwrap();
    let conf_arg = conf.display().to_string();
    // A unix socket: a reload binds -b 127.0.0.1:0 again, on another port.
    let (server, addr) = spawn_with(b, &["-b", "unix:{tmp}/s.sock", "-c", &conf_arg]);
    assert_eq!(get(&server, &addr, "/"), 200);
    let got = collect(
        |b| rx_a.recv(b),
        |r| r.count("gunicorn.requests:1|c|@1.0") >= 1 && r.count("gunicorn.workers:1|g") >= 1,
    );
    assert_eq!(got.count("gunicorn.requests:1|c|@1.0"), 1, "{:#?}", got.0);
    std::fs::write(
        &conf,
        format!("statsd-host = \"{host_b}\"\nstatsd-prefix = \"v2\"\n"),
    )
    .unwrap();
    server.signal(libc::SIGHUP);
    server.wait_for_stderr("Reload complete", WAIT);
    assert_eq!(get(&server, &addr, "/"), 200);
    let got = collect(
        |b| rx_b.recv(b),
        |r| {
            r.count("v2.gunicorn.requests:1|c|@1.0") >= 1 && r.count("v2.gunicorn.workers:1|g") >= 1
        },
    );
    let show = || format!("{:#?}\n{}", got.0, server.report());
    assert_eq!(got.count("v2.gunicorn.requests:1|c|@1.0"), 1, "{}", show());
    assert_eq!(got.count("v2.gunicorn.workers:1|g"), 1, "{}", show());
    // Nothing more for the old host from the new generation.
    let late = collect_within(
        Duration::from_secs(1),
        |b| rx_a.recv(b),
        |r| r.count("gunicorn.requests:1|c|@1.0") >= 1,
    );
    assert_eq!(late.count("gunicorn.requests:1|c|@1.0"), 0, "{:#?}", late.0);
}

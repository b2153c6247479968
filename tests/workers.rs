//! Worker processes (issue 2, acceptance 3): every worker serves, `--timeout` kills a worker
//! stuck in Python (with one thread and with two) and a new one serves, `--max-requests`
//! recycles workers without a failed request, `--threads` serves requests concurrently inside
//! one worker, and the processes' titles name the app (or `--name`).
//!
//! A worker killed from outside and the signals that change the worker count are in
//! `signals.rs`; faults inside a worker (a panic, a segfault) in `faults.rs`.

mod common;

use std::collections::BTreeSet;
use std::io;
use std::thread;
use std::time::{Duration, Instant};

use common::examples::{IO, ready, spawn};
use common::{client::*, server::*, workers::*};

#[test]
fn two_workers_both_answer() {
    let (server, addr) = start("spec:app", &["-w", "2"]);
    let kids = wait_children(&server, 2, Duration::from_secs(10));

    let mut seen = BTreeSet::new();
    let start = Instant::now();
    let mut sent = 0;
    while seen.len() < 2 && sent < 200 && start.elapsed() < Duration::from_secs(20) {
        let pid = get_pid(&addr)
            .unwrap_or_else(|e| panic!("request {sent} failed: {e}\n{}", server.report()));
        seen.insert(pid);
        sent += 1;
    }
    let seen: Vec<i32> = seen.into_iter().collect();
    assert_eq!(
        seen,
        kids,
        "after {sent} requests the answering pids differ from the master's children\n{}",
        server.report()
    );
    assert_eq!(server.children(), kids, "workers changed meanwhile");
}

fn stuck_worker_is_killed(threads: &str) {
    let (server, addr) = start(
        "spec:app",
        &["-w", "1", "--threads", threads, "--timeout", "2"],
    );
    let old = wait_children(&server, 1, Duration::from_secs(10))[0];
    assert_eq!(get_pid(&addr).unwrap(), old);

    let t0 = Instant::now();
    let spin = request_in_background(&addr, "/spin", Duration::from_secs(20));
    if threads != "1" {
        // The spinning request holds one Python thread; the other still serves.
        thread::sleep(Duration::from_millis(300));
        assert_eq!(
            get_pid(&addr).unwrap_or_else(|e| panic!("{e}\n{}", server.report())),
            old,
            "with a free thread the worker should still answer"
        );
    }
    let line = server.wait_for_stderr("WORKER TIMEOUT", Duration::from_secs(15));
    let waited = t0.elapsed();
    assert!(
        line.contains(&format!("(pid:{old})")),
        "timeout line does not name the worker {old}: {line:?}"
    );
    assert!(
        waited >= Duration::from_millis(1500),
        "worker killed after only {waited:?} with --timeout 2\n{}",
        server.report()
    );

    let (spun, _) = spin.join().unwrap();
    assert!(
        !matches!(&spun, Ok(r) if r.status == 200),
        "/spin cannot have succeeded: {spun:?}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || !pid_alive(old)),
        "timed-out worker {old} still alive\n{}",
        server.report()
    );
    let kids = wait_until(Duration::from_secs(10), || {
        let k = server.children();
        k.len() == 1 && k[0] != old
    });
    assert!(
        kids,
        "no replacement worker: {:?}\n{}",
        server.children(),
        server.report()
    );
    let new = server.children()[0];
    server.wait_for_stderr(
        &format!("Booting worker with pid: {new}"),
        Duration::from_secs(5),
    );

    let r = get(&addr, "/").unwrap_or_else(|e| panic!("{e}\n{}", server.report()));
    assert_eq!((r.status, r.text().as_str()), (200, "spec app\n"));
    assert_eq!(get_pid(&addr).unwrap(), new);
    assert_eq!(
        server.count_stderr("WORKER TIMEOUT"),
        1,
        "{}",
        server.report()
    );
}

#[test]
fn timeout_kills_stuck_worker_one_thread() {
    stuck_worker_is_killed("1");
}

#[test]
fn timeout_kills_stuck_worker_two_threads() {
    stuck_worker_is_killed("2");
}

#[test]
fn max_requests_recycles_worker() {
    let (server, addr) = start("spec:app", &["-w", "1", "--max-requests", "5"]);
    let mut pids = Vec::new();
    for i in 0..20 {
        let pid = get_pid(&addr).unwrap_or_else(|e| {
            panic!(
                "request {i} failed during recycling (pids so far {pids:?}): {e}\n{}",
                server.report()
            )
        });
        pids.push(pid);
    }
    server.wait_for_stderr(
        "Autorestarting worker after 5 requests",
        Duration::from_secs(5),
    );

    // Split into runs of the same pid: each worker serves exactly 5 requests.
    let mut runs: Vec<(i32, usize)> = Vec::new();
    for &p in &pids {
        match runs.last_mut() {
            Some((q, n)) if *q == p => *n += 1,
            _ => runs.push((p, 1)),
        }
    }
    assert!(runs.len() >= 2, "worker never recycled: {pids:?}");
    let distinct: BTreeSet<i32> = pids.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        runs.len(),
        "a retired pid answered again: {pids:?}"
    );
    for (i, (_, n)) in runs.iter().enumerate() {
        if i + 1 < runs.len() {
            assert_eq!(*n, 5, "a worker served {n} requests, not 5: {pids:?}");
        } else {
            assert!(*n <= 5, "a worker served {n} requests: {pids:?}");
        }
    }
}

fn check_titles(extra: &[&str], name: &str) {
    let mut args = vec!["-w", "2"];
    args.extend_from_slice(extra);
    let (server, _addr) = start("hello:app", &args);
    let workers = wait_children(&server, 2, Duration::from_secs(10));
    let master_title = format!("ferricorn: master [{name}]");
    let worker_title = format!("ferricorn: worker [{name}]");
    let ok = wait_until(Duration::from_secs(5), || {
        proc_cmdline(server.pid()).contains(&master_title)
            && workers
                .iter()
                .all(|&w| proc_cmdline(w).contains(&worker_title))
    });
    let titles: Vec<String> = workers.iter().map(|&w| proc_cmdline(w)).collect();
    assert!(
        ok,
        "want {master_title:?} / {worker_title:?}; master: {:?}, workers: {titles:?}",
        proc_cmdline(server.pid())
    );
}

#[test]
fn process_titles_default_to_the_app() {
    check_titles(&[], "hello:app");
}

#[test]
fn process_titles_use_name() {
    check_titles(&["-n", "myapp"], "myapp");
}

/// Runs `n` concurrent `GET target` requests, each on its own connection;
/// returns the total wall time once all are done. Each must answer 200.
fn concurrent_gets(server: &Server, addr: &Addr, target: &str, n: usize) -> Duration {
    let t0 = Instant::now();
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let addr = addr.clone();
            let target = target.to_string();
            thread::spawn(move || -> io::Result<Response> {
                let mut c = Conn::connect(&addr)?;
                c.set_timeout(IO);
                c.request("GET", &target, &[("Connection", "close")], None)
            })
        })
        .collect();
    for h in handles {
        let r = h
            .join()
            .expect("request thread panicked")
            .unwrap_or_else(|e| panic!("GET {target}: {e}\n{}", server.report()));
        assert_eq!(r.status, 200, "GET {target}: {r:?}");
    }
    t0.elapsed()
}

#[test]
fn threads_serve_concurrently() {
    let four = spawn("spec:app", &["-w", "1", "--threads", "4"]);
    let one = spawn("spec:app", &["-w", "1", "--threads", "1"]);
    let (addr4, addr1) = (ready(&four), ready(&one));

    let t = concurrent_gets(&four, &addr4, "/sleep?s=0.5", 4);
    assert!(
        t < Duration::from_millis(1600),
        "4 x 0.5 s with --threads 4 took {t:?}"
    );

    let t = concurrent_gets(&one, &addr1, "/sleep?s=0.5", 4);
    assert!(
        t >= Duration::from_millis(1900),
        "4 x 0.5 s with --threads 1 -w 1 took only {t:?}"
    );
}

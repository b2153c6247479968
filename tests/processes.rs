//! Process management: workers, replacement, timeouts, recycling, signals,
//! process titles and the app's environment.
//!
//! Every server binds `127.0.0.1:0` (or a unix socket inside its own temp
//! dir) and reads the address back from the log, so tests run in parallel.

mod common;

use std::collections::BTreeSet;
use std::io;
use std::thread;
use std::time::{Duration, Instant};

use common::{client::*, server::*};

const BOOT: Duration = Duration::from_secs(30);

/// A builder for `ferricorn [extra...] APP` in examples/, with a hermetic environment.
fn builder(app: &str, extra: &[&str]) -> ServerBuilder {
    ferricorn()
        .args(extra.iter().copied())
        .arg(app)
        .cwd(examples_dir())
}

/// Starts `ferricorn -b 127.0.0.1:0 [extra...] APP` and waits until it is ready.
fn start(app: &str, extra: &[&str]) -> (Server, Addr) {
    let mut args = vec!["-b", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let server = builder(app, &args).spawn();
    server.wait_ready(BOOT);
    let addr = server.addr();
    (server, addr)
}

/// GET /pid on a fresh connection; the worker's pid, or an error (also for a non-200).
fn get_pid(addr: &Addr) -> io::Result<i32> {
    let r = get(addr, "/pid")?;
    if r.status != 200 {
        return Err(io::Error::other(format!(
            "status {} for /pid: {:?}",
            r.status,
            r.text()
        )));
    }
    r.text()
        .trim()
        .parse()
        .map_err(|e| io::Error::other(format!("bad /pid body {:?}: {e}", r.text())))
}

/// Waits until the master has exactly `n` children; returns them.
fn wait_children(server: &Server, n: usize, timeout: Duration) -> Vec<i32> {
    let mut kids = Vec::new();
    let ok = wait_until(timeout, || {
        kids = server.children();
        kids.len() == n
    });
    assert!(
        ok,
        "expected {n} workers within {timeout:?}, have {kids:?}\n{}",
        server.report()
    );
    kids
}

fn kill(pid: i32, sig: i32) {
    assert!(pid > 0);
    // SAFETY: kill(2) has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

/// Asserts that none of `pids` is alive (allowing a short moment for the kernel
/// to finish tearing processes down).
fn assert_all_gone(server: &Server, pids: &[i32]) {
    let ok = wait_until(Duration::from_secs(1), || {
        !pids.iter().any(|&p| pid_alive(p))
    });
    let alive: Vec<i32> = pids.iter().copied().filter(|&p| pid_alive(p)).collect();
    assert!(
        ok,
        "workers still alive after the master exited: {alive:?}\n{}",
        server.report()
    );
}

/// Sends `GET target` on a new connection from another thread; returns the
/// join handle (the result carries the time the response took).
fn request_in_background(
    addr: &Addr,
    target: &str,
    timeout: Duration,
) -> thread::JoinHandle<(io::Result<Response>, Duration)> {
    let addr = addr.clone();
    let target = target.to_string();
    thread::spawn(move || {
        let t0 = Instant::now();
        let r = (|| {
            let mut c = Conn::connect(&addr)?;
            c.set_timeout(timeout);
            c.request("GET", &target, &[("Connection", "close")], None)
        })();
        (r, t0.elapsed())
    })
}

// ---------------------------------------------------------------------------
// 1. every worker serves
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// 2. a killed worker is replaced, and nobody notices
// ---------------------------------------------------------------------------

#[test]
fn sigkilled_worker_is_replaced_without_failed_requests() {
    let (server, addr) = start("spec:app", &["-w", "2"]);
    let before = wait_children(&server, 2, Duration::from_secs(10));
    // Both workers serve before the kill.
    for _ in 0..5 {
        get_pid(&addr).unwrap_or_else(|e| panic!("{e}\n{}", server.report()));
    }

    let victim = before[0];
    let survivor = before[1];
    kill(victim, libc::SIGKILL);
    // Only requests sent once the victim is really dead are counted: it can no
    // longer hold a connection, and the listening socket is shared.
    assert!(
        wait_until(Duration::from_secs(5), || !pid_alive(victim)),
        "worker {victim} survived SIGKILL"
    );

    let start = Instant::now();
    let mut ok = 0usize;
    let mut failures = Vec::new();
    let mut replaced_after: Option<usize> = None;
    let mut new_pid = None;
    let mut new_pid_served = false;
    loop {
        match get_pid(&addr) {
            Ok(pid) => {
                assert_ne!(pid, victim, "the killed worker answered");
                ok += 1;
                if Some(pid) == new_pid {
                    new_pid_served = true;
                }
            }
            Err(e) => failures.push(format!("request #{}: {e}", ok + failures.len())),
        }
        if replaced_after.is_none() {
            let kids = server.children();
            if kids.len() == 2 && !kids.contains(&victim) && kids.contains(&survivor) {
                replaced_after = Some(ok);
                new_pid = kids.into_iter().find(|&p| p != survivor);
            }
        }
        if let Some(n) = replaced_after
            && ok >= n + 30
            && new_pid_served
        {
            break;
        }
        if start.elapsed() > Duration::from_secs(20) || ok + failures.len() > 2000 {
            panic!(
                "after {ok} requests (replaced after {replaced_after:?}, new worker {new_pid:?} \
                 served: {new_pid_served}), children {:?}; failures: {failures:?}\n{}",
                server.children(),
                server.report()
            );
        }
    }
    assert!(
        failures.is_empty(),
        "requests failed after the worker was killed: {failures:?}\n{}",
        server.report()
    );
    server.wait_for_stderr(&format!("Worker (pid:{victim})"), Duration::from_secs(5));
    server.wait_for_stderr_count("Booting worker with pid", 3, Duration::from_secs(5));
    let new_pid = new_pid.unwrap();
    assert!(!before.contains(&new_pid));
    assert_eq!(server.children(), {
        let mut v = vec![survivor, new_pid];
        v.sort_unstable();
        v
    });
}

// ---------------------------------------------------------------------------
// 3. --timeout kills a stuck worker
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// 4. --max-requests recycles workers without failing requests
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// 5-7. TERM, INT/QUIT, --graceful-timeout
// ---------------------------------------------------------------------------

/// TERM while a 2-second request is in flight.
fn graceful_term(unix: bool) {
    let b = builder("spec:app", &[]);
    let sock = b.tmp_path().join("ferricorn.sock");
    let bind = if unix {
        format!("unix:{}", sock.display())
    } else {
        "127.0.0.1:0".to_string()
    };
    let mut server = b.args(["-b", &bind, "-w", "2"]).spawn();
    server.wait_ready(BOOT);
    let addr = server.addr();
    if unix {
        assert_eq!(addr, Addr::Unix(sock.clone()));
        assert!(sock.exists());
    }
    let workers = wait_children(&server, 2, Duration::from_secs(10));

    let slow = request_in_background(&addr, "/sleep?s=2", Duration::from_secs(20));
    // Give the request time to reach the app.
    thread::sleep(Duration::from_millis(500));
    assert!(!slow.is_finished());
    server.signal(libc::SIGTERM);
    server.wait_for_stderr("Handling signal: term", Duration::from_secs(5));

    let (resp, took) = slow.join().unwrap();
    let resp = resp.unwrap_or_else(|e| {
        panic!(
            "in-flight request failed during graceful shutdown: {e}\n{}",
            server.report()
        )
    });
    assert_eq!((resp.status, resp.text().as_str()), (200, "slept"));
    assert!(took >= Duration::from_millis(1900), "{took:?}");

    let code = server.wait_exit(Duration::from_secs(15));
    assert_eq!(code, Some(0), "{}", server.report());
    assert_all_gone(&server, &workers);
    assert!(server.stderr().contains("Shutting down: Master"));
    for w in &workers {
        assert!(
            server
                .stderr()
                .contains(&format!("Worker exiting (pid: {w})")),
            "{}",
            server.report()
        );
    }
    if unix {
        assert!(
            !sock.exists(),
            "unix socket {} left behind after TERM",
            sock.display()
        );
    }
}

#[test]
fn term_is_graceful_unix_socket() {
    graceful_term(true);
}

#[test]
fn term_is_graceful_tcp() {
    graceful_term(false);
}

fn fast_stop(sig: i32) {
    let (mut server, addr) = start("spec:app", &["-w", "2"]);
    let workers = wait_children(&server, 2, Duration::from_secs(10));
    let slow = request_in_background(&addr, "/sleep?s=10", Duration::from_secs(20));
    thread::sleep(Duration::from_millis(500));
    assert!(!slow.is_finished());

    let t0 = Instant::now();
    server.signal(sig);
    let code = server.wait_exit(Duration::from_secs(5));
    let took = t0.elapsed();
    assert_eq!(code, Some(0), "{}", server.report());
    assert!(
        took < Duration::from_secs(3),
        "fast shutdown took {took:?}\n{}",
        server.report()
    );
    assert_all_gone(&server, &workers);
    // The in-flight request is cut short (it may fail); it must not hang.
    let (_, took) = slow.join().unwrap();
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[test]
fn int_is_a_fast_exit() {
    fast_stop(libc::SIGINT);
}

#[test]
fn quit_is_a_fast_exit() {
    fast_stop(libc::SIGQUIT);
}

#[test]
fn graceful_timeout_bounds_term() {
    let (mut server, addr) = start("spec:app", &["-w", "2", "--graceful-timeout", "1"]);
    let workers = wait_children(&server, 2, Duration::from_secs(10));
    let slow = request_in_background(&addr, "/sleep?s=10", Duration::from_secs(20));
    thread::sleep(Duration::from_millis(500));
    assert!(!slow.is_finished());

    let t0 = Instant::now();
    server.signal(libc::SIGTERM);
    let code = server.wait_exit(Duration::from_secs(8));
    let took = t0.elapsed();
    assert!(
        took < Duration::from_millis(3500),
        "TERM with --graceful-timeout 1 took {took:?}\n{}",
        server.report()
    );
    // Like Gunicorn: the workers are killed, the stop itself is still clean.
    assert_eq!(code, Some(0), "{}", server.report());
    assert_all_gone(&server, &workers);
    let (_, took) = slow.join().unwrap();
    assert!(took < Duration::from_secs(10), "{took:?}");
}

// ---------------------------------------------------------------------------
// 8. TTIN / TTOU
// ---------------------------------------------------------------------------

#[test]
fn ttin_and_ttou_change_the_worker_count() {
    let (server, addr) = start("spec:app", &["-w", "2"]);
    let two = wait_children(&server, 2, Duration::from_secs(10));

    server.signal(libc::SIGTTIN);
    let three = wait_children(&server, 3, Duration::from_secs(10));
    assert!(
        two.iter().all(|p| three.contains(p)),
        "{two:?} -> {three:?}"
    );
    server.wait_for_stderr("Handling signal: ttin", Duration::from_secs(5));
    let added = *three.iter().find(|p| !two.contains(p)).unwrap();
    server.wait_for_stderr(
        &format!("Booting worker with pid: {added}"),
        Duration::from_secs(5),
    );
    // The new worker serves too.
    // (It may still be importing the app: poll for a while.)
    let t0 = Instant::now();
    let mut answered = BTreeSet::new();
    while !answered.contains(&added) && t0.elapsed() < Duration::from_secs(15) {
        answered.insert(get_pid(&addr).unwrap_or_else(|e| panic!("{e}\n{}", server.report())));
    }
    assert!(
        answered.contains(&added),
        "the added worker {added} never answered (answers from {answered:?})\n{}",
        server.report()
    );

    server.signal(libc::SIGTTOU);
    server.wait_for_stderr("Handling signal: ttou", Duration::from_secs(5));
    let after = wait_children(&server, 2, Duration::from_secs(10));
    let removed: Vec<i32> = three
        .iter()
        .copied()
        .filter(|p| !after.contains(p))
        .collect();
    assert_eq!(removed.len(), 1, "{three:?} -> {after:?}");
    let gone = removed[0];
    assert!(wait_until(Duration::from_secs(5), || !pid_alive(gone)));
    server.wait_for_stderr(
        &format!("Worker exiting (pid: {gone})"),
        Duration::from_secs(5),
    );
    // Still stable at 2 and serving.
    thread::sleep(Duration::from_millis(500));
    assert_eq!(server.children(), after);
    for _ in 0..5 {
        get_pid(&addr).unwrap_or_else(|e| panic!("{e}\n{}", server.report()));
    }
}

// ---------------------------------------------------------------------------
// 9. process titles
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// 10. -e KEY=VALUE
// ---------------------------------------------------------------------------

#[test]
fn env_flag_reaches_the_app() {
    let (server, addr) = start(
        "spec:app",
        &[
            "-e",
            "FERRICORN_TEST_X=42",
            "--env",
            "FERRICORN_TEST_Y=a=b c",
        ],
    );
    let r = get(&addr, "/environ").unwrap_or_else(|e| panic!("{e}\n{}", server.report()));
    assert_eq!(r.status, 200);
    let env = &r.json()["_os_environ"];
    assert_eq!(env["FERRICORN_TEST_X"], "42", "{env}");
    assert_eq!(env["FERRICORN_TEST_Y"], "a=b c", "{env}");
}

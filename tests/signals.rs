//! Signals to the master (issue 2, acceptance 3 and 4; issue 3, signals): TERM lets an
//! in-flight request finish and exits 0 (unlinking its unix socket), INT and QUIT stop fast,
//! `--graceful-timeout` bounds TERM, TTIN and TTOU add and remove a worker, a worker killed with
//! SIGKILL is replaced (the master's SIGCHLD) without a failed request, and USR1 reopens the
//! access log in every worker (logrotate's `postrotate`).
//!
//! HUP is in `reload.rs`, USR2 in `upgrade.rs`. Every server binds `127.0.0.1:0` or a unix socket
//! inside its own temp dir, so the tests run in parallel.

mod common;

use std::collections::BTreeSet;
use std::thread;
use std::time::{Duration, Instant};

use common::{client::*, server::*, workers::*};

const T: Duration = Duration::from_secs(30);

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

#[test]
fn usr1_reopens_the_access_log() {
    let b = ferricorn();
    let dir = b.tmp_path().to_path_buf();
    let log = dir.join("access.log");
    let rotated = dir.join("access.log.1");
    let s = b
        .args([
            "-w",
            "2",
            "-b",
            "127.0.0.1:0",
            "--access-logfile",
            log.to_str().unwrap(),
            "hello:app",
        ])
        .cwd(examples_dir())
        .spawn();
    s.wait_ready(T);
    let addr = s.addr();
    get_text(&addr, "/before");
    assert!(wait_until(T, || std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("/before")));
    std::fs::rename(&log, &rotated).unwrap();
    s.signal(libc::SIGUSR1);
    assert!(
        wait_until(T, || log.exists()),
        "USR1 did not recreate the log"
    );
    // Every worker reopened: requests on fresh connections land in the new file.
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..10 {
        get_text(&addr, &format!("/after{i}"));
    }
    assert!(wait_until(T, || std::fs::read_to_string(&log)
        .unwrap_or_default()
        .matches("/after")
        .count()
        == 10));
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(
        !old.contains("/after"),
        "lines went to the rotated file: {old}"
    );
}

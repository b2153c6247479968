//! ferricorn as PID 1, as in a container without an init (issue 17): run as the first process
//! of a new PID namespace (`unshare --pid --fork --mount-proc`, no container engine needed).
//! Processes the app orphans are reparented to the master, which reaps them without taking
//! them for workers; TERM drains as under systemd.

mod common;

use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use common::client::get;
use common::scrape::{metrics_addr, scrape, value};
use common::server::{Server, pid_alive, proc_stat, procs_children, program, wait_until};

const T: Duration = Duration::from_secs(30);

fn apps() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/apps")
}

fn as_pid1(args: &[&str]) -> Server {
    let mut b = program("unshare").args(["--pid", "--fork", "--mount-proc"]);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        b = b.arg("--map-root-user");
    }
    let s = b
        .arg(env!("CARGO_BIN_EXE_ferricorn"))
        .args(["-b", "127.0.0.1:0", "--metrics-bind", "127.0.0.1:0"])
        .args(args.iter().copied())
        .arg("fleet:app")
        .cwd(apps())
        .spawn();
    s.wait_ready(T);
    s
}

/// A process's pid inside its own (innermost) PID namespace (`NSpid:` in /proc/PID/status).
fn ns_pid(pid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

#[test]
fn orphans_are_reaped_and_term_drains() {
    let mut s = as_pid1(&["-w", "2"]);
    // The master is unshare's child; inside the namespace it is PID 1.
    let master = *s.children().first().expect("the master");
    assert!(
        s.stderr().contains("Listening at: http://127.0.0.1:") && s.stderr().contains("] [1] ["),
        "the master is not PID 1 in its namespace\n{}",
        s.report()
    );
    let app = s.addr();
    // Each /orphan leaves a grandchild of the worker that outlives its parent: it becomes the
    // master's child, and a zombie once it exits unless the master reaps it.
    let orphans: Vec<i32> = (0..5)
        .map(|_| {
            let r = get(&app, "/orphan?s=0.3").unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
            r.text().parse().unwrap()
        })
        .collect();
    // The master's children that are those orphans (their pids inside the namespace).
    let strays = || {
        procs_children(master)
            .into_iter()
            .filter(|p| ns_pid(*p).is_some_and(|n| orphans.contains(&n)))
            .collect::<Vec<_>>()
    };
    assert!(
        wait_until(T, || strays().is_empty()),
        "orphans left under the master (zombies?): {:?}\n{}",
        strays()
            .into_iter()
            .map(|p| proc_stat(p).unwrap())
            .collect::<Vec<_>>(),
        s.report()
    );
    // Not mistaken for workers: the two workers still serve, none was replaced.
    let m = metrics_addr(&s);
    let got = scrape(&m);
    assert_eq!(
        value(&got, "ferricorn_workers{state=\"serving\"}"),
        2.0,
        "{got:#?}"
    );
    assert_eq!(s.count_stderr("Booting worker"), 2, "{}", s.report());
    assert_eq!(s.count_stderr("Worker (pid"), 0, "{}", s.report());

    // TERM drains: a request in flight finishes, then the master (and the namespace) exits 0.
    let slow = {
        let app = app.clone();
        thread::spawn(move || get(&app, "/sleep?s=1").map(|r| r.status))
    };
    assert!(
        wait_until(T, || value(&scrape(&m), "ferricorn_requests_in_flight")
            == 1.0),
        "the slow request never arrived"
    );
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(master, libc::SIGTERM) };
    assert_eq!(slow.join().unwrap().unwrap(), 200);
    assert_eq!(s.wait_exit(T), Some(0), "{}", s.report());
    assert!(!pid_alive(master));
}

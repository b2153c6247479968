//! `--user`/`--group` (issue 11, item 14): a worker that switched identity still dies with the
//! master. Linux clears the parent-death signal when a process changes its credentials, so it
//! must be set after the switch.
//!
//! These tests switch identity, which needs root; built as another user they are ignored (see
//! `build.rs`, which sets `ferricorn_tests_as_root`).

mod common;

use std::time::Duration;

use common::server::{examples_dir, ferricorn, pid_alive, wait_until};

const T: Duration = Duration::from_secs(30);

fn check_workers_die_with_the_master(flags: &[&str]) {
    let b = ferricorn();
    let sock = b.tmp_path().join("s.sock");
    let s = b
        .args(flags.iter().copied())
        .args([
            "-w",
            "2",
            "-b",
            &format!("unix:{}", sock.display()),
            "hello:app",
        ])
        .cwd(examples_dir())
        .spawn();
    s.wait_ready(T);
    let workers = s.children();
    assert_eq!(workers.len(), 2, "{}", s.report());
    s.signal(libc::SIGKILL);
    assert!(
        wait_until(Duration::from_secs(10), || !workers
            .iter()
            .any(|p| pid_alive(*p))),
        "workers {workers:?} outlived the SIGKILLed master\n{}",
        s.report()
    );
}

/// Before the fix the workers kept serving as orphans.
#[test]
#[cfg_attr(not(ferricorn_tests_as_root), ignore = "needs root (to switch group)")]
fn workers_that_switched_group_die_with_the_master() {
    check_workers_die_with_the_master(&["-g", "nogroup"]);
}

/// The same without a switch (the parent-death signal was never lost here).
#[test]
fn workers_that_keep_the_identity_die_with_the_master() {
    check_workers_die_with_the_master(&[]);
}

//! `--user`, `--group` and `--umask` (issue 3, process management; issue 11, item 14): workers
//! switch group or user while the master keeps root, the sockets ferricorn creates get the umask
//! (and belong to the user), and a worker that switched identity still dies with the master.
//! Linux clears the parent-death signal when a process changes its credentials, so it must be
//! set after the switch.
//!
//! The tests that switch identity need root; built as another user they are ignored (see
//! `build.rs`, which sets `ferricorn_tests_as_root`).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::client::{Addr, get};
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

#[test]
fn umask_applies_to_sockets_ferricorn_creates() {
    let b = ferricorn();
    let sock = b.tmp_path().join("s.sock");
    let s = b
        .args([
            "-m",
            "007",
            "-b",
            &format!("unix:{}", sock.display()),
            "hello:app",
        ])
        .cwd(examples_dir())
        .spawn();
    s.wait_ready(T);
    use std::os::unix::fs::MetadataExt;
    let mode = std::fs::metadata(&sock).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o770, "socket mode {mode:o}");
}

fn id_of(flag: &str, name: &str) -> String {
    let out = std::process::Command::new("id")
        .args([flag, name])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn status_ids(pid: i64, field: &str) -> Vec<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap()
        .to_string();
    line.split_whitespace()
        .skip(1)
        .map(str::to_string)
        .collect()
}

#[test]
#[cfg_attr(not(ferricorn_tests_as_root), ignore = "needs root (to switch group)")]
fn workers_switch_group_while_the_master_keeps_root() {
    let b = ferricorn();
    let sock = b.tmp_path().join("s.sock");
    let s = b
        .args([
            "-g",
            "nogroup",
            "-b",
            &format!("unix:{}", sock.display()),
            "spec:app",
        ])
        .cwd(examples_dir())
        .spawn();
    s.wait_ready(T);
    let env = get(&Addr::unix(&sock), "/environ").unwrap().json();
    let worker = env["_pid"].as_i64().unwrap();
    let nogroup = id_of("-g", "nobody");
    assert!(
        status_ids(worker, "Gid:").iter().all(|g| *g == nogroup),
        "{:?}",
        status_ids(worker, "Gid:")
    );
    assert_eq!(status_ids(s.pid() as i64, "Gid:")[0], "0");
}

/// Whether every directory above `path` lets other users through.
fn world_traversable(path: &Path) -> bool {
    path.ancestors().skip(1).all(|d| {
        std::fs::metadata(d)
            .map(|m| m.permissions().mode() & 0o001 != 0)
            .unwrap_or(false)
    })
}

#[test]
#[cfg_attr(not(ferricorn_tests_as_root), ignore = "needs root (to switch user)")]
fn workers_run_as_the_user() {
    let libdir = Path::new(env!("FERRICORN_PYTHON_LIBDIR"));
    if !world_traversable(&libdir.join("python3")) {
        // The user 'nobody' could not even read Python's standard library (e.g. pyenv under
        // /root, mode 0700): check that the failure is reported clearly instead.
        let out = ferricorn()
            .args(["-u", "nobody", "-b", "127.0.0.1:0", "hello:app"])
            .cwd(examples_dir())
            .run_to_exit(T);
        assert_ne!(out.code, Some(0));
        assert!(out.stderr.contains("standard library"), "{}", out.stderr);
        eprintln!(
            "NOTE: {} is not readable by other users; checked the error path only",
            libdir.display()
        );
        return;
    }
    let b = ferricorn();
    let dir = b.tmp_path().to_path_buf();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = dir.join("s.sock");
    let s = b
        .args([
            "-u",
            "nobody",
            "-b",
            &format!("unix:{}", sock.display()),
            "spec:app",
        ])
        .cwd(examples_dir())
        .spawn();
    s.wait_ready(T);
    let env = get(&Addr::unix(&sock), "/environ").unwrap().json();
    let worker = env["_pid"].as_i64().unwrap();
    let nobody = id_of("-u", "nobody");
    assert!(status_ids(worker, "Uid:").iter().all(|u| *u == nobody));
    assert_eq!(
        status_ids(s.pid() as i64, "Uid:")[0],
        "0",
        "the master keeps root"
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&sock).unwrap().uid().to_string(), nobody);
}

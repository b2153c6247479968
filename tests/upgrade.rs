//! USR2 upgrades (issue 11, items 17 and 18): the old master hands over only to a successor that
//! is alive, and hands over every listener, however many there are.

mod common;

use std::time::Duration;

use common::client::{Addr, get};
use common::server::{examples_dir, ferricorn, pid_alive, proc_stat, wait_until};

const T: Duration = Duration::from_secs(30);

fn kill(pid: i32, sig: i32) {
    assert!(pid > 0);
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid, sig) };
}

/// The pid in "Upgrading: started a new master (pid N) from ...".
fn successor_pid(line: &str) -> i32 {
    let rest = &line[line.find("(pid ").expect("pid in the upgrade line") + 5..];
    rest[..rest.find(')').unwrap()].parse().unwrap()
}

/// Item 17: a successor that died (a zombie not yet reaped when TERM arrives) is not taken for
/// a live one. Before the fix the old master asked `kill(pid, 0)`, which a zombie answers, and
/// handed over to the dead master: it left its sockets and pid file behind for nobody, and told
/// systemd nothing. Now it stops as on any TERM.
#[test]
fn term_after_the_successor_died_stops_instead_of_handing_over() {
    let b = ferricorn();
    let sock = b.tmp_path().join("s.sock");
    let pidfile = b.tmp_path().join("app.pid");
    let mut s = b
        .args(["-b", &format!("unix:{}", sock.display())])
        .args(["-p", pidfile.to_str().unwrap()])
        // The successor imports for 2 s: it is still booting when it is killed below.
        .args(["slow_import:app"])
        .env("FERRICORN_TEST_IMPORT_DELAY", "2")
        .cwd(examples_dir())
        .spawn();
    s.wait_ready(T);
    let master = s.pid();
    s.signal(libc::SIGUSR2);
    let new = successor_pid(&s.wait_for_stderr("Upgrading: started a new master", T));
    // Freeze the old master so that the successor's death stays unreaped, then kill it and
    // send TERM: both are pending when the old master runs again.
    kill(master, libc::SIGSTOP);
    kill(new, libc::SIGKILL);
    assert!(
        wait_until(T, || proc_stat(new).is_some_and(|st| st.state == 'Z')),
        "the successor {new} is not a zombie: {:?}",
        proc_stat(new)
    );
    kill(master, libc::SIGTERM);
    kill(master, libc::SIGCONT);
    assert_eq!(s.wait_exit(T), Some(0), "{}", s.report());
    let err = s.stderr();
    assert!(
        !err.contains("took over"),
        "handed over to a dead successor\n{}",
        s.report()
    );
    assert!(!sock.exists(), "the socket file was left behind");
    assert!(!pidfile.exists(), "the pid file was left behind");
}

/// Item 18: the listeners are handed to the successor as `LISTEN_FDS` from fd 3; with more than
/// 100 of them every one must arrive, in order, and serve. (The old code moved them above
/// fd 100 first, unchecked.)
#[test]
fn usr2_hands_over_more_than_100_listeners() {
    const N: usize = 120;
    let mut b = ferricorn()
        .cwd(examples_dir())
        .args(["--access-logfile", ""]);
    for _ in 0..N {
        b = b.args(["-b", "127.0.0.1:0"]);
    }
    let s = b.arg("hello:app").spawn();
    s.wait_ready(T);
    let addrs = s.addrs();
    assert_eq!(addrs.len(), N, "{}", s.report());
    s.signal(libc::SIGUSR2);
    let new = successor_pid(&s.wait_for_stderr("Upgrading: started a new master", T));
    s.wait_for_stderr("Taking over from the previous master", T);
    assert!(
        wait_until(T, || !pid_alive(s.pid())),
        "the old master did not exit\n{}",
        s.report()
    );
    assert!(pid_alive(new), "{}", s.report());
    let inherited = s.count_stderr("Inherited socket fd");
    assert_eq!(inherited, N, "{}", s.report());
    for (i, a) in addrs.iter().enumerate() {
        // The successor logs them in the order it received them: fd 3 + i is listener i.
        let Addr::Tcp(tcp) = a else { panic!("{a:?}") };
        let line = format!("Inherited socket fd {} 'unnamed' (http://{tcp})", 3 + i);
        assert!(s.stderr().contains(&line), "no {line:?}\n{}", s.report());
        let r = get(a, "/").unwrap_or_else(|e| panic!("{a:?}: {e}\n{}", s.report()));
        assert_eq!(r.status, 200);
    }
    kill(new, libc::SIGTERM);
    assert!(wait_until(T, || !pid_alive(new)));
}

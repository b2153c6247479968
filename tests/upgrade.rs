//! USR2 upgrades (issue 3, acceptance 6; issue 11, items 17 and 18): under load a new master
//! takes over with no failed request, systemd hears its `MAINPID=` with `READY=1` (and never
//! `STOPPING=1`), and the pid file names it; the old master hands over only to a successor that
//! is alive, and hands over every listener, however many there are.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::client::{Addr, get, get_text};
use common::load::load;
use common::notify::Notify;
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

#[test]
fn usr2_upgrades_under_load_without_losing_a_request() {
    let b = ferricorn();
    let dir = b.tmp_path().to_path_buf();
    let notify = Notify::new(&dir);
    let sock = dir.join("s.sock");
    let pidfile = dir.join("app.pid");
    let s = b
        .args([
            "-w",
            "2",
            "-b",
            &format!("unix:{}", sock.display()),
            "-p",
            pidfile.to_str().unwrap(),
        ])
        .args(["--access-logfile", "", "hello:app"])
        .cwd(examples_dir())
        .env("NOTIFY_SOCKET", notify.path.to_str().unwrap())
        .spawn();
    let ready = notify.wait_for("READY=1", 0, T);
    let old = s.pid();
    let addr = Addr::unix(&sock);
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    let clients = load(addr.clone(), 4, stop.clone(), count.clone());
    assert!(wait_until(T, || count.load(Ordering::Relaxed) >= 200));
    s.signal(libc::SIGUSR2);
    let again = notify.wait_for("MAINPID=", ready + 1, T);
    let msg = notify.messages()[again].1.clone();
    let new: i32 = msg
        .lines()
        .find_map(|l| l.strip_prefix("MAINPID="))
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(new, old);
    assert!(msg.contains("READY=1"), "{msg}");
    assert!(
        wait_until(T, || !pid_alive(old)),
        "the old master did not exit"
    );
    assert!(wait_until(T, || std::fs::read_to_string(&pidfile)
        .unwrap_or_default()
        .trim()
        == new.to_string()));
    let mark = count.load(Ordering::Relaxed);
    assert!(wait_until(T, || count.load(Ordering::Relaxed) >= mark + 200));
    stop.store(true, Ordering::Relaxed);
    let (ok, errors) = clients.join().unwrap();
    assert!(
        errors.is_empty(),
        "{} failed requests during the upgrade: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert!(ok > 100, "only {ok} requests");
    assert!(
        !notify
            .messages()
            .iter()
            .any(|(_, m)| m.contains("STOPPING=1")),
        "the upgrade told systemd it was stopping"
    );
    assert!(sock.exists());
    assert_eq!(get_text(&addr, "/"), "Hello, World!");
    // The new master is in charge: TERM stops it and removes the pid file and socket.
    unsafe { libc::kill(new, libc::SIGTERM) };
    assert!(wait_until(T, || !pid_alive(new)));
    assert!(wait_until(T, || !pidfile.exists() && !sock.exists()));
}

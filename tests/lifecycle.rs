//! systemd-native lifecycle (issue 3): socket activation, sd_notify, HUP reload, USR1, USR2,
//! pid file, daemon refusal, user/umask. Every test runs the real binary.

mod common;

use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::client::{Addr, Conn, get};
use common::server::{examples_dir, ferricorn, pid_alive, program, wait_until};

const T: Duration = Duration::from_secs(30);

/// Taken by the tests that load the machine and by the one that measures timing, so that the
/// watchdog's 100 ms bound is not checked while another test saturates both cores.
static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fake `NOTIFY_SOCKET`: records every datagram with the time it arrived.
struct Notify {
    path: PathBuf,
    log: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Notify {
    fn new(dir: &Path) -> Notify {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let l2 = log.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            // Ends when the test (and its temp dir) is gone: recv then fails for good.
            let deadline = Instant::now() + Duration::from_secs(300);
            while Instant::now() < deadline {
                match sock.recv(&mut buf) {
                    Ok(n) => l2.lock().unwrap().push((
                        Instant::now(),
                        String::from_utf8_lossy(&buf[..n]).into_owned(),
                    )),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if Arc::strong_count(&l2) == 1 {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        });
        Notify { path, log }
    }

    fn messages(&self) -> Vec<(Instant, String)> {
        self.log.lock().unwrap().clone()
    }

    /// Waits for a datagram containing `needle` (after `from` messages); returns its index.
    fn wait_for(&self, needle: &str, from: usize, timeout: Duration) -> usize {
        let mut found = None;
        wait_until(timeout, || {
            found = self
                .messages()
                .iter()
                .skip(from)
                .position(|(_, m)| m.contains(needle))
                .map(|i| i + from);
            found.is_some()
        });
        found.unwrap_or_else(|| {
            panic!(
                "no {needle:?} on the notify socket; got {:#?}",
                self.messages()
            )
        })
    }
}

fn unix(path: &Path) -> Addr {
    Addr::Unix(path.to_path_buf())
}

fn get_ok(addr: &Addr, target: &str) -> String {
    let r = get(addr, target).unwrap_or_else(|e| panic!("GET {target}: {e}"));
    assert_eq!(r.status, 200, "GET {target}: {}", r.text());
    r.text()
}

#[test]
fn socket_activation_on_a_unix_socket() {
    let b = program("systemd-socket-activate");
    let sock = b.tmp_path().join("app.sock");
    let mut s = b
        .args(["-l", sock.to_str().unwrap(), "--fdname=app.socket"])
        .arg(env!("CARGO_BIN_EXE_ferricorn"))
        .args(["--chdir", examples_dir().to_str().unwrap(), "spec:app"])
        .spawn();
    s.wait_for_stderr("Listening on", T);
    let env = get(&unix(&sock), "/environ").unwrap().json();
    assert_eq!(env["REMOTE_ADDR"], "");
    assert_eq!(
        env["_os_environ"],
        serde_json::json!({}),
        "LISTEN_* reached the app"
    );
    s.wait_for_stderr("Inherited socket fd 3 'app.socket'", T);
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(T), Some(0));
    assert!(
        sock.exists(),
        "an inherited socket file must never be unlinked"
    );
}

#[test]
fn socket_activation_on_tcp() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let mut s = program("systemd-socket-activate")
        .args(["-l", &format!("127.0.0.1:{port}")])
        .arg(env!("CARGO_BIN_EXE_ferricorn"))
        .args([
            "--chdir",
            examples_dir().to_str().unwrap(),
            "-b",
            "127.0.0.1:1",
            "spec:app",
        ])
        .spawn();
    s.wait_for_stderr("Listening on", T);
    let addr = Addr::Tcp(format!("127.0.0.1:{port}").parse().unwrap());
    let env = get(&addr, "/environ").unwrap().json();
    assert_eq!(env["REMOTE_ADDR"], "127.0.0.1");
    assert_eq!(env["_os_environ"], serde_json::json!({}));
    // --bind given too: the inherited socket is served and the mismatch is reported.
    s.wait_for_stderr(
        "--bind 127.0.0.1:1 matches none of the sockets systemd passed",
        T,
    );
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(T), Some(0));
}

#[test]
fn socket_activation_refuses_datagram_and_accept_sockets() {
    let b = program("systemd-socket-activate");
    let sock = b.tmp_path().join("dgram.sock");
    let mut s = b
        .args(["--datagram", "-l", sock.to_str().unwrap()])
        .arg(env!("CARGO_BIN_EXE_ferricorn"))
        .args(["--chdir", examples_dir().to_str().unwrap(), "hello:app"])
        .spawn();
    // systemd-socket-activate execs on the first datagram.
    s.wait_for_stderr("Listening on", T);
    let c = UnixDatagram::unbound().unwrap();
    c.send_to(b"x", &sock).unwrap();
    assert_ne!(s.wait_exit(T), Some(0));
    assert!(s.stderr().contains("stream sockets only"), "{}", s.stderr());

    let b = program("systemd-socket-activate");
    let sock = b.tmp_path().join("accept.sock");
    let s = b
        .args(["--accept", "-l", sock.to_str().unwrap()])
        .arg(env!("CARGO_BIN_EXE_ferricorn"))
        .args(["--chdir", examples_dir().to_str().unwrap(), "hello:app"])
        .spawn();
    s.wait_for_stderr("Listening on", T);
    let _conn = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    s.wait_for_stderr("connected socket", T);
    assert!(s.stderr().contains("Accept=no"), "{}", s.stderr());
    s.signal(libc::SIGTERM);
}

#[test]
fn notify_ready_only_after_a_slow_import_then_reload_and_stop() {
    let b = ferricorn();
    let notify = Notify::new(b.tmp_path());
    let sock = b.tmp_path().join("s.sock");
    let started = Instant::now();
    let mut s = b
        .args([
            "-w",
            "2",
            "-b",
            &format!("unix:{}", sock.display()),
            "slow_import:app",
        ])
        .cwd(examples_dir())
        .env("NOTIFY_SOCKET", notify.path.to_str().unwrap())
        .env("FERRICORN_TEST_IMPORT_DELAY", "2")
        .spawn();
    let ready = notify.wait_for("READY=1", 0, T);
    let (at, msg) = notify.messages()[ready].clone();
    assert!(
        at - started >= Duration::from_secs(2),
        "READY after {:?}",
        at - started
    );
    assert!(msg.contains(&format!("MAINPID={}", s.pid())), "{msg}");
    assert!(
        notify.messages()[..ready]
            .iter()
            .any(|(_, m)| m.contains("EXTEND_TIMEOUT_USEC=")),
        "no EXTEND_TIMEOUT_USEC while booting"
    );
    assert_eq!(get_ok(&unix(&sock), "/"), "Hello, World!");
    let status = notify.wait_for("STATUS=Serving: 2 workers", 0, T);
    assert!(status >= ready);

    s.signal(libc::SIGHUP);
    let reloading = notify.wait_for("RELOADING=1", ready + 1, T);
    assert!(
        notify.messages()[reloading].1.contains("MONOTONIC_USEC="),
        "same datagram"
    );
    let again = notify.wait_for("READY=1", reloading + 1, T);
    assert!(
        notify.messages()[again].1.contains("last reload ok"),
        "{:?}",
        notify.messages()[again]
    );

    s.signal(libc::SIGTERM);
    let stopping = notify.wait_for("STOPPING=1", again + 1, T);
    assert!(stopping > again);
    assert_eq!(s.wait_exit(T), Some(0));
    // The app never sees the notify socket.
    assert!(!s.stderr().contains("NOTIFY_SOCKET"));
}

#[test]
fn notify_on_an_abstract_socket_and_not_passed_to_the_app() {
    let name = format!("ferricorn-test-{}-{}", std::process::id(), line!());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let rx = UnixDatagram::bind_addr(&addr).unwrap();
    rx.set_read_timeout(Some(T)).unwrap();
    let b = ferricorn();
    let sock = b.tmp_path().join("s.sock");
    let _s = b
        .args(["-b", &format!("unix:{}", sock.display()), "spec:app"])
        .cwd(examples_dir())
        .env("NOTIFY_SOCKET", &format!("@{name}"))
        .spawn();
    let mut buf = [0u8; 4096];
    let mut seen = String::new();
    while !seen.contains("READY=1") {
        let n = rx
            .recv(&mut buf)
            .expect("a datagram on the abstract socket");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let env = get(&unix(&sock), "/environ").unwrap().json();
    assert_eq!(
        env["_os_environ"],
        serde_json::json!({}),
        "NOTIFY_SOCKET reached the app"
    );
}

#[test]
fn watchdog_every_100ms_and_silent_when_the_master_is_stopped() {
    let _serial = heavy();
    let b = ferricorn();
    let notify = Notify::new(b.tmp_path());
    let mut s = b
        .args(["-b", "127.0.0.1:0", "hello:app"])
        .cwd(examples_dir())
        .env("NOTIFY_SOCKET", notify.path.to_str().unwrap())
        .env("WATCHDOG_USEC", "200000")
        .spawn();
    notify.wait_for("READY=1", 0, T);
    std::thread::sleep(Duration::from_millis(1500));
    let dogs: Vec<Instant> = notify
        .messages()
        .iter()
        .filter(|(_, m)| m.contains("WATCHDOG=1"))
        .map(|(t, _)| *t)
        .collect();
    assert!(dogs.len() >= 10, "{} watchdog messages", dogs.len());
    let worst = dogs.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(
        worst <= Duration::from_millis(100),
        "a {worst:?} gap between WATCHDOG=1"
    );

    s.signal(libc::SIGSTOP);
    std::thread::sleep(Duration::from_millis(100));
    let before = notify.messages().len();
    std::thread::sleep(Duration::from_millis(600));
    let during: Vec<_> = notify.messages()[before..]
        .iter()
        .filter(|(_, m)| m.contains("WATCHDOG"))
        .cloned()
        .collect();
    s.signal(libc::SIGCONT);
    assert!(
        during.is_empty(),
        "WATCHDOG=1 sent by a stopped master: {during:?}"
    );
    let after = notify.messages().len();
    notify.wait_for("WATCHDOG=1", after, T);
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(T), Some(0));
}

/// Writes the reload test app: its response names the version.
fn write_app(dir: &Path, version: u32) {
    let src = format!(
        "def app(environ, start_response):\n    body = b'version {version}'\n    \
         start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])\n    \
         return [body]\n"
    );
    let tmp = dir.join("reloadapp.py.tmp");
    std::fs::write(&tmp, src).unwrap();
    std::fs::rename(tmp, dir.join("reloadapp.py")).unwrap();
}

/// A bounded load: `threads` clients, half on fresh connections and half keep-alive, until
/// `stop` (or 120 s); counts successes in `ok`; returns (ok, failures with their reasons).
fn load(
    addr: Addr,
    threads: usize,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<(usize, Vec<String>)> {
    std::thread::spawn(move || {
        let errors = Arc::new(Mutex::new(Vec::new()));
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let (addr, stop, ok, errors) =
                    (addr.clone(), stop.clone(), ok.clone(), errors.clone());
                std::thread::spawn(move || {
                    let deadline = Instant::now() + Duration::from_secs(120);
                    let mut conn: Option<Conn> = None;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        let keep_alive = i % 2 == 1;
                        let result = if keep_alive {
                            match conn.as_mut() {
                                Some(c) => c.request("GET", "/", &[], None),
                                None => match Conn::connect(&addr) {
                                    Ok(c) => conn.insert(c).request("GET", "/", &[], None),
                                    Err(e) => Err(e),
                                },
                            }
                        } else {
                            get(&addr, "/")
                        };
                        match result {
                            Ok(r) if r.status == 200 => {
                                ok.fetch_add(1, Ordering::Relaxed);
                                if r.header("connection")
                                    .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                                {
                                    conn = None;
                                }
                            }
                            Ok(r) => errors.lock().unwrap().push(format!("status {}", r.status)),
                            Err(e) => {
                                errors.lock().unwrap().push(format!("{e}"));
                                conn = None;
                            }
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let errors = errors.lock().unwrap().clone();
        (ok.load(Ordering::Relaxed), errors)
    })
}

#[test]
fn hup_under_load_loses_nothing_and_picks_up_new_code() {
    let _serial = heavy();
    let b = ferricorn();
    let dir = b.tmp_path().to_path_buf();
    write_app(&dir, 0);
    let notify = Notify::new(&dir);
    let sock = dir.join("s.sock");
    let s = b
        .args([
            "-w",
            "2",
            "--chdir",
            dir.to_str().unwrap(),
            "-b",
            &format!("unix:{}", sock.display()),
        ])
        .args(["--access-logfile", "", "reloadapp:app"])
        .env("NOTIFY_SOCKET", notify.path.to_str().unwrap())
        .spawn();
    notify.wait_for("READY=1", 0, T);
    let addr = unix(&sock);
    assert_eq!(get_ok(&addr, "/"), "version 0");
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    let clients = load(addr.clone(), 4, stop.clone(), count.clone());
    let mut seen = 0;
    for v in 1..=5 {
        // At least 400 requests between two reloads: 2000 across the five.
        let mark = count.load(Ordering::Relaxed);
        assert!(wait_until(Duration::from_secs(60), || count
            .load(Ordering::Relaxed)
            >= mark + 400));
        write_app(&dir, v);
        s.signal(libc::SIGHUP);
        let reloading = notify.wait_for("RELOADING=1", seen + 1, T);
        seen = notify.wait_for("READY=1", reloading + 1, T);
        assert!(
            notify.messages()[seen].1.contains("last reload ok"),
            "{:?}",
            notify.messages()[seen]
        );
        // Once the old generation has drained, every request reaches the new code.
        let new_gen = s.children();
        assert!(
            wait_until(T, || s.children().len() == 2),
            "old workers still running"
        );
        assert!(new_gen.len() >= 2);
        for _ in 0..10 {
            assert_eq!(get_ok(&addr, "/"), format!("version {v}"));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, errors) = clients.join().unwrap();
    assert!(
        errors.is_empty(),
        "{} failed requests during reloads: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert!(ok >= 2000, "only {ok} requests");
    assert_eq!(s.count_stderr("Reload complete"), 5);
}

#[test]
fn hup_with_a_broken_config_keeps_the_old_workers() {
    let b = ferricorn();
    let dir = b.tmp_path().to_path_buf();
    let notify = Notify::new(&dir);
    let cfg = dir.join("app.toml");
    let sock = dir.join("s.sock");
    std::fs::write(
        &cfg,
        format!(
            "app = \"hello:app\"\nworkers = 1\nbind = [\"unix:{}\"]\n",
            sock.display()
        ),
    )
    .unwrap();
    let s = b
        .args([
            "-c",
            cfg.to_str().unwrap(),
            "--chdir",
            examples_dir().to_str().unwrap(),
        ])
        .env("NOTIFY_SOCKET", notify.path.to_str().unwrap())
        .spawn();
    let ready = notify.wait_for("READY=1", 0, T);
    let addr = unix(&sock);
    let pid_before = s.children();
    std::fs::write(&cfg, "app = \"hello:app\"\nworkers = \"many\"\n").unwrap();
    s.signal(libc::SIGHUP);
    let again = notify.wait_for("READY=1", ready + 1, T);
    assert!(
        notify.messages()[again].1.contains("failed"),
        "{:?}",
        notify.messages()[again]
    );
    s.wait_for_stderr("Reload failed", T);
    assert!(s.stderr().contains("app.toml:2"), "{}", s.stderr());
    assert_eq!(get_ok(&addr, "/"), "Hello, World!");
    assert_eq!(
        s.children(),
        pid_before,
        "the old workers must keep serving"
    );

    // A config that parses but whose app cannot load: the new generation is discarded.
    std::fs::write(
        &cfg,
        format!(
            "app = \"broken_syntax:app\"\nbind = [\"unix:{}\"]\n",
            sock.display()
        ),
    )
    .unwrap();
    s.signal(libc::SIGHUP);
    let third = notify.wait_for("READY=1", again + 1, T);
    assert!(
        notify.messages()[third].1.contains("failed"),
        "{:?}",
        notify.messages()[third]
    );
    assert_eq!(get_ok(&addr, "/"), "Hello, World!");
    wait_until(T, || s.children() == pid_before);
    assert_eq!(s.children(), pid_before);
}

#[test]
fn hup_opens_new_binds_and_closes_removed_ones() {
    let b = ferricorn();
    let dir = b.tmp_path().to_path_buf();
    let cfg = dir.join("app.toml");
    let a = dir.join("a.sock");
    let c = dir.join("c.sock");
    std::fs::write(&cfg, format!("bind = [\"unix:{}\"]\n", a.display())).unwrap();
    let s = b
        .args(["-c", cfg.to_str().unwrap(), "hello:app"])
        .cwd(examples_dir())
        .spawn();
    s.wait_ready(T);
    std::fs::write(&cfg, format!("bind = [\"unix:{}\"]\n", c.display())).unwrap();
    s.signal(libc::SIGHUP);
    s.wait_for_stderr("Reload complete", T);
    assert_eq!(get_ok(&unix(&c), "/"), "Hello, World!");
    assert!(
        wait_until(T, || !a.exists()),
        "the removed bind's socket file is still there"
    );
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
    get_ok(&addr, "/before");
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
        get_ok(&addr, &format!("/after{i}"));
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

#[test]
fn usr2_upgrades_under_load_without_losing_a_request() {
    let _serial = heavy();
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
    let addr = unix(&sock);
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
    assert_eq!(get_ok(&addr, "/"), "Hello, World!");
    // The new master is in charge: TERM stops it and removes the pid file and socket.
    unsafe { libc::kill(new, libc::SIGTERM) };
    assert!(wait_until(T, || !pid_alive(new)));
    assert!(wait_until(T, || !pidfile.exists() && !sock.exists()));
}

#[test]
fn pid_file_written_removed_and_stale_ones_ignored() {
    let b = ferricorn();
    let pidfile = b.tmp_path().join("app.pid");
    // Stale: a pid that cannot exist.
    std::fs::write(&pidfile, "999999999\n").unwrap();
    let mut s = b
        .args([
            "-b",
            "127.0.0.1:0",
            "-p",
            pidfile.to_str().unwrap(),
            "hello:app",
        ])
        .cwd(examples_dir())
        .spawn();
    s.wait_ready(T);
    assert_eq!(
        std::fs::read_to_string(&pidfile).unwrap().trim(),
        s.pid().to_string()
    );
    // A second server on the same pid file refuses to start.
    let out = ferricorn()
        .args([
            "-b",
            "127.0.0.1:0",
            "-p",
            pidfile.to_str().unwrap(),
            "hello:app",
        ])
        .cwd(examples_dir())
        .run_to_exit(T);
    assert_ne!(out.code, Some(0));
    assert!(out.stderr.contains("already running"), "{}", out.stderr);
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(T), Some(0));
    assert!(!pidfile.exists());
}

#[test]
fn daemon_is_refused_under_a_monitor() {
    for (k, v) in [
        ("NOTIFY_SOCKET", "/run/systemd/notify"),
        ("INVOCATION_ID", "abc"),
    ] {
        let out = ferricorn()
            .args(["-D", "hello:app"])
            .cwd(examples_dir())
            .env(k, v)
            .run_to_exit(T);
        assert_eq!(out.code, Some(2), "{k}: {}", out.stderr);
        assert!(
            out.stderr.contains("--daemon refused") && out.stderr.contains(k),
            "{}",
            out.stderr
        );
    }
}

#[test]
fn daemon_detaches_in_a_plain_shell() {
    // run_to_exit removes the builder's temp dir; the daemon outlives it.
    let dir = tempfile::tempdir().unwrap();
    let b = ferricorn();
    let pidfile = dir.path().join("d.pid");
    let sock = dir.path().join("d.sock");
    let log = dir.path().join("error.log");
    let out = b
        .args([
            "-D",
            "-p",
            pidfile.to_str().unwrap(),
            "-b",
            &format!("unix:{}", sock.display()),
        ])
        .args(["--error-logfile", log.to_str().unwrap(), "hello:app"])
        .cwd(examples_dir())
        .env_remove("INVOCATION_ID")
        .env_remove("NOTIFY_SOCKET")
        .run_to_exit(T);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(wait_until(T, || pidfile.exists()));
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The pid file is written before the socket is bound: wait for the socket.
    assert!(wait_until(T, || get(&unix(&sock), "/").is_ok()));
    assert_eq!(get_ok(&unix(&sock), "/"), "Hello, World!");
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert!(wait_until(T, || !pid_alive(pid)));
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("Shutting down: Master")
    );
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
    let env = get(&unix(&sock), "/environ").unwrap().json();
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
    let env = get(&unix(&sock), "/environ").unwrap().json();
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

//! `--preload` (issue 14): the app is imported once, in the master, before any worker forks;
//! an import failure exits 4 before a worker starts; and, beyond Gunicorn (whose HUP cannot
//! load new code with `--preload`, its issue #2449), HUP starts a new master the way USR2
//! does: new code is served, no request fails, systemd hears `RELOADING=1`, then `READY=1`
//! with the new `MAINPID=`. The memory figures are `bench/preload_pss.py`'s.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::client::{Addr, get};
use common::load::load;
use common::notify::Notify;
use common::server::{ServerBuilder, ferricorn, pid_alive, wait_until};

const T: Duration = Duration::from_secs(30);

/// The app records the process that imported it.
fn write_app(dir: &Path, version: u32) {
    let src = format!(
        "import os\nwith open(os.path.join(os.path.dirname(__file__), 'imports.log'), 'a') as f:\n    \
         f.write('%d\\n' % os.getpid())\n\
         def app(environ, start_response):\n    body = b'version {version} from %d' % os.getpid()\n    \
         start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])\n    \
         return [body]\n"
    );
    let tmp = dir.join("preapp.py.tmp");
    std::fs::write(&tmp, src).unwrap();
    std::fs::rename(tmp, dir.join("preapp.py")).unwrap();
}

fn imports(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("imports.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

fn builder(dir: &Path) -> ServerBuilder {
    ferricorn()
        .cwd(dir)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("WEB_CONCURRENCY")
        .env_remove("VIRTUAL_ENV")
}

#[test]
fn the_app_is_imported_once_in_the_master_and_workers_serve_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_app(d, 1);
    let sock = d.join("s.sock");
    let s = builder(d)
        .args([
            "--preload",
            "-w",
            "3",
            "-b",
            &format!("unix:{}", sock.display()),
        ])
        .arg("preapp:app")
        .spawn();
    s.wait_ready(T);
    assert_eq!(imports(d), vec![s.pid()], "{}", s.report());
    let addr = Addr::Unix(sock);
    let r = get(&addr, "/").unwrap();
    let text = r.text();
    assert!(text.starts_with("version 1 from "), "{text}");
    let served_by: i32 = text.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(s.children().contains(&served_by), "{text}");
    s.wait_for_stderr("Preloaded the app `preapp:app` in the master", T);
}

#[test]
fn an_import_failure_exits_4_before_any_worker_starts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("broken.py"), "import nosuchmodule_here\n").unwrap();
    let mut s = builder(d)
        .args(["--preload", "-w", "2", "-b", "127.0.0.1:0", "broken:app"])
        .spawn();
    assert_eq!(s.wait_exit(T), Some(4), "{}", s.report());
    let err = s.stderr();
    assert!(err.contains("No module named 'nosuchmodule_here'"), "{err}");
    assert!(err.contains("Traceback"), "{err}");
    assert!(!err.contains("Booting worker"), "a worker started\n{err}");
    // The same from a Python config file.
    std::fs::write(
        d.join("gunicorn.conf.py"),
        "preload_app = True\nbind = '127.0.0.1:0'\n",
    )
    .unwrap();
    let mut s = builder(d).arg("broken:app").spawn();
    assert_eq!(s.wait_exit(T), Some(4), "{}", s.report());
}

fn main_pid(msg: &str) -> i32 {
    msg.lines()
        .find_map(|l| l.strip_prefix("MAINPID="))
        .unwrap_or_else(|| panic!("no MAINPID in {msg:?}"))
        .parse()
        .unwrap()
}

#[test]
fn hup_with_preload_starts_a_new_master_serving_new_code_without_a_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_app(d, 0);
    let notify = Notify::new(d);
    let sock = d.join("s.sock");
    let pidfile = d.join("app.pid");
    let s = builder(d)
        .args([
            "--preload",
            "-w",
            "2",
            "-b",
            &format!("unix:{}", sock.display()),
        ])
        .args(["-p", pidfile.to_str().unwrap(), "--access-logfile", ""])
        .arg("preapp:app")
        .env("NOTIFY_SOCKET", notify.path.to_str().unwrap())
        .spawn();
    let mut seen = notify.wait_for("READY=1", 0, T);
    let mut master = main_pid(&notify.texts()[seen]);
    assert_eq!(master, s.pid());
    let addr = Addr::Unix(sock.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    let clients = load(addr.clone(), 4, stop.clone(), count.clone());
    for v in 1..=3 {
        let mark = count.load(Ordering::Relaxed);
        assert!(wait_until(T, || count.load(Ordering::Relaxed) >= mark + 200));
        write_app(d, v);
        unsafe { libc::kill(master, libc::SIGHUP) };
        let reloading = notify.wait_for("RELOADING=1", seen + 1, T);
        seen = notify.wait_for("READY=1", reloading + 1, T);
        let new = main_pid(&notify.texts()[seen]);
        assert_ne!(new, master, "{:?}", notify.texts());
        assert!(
            wait_until(T, || !pid_alive(master)),
            "the old master {master} did not exit\n{}",
            s.report()
        );
        master = new;
        assert!(wait_until(T, || std::fs::read_to_string(&pidfile)
            .unwrap_or_default()
            .trim()
            == master.to_string()));
        for _ in 0..10 {
            let text = get(&addr, "/").unwrap().text();
            assert!(
                text.starts_with(&format!("version {v} ")),
                "{text}\n{}",
                s.report()
            );
        }
        // The new code was imported once, by the new master.
        assert_eq!(imports(d).last(), Some(&master));
    }
    stop.store(true, Ordering::Relaxed);
    let (_, errors) = clients.join().unwrap();
    assert!(
        errors.is_empty(),
        "{} failed requests during the reloads: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert!(
        !notify.texts().iter().any(|m| m.contains("STOPPING=1")),
        "a reload told systemd it was stopping"
    );
    unsafe { libc::kill(master, libc::SIGTERM) };
    assert!(wait_until(T, || !pid_alive(master)));
}

/// A new master whose new code does not import: the reload is refused, the old master keeps
/// serving the old code, and systemd hears `READY=1` again.
#[test]
fn hup_with_preload_and_broken_new_code_keeps_the_old_master() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_app(d, 1);
    let notify = Notify::new(d);
    let sock = d.join("s.sock");
    let s = builder(d)
        .args([
            "--preload",
            "-b",
            &format!("unix:{}", sock.display()),
            "preapp:app",
        ])
        .env("NOTIFY_SOCKET", notify.path.to_str().unwrap())
        .spawn();
    let ready = notify.wait_for("READY=1", 0, T);
    std::fs::write(
        d.join("preapp.py"),
        "raise RuntimeError('broken release')\n",
    )
    .unwrap();
    s.signal(libc::SIGHUP);
    let reloading = notify.wait_for("RELOADING=1", ready + 1, T);
    let again = notify.wait_for("READY=1", reloading + 1, T);
    assert_eq!(main_pid(&notify.texts()[again]), s.pid());
    s.wait_for_stderr("Reload failed: the new master exited with code 4", T);
    let text = get(&Addr::Unix(sock), "/").unwrap().text();
    assert!(text.starts_with("version 1 "), "{text}");
}

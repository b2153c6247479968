//! `--reload` (issue 14): edit a module the app imported (or a `--reload-extra-file`) and the
//! next requests see the change; a syntax error keeps the old code serving until the next
//! save; refused with `--preload`; off by default.

mod common;

use std::path::Path;
use std::time::Duration;

use common::client::{Addr, get};
use common::server::{Server, ServerBuilder, ferricorn, wait_until};

const T: Duration = Duration::from_secs(30);

fn write(dir: &Path, name: &str, text: &str) {
    // As an editor saves: a new file renamed over the old one.
    let tmp = dir.join(format!(".{name}.swp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, dir.join(name)).unwrap();
}

fn setup(dir: &Path, greeting: &str) {
    write(
        dir,
        "devapp.py",
        "import greeting\n\ndef app(environ, start_response):\n    body = greeting.TEXT.encode()\n    \
         start_response('200 OK', [('Content-Length', str(len(body)))])\n    return [body]\n",
    );
    write(dir, "greeting.py", &format!("TEXT = {greeting:?}\n"));
}

fn builder(dir: &Path) -> ServerBuilder {
    ferricorn()
        .cwd(dir)
        .env_remove("WEB_CONCURRENCY")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .args(["-b", &format!("unix:{}", dir.join("s.sock").display())])
}

fn text(dir: &Path) -> String {
    get(&Addr::Unix(dir.join("s.sock")), "/")
        .map(|r| r.text())
        .unwrap_or_default()
}

fn sees(s: &Server, dir: &Path, want: &str) {
    assert!(
        wait_until(T, || text(dir) == want),
        "want {want:?}, got {:?}\n{}",
        text(dir),
        s.report()
    );
}

#[test]
fn an_edited_module_is_served_after_the_next_save() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d, "one");
    std::fs::write(d.join("template.html"), "v1").unwrap();
    let s = builder(d)
        .args([
            "--reload",
            "-w",
            "2",
            "--reload-extra-file",
            "template.html",
            "devapp:app",
        ])
        .spawn();
    s.wait_ready(T);
    assert_eq!(text(d), "one");
    // Let the watchers read sys.modules once.
    std::thread::sleep(Duration::from_millis(1500));
    write(d, "greeting.py", "TEXT = 'two'\n");
    sees(&s, d, "two");
    s.wait_for_stderr("greeting.py modified; reloading (--reload)", T);

    // A broken save: the old code serves on, the error is logged; the fix is picked up.
    std::thread::sleep(Duration::from_millis(1500));
    write(d, "greeting.py", "TEXT = 'three\n");
    s.wait_for_stderr("Reload failed", T);
    assert_eq!(text(d), "two");
    std::thread::sleep(Duration::from_millis(1500));
    write(d, "greeting.py", "TEXT = 'four'\n");
    sees(&s, d, "four");

    // An extra file.
    std::thread::sleep(Duration::from_millis(1500));
    let before = s.count_stderr("Reload complete");
    std::fs::write(d.join("template.html"), "v2").unwrap();
    assert!(
        wait_until(T, || s.count_stderr("Reload complete") > before),
        "{}",
        s.report()
    );
}

#[test]
fn the_poll_engine_sees_a_change_too() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d, "one");
    let s = builder(d)
        .args(["--reload", "--reload-engine", "poll", "devapp:app"])
        .spawn();
    s.wait_ready(T);
    std::thread::sleep(Duration::from_millis(1500));
    write(d, "greeting.py", "TEXT = 'polled'\n");
    sees(&s, d, "polled");
}

#[test]
fn without_reload_a_change_is_not_picked_up_and_reload_refuses_preload() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d, "one");
    let s = builder(d).arg("devapp:app").spawn();
    s.wait_ready(T);
    write(d, "greeting.py", "TEXT = 'two'\n");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(text(d), "one");
    assert_eq!(s.count_stderr("Reload"), 0, "{}", s.report());
    drop(s);
    let out = builder(d)
        .args(["--reload", "--preload", "devapp:app"])
        .run_to_exit(T);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("--reload cannot be used with --preload"),
        "{}",
        out.stderr
    );
}

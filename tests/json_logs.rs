//! JSON logs (issue 17): `--log-format json` for the error log and `--access-log-format json`,
//! one object per line with the journald fields' names, whatever a client sends.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::client::{get, request};
use common::server::ferricorn;

const T: Duration = Duration::from_secs(30);

fn apps() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/apps")
}

fn objects(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object: {l:?}: {e}"))
        })
        .collect()
}

#[test]
fn error_and_access_logs_are_json_lines() {
    let mut s = ferricorn()
        .args(["-b", "127.0.0.1:0", "--log-format", "json"])
        .args(["--access-log-format", "json"])
        .arg("fleet:app")
        .cwd(apps())
        .spawn();
    s.wait_ready(T);
    let app = s.addr();
    assert_eq!(get(&app, "/a%20b?x=1&y=%22").unwrap().status, 200);
    let hostile = "evil\"agent\\ {\"k\": 1} ünïcode";
    let r = request(
        &app,
        "POST",
        "/echo",
        &[("User-Agent", hostile), ("Referer", "http://r/")],
        Some(b"12345"),
    )
    .unwrap();
    assert_eq!(r.body, b"12345");
    // A refused request: a warning in the error log.
    let r = request(&app, "GET", "/", &[("Host", "a"), ("Host", "b")], None).unwrap();
    assert_eq!(r.status, 400);
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(T), Some(0), "{}", s.report());

    let access = objects(&s.stdout());
    assert_eq!(access.len(), 2, "{access:#?}");
    let (a, b) = (&access[0], &access[1]);
    assert_eq!(a["CLIENT_ADDR"], "127.0.0.1");
    assert_eq!(a["REQUEST_METHOD"], "GET");
    assert_eq!(a["REQUEST_PATH"], "/a b");
    assert_eq!(a["REQUEST_QUERY"], "x=1&y=%22");
    assert_eq!(a["PROTOCOL"], "HTTP/1.1");
    assert_eq!(a["STATUS"], 200);
    assert_eq!(a["BYTES"], 14);
    assert!(a["DURATION_USEC"].as_u64().is_some(), "{a}");
    assert!(a["WORKER_PID"].as_u64().unwrap() > 0);
    assert!(a["timestamp"].as_str().unwrap().contains('T'));
    assert_eq!(b["REQUEST_METHOD"], "POST");
    assert_eq!(b["USER_AGENT"], hostile);
    assert_eq!(b["REFERER"], "http://r/");
    assert_eq!(b["BYTES"], 5);

    let errors = objects(&s.stderr());
    assert!(
        errors.iter().all(|e| e["timestamp"].is_string()
            && e["level"].is_string()
            && e["message"].is_string()
            && e["PID"].as_u64().is_some()),
        "{errors:#?}"
    );
    let started = errors
        .iter()
        .find(|e| {
            e["message"]
                .as_str()
                .unwrap()
                .starts_with("Starting ferricorn")
        })
        .expect("the start line");
    assert_eq!(started["level"], "INFO");
    let rejected = errors
        .iter()
        .find(|e| e["message"].as_str().unwrap().contains("Rejected request"))
        .expect("the rejected request's warning");
    assert_eq!(rejected["level"], "WARNING");
    assert_eq!(rejected["PID"], b["WORKER_PID"]);
}

#[test]
fn text_stays_the_default_and_bad_formats_are_refused() {
    let out = ferricorn()
        .args(["--log-format", "yaml", "fleet:app"])
        .cwd(apps())
        .run_to_exit(T);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("log-format"), "{}", out.stderr);
    let mut s = ferricorn()
        .args(["-b", "127.0.0.1:0", "fleet:app"])
        .cwd(apps())
        .spawn();
    s.wait_ready(T);
    assert_eq!(get(&s.addr(), "/").unwrap().status, 200);
    s.signal(libc::SIGTERM);
    s.wait_exit(T);
    assert!(
        s.stderr().lines().all(|l| l.starts_with('[')),
        "{}",
        s.stderr()
    );
    assert!(
        s.stdout().contains("\"GET / HTTP/1.1\" 200 14"),
        "{}",
        s.stdout()
    );
}

//! PEP 3333 conformance checked by `wsgiref.validate`: in-process for the example apps, and
//! through ferricorn for the server's side (environ, wsgi.input, wsgi.errors, start_response).

mod common;

use std::time::Duration;

use common::client::{get, request};
use common::server::{examples_dir, ferricorn};

const T: Duration = Duration::from_secs(30);

#[test]
fn example_apps_pass_wsgiref_validate_in_process() {
    let out = std::process::Command::new("python3")
        .arg("validate_examples.py")
        .current_dir(examples_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("python3");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.lines().count() >= 20, "too few checks ran:\n{text}");
}

#[test]
fn ferricorn_passes_wsgiref_validate_on_every_route() {
    for threads in ["1", "4"] {
        let s = ferricorn()
            .args([
                "-b",
                "127.0.0.1:0",
                "--threads",
                threads,
                "validated:spec_app",
            ])
            .cwd(examples_dir())
            .env("PYTHONWARNINGS", "error::wsgiref.validate.WSGIWarning")
            .spawn();
        s.wait_ready(T);
        let addr = s.addr();
        for target in [
            "/",
            "/environ",
            "/echo-lines",
            "/stream?n=4&size=7",
            "/closed",
            "/write",
            "/file?size=70000",
            "/file-like?size=9000",
            "/exc-info",
            "/status?code=204",
            "/status?code=418",
            "/headers",
            "/scheme",
            "/errors",
        ] {
            let r = get(&addr, target).unwrap_or_else(|e| panic!("GET {target}: {e}"));
            let want = if target == "/exc-info" {
                500
            } else if target.contains("code=") {
                target.rsplit('=').next().unwrap().parse().unwrap()
            } else {
                200
            };
            assert_eq!(
                r.status,
                want,
                "GET {target} (threads {threads}): {}\n{}",
                r.text(),
                s.stderr()
            );
        }
        let body = b"line one\nline two\nthree";
        for target in ["/echo", "/echo-iter", "/echo-read-chunks?size=5"] {
            let r = request(
                &addr,
                "POST",
                target,
                &[("Content-Type", "text/plain")],
                Some(body),
            )
            .unwrap();
            assert_eq!(r.status, 200, "POST {target}: {}\n{}", r.text(), s.stderr());
        }
        let r = request(&addr, "HEAD", "/", &[], None).unwrap();
        assert_eq!(r.status, 200);
        for bad in ["AssertionError", "WSGIWarning", "Error handling request"] {
            assert!(
                !s.stderr().contains(bad),
                "wsgiref.validate complained (threads {threads}):\n{}",
                s.stderr()
            );
        }
    }
}

#[test]
fn python_threads_keep_their_thread_local_data_between_requests() {
    for threads in ["1", "3"] {
        let s = ferricorn()
            .args([
                "-w",
                "1",
                "--threads",
                threads,
                "-b",
                "127.0.0.1:0",
                "spec:app",
            ])
            .cwd(examples_dir())
            .spawn();
        s.wait_ready(T);
        let addr = s.addr();
        let mut last: std::collections::HashMap<u64, u64> = Default::default();
        for _ in 0..30 {
            let v = get(&addr, "/thread-local").unwrap().json();
            let (thread, count) = (v["thread"].as_u64().unwrap(), v["count"].as_u64().unwrap());
            let prev = last.insert(thread, count).unwrap_or(0);
            assert_eq!(
                count,
                prev + 1,
                "threading.local was reset (threads {threads}): {v}"
            );
        }
        assert!(
            last.len() <= threads.parse().unwrap(),
            "{} Python threads seen",
            last.len()
        );
    }
}

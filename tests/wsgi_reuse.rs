//! What a worker remembers between requests to save work (environ strings by head position, the
//! `start_response` objects) never shows in another request: values and names that change at
//! the same position of the head, repeated headers, an app that keeps `start_response` or its
//! `write`, an app that mutates its environ.

mod common;
mod http_support;

use std::time::Duration;

use common::client::*;
use http_support::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

fn environ(c: &mut Conn, method: &str, target: &str, headers: &[(&str, &str)]) -> Value {
    let body: Option<&[u8]> = if method == "POST" { Some(b"x=1") } else { None };
    let r = c.request(method, target, headers, body).unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    r.json()
}

fn s<'a>(env: &'a Value, k: &str) -> Option<&'a str> {
    env.get(k).and_then(Value::as_str)
}

#[test]
fn environ_values_and_names_follow_each_request() {
    for threads in ["1", "4"] {
        let (server, addr) = start_app("reuse:app", &["--threads", threads, "--keep-alive", "10"]);
        let mut c = connect(&server, &addr, WAIT);
        let a = environ(
            &mut c,
            "GET",
            "/environ?q=1",
            &[("Host", "a.example:81"), ("X-One", "1"), ("X-Two", "2")],
        );
        assert_eq!(s(&a, "HTTP_X_ONE"), Some("1"));
        assert_eq!(s(&a, "HTTP_X_TWO"), Some("2"));
        assert_eq!(s(&a, "SERVER_NAME"), Some("a.example"));
        assert_eq!(s(&a, "QUERY_STRING"), Some("q=1"));
        // The same again: the same answers.
        let again = environ(
            &mut c,
            "GET",
            "/environ?q=1",
            &[("Host", "a.example:81"), ("X-One", "1"), ("X-Two", "2")],
        );
        assert_eq!(a, again, "threads {threads}");
        // Other values at the same positions, then another name at position 1 and none at 2.
        let b = environ(
            &mut c,
            "GET",
            "/environ",
            &[("Host", "b.example"), ("X-One", "one"), ("X-Two", "two")],
        );
        assert_eq!(s(&b, "HTTP_X_ONE"), Some("one"));
        assert_eq!(s(&b, "HTTP_X_TWO"), Some("two"));
        assert_eq!(s(&b, "SERVER_NAME"), Some("b.example"));
        assert_eq!(s(&b, "SERVER_PORT"), Some("80"));
        assert_eq!(s(&b, "QUERY_STRING"), Some(""));
        let c3 = environ(
            &mut c,
            "GET",
            "/environ",
            &[("Host", "b.example"), ("X-Three", "1")],
        );
        assert_eq!(s(&c3, "HTTP_X_THREE"), Some("1"));
        for gone in ["HTTP_X_ONE", "HTTP_X_TWO"] {
            assert!(c3.get(gone).is_none(), "{gone} left over: {c3}");
        }
        // A dropped name (underscore) where a kept one was, and back.
        let d = environ(
            &mut c,
            "GET",
            "/environ",
            &[("Host", "b.example"), ("X_Three", "1")],
        );
        assert!(d.get("HTTP_X_THREE").is_none(), "{d}");
        let e = environ(
            &mut c,
            "GET",
            "/environ",
            &[("Host", "b.example"), ("X-Three", "3")],
        );
        assert_eq!(s(&e, "HTTP_X_THREE"), Some("3"));
        // Method, protocol and body keys, then back to a plain GET.
        let p = environ(&mut c, "POST", "/environ", &[("Content-Type", "text/x")]);
        assert_eq!(s(&p, "REQUEST_METHOD"), Some("POST"));
        assert_eq!(s(&p, "CONTENT_TYPE"), Some("text/x"));
        assert_eq!(s(&p, "CONTENT_LENGTH"), Some("3"));
        let g = environ(&mut c, "GET", "/environ", &[]);
        assert_eq!(s(&g, "REQUEST_METHOD"), Some("GET"));
        assert!(g.get("CONTENT_TYPE").is_none(), "{g}");
        c.send_raw(b"GET /environ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap();
        let h = c.read_response("GET").unwrap().json();
        assert_eq!(s(&h, "SERVER_PROTOCOL"), Some("HTTP/1.0"));
        let g = environ(&mut c, "GET", "/environ", &[]);
        assert_eq!(s(&g, "SERVER_PROTOCOL"), Some("HTTP/1.1"));
        // Latin-1 bytes at a position that held ASCII.
        c.send_raw(b"GET /environ HTTP/1.1\r\nHost: b.example\r\nX-Three: caf\xe9\r\n\r\n")
            .unwrap();
        let l = c.read_response("GET").unwrap().json();
        assert_eq!(s(&l, "HTTP_X_THREE"), Some("caf\u{e9}"));
    }
}

#[test]
fn repeated_headers_are_joined_whatever_their_case() {
    let (server, addr) = start_app("reuse:app", &["--keep-alive", "10"]);
    let mut c = connect(&server, &addr, WAIT);
    for _ in 0..2 {
        let env = environ(
            &mut c,
            "GET",
            "/environ",
            &[
                ("X-Multi", "a"),
                ("x-multi", "b"),
                ("X-Empty", ""),
                ("X-MULTI", "c"),
                ("x-empty", ""),
            ],
        );
        assert_eq!(s(&env, "HTTP_X_MULTI"), Some("a,b,c"), "{env}");
        assert_eq!(s(&env, "HTTP_X_EMPTY"), Some(","), "{env}");
    }
}

#[test]
fn a_start_response_the_app_keeps_is_never_another_request_s() {
    for threads in ["1", "4"] {
        let (server, addr) = start_app("reuse:app", &["--threads", threads, "--keep-alive", "10"]);
        let mut c = connect(&server, &addr, WAIT);
        let r = c.request("GET", "/keep", &[], None).unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "kept"));
        for _ in 0..3 {
            let r = c.request("GET", "/use-kept", &[], None).unwrap();
            assert_eq!(r.status, 200, "{r:?}");
            assert!(!r.text().contains("LEAKED"), "threads {threads}: {r:?}");
            assert_eq!(r.json()["same_object"], false, "threads {threads}: {r:?}");
        }
    }
}

/// With `pre_request` / `post_request` hooks (which hold the request's environ and
/// `start_response` until the response is done), and a `post_request` that keeps the environ
/// holding the app's `start_response` and `write`: no later request gets them.
#[test]
fn a_start_response_a_post_request_hook_keeps_is_never_another_request_s() {
    let conf = apps_dir().join("reuse_hooks.conf.py");
    let conf = conf.to_str().unwrap();
    for threads in ["1", "4"] {
        let (server, addr) = start_app(
            "reuse:app",
            &["-c", conf, "--threads", threads, "--keep-alive", "10"],
        );
        let mut c = connect(&server, &addr, WAIT);
        // Hooks on: requests that keep nothing reuse what they may, and stay apart.
        let headers = [("Host", "h.example"), ("X-One", "1")];
        let a = environ(&mut c, "GET", "/environ", &headers);
        assert_eq!(s(&a, "HTTP_X_ONE"), Some("1"), "threads {threads}: {a}");
        assert_eq!(a, environ(&mut c, "GET", "/environ", &headers));
        let r = c.request("GET", "/keep-hook", &[], None).unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "kept"));
        for _ in 0..3 {
            let r = c.request("GET", "/use-kept", &[], None).unwrap();
            assert_eq!(r.status, 200, "{r:?}\n{}", server.report());
            assert!(!r.text().contains("LEAKED"), "threads {threads}: {r:?}");
            assert_eq!(r.json()["same_object"], false, "threads {threads}: {r:?}");
        }
    }
}

/// A `start_response` whose response ended (its `write()` then refuses) serves the next
/// request as a new one: `write()` works there, inline (`--threads 1`) and on a Python thread.
#[test]
fn write_works_in_every_request_of_a_connection() {
    for threads in ["1", "4"] {
        let (server, addr) = start_app("reuse:app", &["--threads", threads, "--keep-alive", "10"]);
        let mut c = connect(&server, &addr, WAIT);
        for i in 0..3 {
            let r = c.request("GET", "/write", &[], None).unwrap();
            assert_eq!(
                (r.status, r.text().as_str()),
                (200, "written,returned"),
                "threads {threads}, request {i}\n{}",
                server.report()
            );
        }
    }
}

#[test]
fn an_app_that_mutates_its_environ_changes_no_later_one() {
    let (server, addr) = start_app("reuse:app", &["--keep-alive", "10"]);
    let mut c = connect(&server, &addr, WAIT);
    let headers = [("Host", "m.example"), ("X-One", "1")];
    let before = environ(&mut c, "GET", "/environ", &headers);
    let r = c.request("GET", "/mutate", &headers, None).unwrap();
    assert_eq!(r.status, 200);
    let after = environ(&mut c, "GET", "/environ", &headers);
    assert_eq!(before, after);
}

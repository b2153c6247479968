//! Real ASGI frameworks from PyPI (pinned in `tests/asgi/requirements.txt`) served by the real
//! binary, over TCP and a unix socket, with httpx and websockets as clients (issue 15):
//! FastAPI, Starlette, and Django with Channels.

mod asgi_support;
mod common;

use std::time::Duration;

use asgi_support::*;
use common::client::Addr;
use common::server::Server;
use serde_json::json;

const T: Duration = Duration::from_secs(20);

fn body_json(r: &serde_json::Value) -> serde_json::Value {
    serde_json::from_str(r["body"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {r}"))
}

fn fastapi_checks(s: &Server, addr: &Addr) {
    let r = client(
        s,
        addr,
        "/items/42?q=x",
        json!({"headers": {"X-Forwarded-Proto": "https"}}),
    );
    assert_eq!(r["status"], 200, "{r}\n{}", s.report());
    let b = body_json(&r);
    assert_eq!(b["item_id"], 42);
    assert_eq!(b["q"], "x");
    assert_eq!(
        b["started"], "yes",
        "lifespan state reaches the request: {b}"
    );
    assert_eq!(b["scheme"], "https", "{b}");
    let r = client(
        s,
        addr,
        "/items",
        json!({"method": "POST", "json": {"name": "pen", "price": 1.5}}),
    );
    assert_eq!(body_json(&r), json!({"name": "pen", "double": 3.0}));
    let r = client(
        s,
        addr,
        "/items",
        json!({"method": "POST", "json": {"name": "pen"}}),
    );
    assert_eq!(r["status"], 422, "validation error: {r}");
    let r = client(s, addr, "/stream", json!({}));
    assert_eq!(r["body"], "part 0\npart 1\npart 2\npart 3\npart 4\n");
    let r = client(
        s,
        addr,
        "/upload",
        json!({"method": "POST", "body_size": 3 << 20}),
    );
    let b = body_json(&r);
    assert_eq!(b["bytes"], 3 << 20);
    assert!(b["parts"].as_u64().unwrap() > 1, "{b}");
    let r = client(
        s,
        addr,
        "/ws",
        json!({"ws": true, "subprotocols": ["chat"], "send": ["one", "two"]}),
    );
    assert_eq!(r["subprotocol"], "chat", "{r}");
    assert_eq!(
        r["received"],
        json!(["fastapi: one", "fastapi: two"]),
        "{r}"
    );
    assert_eq!(r["close_code"], 1000, "{r}");
}

#[test]
fn fastapi_over_tcp() {
    let (s, addr) = start("fastapi_app:app", &[]);
    fastapi_checks(&s, &addr);
    let r = client(&s, &addr, "/items/1", json!({}));
    assert_eq!(body_json(&r)["root_path"], "");
}

#[test]
fn fastapi_over_a_unix_socket_behind_a_root_path() {
    let (s, addr) = start(
        "fastapi_app:app",
        &["-b", "unix:{tmp}/s.sock", "--root-path", "/api"],
    );
    fastapi_checks(&s, &addr);
    let r = client(&s, &addr, "/items/1", json!({}));
    let b = body_json(&r);
    assert_eq!(b["root_path"], "/api", "{b}");
    assert_eq!(b["url"], "http://localhost/api/items/1", "{b}");
}

fn starlette_checks(s: &Server, addr: &Addr) {
    let r = client(s, addr, "/", json!({}));
    assert_eq!(r["status"], 200, "{r}\n{}", s.report());
    let b = body_json(&r);
    assert_eq!(b["hello"], "starlette");
    assert_eq!(b["db"], "connected");
    let r = client(s, addr, "/echo", json!({"method": "POST", "body": "héllo"}));
    assert_eq!(r["headers"]["x-len"], "6");
    let r = client(
        s,
        addr,
        "/ws",
        json!({"ws": true, "send": ["quiet", "louder"]}),
    );
    assert_eq!(r["received"], json!(["QUIET", "LOUDER"]), "{r}");
    assert_eq!(r["close_code"], 1000);
}

#[test]
fn starlette_over_tcp_and_a_unix_socket() {
    let (s, addr) = start("starlette_app:app", &[]);
    starlette_checks(&s, &addr);
    let (s, addr) = start("starlette_app:app", &["-b", "unix:{tmp}/s.sock"]);
    starlette_checks(&s, &addr);
}

fn django_checks(s: &Server, addr: &Addr) {
    let r = client(s, addr, "/hello/?q=1", json!({}));
    assert_eq!(r["status"], 200, "{r}\n{}", s.report());
    assert_eq!(
        body_json(&r),
        json!({"path": "/hello/", "method": "GET", "scheme": "http", "q": "1"})
    );
    let r = client(s, addr, "/slow/", json!({}));
    assert_eq!(r["body"], "async django\n");
    let r = client(
        s,
        addr,
        "/echo/",
        json!({"method": "POST", "body_size": 2 << 20}),
    );
    assert_eq!(r["body"].as_str().unwrap().len(), 2 << 20, "{}", s.report());
    let r = client(s, addr, "/nowhere/", json!({}));
    assert_eq!(r["status"], 404);
    let r = client(s, addr, "/ws/", json!({"ws": true, "send": ["hi", "bye"]}));
    assert_eq!(r["received"], json!(["channels: hi"]), "{r}");
    assert_eq!(r["close_code"], 4001, "{r}");
}

#[test]
fn django_with_channels_over_tcp_and_a_unix_socket() {
    let (s, addr) = start("djangoapp.asgi:application", &[]);
    // Channels' router has no lifespan: noted, and served without it.
    s.wait_for_stderr("'lifespan' protocol appears unsupported", T);
    django_checks(&s, &addr);
    let (s, addr) = start(
        "djangoapp.asgi:application",
        &["-b", "unix:{tmp}/s.sock", "-w", "2"],
    );
    django_checks(&s, &addr);
}

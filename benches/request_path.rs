//! Micro-benchmark of the per-request path without sockets: the request head parsed
//! (`http::parse`), the environ built from it, the app called with `start_response`, the
//! response collected (`WsgiApp::call`, as the WSGI dispatch runs it for `--threads 1`). A
//! regression in parsing, environ building, the call or the response conversion shows up here
//! without a load test.
//!
//! `cargo bench --bench request_path` (add `-- --quick` for a short run). The apps are the load
//! test's, from `bench/apps/`.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ferricorn::config::{Layer, Sources};
use ferricorn::http::dispatch::{Body, BodyChunk, ConnInfo, Outcome, Reply, ReplyBody, Request};
use ferricorn::http::{Limits, parse};
use ferricorn::proxy::Peer;
use ferricorn::sockets::LocalAddr;
use ferricorn::wsgi::{Called, WsgiApp};
use pyo3::prelude::*;

const ECHO_LEN: usize = 64 * 1024;

/// Starts the interpreter the way a worker does and loads `module:app` for each module.
fn load(modules: &[&str]) -> Vec<WsgiApp> {
    let apps_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/apps");
    let cfg = Sources {
        cli: Layer {
            app: Some(format!("{}:app", modules[0])),
            chdir: Some(apps_dir.clone()),
            ..Default::default()
        },
        ..Default::default()
    }
    .load()
    .expect("config");
    std::env::set_current_dir(&apps_dir).expect("chdir bench/apps");
    ferricorn::python::init(&cfg, &["ferricorn".to_string()]).expect("python init");
    modules
        .iter()
        .map(|m| {
            let app = ferricorn::python::load_app(&format!("{m}:app"))
                .unwrap_or_else(|e| panic!("load {m}:app: {}\n{}", e.reason, e.traceback));
            Python::attach(|py| WsgiApp::new(py, app, false, false, vec![])).expect("WsgiApp")
        })
        .collect()
}

/// What a browser sends, more or less: eight headers.
const BROWSER_HEADERS: &str = "Host: 127.0.0.1:8000\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Connection: keep-alive\r\n\
Cookie: sessionid=4f2a9c1e7b3d4e5f8a6b0c1d2e3f4a5b; csrftoken=Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2\r\n\
Upgrade-Insecure-Requests: 1\r\n";

fn limits() -> Limits {
    Limits {
        line: 4094,
        fields: 100,
        field_size: 8190,
        body: 1 << 20,
        header_timeout: Duration::from_secs(5),
        keep_alive: Some(Duration::from_secs(2)),
        body_timeout: Duration::from_secs(20),
        body_min_rate: 500,
        send_timeout: Some(Duration::from_secs(30)),
    }
}

/// The raw head of a request.
fn raw_head(method: &str, extra: &str) -> Bytes {
    Bytes::from(format!(
        "{method} / HTTP/1.1\r\n{BROWSER_HEADERS}{extra}\r\n"
    ))
}

fn request(raw: &Bytes, body: Body, conn: &Arc<ConnInfo>) -> Request {
    let head = parse::parse(raw.clone(), &limits()).expect("a valid head");
    Request {
        head: Arc::new(head),
        body,
        conn: conn.clone(),
        scheme: "http",
        trusted: true,
    }
}

/// Calls the app once and returns (status, body).
fn call(app: &WsgiApp, req: Request) -> (u16, Vec<Bytes>) {
    Python::attach(|py| match app.call(py, req) {
        Called::Done(Outcome::Reply(Reply {
            head,
            body: ReplyBody::Full(body),
            ..
        })) => (head.status, body),
        Called::Done(Outcome::Failed) => panic!("the app failed"),
        _ => panic!("expected a complete (list) response"),
    })
}

fn concat(body: &[Bytes]) -> Vec<u8> {
    body.iter().flat_map(|b| b.iter().copied()).collect()
}

fn full(b: &Bytes) -> Body {
    Body::Full(BodyChunk {
        data: b.clone(),
        held: None,
    })
}

fn bench(c: &mut Criterion) {
    let apps = load(&["hello", "json4k", "echo"]);
    let (hello, json4k, echo) = (&apps[0], &apps[1], &apps[2]);
    let local = Arc::new(LocalAddr::Tcp("127.0.0.1:8000".parse().expect("addr")));
    let conn = Arc::new(ConnInfo::new(
        Peer::Tcp("127.0.0.1:54321".parse().expect("addr")),
        local,
    ));
    let echo_body = Bytes::from(
        (0..ECHO_LEN)
            .map(|i| (i * 7 + 3) as u8)
            .collect::<Vec<u8>>(),
    );
    let get = raw_head("GET", "");
    let post = raw_head(
        "POST",
        &format!("Content-Type: application/octet-stream\r\nContent-Length: {ECHO_LEN}\r\n"),
    );

    // Correctness once, outside the measured loops.
    let (status, body) = call(hello, request(&get, Body::Empty, &conn));
    assert_eq!((status, concat(&body)), (200, b"Hello, World!".to_vec()));
    let (status, body) = call(json4k, request(&get, Body::Empty, &conn));
    assert_eq!((status, concat(&body).len()), (200, 4096));
    let (status, body) = call(echo, request(&post, full(&echo_body), &conn));
    assert_eq!(status, 200);
    assert!(concat(&body) == echo_body[..], "echo body differs");

    let mut g = c.benchmark_group("request_path");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_head", |b| {
        b.iter(|| black_box(parse::parse(get.clone(), &limits()).expect("head")))
    });
    g.bench_function("hello", |b| {
        b.iter_batched(
            || request(&get, Body::Empty, &conn),
            |req| black_box(call(hello, req)),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("json4k", |b| {
        b.iter_batched(
            || request(&get, Body::Empty, &conn),
            |req| black_box(call(json4k, req)),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("echo_64k", |b| {
        b.iter_batched(
            || request(&post, full(&echo_body), &conn),
            |req| black_box(call(echo, req)),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

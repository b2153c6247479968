//! Micro-benchmark of the per-request Python path: environ built from a `wsgi::Request`, the app
//! called with `start_response`, the response collected (`WsgiApp::call`, as `http.rs` runs it
//! for `--threads 1`). No sockets, no hyper: a regression in environ building, the call or the
//! response conversion shows up here without a load test.
//!
//! `cargo bench --bench request_path` (add `-- --quick` for a short run). The apps are the load
//! test's, from `bench/apps/`.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ferricorn::config::{Layer, Sources};
use ferricorn::proxy::Peer;
use ferricorn::sockets::LocalAddr;
use ferricorn::wsgi::{Body, Called, Reply, Request, WsgiApp};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Version};
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
fn browser_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "127.0.0.1:8000"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        ),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("accept-language", "en-US,en;q=0.5"),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("connection", "keep-alive"),
        (
            "cookie",
            "sessionid=4f2a9c1e7b3d4e5f8a6b0c1d2e3f4a5b; csrftoken=Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2",
        ),
        ("upgrade-insecure-requests", "1"),
    ] {
        h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    h
}

fn request(method: Method, headers: &HeaderMap, body: Body, local: &Arc<LocalAddr>) -> Request {
    Request {
        method,
        target: "/".into(),
        version: Version::HTTP_11,
        headers: headers.clone(),
        body,
        peer: Peer::Tcp("127.0.0.1:54321".parse().expect("addr")),
        remote: ferricorn::wsgi::environ::Remote::of(Peer::Tcp(
            "127.0.0.1:54321".parse().expect("addr"),
        )),
        local: local.clone(),
        scheme: "http",
    }
}

/// Calls the app once and returns (status, body length, body).
fn call(app: &WsgiApp, req: Request) -> (u16, Vec<Bytes>) {
    Python::attach(|py| match app.call(py, req) {
        Called::Done(Reply::Complete { head, body, .. }) => (head.status, body),
        Called::Done(Reply::Failed) => panic!("the app failed"),
        Called::Done(Reply::Stream { .. }) | Called::Iterate(_) => {
            panic!("expected a complete (list) response")
        }
    })
}

fn concat(body: &[Bytes]) -> Vec<u8> {
    body.iter().flat_map(|b| b.iter().copied()).collect()
}

fn bench(c: &mut Criterion) {
    let apps = load(&["hello", "json4k", "echo"]);
    let (hello, json4k, echo) = (&apps[0], &apps[1], &apps[2]);
    let headers = browser_headers();
    let local = Arc::new(LocalAddr::Tcp("127.0.0.1:8000".parse().expect("addr")));
    let echo_body = Bytes::from(
        (0..ECHO_LEN)
            .map(|i| (i * 7 + 3) as u8)
            .collect::<Vec<u8>>(),
    );
    let mut post_headers = headers.clone();
    post_headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    post_headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(ECHO_LEN));

    // Correctness once, outside the measured loops.
    let (status, body) = call(hello, request(Method::GET, &headers, Body::Empty, &local));
    assert_eq!((status, concat(&body)), (200, b"Hello, World!".to_vec()));
    let (status, body) = call(json4k, request(Method::GET, &headers, Body::Empty, &local));
    assert_eq!((status, concat(&body).len()), (200, 4096));
    let (status, body) = call(
        echo,
        request(
            Method::POST,
            &post_headers,
            Body::Mem(echo_body.clone()),
            &local,
        ),
    );
    assert_eq!(status, 200);
    assert!(concat(&body) == echo_body[..], "echo body differs");

    let mut g = c.benchmark_group("request_path");
    g.throughput(Throughput::Elements(1));
    g.bench_function("hello", |b| {
        b.iter_batched(
            || request(Method::GET, &headers, Body::Empty, &local),
            |req| black_box(call(hello, req)),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("json4k", |b| {
        b.iter_batched(
            || request(Method::GET, &headers, Body::Empty, &local),
            |req| black_box(call(json4k, req)),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("echo_64k", |b| {
        b.iter_batched(
            || {
                request(
                    Method::POST,
                    &post_headers,
                    Body::Mem(echo_body.clone()),
                    &local,
                )
            },
            |req| black_box(call(echo, req)),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

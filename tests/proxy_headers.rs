//! Proxy headers as Gunicorn handles them, against the real binary: `secure_scheme_headers`
//! (from the command line, `GUNICORN_CMD_ARGS` and a config file's table) and
//! `--forwarder-headers` (a trusted proxy's `SCRIPT_NAME` header mounts the app, its other
//! `_` headers reach the environ), each only from a peer in `--forwarded-allow-ips` or on a
//! unix socket; `X-Forwarded-Proto: https` makes `wsgi.url_scheme` `https` only from such a peer,
//! and `X-Forwarded-For` leaves `REMOTE_ADDR` alone (issue 2, acceptance 2).

mod common;

use std::time::Duration;

use common::{client::*, examples, server::*};
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(30);
const IO: Duration = Duration::from_secs(10);

fn builder() -> ServerBuilder {
    let mut b = ferricorn().cwd(examples_dir());
    for k in [
        "WEB_CONCURRENCY",
        "PORT",
        "FORWARDED_ALLOW_IPS",
        "VIRTUAL_ENV",
    ] {
        b = b.env_remove(k);
    }
    b
}

fn args(b: &ServerBuilder, extra: &[&str]) -> Vec<String> {
    let tmp = b.tmp_path().display().to_string();
    let mut args: Vec<String> = vec!["--chdir".into(), examples_dir().display().to_string()];
    if !extra.contains(&"-b") {
        args.extend(["-b".into(), "127.0.0.1:0".into()]);
    }
    args.extend(extra.iter().map(|a| a.replace("{tmp}", &tmp)));
    args.push("spec:app".into());
    args
}

fn spawn_with(b: ServerBuilder, extra: &[&str]) -> (Server, Addr) {
    let a = args(&b, extra);
    let server = b.args(a).spawn();
    server.wait_ready(BOOT);
    let addr = server.addr();
    (server, addr)
}

fn spawn(extra: &[&str]) -> (Server, Addr) {
    spawn_with(builder(), extra)
}

fn fetch(server: &Server, addr: &Addr, target: &str, headers: &[(&str, &str)]) -> Response {
    let mut c = Conn::connect(addr)
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}\n{}", server.report()));
    c.set_timeout(IO);
    let mut h = headers.to_vec();
    h.push(("Connection", "close"));
    c.request("GET", target, &h, None)
        .unwrap_or_else(|e| panic!("GET {target}: {e}\n{}", server.report()))
}

fn scheme(server: &Server, addr: &Addr, headers: &[(&str, &str)]) -> String {
    let r = fetch(server, addr, "/scheme", headers);
    assert_eq!(r.status, 200, "{r:?}\n{}", server.report());
    r.text()
}

fn environ(server: &Server, addr: &Addr, target: &str, headers: &[(&str, &str)]) -> Value {
    let r = fetch(server, addr, target, headers);
    assert_eq!(r.status, 200, "{target}: {r:?}\n{}", server.report());
    r.json()
}

#[test]
fn secure_scheme_headers_from_the_command_line() {
    let (server, addr) = spawn(&[
        "--secure-scheme-headers",
        "X-Scheme=https,Front-End-Https=on",
    ]);
    assert_eq!(scheme(&server, &addr, &[("X-Scheme", "https")]), "https");
    assert_eq!(
        scheme(&server, &addr, &[("front-end-https", "on")]),
        "https"
    );
    // Values match exactly; the default headers no longer count.
    assert_eq!(scheme(&server, &addr, &[("X-Scheme", "HTTPS")]), "http");
    assert_eq!(
        scheme(&server, &addr, &[("X-Forwarded-Proto", "https")]),
        "http"
    );
    // Two that disagree: 400, as in Gunicorn.
    let r = fetch(
        &server,
        &addr,
        "/scheme",
        &[("X-Scheme", "https"), ("Front-End-Https", "off")],
    );
    assert_eq!(r.status, 400, "{r:?}");
    server.wait_for_stderr("Contradictory scheme headers", IO);
}

#[test]
fn secure_scheme_headers_default_and_empty() {
    let (server, addr) = spawn(&[]);
    for (h, v) in [
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Protocol", "ssl"),
        ("X-Forwarded-Ssl", "on"),
    ] {
        assert_eq!(scheme(&server, &addr, &[(h, v)]), "https", "{h}");
    }
    // Gunicorn compares the values case-sensitively.
    assert_eq!(
        scheme(&server, &addr, &[("X-Forwarded-Proto", "HTTPS")]),
        "http"
    );
    let (server, addr) = spawn(&["--secure-scheme-headers", ""]);
    assert_eq!(
        scheme(&server, &addr, &[("X-Forwarded-Proto", "https")]),
        "http"
    );
}

#[test]
fn secure_scheme_headers_from_a_config_file_table_and_gunicorn_cmd_args() {
    let b = builder();
    let conf = b.tmp_path().join("ferricorn.toml");
    std::fs::write(
        &conf,
        "[secure-scheme-headers]\nX-ORIGINAL-PROTO = \"https\"\n",
    )
    .unwrap();
    let conf = conf.display().to_string();
    let (server, addr) = spawn_with(b, &["-c", &conf]);
    assert_eq!(
        scheme(&server, &addr, &[("X-Original-Proto", "https")]),
        "https"
    );
    assert_eq!(
        scheme(&server, &addr, &[("X-Forwarded-Proto", "https")]),
        "http"
    );

    let b = builder().env("GUNICORN_CMD_ARGS", "--secure-scheme-headers=X-Via-Tls=yes");
    let (server, addr) = spawn_with(b, &[]);
    assert_eq!(scheme(&server, &addr, &[("X-Via-Tls", "yes")]), "https");

    // --print-config writes the table back.
    let b = builder();
    let a = args(&b, &["--secure-scheme-headers", "X-A=1", "--print-config"]);
    let out = b.args(a).run_to_exit(BOOT);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout
            .contains("secure-scheme-headers = { X-A = \"1\" }"),
        "{}",
        out.stdout
    );
}

#[test]
fn custom_secure_scheme_headers_from_an_untrusted_peer_are_ignored() {
    let (server, addr) = spawn(&[
        "--secure-scheme-headers",
        "X-Scheme=https",
        "--forwarded-allow-ips",
        "10.0.0.1",
    ]);
    assert_eq!(scheme(&server, &addr, &[("X-Scheme", "https")]), "http");
}

#[test]
fn script_name_header_from_a_trusted_proxy_mounts_the_app() {
    let (server, addr) = spawn(&[]);
    let env = environ(
        &server,
        &addr,
        "/shop/environ?x=1",
        &[("SCRIPT_NAME", "/shop/")],
    );
    assert_eq!(env["SCRIPT_NAME"], "/shop", "{env}");
    assert_eq!(env["PATH_INFO"], "/environ", "{env}");
    assert_eq!(env["QUERY_STRING"], "x=1", "{env}");
    assert_eq!(env["HTTP_SCRIPT_NAME"], "/shop/", "{env}");
    assert_eq!(env["RAW_URI"], "/shop/environ?x=1", "{env}");
    // The other default forwarder header reaches the environ as HTTP_PATH_INFO.
    let env = environ(&server, &addr, "/environ", &[("PATH_INFO", "/from/proxy")]);
    assert_eq!(env["HTTP_PATH_INFO"], "/from/proxy", "{env}");
    assert_eq!(env["PATH_INFO"], "/environ", "{env}");
    // A path outside the mount point: 400 (Gunicorn's "Configuration problem").
    for target in ["/other/environ", "/shopping/environ"] {
        let r = fetch(&server, &addr, target, &[("SCRIPT_NAME", "/shop")]);
        assert_eq!(r.status, 400, "{target}: {r:?}");
    }
    server.wait_for_stderr("does not start with its SCRIPT_NAME header", IO);
    // Percent-encoded paths are compared decoded.
    let env = environ(
        &server,
        &addr,
        "/my%20shop/environ",
        &[("SCRIPT_NAME", "/my shop")],
    );
    assert_eq!(env["PATH_INFO"], "/environ", "{env}");
    // A header not in the list is dropped, as every name with `_` is.
    let env = environ(&server, &addr, "/environ", &[("REMOTE_USER", "alice")]);
    assert!(env.get("HTTP_REMOTE_USER").is_none(), "{env}");
}

#[test]
fn script_name_header_from_an_untrusted_peer_is_dropped() {
    let (server, addr) = spawn(&["--forwarded-allow-ips", "10.0.0.1"]);
    let env = environ(
        &server,
        &addr,
        "/environ",
        &[("SCRIPT_NAME", "/shop"), ("PATH_INFO", "/x")],
    );
    assert_eq!(env["SCRIPT_NAME"], "", "{env}");
    assert_eq!(env["PATH_INFO"], "/environ", "{env}");
    assert!(env.get("HTTP_SCRIPT_NAME").is_none(), "{env}");
    assert!(env.get("HTTP_PATH_INFO").is_none(), "{env}");
    // Nor does it refuse a path outside the would-be mount point.
    let r = fetch(&server, &addr, "/environ", &[("SCRIPT_NAME", "/shop")]);
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn script_name_header_over_a_unix_socket_is_trusted() {
    let (server, addr) = spawn(&[
        "-b",
        "unix:{tmp}/s.sock",
        "--forwarded-allow-ips",
        "10.0.0.1",
    ]);
    let env = environ(&server, &addr, "/app/environ", &[("SCRIPT_NAME", "/app")]);
    assert_eq!(
        (env["SCRIPT_NAME"].as_str(), env["PATH_INFO"].as_str()),
        (Some("/app"), Some("/environ"))
    );
}

#[test]
fn forwarder_headers_chooses_the_names() {
    let (server, addr) = spawn(&["--forwarder-headers", "REMOTE_USER,X_TENANT"]);
    let env = environ(
        &server,
        &addr,
        "/environ",
        &[
            ("REMOTE_USER", "alice"),
            ("X_TENANT", "t1"),
            ("SCRIPT_NAME", "/app"),
        ],
    );
    assert_eq!(env["HTTP_REMOTE_USER"], "alice", "{env}");
    assert_eq!(env["HTTP_X_TENANT"], "t1", "{env}");
    // SCRIPT_NAME is not in the list any more: dropped, and not a mount point.
    assert_eq!(env["SCRIPT_NAME"], "", "{env}");
    assert!(env.get("HTTP_SCRIPT_NAME").is_none(), "{env}");

    let (server, addr) = spawn(&["--forwarder-headers", "*"]);
    let env = environ(&server, &addr, "/environ", &[("ANY_THING", "1")]);
    assert_eq!(env["HTTP_ANY_THING"], "1", "{env}");

    let (server, addr) = spawn(&["--forwarder-headers", ""]);
    let env = environ(&server, &addr, "/environ", &[("SCRIPT_NAME", "/app")]);
    assert_eq!(env["SCRIPT_NAME"], "", "{env}");
    assert!(env.get("HTTP_SCRIPT_NAME").is_none(), "{env}");
}

#[test]
fn script_name_from_the_environment_still_works() {
    let b = builder().env("SCRIPT_NAME", "/env/");
    let (server, addr) = spawn_with(b, &[]);
    let env = environ(&server, &addr, "/env/environ", &[]);
    assert_eq!(
        (env["SCRIPT_NAME"].as_str(), env["PATH_INFO"].as_str()),
        (Some("/env"), Some("/environ"))
    );
    // A trusted proxy's header replaces it.
    let env = environ(&server, &addr, "/hdr/environ", &[("SCRIPT_NAME", "/hdr")]);
    assert_eq!(
        (env["SCRIPT_NAME"].as_str(), env["PATH_INFO"].as_str()),
        (Some("/hdr"), Some("/environ"))
    );
}

const HTTPS: [(&str, &str); 1] = [("X-Forwarded-Proto", "https")];

#[test]
fn forwarded_proto_from_trusted_peer() {
    let (server, addr) = examples::start("spec:app", &[]);
    assert_eq!(scheme(&server, &addr, &HTTPS), "https");
    assert_eq!(scheme(&server, &addr, &[]), "http");
    // X-Forwarded-For doesn't change REMOTE_ADDR.
    let env = examples::environ(
        &server,
        &addr,
        "GET",
        "/environ",
        &[("X-Forwarded-For", "10.1.2.3")],
        None,
    );
    assert_eq!(env["REMOTE_ADDR"], "127.0.0.1", "{env}");
    assert_eq!(env["HTTP_X_FORWARDED_FOR"], "10.1.2.3", "{env}");
}

#[test]
fn forwarded_proto_from_untrusted_peer_is_ignored() {
    let (server, addr) = examples::start("spec:app", &["--forwarded-allow-ips", "10.0.0.1"]);
    assert_eq!(scheme(&server, &addr, &HTTPS), "http");
    assert_eq!(scheme(&server, &addr, &[]), "http");
}

#[test]
fn forwarded_proto_over_unix_socket_is_trusted() {
    let (server, addr) = examples::start_unix("spec:app", &["--forwarded-allow-ips", "10.0.0.1"]);
    assert_eq!(scheme(&server, &addr, &HTTPS), "https");
    assert_eq!(scheme(&server, &addr, &[]), "http");
}

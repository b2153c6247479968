//! The spawn harness's own parsing tests (`tests/common/server.rs`); compiled into
//! `harness_selftest` only.

use crate::common::client::Addr;
use crate::common::server::*;

#[test]
fn stat_parsing_handles_odd_comm() {
    let st = parse_stat("123 (a (b) c) S 1 123 123 0 -1 4194560").unwrap();
    assert_eq!(
        (st.pid, st.comm.as_str(), st.state, st.ppid, st.pgrp),
        (123, "a (b) c", 'S', 1, 123)
    );
    assert_eq!(st.minflt, None);
    let st = parse_stat("7 (w) S 1 7 7 0 -1 4194560 77 0 0").unwrap();
    assert_eq!(st.minflt, Some(77));
}

#[test]
fn ansi_is_stripped() {
    assert_eq!(
        strip_ansi("\u{1b}[2m2024\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m x"),
        "2024  INFO x"
    );
}

#[test]
fn listening_lines() {
    let a = Server::parse_listening("[2024] [1] [INFO] Listening at: http://127.0.0.1:8000 (1)")
        .unwrap();
    assert_eq!(a, Addr::Tcp("127.0.0.1:8000".parse().unwrap()));
    let a = Server::parse_listening("Listening at: unix:/tmp/a b/x.sock (42)");
    assert_eq!(a, Some(Addr::Unix("/tmp/a b/x.sock".into())));
    let a = Server::parse_listening("Listening at: http://[::1]:9000").unwrap();
    assert_eq!(a, Addr::Tcp("[::1]:9000".parse().unwrap()));
    let a = Server::parse_listening("INFO Listening at: unix:/tmp/x.sock (42)").unwrap();
    assert_eq!(a, Addr::Unix("/tmp/x.sock".into()));
}

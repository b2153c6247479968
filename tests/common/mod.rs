//! Shared helpers for ferricorn's integration tests.
//!
//! - [`client`]: a small, strict, blocking raw HTTP/1.1 client (TCP or Unix socket).
//! - [`examples`]: a server on an example app, and one-request helpers that panic with its output.
//! - [`load`]: a bounded client load, for changes made to a server under traffic.
//! - [`notify`]: a fake `NOTIFY_SOCKET` recording what systemd would hear.
//! - [`scrape`]: the Prometheus metrics the master serves, as a map.
//! - [`server`]: spawns the real `ferricorn` binary, captures its output, and
//!   cleans up the whole process group on drop.
//! - [`workers`]: waiting for a server's workers and asking which one answered.
//!
//! Set `FERRICORN_TEST_ECHO=1` to copy the server's output to the test's stderr.
#![allow(dead_code)]

pub mod client;
pub mod examples;
pub mod load;
pub mod notify;
pub mod scrape;
pub mod server;
pub mod workers;

//! Shared helpers for ferricorn's integration tests.
//!
//! - [`client`]: a small, strict, blocking raw HTTP/1.1 client (TCP or Unix socket).
//! - [`scrape`]: the Prometheus metrics the master serves, as a map.
//! - [`server`]: spawns the real `ferricorn` binary, captures its output, and
//!   cleans up the whole process group on drop.
//!
//! Set `FERRICORN_TEST_ECHO=1` to copy the server's output to the test's stderr.
#![allow(dead_code)]

pub mod client;
pub mod scrape;
pub mod server;

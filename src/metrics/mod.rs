//! Prometheus metrics (`--metrics-bind`), per worker but scraped once per host, without
//! touching the app's Python threads and without slowing requests.
//!
//! Each worker counts into its own slot of a memory region the master shares with its workers
//! (relaxed atomic adds, no lock, no message); the master, when scraped on its own listener
//! inside its `poll()` loop, adds up the live slots and the totals of the workers that have
//! exited, and writes the Prometheus text format with the `prometheus-client` crate.
//!
//! | module | concern |
//! |---|---|
//! | [`shared`] | the shared mapping: the host's readiness flag and one slot of counters per worker |
//! | [`record`] | what a worker records (requests, rejects, connections, Python threads, import time) |
//! | [`book`] | the master's side: slot ownership, retired totals, restarts, reloads, upgrades |
//! | [`render`] | a scrape's numbers in the text format |
//! | [`endpoint`] | the non-blocking listener the master serves `/metrics` on |

pub mod book;
pub mod endpoint;
pub mod record;
pub mod render;
pub mod shared;

pub use book::{Book, Restart};
pub use endpoint::Endpoint;
pub use record::{
    Gauge, Held, app_imported, draining, enter_slot, health, rejected, request_finished,
    request_started, set_draining,
};
pub use render::{MasterView, render};

//! ferricorn: a systemd-native application server for Python WSGI and ASGI apps.
//!
//! Process model (see README "Architecture"): a single-threaded `master` binds the listeners and
//! forks `worker` processes; each worker runs our own HTTP/1.1 layer on tokio (`http`, no Python)
//! that hands requests through its dispatch seam to CPython (`python`, `wsgi`, `pool`; `asgi`
//! for ASGI apps, on an asyncio loop thread). The same
//! code runs as the `ferricorn` binary (which embeds CPython) and as the wheel's extension module
//! (`extension`), run by the user's interpreter.

pub mod alloc;
pub mod asgi;
pub mod busy;
pub mod checks;
pub mod cli;
pub mod coalesce;
pub mod config;
pub mod daemon;
pub mod exit;
pub mod extension;
pub mod hooks;
pub mod http;
pub mod ipc;
pub mod logging;
pub mod master;
pub mod metrics;
pub mod notify;
pub mod observe;
pub mod pidfile;
pub mod privileges;
pub mod proctitle;
pub mod proxy;
pub mod python;
pub mod reloader;
pub mod sockets;
pub mod statsd;
pub mod units;
pub mod unix_conn;
pub mod usage;
pub mod worker;
pub mod wsgi;

/// The version string shown by `--version`, in `SERVER_SOFTWARE` and in the logs.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `major.minor` of the Python this was built against (the binary loads its libpython; the
/// extension module is imported by an interpreter of this version).
pub const PYTHON_VERSION: &str = env!("FERRICORN_PYTHON_VERSION");
/// The interpreter pyo3 was configured with at build time.
pub const PYTHON_EXECUTABLE: &str = env!("FERRICORN_PYTHON_EXECUTABLE");
/// The directory holding the libpython this binary links (and has an rpath to).
pub const PYTHON_LIBDIR: &str = env!("FERRICORN_PYTHON_LIBDIR");

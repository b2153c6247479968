//! ferricorn: a systemd-native application server for Python WSGI apps.
//!
//! Process model (see README "Architecture"): a single-threaded `master` binds the listeners and
//! forks `worker` processes; each worker runs our own HTTP/1.1 layer on tokio (`http`, no Python)
//! that hands requests through its dispatch seam to an embedded CPython (`python`, `wsgi`,
//! `pool`).

pub mod cli;
pub mod coalesce;
pub mod config;
pub mod daemon;
pub mod http;
pub mod ipc;
pub mod logging;
pub mod master;
pub mod notify;
pub mod pidfile;
pub mod pool;
pub mod privileges;
pub mod proctitle;
pub mod proxy;
pub mod python;
pub mod sockets;
pub mod units;
pub mod worker;
pub mod wsgi;

/// The version string shown by `--version`, in `SERVER_SOFTWARE` and in the logs.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `major.minor` of the Python this binary was built against (and loads at run time).
pub const PYTHON_VERSION: &str = env!("FERRICORN_PYTHON_VERSION");
/// The interpreter pyo3 was configured with at build time.
pub const PYTHON_EXECUTABLE: &str = env!("FERRICORN_PYTHON_EXECUTABLE");
/// The directory holding the libpython this binary links (and has an rpath to).
pub const PYTHON_LIBDIR: &str = env!("FERRICORN_PYTHON_LIBDIR");

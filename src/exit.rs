//! Exit statuses, in one leaf module: every process and command of ferricorn (the server, a
//! worker, `ferricorn systemd ...`) exits with one of these, and they mean the same
//! everywhere. The numbers are Gunicorn's where Gunicorn has one.

/// The work failed after it started (a failed `--check-config`, a log file that cannot be
/// opened, `ferricorn systemd check` findings).
pub const EXIT_FAILURE: i32 = 1;
/// A command line or configuration that cannot be used: a bad flag or value, a bad config
/// file, a refused setting. Nothing was started.
pub const EXIT_USAGE: i32 = 2;
/// A worker whose interpreter could not start (Gunicorn's `WORKER_BOOT_ERROR`).
pub const EXIT_BOOT_ERROR: i32 = 3;
/// A worker, or the server, that could not load the app (Gunicorn's `APP_LOAD_ERROR`).
pub const EXIT_APP_LOAD: i32 = 4;

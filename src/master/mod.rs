//! The master (arbiter): one thread, no async runtime, no Python.
//!
//! It owns the listeners, forks the workers, and runs one loop: `poll()` on a signalfd (every
//! signal it handles is blocked and read from there, so no code runs in signal context) and on
//! the workers' message pipe, then reaps exited workers, enforces `--timeout`, keeps the number
//! of workers at the target, and keeps systemd informed (`READY`, `STATUS`, `WATCHDOG`, ...).
//!
//! Workers belong to a *generation*. A reload (HUP) starts a new generation with the new
//! configuration, waits until all its workers serve, and only then stops the old one
//! gracefully; if the new generation cannot boot, it is discarded, everything the reload changed
//! is put back, and the old one keeps serving.
//!
//! | module | concern |
//! |---|---|
//! | this one | starting the master: identity, pid file, listeners, signals, then the loop |
//! | `arbiter` | the loop, one `handle_<signal>` per signal, the lifecycle |
//! | `workers` | the worker table (by pid, one state each) and the one worker fork |
//! | `generation` | what the workers of one configuration are given |
//! | `reload` | HUP as a transaction: commit, or roll back every change |
//! | `upgrade` | USR2: fork + exec of a successor master on the same sockets |
//! | `announce` | sd_notify: ready, reloading, stopping, status, watchdog |
//! | `listeners` | which sockets the master opens, at start and on reload |
//! | `statsd` | the master's statsd metrics: the workers gauge, the backlog |

mod announce;
mod arbiter;
mod generation;
mod listeners;
mod reload;
mod statsd;
mod upgrade;
pub(crate) mod workers;

use std::path::PathBuf;

use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::config::{Config, Sources};
use crate::notify::NotifyEnv;
use crate::pidfile::PidFile;

pub use upgrade::UPGRADE_FROM_ENV;

/// What `run` needs besides the configuration.
pub struct Startup {
    pub sources: Sources,
    pub argv: Vec<String>,
    /// The executable to run on USR2 (the path it was started from).
    pub exe: PathBuf,
    /// The working directory at startup (USR2 runs the new master from there).
    pub start_cwd: PathBuf,
    pub notify: NotifyEnv,
    /// The master this one replaces (USR2), if any.
    pub predecessor: Option<i32>,
    /// The environment variables `-e` set (in this process, at startup), so a generation whose
    /// configuration no longer has them can unset them.
    pub env_applied: Vec<String>,
}

/// Binds (or inherits) the listeners, forks the workers and supervises them until shutdown;
/// returns the exit code.
pub fn run(cfg: Config, mut s: Startup) -> i32 {
    tracing::info!("Starting ferricorn {}", crate::VERSION);
    crate::privileges::apply_umask(cfg.umask);
    let identity = match crate::privileges::identity(cfg.user.as_deref(), cfg.group.as_deref()) {
        Ok(i) => i,
        Err(e) => {
            tracing::error!("{e}");
            return 1;
        }
    };
    let pidfile = match &cfg.pid {
        Some(p) => match PidFile::create(p, s.predecessor.map(|p| p as u32)) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::error!("{e}");
                return 1;
            }
        },
        None => None,
    };
    let listeners = match listeners::open_at_start(&cfg, identity.as_ref()) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("{e}");
            if let Some(p) = pidfile {
                p.remove();
            }
            return 1;
        }
    };
    tracing::info!(
        "Using {} worker(s) x {} thread(s); {}",
        cfg.workers,
        cfg.threads,
        crate::python::describe_runtime()
    );
    let mut mask = SigSet::empty();
    for sig in arbiter::SIGNALS {
        mask.add(sig);
    }
    if let Err(e) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None) {
        tracing::error!("cannot block signals: {e}");
        return 1;
    }
    let sigfd = match SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot create a signalfd: {e}");
            return 1;
        }
    };
    let (rx, tx) = match crate::ipc::channel() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("cannot create the worker pipe: {e}");
            return 1;
        }
    };
    crate::proctitle::set(&format!("ferricorn: master [{}]", cfg.proc_name()));
    let systemd = announce::Announcer::new(std::mem::take(&mut s.notify));
    let first = generation::Generation::first(cfg, identity, &listeners, &s.env_applied);
    let opened = arbiter::Opened {
        listeners,
        sigfd,
        rx,
        tx,
        pidfile,
    };
    arbiter::Master::new(s, first, opened, systemd).run()
}

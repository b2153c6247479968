//! The master (arbiter): one thread, no async runtime, no Python.
//!
//! It owns the listeners, forks the workers, and runs one loop: `poll()` on a signalfd (every
//! signal it handles is blocked and read from there, so no code runs in signal context) and on
//! the workers' message pipe (and on the `--metrics-bind` listener: `crate::metrics`), then
//! reaps exited workers (and, as PID 1 of a container, any process reparented to it), enforces
//! `--timeout`, keeps the number of workers at the target, and keeps systemd informed
//! (`READY`, `STATUS`, `WATCHDOG`, ...).
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

/// The signals the master handles.
fn signal_set() -> SigSet {
    let mut mask = SigSet::empty();
    for sig in arbiter::SIGNALS {
        mask.add(sig);
    }
    mask
}

/// Blocks the signals the master reads from its signalfd. Done before any Python code of the
/// user's runs in the master (a config file, server hooks, `--preload`), so that every thread
/// it starts inherits the mask and no signal is delivered to such a thread instead.
pub fn block_signals() -> Result<(), String> {
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&signal_set()), None)
        .map_err(|e| format!("cannot block signals: {e}"))
}

/// Binds (or inherits) the listeners, forks the workers and supervises them until shutdown;
/// returns the exit code.
pub fn run(cfg: Config, mut s: Startup) -> i32 {
    tracing::info!("Starting ferricorn {}", crate::VERSION);
    raise_nofile_limit(cfg.worker_connections);
    crate::privileges::apply_umask(cfg.umask);
    let identity = match crate::privileges::identity(cfg.user.as_deref(), cfg.group.as_deref()) {
        Ok(i) => i,
        Err(e) => {
            tracing::error!("{e}");
            return 1;
        }
    };
    // Blocked before any of the user's Python runs here (hooks, --preload), so that threads
    // it starts inherit the mask.
    if let Err(e) = block_signals() {
        tracing::error!("{e}");
        return 1;
    }
    // Gunicorn's order: the app is preloaded and the number of workers set before the pid
    // file, on_starting and the listeners.
    if cfg.preload_app
        && let Err(code) = preload(&cfg)
    {
        return code;
    }
    let hooks = crate::hooks::Server::new();
    let state = |cfg| crate::hooks::State {
        cfg,
        num_workers: cfg.workers,
    };
    if let Err(e) = hooks.nworkers_changed(&state(&cfg), None) {
        tracing::error!("Reason: {e}; not starting");
        return 1;
    }
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
    let give_up = |pidfile: Option<PidFile>, why: &str| {
        tracing::error!("{why}");
        if let Some(p) = pidfile {
            p.remove();
        }
        1
    };
    if let Err(e) = hooks.call(&state(&cfg), "on_starting") {
        return give_up(pidfile, &format!("Reason: {e}; not starting"));
    }
    let (listeners, handed_metrics) = match listeners::open_at_start(&cfg, identity.as_ref()) {
        Ok(l) => l,
        Err(e) => return give_up(pidfile, &e),
    };
    tracing::info!(
        "Using {} worker(s) x {} thread(s); {}",
        cfg.workers,
        cfg.threads,
        crate::python::describe_runtime()
    );
    let mask = signal_set();
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
    let python = crate::python::venv::runtime_version_full();
    let python = python.split_whitespace().next().unwrap_or("").to_string();
    let book = match crate::metrics::Book::new(cfg.metrics_bind.is_some(), python) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!("cannot map the memory shared with the workers: {e}");
            return 1;
        }
    };
    let metrics = match open_metrics(&cfg, handed_metrics, s.predecessor.is_some()) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!("{e}");
            for l in listeners {
                l.close_and_unlink();
            }
            if let Some(p) = pidfile {
                p.remove();
            }
            return 1;
        }
    };
    crate::proctitle::set(&format!("ferricorn: master [{}]", cfg.proc_name()));
    // Gunicorn's when_ready: the listeners are open, no worker is forked yet. The server is
    // ready to start: a hook that raises (its traceback logged) does not keep it down.
    if let Err(e) = hooks.call(&state(&cfg), "when_ready") {
        tracing::warn!("{e}; starting anyway");
    }
    let systemd = announce::Announcer::new(std::mem::take(&mut s.notify));
    let first = generation::Generation::first(cfg, identity, &listeners, &s.env_applied);
    let opened = arbiter::Opened {
        listeners,
        sigfd,
        rx,
        tx,
        pidfile,
        book,
        metrics,
    };
    arbiter::Master::new(s, first, opened, systemd, hooks).run()
}

/// Raises the soft limit on open descriptors to the hard one, as nginx and Go do: systemd (and
/// most shells) start services with a soft limit of 1024, for the sake of programs that use
/// `select()`, and a hard limit far above it; a worker needs one descriptor per connection, up
/// to `--worker-connections`. The workers inherit the limit.
fn raise_nofile_limit(worker_connections: u32) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let mut now = soft;
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => now = hard,
            Err(e) => {
                tracing::warn!("cannot raise the open-files limit from {soft} to {hard}: {e}")
            }
        }
    }
    // Room for the connections, plus the listeners, logs, pipes and the app's own files.
    let wanted = u64::from(worker_connections) + 64;
    if now < wanted {
        tracing::warn!(
            "The open-files limit is {now}, below --worker-connections {worker_connections} plus \
             what a worker needs besides: raise it (LimitNOFILE= in the unit, ulimit -n)"
        );
    }
}

/// `--preload`: the app is imported here, before any worker forks, so that the workers share
/// its memory copy-on-write. A failure stops the start with Gunicorn's "App failed to load"
/// status (4).
fn preload(cfg: &Config) -> Result<(), i32> {
    if let Err(e) = crate::python::setup_worker(cfg) {
        tracing::error!("{e}");
        return Err(crate::exit::EXIT_BOOT_ERROR);
    }
    match crate::python::preload_app(cfg.app_spec()) {
        Ok(()) => {
            tracing::info!("Preloaded the app `{}` in the master", cfg.app_spec());
            Ok(())
        }
        Err(e) => {
            if e.traceback.is_empty() {
                tracing::error!("Exception while preloading the app: {}", e.reason);
            } else {
                tracing::error!(
                    "Exception while preloading the app\n{}",
                    e.traceback.trim_end()
                );
            }
            tracing::error!(
                "Reason: the app `{}` failed to load: {}; no worker was started",
                cfg.app_spec(),
                e.reason
            );
            Err(crate::exit::EXIT_APP_LOAD)
        }
    }
}

/// `HOST:0` (any port) matches a listener on that host: the predecessor's kernel-chosen port.
fn any_port_of(bind: &crate::sockets::BindAddr, l: &crate::sockets::Listener) -> bool {
    match (bind, &l.local) {
        (crate::sockets::BindAddr::Tcp { host, port: 0 }, crate::sockets::LocalAddr::Tcp(a)) => {
            host.parse::<std::net::IpAddr>().ok() == Some(a.ip())
        }
        _ => false,
    }
}

/// The `--metrics-bind` listener: the one the master this one upgrades from handed over when
/// it is the configured address (served only once this master takes over), else bound now.
fn open_metrics(
    cfg: &Config,
    handed: Option<crate::sockets::Listener>,
    upgrading: bool,
) -> Result<Option<crate::metrics::Endpoint>, String> {
    let Some(bind) = &cfg.metrics_bind else {
        if let Some(l) = handed {
            tracing::info!(
                "Closing the metrics listener {} (no --metrics-bind)",
                l.local
            );
        }
        return Ok(None);
    };
    match handed {
        Some(l) if l.matches(bind) || any_port_of(bind, &l) => {
            let mut e = crate::metrics::Endpoint::adopt(l)
                .map_err(|e| format!("--metrics-bind {bind}: {e}"))?;
            e.active = !upgrading;
            Ok(Some(e))
        }
        other => {
            // Dropped, not unlinked: the previous master still answers on it until it leaves.
            drop(other);
            crate::metrics::Endpoint::open(bind).map(Some)
        }
    }
}

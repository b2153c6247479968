//! The master (arbiter): one thread, no async runtime, no Python.
//!
//! It owns the listeners, forks the workers, and runs one loop: `poll()` on a signalfd (every
//! signal it handles is blocked and read from there, so no code runs in signal context) and on
//! the workers' message pipe, then reaps exited workers, enforces `--timeout`, keeps the number
//! of workers at the target, and keeps systemd informed (`READY`, `STATUS`, `WATCHDOG`, ...).
//!
//! Workers belong to a *generation*. A reload (HUP) starts a new generation with the new
//! configuration, waits until all its workers serve, and only then stops the old one
//! gracefully; if the new generation cannot boot, it is discarded and the old one keeps serving.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};

use crate::config::{Config, Sources};
use crate::ipc::{self, Msg, monotonic_ns};
use crate::logging::CRITICAL;
use crate::notify::{NotifyEnv, NotifyState};
use crate::pidfile::PidFile;
use crate::privileges::Identity;
use crate::sockets::Listener;
use crate::worker::{self, EXIT_APP_LOAD, EXIT_BOOT_ERROR};

/// Signals the master handles (all read from its signalfd).
const SIGNALS: [Signal; 10] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGCHLD,
    Signal::SIGWINCH,
];

/// How long a timed-out worker gets between SIGABRT (stack dump) and SIGKILL.
const ABORT_GRACE: Duration = Duration::from_secs(1);
/// How long a fast shutdown (INT/QUIT) waits before SIGKILL.
const FAST_STOP: Duration = Duration::from_secs(2);
/// Longest sleep of the main loop.
const TICK: Duration = Duration::from_millis(100);
/// `STATUS=` is refreshed at most this often (and whenever the state changes).
const STATUS_EVERY: Duration = Duration::from_secs(1);
/// While booting or reloading, `EXTEND_TIMEOUT_USEC` is sent this often...
const EXTEND_EVERY: Duration = Duration::from_secs(1);
/// ...asking for this much more time each time.
const EXTEND_BY: Duration = Duration::from_secs(5);

/// Environment variable telling a new master (USR2) which master it replaces.
pub const UPGRADE_FROM_ENV: &str = "FERRICORN_UPGRADE_FROM";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WState {
    /// Forked; importing the app.
    Booting,
    Serving,
    /// Reached max-requests, draining; already replaced.
    Retiring,
    /// Told to stop (TERM/QUIT) by the master.
    Stopping,
    /// Timed out: SIGABRT sent, SIGKILL follows at the instant.
    Aborting(Instant),
}

#[derive(Debug)]
struct Worker {
    generation: u64,
    state: WState,
    /// Monotonic ns of the last sign of life (spawn, boot, heartbeat).
    alive_ns: u64,
    /// Oldest request inside Python (monotonic ns), 0 if none.
    busy_since: u64,
    requests: u64,
    spawned: Instant,
    booted: bool,
    killed_by_us: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// Stopping: workers told to exit; SIGKILL at the deadline; then exit with the code.
    Stopping {
        deadline: Instant,
        code: i32,
    },
}

/// A reload in progress: the next generation is booting.
struct Reload {
    generation: u64,
    cfg: Config,
    /// Listeners opened for the new configuration (closed again if the reload fails).
    opened: Vec<Listener>,
    identity: Option<Identity>,
    deadline: Instant,
}

/// A new master started by USR2, not yet in charge.
struct Upgrade {
    pid: i32,
}

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
    /// The environment variables `-e` set, so a reload can unset removed ones.
    pub env_applied: Vec<String>,
}

pub struct Master {
    cfg: Config,
    s: Startup,
    listeners: Vec<Listener>,
    workers: BTreeMap<i32, Worker>,
    generation: u64,
    target: u32,
    reload: Option<Reload>,
    reload_queued: bool,
    identity: Option<Identity>,
    sigfd: SignalFd,
    rx: ipc::Receiver,
    tx: ipc::Sender,
    phase: Phase,
    ready: bool,
    handover: bool,
    upgrade: Option<Upgrade>,
    pidfile: Option<PidFile>,
    next_watchdog: Option<Instant>,
    next_status: Instant,
    last_status: String,
    next_extend: Instant,
    last_reload: Option<String>,
    /// Requests served by workers that have exited.
    retired_requests: u64,
}

/// Binds (or inherits) the listeners, forks the workers and supervises them until shutdown;
/// returns the exit code.
pub fn run(cfg: Config, s: Startup) -> i32 {
    let pid = std::process::id();
    tracing::info!("Starting ferricorn {}", crate::VERSION);
    crate::privileges::apply_umask(&cfg);
    let identity = match crate::privileges::identity(&cfg) {
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
    let listeners = match open_listeners(&cfg, identity.as_ref()) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("{e}");
            if let Some(p) = pidfile {
                p.remove();
            }
            return 1;
        }
    };
    for l in &listeners {
        tracing::info!("Listening at: {} ({pid})", l.local);
        if l.inherited {
            let name = l.name.as_deref().unwrap_or("unnamed");
            tracing::info!("Inherited socket fd {} '{name}' ({})", l.raw_fd(), l.local);
        }
    }
    tracing::info!(
        "Using {} worker(s) x {} thread(s); {}",
        cfg.workers,
        cfg.threads,
        crate::python::describe_runtime()
    );
    let mut mask = SigSet::empty();
    for sig in SIGNALS {
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
    let (rx, tx) = match ipc::channel() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("cannot create the worker pipe: {e}");
            return 1;
        }
    };
    crate::proctitle::set(&format!("ferricorn: master [{}]", cfg.proc_name()));
    let now = Instant::now();
    let mut m = Master {
        target: cfg.workers,
        next_watchdog: s.notify.watchdog_every().map(|_| now),
        cfg,
        s,
        listeners,
        workers: BTreeMap::new(),
        generation: 1,
        reload: None,
        reload_queued: false,
        identity,
        sigfd,
        rx,
        tx,
        phase: Phase::Running,
        ready: false,
        handover: false,
        upgrade: None,
        pidfile,
        next_status: now,
        last_status: String::new(),
        next_extend: now,
        last_reload: None,
        retired_requests: 0,
    };
    let code = m.main_loop();
    tracing::info!("Shutting down: Master");
    for l in std::mem::take(&mut m.listeners) {
        l.close_and_unlink();
    }
    if let Some(p) = m.pidfile.take() {
        p.remove();
    }
    code
}

/// Inherited sockets (systemd, or the master we upgrade from) when there are any; otherwise
/// the configured binds.
fn open_listeners(cfg: &Config, id: Option<&Identity>) -> Result<Vec<Listener>, String> {
    let inherited = crate::sockets::from_systemd(&cfg.bind)?;
    if !inherited.is_empty() {
        if cfg.bind_explicit {
            for b in &cfg.bind {
                if !inherited.iter().any(|l| l.matches(b)) {
                    tracing::warn!(
                        "--bind {b} matches none of the sockets systemd passed; serving those only"
                    );
                }
            }
        }
        return Ok(inherited);
    }
    let ls = crate::sockets::bind_all(&cfg.bind, cfg.backlog as i32)?;
    if let Some(id) = id {
        for l in &ls {
            if let crate::sockets::LocalAddr::Unix(p) = &l.local {
                crate::privileges::give(p, id);
            }
        }
    }
    Ok(ls)
}

fn hms() -> String {
    chrono::Local::now().format("%H:%M:%S").to_string()
}

impl Master {
    fn main_loop(&mut self) -> i32 {
        loop {
            self.spawn_missing();
            self.progress_reload();
            if let Some(code) = self.stop_finished() {
                return code;
            }
            self.keep_systemd_informed();
            let timeout = self.next_wakeup();
            let mut fds = [
                PollFd::new(self.sigfd.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.rx.fd(), PollFlags::POLLIN),
            ];
            let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    tracing::error!("poll failed: {e}");
                    return 1;
                }
            }
            self.handle_signals();
            for (pid, msg) in self.rx.drain() {
                self.handle_msg(pid, msg);
            }
            self.reap();
            self.check_timeouts();
        }
    }

    fn next_wakeup(&self) -> Duration {
        let now = Instant::now();
        let mut t = TICK;
        if let Some(w) = self.next_watchdog {
            t = t.min(w.saturating_duration_since(now));
        }
        t.max(Duration::from_millis(1))
    }

    // ---- systemd ---------------------------------------------------------------------------

    fn keep_systemd_informed(&mut self) {
        let now = Instant::now();
        if let (Some(at), Some(every)) = (self.next_watchdog, self.s.notify.watchdog_every())
            && now >= at
        {
            // Sent from this loop only: if the loop stalls, systemd stops hearing from us.
            self.s.notify.send(&[NotifyState::Watchdog]);
            let mut next = at + every;
            if next <= now {
                next = now + every;
            }
            self.next_watchdog = Some(next);
        }
        let extending = (!self.ready || self.reload.is_some()) && self.phase == Phase::Running;
        if extending && now >= self.next_extend {
            self.s
                .notify
                .send(&[NotifyState::ExtendTimeoutUsec(EXTEND_BY.as_micros() as u32)]);
            self.next_extend = now + EXTEND_EVERY;
        }
        let status = self.status_text();
        if status != self.last_status && (now >= self.next_status || self.status_urgent(&status)) {
            self.s.notify.send(&[NotifyState::Status(&status)]);
            self.last_status = status;
            self.next_status = now + STATUS_EVERY;
        }
    }

    /// A change of phase (not just a request count) is reported at once.
    fn status_urgent(&self, status: &str) -> bool {
        let head = |s: &str| s.split(':').next().unwrap_or("").to_string();
        head(status) != head(&self.last_status) || !status.contains("requests")
    }

    fn requests_total(&self) -> u64 {
        self.retired_requests + self.workers.values().map(|w| w.requests).sum::<u64>()
    }

    fn serving(&self, generation: u64) -> usize {
        self.workers
            .values()
            .filter(|w| w.generation == generation && w.state == WState::Serving)
            .count()
    }

    fn status_text(&self) -> String {
        let reload = match &self.last_reload {
            Some(r) => format!("; last reload {r}"),
            None => String::new(),
        };
        match self.phase {
            Phase::Stopping { .. } => {
                format!("Stopping: {} worker(s) draining", self.workers.len())
            }
            Phase::Running if !self.ready => format!(
                "Booting: {}/{} workers ready",
                self.serving(self.generation),
                self.target
            ),
            Phase::Running => match &self.reload {
                Some(r) => format!(
                    "Reloading: generation {} booting ({}/{} ready), generation {} serving{reload}",
                    r.generation,
                    self.serving(r.generation),
                    r.cfg.workers,
                    self.generation
                ),
                None => format!(
                    "Serving: {} workers, generation {}, {} requests{reload}",
                    self.serving(self.generation),
                    self.generation,
                    self.requests_total()
                ),
            },
        }
    }

    // ---- signals and messages ----------------------------------------------------------------

    fn handle_signals(&mut self) {
        while let Ok(Some(info)) = self.sigfd.read_signal() {
            let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                continue;
            };
            if sig != Signal::SIGCHLD {
                tracing::info!(
                    "Handling signal: {}",
                    sig.as_str().trim_start_matches("SIG").to_lowercase()
                );
            }
            match sig {
                Signal::SIGCHLD => {} // reaped every loop
                Signal::SIGTERM => {
                    let successor = self.upgrade.as_ref().map(|u| u.pid);
                    if let Some(new) = successor.filter(|p| kill(Pid::from_raw(*p), None).is_ok()) {
                        self.hand_over(new);
                    } else {
                        self.begin_stop(true, 0);
                    }
                }
                Signal::SIGINT | Signal::SIGQUIT => self.begin_stop(false, 0),
                Signal::SIGHUP => self.begin_reload(),
                Signal::SIGUSR2 => self.begin_upgrade(),
                Signal::SIGTTIN if self.phase == Phase::Running => {
                    self.target += 1;
                    if let Some(r) = self.reload.as_mut() {
                        r.cfg.workers += 1;
                    }
                    tracing::info!("Increasing workers to {}", self.target);
                }
                Signal::SIGTTOU if self.phase == Phase::Running && self.target > 1 => {
                    self.target -= 1;
                    if let Some(r) = self.reload.as_mut() {
                        r.cfg.workers = r.cfg.workers.saturating_sub(1).max(1);
                    }
                    tracing::info!("Decreasing workers to {}", self.target);
                    self.retire_extra();
                }
                Signal::SIGUSR1 => {
                    crate::logging::reopen();
                    self.signal_all(Signal::SIGUSR1);
                }
                _ => {}
            }
        }
    }

    fn handle_msg(&mut self, pid: i32, msg: Msg) {
        let Some(w) = self.workers.get_mut(&pid) else {
            return;
        };
        let now = monotonic_ns();
        match msg {
            Msg::Booted => {
                w.alive_ns = now;
                w.booted = true;
                if w.state == WState::Booting {
                    w.state = WState::Serving;
                }
                self.maybe_ready();
            }
            Msg::Heartbeat {
                busy_since,
                requests,
            } => {
                w.alive_ns = now;
                w.busy_since = busy_since;
                w.requests = requests;
            }
            Msg::Retiring { requests } => {
                w.requests = requests;
                if matches!(w.state, WState::Serving | WState::Booting) {
                    w.state = WState::Retiring;
                }
            }
            Msg::BootFailed(reason) => {
                let generation = w.generation;
                tracing::error!("Worker (pid:{pid}) failed to boot: {reason}");
                if self
                    .reload
                    .as_ref()
                    .is_some_and(|r| r.generation == generation)
                {
                    self.abort_reload(&format!("the app failed to load: {reason}"));
                } else if self.phase == Phase::Running {
                    tracing::error!(
                        "Reason: the app `{}` failed to load: {reason}",
                        self.cfg.app_spec()
                    );
                    self.begin_stop(false, EXIT_APP_LOAD);
                }
            }
        }
    }

    /// READY=1 once the first generation serves in full.
    fn maybe_ready(&mut self) {
        if self.ready || self.phase != Phase::Running {
            return;
        }
        let serving = self.serving(self.generation);
        if serving as u32 >= self.target {
            self.ready = true;
            tracing::info!("Ready: {serving} workers serving");
            let status = self.status_text();
            self.s.notify.send(&[
                NotifyState::Ready,
                NotifyState::MainPid(std::process::id()),
                NotifyState::Status(&status),
            ]);
            self.last_status = status;
            if let Some(old) = self.s.predecessor.take() {
                tracing::info!("Taking over from the previous master (pid {old})");
                let _ = kill(Pid::from_raw(old), Signal::SIGTERM);
            }
        }
    }

    // ---- workers -----------------------------------------------------------------------------

    /// Workers of `generation` that count towards its target (not leaving).
    fn active(&self, generation: u64) -> usize {
        self.workers
            .values()
            .filter(|w| {
                w.generation == generation && matches!(w.state, WState::Booting | WState::Serving)
            })
            .count()
    }

    fn spawn_missing(&mut self) {
        if self.phase != Phase::Running {
            return;
        }
        while (self.active(self.generation) as u32) < self.target {
            if !self.spawn(self.generation) {
                return;
            }
        }
        if let Some((generation, want)) =
            self.reload.as_ref().map(|r| (r.generation, r.cfg.workers))
        {
            while (self.active(generation) as u32) < want {
                if !self.spawn(generation) {
                    return;
                }
            }
        }
    }

    fn spawn(&mut self, generation: u64) -> bool {
        let master_pid = std::process::id() as i32;
        // The master is single-threaded; python::fork keeps the interpreter valid in the child.
        match crate::python::fork() {
            Ok(ForkResult::Child) => {
                let (cfg, identity, mut listeners): (&Config, Option<&Identity>, Vec<&Listener>) =
                    match self.reload.as_ref().filter(|r| r.generation == generation) {
                        Some(r) => (
                            &r.cfg,
                            r.identity.as_ref(),
                            self.listeners
                                .iter()
                                .filter(|l| l.inherited || r.cfg.bind.iter().any(|b| l.matches(b)))
                                .collect(),
                        ),
                        None => (
                            &self.cfg,
                            self.identity.as_ref(),
                            self.listeners.iter().collect(),
                        ),
                    };
                if let Some(r) = self.reload.as_ref().filter(|r| r.generation == generation) {
                    listeners.extend(r.opened.iter());
                }
                worker::run(worker::Spawn {
                    cfg,
                    listeners: &listeners,
                    ipc: &self.tx,
                    close_fds: vec![self.sigfd.as_raw_fd(), self.rx.fd().as_raw_fd()],
                    argv: &self.s.argv,
                    master_pid,
                    identity,
                })
            }
            Ok(ForkResult::Parent { child }) => {
                tracing::info!("Booting worker with pid: {child}");
                self.workers.insert(
                    child.as_raw(),
                    Worker {
                        generation,
                        state: WState::Booting,
                        alive_ns: monotonic_ns(),
                        busy_since: 0,
                        requests: 0,
                        spawned: Instant::now(),
                        booted: false,
                        killed_by_us: false,
                    },
                );
                true
            }
            Err(e) => {
                tracing::error!("cannot fork a worker: {e}");
                false
            }
        }
    }

    /// TTOU: the oldest workers of the current generation beyond the target stop gracefully.
    fn retire_extra(&mut self) {
        let mut serving: Vec<(Instant, i32)> = self
            .workers
            .iter()
            .filter(|(_, w)| {
                w.generation == self.generation
                    && matches!(w.state, WState::Booting | WState::Serving)
            })
            .map(|(p, w)| (w.spawned, *p))
            .collect();
        serving.sort();
        let extra = serving.len().saturating_sub(self.target as usize);
        for (_, pid) in serving.into_iter().take(extra) {
            self.stop_worker(pid, Signal::SIGTERM);
        }
    }

    fn stop_worker(&mut self, pid: i32, sig: Signal) {
        if let Some(w) = self.workers.get_mut(&pid) {
            w.state = WState::Stopping;
            if sig == Signal::SIGKILL {
                w.killed_by_us = true;
            }
            let _ = kill(Pid::from_raw(pid), sig);
        }
    }

    fn signal_all(&self, sig: Signal) {
        for pid in self.workers.keys() {
            let _ = kill(Pid::from_raw(*pid), sig);
        }
    }

    fn reap(&mut self) {
        loop {
            let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(s) => s,
            };
            let Some(pid) = status.pid() else { continue };
            if self.upgrade.as_ref().is_some_and(|u| u.pid == pid.as_raw()) {
                self.upgrade = None;
                if !self.handover {
                    let why = describe(status);
                    tracing::error!(
                        "Upgrade failed: the new master (pid {pid}) {why}; still serving"
                    );
                    self.last_reload =
                        Some(format!("(upgrade) failed at {}: new master {why}", hms()));
                }
                continue;
            }
            let Some(w) = self.workers.remove(&pid.as_raw()) else {
                continue;
            };
            self.retired_requests += w.requests;
            self.on_exit(pid.as_raw(), &w, status);
        }
    }

    fn on_exit(&mut self, pid: i32, w: &Worker, status: WaitStatus) {
        let leaving = matches!(w.state, WState::Stopping | WState::Retiring);
        let by_us = w.killed_by_us || matches!(w.state, WState::Aborting(_));
        let in_reload = self
            .reload
            .as_ref()
            .is_some_and(|r| r.generation == w.generation);
        match status {
            WaitStatus::Exited(_, 0) if leaving => {}
            WaitStatus::Signaled(_, Signal::SIGKILL, _) if !by_us => {
                tracing::error!("Worker (pid:{pid}) was sent SIGKILL! Perhaps out of memory?");
            }
            WaitStatus::Signaled(_, sig, _) if by_us || leaving => {
                tracing::info!("Worker (pid:{pid}) was stopped with {}", sig.as_str());
            }
            other => tracing::error!("Worker (pid:{pid}) {}", describe(other)),
        }
        if w.booted || leaving || self.phase != Phase::Running {
            return;
        }
        // It died before it ever served.
        let boot_code = match status {
            WaitStatus::Exited(_, c @ (EXIT_APP_LOAD | EXIT_BOOT_ERROR)) => Some(c),
            _ if !self.ready || in_reload => Some(EXIT_BOOT_ERROR),
            _ => None,
        };
        if let Some(code) = boot_code {
            if in_reload {
                self.abort_reload(&format!("a new worker {}", describe(status)));
            } else if !self.ready || code == EXIT_APP_LOAD {
                tracing::error!(
                    "Reason: a worker could not load the app `{}`",
                    self.cfg.app_spec()
                );
                self.begin_stop(false, code);
            }
        }
    }

    /// Kills workers silent for longer than `--timeout` (SIGABRT for a stack dump, then SIGKILL).
    fn check_timeouts(&mut self) {
        let now = Instant::now();
        let now_ns = monotonic_ns();
        let reload_gen = self.reload.as_ref().map(|r| (r.generation, r.cfg.timeout));
        for (pid, w) in self.workers.iter_mut() {
            let timeout = match reload_gen {
                Some((g, t)) if g == w.generation => t,
                _ => self.cfg.timeout,
            };
            match w.state {
                WState::Aborting(at) => {
                    if now >= at && !w.killed_by_us {
                        w.killed_by_us = true;
                        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
                    }
                }
                _ if timeout == 0 || w.killed_by_us => {}
                WState::Stopping | WState::Retiring => {}
                WState::Booting | WState::Serving => {
                    let mark = if w.busy_since != 0 {
                        w.alive_ns.min(w.busy_since)
                    } else {
                        w.alive_ns
                    };
                    if now_ns.saturating_sub(mark) > timeout.saturating_mul(1_000_000_000) {
                        tracing::error!(target: CRITICAL, "WORKER TIMEOUT (pid:{pid})");
                        w.state = WState::Aborting(now + ABORT_GRACE);
                        let _ = kill(Pid::from_raw(*pid), Signal::SIGABRT);
                    }
                }
            }
        }
    }

    // ---- stopping ----------------------------------------------------------------------------

    /// Graceful: TERM to workers, in-flight requests finish within `graceful_timeout`.
    /// Fast: QUIT to workers. Either way the listeners close now.
    fn begin_stop(&mut self, graceful: bool, code: i32) {
        let now = Instant::now();
        let wait = if graceful {
            Duration::from_secs(self.cfg.graceful_timeout)
        } else {
            FAST_STOP
        };
        let deadline = now + wait;
        if let Phase::Stopping {
            deadline: d,
            code: c,
        } = self.phase
        {
            // A fast stop may shorten a graceful one; nothing lengthens a stop.
            if !graceful && deadline < d {
                self.phase = Phase::Stopping {
                    deadline,
                    code: c.max(code),
                };
                self.signal_all(Signal::SIGQUIT);
            }
            return;
        }
        if !self.handover {
            self.s.notify.send(&[NotifyState::Stopping]);
        }
        self.phase = Phase::Stopping { deadline, code };
        if let Some(r) = self.reload.take() {
            for l in r.opened {
                l.close_and_unlink();
            }
        }
        let sig = if graceful {
            Signal::SIGTERM
        } else {
            Signal::SIGQUIT
        };
        for (pid, w) in self.workers.iter_mut() {
            w.state = WState::Stopping;
            let _ = kill(Pid::from_raw(*pid), sig);
        }
        for l in std::mem::take(&mut self.listeners) {
            l.close_and_unlink();
        }
    }

    /// TERM while a new master (USR2) runs: it has taken over; drain and leave the sockets and
    /// the pid file to it, and tell systemd nothing (the service is not stopping).
    fn hand_over(&mut self, new: i32) {
        tracing::info!("The new master (pid {new}) took over; draining and exiting");
        self.handover = true;
        for l in self.listeners.iter_mut() {
            l.disown();
        }
        self.begin_stop(true, 0);
    }

    /// During a stop: SIGKILL stragglers at the deadline; the exit code once all are gone.
    fn stop_finished(&mut self) -> Option<i32> {
        let Phase::Stopping { deadline, code } = self.phase else {
            return None;
        };
        if self.workers.is_empty() {
            return Some(code);
        }
        if Instant::now() >= deadline {
            for (pid, w) in self.workers.iter_mut() {
                if !w.killed_by_us {
                    tracing::warn!("Worker (pid:{pid}) did not stop in time; sending SIGKILL");
                    w.killed_by_us = true;
                    let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
                }
            }
        }
        None
    }

    // ---- reload (HUP) ------------------------------------------------------------------------

    fn begin_reload(&mut self) {
        if self.phase != Phase::Running {
            return;
        }
        if self.reload.is_some() {
            tracing::info!("A reload is in progress; another one will follow it");
            self.reload_queued = true;
            return;
        }
        let mono = NotifyState::monotonic_usec_now().unwrap_or(NotifyState::MonotonicUsec(0));
        self.s.notify.send(&[NotifyState::Reloading, mono]);
        tracing::info!("Reloading the configuration");
        let cfg = match self.prepare(self.s.sources.load()) {
            Ok(c) => c,
            Err(e) => return self.reload_failed(&e),
        };
        let identity = match crate::privileges::identity(&cfg) {
            Ok(i) => i,
            Err(e) => return self.reload_failed(&e),
        };
        let inherited_mode = self.listeners.iter().any(|l| l.inherited);
        let mut opened = Vec::new();
        if !inherited_mode {
            let missing: Vec<_> = cfg
                .bind
                .iter()
                .filter(|b| !self.listeners.iter().any(|l| l.matches(b)))
                .cloned()
                .collect();
            match crate::sockets::bind_all(&missing, cfg.backlog as i32) {
                Ok(ls) => opened = ls,
                Err(e) => return self.reload_failed(&e),
            }
            for l in &opened {
                tracing::info!("Listening at: {} ({})", l.local, std::process::id());
            }
        }
        if let Err(e) = crate::logging::reconfigure(&cfg) {
            for l in opened {
                l.close_and_unlink();
            }
            return self.reload_failed(&e);
        }
        self.apply_env(&cfg);
        let generation = self.generation + 1;
        let deadline = Instant::now() + Duration::from_secs(cfg.timeout.max(30) * 2);
        tracing::info!(
            "Starting generation {generation}: {} worker(s)",
            cfg.workers
        );
        self.reload = Some(Reload {
            generation,
            cfg,
            opened,
            identity,
            deadline,
        });
    }

    /// Settings the master itself applies before a new generation forks.
    fn prepare(&self, cfg: Result<Config, String>) -> Result<Config, String> {
        let cfg = cfg?;
        if cfg.app.is_none() {
            return Err("the new configuration names no app".into());
        }
        if let Some(dir) = &cfg.chdir {
            let dir = self.s.start_cwd.join(dir);
            std::env::set_current_dir(&dir)
                .map_err(|e| format!("--chdir {}: {e}", dir.display()))?;
        }
        crate::python::check_reload(&cfg)?;
        Ok(cfg)
    }

    fn apply_env(&mut self, cfg: &Config) {
        let mut applied = Vec::new();
        for kv in &cfg.env {
            if let Some((k, v)) = kv.split_once('=') {
                // SAFETY: the master is single-threaded.
                unsafe { std::env::set_var(k, v) };
                applied.push(k.to_string());
            }
        }
        for old in std::mem::take(&mut self.s.env_applied) {
            if !applied.contains(&old) {
                // SAFETY: the master is single-threaded.
                unsafe { std::env::remove_var(&old) };
            }
        }
        self.s.env_applied = applied;
    }

    fn reload_failed(&mut self, why: &str) {
        tracing::error!("Reload failed: {why}; still serving with the previous configuration");
        self.last_reload = Some(format!("failed at {}: {why}", hms()));
        let status = self.status_text();
        self.s
            .notify
            .send(&[NotifyState::Ready, NotifyState::Status(&status)]);
        self.last_status = status;
        self.after_reload();
    }

    fn abort_reload(&mut self, why: &str) {
        let Some(r) = self.reload.take() else { return };
        let pids: Vec<(i32, bool)> = self
            .workers
            .iter()
            .filter(|(_, w)| w.generation == r.generation)
            .map(|(p, w)| (*p, w.booted))
            .collect();
        for (pid, booted) in pids {
            self.stop_worker(
                pid,
                if booted {
                    Signal::SIGTERM
                } else {
                    Signal::SIGKILL
                },
            );
        }
        for l in r.opened {
            l.close_and_unlink();
        }
        // The old configuration's environment and logs are back in force.
        let old = self.cfg.clone();
        let _ = crate::logging::reconfigure(&old);
        self.apply_env(&old);
        if let Some(dir) = &old.chdir {
            let _ = std::env::set_current_dir(self.s.start_cwd.join(dir));
        }
        self.reload_failed(why);
    }

    /// Finishes the reload once the new generation serves in full.
    fn progress_reload(&mut self) {
        let Some(r) = self.reload.as_ref() else {
            return;
        };
        if Instant::now() > r.deadline {
            return self.abort_reload("the new workers did not boot in time");
        }
        if (self.serving(r.generation) as u32) < r.cfg.workers {
            return;
        }
        let r = self.reload.take().expect("checked");
        let old_gen = self.generation;
        self.generation = r.generation;
        self.target = r.cfg.workers;
        self.identity = r.identity;
        let old: Vec<i32> = self
            .workers
            .iter()
            .filter(|(_, w)| w.generation == old_gen && !matches!(w.state, WState::Stopping))
            .map(|(p, _)| *p)
            .collect();
        for pid in old {
            self.stop_worker(pid, Signal::SIGTERM);
        }
        let (keep, drop): (Vec<Listener>, Vec<Listener>) = std::mem::take(&mut self.listeners)
            .into_iter()
            .partition(|l| l.inherited || r.cfg.bind.iter().any(|b| l.matches(b)));
        for l in drop {
            tracing::info!("Closing listener {} (no longer configured)", l.local);
            l.close_and_unlink();
        }
        self.listeners = keep;
        self.listeners.extend(r.opened);
        self.cfg = r.cfg;
        crate::proctitle::set(&format!("ferricorn: master [{}]", self.cfg.proc_name()));
        tracing::info!("Reload complete: generation {} serving", self.generation);
        self.last_reload = Some(format!("ok at {}", hms()));
        let status = self.status_text();
        self.s
            .notify
            .send(&[NotifyState::Ready, NotifyState::Status(&status)]);
        self.last_status = status;
        self.after_reload();
    }

    fn after_reload(&mut self) {
        if std::mem::take(&mut self.reload_queued) {
            self.begin_reload();
        }
    }

    // ---- upgrade (USR2) ----------------------------------------------------------------------

    fn begin_upgrade(&mut self) {
        if self.phase != Phase::Running
            || self.reload.is_some()
            || self.upgrade.is_some()
            || !self.ready
        {
            tracing::warn!(
                "USR2 ignored: the master is not in a steady state (starting, reloading, upgrading or stopping)"
            );
            return;
        }
        let fds: Vec<(RawFd, String)> = self
            .listeners
            .iter()
            .map(|l| (l.raw_fd(), l.handover_name()))
            .collect();
        let old_pid = std::process::id();
        // SAFETY: single-threaded master; the child only execs (or exits).
        match unsafe { fork() } {
            Ok(ForkResult::Child) => self.exec_successor(&fds, old_pid),
            Ok(ForkResult::Parent { child }) => {
                tracing::info!(
                    "Upgrading: started a new master (pid {child}) from {}",
                    self.s.exe.display()
                );
                self.upgrade = Some(Upgrade {
                    pid: child.as_raw(),
                });
            }
            Err(e) => tracing::error!("Upgrade failed: cannot fork: {e}"),
        }
    }

    /// In the forked child: pass the listeners as `LISTEN_FDS` (from fd 3) and exec.
    fn exec_successor(&self, fds: &[(RawFd, String)], old_pid: u32) -> ! {
        let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
        // Move every listener out of the way first, then down to 3, 4, ... (dup2 clears
        // close-on-exec on the target).
        let mut high = Vec::new();
        for (fd, _) in fds {
            // SAFETY: F_DUPFD on our own open descriptor.
            let h = unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 100) };
            if h < 0 {
                eprintln!("ferricorn: upgrade: cannot duplicate fd {fd}");
                // SAFETY: leaving the forked child.
                unsafe { libc::_exit(127) };
            }
            high.push(h);
        }
        for (i, h) in high.iter().enumerate() {
            // SAFETY: dup2 onto the fixed socket-activation slots.
            unsafe { libc::dup2(*h, 3 + i as i32) };
        }
        let names: Vec<&str> = fds.iter().map(|(_, n)| n.as_str()).collect();
        // SAFETY: the forked child is single-threaded.
        unsafe {
            std::env::set_var("LISTEN_FDS", fds.len().to_string());
            std::env::set_var("LISTEN_PID", std::process::id().to_string());
            std::env::set_var("LISTEN_FDNAMES", names.join(":"));
            std::env::set_var(UPGRADE_FROM_ENV, old_pid.to_string());
            if let Some(n) = &self.s.notify.notifier {
                std::env::set_var("NOTIFY_SOCKET", &n.socket);
            }
            if let Some(w) = self.s.notify.watchdog {
                std::env::set_var("WATCHDOG_USEC", w.as_micros().to_string());
            }
        }
        let _ = std::env::set_current_dir(&self.s.start_cwd);
        use std::os::unix::process::CommandExt;
        let err = std::process::Command::new(&self.s.exe)
            .arg0(
                self.s
                    .argv
                    .first()
                    .map(String::as_str)
                    .unwrap_or("ferricorn"),
            )
            .args(self.s.argv.iter().skip(1))
            .exec();
        eprintln!(
            "ferricorn: upgrade: cannot execute {}: {err}",
            self.s.exe.display()
        );
        // SAFETY: leaving the forked child.
        unsafe { libc::_exit(127) }
    }
}

fn describe(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exited with code {code}"),
        WaitStatus::Signaled(_, sig, _) => format!("was terminated by signal {}", sig.as_str()),
        other => format!("ended ({other:?})"),
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        // Never leave workers behind, whatever path ended the master.
        for pid in self.workers.keys() {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        for pid in self.workers.keys() {
            let _ = waitpid(Pid::from_raw(*pid), None);
        }
    }
}

//! The master (arbiter): one thread, no async runtime, no Python.
//!
//! It owns the listeners, forks the workers, and runs one loop: `poll()` on a signalfd (every
//! signal it handles is blocked and read from there, so no code runs in signal context) and on
//! the workers' message pipe, then reaps exited workers, enforces `--timeout`, and keeps the
//! number of workers at the target.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};

use crate::config::Config;
use crate::ipc::{self, Msg, monotonic_ns};
use crate::logging::CRITICAL;
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
    state: WState,
    /// Monotonic ns of the last sign of life (spawn, boot, heartbeat).
    alive_ns: u64,
    /// Oldest request inside Python (monotonic ns), 0 if none.
    busy_since: u64,
    requests: u64,
    spawned: Instant,
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

pub struct Master {
    cfg: Config,
    argv: Vec<String>,
    listeners: Vec<Listener>,
    workers: BTreeMap<i32, Worker>,
    target: u32,
    sigfd: SignalFd,
    rx: ipc::Receiver,
    tx: ipc::Sender,
    phase: Phase,
    ready_announced: bool,
    /// Requests served by workers that have exited.
    retired_requests: u64,
}

/// Binds, forks the workers and supervises them until shutdown; returns the exit code.
pub fn run(cfg: Config, argv: Vec<String>) -> i32 {
    let pid = std::process::id();
    tracing::info!("Starting ferricorn {}", crate::VERSION);
    let listeners = match crate::sockets::bind_all(&cfg.bind, cfg.backlog as i32) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("{e}");
            return 1;
        }
    };
    for l in &listeners {
        tracing::info!("Listening at: {} ({pid})", l.local);
    }
    tracing::info!(
        "Using {} worker(s) x {} thread(s); Python {} ({})",
        cfg.workers,
        cfg.threads,
        crate::PYTHON_VERSION,
        crate::PYTHON_EXECUTABLE
    );
    let mut mask = SigSet::empty();
    for s in SIGNALS {
        mask.add(s);
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
    let mut m = Master {
        target: cfg.workers,
        cfg,
        argv,
        listeners,
        workers: BTreeMap::new(),
        sigfd,
        rx,
        tx,
        phase: Phase::Running,
        ready_announced: false,
        retired_requests: 0,
    };
    let code = m.main_loop();
    tracing::info!("Shutting down: Master");
    for l in std::mem::take(&mut m.listeners) {
        l.close_and_unlink();
    }
    code
}

impl Master {
    fn main_loop(&mut self) -> i32 {
        loop {
            self.spawn_missing();
            if let Some(code) = self.stop_finished() {
                return code;
            }
            let mut fds = [
                PollFd::new(self.sigfd.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.rx.fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::from(100u16)) {
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
                Signal::SIGTERM => self.begin_stop(true, 0),
                Signal::SIGINT | Signal::SIGQUIT => self.begin_stop(false, 0),
                Signal::SIGTTIN => {
                    if self.phase == Phase::Running {
                        self.target += 1;
                        tracing::info!("Increasing workers to {}", self.target);
                    }
                }
                Signal::SIGTTOU => {
                    if self.phase == Phase::Running && self.target > 1 {
                        self.target -= 1;
                        tracing::info!("Decreasing workers to {}", self.target);
                        self.retire_extra();
                    }
                }
                Signal::SIGUSR1 => {
                    crate::logging::reopen();
                    self.signal_all(Signal::SIGUSR1);
                }
                Signal::SIGHUP => {
                    tracing::warn!("HUP (reload) is not supported yet; ignoring it");
                }
                Signal::SIGUSR2 => {
                    tracing::warn!("USR2 (binary upgrade) is not supported yet; ignoring it");
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
                if w.state == WState::Booting {
                    w.state = WState::Serving;
                }
                self.maybe_announce_ready();
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
                tracing::error!("Worker (pid:{pid}) failed to boot: {reason}");
                if self.phase == Phase::Running {
                    tracing::error!(
                        "Reason: the app `{}` failed to load: {reason}",
                        self.cfg.app_spec()
                    );
                    self.begin_stop(false, EXIT_APP_LOAD);
                }
            }
        }
    }

    fn maybe_announce_ready(&mut self) {
        if self.ready_announced || self.phase != Phase::Running {
            return;
        }
        let serving = self
            .workers
            .values()
            .filter(|w| w.state == WState::Serving)
            .count();
        if serving as u32 >= self.target {
            self.ready_announced = true;
            tracing::info!("Ready: {serving} workers serving");
        }
    }

    /// Workers that count towards the target (not leaving).
    fn active(&self) -> usize {
        self.workers
            .values()
            .filter(|w| matches!(w.state, WState::Booting | WState::Serving))
            .count()
    }

    fn spawn_missing(&mut self) {
        if self.phase != Phase::Running {
            return;
        }
        while (self.active() as u32) < self.target {
            if !self.spawn() {
                break;
            }
        }
    }

    fn spawn(&mut self) -> bool {
        let master_pid = std::process::id() as i32;
        // SAFETY: the master is single-threaded, so the child starts from a consistent state.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => worker::run(worker::Spawn {
                cfg: &self.cfg,
                listeners: &self.listeners,
                ipc: &self.tx,
                close_fds: vec![self.sigfd.as_raw_fd(), self.rx.fd().as_raw_fd()],
                argv: &self.argv,
                master_pid,
            }),
            Ok(ForkResult::Parent { child }) => {
                tracing::info!("Booting worker with pid: {child}");
                self.workers.insert(
                    child.as_raw(),
                    Worker {
                        state: WState::Booting,
                        alive_ns: monotonic_ns(),
                        busy_since: 0,
                        requests: 0,
                        spawned: Instant::now(),
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

    /// TTOU: the oldest serving workers beyond the target are stopped gracefully.
    fn retire_extra(&mut self) {
        let mut serving: Vec<(Instant, i32)> = self
            .workers
            .iter()
            .filter(|(_, w)| matches!(w.state, WState::Booting | WState::Serving))
            .map(|(p, w)| (w.spawned, *p))
            .collect();
        serving.sort();
        let extra = serving.len().saturating_sub(self.target as usize);
        for (_, pid) in serving.into_iter().take(extra) {
            if let Some(w) = self.workers.get_mut(&pid) {
                w.state = WState::Stopping;
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
        }
    }

    fn signal_all(&self, sig: Signal) {
        for pid in self.workers.keys() {
            let _ = kill(Pid::from_raw(*pid), sig);
        }
    }

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
        match self.phase {
            Phase::Stopping {
                deadline: d,
                code: c,
            } => {
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
            Phase::Running => {}
        }
        self.phase = Phase::Stopping { deadline, code };
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

    fn reap(&mut self) {
        loop {
            let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(s) => s,
            };
            let Some(pid) = status.pid() else { continue };
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
        match status {
            WaitStatus::Exited(_, 0) if leaving => {}
            WaitStatus::Exited(_, code @ (EXIT_APP_LOAD | EXIT_BOOT_ERROR))
                if w.state == WState::Booting =>
            {
                if self.phase == Phase::Running {
                    tracing::error!(
                        "Worker (pid:{pid}) exited with code {code}: the app failed to load"
                    );
                    self.begin_stop(false, code);
                }
            }
            WaitStatus::Exited(_, code) => {
                tracing::error!("Worker (pid:{pid}) exited with code {code}");
            }
            WaitStatus::Signaled(_, Signal::SIGKILL, _) if !by_us => {
                tracing::error!("Worker (pid:{pid}) was sent SIGKILL! Perhaps out of memory?");
            }
            WaitStatus::Signaled(_, sig, _) if by_us || leaving => {
                tracing::info!("Worker (pid:{pid}) was stopped with {}", sig.as_str());
            }
            WaitStatus::Signaled(_, sig, _) => {
                tracing::error!(
                    "Worker (pid:{pid}) was terminated by signal {}",
                    sig.as_str()
                );
                if w.state == WState::Booting
                    && !self.ready_announced
                    && self.phase == Phase::Running
                {
                    tracing::error!("Reason: a worker died while loading the app");
                    self.begin_stop(false, EXIT_BOOT_ERROR);
                }
            }
            _ => {}
        }
    }

    /// Kills workers silent for longer than `--timeout` (SIGABRT for a stack dump, then SIGKILL).
    fn check_timeouts(&mut self) {
        let now = Instant::now();
        let now_ns = monotonic_ns();
        let limit_ns = self.cfg.timeout.saturating_mul(1_000_000_000);
        for (pid, w) in self.workers.iter_mut() {
            match w.state {
                WState::Aborting(at) => {
                    if now >= at && !w.killed_by_us {
                        w.killed_by_us = true;
                        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
                    }
                }
                _ if self.cfg.timeout == 0 || w.killed_by_us => {}
                WState::Stopping | WState::Retiring => {}
                WState::Booting | WState::Serving => {
                    let mark = if w.busy_since != 0 {
                        w.alive_ns.min(w.busy_since)
                    } else {
                        w.alive_ns
                    };
                    if now_ns.saturating_sub(mark) > limit_ns {
                        tracing::error!(target: CRITICAL, "WORKER TIMEOUT (pid:{pid})");
                        w.state = WState::Aborting(now + ABORT_GRACE);
                        let _ = kill(Pid::from_raw(*pid), Signal::SIGABRT);
                    }
                }
            }
        }
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

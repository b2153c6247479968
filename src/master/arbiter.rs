//! The master's loop and its signal handlers, one `handle_<signal>` each (the shape of
//! Gunicorn's `arbiter.py`), and the one [`Lifecycle`] that says what the master is doing.
//!
//! Each turn of the loop: fork the workers that are missing, finish a reload whose generation
//! serves, exit if a stop is complete, keep systemd informed, then sleep in `poll()` on the
//! signalfd and the workers' pipe, and handle what arrived: signals, worker messages, exited
//! children, timeouts.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::Startup;
use super::announce::Announcer;
use super::generation::Generation;
use super::reload::{self, Reload};
use super::upgrade::{self, Successor};
use super::workers::{Workers, describe, fork_worker};
use crate::exit::EXIT_FAILURE;
use crate::ipc::{self, Msg};
use crate::metrics::{self, Book, Endpoint, MasterView, Restart};
use crate::pidfile::PidFile;
use crate::sockets::Listener;
use crate::worker::{self, EXIT_APP_LOAD, EXIT_BOOT_ERROR};

/// Signals the master handles (all blocked, and read from its signalfd).
pub(super) const SIGNALS: [Signal; 10] = [
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
/// How long a fast stop (INT/QUIT) waits before SIGKILL.
const FAST_STOP: Duration = Duration::from_secs(2);
/// Longest sleep of the loop.
const TICK: Duration = Duration::from_millis(100);

/// What the master is doing. Each state carries what only it needs; `hup` is a reload asked
/// for while another operation runs, done when that operation ends.
enum Lifecycle {
    /// The first generation boots: `READY=1` has not been sent.
    Booting { hup: bool },
    /// The current generation serves (worker replacements aside).
    Serving,
    /// HUP: the next generation boots beside the current one.
    Reloading { reload: Box<Reload>, hup: bool },
    /// USR2: a successor master runs, not in charge yet. A reload asked for meanwhile is done
    /// here if the upgrade fails, or passed on to the successor when it takes over.
    /// `reload`: it is a HUP with `--preload` (a new master loads the new code), which systemd
    /// was told about (`RELOADING=1`).
    Upgrading {
        successor: Successor,
        hup: bool,
        reload: bool,
    },
    /// The workers were told to stop; SIGKILL at `deadline`; exit with `code` when all are gone.
    /// `successor`: the master that took over (its sockets and pid file are left to it).
    Stopping {
        deadline: Instant,
        code: i32,
        successor: Option<Pid>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// TERM: in-flight requests finish within `--graceful-timeout`.
    Graceful,
    /// INT, QUIT, or a worker that cannot load the app.
    Fast,
}

/// Which generation a worker is forked for.
#[derive(Clone, Copy)]
enum Which {
    Current,
    /// The one a reload boots.
    Next,
}

pub(super) struct Master {
    startup: Startup,
    /// The generation in charge; its configuration is the master's.
    current: Generation,
    /// The listeners the master holds (not those a reload in progress opened: see `Reload`).
    listeners: Vec<Listener>,
    workers: Workers,
    life: Lifecycle,
    sigfd: SignalFd,
    rx: ipc::Receiver,
    tx: ipc::Sender,
    pidfile: Option<PidFile>,
    systemd: Announcer,
    /// "ok at 12:00:00" / "failed at 12:00:00: why", for `STATUS=`.
    last_reload: Option<String>,
    /// The metrics book (and the shared region, whose header also carries the readiness the
    /// health path answers with), and the `--metrics-bind` listener.
    book: Book,
    metrics: Option<Endpoint>,
    /// TERM arrived with `--drain-delay`: the health path answers 503, and the graceful stop
    /// begins at this instant.
    drain_at: Option<Instant>,
    /// The `server` object of the hooks, and the master-side hooks.
    hooks: crate::hooks::Server,
    statsd: super::statsd::MasterStatsd,
}

/// What `master::run` opened before the loop starts.
pub(super) struct Opened {
    pub listeners: Vec<Listener>,
    pub sigfd: SignalFd,
    pub rx: ipc::Receiver,
    pub tx: ipc::Sender,
    pub pidfile: Option<PidFile>,
    pub book: Book,
    pub metrics: Option<Endpoint>,
}

fn hms() -> String {
    chrono::Local::now().format("%H:%M:%S").to_string()
}

impl Master {
    pub fn new(
        startup: Startup,
        current: Generation,
        opened: Opened,
        systemd: Announcer,
        hooks: crate::hooks::Server,
    ) -> Master {
        Master {
            startup,
            current,
            listeners: opened.listeners,
            workers: Workers::new(),
            life: Lifecycle::Booting { hup: false },
            sigfd: opened.sigfd,
            rx: opened.rx,
            tx: opened.tx,
            pidfile: opened.pidfile,
            systemd,
            last_reload: None,
            book: opened.book,
            metrics: opened.metrics,
            drain_at: None,
            hooks,
            statsd: super::statsd::MasterStatsd::new(),
        }
    }

    /// Supervises until the master stops; returns the exit code. Sockets ferricorn created and
    /// the pid file are removed on the way out (unless a successor took them over).
    pub fn run(mut self) -> i32 {
        let mut code = self.supervise();
        tracing::info!("Shutting down: Master");
        for l in std::mem::take(&mut self.listeners) {
            l.close_and_unlink();
        }
        if let Some(m) = self.metrics.take() {
            m.close();
        }
        if let Some(p) = self.pidfile.take() {
            p.remove();
        }
        let state = crate::hooks::State {
            cfg: &self.current.cfg,
            num_workers: self.current.workers,
        };
        if self.hooks.call(&state, "on_exit").is_err() && code == 0 {
            code = EXIT_FAILURE;
        }
        code
    }

    /// What `server` shows of the master now.
    fn state(&self) -> crate::hooks::State<'_> {
        crate::hooks::State {
            cfg: &self.current.cfg,
            num_workers: self.current.workers,
        }
    }

    /// A master-side hook raised in the loop: Gunicorn's main loop stops the server
    /// ("Unhandled exception in main loop"); so does this one (fast, exit 1).
    fn hook_failed(&mut self, why: &str) {
        tracing::error!("Reason: {why}; stopping");
        self.begin_stop(Stop::Fast, EXIT_FAILURE);
    }

    fn supervise(&mut self) -> i32 {
        loop {
            self.spawn_missing();
            self.progress_reload();
            if let Some(code) = self.stop_finished() {
                return code;
            }
            self.keep_systemd_informed();
            let workers = self.workers.active(self.current.number);
            self.statsd
                .tick(&self.current.cfg, workers, &self.listeners);
            let mut fds = vec![
                PollFd::new(self.sigfd.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.rx.fd(), PollFlags::POLLIN),
            ];
            if let Some(m) = &self.metrics {
                fds.extend(m.interest().into_iter().map(|(fd, ev)| PollFd::new(fd, ev)));
            }
            let ms = u16::try_from(self.next_wakeup().as_millis()).unwrap_or(u16::MAX);
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    tracing::error!("poll failed: {e}");
                    return 1;
                }
            }
            self.dispatch_signals();
            self.handle_messages();
            self.reap();
            self.enforce_timeouts();
            self.serve_metrics();
            self.end_drain_delay();
        }
    }

    /// Answers scrapes (non-blocking: whatever can be done now).
    fn serve_metrics(&mut self) {
        let Some(endpoint) = &mut self.metrics else {
            return;
        };
        let (book, workers, threads) = (&self.book, &self.workers, self.current.cfg.threads);
        endpoint.service(|| {
            let by_state = workers.by_state();
            let serving = by_state
                .iter()
                .find(|(s, _)| *s == "serving")
                .map_or(0, |(_, n)| *n);
            metrics::render(book.snapshot(MasterView {
                workers: by_state,
                python_threads: serving * u64::from(threads),
            }))
        });
    }

    /// `--drain-delay` has passed since TERM: the graceful stop begins.
    fn end_drain_delay(&mut self) {
        if let Some(at) = self.drain_at
            && Instant::now() >= at
        {
            self.drain_at = None;
            self.begin_stop(Stop::Graceful, 0);
        }
    }

    /// Watchdog, `EXTEND_TIMEOUT_USEC=` while booting or reloading, `STATUS=`. Not once a
    /// successor took over: systemd hears from it now.
    fn keep_systemd_informed(&mut self) {
        if let Lifecycle::Stopping {
            successor: Some(_), ..
        } = self.life
        {
            return;
        }
        let extending = matches!(
            self.life,
            Lifecycle::Booting { .. } | Lifecycle::Reloading { .. }
        );
        let status = self.status_text();
        self.systemd.tick(extending, status);
    }

    fn next_wakeup(&self) -> Duration {
        let mut t = TICK;
        for at in [
            self.systemd.next_due(),
            self.drain_at,
            self.metrics.as_ref().and_then(Endpoint::next_deadline),
        ]
        .into_iter()
        .flatten()
        {
            t = t.min(at.saturating_duration_since(Instant::now()));
        }
        t.max(Duration::from_millis(1))
    }

    // ---- signals -----------------------------------------------------------------------------

    fn dispatch_signals(&mut self) {
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
                Signal::SIGHUP => self.handle_hup(),
                Signal::SIGTERM => self.handle_term(),
                Signal::SIGINT => self.handle_int(),
                Signal::SIGQUIT => self.handle_quit(),
                Signal::SIGUSR1 => self.handle_usr1(),
                Signal::SIGUSR2 => self.handle_usr2(),
                Signal::SIGTTIN => self.handle_ttin(),
                Signal::SIGTTOU => self.handle_ttou(),
                Signal::SIGCHLD => self.handle_chld(),
                Signal::SIGWINCH => self.handle_winch(),
                _ => {}
            }
        }
    }

    /// Reload: a new generation with the configuration read again; the old one stops once the
    /// new one serves in full.
    fn handle_hup(&mut self) {
        if self.drain_at.is_some() {
            tracing::info!("HUP ignored: the server is stopping (--drain-delay)");
            return;
        }
        match &mut self.life {
            Lifecycle::Serving => self.reload_now(),
            Lifecycle::Booting { hup } => {
                tracing::info!("The workers are booting; the reload will follow");
                *hup = true;
            }
            Lifecycle::Reloading { hup, .. } => {
                tracing::info!("A reload is in progress; another one will follow it");
                *hup = true;
            }
            Lifecycle::Upgrading { hup, .. } => {
                tracing::info!("An upgrade is in progress; the reload will follow it");
                *hup = true;
            }
            Lifecycle::Stopping { .. } => {}
        }
    }

    /// Graceful stop; or, while a successor (USR2) runs, the successor took over.
    fn handle_term(&mut self) {
        // Only waitpid tells a live successor from a dead one (a zombie answers kill(pid, 0)):
        // reap first, which ends the upgrade if the successor has exited.
        self.reap();
        if let Lifecycle::Upgrading { successor, hup, .. } = &self.life {
            let (pid, hup) = (successor.pid(), *hup);
            self.hand_over(pid, hup);
            return;
        }
        let delay = self.current.cfg.drain_delay;
        if delay > 0 && self.drain_at.is_none() && !matches!(self.life, Lifecycle::Stopping { .. })
        {
            // Still accepting and serving; only the health path says we are leaving.
            metrics::set_draining(true);
            self.systemd.stopping();
            self.drain_at = Some(Instant::now() + Duration::from_secs(delay));
            tracing::info!(
                "Draining: the health path answers 503; the workers stop accepting in {delay} s \
                 (--drain-delay)"
            );
        } else {
            self.begin_stop(Stop::Graceful, 0);
        }
    }

    /// Fast stop.
    fn handle_int(&mut self) {
        self.begin_stop(Stop::Fast, 0);
    }

    /// Fast stop.
    fn handle_quit(&mut self) {
        self.begin_stop(Stop::Fast, 0);
    }

    /// Reopen the logs, here and in every worker (logrotate).
    fn handle_usr1(&mut self) {
        crate::logging::reopen();
        self.workers.signal_all(Signal::SIGUSR1);
    }

    /// Upgrade: start the executable again as a successor master on the same sockets.
    fn handle_usr2(&mut self) {
        if !matches!(self.life, Lifecycle::Serving) || self.drain_at.is_some() {
            tracing::warn!(
                "USR2 ignored: the master is not in a steady state (starting, reloading, upgrading or stopping)"
            );
            return;
        }
        if let Err(e) = self.start_successor(false) {
            tracing::error!("Upgrade failed: {e}");
            self.book.upgrade(false);
        }
    }

    /// HUP with `--preload`: the app lives in the master, so new code needs a new master. It
    /// is started as USR2 starts one (same sockets, `MAINPID=`), and takes over once its
    /// workers serve; if it fails, this one keeps serving and the reload is refused.
    fn reexec_for_reload(&mut self) {
        self.systemd.reloading();
        tracing::info!("Reloading with --preload: starting a new master to load the new code");
        if let Err(e) = self.start_successor(true) {
            self.reload_failed(&format!("cannot start a new master: {e}"), false);
        }
    }

    /// Forks and execs the successor master (`pre_exec(server)` runs in it before the exec).
    fn start_successor(&mut self, reload: bool) -> Result<(), String> {
        let program = upgrade::Program {
            exe: &self.startup.exe,
            argv: &self.startup.argv,
            cwd: &self.startup.start_cwd,
        };
        let cfg = &self.current.cfg;
        let state = crate::hooks::State {
            cfg,
            num_workers: self.current.workers,
        };
        let hooks = &self.hooks;
        let mut pre_exec = || hooks.call(&state, "pre_exec").is_ok();
        let before_exec: Option<&mut dyn FnMut() -> bool> =
            if crate::hooks::defined(cfg, "pre_exec") {
                Some(&mut pre_exec)
            } else {
                None
            };
        let successor = upgrade::start(
            &program,
            &self.listeners,
            self.metrics.as_ref().map(Endpoint::listener),
            &self.current.env,
            self.systemd.env(),
            before_exec,
        )?;
        tracing::info!(
            "Upgrading: started a new master (pid {}) from {}",
            successor.pid(),
            self.startup.exe.display()
        );
        self.life = Lifecycle::Upgrading {
            successor,
            hup: false,
            reload,
        };
        Ok(())
    }

    /// One worker more.
    fn handle_ttin(&mut self) {
        if matches!(self.life, Lifecycle::Stopping { .. }) {
            return;
        }
        self.current.workers += 1;
        if let Lifecycle::Reloading { reload, .. } = &mut self.life {
            reload.generation.workers += 1;
        }
        tracing::info!("Increasing workers to {}", self.current.workers);
        let old = self.current.workers - 1;
        if let Err(e) = self.hooks.nworkers_changed(&self.state(), Some(old)) {
            self.hook_failed(&e);
        }
    }

    /// One worker fewer (never below one): the oldest beyond the number stops gracefully.
    fn handle_ttou(&mut self) {
        if matches!(self.life, Lifecycle::Stopping { .. }) || self.current.workers <= 1 {
            return;
        }
        self.current.workers -= 1;
        if let Lifecycle::Reloading { reload, .. } = &mut self.life {
            reload.generation.workers = reload.generation.workers.saturating_sub(1).max(1);
        }
        tracing::info!("Decreasing workers to {}", self.current.workers);
        let old = self.current.workers + 1;
        if let Err(e) = self.hooks.nworkers_changed(&self.state(), Some(old)) {
            self.hook_failed(&e);
        }
        for pid in self
            .workers
            .beyond(self.current.number, self.current.workers)
        {
            self.workers.stop(pid, Signal::SIGTERM);
        }
    }

    /// A child exited (also reaped every turn of the loop).
    fn handle_chld(&mut self) {
        self.reap();
    }

    /// Ignored (Gunicorn stops the workers on WINCH only when daemonized).
    fn handle_winch(&mut self) {}

    // ---- worker messages ---------------------------------------------------------------------

    fn handle_msg(&mut self, pid: Pid, msg: Msg) {
        match msg {
            Msg::Booted => {
                self.book.booted(pid.as_raw());
                if self.workers.booted(pid).is_some() {
                    self.maybe_ready();
                }
            }
            Msg::Heartbeat {
                busy_since,
                requests,
            } => self.workers.heartbeat(pid, busy_since, requests),
            Msg::Retiring { requests } => self.workers.retiring(pid, requests),
            Msg::SourceChanged(path) => {
                // --reload: one report starts one reload. Every worker of a generation watches
                // the same files, so only a worker of the generation in charge (or of the one
                // a reload boots, which saw a change after it imported) counts.
                let Some(generation) = self.workers.get(pid).map(|w| w.generation) else {
                    return;
                };
                let counts = match &self.life {
                    Lifecycle::Serving | Lifecycle::Booting { .. } => {
                        generation == self.current.number
                    }
                    Lifecycle::Reloading { reload, .. } => generation == reload.generation.number,
                    _ => false,
                };
                if counts {
                    tracing::info!("Worker (pid:{pid}): {path} modified; reloading (--reload)");
                    self.handle_hup();
                }
            }
            Msg::BootFailed(reason) => {
                let Some(generation) = self.workers.get(pid).map(|w| w.generation) else {
                    return;
                };
                tracing::error!("Worker (pid:{pid}) failed to boot: {reason}");
                if self.next_generation() == Some(generation) {
                    self.abort_reload(&format!("the app failed to load: {reason}"));
                } else if generation == self.current.number
                    && !matches!(self.life, Lifecycle::Stopping { .. })
                {
                    // A worker of an abandoned generation (a reload that already failed, whose
                    // other workers are still being stopped) says nothing about the serving one.
                    tracing::error!(
                        "Reason: the app `{}` failed to load: {reason}",
                        self.current.cfg.app_spec()
                    );
                    self.begin_stop(Stop::Fast, EXIT_APP_LOAD);
                }
            }
        }
    }

    /// `READY=1` once the first generation serves in full.
    fn maybe_ready(&mut self) {
        let Lifecycle::Booting { hup } = self.life else {
            return;
        };
        let serving = self.workers.serving(self.current.number);
        if serving < self.current.workers {
            return;
        }
        self.life = Lifecycle::Serving;
        tracing::info!("Ready: {serving} workers serving");
        let status = self.status_text();
        self.systemd.announce_ready(status);
        if let Some(old) = self.startup.predecessor.take() {
            tracing::info!("Taking over from the previous master (pid {old})");
            let _ = kill(Pid::from_raw(old), Signal::SIGTERM);
            self.book.upgrade(true);
            if let Some(m) = &mut self.metrics {
                m.active = true;
            }
        }
        if hup {
            self.reload_now();
        }
    }

    // ---- workers -----------------------------------------------------------------------------

    /// The generation a reload in progress boots.
    fn next_generation(&self) -> Option<u64> {
        match &self.life {
            Lifecycle::Reloading { reload, .. } => Some(reload.generation.number),
            _ => None,
        }
    }

    fn spawn_missing(&mut self) {
        if matches!(self.life, Lifecycle::Stopping { .. }) {
            return;
        }
        while self.workers.active(self.current.number) < self.current.workers {
            if !self.spawn(Which::Current) {
                return;
            }
        }
        while let Lifecycle::Reloading { reload, .. } = &self.life
            && self.workers.active(reload.generation.number) < reload.generation.workers
        {
            if !self.spawn(Which::Next) {
                return;
            }
        }
    }

    /// Forks one worker of a generation.
    fn spawn(&mut self, which: Which) -> bool {
        let close_metrics = self
            .metrics
            .as_ref()
            .map(Endpoint::raw_fds)
            .unwrap_or_default();
        let (generation, opened): (&Generation, &[Listener]) = match (&self.life, which) {
            (Lifecycle::Reloading { reload, .. }, Which::Next) => {
                (&reload.generation, reload.opened())
            }
            (Lifecycle::Reloading { reload, .. }, Which::Current) => {
                (&self.current, reload.opened())
            }
            (_, Which::Current) => (&self.current, &[]),
            (_, Which::Next) => return false,
        };
        let (serve, mut close_fds) = generation.split(self.listeners.iter().chain(opened));
        close_fds.extend(self.master_fds());
        close_fds.extend(close_metrics);
        let spawn = worker::Spawn {
            cfg: &generation.cfg,
            listeners: &serve,
            ipc: &self.tx,
            close_fds,
            argv: &self.startup.argv,
            master_pid: std::process::id() as i32,
            identity: generation.identity.as_ref(),
            cwd: &generation.cwd,
            env: &generation.env,
        };
        let number = generation.number;
        let state = crate::hooks::State {
            cfg: &self.current.cfg,
            num_workers: self.current.workers,
        };
        if let Err(e) = self.hooks.pre_fork(&state, &generation.cfg) {
            self.hook_failed(&e);
            return false;
        }
        let slot = self.book.reserve();
        let memory = slot.map(|i| self.book.slot(i));
        let forked = fork_worker(|| {
            metrics::enter_slot(memory);
            worker::run(spawn)
        });
        if let Some(i) = slot {
            self.book
                .forked(i, forked.as_ref().ok().map(|p| p.as_raw()));
        }
        match forked {
            Ok(pid) => {
                tracing::info!("Booting worker with pid: {pid}");
                self.workers.insert(pid, number);
                self.hooks.forked(pid.as_raw());
                true
            }
            Err(e) => {
                tracing::error!("cannot fork a worker: {e}");
                false
            }
        }
    }

    /// Descriptors only the master uses, which a worker closes: the signalfd, the read end of
    /// the workers' pipe, the notification socket, the statsd socket.
    fn master_fds(&self) -> Vec<RawFd> {
        let mut fds = vec![self.sigfd.as_raw_fd(), self.rx.fd().as_raw_fd()];
        fds.extend(self.systemd.raw_fd());
        fds.extend(self.statsd.raw_fd());
        fds
    }

    fn reap(&mut self) {
        let mut exited = Vec::new();
        while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            match status.pid() {
                Some(pid) => exited.push((pid, status)),
                None => break,
            }
        }
        if exited.is_empty() {
            return;
        }
        // What a worker said before it exited (why it failed to boot, say) is in the pipe by
        // now: hear it before handling the exit.
        self.handle_messages();
        for (pid, status) in exited {
            self.on_exit(pid, status);
        }
    }

    fn handle_messages(&mut self) {
        for (pid, msg) in self.rx.drain() {
            self.handle_msg(Pid::from_raw(pid), msg);
        }
    }

    fn on_exit(&mut self, pid: Pid, status: WaitStatus) {
        if let Lifecycle::Upgrading {
            successor,
            hup,
            reload,
        } = &self.life
            && successor.pid() == pid
        {
            let (hup, reload) = (*hup, *reload);
            self.life = Lifecycle::Serving;
            let why = describe(status);
            tracing::error!("Upgrade failed: the new master (pid {pid}) {why}; still serving");
            if let Some(p) = &self.pidfile {
                p.reclaim();
            }
            if reload {
                // systemd was told RELOADING=1: READY=1 ends it.
                self.reload_failed(&format!("the new master {why}"), hup);
                return;
            }
            self.book.upgrade(false);
            self.last_reload = Some(format!("(upgrade) failed at {}: new master {why}", hms()));
            if hup {
                self.reload_now();
            }
            return;
        }
        self.book.exited(pid.as_raw());
        let Some(w) = self.workers.remove(pid) else {
            // A successor that took over, or a process we did not start: as PID 1 (in a
            // container) orphans of the app are reparented to the master, which reaps them.
            tracing::debug!("Reaped process {pid}, which is not a worker");
            return;
        };
        w.log_exit(pid, status);
        if !matches!(self.life, Lifecycle::Stopping { .. })
            && let Some(why) = w.restart_reason()
        {
            self.book.restart(why);
        }
        if let Err(e) = self.hooks.exited(&self.state(), pid.as_raw())
            && !matches!(self.life, Lifecycle::Stopping { .. })
        {
            self.hook_failed(&e);
            return;
        }
        if !w.died_booting() || matches!(self.life, Lifecycle::Stopping { .. }) {
            return;
        }
        // It died before it ever served.
        let in_reload = self.next_generation() == Some(w.generation);
        let booting = matches!(self.life, Lifecycle::Booting { .. });
        let code = match status {
            WaitStatus::Exited(_, c @ (EXIT_APP_LOAD | EXIT_BOOT_ERROR)) => c,
            _ if booting || in_reload => EXIT_BOOT_ERROR,
            _ => return,
        };
        if in_reload {
            self.abort_reload(&format!("a new worker {}", describe(status)));
        } else if w.generation == self.current.number && (booting || code == EXIT_APP_LOAD) {
            tracing::error!(
                "Reason: a worker could not load the app `{}`",
                self.current.cfg.app_spec()
            );
            self.begin_stop(Stop::Fast, code);
        }
    }

    /// Kills workers silent for longer than their generation's `--timeout`.
    fn enforce_timeouts(&mut self) {
        let next = match &self.life {
            Lifecycle::Reloading { reload, .. } => {
                Some((reload.generation.number, reload.generation.cfg.timeout))
            }
            _ => None,
        };
        let current = self.current.cfg.timeout;
        self.workers.enforce_timeouts(
            |generation| match next {
                Some((n, t)) if n == generation => t,
                _ => current,
            },
            ABORT_GRACE,
        );
    }

    // ---- reload (HUP) ------------------------------------------------------------------------

    /// A reload: a new generation, or with `--preload` a new master (the app lives in this
    /// one).
    fn reload_now(&mut self) {
        if self.current.cfg.preload_app {
            self.reexec_for_reload();
        } else {
            self.begin_reload();
        }
    }

    fn begin_reload(&mut self) {
        self.systemd.reloading();
        tracing::info!("Reloading the configuration");
        let now = reload::Current {
            sources: &self.startup.sources,
            start_cwd: &self.startup.start_cwd,
            generation: &self.current,
            listeners: &self.listeners,
            env_applied: &self.startup.env_applied,
        };
        match Reload::begin(&now) {
            Ok(r) => {
                if r.generation.cfg.metrics_bind != self.current.cfg.metrics_bind {
                    tracing::warn!(
                        "--metrics-bind changed: the master keeps its metrics listener until \
                         it restarts (or USR2 starts a new one)"
                    );
                }
                // Gunicorn's on_reload: the new configuration's, before its workers fork. An
                // exception refuses the reload (Gunicorn's master would die of it).
                let state = crate::hooks::State {
                    cfg: &r.generation.cfg,
                    num_workers: r.generation.workers,
                };
                if let Err(e) = self.hooks.call(&state, "on_reload") {
                    r.roll_back();
                    return self.reload_failed(&e, false);
                }
                tracing::info!(
                    "Starting generation {}: {} worker(s)",
                    r.generation.number,
                    r.generation.workers
                );
                self.life = Lifecycle::Reloading {
                    reload: Box::new(r),
                    hup: false,
                };
            }
            Err(e) => self.reload_failed(&e, false),
        }
    }

    /// Commits the reload once its generation serves in full, or refuses it at its deadline.
    fn progress_reload(&mut self) {
        let Lifecycle::Reloading { reload, .. } = &self.life else {
            return;
        };
        if Instant::now() > reload.deadline {
            return self.abort_reload("the new workers did not boot in time");
        }
        if self.workers.serving(reload.generation.number) < reload.generation.workers {
            return;
        }
        let Lifecycle::Reloading { reload, hup } =
            std::mem::replace(&mut self.life, Lifecycle::Serving)
        else {
            unreachable!("checked above")
        };
        let old = self.current.number;
        let old_workers = self.current.workers;
        self.current = reload.commit(&mut self.listeners);
        if let Err(e) = self
            .hooks
            .nworkers_changed(&self.state(), Some(old_workers))
        {
            return self.hook_failed(&e);
        }
        for (pid, _) in self.workers.of_generation(old) {
            self.workers.stop(pid, Signal::SIGTERM);
            self.book.restart(Restart::Reload);
        }
        self.book.reload(true);
        crate::proctitle::set(&format!(
            "ferricorn: master [{}]",
            self.current.cfg.proc_name()
        ));
        tracing::info!(
            "Reload complete: generation {} serving",
            self.current.number
        );
        self.last_reload = Some(format!("ok at {}", hms()));
        let status = self.status_text();
        self.systemd.announce_ready(status);
        if hup {
            self.reload_now();
        }
    }

    /// The reload's generation cannot serve: it is stopped and the reload rolled back.
    fn abort_reload(&mut self, why: &str) {
        let Lifecycle::Reloading { reload, hup } =
            std::mem::replace(&mut self.life, Lifecycle::Serving)
        else {
            return;
        };
        for (pid, booted) in self.workers.of_generation(reload.generation.number) {
            let sig = if booted {
                Signal::SIGTERM
            } else {
                Signal::SIGKILL
            };
            self.workers.stop(pid, sig);
        }
        reload.roll_back();
        self.reload_failed(why, hup);
    }

    fn reload_failed(&mut self, why: &str, hup: bool) {
        self.book.reload(false);
        tracing::error!("Reload failed: {why}; still serving with the previous configuration");
        self.last_reload = Some(format!("failed at {}: {why}", hms()));
        let status = self.status_text();
        self.systemd.announce_ready(status);
        if hup {
            self.reload_now();
        }
    }

    // ---- stopping ----------------------------------------------------------------------------

    fn begin_stop(&mut self, how: Stop, code: i32) {
        self.stop(how, code, None);
    }

    /// TERM while a successor (USR2) runs: it has taken over. Drain and leave the sockets and
    /// the pid file to it, and tell systemd nothing (the service is not stopping).
    fn hand_over(&mut self, successor: Pid, hup: bool) {
        tracing::info!("The new master (pid {successor}) took over; draining and exiting");
        if hup {
            tracing::info!("Passing the reload asked for during the upgrade to it");
            let _ = kill(successor, Signal::SIGHUP);
        }
        for l in self.listeners.iter_mut() {
            l.disown();
        }
        if let Some(m) = &mut self.metrics {
            m.hand_over();
        }
        self.stop(Stop::Graceful, 0, Some(successor));
    }

    /// Tells the workers to stop (TERM: graceful, QUIT: fast) and closes the listeners now. A
    /// fast stop may shorten a graceful one in progress; nothing lengthens a stop.
    fn stop(&mut self, how: Stop, code: i32, successor: Option<Pid>) {
        let wait = match how {
            Stop::Graceful => Duration::from_secs(self.current.cfg.graceful_timeout),
            Stop::Fast => FAST_STOP,
        };
        let deadline = Instant::now() + wait;
        if let Lifecycle::Stopping {
            deadline: d,
            code: c,
            ..
        } = &mut self.life
        {
            if how == Stop::Fast && deadline < *d {
                *d = deadline;
                *c = (*c).max(code);
                self.workers.signal_all(Signal::SIGQUIT);
            }
            return;
        }
        if successor.is_none() {
            self.systemd.stopping();
            // The host is leaving: its health path answers 503 from now on.
            metrics::set_draining(true);
        }
        self.drain_at = None;
        let before = std::mem::replace(
            &mut self.life,
            Lifecycle::Stopping {
                deadline,
                code,
                successor,
            },
        );
        if let Lifecycle::Reloading { reload, .. } = before {
            reload.roll_back();
        }
        self.workers.stop_all(match how {
            Stop::Graceful => Signal::SIGTERM,
            Stop::Fast => Signal::SIGQUIT,
        });
        for l in std::mem::take(&mut self.listeners) {
            l.close_and_unlink();
        }
    }

    /// During a stop: SIGKILL stragglers at the deadline; the exit code once all are gone.
    fn stop_finished(&mut self) -> Option<i32> {
        let Lifecycle::Stopping { deadline, code, .. } = self.life else {
            return None;
        };
        if self.workers.is_empty() {
            return Some(code);
        }
        if Instant::now() >= deadline {
            self.workers.kill_stragglers();
        }
        None
    }

    // ---- status ------------------------------------------------------------------------------

    fn status_text(&self) -> String {
        let reload = match &self.last_reload {
            Some(r) => format!("; last reload {r}"),
            None => String::new(),
        };
        let current = &self.current;
        match &self.life {
            Lifecycle::Stopping { .. } => {
                format!("Stopping: {} worker(s) draining", self.workers.len())
            }
            Lifecycle::Booting { .. } => format!(
                "Booting: {}/{} workers ready",
                self.workers.serving(current.number),
                current.workers
            ),
            Lifecycle::Reloading { reload: r, .. } => format!(
                "Reloading: generation {} booting ({}/{} ready), generation {} serving{reload}",
                r.generation.number,
                self.workers.serving(r.generation.number),
                r.generation.workers,
                current.number
            ),
            Lifecycle::Serving | Lifecycle::Upgrading { .. } => format!(
                "Serving: {} workers, generation {}, {} requests{reload}",
                self.workers.serving(current.number),
                current.number,
                self.workers.requests_total()
            ),
        }
    }
}

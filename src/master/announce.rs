//! Keeping systemd (or any supervisor that sets `NOTIFY_SOCKET`) informed: readiness, reloads,
//! stops, `STATUS=`, `EXTEND_TIMEOUT_USEC=` while booting, and the watchdog.
//!
//! Everything is sent from the master's loop: if the loop stalls, the watchdog stops.

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use crate::notify::{NotifyEnv, NotifyState};

/// `STATUS=` is refreshed at most this often (and whenever the state changes).
const STATUS_EVERY: Duration = Duration::from_secs(1);
/// While booting or reloading, `EXTEND_TIMEOUT_USEC` is sent this often...
const EXTEND_EVERY: Duration = Duration::from_secs(1);
/// ...asking for this much more time each time.
const EXTEND_BY: Duration = Duration::from_secs(5);

pub(super) struct Announcer {
    env: NotifyEnv,
    next_watchdog: Option<Instant>,
    next_status: Instant,
    last_status: String,
    next_extend: Instant,
}

impl Announcer {
    pub fn new(env: NotifyEnv) -> Announcer {
        let now = Instant::now();
        Announcer {
            next_watchdog: env.watchdog_every().map(|_| now),
            env,
            next_status: now,
            last_status: String::new(),
            next_extend: now,
        }
    }

    /// What the environment said (a USR2 successor is given the same).
    pub fn env(&self) -> &NotifyEnv {
        &self.env
    }

    /// The notification socket's descriptor, which workers close.
    pub fn raw_fd(&self) -> Option<RawFd> {
        self.env.notifier.as_ref().map(|n| n.raw_fd())
    }

    /// `READY=1` with this process as `MAINPID=` and the status: the first generation serves,
    /// a reload finished (or was refused and the previous generation serves on).
    pub fn announce_ready(&mut self, status: String) {
        self.env.send(&[
            NotifyState::Ready,
            NotifyState::MainPid(std::process::id()),
            NotifyState::Status(&status),
        ]);
        self.last_status = status;
        self.next_status = Instant::now() + STATUS_EVERY;
    }

    /// `RELOADING=1` with `MONOTONIC_USEC=` (as `Type=notify-reload` requires), on HUP.
    pub fn reloading(&self) {
        let mono = NotifyState::monotonic_usec_now().unwrap_or(NotifyState::MonotonicUsec(0));
        self.env.send(&[NotifyState::Reloading, mono]);
    }

    /// `STOPPING=1`: the service is going away (not sent when a successor takes over).
    pub fn stopping(&self) {
        self.env.send(&[NotifyState::Stopping]);
    }

    /// Called once per loop turn: the watchdog when due, `EXTEND_TIMEOUT_USEC=` while
    /// `extending` (booting, reloading), and `status` when it changed (at once when the phase
    /// changed, at most every second when only counts did).
    pub fn tick(&mut self, extending: bool, status: String) {
        let now = Instant::now();
        if let (Some(at), Some(every)) = (self.next_watchdog, self.env.watchdog_every())
            && now >= at
        {
            self.env.send(&[NotifyState::Watchdog]);
            let mut next = at + every;
            if next <= now {
                next = now + every;
            }
            self.next_watchdog = Some(next);
        }
        if extending && now >= self.next_extend {
            self.env
                .send(&[NotifyState::ExtendTimeoutUsec(EXTEND_BY.as_micros() as u32)]);
            self.next_extend = now + EXTEND_EVERY;
        }
        if status != self.last_status && (now >= self.next_status || self.urgent(&status)) {
            self.env.send(&[NotifyState::Status(&status)]);
            self.last_status = status;
            self.next_status = now + STATUS_EVERY;
        }
    }

    /// A change of phase (not just a request count) is reported at once.
    fn urgent(&self, status: &str) -> bool {
        let head = |s: &str| s.split(':').next().unwrap_or("").to_string();
        head(status) != head(&self.last_status) || !status.contains("requests")
    }

    /// When the loop must wake up next for the watchdog.
    pub fn next_due(&self) -> Option<Instant> {
        self.next_watchdog
    }
}

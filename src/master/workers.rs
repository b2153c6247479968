//! The worker table: every live worker by `Pid`, each with one [`State`], and the one function
//! that forks a worker ([`fork_worker`]).
//!
//! The table knows what was done to each worker (told to stop, timed out, killed) so that its
//! exit can be told apart from a crash, and whether it ever served, so that a worker dying while
//! it boots can be told apart from one dying later.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, getpid};

use crate::ipc::monotonic_ns;
use crate::logging::CRITICAL;
use crate::metrics::Restart;
use crate::worker::EXIT_BOOT_ERROR;

/// Forks a worker: the child runs `child` and exits with the code it returns. This is the only
/// place a worker is forked.
///
/// The child never returns into the caller: the master's frames (and the destructors they would
/// run, which signal every other worker) are copied into it but never resumed. A panic that
/// escapes `child` ends the child with [`EXIT_BOOT_ERROR`].
pub(crate) fn fork_worker(child: impl FnOnce() -> i32) -> nix::Result<Pid> {
    // The master's own code is single-threaded; python::fork runs CPython's fork protocol
    // around fork(2), so the child's interpreter is valid. The child leaves through `_exit`,
    // never through the master's code.
    match crate::python::fork()? {
        ForkResult::Parent { child } => Ok(child),
        ForkResult::Child => {
            let code = catch_unwind(AssertUnwindSafe(child)).unwrap_or(EXIT_BOOT_ERROR);
            // SAFETY: leaving the child without running the master's Rust or C exit handlers
            // (the worker has finalised Python itself).
            unsafe { libc::_exit(code) }
        }
    }
}

/// Where a worker is in its life, and what the master did to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// Forked; importing the app.
    Booting,
    /// Booted: accepting and serving.
    Serving,
    /// Reached `--max-requests` and is draining; already replaced.
    Retiring,
    /// Told by the master to stop (TERM or QUIT); `killed` once SIGKILL followed.
    Stopping { killed: bool },
    /// Silent for longer than `--timeout`: SIGABRT sent (Python prints every stack), SIGKILL
    /// due at `kill_at` (`None` once sent). `booted`: it had served before.
    TimedOut {
        booted: bool,
        kill_at: Option<Instant>,
    },
}

impl State {
    /// It served at some point.
    fn booted(self) -> bool {
        match self {
            State::Serving | State::Retiring => true,
            State::TimedOut { booted, .. } => booted,
            State::Booting | State::Stopping { .. } => false,
        }
    }

    /// It is expected to exit.
    fn leaving(self) -> bool {
        matches!(self, State::Retiring | State::Stopping { .. })
    }

    /// The master sent it a signal that ends it.
    fn signalled_by_us(self) -> bool {
        matches!(
            self,
            State::Stopping { killed: true } | State::TimedOut { .. }
        )
    }

    /// SIGKILL was sent already.
    fn killed(self) -> bool {
        matches!(
            self,
            State::Stopping { killed: true } | State::TimedOut { kill_at: None, .. }
        )
    }

    /// It counts towards its generation's number of workers.
    fn active(self) -> bool {
        matches!(self, State::Booting | State::Serving)
    }

    /// Its name in the metrics (`ferricorn_workers{state}`).
    fn name(self) -> &'static str {
        match self {
            State::Booting => "booting",
            State::Serving => "serving",
            State::Retiring => "retiring",
            State::Stopping { .. } => "stopping",
            State::TimedOut { .. } => "timed_out",
        }
    }
}

/// Every state's name, in the order the metrics list them.
const STATE_NAMES: [&str; 5] = ["booting", "serving", "retiring", "stopping", "timed_out"];

#[derive(Debug)]
pub(super) struct Worker {
    pub generation: u64,
    pub state: State,
    /// Monotonic ns of the last sign of life (spawn, boot, heartbeat).
    alive_ns: u64,
    /// Oldest request inside Python (monotonic ns), 0 if none.
    busy_since: u64,
    requests: u64,
    spawned: Instant,
}

impl Worker {
    /// It exited without having served and without being asked to: a boot failure.
    pub fn died_booting(&self) -> bool {
        !self.state.booted() && !self.state.leaving()
    }

    /// Why its exit makes the master replace it, for the metrics: it timed out, reached
    /// `--max-requests`, or ended without being asked to (a crash). None when it was told to
    /// stop (a reload's replacements are counted when the reload commits).
    pub fn restart_reason(&self) -> Option<Restart> {
        match self.state {
            State::TimedOut { .. } => Some(Restart::Timeout),
            State::Retiring => Some(Restart::MaxRequests),
            State::Booting | State::Serving => Some(Restart::Crash),
            State::Stopping { .. } => None,
        }
    }

    /// Logs how it ended, telling expected exits from crashes.
    pub fn log_exit(&self, pid: Pid, status: WaitStatus) {
        let leaving = self.state.leaving();
        match status {
            WaitStatus::Exited(_, 0) if leaving => {}
            WaitStatus::Signaled(_, Signal::SIGKILL, _) if !self.state.signalled_by_us() => {
                tracing::error!("Worker (pid:{pid}) was sent SIGKILL! Perhaps out of memory?");
            }
            WaitStatus::Signaled(_, sig, _) if self.state.signalled_by_us() || leaving => {
                tracing::info!("Worker (pid:{pid}) was stopped with {}", sig.as_str());
            }
            other => tracing::error!("Worker (pid:{pid}) {}", describe(other)),
        }
    }
}

/// How a process ended, for the log.
pub(super) fn describe(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exited with code {code}"),
        WaitStatus::Signaled(_, sig, _) => format!("was terminated by signal {}", sig.as_str()),
        other => format!("ended ({other:?})"),
    }
}

/// The live workers of every generation.
#[derive(Debug)]
pub(super) struct Workers {
    by_pid: BTreeMap<Pid, Worker>,
    /// Requests served by workers that have exited.
    retired_requests: u64,
    /// The master that owns the table (see `Drop`).
    owner: Pid,
}

impl Workers {
    pub fn new() -> Workers {
        Workers {
            by_pid: BTreeMap::new(),
            retired_requests: 0,
            owner: getpid(),
        }
    }

    pub fn insert(&mut self, pid: Pid, generation: u64) {
        self.by_pid.insert(
            pid,
            Worker {
                generation,
                state: State::Booting,
                alive_ns: monotonic_ns(),
                busy_since: 0,
                requests: 0,
                spawned: Instant::now(),
            },
        );
    }

    /// Removes an exited worker, keeping its request count.
    pub fn remove(&mut self, pid: Pid) -> Option<Worker> {
        let w = self.by_pid.remove(&pid)?;
        self.retired_requests += w.requests;
        Some(w)
    }

    pub fn get(&self, pid: Pid) -> Option<&Worker> {
        self.by_pid.get(&pid)
    }

    pub fn len(&self) -> usize {
        self.by_pid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_pid.is_empty()
    }

    /// `Booted`: it serves. Returns its generation.
    pub fn booted(&mut self, pid: Pid) -> Option<u64> {
        let w = self.by_pid.get_mut(&pid)?;
        w.alive_ns = monotonic_ns();
        match &mut w.state {
            s @ State::Booting => *s = State::Serving,
            State::TimedOut { booted, .. } => *booted = true,
            _ => {}
        }
        Some(w.generation)
    }

    pub fn heartbeat(&mut self, pid: Pid, busy_since: u64, requests: u64) {
        if let Some(w) = self.by_pid.get_mut(&pid) {
            w.alive_ns = monotonic_ns();
            w.busy_since = busy_since;
            w.requests = requests;
        }
    }

    /// `Retiring`: it drains after `--max-requests`; it no longer counts as one of the workers.
    pub fn retiring(&mut self, pid: Pid, requests: u64) {
        if let Some(w) = self.by_pid.get_mut(&pid) {
            w.requests = requests;
            if w.state.active() {
                w.state = State::Retiring;
            }
        }
    }

    /// Workers of `generation` that serve.
    pub fn serving(&self, generation: u64) -> u32 {
        self.count(|w| w.generation == generation && w.state == State::Serving)
    }

    /// Workers of `generation` that count towards its target (booting or serving).
    pub fn active(&self, generation: u64) -> u32 {
        self.count(|w| w.generation == generation && w.state.active())
    }

    fn count(&self, f: impl Fn(&Worker) -> bool) -> u32 {
        self.by_pid.values().filter(|w| f(w)).count() as u32
    }

    /// How many workers are in each state (every state listed, zeros included).
    pub fn by_state(&self) -> Vec<(&'static str, u64)> {
        STATE_NAMES
            .iter()
            .map(|n| {
                let count = self
                    .by_pid
                    .values()
                    .filter(|w| w.state.name() == *n)
                    .count();
                (*n, count as u64)
            })
            .collect()
    }

    pub fn requests_total(&self) -> u64 {
        self.retired_requests + self.by_pid.values().map(|w| w.requests).sum::<u64>()
    }

    /// Tells one worker to stop: TERM (graceful), QUIT (fast) or KILL. A worker that timed out
    /// stays timed out (its SIGKILL follows) unless this is the SIGKILL.
    pub fn stop(&mut self, pid: Pid, sig: Signal) {
        if let Some(w) = self.by_pid.get_mut(&pid) {
            if sig == Signal::SIGKILL || !matches!(w.state, State::TimedOut { .. }) {
                w.state = State::Stopping {
                    killed: sig == Signal::SIGKILL || w.state.killed(),
                };
            }
            let _ = kill(pid, sig);
        }
    }

    /// Tells every worker to stop with `sig`.
    pub fn stop_all(&mut self, sig: Signal) {
        let pids: Vec<Pid> = self.by_pid.keys().copied().collect();
        for pid in pids {
            self.stop(pid, sig);
        }
    }

    /// The workers of `generation` that have not been told to leave, with whether they booted.
    pub fn of_generation(&self, generation: u64) -> Vec<(Pid, bool)> {
        self.by_pid
            .iter()
            .filter(|(_, w)| w.generation == generation && !w.state.leaving())
            .map(|(p, w)| (*p, w.state.booted()))
            .collect()
    }

    /// The oldest active workers of `generation` beyond `keep` (TTOU).
    pub fn beyond(&self, generation: u64, keep: u32) -> Vec<Pid> {
        let mut active: Vec<(Instant, Pid)> = self
            .by_pid
            .iter()
            .filter(|(_, w)| w.generation == generation && w.state.active())
            .map(|(p, w)| (w.spawned, *p))
            .collect();
        active.sort();
        let extra = active.len().saturating_sub(keep as usize);
        active.into_iter().take(extra).map(|(_, p)| p).collect()
    }

    /// Sends `sig` to every worker without changing what it is doing (USR1).
    pub fn signal_all(&self, sig: Signal) {
        for pid in self.by_pid.keys() {
            let _ = kill(*pid, sig);
        }
    }

    /// A stop's deadline passed: SIGKILL every worker not killed yet.
    pub fn kill_stragglers(&mut self) {
        for (pid, w) in self.by_pid.iter_mut() {
            if !w.state.killed() {
                tracing::warn!("Worker (pid:{pid}) did not stop in time; sending SIGKILL");
                w.state = State::Stopping { killed: true };
                let _ = kill(*pid, Signal::SIGKILL);
            }
        }
    }

    /// Kills workers silent for longer than their generation's `--timeout` (seconds; 0: never):
    /// SIGABRT first, for the stack dump, SIGKILL `grace` later.
    pub fn enforce_timeouts(&mut self, timeout_of: impl Fn(u64) -> u64, grace: Duration) {
        let now = Instant::now();
        let now_ns = monotonic_ns();
        for (pid, w) in self.by_pid.iter_mut() {
            match w.state {
                State::TimedOut {
                    booted,
                    kill_at: Some(at),
                } if now >= at => {
                    w.state = State::TimedOut {
                        booted,
                        kill_at: None,
                    };
                    let _ = kill(*pid, Signal::SIGKILL);
                }
                State::Booting | State::Serving => {
                    let timeout = timeout_of(w.generation);
                    if timeout == 0 {
                        continue;
                    }
                    let mark = match w.busy_since {
                        0 => w.alive_ns,
                        busy => w.alive_ns.min(busy),
                    };
                    if now_ns.saturating_sub(mark) > timeout.saturating_mul(1_000_000_000) {
                        tracing::error!(target: CRITICAL, "WORKER TIMEOUT (pid:{pid})");
                        w.state = State::TimedOut {
                            booted: w.state == State::Serving,
                            kill_at: Some(now + grace),
                        };
                        let _ = kill(*pid, Signal::SIGABRT);
                    }
                }
                _ => {}
            }
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        // Never leave workers behind, whatever path ended the master. Only in the master: a
        // copy of the table in a child (which `fork_worker` never lets run its destructors)
        // must not touch its siblings.
        if getpid() != self.owner {
            return;
        }
        for pid in self.by_pid.keys() {
            let _ = kill(*pid, Signal::SIGKILL);
        }
        for pid in self.by_pid.keys() {
            let _ = waitpid(*pid, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_say_what_an_exit_means() {
        let booting = State::Booting;
        assert!(!booting.booted() && !booting.leaving() && booting.active());
        assert!(State::Serving.booted() && State::Serving.active());
        assert!(State::Retiring.leaving() && !State::Retiring.active());
        let stopping = State::Stopping { killed: false };
        assert!(stopping.leaving() && !stopping.signalled_by_us() && !stopping.killed());
        assert!(State::Stopping { killed: true }.killed());
        let timed_out = State::TimedOut {
            booted: false,
            kill_at: Some(Instant::now()),
        };
        assert!(timed_out.signalled_by_us() && !timed_out.killed() && !timed_out.booted());
    }
}

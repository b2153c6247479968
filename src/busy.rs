//! The record of how long each thread that runs the app has been busy: the worker's heartbeat
//! carries the oldest start, and the master's `--timeout` kills a worker stuck in one request.
//! Written by whatever calls the app (WSGI's pool threads and inline calls; an ASGI event loop),
//! read by the heartbeat.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::ipc::monotonic_ns;

/// When each Python thread (slot) entered the app, 0 when idle.
pub struct Busy {
    slots: Vec<AtomicU64>,
}

impl Busy {
    pub fn new(n: usize) -> Busy {
        Busy {
            slots: (0..n).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Marks `slot` busy until the guard is dropped (and counts the thread busy in the
    /// metrics meanwhile).
    pub fn enter(&self, slot: usize) -> BusyGuard<'_> {
        self.slots[slot].store(monotonic_ns(), Ordering::Relaxed);
        BusyGuard {
            busy: self,
            slot,
            _gauge: crate::metrics::Gauge::hold(crate::metrics::Held::PythonBusy),
        }
    }

    /// Marks `slot` busy since `since_ns` (monotonic) unless it is busy already: for a thread
    /// that is asked whether it answers rather than marking itself (an ASGI event loop, which
    /// is pinged and counts as busy from the ping until it answers).
    pub fn mark_since(&self, slot: usize, since_ns: u64) {
        let _ =
            self.slots[slot].compare_exchange(0, since_ns, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Marks `slot` idle.
    pub fn clear(&self, slot: usize) {
        self.slots[slot].store(0, Ordering::Relaxed);
    }

    /// Marks `slot` idle until the guard is dropped, and busy again from that moment: time a
    /// thread spends waiting for a client (one that reads its response slowly, a slow upload) is
    /// not time the app is stuck, and must not get the worker killed by `--timeout`.
    pub fn pause(&self, slot: usize) -> Paused<'_> {
        self.slots[slot].store(0, Ordering::Relaxed);
        Paused { busy: self, slot }
    }

    /// The start of the oldest call still running, or 0.
    pub fn oldest(&self) -> u64 {
        self.slots
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .filter(|&t| t != 0)
            .min()
            .unwrap_or(0)
    }
}

pub struct BusyGuard<'a> {
    busy: &'a Busy,
    slot: usize,
    _gauge: crate::metrics::Gauge,
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.busy.slots[self.slot].store(0, Ordering::Relaxed);
    }
}

pub struct Paused<'a> {
    busy: &'a Busy,
    slot: usize,
}

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        self.busy.slots[self.slot].store(monotonic_ns(), Ordering::Relaxed);
    }
}

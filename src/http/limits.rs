//! What one request may cost: head sizes (Gunicorn's `--limit-request-*`), the body's size
//! (`--limit-request-body`) and time (`--header-timeout`, `--body-timeout`, `--body-min-rate`),
//! and the per-worker budget of request-body bytes held in memory.
//!
//! The body deadline is Apache mod_reqtimeout's `body=T,MinRate=R` rule: a client gets T seconds,
//! plus one second for every R bytes it has sent, and never more than T seconds without a byte.
//! A trickle cannot defeat it (100 B/s against 500 B/s earns 0.2 s a second), a fast upload
//! earns all the time it needs, and a stall is cut after T seconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// A body is read up to this much before the app is called: a body this small (the usual form
/// post or JSON document), complete, and the first part of a larger one, so that a slow or
/// stalled upload costs no Python thread until it has sent this much.
pub const BUFFER_BODY: usize = 1024 * 1024;
/// Bodies up to this size are read without asking the worker's budget (a normal small POST
/// never waits behind uploads that hold the budget).
pub const SMALL_BODY: usize = 64 * 1024;
/// Most bytes decoded per read of a streamed body (one chunk of the channel to the app).
pub const BODY_CHUNK: usize = 64 * 1024;
/// Most unread body bytes discarded so that a connection can be kept after a reply that did not
/// read its request body; past that the connection is closed instead.
pub const DRAIN_MAX: u64 = 256 * 1024;
/// How long draining may take.
pub const DRAIN_TIME: Duration = Duration::from_secs(2);
/// Request-body bytes a worker holds in memory at once, over all its connections.
pub const WORKER_BODY_BUDGET: usize = 32 * 1024 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Request line bytes; 0 = no limit of its own (the worker maps Gunicorn's 0 to 8190).
    pub line: usize,
    pub fields: usize,
    /// One header field's bytes (`name: value`); 0 = unlimited.
    pub field_size: usize,
    /// Request body bytes; 0 = unlimited.
    pub body: u64,
    /// Time a client has to send a whole request head, from its first byte (from the accept for
    /// a new connection).
    pub header_timeout: Duration,
    /// Idle time between requests on a kept-alive connection; `None`: no keep-alive.
    pub keep_alive: Option<Duration>,
    /// The body deadline's base (and the longest silence while a body arrives).
    pub body_timeout: Duration,
    /// Bytes per second that earn one more second of body deadline; 0: no extension.
    pub body_min_rate: u64,
}

impl Limits {
    /// The largest head the limits allow (more buffered without an end of head is a 431).
    pub fn max_head_bytes(&self) -> usize {
        let line = if self.line == 0 { 8192 } else { self.line };
        let field = if self.field_size == 0 {
            65536
        } else {
            self.field_size
        };
        (line + 2 + self.fields * (field + 2) + 2).clamp(8192, 8 << 20)
    }

    #[cfg(test)]
    pub fn for_tests() -> Limits {
        Limits {
            line: 4094,
            fields: 100,
            field_size: 8190,
            body: 1 << 20,
            header_timeout: Duration::from_secs(5),
            keep_alive: Some(Duration::from_secs(2)),
            body_timeout: Duration::from_secs(20),
            body_min_rate: 500,
        }
    }
}

/// The body deadline of one request (see the module comment).
#[derive(Debug, Clone, Copy)]
pub struct BodyClock {
    start: Instant,
    last: Instant,
    received: u64,
    timeout: Duration,
    rate: u64,
}

impl BodyClock {
    pub fn new(l: &Limits) -> BodyClock {
        let now = Instant::now();
        BodyClock {
            start: now,
            last: now,
            received: 0,
            timeout: l.body_timeout,
            rate: l.body_min_rate,
        }
    }

    /// The same rules from now (a body that starts only after `100 Continue`).
    pub fn restarted(&self) -> BodyClock {
        let now = Instant::now();
        BodyClock {
            start: now,
            last: now,
            received: 0,
            ..*self
        }
    }

    /// Time spent waiting for something other than the client (the app, the budget) is not the
    /// client's: the clock is moved forward by it.
    pub fn pause(&mut self, d: Duration) {
        self.start += d;
        self.last += d;
    }

    pub fn got(&mut self, n: usize) {
        self.received += n as u64;
        self.last = Instant::now();
    }

    /// When the client has run out of time.
    pub fn deadline(&self) -> Instant {
        let earned = match self.rate {
            0 => Duration::from_secs(86400 * 365),
            r => Duration::from_secs_f64(self.received as f64 / r as f64),
        };
        (self.start + self.timeout + earned).min(self.last + self.timeout)
    }
}

/// The per-worker budget of request-body bytes in memory.
#[derive(Debug)]
pub struct Budget {
    held: AtomicUsize,
    limit: usize,
    freed: Notify,
}

impl Budget {
    pub fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget {
            held: AtomicUsize::new(0),
            limit,
            freed: Notify::new(),
        })
    }

    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Takes `n` bytes if they fit (or if nothing is held: one request always progresses).
    pub fn try_take(self: &Arc<Self>, n: usize) -> Option<Held> {
        let mut cur = self.held.load(Ordering::Relaxed);
        loop {
            if cur != 0 && cur + n > self.limit {
                return None;
            }
            match self
                .held
                .compare_exchange_weak(cur, cur + n, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    return Some(Held {
                        budget: self.clone(),
                        n,
                    });
                }
                Err(c) => cur = c,
            }
        }
    }

    /// Waits until `n` bytes fit.
    pub async fn take(self: &Arc<Self>, n: usize) -> Held {
        loop {
            let notified = self.freed.notified();
            if let Some(h) = self.try_take(n) {
                return h;
            }
            notified.await;
        }
    }
}

/// Bytes taken from a [`Budget`], given back on drop.
#[derive(Debug)]
pub struct Held {
    budget: Arc<Budget>,
    n: usize,
}

impl Held {
    /// Adds `other`'s bytes to this reservation.
    pub fn merge(&mut self, mut other: Held) {
        self.n += other.n;
        other.n = 0;
    }

    /// Gives back what is not needed (the part of a reservation that was not filled).
    pub fn shrink_to(&mut self, n: usize) {
        if n < self.n {
            self.budget.held.fetch_sub(self.n - n, Ordering::AcqRel);
            self.n = n;
            self.budget.freed.notify_waiters();
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.n > 0 {
            self.budget.held.fetch_sub(self.n, Ordering::AcqRel);
            self.budget.freed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_bounds_and_returns() {
        let b = Budget::new(100);
        let a = b.try_take(60).unwrap();
        assert!(b.try_take(60).is_none());
        let mut c = b.try_take(40).unwrap();
        c.shrink_to(10);
        assert_eq!(b.held(), 70);
        drop(a);
        drop(c);
        assert_eq!(b.held(), 0);
        // One request always progresses, whatever its size.
        assert!(b.try_take(1000).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_runs_out_of_time() {
        let l = Limits::for_tests();
        let mut c = BodyClock::new(&l);
        let t0 = Instant::now();
        // 100 bytes a second: earns 0.2 s per second, so the deadline is passed at 25 s.
        for s in 1..=30 {
            tokio::time::advance(Duration::from_secs(1)).await;
            c.got(100);
            if Instant::now() > c.deadline() {
                assert_eq!(s, 26, "expired after {s} s");
                return;
            }
        }
        panic!("never expired; deadline {:?}", c.deadline() - t0);
    }
}

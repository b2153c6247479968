//! What one request may cost: head sizes (Gunicorn's `--limit-request-*`), the body's size
//! (`--limit-request-body`) and time (`--header-timeout`, `--body-timeout`, `--body-min-rate`),
//! and the per-worker budget of request-body bytes held in memory.
//!
//! The body deadline is Apache mod_reqtimeout's `body=T,MinRate=R` rule with a cap: a client gets
//! T seconds, plus one second for every R bytes it sends, but never more than T seconds ahead of
//! now. It is a bucket of time: it holds at most T seconds, drains by one a second, and every R
//! bytes add one. So the body must keep arriving at R bytes a second on average over the last T
//! seconds or so: a trickle cannot defeat it (100 B/s against 500 B/s earns 0.2 s a second), a
//! fast upload is never cut however long it takes, a stall is cut after T seconds, and a burst
//! cannot buy time for a trickle after it (uncapped, Apache's first MiB would buy 35 minutes).

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
/// Bytes of a request head (the read buffer while it arrives, the head while its request runs)
/// a connection holds without asking the worker's head budget: any ordinary head fits.
pub const HEAD_FREE: usize = 32 * 1024;
/// Request-head bytes past [`HEAD_FREE`] a worker holds at once, over all its connections (the
/// limits allow heads of ~800 KiB; without this, a few hundred unfinished ones cost hundreds of
/// MiB). A head that would need more while it is spent is refused with 503.
pub const WORKER_HEAD_BUDGET: usize = 16 * 1024 * 1024;
/// Lingering close (nginx's `lingering_close`): when the server closes a connection whose
/// client may still be sending (an unread body, a refused head, pipelined bytes), it stops
/// writing, then reads and discards what arrives for at most this long, so that closing with
/// unread data (which makes the kernel send a reset and drop what was not yet delivered) does
/// not cut the response short.
pub const LINGER_TIME: Duration = Duration::from_secs(5);
/// The longest silence while lingering.
pub const LINGER_IDLE: Duration = Duration::from_secs(2);

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
    /// Longest time a write to the client may wait for it to read (nginx's `send_timeout`: the
    /// time between two successful writes, not for a whole response); `None`: no limit.
    pub send_timeout: Option<Duration>,
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
            send_timeout: Some(Duration::from_secs(30)),
        }
    }
}

/// The body deadline of one request (see the module comment).
#[derive(Debug, Clone, Copy)]
pub struct BodyClock {
    /// When the client runs out of time if no more bytes arrive.
    expires: Instant,
    timeout: Duration,
    rate: u64,
}

impl BodyClock {
    pub fn new(l: &Limits) -> BodyClock {
        BodyClock {
            expires: Instant::now() + l.body_timeout,
            timeout: l.body_timeout,
            rate: l.body_min_rate,
        }
    }

    /// The same rules from now (a body that starts only after `100 Continue`).
    pub fn restarted(&self) -> BodyClock {
        BodyClock {
            expires: Instant::now() + self.timeout,
            ..*self
        }
    }

    /// Time spent waiting for something other than the client (the app, the budget) is not the
    /// client's: the clock is moved forward by it.
    pub fn pause(&mut self, d: Duration) {
        self.expires += d;
    }

    /// `n` more bytes arrived: they earn `n / rate` seconds, up to `timeout` from now.
    pub fn got(&mut self, n: usize) {
        let now = Instant::now();
        let cap = now + self.timeout;
        if self.rate == 0 {
            // No rate: only silence is limited.
            self.expires = cap;
            return;
        }
        let earned = Duration::from_secs_f64(n as f64 / self.rate as f64);
        self.expires = (self.expires + earned).min(cap);
    }

    /// When the client has run out of time.
    pub fn deadline(&self) -> Instant {
        self.expires
    }

    /// The body's base timeout (also the longest wait for the worker's budget).
    pub fn timeout(&self) -> Duration {
        self.timeout
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

    #[tokio::test(start_paused = true)]
    async fn a_burst_buys_no_time_for_a_trickle_after_it() {
        let l = Limits::for_tests();
        let mut c = BodyClock::new(&l);
        // 1 MiB at once would earn 35 minutes at 500 B/s; the bucket holds 20 s.
        c.got(1 << 20);
        for s in 1..=120 {
            tokio::time::advance(Duration::from_secs(1)).await;
            if s % 15 == 0 {
                c.got(1);
            }
            if Instant::now() > c.deadline() {
                assert_eq!(s, 21, "expired after {s} s");
                return;
            }
        }
        panic!("a byte every 15 s after a burst was never cut");
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_upload_is_never_cut() {
        let l = Limits::for_tests();
        let mut c = BodyClock::new(&l);
        // 600 B/s for ten minutes: above the rate, so the bucket stays full.
        for _ in 0..600 {
            tokio::time::advance(Duration::from_secs(1)).await;
            assert!(Instant::now() <= c.deadline());
            c.got(600);
        }
    }
}

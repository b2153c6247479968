//! The memory the master shares with its workers: one anonymous `MAP_SHARED` mapping, made
//! by the master before it forks any worker, so every worker inherits it at the same address.
//!
//! It holds a [`Header`] (the host's readiness, read by the health path) and, when metrics are
//! on, one [`Slot`] per live worker: counters and gauges the worker increments with relaxed
//! atomics on its own slot only, and that the master reads when it is scraped. Nothing is
//! locked and nothing crosses a pipe: a request costs a few uncontended atomic adds, a scrape
//! never waits for a worker (nor for its Python threads).
//!
//! Slots are handed out by the master: [`Region::reserve`] before the fork, [`Region::bind`]
//! with the pid after it, and [`Region::release`] once the worker was reaped, when it can no
//! longer write: its counters are then folded into the master's retired totals
//! ([`super::book`]) and the slot is zeroed for the next worker.

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};

/// Request methods counted apart (`other` is every other method, PATCH included).
pub const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "CONNECT", "other",
];
/// Status classes: `1xx` … `5xx`.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// Upper bounds of the request duration histogram's buckets, in microseconds (then `+Inf`).
pub const BUCKETS_US: [u64; 13] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];
/// Statuses of the requests the HTTP layer refuses itself (then `other`).
pub const REJECT_STATUSES: [u16; 8] = [400, 408, 413, 414, 417, 431, 501, 505];
/// How many workers can have a slot at once (a reload runs two generations side by side):
/// 1024 slots of 640 bytes of address space; only the pages of slots in use are ever touched.
pub const SLOTS: usize = 1024;

/// Host-wide state the master sets and every worker reads.
#[repr(C, align(64))]
pub struct Header {
    /// The master is stopping (TERM): the health path answers 503.
    pub draining: AtomicU32,
}

/// One worker's counters. Counters only grow while the worker lives; gauges (`connections`,
/// `python_busy`, `python_queued`) go up and down; `started - Σ requests` is the number of
/// requests in flight.
#[repr(C, align(64))]
pub struct Slot {
    /// The worker that owns it (0: free; `u32::MAX`: reserved, being forked).
    pub pid: AtomicU32,
    /// Requests whose head was parsed (counted when the exchange starts).
    pub started: AtomicU64,
    /// Finished requests by [`METHODS`] and [`STATUS_CLASSES`].
    pub requests: [[AtomicU64; 5]; 8],
    /// Request durations, per bucket of [`BUCKETS_US`] (not cumulative; the last is `+Inf`).
    pub duration: [AtomicU64; 14],
    pub duration_sum_us: AtomicU64,
    pub request_body_bytes: AtomicU64,
    pub response_body_bytes: AtomicU64,
    /// Refused requests by [`REJECT_STATUSES`] (the last: any other status).
    pub rejected: [AtomicU64; 9],
    /// Health path answers: 200, 503.
    pub health: [AtomicU64; 2],
    pub connections: AtomicI64,
    /// Threads running the app right now, and requests waiting for one.
    pub python_busy: AtomicI64,
    pub python_queued: AtomicI64,
    /// How long the app's import took in this worker (µs), once it booted.
    pub import_us: AtomicU64,
}

const FREE: u32 = 0;
const RESERVED: u32 = u32::MAX;

/// The mapping: a header, then `slots` slots.
pub struct Region {
    header: &'static Header,
    slots: &'static [Slot],
}

impl Region {
    /// Maps the region (zeroed by the kernel). `slots` is 0 when metrics are off: the header
    /// alone (the health path's readiness).
    pub fn map(slots: usize) -> std::io::Result<Region> {
        let header_len = std::mem::size_of::<Header>().max(64);
        let len = header_len + slots * std::mem::size_of::<Slot>();
        // SAFETY: an anonymous shared mapping of `len` bytes; checked for failure.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the mapping is page-aligned, zero-filled (a valid state for atomics and
        // integers), never unmapped (it lives as long as the process), and only ever accessed
        // through atomics, from this process and the forked ones that share it.
        unsafe {
            let header = &*(p as *const Header);
            let first = (p as *const u8).add(header_len) as *const Slot;
            Ok(Region {
                header,
                slots: std::slice::from_raw_parts(first, slots),
            })
        }
    }

    pub fn header(&self) -> &'static Header {
        self.header
    }

    pub fn slots(&self) -> &'static [Slot] {
        self.slots
    }

    /// A free slot for the worker about to be forked (None when all are taken).
    pub fn reserve(&self) -> Option<usize> {
        self.slots.iter().position(|s| {
            s.pid
                .compare_exchange(FREE, RESERVED, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })
    }

    /// The fork failed: the reserved slot is free again.
    pub fn unreserve(&self, i: usize) {
        self.slots[i].pid.store(FREE, Ordering::Release);
    }

    /// The slot now belongs to `pid`.
    pub fn bind(&self, i: usize, pid: u32) {
        self.slots[i].pid.store(pid, Ordering::Release);
    }

    /// After the worker was reaped: zeroes the slot and frees it. Read it first.
    pub fn release(&self, i: usize) {
        self.slots[i].clear();
        self.slots[i].pid.store(FREE, Ordering::Release);
    }
}

fn zero(a: &[AtomicU64]) {
    for c in a {
        c.store(0, Ordering::Relaxed);
    }
}

impl Slot {
    fn clear(&self) {
        self.started.store(0, Ordering::Relaxed);
        for row in &self.requests {
            zero(row);
        }
        zero(&self.duration);
        zero(&self.rejected);
        zero(&self.health);
        for c in [
            &self.duration_sum_us,
            &self.request_body_bytes,
            &self.response_body_bytes,
            &self.import_us,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        for g in [&self.connections, &self.python_busy, &self.python_queued] {
            g.store(0, Ordering::Relaxed);
        }
    }

    /// Whether a worker owns it (not free, not only reserved).
    pub fn owner(&self) -> Option<u32> {
        match self.pid.load(Ordering::Acquire) {
            FREE | RESERVED => None,
            pid => Some(pid),
        }
    }
}

/// Index in [`BUCKETS_US`] of the bucket a duration falls in (`BUCKETS_US.len()`: `+Inf`).
#[inline]
pub fn bucket(us: u64) -> usize {
    BUCKETS_US
        .iter()
        .position(|&b| us <= b)
        .unwrap_or(BUCKETS_US.len())
}

/// Index in [`STATUS_CLASSES`] of a status.
#[inline]
pub fn status_class(status: u16) -> usize {
    ((status / 100) as usize).clamp(1, 5) - 1
}

/// Index in [`REJECT_STATUSES`] of a status (the last index: another status).
pub fn reject_index(status: u16) -> usize {
    REJECT_STATUSES
        .iter()
        .position(|&s| s == status)
        .unwrap_or(REJECT_STATUSES.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_shared_with_a_forked_child_and_recycled() {
        let r = Region::map(4).unwrap();
        let i = r.reserve().unwrap();
        assert_eq!(
            r.reserve(),
            Some(i + 1),
            "a reserved slot is not handed out twice"
        );
        r.unreserve(i + 1);
        // SAFETY: the child only touches atomics in the shared mapping, then _exits.
        match unsafe { libc::fork() } {
            0 => {
                r.slots()[i].started.fetch_add(7, Ordering::Relaxed);
                unsafe { libc::_exit(0) }
            }
            child => {
                let mut st = 0;
                unsafe { libc::waitpid(child, &mut st, 0) };
                r.bind(i, child as u32);
            }
        }
        assert_eq!(r.slots()[i].started.load(Ordering::Relaxed), 7);
        assert!(r.slots()[i].owner().is_some());
        r.release(i);
        assert_eq!(r.slots()[i].started.load(Ordering::Relaxed), 0);
        assert_eq!(r.slots()[i].owner(), None);
        assert_eq!(r.reserve(), Some(i));
    }

    #[test]
    fn a_slot_is_ten_cache_lines() {
        assert_eq!(std::mem::size_of::<Slot>(), 640);
    }

    #[test]
    fn buckets_and_classes() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(1_000), 0);
        assert_eq!(bucket(1_001), 1);
        assert_eq!(bucket(10_000_001), BUCKETS_US.len());
        assert_eq!(status_class(200), 1);
        assert_eq!(status_class(503), 4);
        assert_eq!(status_class(101), 0);
        assert_eq!(status_class(999), 4);
        assert_eq!(reject_index(431), 5);
        assert_eq!(reject_index(418), REJECT_STATUSES.len());
    }
}

//! The master's side of the metrics: the shared region, which worker has which slot, the
//! totals of workers that have exited (so counters never go back when workers are replaced,
//! reloaded or restarted after `--max-requests`), and what only the master knows (restarts by
//! reason, reloads and upgrades with their result). [`Book::snapshot`] adds them up for a
//! scrape.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use super::render::{MasterView, Snapshot};
use super::shared::{self, Region, Slot};

/// Why a worker was replaced.
pub const RESTART_REASONS: [&str; 4] = ["timeout", "crash", "max_requests", "reload"];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Restart {
    Timeout,
    Crash,
    MaxRequests,
    Reload,
}

/// Counters of one worker, or of many added up (plain numbers: a copy).
#[derive(Debug, Default, Clone)]
pub struct Totals {
    pub started: u64,
    pub requests: [[u64; 5]; 8],
    pub duration: [u64; 14],
    pub duration_sum_us: u64,
    pub request_body_bytes: u64,
    pub response_body_bytes: u64,
    pub rejected: [u64; 9],
    pub health: [u64; 2],
}

impl Totals {
    /// A copy of a slot's counters.
    pub fn of_slot(s: &Slot) -> Totals {
        let r = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let each = |a: &[std::sync::atomic::AtomicU64], out: &mut [u64]| {
            for (o, c) in out.iter_mut().zip(a) {
                *o = r(c);
            }
        };
        let mut t = Totals {
            started: r(&s.started),
            duration_sum_us: r(&s.duration_sum_us),
            request_body_bytes: r(&s.request_body_bytes),
            response_body_bytes: r(&s.response_body_bytes),
            ..Totals::default()
        };
        for (row, srow) in t.requests.iter_mut().zip(&s.requests) {
            each(srow, row);
        }
        each(&s.duration, &mut t.duration);
        each(&s.rejected, &mut t.rejected);
        each(&s.health, &mut t.health);
        t
    }

    pub fn add(&mut self, o: &Totals) {
        let sum = |a: &mut [u64], b: &[u64]| {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        };
        self.started += o.started;
        for (row, orow) in self.requests.iter_mut().zip(&o.requests) {
            sum(row, orow);
        }
        sum(&mut self.duration, &o.duration);
        self.duration_sum_us += o.duration_sum_us;
        self.request_body_bytes += o.request_body_bytes;
        self.response_body_bytes += o.response_body_bytes;
        sum(&mut self.rejected, &o.rejected);
        sum(&mut self.health, &o.health);
    }

    /// Requests that ended.
    pub fn finished(&self) -> u64 {
        self.requests.iter().flatten().sum()
    }
}

/// The master's book.
pub struct Book {
    region: Region,
    /// Metrics are on (`--metrics-bind`): workers get slots.
    on: bool,
    slot_of: HashMap<i32, usize>,
    retired: Totals,
    restarts: [u64; 4],
    /// ok, failed.
    reloads: [u64; 2],
    upgrades: [u64; 2],
    /// The import time of the worker that booted last (µs).
    last_import_us: u64,
    python: String,
    warned_full: bool,
}

impl Book {
    /// Maps the shared region (before any worker is forked). `on`: metrics are served; the
    /// header alone is mapped otherwise (the health path's readiness).
    pub fn new(on: bool, python: String) -> std::io::Result<Book> {
        let region = Region::map(if on { shared::SLOTS } else { 0 })?;
        super::record::set_header(region.header());
        Ok(Book {
            region,
            on,
            slot_of: HashMap::new(),
            retired: Totals::default(),
            restarts: [0; 4],
            reloads: [0; 2],
            upgrades: [0; 2],
            last_import_us: 0,
            python,
            warned_full: false,
        })
    }

    /// A slot for the worker about to be forked.
    pub fn reserve(&mut self) -> Option<usize> {
        if !self.on {
            return None;
        }
        let got = self.region.reserve();
        if got.is_none() && !self.warned_full {
            self.warned_full = true;
            tracing::warn!(
                "every one of the {} metrics slots is taken: workers beyond that are not counted",
                shared::SLOTS
            );
        }
        got
    }

    /// The slot's memory, for the forked worker.
    pub fn slot(&self, i: usize) -> &'static Slot {
        &self.region.slots()[i]
    }

    /// After the fork: `pid` owns the slot (`None`: the fork failed).
    pub fn forked(&mut self, i: usize, pid: Option<i32>) {
        match pid {
            Some(pid) => {
                self.region.bind(i, pid as u32);
                self.slot_of.insert(pid, i);
            }
            None => self.region.unreserve(i),
        }
    }

    /// A worker was reaped: its counters join the retired totals, its slot is freed.
    pub fn exited(&mut self, pid: i32) {
        if let Some(i) = self.slot_of.remove(&pid) {
            self.retired.add(&Totals::of_slot(&self.region.slots()[i]));
            self.region.release(i);
        }
    }

    /// A worker reported that it serves: its import time becomes the app's.
    pub fn booted(&mut self, pid: i32) {
        if let Some(&i) = self.slot_of.get(&pid) {
            let us = self.region.slots()[i].import_us.load(Ordering::Relaxed);
            if us > 0 {
                self.last_import_us = us;
            }
        }
    }

    pub fn restart(&mut self, why: Restart) {
        self.restarts[why as usize] += 1;
    }

    pub fn reload(&mut self, ok: bool) {
        self.reloads[usize::from(!ok)] += 1;
    }

    pub fn upgrade(&mut self, ok: bool) {
        self.upgrades[usize::from(!ok)] += 1;
    }

    /// Everything, added up now.
    pub fn snapshot(&self, view: MasterView) -> Snapshot {
        let mut live = Totals::default();
        let (mut connections, mut busy, mut queued) = (0i64, 0i64, 0i64);
        // Only the slots of live workers: reading the others would fault their pages in.
        for &i in self.slot_of.values() {
            let s = &self.region.slots()[i];
            live.add(&Totals::of_slot(s));
            connections += s.connections.load(Ordering::Relaxed);
            busy += s.python_busy.load(Ordering::Relaxed);
            queued += s.python_queued.load(Ordering::Relaxed);
        }
        // Requests a live worker started and has not finished (a worker that died mid-request
        // takes its in-flight ones with it).
        let in_flight = live.started.saturating_sub(live.finished());
        let mut totals = self.retired.clone();
        totals.add(&live);
        Snapshot {
            totals,
            in_flight,
            connections: connections.max(0) as u64,
            python_busy: busy.max(0) as u64,
            python_queued: queued.max(0) as u64,
            restarts: self.restarts,
            reloads: self.reloads,
            upgrades: self.upgrades,
            import_seconds: self.last_import_us as f64 / 1e6,
            python: self.python.clone(),
            view,
        }
    }
}

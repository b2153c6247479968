//! What a worker records, and the host's readiness: the calls the HTTP layer, the WSGI
//! dispatch and the thread pool make. Each is one relaxed atomic add on this worker's own slot
//! of the shared region, or nothing at all when metrics are off (no slot).

use std::sync::atomic::{AtomicPtr, Ordering};
use std::time::Duration;

use super::shared::{self, Header, Slot};

/// The shared header (set by the master before any fork; inherited by the workers).
static HEADER: AtomicPtr<Header> = AtomicPtr::new(std::ptr::null_mut());
/// This worker's slot (set in the worker right after the fork; null when metrics are off).
static SLOT: AtomicPtr<Slot> = AtomicPtr::new(std::ptr::null_mut());

pub(super) fn set_header(h: &'static Header) {
    HEADER.store(h as *const Header as *mut Header, Ordering::Release);
}

/// In a freshly forked worker: the slot it records into (None: metrics are off, or every slot
/// is taken).
pub fn enter_slot(slot: Option<&'static Slot>) {
    let p = slot.map_or(std::ptr::null_mut(), |s| s as *const Slot as *mut Slot);
    SLOT.store(p, Ordering::Release);
}

#[inline(always)]
fn slot() -> Option<&'static Slot> {
    let p = SLOT.load(Ordering::Relaxed);
    // SAFETY: either null or a slot of the shared region, which is never unmapped.
    unsafe { p.as_ref() }
}

/// Whether the host is stopping (TERM received by the master): the health path answers 503.
pub fn draining() -> bool {
    let p = HEADER.load(Ordering::Acquire);
    // SAFETY: either null or the shared region's header, which is never unmapped.
    unsafe { p.as_ref() }.is_some_and(|h| h.draining.load(Ordering::Acquire) != 0)
}

/// The master: the host stops (or no longer stops) being ready.
pub fn set_draining(on: bool) {
    let p = HEADER.load(Ordering::Acquire);
    // SAFETY: as in `draining`.
    if let Some(h) = unsafe { p.as_ref() } {
        h.draining.store(on as u32, Ordering::Release);
    }
}

/// A request head was parsed: the request is in flight until [`request_finished`].
#[inline]
pub fn request_started() {
    if let Some(s) = slot() {
        s.started.fetch_add(1, Ordering::Relaxed);
    }
}

/// A request ended (its response sent, or abandoned). `method`: index in
/// [`shared::METHODS`]; the byte counts are body bytes; `start`: when its head was read.
#[inline]
pub fn request_finished(
    method: usize,
    status: u16,
    request_body: u64,
    response_body: u64,
    start: std::time::Instant,
) {
    let Some(s) = slot() else { return };
    let us = start.elapsed().as_micros() as u64;
    s.requests[method.min(shared::METHODS.len() - 1)][shared::status_class(status)]
        .fetch_add(1, Ordering::Relaxed);
    s.duration[shared::bucket(us)].fetch_add(1, Ordering::Relaxed);
    s.duration_sum_us.fetch_add(us, Ordering::Relaxed);
    if request_body > 0 {
        s.request_body_bytes
            .fetch_add(request_body, Ordering::Relaxed);
    }
    if response_body > 0 {
        s.response_body_bytes
            .fetch_add(response_body, Ordering::Relaxed);
    }
}

/// The HTTP layer refused a request itself (a malformed head, a limit, a timeout).
pub fn rejected(status: u16) {
    if let Some(s) = slot() {
        s.rejected[shared::reject_index(status)].fetch_add(1, Ordering::Relaxed);
    }
}

/// The health path was answered: 200 (`ready`) or 503.
pub fn health(ready: bool) {
    if let Some(s) = slot() {
        s.health[usize::from(!ready)].fetch_add(1, Ordering::Relaxed);
    }
}

/// How long the app's import took in this worker.
pub fn app_imported(took: Duration) {
    if let Some(s) = slot() {
        s.import_us
            .store((took.as_micros() as u64).max(1), Ordering::Relaxed);
    }
}

/// Which gauge a [`Gauge`] holds up.
#[derive(Clone, Copy)]
pub enum Held {
    /// An open connection.
    Connection,
    /// A thread running the app.
    PythonBusy,
    /// A request waiting for a Python thread.
    PythonQueued,
}

/// Holds a gauge one up for its lifetime.
pub struct Gauge(Option<(&'static Slot, Held)>);

impl Gauge {
    #[inline]
    pub fn hold(which: Held) -> Gauge {
        Gauge(slot().map(|s| {
            gauge(s, which).fetch_add(1, Ordering::Relaxed);
            (s, which)
        }))
    }
}

fn gauge(s: &Slot, which: Held) -> &std::sync::atomic::AtomicI64 {
    match which {
        Held::Connection => &s.connections,
        Held::PythonBusy => &s.python_busy,
        Held::PythonQueued => &s.python_queued,
    }
}

impl Drop for Gauge {
    #[inline]
    fn drop(&mut self) {
        if let Some((s, which)) = self.0 {
            gauge(s, which).fetch_sub(1, Ordering::Relaxed);
        }
    }
}

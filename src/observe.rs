//! Per-request events for whatever counts them: statsd (`statsd.rs`) now, other metrics
//! (Prometheus) later, each an [`Observer`]. The connection layer calls
//! [`Observers::request`] once per finished request, where it writes the access line; with no
//! observer that is one branch.

use std::sync::Arc;
use std::time::Duration;

/// One finished request, as the access log sees it. (Each field costs on every request once
/// there is an observer: add what an observer needs.)
#[derive(Debug, Clone, Copy)]
pub struct Finished {
    pub status: u16,
    /// Body bytes sent.
    pub sent: u64,
    /// From the first byte of the head to the end of the response.
    pub duration: Duration,
}

/// Something that counts requests. Called on the worker's event-loop thread: it must not
/// block (statsd's socket is non-blocking).
pub trait Observer: Send + Sync {
    fn request(&self, r: &Finished);
}

/// The observers of one worker.
#[derive(Clone, Default)]
pub struct Observers(Vec<Arc<dyn Observer>>);

impl Observers {
    pub fn push(&mut self, o: Arc<dyn Observer>) {
        self.0.push(o);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn request(&self, r: &Finished) {
        for o in &self.0 {
            o.request(r);
        }
    }
}

//! The WSGI side of the dispatch seam: where a request runs, decided once.
//!
//! With `--threads 1` and a body already in memory, the app is called right on the event-loop
//! thread (no hand-off, no wake-up); a result that must be iterated, and every request when
//! there are more threads or the body is still streaming (its reads block), goes to a pool
//! thread. At most `--threads` requests are inside Python at once. An app that calls `write()`
//! is called on the pool thread from the first time it does (see `start_response`).

use std::sync::Arc;

use pyo3::Python;
use tokio::sync::{Semaphore, oneshot};

use super::pool::{Job, Pool};
use super::{Called, WsgiApp};
use crate::busy::Busy;
use crate::http::dispatch::{Body, Dispatch, Outcome, Request};

pub struct WsgiDispatch {
    pub app: Arc<WsgiApp>,
    pub pool: Pool,
    /// `--threads` permits: requests inside Python at once.
    pub slots: Arc<Semaphore>,
    /// Call the app on the event-loop thread when the body is complete (`--threads 1`).
    pub inline: bool,
    pub busy: Arc<Busy>,
}

impl Dispatch for WsgiDispatch {
    async fn call(&self, req: Request) -> Outcome {
        // Waiting for a Python thread counts as queued (in the metrics) only when it waits.
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let _queued = crate::metrics::Gauge::hold(crate::metrics::Held::PythonQueued);
                let Ok(p) = self.slots.clone().acquire_owned().await else {
                    return Outcome::Failed;
                };
                p
            }
        };
        if self.inline
            && !matches!(req.body, Body::Stream(_))
            && !super::start_response::wrote_inline()
        {
            let called = {
                let _busy = self.busy.enter(0);
                Python::attach(|py| self.app.call(py, req))
            };
            match called {
                Called::Done(o) => o,
                Called::Iterate(pending) => {
                    let (tx, rx) = oneshot::channel();
                    self.pool.submit(Job::Iterate {
                        pending,
                        reply: tx,
                        permit,
                    });
                    rx.await.unwrap_or(Outcome::Failed)
                }
            }
        } else {
            let (tx, rx) = oneshot::channel();
            self.pool.submit(Job::Call {
                req,
                reply: tx,
                permit,
            });
            rx.await.unwrap_or(Outcome::Failed)
        }
    }
}

//! The worker's Python threads (`--threads`) that call the WSGI app and iterate its results.
//!
//! Jobs arrive through an MPMC channel; a thread waits on it without the GIL and attaches to
//! the interpreter only to run the job. How many requests may be inside Python at once is
//! decided by the caller (a semaphore of `threads` permits, released when a job is done).

use std::sync::Arc;

use pyo3::Python;
use tokio::sync::{OwnedSemaphorePermit, oneshot};

use super::{Called, Pending, WsgiApp};
use crate::busy::Busy;
use crate::http::dispatch::{Outcome, Request};

/// Work for a Python thread. The permit is released when the job has finished (after
/// `close()`), so the number of requests in Python never exceeds `--threads`.
pub enum Job {
    /// Call the app, then consume its result.
    Call {
        req: Request,
        reply: oneshot::Sender<Outcome>,
        permit: OwnedSemaphorePermit,
    },
    /// Consume a result the app already returned (called on the event loop thread).
    Iterate {
        pending: Pending,
        reply: oneshot::Sender<Outcome>,
        permit: OwnedSemaphorePermit,
    },
}

/// A fixed set of Python threads.
pub struct Pool {
    tx: crossbeam_channel::Sender<Job>,
}

impl Pool {
    /// Starts `n` threads; their busy slots are `first_slot..first_slot + n` of `busy`.
    pub fn start(n: usize, app: Arc<WsgiApp>, busy: Arc<Busy>, first_slot: usize) -> Pool {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        for i in 0..n {
            let rx = rx.clone();
            let app = app.clone();
            let busy = busy.clone();
            std::thread::Builder::new()
                .name(format!("python-{i}"))
                .spawn(move || {
                    // Attached once for the thread's life, detached while waiting: the thread
                    // keeps one Python thread state, so `threading.local` data (an app's
                    // per-thread database connection, say) lives from request to request.
                    Python::attach(|py| {
                        while let Ok(job) = py.detach(|| rx.recv()) {
                            let _b = busy.enter(first_slot + i);
                            run(py, &app, job);
                        }
                    })
                })
                .expect("cannot start a Python thread");
        }
        Pool { tx }
    }

    pub fn submit(&self, job: Job) {
        // The receivers live as long as the process; a send cannot fail.
        let _ = self.tx.send(job);
    }
}

/// Runs a job: the app called if it was not yet, then its result consumed.
fn run(py: Python<'_>, app: &WsgiApp, job: Job) {
    let (pending, reply, permit) = match job {
        Job::Call { req, reply, permit } => match app.call(py, req) {
            Called::Done(r) => {
                let _ = reply.send(r);
                return;
            }
            Called::Iterate(p) => (p, reply, permit),
        },
        Job::Iterate {
            pending,
            reply,
            permit,
        } => (pending, reply, permit),
    };
    app.iterate(py, pending, reply);
    drop(permit);
}

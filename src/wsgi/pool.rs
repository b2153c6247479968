//! The worker's Python threads (`--threads`) that call the WSGI app and iterate its results.
//!
//! Jobs arrive through an MPMC channel; a thread waits on it without the GIL and attaches to
//! the interpreter only to run the job. How many requests may be inside Python at once is
//! decided by the caller (a semaphore of `threads` permits, released when a job is done).
//!
//! A job that panics is answered with a 500 (its reply is dropped) and the thread goes on; a
//! thread that dies anyway ends the worker (aborts), so the master replaces it rather than
//! leaving a worker whose jobs nobody runs. While a thread waits for its client (a full response
//! channel, a body read) it does not count as busy for `--timeout`.

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use pyo3::Python;
use tokio::sync::{OwnedSemaphorePermit, oneshot};

use super::start_response::{offer_reply, take_reply};
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

thread_local! {
    /// This Python thread's busy slot.
    static SLOT: RefCell<Option<(Arc<Busy>, usize)>> = const { RefCell::new(None) };
}

/// Runs `f`, a wait for the client, with this thread marked idle meanwhile (see
/// [`Busy::pause`]); `f` as it is on a thread without a slot.
pub fn waiting_on_client<T>(f: impl FnOnce() -> T) -> T {
    SLOT.with_borrow(move |s| match s {
        Some((busy, slot)) => {
            let _idle = busy.pause(*slot);
            f()
        }
        None => f(),
    })
}

/// Ends the worker if its Python thread unwinds out of its loop.
struct ThreadAlive(usize);

impl Drop for ThreadAlive {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!(
                "Python thread {} of worker {} died: the worker stops so that it is replaced",
                self.0,
                std::process::id()
            );
            std::process::abort();
        }
    }
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
                    let _alive = ThreadAlive(i);
                    SLOT.set(Some((busy.clone(), first_slot + i)));
                    // Attached once for the thread's life, detached while waiting: the thread
                    // keeps one Python thread state, so `threading.local` data (an app's
                    // per-thread database connection, say) lives from request to request.
                    Python::attach(|py| {
                        // A finished job's permit is given back only once the GIL is released:
                        // the event-loop thread it wakes (to call the app inline) then finds
                        // the GIL free, instead of preempting this thread only to wait for it.
                        let mut done: Option<OwnedSemaphorePermit> = None;
                        while let Ok(job) = py.detach(|| {
                            drop(done.take());
                            rx.recv()
                        }) {
                            let _b = busy.enter(first_slot + i);
                            let ran = catch_unwind(AssertUnwindSafe(|| run(py, &app, job)));
                            if let Ok(permit) = ran {
                                done = permit;
                            } else {
                                // The reply was dropped with the job (the client gets a 500 or
                                // a cut response); a reply left for write() goes the same way.
                                drop(take_reply());
                                tracing::error!(
                                    "A request panicked on Python thread {i} (logged above); \
                                     it was answered with an error and the thread goes on"
                                );
                            }
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

/// Runs a job: the app called if it was not yet, then its result consumed. Returns the job's
/// permit, to be released once the GIL is.
fn run(py: Python<'_>, app: &WsgiApp, job: Job) -> Option<OwnedSemaphorePermit> {
    let (pending, reply, permit) = match job {
        Job::Call { req, reply, permit } => {
            // write() during the call starts the response with it.
            offer_reply(reply);
            let called = app.call(py, req);
            let reply = take_reply();
            match called {
                Called::Done(r) => {
                    // No reply left: write() sent the response already.
                    if let Some(reply) = reply {
                        let _ = reply.send(r);
                    }
                    return Some(permit);
                }
                Called::Iterate(p) => (p, reply, permit),
            }
        }
        Job::Iterate {
            pending,
            reply,
            permit,
        } => (pending, Some(reply), permit),
    };
    app.iterate(py, pending, reply);
    Some(permit)
}

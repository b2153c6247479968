//! The worker's asyncio event loop, on a Python thread of its own, and the one way work crosses
//! between it and the tokio thread that does the I/O.
//!
//! tokio → loop: [`LoopHandle::push`] appends a [`Job`] to a queue and writes an `eventfd` only
//! when the queue was idle; the loop watches that descriptor (`loop.add_reader`) and drains the
//! whole queue in one callback, so a burst of requests costs one wake-up. The tokio thread
//! never takes the GIL.
//!
//! loop → tokio: plain Rust channels (`oneshot` for a reply, the response stream, WebSocket
//! channels). When the app awaits something only the tokio side can provide (the next body
//! chunk, room in a full response buffer, a WebSocket message, the client going away), the
//! Rust future that waits for it is *parked* ([`await_rust`]): polled on the loop thread with
//! a waker that queues it again as a [`Job::Poll`], and meanwhile the app awaits an asyncio
//! future that the result resolves. Nothing is polled on a timer; nothing blocks the loop.

use std::cell::RefCell;
use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;

use crate::busy::Busy;
use crate::http::dispatch::Outcome;

/// A reply for the tokio side, with the channel its connection awaits.
type Handoff = (tokio::sync::oneshot::Sender<Outcome>, Outcome);

/// A value for the app, made on the loop thread (with the GIL) once a Rust future is ready.
/// The flag says whether the app still waits for it: false when it cancelled its await
/// meanwhile (anyio's `is_disconnected()`, a timeout), and then what the value would have
/// carried (a body chunk, a message) must be kept for the next call, not lost.
pub type Resolved = Box<dyn FnOnce(Python<'_>, bool) -> PyResult<Py<PyAny>> + Send>;

type BoxFuture = Pin<Box<dyn Future<Output = Resolved> + Send>>;

/// Work for the loop thread.
pub enum Job {
    /// Run a closure with the GIL on the loop thread (a new request, a lifespan step).
    Run(Box<dyn FnOnce(Python<'_>) + Send>),
    /// A parked future was woken: poll it again.
    Poll(Arc<Parked>),
    /// Are you there? (answered by clearing the loop's busy slot)
    Ping,
}

struct Queue {
    jobs: Vec<Job>,
    /// A wake-up is pending (the eventfd was written and not yet drained).
    armed: bool,
}

/// The tokio side's handle on the loop: `Send + Sync`, no Python inside.
pub struct LoopHandle {
    queue: Mutex<Queue>,
    efd: OwnedFd,
    busy: Arc<Busy>,
    /// The busy slot of the loop thread.
    slot: usize,
    ping_outstanding: AtomicBool,
    /// Replies handed over by the loop, delivered by [`LoopHandle::deliver_replies`].
    replies: Mutex<Vec<Handoff>>,
    replies_ready: tokio::sync::Notify,
}

impl LoopHandle {
    /// On the tokio thread, for the worker's life: hands each batch of replies the loop
    /// gathered to the connections waiting for them (one cross-thread wake-up per batch).
    pub async fn deliver_replies(self: Arc<Self>) {
        loop {
            self.replies_ready.notified().await;
            let batch =
                std::mem::take(&mut *self.replies.lock().unwrap_or_else(|e| e.into_inner()));
            for (tx, o) in batch {
                let _ = tx.send(o);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `job`; wakes the loop if it was not about to drain anyway.
    pub fn push(&self, job: Job) {
        let wake = {
            let mut q = self.lock();
            q.jobs.push(job);
            !std::mem::replace(&mut q.armed, true)
        };
        if wake {
            let one: u64 = 1;
            // SAFETY: writing 8 bytes from a live u64 to our own eventfd.
            unsafe {
                libc::write(
                    self.efd.as_raw_fd(),
                    (&one as *const u64).cast(),
                    std::mem::size_of::<u64>(),
                );
            }
        }
    }

    /// Runs `f` on the loop thread with the GIL.
    pub fn run(&self, f: impl FnOnce(Python<'_>) + Send + 'static) {
        self.push(Job::Run(Box::new(f)));
    }

    /// Asks the loop whether it answers: from now until it does, its busy slot says since
    /// when it has not (the heartbeat reports it; `--timeout` kills a loop blocked too long).
    pub fn ping(&self) {
        if !self.ping_outstanding.swap(true, Ordering::AcqRel) {
            self.busy.mark_since(self.slot, crate::ipc::monotonic_ns());
            self.push(Job::Ping);
        }
    }

    fn take(&self) -> Vec<Job> {
        let mut buf = [0u8; 8];
        // SAFETY: reading 8 bytes into a live buffer from our own non-blocking eventfd; it is
        // read before the queue is taken, so a push after the take always wakes again.
        unsafe {
            libc::read(self.efd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len());
        }
        let mut q = self.lock();
        q.armed = false;
        std::mem::take(&mut q.jobs)
    }
}

/// A Rust future the app is waiting on, polled on the loop thread.
pub struct Parked {
    fut: Mutex<Option<BoxFuture>>,
    /// The asyncio future the app awaits (None for a detached future).
    target: Mutex<Option<Py<PyAny>>>,
    queued: AtomicBool,
    handle: Arc<LoopHandle>,
}

impl Wake for Parked {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.handle.push(Job::Poll(self.clone()));
        }
    }
}

impl Parked {
    /// Polls once; the result, if ready.
    fn poll(self: &Arc<Self>) -> Option<Resolved> {
        self.queued.store(false, Ordering::Release);
        let waker = Waker::from(self.clone());
        let mut cx = Context::from_waker(&waker);
        let mut slot = self.fut.lock().unwrap_or_else(|e| e.into_inner());
        let f = slot.as_mut()?;
        match f.as_mut().poll(&mut cx) {
            Poll::Ready(r) => {
                *slot = None;
                Some(r)
            }
            Poll::Pending => None,
        }
    }
}

/// What only the loop thread touches: the app and the loop's Python objects.
pub struct LoopCtx {
    pub app: Py<PyAny>,
    pub create_task: Py<PyAny>,
    pub create_future: Py<PyAny>,
    /// `bridge.run(app, scope, receive, send, cycle)`.
    pub run: Py<PyAny>,
    pub handle: Arc<LoopHandle>,
    pub scope: super::scope::Template,
    /// The lifespan `state`, copied into every scope once lifespan startup succeeded.
    pub state: Option<Py<pyo3::types::PyDict>>,
    /// `loop.call_soon`, and the callback that hands gathered replies over.
    pub call_soon: Py<PyAny>,
    pub flush: Py<PyAny>,
}

thread_local! {
    static CTX: RefCell<Option<LoopCtx>> = const { RefCell::new(None) };
    /// Replies made during this pass of the loop, handed over together at its end.
    static OUTBOX: RefCell<Vec<Handoff>> = const { RefCell::new(Vec::new()) };
}

/// Gives `outcome` to the connection waiting on `tx`: gathered, and handed to the tokio side
/// once per pass of the loop (`call_soon`), so that a burst of responses costs one wake-up.
pub fn reply(py: Python<'_>, tx: tokio::sync::oneshot::Sender<Outcome>, outcome: Outcome) {
    let first = OUTBOX.with(|o| {
        let mut o = o.borrow_mut();
        o.push((tx, outcome));
        o.len() == 1
    });
    if first {
        let (call_soon, flush) = with_ctx(|c| (c.call_soon.clone_ref(py), c.flush.clone_ref(py)));
        if call_soon.bind(py).call1((flush,)).is_err() {
            flush_replies();
        }
    }
}

fn flush_replies() {
    let batch = OUTBOX.with(|o| std::mem::take(&mut *o.borrow_mut()));
    if batch.is_empty() {
        return;
    }
    let handle = with_ctx(|c| c.handle.clone());
    handle
        .replies
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(batch);
    handle.replies_ready.notify_one();
}

/// The `call_soon` callback of [`reply`].
#[pyclass(module = "ferricorn")]
struct Flush;

#[pymethods]
impl Flush {
    fn __call__(&self) {
        flush_replies();
    }
}

/// Runs `f` with the loop's context; only on the loop thread.
pub fn with_ctx<R>(f: impl FnOnce(&mut LoopCtx) -> R) -> R {
    CTX.with(|c| {
        let mut c = c.borrow_mut();
        f(c.as_mut()
            .expect("the ASGI loop context exists on the loop thread"))
    })
}

/// Starts `app(scope, receive, send)` as an asyncio task; `cycle.done(exc)` is called when it
/// ends.
pub fn start_task(
    py: Python<'_>,
    scope: Bound<'_, PyAny>,
    receive: Bound<'_, PyAny>,
    send: Bound<'_, PyAny>,
    cycle: Bound<'_, PyAny>,
) -> PyResult<()> {
    let (app, run, create_task) = with_ctx(|c| {
        (
            c.app.clone_ref(py),
            c.run.clone_ref(py),
            c.create_task.clone_ref(py),
        )
    });
    let coro = run.bind(py).call1((app, scope, receive, send, cycle))?;
    create_task.bind(py).call1((coro,))?;
    Ok(())
}

/// The drain callback the loop calls when the eventfd is readable.
#[pyclass(module = "ferricorn")]
struct Drain {
    handle: Arc<LoopHandle>,
}

#[pymethods]
impl Drain {
    fn __call__(&self, py: Python<'_>) {
        for job in self.handle.take() {
            match job {
                Job::Run(f) => f(py),
                Job::Poll(p) => {
                    if let Some(r) = p.poll() {
                        let target = p.target.lock().unwrap_or_else(|e| e.into_inner()).take();
                        deliver(py, target, r);
                    }
                }
                Job::Ping => {
                    self.handle.ping_outstanding.store(false, Ordering::Release);
                    self.handle.busy.clear(self.handle.slot);
                }
            }
        }
    }
}

/// Resolves the app's asyncio future with `r` (unless it was cancelled meanwhile).
fn deliver(py: Python<'_>, target: Option<Py<PyAny>>, r: Resolved) {
    let Some(t) = target else {
        if let Err(e) = r(py, false) {
            tracing::error!(
                "ASGI bridge: {}",
                crate::python::format_traceback(py, &e).trim_end()
            );
        }
        return;
    };
    let t = t.bind(py);
    let wanted = !t
        .call_method0(pyo3::intern!(py, "done"))
        .and_then(|d| d.is_truthy())
        .unwrap_or(true);
    let r = r(py, wanted);
    if !wanted {
        return;
    }
    let set = match r {
        Ok(v) => t.call_method1(pyo3::intern!(py, "set_result"), (v,)),
        Err(e) => t.call_method1(pyo3::intern!(py, "set_exception"), (e.value(py),)),
    };
    if let Err(e) = set {
        tracing::error!("ASGI bridge: cannot resolve a future: {e}");
    }
}

/// An awaitable that is complete already: `await` gives its value without suspending.
#[pyclass(module = "ferricorn", freelist = 64)]
pub struct Ready {
    value: Option<Py<PyAny>>,
}

#[pymethods]
impl Ready {
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self) -> PyResult<Option<Py<PyAny>>> {
        match self.value.take() {
            // Returning nothing ends the iteration with `None` as the result, no exception.
            None => Ok(None),
            Some(v) => Err(PyStopIteration::new_err((v,))),
        }
    }
}

/// `await`-able `None`, shared: `send()` returns it whenever nothing has to wait.
pub fn ready_none(py: Python<'_>) -> PyResult<Py<PyAny>> {
    static NONE: pyo3::sync::PyOnceLock<Py<Ready>> = pyo3::sync::PyOnceLock::new();
    Ok(NONE
        .get_or_try_init(py, || Py::new(py, Ready { value: None }))?
        .clone_ref(py)
        .into_any())
}

/// An awaitable that gives `v` at once.
pub fn ready(py: Python<'_>, v: Py<PyAny>) -> PyResult<Py<PyAny>> {
    Ok(Py::new(py, Ready { value: Some(v) })?.into_any())
}

/// What the app awaits for `fut`: ready now if `fut` is (polled once here), else an asyncio
/// future resolved when it is.
pub fn await_rust(
    py: Python<'_>,
    fut: impl Future<Output = Resolved> + Send + 'static,
) -> PyResult<Py<PyAny>> {
    Ok(await_rust_parked(py, fut)?.0)
}

/// [`await_rust`], with the parked future when it has to wait (for [`retarget`]).
pub fn await_rust_parked(
    py: Python<'_>,
    fut: impl Future<Output = Resolved> + Send + 'static,
) -> PyResult<(Py<PyAny>, Option<Arc<Parked>>)> {
    let handle = with_ctx(|c| c.handle.clone());
    let parked = Arc::new(Parked {
        fut: Mutex::new(Some(Box::pin(fut))),
        target: Mutex::new(None),
        queued: AtomicBool::new(false),
        handle,
    });
    if let Some(r) = parked.poll() {
        let v = r(py, true)?;
        return Ok((ready(py, v)?, None));
    }
    let target = with_ctx(|c| c.create_future.clone_ref(py))
        .bind(py)
        .call0()?
        .unbind();
    *parked.target.lock().unwrap_or_else(|e| e.into_inner()) = Some(target.clone_ref(py));
    Ok((target, Some(parked)))
}

/// A new asyncio future for a parked one whose awaiter gave up (its future was cancelled):
/// the next `receive()` waits for the same result. None while the first awaiter still waits.
pub fn retarget(py: Python<'_>, parked: &Arc<Parked>) -> PyResult<Option<Py<PyAny>>> {
    let mut t = parked.target.lock().unwrap_or_else(|e| e.into_inner());
    let gave_up = match t.as_ref() {
        Some(f) => f
            .bind(py)
            .call_method0(pyo3::intern!(py, "done"))?
            .is_truthy()?,
        None => false,
    };
    if !gave_up {
        return Ok(None);
    }
    let new = with_ctx(|c| c.create_future.clone_ref(py))
        .bind(py)
        .call0()?
        .unbind();
    *t = Some(new.clone_ref(py));
    Ok(Some(new))
}

/// Runs `fut` to its end on the loop thread, with nobody awaiting it (an error is logged).
pub fn spawn_rust(fut: impl Future<Output = ()> + Send + 'static) {
    let handle = with_ctx(|c| c.handle.clone());
    let parked = Arc::new(Parked {
        fut: Mutex::new(Some(Box::pin(async move {
            fut.await;
            Box::new(|py: Python<'_>, _| Ok(py.None())) as Resolved
        }))),
        target: Mutex::new(None),
        queued: AtomicBool::new(false),
        handle,
    });
    // Polled from the queue (not here): the caller may be inside a borrow of a cycle.
    parked.wake_by_ref();
}

/// Which loop to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopKind {
    Auto,
    Asyncio,
    Uvloop,
}

impl LoopKind {
    pub fn parse(s: &str) -> LoopKind {
        match s {
            "asyncio" => LoopKind::Asyncio,
            "uvloop" => LoopKind::Uvloop,
            _ => LoopKind::Auto,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            LoopKind::Auto => "auto",
            LoopKind::Asyncio => "asyncio",
            LoopKind::Uvloop => "uvloop",
        }
    }
}

/// Starts the loop thread for `app`; returns once the loop runs (or why it cannot).
pub fn start(
    app: Py<PyAny>,
    kind: LoopKind,
    scope: super::scope::Options,
    busy: Arc<Busy>,
    slot: usize,
) -> Result<Arc<LoopHandle>, String> {
    // SAFETY: eventfd with constant flags; the result is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(format!(
            "cannot create the event loop's eventfd: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a descriptor we just created and own.
    let efd = unsafe { OwnedFd::from_raw_fd(fd) };
    let handle = Arc::new(LoopHandle {
        queue: Mutex::new(Queue {
            jobs: Vec::with_capacity(64),
            armed: false,
        }),
        efd,
        busy,
        slot,
        ping_outstanding: AtomicBool::new(false),
        replies: Mutex::new(Vec::new()),
        replies_ready: tokio::sync::Notify::new(),
    });
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<String, String>>();
    let h = handle.clone();
    std::thread::Builder::new()
        .name("asgi-loop".into())
        .spawn(move || {
            Python::attach(|py| {
                let setup = || -> PyResult<(Bound<'_, PyAny>, Bound<'_, PyAny>, String)> {
                    let bridge = super::bridge(py)?;
                    let made = bridge.call_method1("new_loop", (kind.as_str(),))?;
                    let (lp, name): (Bound<'_, PyAny>, String) = made.extract()?;
                    let ctx = LoopCtx {
                        app,
                        create_task: lp.getattr("create_task")?.unbind(),
                        create_future: lp.getattr("create_future")?.unbind(),
                        run: bridge.getattr("run")?.unbind(),
                        handle: h.clone(),
                        scope: super::scope::Template::new(py, scope)?,
                        state: None,
                        call_soon: lp.getattr("call_soon")?.unbind(),
                        flush: Py::new(py, Flush)?.into_any(),
                    };
                    CTX.with(|c| *c.borrow_mut() = Some(ctx));
                    Ok((bridge.into_any(), lp, name))
                };
                let (bridge, lp, name) = match setup() {
                    Ok(x) => x,
                    Err(e) => {
                        let _ = ready_tx.send(Err(crate::python::format_traceback(py, &e)));
                        return;
                    }
                };
                let drain = match Py::new(py, Drain { handle: h.clone() }) {
                    Ok(d) => d,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(name));
                if let Err(e) = bridge.call_method1("serve_forever", (lp, h.efd.as_raw_fd(), drain))
                {
                    tracing::error!(
                        "The ASGI event loop stopped: {}",
                        crate::python::format_traceback(py, &e).trim_end()
                    );
                    // A worker without its loop cannot serve: it exits and is replaced.
                    // SAFETY: _exit is always safe.
                    unsafe { libc::_exit(crate::exit::EXIT_BOOT_ERROR) };
                }
            })
        })
        .map_err(|e| format!("cannot start the ASGI event loop thread: {e}"))?;
    match ready_rx.recv() {
        Ok(Ok(name)) => {
            tracing::info!("ASGI event loop: {name}");
            Ok(handle)
        }
        Ok(Err(e)) => Err(format!(
            "cannot start the ASGI event loop: {}",
            e.trim_end()
        )),
        Err(_) => Err("the ASGI event loop thread ended while starting".into()),
    }
}

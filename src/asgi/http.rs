//! The `http` scope: one request's `receive()` and `send()`, and what the app's messages
//! become on the seam.
//!
//! `receive()`: the body as `http.request` messages — a body read before the app was called in
//! one message, a larger one chunk by chunk as the connection reads it (one chunk in flight:
//! the client is not read faster than the app takes it); after the body, it waits until the
//! client goes away (`http.disconnect`) or the response is complete (then it says
//! `http.disconnect` at once, as uvicorn does).
//!
//! `send()`: `http.response.start` is held until the first `http.response.body`; a body without
//! `more_body` becomes a complete reply (the server sets `Content-Length`), otherwise the reply
//! streams through the HTTP layer's bounded channel and `send()` waits while it is full (a slow
//! client slows the app, never grows memory). When the client has gone, `send()` returns without
//! sending (uvicorn's behaviour for `http`).
//!
//! The app raising (or returning) before `http.response.start`: a 500 and the traceback; after
//! it: the response is cut, so the client cannot mistake it for a whole one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyString};
use tokio::sync::{Notify, oneshot};

use super::runloop::{self, Resolved};
use crate::http::dispatch::{
    Body, BodyStream, ConnInfo, Outcome, Reply, ReplyBody, Request, StreamAborted,
};
use crate::http::parse::Head;
use crate::http::response::{HeaderError, ResponseHead};
use crate::http::stream;

/// A flag that can be awaited (by a future polled on the loop thread).
#[derive(Default)]
pub struct Flag {
    set: AtomicBool,
    notify: Notify,
}

impl Flag {
    pub fn set(&self) {
        self.set.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    pub fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    pub async fn wait(&self) {
        loop {
            let n = self.notify.notified();
            let mut n = std::pin::pin!(n);
            n.as_mut().enable();
            if self.is_set() {
                return;
            }
            n.await;
        }
    }
}

enum BodyIn {
    Empty,
    Full(Bytes),
    Stream(BodyStream),
    /// A `receive()` is waiting for the next chunk.
    Reading,
    Done,
}

/// One HTTP request's state, shared by its `receive` and `send`.
#[pyclass(module = "ferricorn")]
pub struct HttpCycle {
    head: Arc<Head>,
    conn: Arc<ConnInfo>,
    body: BodyIn,
    /// Until the reply (head and first body) is handed to the connection.
    reply: Option<oneshot::Sender<Outcome>>,
    start: Option<ResponseHead>,
    /// While the reply streams.
    tx: Option<Arc<stream::Sender>>,
    complete: Arc<Flag>,
    disconnected: bool,
    /// A message made for a `receive()` the app cancelled: the next one returns it.
    unclaimed: Option<Py<PyAny>>,
    /// The waiting `receive()` (while `body` is `Reading`).
    pending: Option<Arc<runloop::Parked>>,
}

impl HttpCycle {
    fn new(req: Request, reply: oneshot::Sender<Outcome>) -> HttpCycle {
        let body = match req.body {
            Body::Empty => BodyIn::Empty,
            Body::Full(c) => BodyIn::Full(c.data),
            Body::Stream(s) => BodyIn::Stream(s),
        };
        HttpCycle {
            head: req.head,
            conn: req.conn,
            body,
            reply: Some(reply),
            start: None,
            tx: None,
            complete: Arc::new(Flag::default()),
            disconnected: false,
            unclaimed: None,
            pending: None,
        }
    }

    fn target(&self) -> String {
        self.head.target_lossy().into_owned()
    }
}

fn request_msg(py: Python<'_>, body: &[u8], more: bool) -> PyResult<Py<PyAny>> {
    let d = PyDict::new(py);
    d.set_item(intern!(py, "type"), intern!(py, "http.request"))?;
    d.set_item(intern!(py, "body"), PyBytes::new(py, body))?;
    d.set_item(intern!(py, "more_body"), more)?;
    Ok(d.into_any().unbind())
}

fn disconnect_msg(py: Python<'_>) -> PyResult<Py<PyAny>> {
    let d = PyDict::new(py);
    d.set_item(intern!(py, "type"), intern!(py, "http.disconnect"))?;
    Ok(d.into_any().unbind())
}

/// `receive()`.
fn receive(py: Python<'_>, cycle: &Bound<'_, HttpCycle>) -> PyResult<Py<PyAny>> {
    let mut c = cycle.borrow_mut();
    if let Some(m) = c.unclaimed.take() {
        return runloop::ready(py, m);
    }
    if c.disconnected || c.complete.is_set() {
        return runloop::ready(py, disconnect_msg(py)?);
    }
    match std::mem::replace(&mut c.body, BodyIn::Done) {
        BodyIn::Empty => runloop::ready(py, request_msg(py, b"", false)?),
        BodyIn::Full(b) => runloop::ready(py, request_msg(py, &b, false)?),
        BodyIn::Stream(mut s) => {
            c.body = BodyIn::Reading;
            drop(c);
            let cyc = cycle.clone().unbind();
            let (a, parked) = runloop::await_rust_parked(py, async move {
                let r = s.next().await;
                Box::new(move |py: Python<'_>, wanted: bool| {
                    let mut c = cyc.bind(py).borrow_mut();
                    c.pending = None;
                    let m = match r {
                        Ok(Some(chunk)) => {
                            c.body = BodyIn::Stream(s);
                            request_msg(py, &chunk.data, true)?
                        }
                        Ok(None) => {
                            c.body = BodyIn::Done;
                            request_msg(py, b"", false)?
                        }
                        Err(_) => {
                            // The connection answers a timeout or bad framing itself.
                            c.body = BodyIn::Done;
                            c.disconnected = true;
                            return disconnect_msg(py);
                        }
                    };
                    if !wanted {
                        c.unclaimed = Some(m.clone_ref(py));
                    }
                    Ok(m)
                }) as Resolved
            })?;
            if parked.is_some() {
                cycle.borrow_mut().pending = parked;
            }
            Ok(a)
        }
        BodyIn::Reading => {
            c.body = BodyIn::Reading;
            // The earlier receive() was cancelled while it waited: this one takes its place.
            if let Some(p) = c.pending.clone()
                && let Some(f) = runloop::retarget(py, &p)?
            {
                return Ok(f);
            }
            Err(PyRuntimeError::new_err(
                "receive() called while an earlier receive() is still waiting",
            ))
        }
        BodyIn::Done => {
            let conn = c.conn.clone();
            let complete = c.complete.clone();
            let cyc = cycle.clone().unbind();
            drop(c);
            runloop::await_rust(py, async move {
                tokio::select! {
                    _ = conn.gone() => {}
                    _ = complete.wait() => {}
                }
                Box::new(move |py: Python<'_>, _| {
                    cyc.bind(py).borrow_mut().disconnected = true;
                    disconnect_msg(py)
                }) as Resolved
            })
        }
    }
}

/// The bytes of a message field (`bytes`, `bytearray` or `memoryview`), copied unless large.
pub fn body_bytes(v: &Bound<'_, PyAny>, what: &str) -> PyResult<Bytes> {
    if let Ok(b) = v.cast::<PyBytes>() {
        let data = b.as_bytes();
        if data.len() >= 16 * 1024 {
            let owned: pyo3::pybacked::PyBackedBytes = b.clone().into();
            return Ok(Bytes::from_owner(owned));
        }
        return Ok(Bytes::copy_from_slice(data));
    }
    if let Ok(b) = v.cast::<PyByteArray>() {
        return Ok(Bytes::from(b.to_vec()));
    }
    if v.is_instance_of::<pyo3::types::PyMemoryView>() {
        let b: Vec<u8> = v.call_method0("tobytes")?.extract()?;
        return Ok(Bytes::from(b));
    }
    Err(PyTypeError::new_err(format!(
        "{what} must be bytes, not {}",
        v.get_type().name()?
    )))
}

/// The message's `type`, as a dict (a mapping is converted).
pub fn message<'py>(msg: &Bound<'py, PyAny>) -> PyResult<(Bound<'py, PyDict>, String)> {
    let py = msg.py();
    let d = match msg.cast::<PyDict>() {
        Ok(d) => d.clone(),
        Err(_) => py
            .get_type::<PyDict>()
            .call1((msg,))
            .map_err(|_| PyTypeError::new_err("an ASGI message must be a dict"))?
            .cast_into::<PyDict>()?,
    };
    let t = d
        .get_item(intern!(py, "type"))?
        .ok_or_else(|| PyValueError::new_err("an ASGI message needs a 'type'"))?;
    let t = t
        .cast::<PyString>()
        .map_err(|_| PyTypeError::new_err("an ASGI message's 'type' must be a str"))?
        .to_str()?
        .to_owned();
    Ok((d, t))
}

/// `status` and `headers` of a `*.response.start` message, as a response head.
pub fn response_head(d: &Bound<'_, PyDict>) -> PyResult<ResponseHead> {
    let py = d.py();
    let status: u16 = d
        .get_item(intern!(py, "status"))?
        .ok_or_else(|| PyValueError::new_err("http.response.start needs a 'status'"))?
        .extract()
        .map_err(|_| PyTypeError::new_err("'status' must be an int from 100 to 999"))?;
    if !(100..=999).contains(&status) {
        return Err(PyValueError::new_err(format!(
            "'status' {status} is not an HTTP status code"
        )));
    }
    let mut head = ResponseHead::new(status, None);
    if let Some(hs) = d.get_item(intern!(py, "headers"))? {
        // The usual shape, a list of (bytes, bytes) tuples, read without copies.
        if let Ok(list) = hs.cast::<pyo3::types::PyList>() {
            for item in list.iter() {
                if let Ok(t) = item.cast::<pyo3::types::PyTuple>()
                    && t.len() == 2
                {
                    let (n, v) = (t.get_item(0)?, t.get_item(1)?);
                    if let (Ok(n), Ok(v)) = (n.cast::<PyBytes>(), v.cast::<PyBytes>()) {
                        push_header(&mut head, n.as_bytes(), v.as_bytes())?;
                        continue;
                    }
                }
                header_pair(&mut head, &item)?;
            }
        } else {
            for item in hs.try_iter()? {
                header_pair(&mut head, &item?)?;
            }
        }
    }
    Ok(head)
}

fn push_header(head: &mut ResponseHead, n: &[u8], v: &[u8]) -> PyResult<()> {
    head.push(n, v).map_err(|e| {
        let name = String::from_utf8_lossy(n).into_owned();
        match e {
            HeaderError::InvalidName => {
                PyValueError::new_err(format!("invalid response header name {name:?}"))
            }
            e => PyValueError::new_err(format!("response header {name:?}: {e}")),
        }
    })
}

/// A header given as any two-item iterable of bytes-like values.
fn header_pair(head: &mut ResponseHead, item: &Bound<'_, PyAny>) -> PyResult<()> {
    let mut pair = item.try_iter()?;
    let (Some(n), Some(v), None) = (pair.next(), pair.next(), pair.next()) else {
        return Err(PyValueError::new_err(
            "each response header must be a [name, value] pair",
        ));
    };
    let (n, v) = (n?, v?);
    push_header(head, &header_bytes(&n)?, &header_bytes(&v)?)
}

fn header_bytes(v: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(b) = v.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    if let Ok(b) = v.cast::<PyByteArray>() {
        return Ok(b.to_vec());
    }
    Err(PyTypeError::new_err(format!(
        "response header names and values must be bytes, not {}",
        v.get_type().name()?
    )))
}

fn truthy(d: &Bound<'_, PyDict>, key: &Bound<'_, PyString>) -> PyResult<bool> {
    match d.get_item(key)? {
        Some(v) => v.is_truthy(),
        None => Ok(false),
    }
}

/// `send(message)`.
fn send(
    py: Python<'_>,
    cycle: &Bound<'_, HttpCycle>,
    msg: &Bound<'_, PyAny>,
) -> PyResult<Py<PyAny>> {
    let (d, t) = message(msg)?;
    let mut c = cycle.borrow_mut();
    match t.as_str() {
        "http.response.start" => {
            if c.start.is_some() || c.reply.is_none() {
                return Err(PyRuntimeError::new_err(
                    "Expected ASGI message 'http.response.body', but got 'http.response.start'",
                ));
            }
            c.start = Some(response_head(&d)?);
            runloop::ready_none(py)
        }
        "http.response.body" => {
            if c.complete.is_set() {
                return Err(PyRuntimeError::new_err(
                    "Unexpected ASGI message 'http.response.body' sent after the response \
                     was complete",
                ));
            }
            if c.start.is_none() && c.tx.is_none() {
                return Err(PyRuntimeError::new_err(
                    "Expected ASGI message 'http.response.start', but got 'http.response.body'",
                ));
            }
            let body = match d.get_item(intern!(py, "body"))? {
                Some(b) => body_bytes(&b, "'body'")?,
                None => Bytes::new(),
            };
            let more = truthy(&d, intern!(py, "more_body"))?;
            if let Some(head) = c.start.take() {
                let reply = c.reply.take().expect("a reply before the first body");
                if !more {
                    let chunks = if body.is_empty() {
                        Vec::new()
                    } else {
                        vec![body]
                    };
                    runloop::reply(
                        py,
                        reply,
                        Outcome::Reply(Reply::new(head, ReplyBody::Full(chunks))),
                    );
                    c.complete.set();
                    return runloop::ready_none(py);
                }
                let (tx, rx) = stream::channel();
                runloop::reply(
                    py,
                    reply,
                    Outcome::Reply(Reply::new(head, ReplyBody::Stream(rx))),
                );
                c.tx = Some(Arc::new(tx));
            }
            let tx = c.tx.clone().expect("streaming");
            if !more {
                c.tx = None;
                c.complete.set();
            }
            if body.is_empty() || c.disconnected {
                return runloop::ready_none(py);
            }
            match tx.try_send(Ok(body)) {
                stream::TrySend::Sent => runloop::ready_none(py),
                stream::TrySend::Closed => {
                    c.disconnected = true;
                    runloop::ready_none(py)
                }
                stream::TrySend::Full(chunk) => {
                    drop(c);
                    runloop::await_rust(py, async move {
                        let _ = tx.send(chunk).await;
                        Box::new(|py: Python<'_>, _| Ok(py.None())) as Resolved
                    })
                }
            }
        }
        other => Err(PyRuntimeError::new_err(format!(
            "Unexpected ASGI message '{other}' sent for an http scope (expected \
             'http.response.start' or 'http.response.body')"
        ))),
    }
}

/// Ends the stream of a reply that cannot be completed: the client sees it cut.
fn abort(tx: Arc<stream::Sender>, why: &str) {
    let e = Err(StreamAborted(why.to_string()));
    if let stream::TrySend::Full(e) = tx.try_send(e) {
        runloop::spawn_rust(async move {
            let _ = tx.send(e).await;
        });
    }
}

#[pymethods]
impl HttpCycle {
    /// Called by the bridge when the app's coroutine ended (`exc`: what it raised).
    #[pyo3(signature = (exc))]
    fn done(&mut self, py: Python<'_>, exc: Option<&Bound<'_, PyAny>>) {
        let failed = match exc {
            Some(e) => {
                let err = PyErr::from_value(e.clone());
                let tb = crate::python::format_traceback(py, &err);
                tracing::error!(
                    "Error handling request {}\n{}",
                    self.target(),
                    tb.trim_end()
                );
                true
            }
            None => false,
        };
        if let Some(reply) = self.reply.take() {
            match self.start.take() {
                None => {
                    if !failed {
                        tracing::error!(
                            "Error handling request {}: the ASGI app returned without starting \
                             a response",
                            self.target()
                        );
                    }
                    runloop::reply(py, reply, Outcome::Failed);
                }
                Some(head) => {
                    if !failed {
                        tracing::error!(
                            "Error handling request {}: the ASGI app returned without completing \
                             its response; the connection is closed",
                            self.target()
                        );
                    }
                    let (tx, rx) = stream::channel();
                    let _ = tx.try_send(Err(StreamAborted("the app did not complete it".into())));
                    runloop::reply(
                        py,
                        reply,
                        Outcome::Reply(Reply::new(head, ReplyBody::Stream(rx))),
                    );
                }
            }
        } else if let Some(tx) = self.tx.take() {
            if !failed {
                tracing::error!(
                    "Error handling request {}: the ASGI app returned without completing its \
                     response; the connection is closed",
                    self.target()
                );
            }
            abort(tx, "the app did not complete the response");
        }
        self.complete.set();
    }
}

/// The `receive` callable of one request.
#[pyclass(module = "ferricorn", frozen)]
pub struct Receive {
    cycle: Py<HttpCycle>,
}

#[pymethods]
impl Receive {
    fn __call__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        receive(py, self.cycle.bind(py))
    }
}

/// The `send` callable of one request.
#[pyclass(module = "ferricorn", frozen)]
pub struct Send {
    cycle: Py<HttpCycle>,
}

#[pymethods]
impl Send {
    fn __call__(&self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        send(py, self.cycle.bind(py), message)
    }
}

/// On the loop thread: the scope, the cycle, and the app's task for one request.
pub fn start(py: Python<'_>, req: Request, reply: oneshot::Sender<Outcome>) {
    let target = req.head.target_lossy().into_owned();
    let started = (|| -> PyResult<()> {
        let scope = runloop::with_ctx(|c| c.scope.http(py, &req, c.state.as_ref()))?;
        let cycle = Bound::new(py, HttpCycle::new(req, reply))?;
        let recv = Bound::new(
            py,
            Receive {
                cycle: cycle.clone().unbind(),
            },
        )?;
        let send = Bound::new(
            py,
            Send {
                cycle: cycle.clone().unbind(),
            },
        )?;
        runloop::start_task(
            py,
            scope.into_any(),
            recv.into_any(),
            send.into_any(),
            cycle.into_any(),
        )
    })();
    if let Err(e) = started {
        // The reply channel went with the cycle (or was never given one): the connection
        // answers 500.
        tracing::error!(
            "Error handling request {target}\n{}",
            crate::python::format_traceback(py, &e).trim_end()
        );
    }
}

//! `start_response` and its `write` callable (PEP 3333): the status and the app's header list
//! are validated and written straight into the response head's wire format
//! ([`crate::http::response::ResponseHead`]); hop-by-hop headers are dropped there.
//!
//! `write()` sends as PEP 3333 says (it returns once the data is on its way, waiting with the GIL
//! released while the client is slow): on a Python thread, the first call starts the reply with
//! the head and the rest goes through the same bounded channel as an iterated body. A call made
//! on the event-loop thread (`--threads 1`, an app called inline) cannot wait for the client, so
//! what it writes is kept until the app returns, and the worker then calls the app on its Python
//! thread from then on, where `write()` streams.

use std::borrow::Cow;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use pyo3::exceptions::{PyAssertionError, PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use pyo3::{ffi, intern};
use tokio::sync::oneshot;

use super::request::latin1_data;
use crate::http::dispatch::{Outcome, Reply, ReplyBody};
use crate::http::response::{HeaderError, ResponseHead};
use crate::http::stream;

pub type Head = ResponseHead;

thread_local! {
    /// On a Python thread: the reply of the request it runs while its head is not sent yet
    /// (`write()` starts the response with it).
    static REPLY: Cell<Option<oneshot::Sender<Outcome>>> = const { Cell::new(None) };
}

/// Offers the running request's reply to `write()` (a Python thread, before the app is called
/// or its result iterated).
pub fn offer_reply(r: oneshot::Sender<Outcome>) {
    REPLY.set(Some(r));
}

/// The running request's reply, unless `write()` has already started the response with it.
pub fn take_reply() -> Option<oneshot::Sender<Outcome>> {
    REPLY.take()
}

/// Set once an app called `write()` on the event-loop thread: this worker then calls the app on
/// a Python thread, where `write()` can wait for the client.
static WROTE_INLINE: AtomicBool = AtomicBool::new(false);

/// Whether the app has used `write()` where it cannot stream (see [`WROTE_INLINE`]).
pub fn wrote_inline() -> bool {
    WROTE_INLINE.load(Ordering::Relaxed)
}

fn bad_status(status: &Bound<'_, PyString>) -> PyErr {
    PyValueError::new_err(format!(
        "start_response: status must be a str like '200 OK', got {:?}",
        status.to_string_lossy()
    ))
}

/// The code and reason of a status line (`200 OK`): three digits, a space, a latin-1 reason
/// without control characters; a bare code (`200`) is accepted, as Gunicorn does, with its
/// canonical reason. An ASCII status (nearly all) is read in place; another is read as UTF-8.
fn parse_status(status: &Bound<'_, PyString>) -> PyResult<(u16, Option<Box<str>>)> {
    let ascii = latin1_data(status).filter(|b| b.is_ascii());
    let owned;
    let (code, reason): (&[u8], &str) = match ascii {
        Some(b) => {
            let (c, r) = match memchr::memchr(b' ', b) {
                Some(i) => (&b[..i], &b[i + 1..]),
                None => (b, &b""[..]),
            };
            // ASCII, so UTF-8.
            (c, std::str::from_utf8(r).unwrap_or_default())
        }
        None => {
            owned = status.to_str()?;
            let (c, r) = owned.split_once(' ').unwrap_or((owned, ""));
            (c.as_bytes(), r)
        }
    };
    let code = match code {
        &[a, b, c] if code.iter().all(u8::is_ascii_digit) => {
            u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
        }
        _ => return Err(bad_status(status)),
    };
    // RFC 9110 §15: 100–599; the reason is latin-1 (PEP 3333), without controls.
    if !(100..=599).contains(&code)
        || reason
            .chars()
            .any(|c| c.is_control() || u32::from(c) > 0xff)
    {
        return Err(bad_status(status));
    }
    let canonical = http::StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason());
    let own = canonical != Some(reason) && !(reason.is_empty() && canonical.is_some());
    Ok((code, own.then(|| reason.into())))
}

/// The latin-1 bytes of `s` (borrowed from the str when CPython stores it one byte per
/// character, the common case).
fn latin1_bytes<'a>(s: &'a Bound<'_, PyString>, what: &str) -> PyResult<Cow<'a, [u8]>> {
    if let Some(b) = latin1_data(s) {
        return Ok(Cow::Borrowed(b));
    }
    let text = s.to_cow()?;
    text.chars()
        .map(|c| {
            u8::try_from(u32::from(c)).map_err(|_| {
                PyValueError::new_err(format!(
                    "start_response: {what} {text:?} is not latin-1 (PEP 3333 requires it)"
                ))
            })
        })
        .collect::<PyResult<Vec<u8>>>()
        .map(Cow::Owned)
}

fn parse_headers(head: &mut ResponseHead, headers: &Bound<'_, PyAny>) -> PyResult<()> {
    // A list (the usual case) is walked directly, without a Python iterator object.
    match headers.cast::<PyList>() {
        Ok(list) => {
            for item in list.iter() {
                add_header(&item, head)?;
            }
        }
        Err(_) => {
            for item in headers.try_iter()? {
                add_header(&item?, head)?;
            }
        }
    }
    Ok(())
}

fn add_header(item: &Bound<'_, PyAny>, head: &mut ResponseHead) -> PyResult<()> {
    let pair = item.cast::<PyTuple>().map_err(|_| {
        PyTypeError::new_err("start_response: each header must be a (name, value) tuple")
    })?;
    if pair.len() != 2 {
        return Err(PyTypeError::new_err(
            "start_response: each header must be a (name, value) tuple",
        ));
    }
    let name = pair.get_borrowed_item(0)?;
    let value = pair.get_borrowed_item(1)?;
    let (Ok(name), Ok(value)) = (name.cast::<PyString>(), value.cast::<PyString>()) else {
        return Err(PyTypeError::new_err(
            "start_response: header names and values must be str",
        ));
    };
    let n = latin1_bytes(&name, "header name")?;
    let v = latin1_bytes(&value, "header value")?;
    head.push(&n, &v).map_err(|e| {
        let (name, value) = (name.to_string_lossy(), value.to_string_lossy());
        match e {
            HeaderError::InvalidName => {
                PyValueError::new_err(format!("start_response: invalid header name {name:?}"))
            }
            HeaderError::InvalidValue => PyValueError::new_err(format!(
                "start_response: invalid value for header {name:?}: control characters"
            )),
            HeaderError::BadLength => PyValueError::new_err(format!(
                "start_response: Content-Length {value:?} is not a number"
            )),
            HeaderError::ConflictingLength => PyValueError::new_err(format!(
                "start_response: Content-Length {value:?} conflicts with an earlier Content-Length"
            )),
        }
    })
}

/// A reply whose head has gone out: where the rest of its body goes.
pub struct Streaming {
    pub tx: stream::Sender,
    /// Bytes the app's `Content-Length` still allows.
    pub remaining: Option<u64>,
    /// The reply, handed to the connection once its first chunks are queued: woken for the
    /// head, the connection finds them, instead of being woken again for them. (In a mutex
    /// only because a `pyclass` must be `Sync`; it is never contended.)
    announce: std::sync::Mutex<Option<(oneshot::Sender<Outcome>, Reply)>>,
}

impl Streaming {
    fn announce(&mut self) {
        let pending = self
            .announce
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some((to, reply)) = pending {
            let _ = to.send(Outcome::Reply(reply));
        }
    }

    /// Queues `chunks` up to the app's `Content-Length`; the reply is announced before any wait
    /// for room (the connection must be draining). False: nothing more can go out.
    fn queue(&mut self, py: Python<'_>, chunks: impl Iterator<Item = Bytes>) -> bool {
        for c in chunks {
            let c = match self.remaining.as_mut() {
                Some(0) => return false,
                Some(left) => {
                    let c = if c.len() as u64 > *left {
                        c.slice(..*left as usize)
                    } else {
                        c
                    };
                    *left -= c.len() as u64;
                    c
                }
                None => c,
            };
            let sent = match self.tx.try_send(Ok(c)) {
                stream::TrySend::Sent => true,
                stream::TrySend::Closed => false,
                stream::TrySend::Full(c) => {
                    self.announce();
                    super::response::send(py, &self.tx, c)
                }
            };
            if !sent {
                return false;
            }
        }
        true
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        self.announce();
    }
}

/// The state behind one request's `start_response` and `write` callables.
///
/// The app gets the bound methods `start_response` and `write` of this object: builtin methods
/// that CPython calls with its fast calling convention (no argument tuple). Both are made once
/// and kept here; they refer back to this object, and the cycle is broken by
/// [`StartResponse::release`] once the object is not to serve another request (the object is
/// not tracked by Python's collector).
#[pyclass(module = "ferricorn")]
pub struct StartResponse {
    head: Option<Head>,
    /// Body bytes were produced, so the head counts as sent (for `exc_info`).
    pub headers_sent: bool,
    /// Chunks given to `write()` before the reply started, sent before the iterable's.
    pub written: Vec<Bytes>,
    /// The reply has started (its head is sent): body bytes go here.
    pub stream: Option<Streaming>,
    /// The response is over: `write()` refuses.
    pub finished: bool,
    /// The bound `start_response` method, made on first use.
    callable: Option<Py<PyAny>>,
    /// The bound `write` method, made on the first `start_response` call.
    write: Option<Py<PyAny>>,
}

impl StartResponse {
    pub fn new() -> Self {
        StartResponse {
            head: None,
            headers_sent: false,
            written: Vec::new(),
            stream: None,
            finished: false,
            callable: None,
            write: None,
        }
    }

    /// Starts the reply with `reply`: the head goes out with a streamed body (whose first chunks
    /// are what `write()` kept), announced by the first [`StartResponse::send_body`]. False when
    /// there is no head yet.
    pub fn start_stream(
        &mut self,
        reply: oneshot::Sender<Outcome>,
        log_vars: Vec<(String, String)>,
    ) -> bool {
        let Some(head) = self.head.clone() else {
            let _ = reply.send(Outcome::Failed);
            return false;
        };
        self.headers_sent = true;
        let (tx, rx) = stream::channel();
        let remaining = head.content_length;
        let announce = Reply {
            log_vars,
            ..Reply::new(head, ReplyBody::Stream(rx))
        };
        self.stream = Some(Streaming {
            tx,
            remaining,
            announce: std::sync::Mutex::new(Some((reply, announce))),
        });
        true
    }

    /// Sends `chunk` (after what `write()` kept) on a started reply, up to the app's
    /// `Content-Length`. False: nothing more can go out (the client is gone, or the declared
    /// length is reached).
    pub fn send_body(&mut self, py: Python<'_>, chunk: Option<Bytes>) -> bool {
        let Some(s) = self.stream.as_mut() else {
            return false;
        };
        let kept = std::mem::take(&mut self.written);
        let open = s.queue(py, kept.into_iter().chain(chunk));
        s.announce();
        open && s.remaining != Some(0)
    }

    pub fn head(&self) -> Option<&Head> {
        self.head.as_ref()
    }

    /// The head, taken out (once the response is built no Python code can change it).
    pub fn take_head(&mut self) -> Option<Head> {
        self.head.take()
    }

    /// The `start_response` callable to give the app.
    pub fn callable<'py>(sr: &Bound<'py, StartResponse>) -> PyResult<Bound<'py, PyAny>> {
        let py = sr.py();
        if let Some(c) = &sr.borrow().callable {
            return Ok(c.bind(py).clone());
        }
        let c = sr.getattr(intern!(py, "start_response"))?;
        sr.borrow_mut().callable = Some(c.clone().unbind());
        Ok(c)
    }

    /// Whether nothing but `holders` references to `sr` exist besides its own two callables,
    /// and nothing but `sr` holds those: then no Python code can reach any of them, and they
    /// can serve another request.
    pub fn unshared(sr: &Bound<'_, StartResponse>, holders: isize) -> bool {
        // The borrow (which holds a reference of its own) ends before the counts are read.
        let (c, w) = {
            let this = sr.borrow();
            (
                this.callable.as_ref().map(|c| c.as_ptr()),
                this.write.as_ref().map(|w| w.as_ptr()),
            )
        };
        let own = isize::from(c.is_some()) + isize::from(w.is_some());
        // SAFETY: reading the reference counts of live objects (the callables are kept alive
        // by `sr`).
        unsafe {
            ffi::Py_REFCNT(sr.as_ptr()) == holders + own
                && c.is_none_or(|c| ffi::Py_REFCNT(c) == 1)
                && w.is_none_or(|w| ffi::Py_REFCNT(w) == 1)
        }
    }

    /// Ready for another request (see [`StartResponse::unshared`]).
    #[inline]
    pub fn reset(&mut self) {
        self.head = None;
        self.headers_sent = false;
        self.written.clear();
        self.stream = None;
        self.finished = false;
    }

    /// Breaks the cycles with the callables (the app may still hold any of them).
    pub fn release(sr: &Bound<'_, StartResponse>) {
        let (c, w) = {
            let mut this = sr.borrow_mut();
            (this.callable.take(), this.write.take())
        };
        drop((c, w));
    }
}

impl Default for StartResponse {
    fn default() -> Self {
        Self::new()
    }
}

#[pymethods]
impl StartResponse {
    /// PEP 3333's `start_response(status, response_headers, exc_info=None)`.
    #[pyo3(signature = (status, headers, exc_info = None))]
    fn start_response(
        slf: Bound<'_, Self>,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let exc_info = exc_info.filter(|e| !e.is_none());
        {
            let this = slf.borrow();
            if let Some(exc) = exc_info {
                if this.headers_sent {
                    // PEP 3333: too late to change the response; re-raise the app's error.
                    let value = exc.get_item(1)?;
                    let tb = exc.get_item(2)?;
                    let value = value.call_method1("with_traceback", (tb,))?;
                    return Err(PyErr::from_value(value));
                }
            } else if this.head.is_some() {
                return Err(PyAssertionError::new_err(
                    "start_response called a second time without exc_info",
                ));
            }
        }
        let status = status
            .cast::<PyString>()
            .map_err(|_| PyTypeError::new_err("start_response: status must be a str"))?;
        let (code, reason) = parse_status(status)?;
        if !headers.is_instance_of::<PyList>() && !headers.is_instance_of::<PyTuple>() {
            return Err(PyTypeError::new_err(
                "start_response: headers must be a list of (name, value) tuples",
            ));
        }
        let mut head = ResponseHead::new(code, reason);
        parse_headers(&mut head, headers)?;
        let py = slf.py();
        slf.borrow_mut().head = Some(head);
        // The write callable, made once.
        if let Some(w) = &slf.borrow().write {
            return Ok(w.clone_ref(py));
        }
        let w = slf.getattr(intern!(py, "write"))?.unbind();
        slf.borrow_mut().write = Some(w.clone_ref(py));
        Ok(w)
    }

    /// PEP 3333's legacy `write(data)` callable: sends `data` (see the module comment).
    fn write(&mut self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let b = data
            .cast::<PyBytes>()
            .map_err(|_| PyTypeError::new_err("write() argument must be bytes"))?;
        if self.head.is_none() {
            return Err(PyAssertionError::new_err(
                "write() called before start_response",
            ));
        }
        if self.finished {
            return Err(PyOSError::new_err(
                "write() called after the response ended",
            ));
        }
        if b.as_bytes().is_empty() {
            return Ok(());
        }
        self.headers_sent = true;
        let chunk = super::response::to_bytes(data)?;
        if self.stream.is_none() {
            match take_reply() {
                Some(reply) => {
                    self.start_stream(reply, Vec::new());
                }
                None => {
                    // The event-loop thread (an inline call), or an iteration that sends its
                    // head itself at the next chunk: kept until then.
                    if tokio::runtime::Handle::try_current().is_err() {
                        self.written.push(chunk);
                        return Ok(());
                    }
                    if !WROTE_INLINE.swap(true, Ordering::Relaxed) {
                        tracing::info!(
                            "The app calls write(): what it writes while called on the event-loop \
                             thread is sent when it returns; from now on this worker calls the \
                             app on its Python thread, where write() sends as it goes"
                        );
                    }
                    self.written.push(chunk);
                    return Ok(());
                }
            }
        }
        if self.send_body(py, Some(chunk))
            || self.stream.as_ref().is_some_and(|s| s.remaining == Some(0))
        {
            Ok(())
        } else {
            Err(PyOSError::new_err("the client closed the connection"))
        }
    }
}

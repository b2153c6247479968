//! Turning what the app returned into a reply: a list/tuple at once, anything else iterated on
//! a Python thread into a bounded channel, a real file behind `wsgi.file_wrapper` read by the
//! server; `close()` always called.

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use tokio::sync::oneshot;

use super::file_wrapper::{FileWrapper, RealFile};
use super::pool::waiting_on_client;
use super::start_response::{Head, StartResponse, offer_reply, take_reply};
use super::{Pending, WsgiApp};
use crate::http::dispatch::{Chunk, Outcome, Reply, ReplyBody, StreamAborted};
use crate::http::stream;

/// Read size for files sent by the server itself.
const FILE_CHUNK: usize = 256 * 1024;
/// Body chunks at least this big are handed to the connection without copying.
const ZERO_COPY_MIN: usize = 16 * 1024;

impl WsgiApp {
    /// Consumes a pending result: starts the reply (the head once the first body bytes exist),
    /// then sends the body chunks. `reply` is `None` when `write()` started the reply during the
    /// call already.
    pub fn iterate(&self, py: Python<'_>, p: Pending, reply: Option<oneshot::Sender<Outcome>>) {
        let sr = p.sr.clone_ref(py);
        self.consume(py, p, reply);
        // The request is over: `start_response` and its `write` no longer hold each other.
        StartResponse::release(sr.bind(py));
    }

    fn consume(&self, py: Python<'_>, p: Pending, reply: Option<oneshot::Sender<Outcome>>) {
        let Pending {
            result,
            sr,
            target,
            log_vars,
            post_request,
            input,
        } = p;
        let result = result.bind(py);
        let sr = sr.bind(py);
        let mut log_vars = Some(log_vars);
        // write() during the iteration starts the reply with it (or the first chunk does).
        if let Some(r) = reply {
            offer_reply(r);
        }
        let failed = |py: Python<'_>, e: &PyErr| {
            log_app_error(py, &target, e);
            if let Some(r) = take_reply() {
                let _ = r.send(Outcome::Failed);
            }
        };

        // A real file behind wsgi.file_wrapper: read by the server, no Python per chunk.
        let mut sent_file = false;
        if let Ok(fw) = result.cast::<FileWrapper>() {
            let head = sr.borrow().head().cloned();
            if let Some(mut head) = head
                && sr.borrow().written.is_empty()
                && sr.borrow().stream.is_none()
                && let Some(file) = fw.borrow().real_file(py, head.content_length)
                && let Some(r) = take_reply()
            {
                if head.content_length.is_none() {
                    let _ = head.push(b"Content-Length", file.len.to_string().as_bytes());
                }
                let (tx, rx) = stream::channel();
                let _ = r.send(Outcome::Reply(Reply {
                    log_vars: log_vars.take().unwrap_or_default(),
                    ..Reply::new(head, ReplyBody::Stream(rx))
                }));
                py.detach(|| send_file(file, &tx));
                sent_file = true;
            }
        }

        if !sent_file {
            match result.try_iter() {
                Ok(iter) => {
                    for item in iter {
                        let chunk = match item.and_then(|o| to_bytes(&o)) {
                            Ok(c) => c,
                            Err(e) => {
                                let started = sr.borrow_mut().stream.take();
                                match started {
                                    None => failed(py, &e),
                                    Some(st) => {
                                        log_app_error(py, &target, &e);
                                        let why = "the app raised while streaming";
                                        send(py, &st.tx, Err(StreamAborted(why.into())));
                                    }
                                }
                                break;
                            }
                        };
                        if chunk.is_empty() {
                            continue;
                        }
                        let mut s = sr.borrow_mut();
                        if s.stream.is_none() {
                            // First body bytes: the head is sent now.
                            let Some(r) = take_reply() else { break };
                            if !s.start_stream(r, log_vars.take().unwrap_or_default()) {
                                drop(s);
                                let e = pyo3::exceptions::PyAssertionError::new_err(
                                    "the app produced body data before calling start_response",
                                );
                                log_app_error(py, &target, &e);
                                break;
                            }
                        }
                        if !s.send_body(py, Some(chunk)) {
                            break;
                        }
                    }
                }
                Err(e) => failed(py, &e),
            }
            let mut s = sr.borrow_mut();
            if s.stream.is_some() {
                // What write() gave after the last chunk.
                if !s.written.is_empty() {
                    s.send_body(py, None);
                }
            } else if let Some(r) = take_reply() {
                // The iterable produced no bytes: the head is whatever start_response said,
                // with what write() gave.
                match s.head().cloned() {
                    Some(head) => {
                        let body = std::mem::take(&mut s.written);
                        let _ = r.send(Outcome::Reply(Reply {
                            log_vars: log_vars.take().unwrap_or_default(),
                            ..Reply::new(head, ReplyBody::Full(body))
                        }));
                    }
                    None => {
                        drop(s);
                        let e = pyo3::exceptions::PyAssertionError::new_err(
                            "the app returned without calling start_response",
                        );
                        log_app_error(py, &target, &e);
                        let _ = r.send(Outcome::Failed);
                    }
                }
            }
        }
        sr.borrow_mut().finished = true;
        close(py, result, &target);
        // The body ends (the connection finishes the response), then the hook runs, then the
        // request's wsgi.input is closed.
        sr.borrow_mut().stream = None;
        drop(take_reply());
        drop(post_request);
        drop(input);
    }
}

/// A list or tuple result: every item must be bytes. When `write()` started the reply during
/// the call, the items are sent on it and the body returned is empty.
pub(super) fn complete(
    result: &Bound<'_, PyAny>,
    sr: &Bound<'_, StartResponse>,
) -> PyResult<(Head, Vec<Bytes>)> {
    let mut s = sr.borrow_mut();
    let mut body = std::mem::take(&mut s.written);
    let items: PyResult<()> = (|| {
        let mut add = |item: &Bound<'_, PyAny>| -> PyResult<()> {
            let b = to_bytes(item)?;
            if !b.is_empty() {
                body.push(b);
            }
            Ok(())
        };
        // The caller checked that it is exactly a list or a tuple: walked without an iterator.
        if let Ok(list) = result.cast_exact::<PyList>() {
            for item in list.iter() {
                add(&item)?;
            }
        } else if let Ok(tuple) = result.cast_exact::<PyTuple>() {
            for item in tuple.iter_borrowed() {
                add(&item)?;
            }
        } else {
            for item in result.try_iter()? {
                add(&item?)?;
            }
        }
        Ok(())
    })();
    s.finished = true;
    if s.stream.is_some() {
        match &items {
            Ok(()) => {
                s.written = std::mem::take(&mut body);
                s.send_body(result.py(), None);
            }
            Err(_) => {
                if let Some(st) = &s.stream {
                    let why = "the app's result was not bytes";
                    send(result.py(), &st.tx, Err(StreamAborted(why.into())));
                }
            }
        }
        s.stream = None;
    }
    items?;
    let head = s.take_head().ok_or_else(|| {
        pyo3::exceptions::PyAssertionError::new_err(
            "the app returned without calling start_response",
        )
    })?;
    Ok((head, body))
}

pub(super) fn to_bytes(o: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    let b = o.cast::<PyBytes>().map_err(|_| {
        pyo3::exceptions::PyTypeError::new_err(format!(
            "the app's response iterable yielded {} instead of bytes",
            o.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    })?;
    let data = b.as_bytes();
    if data.len() >= ZERO_COPY_MIN {
        let owned: pyo3::pybacked::PyBackedBytes = b.clone().into();
        Ok(Bytes::from_owner(owned))
    } else {
        Ok(Bytes::copy_from_slice(data))
    }
}

/// Sends one chunk; the GIL is released only when the channel is full (and the wait is not
/// counted as busy). False: client gone.
pub(super) fn send(py: Python<'_>, tx: &stream::Sender, c: Chunk) -> bool {
    match tx.try_send(c) {
        stream::TrySend::Sent => true,
        stream::TrySend::Closed => false,
        stream::TrySend::Full(c) => py.detach(|| waiting_on_client(|| tx.send_blocking(c))),
    }
}

fn send_file(f: RealFile, tx: &stream::Sender) {
    use std::os::unix::fs::FileExt;
    let mut pos = f.offset;
    let end = f.offset + f.len;
    while pos < end {
        let n = ((end - pos) as usize).min(FILE_CHUNK);
        let mut buf = vec![0u8; n];
        match f.file.read_at(&mut buf, pos) {
            Ok(0) => {
                let _ = tx.send_blocking(Err(StreamAborted("file shrank while being sent".into())));
                return;
            }
            Ok(k) => {
                buf.truncate(k);
                pos += k as u64;
                if !waiting_on_client(|| tx.send_blocking(Ok(Bytes::from(buf)))) {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                let _ =
                    tx.send_blocking(Err(StreamAborted(format!("reading the file failed: {e}"))));
                return;
            }
        }
    }
}

/// PEP 3333: the server calls `close()` on the result if it has one, always.
fn close(py: Python<'_>, result: &Bound<'_, PyAny>, target: &str) {
    match result.hasattr(pyo3::intern!(py, "close")) {
        Ok(true) => {
            if let Err(e) = result.call_method0(pyo3::intern!(py, "close")) {
                log_app_error(py, target, &e);
            }
        }
        Ok(false) => {}
        Err(e) => log_app_error(py, target, &e),
    }
}

pub(super) fn log_app_error(py: Python<'_>, target: &str, e: &PyErr) {
    let tb = crate::python::format_traceback(py, e);
    tracing::error!(target: crate::logging::EXCEPTION, "Error handling request {target}\n{}", tb.trim_end());
}

//! Turning what the app returned into a reply: a list/tuple at once, anything else iterated on
//! a Python thread into a bounded channel, a real file behind `wsgi.file_wrapper` read by the
//! server; `close()` always called.

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use tokio::sync::oneshot;

use super::file_wrapper::{FileWrapper, RealFile};
use super::start_response::{Head, StartResponse};
use super::{Pending, WsgiApp};
use crate::http::dispatch::{Chunk, Outcome, Reply, ReplyBody, StreamAborted};
use crate::http::stream;

/// Read size for files sent by the server itself.
const FILE_CHUNK: usize = 256 * 1024;
/// Body chunks at least this big are handed to the connection without copying.
const ZERO_COPY_MIN: usize = 16 * 1024;

impl WsgiApp {
    /// Consumes a pending result: sends the head on `reply`, then the body chunks.
    pub fn iterate(&self, py: Python<'_>, p: Pending, reply: oneshot::Sender<Outcome>) {
        let Pending {
            result,
            sr,
            target,
            log_vars,
            // Dropped when this returns, after close(): then the hook runs.
            post_request: _post_request,
        } = p;
        let result = result.bind(py);
        let sr = sr.bind(py);
        let mut reply = Some(reply);
        let mut log_vars = Some(log_vars);
        let failed = |py: Python<'_>, e: &PyErr, reply: &mut Option<oneshot::Sender<Outcome>>| {
            log_app_error(py, &target, e);
            if let Some(r) = reply.take() {
                let _ = r.send(Outcome::Failed);
            }
        };

        // A real file behind wsgi.file_wrapper: read by the server, no Python per chunk.
        if let Ok(fw) = result.cast::<FileWrapper>() {
            let head = sr.borrow().head().cloned();
            if let Some(mut head) = head
                && sr.borrow().written.is_empty()
                && let Some(file) = fw.borrow().real_file(py, head.content_length)
            {
                if head.content_length.is_none() {
                    let _ = head.push(b"Content-Length", file.len.to_string().as_bytes());
                }
                let (tx, rx) = stream::channel();
                let _ = reply.take().expect("unsent").send(Outcome::Reply(Reply {
                    log_vars: log_vars.take().unwrap_or_default(),
                    ..Reply::new(head, ReplyBody::Stream(rx))
                }));
                py.detach(|| send_file(file, &tx));
                close(py, result, &target);
                return;
            }
        }

        let iter = match result.try_iter() {
            Ok(i) => i,
            Err(e) => {
                failed(py, &e, &mut reply);
                close(py, result, &target);
                return;
            }
        };
        let (tx, rx) = stream::channel();
        let mut rx = Some(rx);
        let mut remaining: Option<u64> = None;
        for item in iter {
            let chunk = match item.and_then(|o| to_bytes(&o)) {
                Ok(c) => c,
                Err(e) => {
                    if reply.is_some() {
                        failed(py, &e, &mut reply);
                    } else {
                        log_app_error(py, &target, &e);
                        send(
                            py,
                            &tx,
                            Err(StreamAborted("the app raised while streaming".into())),
                        );
                    }
                    break;
                }
            };
            if chunk.is_empty() {
                continue;
            }
            let mut pre = Vec::new();
            if let Some(r) = reply.take() {
                // First body bytes: the head is sent now.
                let mut s = sr.borrow_mut();
                s.headers_sent = true;
                let Some(head) = s.head().cloned() else {
                    drop(s);
                    let e = pyo3::exceptions::PyAssertionError::new_err(
                        "the app produced body data before calling start_response",
                    );
                    failed(py, &e, &mut Some(r));
                    break;
                };
                remaining = head.content_length;
                pre = std::mem::take(&mut s.written);
                let _ = r.send(Outcome::Reply(Reply {
                    log_vars: log_vars.take().unwrap_or_default(),
                    ..Reply::new(head, ReplyBody::Stream(rx.take().expect("once")))
                }));
            } else {
                pre.append(&mut sr.borrow_mut().written);
            }
            pre.push(chunk);
            let mut open = true;
            for c in pre {
                let c = match remaining.as_mut() {
                    Some(0) => break,
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
                if !send(py, &tx, Ok(c)) {
                    open = false;
                    break;
                }
            }
            if !open || remaining == Some(0) {
                break;
            }
        }
        if let Some(r) = reply.take() {
            // The iterable produced no bytes: the head is whatever start_response said.
            let s = sr.borrow();
            match s.head().cloned() {
                Some(head) => {
                    let body = s.written.clone();
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
                    failed(py, &e, &mut Some(r));
                }
            }
        }
        close(py, result, &target);
    }
}

/// A list or tuple result: every item must be bytes.
pub(super) fn complete(
    result: &Bound<'_, PyAny>,
    sr: &Bound<'_, StartResponse>,
) -> PyResult<(Head, Vec<Bytes>)> {
    let mut s = sr.borrow_mut();
    let mut body = std::mem::take(&mut s.written);
    for item in result.try_iter()? {
        let b = to_bytes(&item?)?;
        if !b.is_empty() {
            body.push(b);
        }
    }
    let head = s.take_head().ok_or_else(|| {
        pyo3::exceptions::PyAssertionError::new_err(
            "the app returned without calling start_response",
        )
    })?;
    Ok((head, body))
}

fn to_bytes(o: &Bound<'_, PyAny>) -> PyResult<Bytes> {
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

/// Sends one chunk; the GIL is released only when the channel is full. False: client gone.
fn send(py: Python<'_>, tx: &stream::Sender, c: Chunk) -> bool {
    match tx.try_send(c) {
        stream::TrySend::Sent => true,
        stream::TrySend::Closed => false,
        stream::TrySend::Full(c) => py.detach(|| tx.send_blocking(c)),
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
                if !tx.send_blocking(Ok(Bytes::from(buf))) {
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

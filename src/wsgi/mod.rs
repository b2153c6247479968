//! Calling a WSGI application (PEP 3333) and turning what it returns into a response.
//!
//! [`WsgiApp::call`] runs the app with the GIL held. A `list`/`tuple` result (the common case)
//! completes right there. Anything else — a generator, a `wsgi.file_wrapper` — is returned as
//! [`Pending`] and consumed by [`WsgiApp::iterate`] on a Python thread, which sends the head as
//! soon as the first body bytes exist (PEP 3333 lets `start_response` be called lazily) and then
//! streams chunks through a bounded channel; the GIL is released whenever that channel is full.
//! `close()` is always called on the result, whatever happens.

pub mod environ;
pub mod objects;
pub mod stream;

use bytes::Bytes;
use http::HeaderValue;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use tokio::sync::oneshot;

pub use environ::Request;
pub use objects::{Body, Head};
use objects::{FileWrapper, StartResponse};

/// A streamed body chunk, or the reason the stream must be cut (the client then sees an
/// incomplete response, which is the truth).
pub type Chunk = Result<Bytes, StreamAborted>;

#[derive(Debug)]
pub struct StreamAborted(pub String);

impl std::fmt::Display for StreamAborted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StreamAborted {}

/// Read size for files sent by the server itself.
const FILE_CHUNK: usize = 256 * 1024;
/// Body chunks at least this big are handed to the connection without copying.
const ZERO_COPY_MIN: usize = 16 * 1024;

/// The response of one request.
pub enum Reply {
    Complete {
        head: Head,
        body: Vec<Bytes>,
        log_environ: Vec<(String, String)>,
    },
    Stream {
        head: Head,
        body: stream::Receiver,
        log_environ: Vec<(String, String)>,
    },
    /// The app failed before a response started (already logged): send a 500.
    Failed,
}

/// The result of an app call that still needs iterating.
pub struct Pending {
    result: Py<PyAny>,
    sr: Py<StartResponse>,
    target: std::sync::Arc<str>,
    log_environ: Vec<(String, String)>,
}

/// What [`WsgiApp::call`] produced.
pub enum Called {
    Done(Reply),
    Iterate(Pending),
}

/// One worker's app and its per-worker environ template.
pub struct WsgiApp {
    app: Py<PyAny>,
    template: environ::Template,
    /// Environ keys (lower-case) the access log format prints.
    log_keys: Vec<String>,
}

impl WsgiApp {
    pub fn new(
        py: Python<'_>,
        app: Py<PyAny>,
        multithread: bool,
        multiprocess: bool,
        log_keys: Vec<String>,
    ) -> PyResult<WsgiApp> {
        Ok(WsgiApp {
            app,
            template: environ::Template::new(py, multithread, multiprocess)?,
            log_keys,
        })
    }

    /// Calls the app for `req`.
    pub fn call(&self, py: Python<'_>, req: Request) -> Called {
        let target = req.target.clone();
        let fail = |e: PyErr| {
            log_app_error(py, &target, &e);
            Called::Done(Reply::Failed)
        };
        let environ = match self.template.build(py, req) {
            Ok(e) => e,
            Err(e) => return fail(e),
        };
        let sr = match Bound::new(py, StartResponse::new()) {
            Ok(s) => s,
            Err(e) => return fail(e),
        };
        let result = match self.app.bind(py).call1((&environ, &sr)) {
            Ok(r) => r,
            Err(e) => return fail(e),
        };
        let log_environ = self.log_environ(&environ);
        if result.is_exact_instance_of::<PyList>() || result.is_exact_instance_of::<PyTuple>() {
            return Called::Done(match complete(&result, &sr) {
                Ok((head, body)) => Reply::Complete {
                    head,
                    body,
                    log_environ,
                },
                Err(e) => {
                    log_app_error(py, &target, &e);
                    Reply::Failed
                }
            });
        }
        Called::Iterate(Pending {
            result: result.unbind(),
            sr: sr.unbind(),
            target,
            log_environ,
        })
    }

    fn log_environ(&self, environ: &Bound<'_, PyDict>) -> Vec<(String, String)> {
        if self.log_keys.is_empty() {
            return Vec::new();
        }
        environ
            .iter()
            .filter_map(|(k, v)| {
                let k: String = k.extract().ok()?;
                let k = k.to_lowercase();
                self.log_keys
                    .contains(&k)
                    .then(|| (k, v.str().map(|s| s.to_string()).unwrap_or_default()))
            })
            .collect()
    }

    /// Consumes a pending result: sends the head on `reply`, then the body chunks.
    pub fn iterate(&self, py: Python<'_>, p: Pending, reply: oneshot::Sender<Reply>) {
        let Pending {
            result,
            sr,
            target,
            log_environ,
        } = p;
        let result = result.bind(py);
        let sr = sr.bind(py);
        let mut reply = Some(reply);
        let mut log_environ = Some(log_environ);
        let failed = |py: Python<'_>, e: &PyErr, reply: &mut Option<oneshot::Sender<Reply>>| {
            log_app_error(py, &target, e);
            if let Some(r) = reply.take() {
                let _ = r.send(Reply::Failed);
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
                    head.headers
                        .insert(http::header::CONTENT_LENGTH, HeaderValue::from(file.len));
                    head.content_length = Some(file.len);
                }
                let (tx, rx) = stream::channel();
                let _ = reply.take().expect("unsent").send(Reply::Stream {
                    head,
                    body: rx,
                    log_environ: log_environ.take().unwrap_or_default(),
                });
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
                let _ = r.send(Reply::Stream {
                    head,
                    body: rx.take().expect("once"),
                    log_environ: log_environ.take().unwrap_or_default(),
                });
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
                    let _ = r.send(Reply::Complete {
                        head,
                        body,
                        log_environ: log_environ.take().unwrap_or_default(),
                    });
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
fn complete(
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
    if let Some(limit) = head.content_length {
        truncate(&mut body, limit);
    }
    Ok((head, body))
}

/// Drops bytes beyond `limit` (the app's Content-Length), as Gunicorn does.
fn truncate(body: &mut Vec<Bytes>, limit: u64) {
    let mut left = limit;
    body.retain_mut(|c| {
        if left == 0 {
            return false;
        }
        if c.len() as u64 > left {
            *c = c.slice(..left as usize);
        }
        left -= c.len() as u64;
        true
    });
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

fn send_file(f: objects::RealFile, tx: &stream::Sender) {
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

fn log_app_error(py: Python<'_>, target: &str, e: &PyErr) {
    let tb = crate::python::format_traceback(py, e);
    tracing::error!("Error handling request {target}\n{}", tb.trim_end());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_honours_content_length() {
        let mut body = vec![Bytes::from_static(b"hello"), Bytes::from_static(b"world")];
        truncate(&mut body, 7);
        assert_eq!(body.concat(), b"hellowo");
        let mut body = vec![Bytes::from_static(b"ab")];
        truncate(&mut body, 0);
        assert!(body.is_empty());
    }
}

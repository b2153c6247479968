//! `wsgi.input`: a read-only, file-like view of the request body. A body read before the app
//! was called is served from memory; a streamed one is read chunk by chunk from the connection,
//! with the GIL released while a read waits, so other Python threads run meanwhile (and the wait
//! does not count as busy for `--timeout`).
//!
//! When its request is done the object is closed ([`Finish`]): what it holds of the body (and of
//! the worker's body budget) is released even if the app keeps a reference (a debug toolbar, a
//! request log, a cycle), and a later read raises `ValueError`, as on a closed file.

use bytes::{Buf, Bytes};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::http::dispatch::{Body, BodyStream};
use crate::http::limits::Held;

/// `wsgi.input`.
#[pyclass(module = "ferricorn", name = "Input")]
pub struct Input {
    /// Bytes received and not yet read by the app.
    buf: Bytes,
    _held: Option<Held>,
    stream: Option<std::sync::Mutex<BodyStream>>,
    /// An error the stream ended with (raised again on later reads).
    failed: Option<String>,
    /// Its request is done.
    finished: bool,
}

/// Closes a request's `wsgi.input` when dropped (at the end of its request).
pub struct Finish(pub Option<Py<Input>>);

impl Drop for Finish {
    fn drop(&mut self) {
        if let Some(input) = self.0.take() {
            Python::attach(|py| {
                // Busy only if another thread is reading it right now: that read ends when the
                // request's body stream does.
                if let Ok(mut i) = input.bind(py).try_borrow_mut() {
                    i.finish();
                }
            });
        }
    }
}

impl Input {
    pub fn new(body: Body) -> Self {
        let (buf, held, stream) = match body {
            Body::Empty => (Bytes::new(), None, None),
            Body::Full(c) => (c.data, c.held, None),
            Body::Stream(s) => (Bytes::new(), None, Some(std::sync::Mutex::new(s))),
        };
        Input {
            buf,
            _held: held,
            stream,
            failed: None,
            finished: false,
        }
    }

    /// Its request is done: drops what it holds; later reads raise.
    pub fn finish(&mut self) {
        self.buf = Bytes::new();
        self._held = None;
        self.stream = None;
        self.finished = true;
    }

    /// Makes `buf` non-empty unless the body is over. False at the end.
    fn fill(&mut self, py: Python<'_>) -> PyResult<bool> {
        if !self.buf.is_empty() {
            return Ok(true);
        }
        if self.finished {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "I/O operation on closed file: this wsgi.input belongs to a request that has ended",
            ));
        }
        if let Some(e) = &self.failed {
            return Err(pyo3::exceptions::PyOSError::new_err(e.clone()));
        }
        let Some(stream) = &self.stream else {
            return Ok(false);
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            // Only a Python thread may wait for the client (the event loop would stop).
            return Err(pyo3::exceptions::PyOSError::new_err(
                "a streamed wsgi.input cannot be read on the event-loop thread",
            ));
        }
        let next = py.detach(|| {
            super::pool::waiting_on_client(|| {
                stream
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .blocking_next()
            })
        });
        match next {
            Ok(Some(c)) => {
                self.buf = c.data;
                self._held = c.held;
                Ok(true)
            }
            Ok(None) => {
                self.stream = None;
                self._held = None;
                Ok(false)
            }
            Err(e) => {
                let msg = e.to_string();
                self.failed = Some(msg.clone());
                self.stream = None;
                Err(pyo3::exceptions::PyOSError::new_err(msg))
            }
        }
    }

    fn read_n(&mut self, py: Python<'_>, n: Option<u64>) -> PyResult<Vec<u8>> {
        let mut out = Vec::new();
        let want = n.unwrap_or(u64::MAX);
        while (out.len() as u64) < want && self.fill(py)? {
            let k = ((want - out.len() as u64) as usize).min(self.buf.len());
            out.extend_from_slice(&self.buf[..k]);
            self.buf.advance(k);
        }
        Ok(out)
    }

    /// The next line (up to and including `\n`), at most `limit` bytes.
    fn line(&mut self, py: Python<'_>, limit: Option<u64>) -> PyResult<Vec<u8>> {
        let max = limit.unwrap_or(u64::MAX);
        let mut out = Vec::new();
        while (out.len() as u64) < max && self.fill(py)? {
            let room = ((max - out.len() as u64) as usize).min(self.buf.len());
            let window = &self.buf[..room];
            match memchr::memchr(b'\n', window) {
                Some(i) => {
                    out.extend_from_slice(&window[..=i]);
                    self.buf.advance(i + 1);
                    break;
                }
                None => {
                    out.extend_from_slice(window);
                    self.buf.advance(room);
                }
            }
        }
        Ok(out)
    }
}

fn size_arg(size: Option<&Bound<'_, PyAny>>) -> PyResult<Option<u64>> {
    match size {
        None => Ok(None),
        Some(s) if s.is_none() => Ok(None),
        Some(s) => {
            let n: i64 = s.extract()?;
            Ok(if n < 0 { None } else { Some(n as u64) })
        }
    }
}

#[pymethods]
impl Input {
    #[pyo3(signature = (size = None))]
    fn read<'py>(
        &mut self,
        py: Python<'py>,
        size: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let n = size_arg(size)?;
        // The whole body in memory, read at once: no copy but the bytes object's.
        if self.stream.is_none() && !self.finished && n.is_none_or(|n| n >= self.buf.len() as u64) {
            let b = PyBytes::new(py, &self.buf);
            self.buf.clear();
            return Ok(b);
        }
        let data = self.read_n(py, n)?;
        Ok(PyBytes::new(py, &data))
    }

    #[pyo3(signature = (size = None))]
    fn readline<'py>(
        &mut self,
        py: Python<'py>,
        size: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let line = self.line(py, size_arg(size)?)?;
        Ok(PyBytes::new(py, &line))
    }

    #[pyo3(signature = (hint = None))]
    fn readlines<'py>(
        &mut self,
        py: Python<'py>,
        hint: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let hint = size_arg(hint)?.filter(|h| *h > 0);
        let out = PyList::empty(py);
        let mut total = 0u64;
        loop {
            let line = self.line(py, None)?;
            if line.is_empty() {
                break;
            }
            total += line.len() as u64;
            out.append(PyBytes::new(py, &line))?;
            if hint.is_some_and(|h| total >= h) {
                break;
            }
        }
        Ok(out)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.line(py, None)?;
        Ok(if line.is_empty() {
            None
        } else {
            Some(PyBytes::new(py, &line))
        })
    }

    fn readable(&self) -> bool {
        true
    }

    /// Bytes received and not read yet (not in PEP 3333; a convenience some frameworks probe
    /// for). For a body still streaming this is what has arrived so far.
    fn __len__(&self) -> usize {
        self.buf.len()
    }

    /// Always true, as for a file (without it, `__len__` would make a streamed body whose next
    /// chunk has not arrived falsy).
    fn __bool__(&self) -> bool {
        true
    }
}

//! The objects a WSGI app is handed: `start_response` (and its `write`), `wsgi.input`,
//! `wsgi.errors` and `wsgi.file_wrapper`.

use std::io::Seek;
use std::os::unix::fs::FileExt;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use pyo3::exceptions::{PyAssertionError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

/// Status and headers given to `start_response`, validated.
#[derive(Debug, Clone)]
pub struct Head {
    pub status: u16,
    /// The reason phrase the app gave (sent as is).
    pub reason: String,
    pub headers: HeaderMap,
    /// The app's `Content-Length`, if it set one.
    pub content_length: Option<u64>,
}

/// Hop-by-hop headers, which PEP 3333 forbids an app to set (wsgiref's list, as Gunicorn).
fn hop_by_hop(name: &HeaderName) -> bool {
    use http::header::{CONNECTION, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE};
    use http::header::{TRANSFER_ENCODING, UPGRADE};
    // Standard names compare as integers; only a custom name needs the string compare.
    [
        CONNECTION,
        PROXY_AUTHENTICATE,
        PROXY_AUTHORIZATION,
        TE,
        TRANSFER_ENCODING,
        UPGRADE,
    ]
    .iter()
    .any(|h| h == name)
        || matches!(name.as_str(), "keep-alive" | "trailers")
}

fn parse_status(status: &str) -> PyResult<(u16, String)> {
    let bad = || {
        PyValueError::new_err(format!(
            "start_response: status must be a str like '200 OK', got {status:?}"
        ))
    };
    let (code, reason) = status.split_once(' ').ok_or_else(bad)?;
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let code: u16 = code.parse().map_err(|_| bad())?;
    if !(100..=999).contains(&code) || reason.chars().any(|c| c.is_control()) {
        return Err(bad());
    }
    Ok((code, reason.to_string()))
}

/// The latin-1 bytes of `s` (borrowed when it is ASCII, the common case).
fn latin1_bytes<'a>(s: &'a str, what: &str) -> PyResult<std::borrow::Cow<'a, [u8]>> {
    if s.is_ascii() {
        return Ok(std::borrow::Cow::Borrowed(s.as_bytes()));
    }
    s.chars()
        .map(|c| {
            u8::try_from(u32::from(c)).map_err(|_| {
                PyValueError::new_err(format!(
                    "start_response: {what} {s:?} is not latin-1 (PEP 3333 requires it)"
                ))
            })
        })
        .collect::<PyResult<Vec<u8>>>()
        .map(std::borrow::Cow::Owned)
}

fn parse_headers(headers: &Bound<'_, PyAny>) -> PyResult<(HeaderMap, Option<u64>)> {
    let mut map = HeaderMap::with_capacity(headers.len().unwrap_or(0) + 2);
    let mut content_length = None;
    // A list (the usual case) is walked directly, without a Python iterator object.
    match headers.cast::<PyList>() {
        Ok(list) => {
            for item in list.iter() {
                add_header(&item, &mut map, &mut content_length)?;
            }
        }
        Err(_) => {
            for item in headers.try_iter()? {
                add_header(&item?, &mut map, &mut content_length)?;
            }
        }
    }
    Ok((map, content_length))
}

/// Header names already checked, by the identity of the str the app passed. An app's names
/// are nearly always literals, the same object on every call, so a name is parsed and
/// validated once per thread. Holding a reference keeps the str, and so its address, alive.
const NAME_CACHE: usize = 32;

thread_local! {
    static NAMES: std::cell::RefCell<Vec<(Py<PyString>, HeaderName)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// The validated header name for `name`: not hop-by-hop, latin-1, a valid token.
fn header_name(name: &Bound<'_, PyString>) -> PyResult<HeaderName> {
    let cached = NAMES.with_borrow(|names| {
        names
            .iter()
            .find(|(s, _)| s.as_ptr() == name.as_ptr())
            .map(|(_, h)| h.clone())
    });
    if let Some(h) = cached {
        return Ok(h);
    }
    let text = name.to_str()?;
    let hname = HeaderName::from_bytes(&latin1_bytes(text, "header name")?).map_err(|_| {
        PyValueError::new_err(format!("start_response: invalid header name {text:?}"))
    })?;
    if hop_by_hop(&hname) {
        return Err(PyAssertionError::new_err(format!(
            "start_response: hop-by-hop header {text:?} is not allowed (PEP 3333)"
        )));
    }
    NAMES.with_borrow_mut(|names| {
        if names.len() < NAME_CACHE {
            names.push((name.clone().unbind(), hname.clone()));
        }
    });
    Ok(hname)
}

fn add_header(
    item: &Bound<'_, PyAny>,
    map: &mut HeaderMap,
    content_length: &mut Option<u64>,
) -> PyResult<()> {
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
    let value = value.to_str()?;
    let hname = header_name(&name)?;
    let hvalue = HeaderValue::from_bytes(&latin1_bytes(value, "header value")?).map_err(|_| {
        PyValueError::new_err(format!(
            "start_response: invalid value for header {:?}: control characters",
            name.to_str().unwrap_or_default()
        ))
    })?;
    if hname == http::header::CONTENT_LENGTH {
        let n: u64 = value.trim().parse().map_err(|_| {
            PyValueError::new_err(format!(
                "start_response: Content-Length {value:?} is not a number"
            ))
        })?;
        *content_length = Some(n);
    }
    map.append(hname, hvalue);
    Ok(())
}

/// The `start_response` callable of one request.
#[pyclass(module = "ferricorn")]
pub struct StartResponse {
    head: Option<Head>,
    /// Body bytes were produced, so the head counts as sent (for `exc_info`).
    pub headers_sent: bool,
    /// Chunks given to `write()`, sent before the iterable's.
    pub written: Vec<Bytes>,
}

impl StartResponse {
    pub fn new() -> Self {
        StartResponse {
            head: None,
            headers_sent: false,
            written: Vec::new(),
        }
    }

    pub fn head(&self) -> Option<&Head> {
        self.head.as_ref()
    }

    /// The head, taken out (once the response is built no Python code can change it).
    pub fn take_head(&mut self) -> Option<Head> {
        self.head.take()
    }
}

impl Default for StartResponse {
    fn default() -> Self {
        Self::new()
    }
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info = None))]
    fn __call__(
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
        let (code, reason) = parse_status(status.to_str()?)?;
        if !headers.is_instance_of::<PyList>() && !headers.is_instance_of::<PyTuple>() {
            return Err(PyTypeError::new_err(
                "start_response: headers must be a list of (name, value) tuples",
            ));
        }
        let (headers, content_length) = parse_headers(headers)?;
        slf.borrow_mut().head = Some(Head {
            status: code,
            reason,
            headers,
            content_length,
        });
        // The write callable bound to this request (a small object, cheaper than a bound
        // method looked up by name).
        Ok(Py::new(
            slf.py(),
            Write {
                sr: slf.clone().unbind(),
            },
        )?
        .into_any())
    }

    /// PEP 3333's legacy `write(data)` callable.
    fn write(&mut self, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let b = data
            .cast::<PyBytes>()
            .map_err(|_| PyTypeError::new_err("write() argument must be bytes"))?;
        if self.head.is_none() {
            return Err(PyAssertionError::new_err(
                "write() called before start_response",
            ));
        }
        if !b.as_bytes().is_empty() {
            self.headers_sent = true;
            self.written.push(Bytes::copy_from_slice(b.as_bytes()));
        }
        Ok(())
    }
}

/// The `write(data)` callable `start_response` returns.
#[pyclass(module = "ferricorn", name = "write", frozen)]
pub struct Write {
    sr: Py<StartResponse>,
}

#[pymethods]
impl Write {
    fn __call__(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        self.sr.bind(py).borrow_mut().write(data)
    }
}

/// The request body, already read in full by the server.
#[derive(Debug)]
pub enum Body {
    Empty,
    Mem(Bytes),
    /// Large bodies spill to an unnamed temporary file.
    File {
        file: std::fs::File,
        len: u64,
    },
}

impl Body {
    pub fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Mem(b) => b.len() as u64,
            Body::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read_at(&self, pos: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Body::Empty => Ok(0),
            Body::Mem(b) => {
                let start = (pos as usize).min(b.len());
                let n = buf.len().min(b.len() - start);
                buf[..n].copy_from_slice(&b[start..start + n]);
                Ok(n)
            }
            Body::File { file, .. } => file.read_at(buf, pos),
        }
    }
}

/// `wsgi.input`: a read-only, file-like view of the request body.
#[pyclass(module = "ferricorn", name = "Input")]
pub struct Input {
    body: Body,
    pos: u64,
}

impl Input {
    pub fn new(body: Body) -> Self {
        Input { body, pos: 0 }
    }

    fn remaining(&self) -> u64 {
        self.body.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: u64) -> PyResult<Vec<u8>> {
        let n = n.min(self.remaining()) as usize;
        let mut out = vec![0u8; n];
        let mut got = 0;
        while got < n {
            let k = self
                .body
                .read_at(self.pos + got as u64, &mut out[got..])
                .map_err(|e| pyo3::exceptions::PyOSError::new_err(e.to_string()))?;
            if k == 0 {
                break;
            }
            got += k;
        }
        out.truncate(got);
        self.pos += got as u64;
        Ok(out)
    }

    /// The next line (up to and including `\n`), at most `limit` bytes.
    fn line(&mut self, limit: Option<u64>) -> PyResult<Vec<u8>> {
        let max = limit.unwrap_or(u64::MAX).min(self.remaining());
        if let Body::Mem(b) = &self.body {
            let start = self.pos as usize;
            let window = &b[start..start + max as usize];
            let n = window
                .iter()
                .position(|&c| c == b'\n')
                .map_or(window.len(), |i| i + 1);
            self.pos += n as u64;
            return Ok(window[..n].to_vec());
        }
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        while (out.len() as u64) < max {
            let want = (max - out.len() as u64).min(buf.len() as u64) as usize;
            let k = self
                .body
                .read_at(self.pos, &mut buf[..want])
                .map_err(|e| pyo3::exceptions::PyOSError::new_err(e.to_string()))?;
            if k == 0 {
                break;
            }
            if let Some(i) = buf[..k].iter().position(|&c| c == b'\n') {
                out.extend_from_slice(&buf[..=i]);
                self.pos += i as u64 + 1;
                break;
            }
            out.extend_from_slice(&buf[..k]);
            self.pos += k as u64;
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
        let n = size_arg(size)?.unwrap_or(u64::MAX);
        if let Body::Mem(b) = &self.body {
            let start = self.pos as usize;
            let end = start + n.min(self.remaining()) as usize;
            self.pos = end as u64;
            return Ok(PyBytes::new(py, &b[start..end]));
        }
        let data = self.take(n)?;
        Ok(PyBytes::new(py, &data))
    }

    #[pyo3(signature = (size = None))]
    fn readline<'py>(
        &mut self,
        py: Python<'py>,
        size: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let line = self.line(size_arg(size)?)?;
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
            let line = self.line(None)?;
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
        let line = self.line(None)?;
        Ok(if line.is_empty() {
            None
        } else {
            Some(PyBytes::new(py, &line))
        })
    }

    fn readable(&self) -> bool {
        true
    }

    /// Bytes not read yet (not in PEP 3333; a convenience some frameworks probe for).
    fn __len__(&self) -> usize {
        self.remaining() as usize
    }
}

/// `wsgi.errors`: text written here goes to the error log.
#[pyclass(module = "ferricorn", name = "ErrorStream")]
pub struct ErrorStream;

#[pymethods]
impl ErrorStream {
    fn write(&self, s: &Bound<'_, PyAny>) -> PyResult<usize> {
        let text = s
            .cast::<PyString>()
            .map_err(|_| PyTypeError::new_err("wsgi.errors.write() argument must be str"))?
            .to_str()?;
        crate::logging::error_sink().write(text.as_bytes());
        Ok(text.chars().count())
    }

    fn writelines(&self, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        for l in lines.try_iter()? {
            self.write(&l?)?;
        }
        Ok(())
    }

    fn flush(&self) {}
}

/// `wsgi.file_wrapper`: wraps a file-like object; the server sends a real file's bytes itself,
/// without Python in the loop.
#[pyclass(module = "ferricorn", name = "FileWrapper")]
pub struct FileWrapper {
    pub filelike: Py<PyAny>,
    pub blksize: usize,
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, blksize = 8192))]
    fn new(filelike: Py<PyAny>, blksize: i64) -> PyResult<Self> {
        if blksize <= 0 {
            return Err(PyValueError::new_err("blksize must be positive"));
        }
        Ok(FileWrapper {
            filelike,
            blksize: blksize as usize,
        })
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let data = self
            .filelike
            .bind(py)
            .call_method1("read", (self.blksize,))?;
        Ok(if data.is_truthy()? { Some(data) } else { None })
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let f = self.filelike.bind(py);
        if f.hasattr("close")? {
            f.call_method0("close")?;
        }
        Ok(())
    }
}

/// A regular file behind a `FileWrapper`, ready to be read without Python.
pub struct RealFile {
    pub file: std::fs::File,
    pub offset: u64,
    pub len: u64,
}

impl FileWrapper {
    /// If the wrapped object is a real, regular file: a duplicate of its descriptor, the current
    /// position, and how many bytes remain (capped by `limit`).
    pub fn real_file(&self, py: Python<'_>, limit: Option<u64>) -> Option<RealFile> {
        let f = self.filelike.bind(py);
        let fd: i32 = f.call_method0("fileno").ok()?.extract().ok()?;
        // Flush Python-side buffering so the descriptor's view is current.
        let pos: Option<u64> = f.call_method0("tell").ok().and_then(|p| p.extract().ok());
        // SAFETY: the descriptor is open (fileno() just returned it); it is only duplicated.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let owned = borrowed.try_clone_to_owned().ok()?;
        let mut file = std::fs::File::from(owned);
        let meta = file.metadata().ok()?;
        if !meta.is_file() {
            return None;
        }
        let offset = match pos {
            Some(p) => p,
            None => file.stream_position().ok()?,
        };
        let mut len = meta.len().saturating_sub(offset);
        if let Some(l) = limit {
            len = len.min(l);
        }
        Some(RealFile { file, offset, len })
    }
}

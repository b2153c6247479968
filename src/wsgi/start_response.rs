//! `start_response` and its `write` callable (PEP 3333): the status and the app's header list
//! are validated and written straight into the response head's wire format
//! ([`crate::http::response::ResponseHead`]); hop-by-hop headers are dropped there.

use bytes::Bytes;
use pyo3::exceptions::{PyAssertionError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use crate::http::response::{HeaderError, ResponseHead};

pub type Head = ResponseHead;

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
    let (name, value) = (name.to_str()?, value.to_str()?);
    let n = latin1_bytes(name, "header name")?;
    let v = latin1_bytes(value, "header value")?;
    head.push(&n, &v).map_err(|e| match e {
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
    })
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
        let canonical = http::StatusCode::from_u16(code)
            .ok()
            .and_then(|s| s.canonical_reason());
        let reason = (canonical != Some(reason.as_str())).then(|| reason.into_boxed_str());
        let mut head = ResponseHead::new(code, reason);
        parse_headers(&mut head, headers)?;
        slf.borrow_mut().head = Some(head);
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

//! Building the WSGI `environ` dict (PEP 3333) for one request.
//!
//! Per worker, a template dict holds what never changes (`wsgi.version`, `SERVER_SOFTWARE`,
//! `wsgi.errors`, ...); per request it is copied and the request's own keys are added, with keys
//! interned once. Strings are latin-1, as PEP 3333 requires ("bytes as str").

use std::borrow::Cow;
use std::sync::Mutex;

use rustc_hash::FxHashMap;

use http::{HeaderMap, HeaderName, Method, Version};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use pyo3::{ffi, intern};

use super::objects::{Body, ErrorStream, FileWrapper, Input};
use crate::proxy::Peer;
use crate::sockets::LocalAddr;

/// What the environ is built from.
pub struct Request {
    pub method: Method,
    /// The request target exactly as received (`RAW_URI`); shared with the access log.
    pub target: std::sync::Arc<str>,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Body,
    pub peer: Peer,
    /// `REMOTE_ADDR` and `REMOTE_PORT` of a TCP peer, formatted once per connection.
    pub remote: Option<std::sync::Arc<Remote>>,
    pub local: std::sync::Arc<LocalAddr>,
    /// `wsgi.url_scheme`, decided by the proxy rules.
    pub scheme: &'static str,
}

/// A TCP peer's address and port as text.
#[derive(Debug)]
pub struct Remote {
    pub addr: String,
    pub port: String,
}

impl Remote {
    pub fn of(peer: Peer) -> Option<std::sync::Arc<Remote>> {
        match peer {
            Peer::Tcp(a) => Some(std::sync::Arc::new(Remote {
                addr: a.ip().to_string(),
                port: a.port().to_string(),
            })),
            Peer::Unix => None,
        }
    }
}

/// The path part of a request target, still percent-encoded (an absolute-form target loses its
/// `scheme://authority`).
pub fn raw_path(target: &str) -> &str {
    let t = target.split_once('?').map_or(target, |(p, _)| p);
    match t
        .strip_prefix("http://")
        .or_else(|| t.strip_prefix("https://"))
    {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => t,
    }
}

impl Request {
    /// The path part of the target, still percent-encoded.
    pub fn raw_path(&self) -> &str {
        raw_path(&self.target)
    }

    pub fn query(&self) -> &str {
        self.target.split_once('?').map_or("", |(_, q)| q)
    }

    pub fn protocol(&self) -> &'static str {
        protocol(self.version)
    }
}

pub fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_09 => "HTTP/0.9",
        _ => "HTTP/1.1",
    }
}

/// A Python str from bytes taken as latin-1 (each byte one code point, as PEP 3333 says).
pub fn latin1<'py>(py: Python<'py>, b: &[u8]) -> Bound<'py, PyString> {
    // Request heads are nearly always ASCII: checked here (word at a time), the str is
    // allocated with the right kind and filled directly, skipping CPython's own scan.
    let maxchar = if b.is_ascii() { 127 } else { 255 };
    // SAFETY: PyUnicode_New(n, 127 or 255) returns a compact 1-byte-kind str of length n (or
    // NULL on memory exhaustion) whose data buffer we fill before anyone else sees it; a
    // 1-byte-kind string is exactly latin-1. NULL becomes an empty string, not a panic.
    unsafe {
        let p = ffi::PyUnicode_New(b.len() as ffi::Py_ssize_t, maxchar);
        if p.is_null() {
            ffi::PyErr_Clear();
            return PyString::new(py, "");
        }
        std::ptr::copy_nonoverlapping(b.as_ptr(), ffi::PyUnicode_1BYTE_DATA(p), b.len());
        Bound::from_owned_ptr(py, p).cast_into_unchecked::<PyString>()
    }
}

unsafe extern "C" {
    /// CPython's dict constructor with room for `n` items (exported, not in pyo3-ffi).
    fn _PyDict_NewPresized(n: ffi::Py_ssize_t) -> *mut ffi::PyObject;
}

/// Percent-decodes a URL path into bytes (invalid escapes are kept as they are).
pub fn decode_path(raw: &str) -> Vec<u8> {
    percent_encoding::percent_decode_str(raw).collect()
}

/// The per-worker part of every environ.
pub struct Template {
    dict: Py<PyDict>,
    script_name: String,
    /// `HTTP_*` keys by header name, interned once.
    keys: Mutex<FxHashMap<HeaderName, Option<Py<PyString>>>>,
}

/// Keys every environ has; the template holds them (with placeholders) so that a request
/// replaces values in a dict of the right size instead of growing one.
const PER_REQUEST_KEYS: [&str; 9] = [
    "REQUEST_METHOD",
    "PATH_INFO",
    "QUERY_STRING",
    "RAW_URI",
    "SERVER_PROTOCOL",
    "SERVER_NAME",
    "SERVER_PORT",
    "REMOTE_ADDR",
    "wsgi.url_scheme",
];

/// Room in the template for a request's own keys (`HTTP_*`, `CONTENT_*`, `REMOTE_PORT`), so that
/// adding them to the copy does not resize it.
const ROOM: isize = 48;

/// Upper bound on cached header keys (a client could send many distinct names).
const MAX_CACHED_KEYS: usize = 512;

impl Template {
    pub fn new(py: Python<'_>, multithread: bool, multiprocess: bool) -> PyResult<Template> {
        // SAFETY: a new reference to an empty dict (or NULL with an exception set).
        let d = unsafe {
            Bound::from_owned_ptr_or_err(py, _PyDict_NewPresized(ROOM))?
                .cast_into_unchecked::<PyDict>()
        };
        let script_name = std::env::var("SCRIPT_NAME").unwrap_or_default();
        let script_name = script_name.trim_end_matches('/').to_string();
        d.set_item("SERVER_SOFTWARE", format!("ferricorn/{}", crate::VERSION))?;
        d.set_item("SCRIPT_NAME", &script_name)?;
        d.set_item("wsgi.version", (1, 0))?;
        d.set_item("wsgi.errors", Py::new(py, ErrorStream)?)?;
        d.set_item("wsgi.file_wrapper", py.get_type::<FileWrapper>())?;
        d.set_item("wsgi.multithread", multithread)?;
        d.set_item("wsgi.multiprocess", multiprocess)?;
        d.set_item("wsgi.run_once", false)?;
        d.set_item("wsgi.input_terminated", true)?;
        // A request without a body (most GETs) shares this one: an empty input has nothing to
        // read and no position to move, so one object serves them all.
        d.set_item(
            intern!(py, "wsgi.input"),
            Py::new(py, Input::new(Body::Empty))?,
        )?;
        for k in PER_REQUEST_KEYS {
            d.set_item(PyString::intern(py, k), py.None())?;
        }
        Ok(Template {
            dict: d.unbind(),
            script_name,
            keys: Mutex::new(FxHashMap::default()),
        })
    }

    /// The environ key for a request header, or None for a name Gunicorn drops (one with an
    /// underscore: `X_Forwarded_For` would otherwise overwrite the HTTP_X_FORWARDED_FOR a
    /// proxy set). Both answers are cached per name.
    fn header_key<'py>(&self, py: Python<'py>, name: &HeaderName) -> Option<Bound<'py, PyString>> {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = keys.get(name) {
            return k.as_ref().map(|k| k.bind(py).clone());
        }
        let k = if name.as_str().as_bytes().contains(&b'_') {
            None
        } else {
            let mut s = String::with_capacity(5 + name.as_str().len());
            s.push_str("HTTP_");
            for c in name.as_str().chars() {
                s.push(if c == '-' {
                    '_'
                } else {
                    c.to_ascii_uppercase()
                });
            }
            Some(PyString::intern(py, &s))
        };
        if keys.len() < MAX_CACHED_KEYS {
            keys.insert(name.clone(), k.as_ref().map(|k| k.clone().unbind()));
        }
        k
    }

    /// Builds the environ for `req`, consuming its body into `wsgi.input`.
    pub fn build<'py>(&self, py: Python<'py>, req: Request) -> PyResult<Bound<'py, PyDict>> {
        let env = self.dict.bind(py).copy()?;
        env.set_item(intern!(py, "REQUEST_METHOD"), method_str(py, &req.method))?;
        let raw_path = req.raw_path();
        let mut path = decode_path(raw_path);
        if !self.script_name.is_empty() && path.starts_with(self.script_name.as_bytes()) {
            let rest = &path[self.script_name.len()..];
            if rest.is_empty() || rest[0] == b'/' {
                path.drain(..self.script_name.len());
            }
        }
        env.set_item(intern!(py, "PATH_INFO"), latin1(py, &path))?;
        env.set_item(
            intern!(py, "QUERY_STRING"),
            latin1(py, req.query().as_bytes()),
        )?;
        env.set_item(intern!(py, "RAW_URI"), latin1(py, req.target.as_bytes()))?;
        let protocol = match req.version {
            Version::HTTP_10 => intern!(py, "HTTP/1.0"),
            Version::HTTP_09 => intern!(py, "HTTP/0.9"),
            _ => intern!(py, "HTTP/1.1"),
        };
        env.set_item(intern!(py, "SERVER_PROTOCOL"), protocol)?;

        let (name, port) = server_name_port(&req);
        env.set_item(intern!(py, "SERVER_NAME"), latin1(py, name.as_bytes()))?;
        env.set_item(intern!(py, "SERVER_PORT"), latin1(py, port.as_bytes()))?;
        match &req.remote {
            Some(r) => {
                env.set_item(intern!(py, "REMOTE_ADDR"), latin1(py, r.addr.as_bytes()))?;
                env.set_item(intern!(py, "REMOTE_PORT"), latin1(py, r.port.as_bytes()))?;
            }
            None => env.set_item(intern!(py, "REMOTE_ADDR"), intern!(py, ""))?,
        }
        env.set_item(
            intern!(py, "wsgi.url_scheme"),
            if req.scheme == "https" {
                intern!(py, "https")
            } else {
                intern!(py, "http")
            },
        )?;

        // HeaderMap iterates the values of a name one after another: repeated headers are
        // joined with "," as they come (one pass, no lookups).
        let mut pending: Option<(&HeaderName, Cow<'_, [u8]>)> = None;
        for (name, value) in req.headers.iter() {
            if let Some((prev, joined)) = pending.as_mut()
                && *prev == name
            {
                let j = joined.to_mut();
                j.push(b',');
                j.extend_from_slice(value.as_bytes());
                continue;
            }
            if let Some((prev, v)) = pending.take() {
                self.set_header(py, &env, prev, &v)?;
            }
            pending = Some((name, Cow::Borrowed(value.as_bytes())));
        }
        if let Some((prev, v)) = pending.take() {
            self.set_header(py, &env, prev, &v)?;
        }
        if !matches!(req.body, Body::Empty) {
            env.set_item(
                intern!(py, "wsgi.input"),
                Py::new(py, Input::new(req.body))?,
            )?;
        }
        Ok(env)
    }
}

impl Template {
    fn set_header(
        &self,
        py: Python<'_>,
        env: &Bound<'_, PyDict>,
        name: &HeaderName,
        value: &[u8],
    ) -> PyResult<()> {
        if name == http::header::CONTENT_TYPE {
            env.set_item(intern!(py, "CONTENT_TYPE"), latin1(py, value))
        } else if name == http::header::CONTENT_LENGTH {
            env.set_item(intern!(py, "CONTENT_LENGTH"), latin1(py, value))
        } else if let Some(key) = self.header_key(py, name) {
            env.set_item(key, latin1(py, value))
        } else {
            Ok(())
        }
    }
}

fn method_str<'py>(py: Python<'py>, m: &Method) -> Bound<'py, PyString> {
    match *m {
        Method::GET => intern!(py, "GET").clone(),
        Method::POST => intern!(py, "POST").clone(),
        Method::HEAD => intern!(py, "HEAD").clone(),
        Method::PUT => intern!(py, "PUT").clone(),
        Method::DELETE => intern!(py, "DELETE").clone(),
        _ => PyString::new(py, m.as_str()),
    }
}

/// `SERVER_NAME` and `SERVER_PORT`: from the Host header, else the listener (Gunicorn's rule).
fn server_name_port(req: &Request) -> (Cow<'_, str>, Cow<'_, str>) {
    let default_port = if req.scheme == "https" { "443" } else { "80" };
    let host: Option<&str> = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .or_else(|| {
            // absolute-form target carries the authority
            let t: &str = &req.target;
            let rest = t
                .strip_prefix("http://")
                .or_else(|| t.strip_prefix("https://"))?;
            Some(rest.split(['/', '?']).next().unwrap_or(""))
        });
    if let Some(host) = host {
        if let Some(rest) = host.strip_prefix('[')
            && let Some((h, after)) = rest.split_once(']')
        {
            let port = after
                .strip_prefix(':')
                .filter(|p| !p.is_empty())
                .unwrap_or(default_port);
            return (Cow::Borrowed(h), Cow::Borrowed(port));
        }
        return match host.rsplit_once(':') {
            Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                (Cow::Borrowed(h), Cow::Borrowed(p))
            }
            _ => (Cow::Borrowed(host), Cow::Borrowed(default_port)),
        };
    }
    match req.local.as_ref() {
        LocalAddr::Tcp(a) => (
            Cow::Owned(a.ip().to_string()),
            Cow::Owned(a.port().to_string()),
        ),
        LocalAddr::Unix(p) => (Cow::Owned(p.display().to_string()), Cow::Borrowed("")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(target: &str, host: Option<&str>) -> Request {
        let mut headers = HeaderMap::new();
        if let Some(h) = host {
            headers.insert("host", h.parse().unwrap());
        }
        Request {
            method: Method::GET,
            target: target.into(),
            version: Version::HTTP_11,
            headers,
            body: Body::Empty,
            peer: Peer::Unix,
            remote: None,
            local: std::sync::Arc::new(LocalAddr::Tcp("127.0.0.1:8000".parse().unwrap())),
            scheme: "http",
        }
    }

    #[test]
    fn target_parts() {
        let r = req("/a%20b/c?x=1&y=%20", None);
        assert_eq!(r.raw_path(), "/a%20b/c");
        assert_eq!(r.query(), "x=1&y=%20");
        assert_eq!(decode_path(r.raw_path()), b"/a b/c");
        assert_eq!(req("http://h:1/p?q", None).raw_path(), "/p");
        assert_eq!(decode_path("/%zz%41"), b"/%zzA");
    }

    fn snp(r: &Request) -> (String, String) {
        let (a, b) = server_name_port(r);
        (a.into_owned(), b.into_owned())
    }

    #[test]
    fn server_name_and_port() {
        assert_eq!(
            snp(&req("/", Some("example.com:8080"))),
            ("example.com".into(), "8080".into())
        );
        assert_eq!(
            snp(&req("/", Some("example.com"))),
            ("example.com".into(), "80".into())
        );
        assert_eq!(snp(&req("/", Some("[::1]:9"))), ("::1".into(), "9".into()));
        assert_eq!(snp(&req("/", None)), ("127.0.0.1".into(), "8000".into()));
        assert_eq!(
            snp(&req("http://h.example:81/x", None)),
            ("h.example".into(), "81".into())
        );
    }
}

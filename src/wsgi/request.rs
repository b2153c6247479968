//! Building the WSGI `environ` dict (PEP 3333) straight from the parsed request head.
//!
//! Per worker, a template dict holds what never changes (`wsgi.version`, `SERVER_SOFTWARE`,
//! `wsgi.errors`, ...) and the usual value of what a request may change (`GET`, `HTTP/1.1`,
//! `http`, an empty query); per request it is copied and only what differs is set, with keys
//! interned once. Strings are latin-1, as PEP 3333 requires ("bytes as str"). There is no header
//! map in between: names and values are read from the head's own bytes.
//!
//! What a request costs is mostly Python objects, so the worker remembers, for each position in
//! the head, the header name it last saw there with its environ key, and the last short value of
//! each field and of the request's own keys (path, host, peer): a value equal to the last one is
//! the same immutable `str` again, not a new one (successive requests on a connection, or from
//! the same proxy, mostly repeat them). The memory this holds is bounded ([`SLOTS`] positions,
//! values up to [`VALUE_MAX`] bytes).

use std::borrow::Cow;
use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use pyo3::{ffi, intern};
use rustc_hash::FxHashMap;

use super::errors::ErrorStream;
use super::file_wrapper::FileWrapper;
use super::input::Input;
use crate::http::dispatch::{Body, Request};
use crate::http::parse::{self, Head, Method, Version};
use crate::http::proxy_protocol::ProxyInfo;
use crate::proxy::{self, ForwarderHeaders};
use crate::sockets::LocalAddr;

/// A Python str from bytes taken as latin-1 (each byte one code point, as PEP 3333 says).
/// Inlined: called ~10 times a request, and the error check is then the null test it needs
/// anyway.
#[inline(always)]
pub fn latin1<'py>(py: Python<'py>, b: &[u8]) -> PyResult<Bound<'py, PyString>> {
    // Request heads are nearly always ASCII: checked here (word at a time), the str is
    // allocated with the right kind and filled directly, skipping CPython's own scan.
    let maxchar = if b.is_ascii() { 127 } else { 255 };
    // SAFETY: PyUnicode_New(n, 127 or 255) returns a compact 1-byte-kind str of length n (or
    // NULL with MemoryError set) whose data buffer we fill before anyone else sees it; a
    // 1-byte-kind string is exactly latin-1. NULL becomes the pending exception (the request
    // fails with a 500), never a wrong value such as an empty PATH_INFO.
    unsafe {
        let p = ffi::PyUnicode_New(b.len() as ffi::Py_ssize_t, maxchar);
        if p.is_null() {
            return Err(allocation_failed(py));
        }
        std::ptr::copy_nonoverlapping(b.as_ptr(), ffi::PyUnicode_1BYTE_DATA(p), b.len());
        Ok(Bound::from_owned_ptr(py, p).cast_into_unchecked::<PyString>())
    }
}

/// The MemoryError a failed `PyUnicode_New` raised (out of line: it never happens).
#[cold]
#[inline(never)]
fn allocation_failed(py: Python<'_>) -> PyErr {
    PyErr::fetch(py)
}

/// The characters of `s` as latin-1 bytes, borrowed from the str itself, when CPython stores it
/// one byte per character (every str whose characters are all latin-1); `None` otherwise, or
/// where that storage is not visible (CPython 3.14's API).
pub fn latin1_data<'a>(s: &'a Bound<'_, PyString>) -> Option<&'a [u8]> {
    #[cfg(not(Py_3_14))]
    {
        let p = s.as_ptr();
        // SAFETY: `p` is a live str (borrowed for 'a). PyUnicode_READY (a no-op since 3.12)
        // gives a legacy str its canonical storage, after which KIND, 1BYTE_DATA and
        // GET_LENGTH describe it; a 1-byte-kind buffer holds GET_LENGTH bytes and lives as
        // long as the (immutable) str.
        unsafe {
            if ffi::PyUnicode_READY(p) != 0 {
                ffi::PyErr_Clear();
                return None;
            }
            if ffi::PyUnicode_KIND(p) != ffi::PyUnicode_1BYTE_KIND {
                return None;
            }
            let n = ffi::PyUnicode_GET_LENGTH(p) as usize;
            Some(std::slice::from_raw_parts(ffi::PyUnicode_1BYTE_DATA(p), n))
        }
    }
    #[cfg(Py_3_14)]
    {
        let _ = s;
        None
    }
}

/// An empty dict with room for `n` items without growing (so that its copies have it too):
/// CPython's `_PyDict_NewPresized` where it is declared (3.9–3.12); 3.13 no longer declares it,
/// see [`make_room`].
fn presized_dict(py: Python<'_>, n: isize) -> PyResult<Bound<'_, PyDict>> {
    #[cfg(not(Py_3_13))]
    {
        unsafe extern "C" {
            fn _PyDict_NewPresized(n: ffi::Py_ssize_t) -> *mut ffi::PyObject;
        }
        // SAFETY: a new reference to an empty dict (or NULL with an exception set).
        unsafe {
            Ok(Bound::from_owned_ptr_or_err(py, _PyDict_NewPresized(n))?
                .cast_into_unchecked::<PyDict>())
        }
    }
    #[cfg(Py_3_13)]
    {
        let _ = n;
        Ok(PyDict::new(py))
    }
}

/// On 3.13, grows the filled template to CPython's 64-slot table with public calls only: str
/// placeholders are added up to the 22nd entry (where a dict grows to 64 slots), then deleted.
/// Deleting does not shrink a dict, and a copy of a dict with few deleted entries keeps its
/// table, so each request's copy has room for 20 more keys. Elsewhere a no-op.
fn make_room(d: &Bound<'_, PyDict>) -> PyResult<()> {
    #[cfg(Py_3_13)]
    {
        let names: Vec<String> = (d.len()..22).map(|i| format!("\0room{i}")).collect();
        for n in &names {
            d.set_item(n, d.py().None())?;
        }
        for n in &names {
            d.del_item(n)?;
        }
    }
    let _ = d;
    Ok(())
}

/// Environ keys by header name as sent (`None`: a name that is dropped).
type HeaderKeys = FxHashMap<Box<[u8]>, Option<Py<PyString>>>;

/// The per-worker part of every environ.
pub struct Template {
    dict: Py<PyDict>,
    script_name: String,
    /// `--forwarder-headers`: what a trusted peer's `_` headers may set.
    forwarder: ForwarderHeaders,
    /// `HTTP_*` keys by header name as sent, interned once.
    keys: Mutex<HeaderKeys>,
    /// The last names and values seen (see the module comment). Taken with `try_lock`: a
    /// request that finds it in use (another Python thread between two bytecodes of its own
    /// environ) builds without it.
    last: Mutex<Last>,
}

/// Keys every environ has; the template holds them (with placeholders or their usual value) so
/// that a request replaces values in a dict of the right size instead of growing one.
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
/// adding them to the copy does not resize it: 42 entries is CPython's 64-slot table (the
/// template's own keys included), copied whole per request.
const ROOM: isize = 42;

/// Upper bound on cached header keys (a client could send many distinct names).
const MAX_CACHED_KEYS: usize = 512;

/// Positions of a head whose name and value are remembered.
pub const SLOTS: usize = 32;
/// Longest value (and header name) remembered.
pub const VALUE_MAX: usize = 256;

/// The last value of one environ entry, and its str.
#[derive(Default)]
struct Value {
    bytes: Vec<u8>,
    s: Option<Py<PyString>>,
}

impl Value {
    /// A str of `b`: the last one when `b` is the same, else a new one (remembered if short).
    fn get<'py>(&mut self, py: Python<'py>, b: &[u8]) -> PyResult<Bound<'py, PyString>> {
        if let Some(s) = &self.s
            && self.bytes == b
        {
            return Ok(s.bind(py).clone());
        }
        let s = latin1(py, b)?;
        if b.len() <= VALUE_MAX {
            self.bytes.clear();
            self.bytes.extend_from_slice(b);
            self.s = Some(s.clone().unbind());
        }
        Ok(s)
    }
}

/// What one position of the head held last time.
#[derive(Default)]
struct Slot {
    name: Vec<u8>,
    /// The environ key of `name` (`None`: dropped).
    key: Option<Py<PyString>>,
    value: Value,
}

/// The last names and values seen by this worker.
#[derive(Default)]
struct Last {
    fields: Vec<Slot>,
    path: Value,
    query: Value,
    raw_uri: Value,
    server_name: Value,
    server_port: Value,
    remote_addr: Value,
}

/// Values a request takes from the template unless it differs.
fn template_value<'py>(py: Python<'py>, key: &str) -> Bound<'py, PyAny> {
    match key {
        "REQUEST_METHOD" => intern!(py, "GET").clone().into_any(),
        "QUERY_STRING" | "REMOTE_ADDR" => intern!(py, "").clone().into_any(),
        "SERVER_PROTOCOL" => intern!(py, "HTTP/1.1").clone().into_any(),
        "wsgi.url_scheme" => intern!(py, "http").clone().into_any(),
        _ => py.None().into_bound(py),
    }
}

impl Template {
    pub fn new(py: Python<'_>, multithread: bool, multiprocess: bool) -> PyResult<Template> {
        let d = presized_dict(py, ROOM)?;
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
            d.set_item(PyString::intern(py, k), template_value(py, k))?;
        }
        make_room(&d)?;
        Ok(Template {
            dict: d.unbind(),
            script_name,
            forwarder: ForwarderHeaders::gunicorn_default(),
            keys: Mutex::new(FxHashMap::default()),
            last: Mutex::new(Last::default()),
        })
    }

    /// `--forwarder-headers` (Gunicorn's default until this is called: `SCRIPT_NAME`,
    /// `PATH_INFO`).
    pub fn set_forwarder_headers(&mut self, f: ForwarderHeaders) {
        self.forwarder = f;
    }

    /// The environ key for a request header, or None for a name Gunicorn drops (one with an
    /// underscore: `X_Forwarded_For` would otherwise overwrite the HTTP_X_FORWARDED_FOR a
    /// proxy set). Both answers are cached per name.
    fn header_key<'py>(&self, py: Python<'py>, name: &[u8]) -> Option<Bound<'py, PyString>> {
        if name.eq_ignore_ascii_case(b"content-type") {
            return Some(intern!(py, "CONTENT_TYPE").clone());
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            return Some(intern!(py, "CONTENT_LENGTH").clone());
        }
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = keys.get(name) {
            return k.as_ref().map(|k| k.bind(py).clone());
        }
        let k = if name.contains(&b'_') {
            None
        } else {
            let mut s = String::with_capacity(5 + name.len());
            s.push_str("HTTP_");
            for &c in name {
                s.push(if c == b'-' {
                    '_'
                } else {
                    c.to_ascii_uppercase() as char
                });
            }
            Some(PyString::intern(py, &s))
        };
        if keys.len() < MAX_CACHED_KEYS {
            keys.insert(name.into(), k.as_ref().map(|k| k.clone().unbind()));
        }
        k
    }

    /// The key and value of field `i` (`None`: a dropped name), through `last` when there is
    /// one. Inlined into `build`'s loop (LTO otherwise keeps it out of line).
    #[inline(always)]
    fn field<'py>(
        &self,
        py: Python<'py>,
        last: Option<&mut Last>,
        i: usize,
        name: &[u8],
        value: &[u8],
    ) -> PyResult<Option<(Bound<'py, PyString>, Bound<'py, PyString>)>> {
        let Some(last) = last.filter(|_| i < SLOTS) else {
            let Some(key) = self.header_key(py, name) else {
                return Ok(None);
            };
            return Ok(Some((key, latin1(py, value)?)));
        };
        if last.fields.len() <= i {
            last.fields.resize_with(i + 1, Slot::default);
        }
        let slot = &mut last.fields[i];
        if slot.name != name {
            let key = self.header_key(py, name);
            if name.len() > VALUE_MAX {
                return match key {
                    Some(k) => Ok(Some((k, latin1(py, value)?))),
                    None => Ok(None),
                };
            }
            slot.name.clear();
            slot.name.extend_from_slice(name);
            slot.key = key.map(Bound::unbind);
            slot.value = Value::default();
        }
        let Some(key) = slot.key.as_ref() else {
            return Ok(None);
        };
        let key = key.bind(py).clone();
        Ok(Some((key, slot.value.get(py, value)?)))
    }

    /// Builds the environ for `req`, consuming its body into `wsgi.input` (returned too when
    /// the request has a body, to be closed when the request is done). Kept out of line (its one
    /// caller is `WsgiApp::call`): it is a layer `LAYERS=1 bench/callgrind.sh` reports.
    #[inline(never)]
    pub fn build<'py>(
        &self,
        py: Python<'py>,
        req: Request,
    ) -> PyResult<(Bound<'py, PyDict>, Option<Py<Input>>)> {
        let env = self.dict.bind(py).copy()?;
        let mut guard = self.last.try_lock().ok();
        let mut last = guard.as_deref_mut();
        let head = &*req.head;
        if head.method != Method::Get {
            env.set_item(intern!(py, "REQUEST_METHOD"), method_str(py, head))?;
        }
        let (raw_path, query) = parse::split_target(head.target());
        let mut path = Cow::Borrowed(raw_path);
        if raw_path.contains(&b'%') {
            path = Cow::Owned(parse::decode_path(raw_path));
        }
        // A trusted proxy's SCRIPT_NAME header (the connection checked that it fits the path)
        // replaces the one from the environment.
        let forwarded_script = match head.script_name {
            Some(i) if req.trusted && self.forwarder.script_name() => {
                Some(proxy::script_name_value(head.value(&head.fields[i])))
            }
            _ => None,
        };
        let script_name = forwarded_script.unwrap_or(self.script_name.as_bytes());
        if !script_name.is_empty()
            && let Some(rest) = proxy::strip_script_name(&path, script_name)
        {
            path = Cow::Owned(rest.to_vec());
        }
        if let Some(sn) = forwarded_script {
            env.set_item(intern!(py, "SCRIPT_NAME"), latin1(py, sn)?)?;
        }
        let value = |py, last: Option<&mut Value>, b: &[u8]| match last {
            Some(v) => v.get(py, b),
            None => latin1(py, b),
        };
        env.set_item(
            intern!(py, "PATH_INFO"),
            value(py, last.as_deref_mut().map(|l| &mut l.path), &path)?,
        )?;
        if !query.is_empty() {
            env.set_item(
                intern!(py, "QUERY_STRING"),
                value(py, last.as_deref_mut().map(|l| &mut l.query), query)?,
            )?;
        }
        env.set_item(
            intern!(py, "RAW_URI"),
            value(
                py,
                last.as_deref_mut().map(|l| &mut l.raw_uri),
                head.target(),
            )?,
        )?;
        if head.version == Version::Http10 {
            env.set_item(intern!(py, "SERVER_PROTOCOL"), intern!(py, "HTTP/1.0"))?;
        }

        let (name, port) = server_name_port(head, req.scheme, &req.conn.local);
        env.set_item(
            intern!(py, "SERVER_NAME"),
            value(py, last.as_deref_mut().map(|l| &mut l.server_name), &name)?,
        )?;
        env.set_item(
            intern!(py, "SERVER_PORT"),
            value(py, last.as_deref_mut().map(|l| &mut l.server_port), &port)?,
        )?;
        if let Some(r) = &req.conn.remote {
            env.set_item(
                intern!(py, "REMOTE_ADDR"),
                value(
                    py,
                    last.as_deref_mut().map(|l| &mut l.remote_addr),
                    r.addr.as_bytes(),
                )?,
            )?;
            env.set_item(intern!(py, "REMOTE_PORT"), latin1(py, r.port.as_bytes())?)?;
        }
        if let Some(p) = &req.conn.proxy {
            set_proxy_keys(py, &env, p)?;
        }
        if req.scheme == "https" {
            env.set_item(intern!(py, "wsgi.url_scheme"), intern!(py, "https"))?;
        }

        // Repeated headers are joined with "," in the order they came (PEP 3333, Gunicorn).
        // Names that are the same but for case have the same (interned) key: a key already
        // set by this request marks a repeat.
        let fields = &head.fields;
        let mut small = [std::ptr::null_mut::<ffi::PyObject>(); SLOTS];
        let mut big = Vec::new();
        let set: &mut [*mut ffi::PyObject] = if fields.len() <= SLOTS {
            &mut small[..fields.len()]
        } else {
            big.resize(fields.len(), std::ptr::null_mut());
            &mut big
        };
        for (i, f) in fields.iter().enumerate() {
            let Some((key, v)) =
                self.field(py, last.as_deref_mut(), i, head.name(f), head.value(f))?
            else {
                // A dropped name (one with `_`): a trusted proxy may still set it.
                if req.trusted {
                    self.set_forwarded_header(py, &env, head, i)?;
                }
                continue;
            };
            let k = key.as_ptr();
            if set[..i].contains(&k) {
                let prev = env.get_item(&key)?.map(|p| p.cast_into::<PyString>());
                if let Some(Ok(prev)) = prev {
                    let mut joined: Vec<u8> = match latin1_data(&prev) {
                        Some(b) => b.to_vec(),
                        None => prev.to_cow()?.chars().map(|c| c as u8).collect(),
                    };
                    joined.push(b',');
                    joined.extend_from_slice(head.value(f));
                    env.set_item(&key, latin1(py, &joined)?)?;
                    continue;
                }
            }
            set[i] = k;
            env.set_item(key, v)?;
        }
        drop(guard);
        let mut input = None;
        if !matches!(req.body, Body::Empty) {
            let i = Py::new(py, Input::new(req.body))?;
            env.set_item(intern!(py, "wsgi.input"), &i)?;
            input = Some(i);
        }
        Ok((env, input))
    }

    /// A name with `_` from a trusted peer (field `i` of `head`): kept as `HTTP_NAME`, with any
    /// later fields of that name joined to it, if `--forwarder-headers` has it (out of line:
    /// rare, and kept out of `build`'s inlining budget).
    #[cold]
    #[inline(never)]
    fn set_forwarded_header(
        &self,
        py: Python<'_>,
        env: &Bound<'_, PyDict>,
        head: &Head,
        i: usize,
    ) -> PyResult<()> {
        let fields = &head.fields;
        let name = head.name(&fields[i]);
        let same = |f: &parse::Field| head.name(f).eq_ignore_ascii_case(name);
        if !self.forwarder.allows(name) || fields[..i].iter().any(same) {
            return Ok(());
        }
        let mut value = Cow::Borrowed(head.value(&fields[i]));
        for later in fields[i + 1..].iter().filter(|f| same(f)) {
            let v = value.to_mut();
            v.push(b',');
            v.extend_from_slice(head.value(later));
        }
        let key: String = std::iter::once("HTTP_")
            .flat_map(str::chars)
            .chain(name.iter().map(|&c| match c {
                b'-' => '_',
                c => c.to_ascii_uppercase() as char,
            }))
            .collect();
        env.set_item(key, latin1(py, &value)?)
    }
}

/// Gunicorn's keys for a PROXY protocol header (`REMOTE_*` are the client's already).
#[cold]
#[inline(never)]
fn set_proxy_keys(py: Python<'_>, env: &Bound<'_, PyDict>, p: &ProxyInfo) -> PyResult<()> {
    env.set_item(intern!(py, "PROXY_PROTOCOL"), p.protocol)?;
    if let Some(d) = p.destination {
        env.set_item(intern!(py, "PROXY_ADDR"), d.ip().to_string())?;
        env.set_item(intern!(py, "PROXY_PORT"), d.port().to_string())?;
    }
    Ok(())
}

fn method_str<'py>(py: Python<'py>, head: &Head) -> Bound<'py, PyString> {
    match head.method {
        Method::Get => intern!(py, "GET").clone(),
        Method::Post => intern!(py, "POST").clone(),
        Method::Head => intern!(py, "HEAD").clone(),
        Method::Put => intern!(py, "PUT").clone(),
        Method::Delete => intern!(py, "DELETE").clone(),
        _ => PyString::new(py, head.method_str()),
    }
}

/// The authority of an absolute-form target (out of line: rare outside proxies).
#[cold]
#[inline(never)]
fn target_authority(head: &Head) -> Option<&[u8]> {
    parse::absolute_authority(head.target())
}

/// `SERVER_NAME` and `SERVER_PORT` (PEP 3333, as Gunicorn): from the authority of an
/// absolute-form target (RFC 9112 §3.2.2: it wins over Host), else the Host header, else the
/// listener; the port defaults to the scheme's.
fn server_name_port<'a>(
    head: &'a Head,
    scheme: &str,
    local: &LocalAddr,
) -> (Cow<'a, [u8]>, Cow<'a, [u8]>) {
    let default_port: &[u8] = if scheme == "https" { b"443" } else { b"80" };
    let host = match head.target().first() {
        Some(b'/') => head.host(),
        _ => target_authority(head).or_else(|| head.host()),
    }
    .filter(|h| !h.is_empty());
    if let Some(host) = host {
        if let Some(rest) = host.strip_prefix(b"[")
            && let Some(close) = rest.iter().position(|&b| b == b']')
        {
            let port = rest[close + 1..]
                .strip_prefix(b":")
                .filter(|p| !p.is_empty())
                .unwrap_or(default_port);
            return (Cow::Borrowed(&rest[..close]), Cow::Borrowed(port));
        }
        return match host.iter().rposition(|&b| b == b':') {
            Some(i) if i + 1 < host.len() && host[i + 1..].iter().all(u8::is_ascii_digit) => {
                (Cow::Borrowed(&host[..i]), Cow::Borrowed(&host[i + 1..]))
            }
            _ => (Cow::Borrowed(host), Cow::Borrowed(default_port)),
        };
    }
    match local {
        LocalAddr::Tcp(a) => (
            Cow::Owned(a.ip().to_string().into_bytes()),
            Cow::Owned(a.port().to_string().into_bytes()),
        ),
        LocalAddr::Unix(p) => (
            Cow::Owned(p.display().to_string().into_bytes()),
            Cow::Borrowed(b""),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::limits::Limits;

    fn head(target: &str, host: Option<&str>) -> Head {
        let mut raw = format!("GET {target} HTTP/1.1\r\n");
        if let Some(h) = host {
            raw.push_str(&format!("Host: {h}\r\n"));
        }
        raw.push_str("\r\n");
        let l = Limits::for_tests();
        parse::parse(bytes::Bytes::from(raw), &l).unwrap()
    }

    fn snp(h: &Head) -> (String, String) {
        let local = LocalAddr::Tcp("127.0.0.1:8000".parse().unwrap());
        let (a, b) = server_name_port(h, "http", &local);
        (
            String::from_utf8(a.into_owned()).unwrap(),
            String::from_utf8(b.into_owned()).unwrap(),
        )
    }

    #[test]
    fn server_name_and_port() {
        assert_eq!(
            snp(&head("/", Some("example.com:8080"))),
            ("example.com".into(), "8080".into())
        );
        assert_eq!(
            snp(&head("/", Some("example.com"))),
            ("example.com".into(), "80".into())
        );
        assert_eq!(snp(&head("/", Some("[::1]:9"))), ("::1".into(), "9".into()));
        assert_eq!(snp(&head("/", None)), ("127.0.0.1".into(), "8000".into()));
        assert_eq!(
            snp(&head("http://h.example:81/x", None)),
            ("h.example".into(), "81".into())
        );
        // RFC 9112 §3.2.2: the target's authority wins over Host; the scheme in any case.
        assert_eq!(
            snp(&head("http://evil.example:8080/x", Some("good.example"))),
            ("evil.example".into(), "8080".into())
        );
        assert_eq!(
            snp(&head("HTTP://h.example:81/x", None)),
            ("h.example".into(), "81".into())
        );
        assert_eq!(
            snp(&head("http://h.example", None)),
            ("h.example".into(), "80".into())
        );
    }
}

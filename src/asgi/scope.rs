//! ASGI connection scopes (`http`, `websocket`) built straight from the parsed request head.
//!
//! As WSGI's environ: a per-worker template dict of the right size is copied and filled, keys
//! interned once, header names lower-cased once per distinct name and kept as shared `bytes`.
//! `client` is the TCP peer (`None` on a unix socket) and `scheme` comes from the proxy rules
//! (`--forwarded-allow-ips`), exactly as `REMOTE_ADDR` and `wsgi.url_scheme` do; `server` is the
//! listening address (`[path, None]` on a unix socket). With `--root-path`, `root_path` is set
//! and `path`/`raw_path` are prefixed with it (uvicorn's behaviour, which Starlette's routing
//! expects).

use std::cell::RefCell;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use rustc_hash::FxHashMap;

use crate::http::dispatch::Request;
use crate::http::parse::{self, Method, Version};
use crate::sockets::LocalAddr;

/// What the scopes are built from besides the request.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub root_path: String,
}

/// Upper bound on cached header names (a client could send many distinct ones).
const MAX_CACHED_NAMES: usize = 512;

/// The per-worker part of every scope. Lives on the loop thread.
pub struct Template {
    http: Py<PyDict>,
    ws: Py<PyDict>,
    asgi: Py<PyDict>,
    root_path: String,
    names: RefCell<FxHashMap<Box<[u8]>, Py<PyBytes>>>,
    /// `server` per listener (a worker has a few): made once.
    servers: RefCell<Vec<(LocalAddr, Py<PyTuple>)>>,
}

const KEYS: [&str; 13] = [
    "type",
    "asgi",
    "http_version",
    "method",
    "scheme",
    "path",
    "raw_path",
    "query_string",
    "root_path",
    "headers",
    "client",
    "server",
    "extensions",
];

impl Template {
    pub fn new(py: Python<'_>, o: Options) -> PyResult<Template> {
        let asgi = PyDict::new(py);
        asgi.set_item("version", "3.0")?;
        asgi.set_item("spec_version", "2.4")?;
        let make = |kind: &str| -> PyResult<Py<PyDict>> {
            let d = PyDict::new(py);
            for k in KEYS {
                d.set_item(PyString::intern(py, k), py.None())?;
            }
            d.set_item(intern!(py, "type"), PyString::intern(py, kind))?;
            d.set_item(intern!(py, "root_path"), PyString::new(py, &o.root_path))?;
            d.set_item(intern!(py, "extensions"), PyDict::new(py))?;
            Ok(d.unbind())
        };
        let http = make("http")?;
        let ws = make("websocket")?;
        ws.bind(py)
            .set_item(intern!(py, "subprotocols"), PyList::empty(py))?;
        ws.bind(py)
            .del_item(intern!(py, "method"))
            .or_else(|_| Ok::<(), PyErr>(()))?;
        Ok(Template {
            http,
            ws,
            asgi: asgi.unbind(),
            root_path: o.root_path,
            names: RefCell::new(FxHashMap::default()),
            servers: RefCell::new(Vec::new()),
        })
    }

    fn name<'py>(&self, py: Python<'py>, raw: &[u8]) -> Bound<'py, PyBytes> {
        let mut names = self.names.borrow_mut();
        if let Some(n) = names.get(raw) {
            return n.bind(py).clone();
        }
        let lower = raw.to_ascii_lowercase();
        let b = PyBytes::new(py, &lower);
        if names.len() < MAX_CACHED_NAMES {
            names.insert(raw.into(), b.clone().unbind());
        }
        b
    }

    /// The scope of an HTTP request.
    pub fn http<'py>(
        &self,
        py: Python<'py>,
        req: &Request,
        state: Option<&Py<PyDict>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let d = self.http.bind(py).copy()?;
        d.set_item(intern!(py, "method"), method(py, req))?;
        d.set_item(
            intern!(py, "scheme"),
            if req.scheme == "https" {
                intern!(py, "https")
            } else {
                intern!(py, "http")
            },
        )?;
        self.fill(py, &d, req, state)?;
        Ok(d)
    }

    /// The scope of a WebSocket handshake, with the subprotocols the client offered.
    pub fn websocket<'py>(
        &self,
        py: Python<'py>,
        req: &Request,
        state: Option<&Py<PyDict>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let d = self.ws.bind(py).copy()?;
        d.set_item(
            intern!(py, "scheme"),
            if req.scheme == "https" {
                intern!(py, "wss")
            } else {
                intern!(py, "ws")
            },
        )?;
        let protocols = PyList::empty(py);
        for v in req.head.values("sec-websocket-protocol") {
            for p in v.split(|&b| b == b',') {
                let p = parse::trim(p);
                if !p.is_empty() {
                    protocols.append(PyString::new(py, &String::from_utf8_lossy(p)))?;
                }
            }
        }
        d.set_item(intern!(py, "subprotocols"), protocols)?;
        let ext = PyDict::new(py);
        ext.set_item("websocket.http.response", PyDict::new(py))?;
        d.set_item(intern!(py, "extensions"), ext)?;
        self.fill(py, &d, req, state)?;
        Ok(d)
    }

    fn fill(
        &self,
        py: Python<'_>,
        d: &Bound<'_, PyDict>,
        req: &Request,
        state: Option<&Py<PyDict>>,
    ) -> PyResult<()> {
        let head = &*req.head;
        d.set_item(intern!(py, "asgi"), self.asgi.bind(py).copy()?)?;
        d.set_item(
            intern!(py, "http_version"),
            match head.version {
                Version::Http10 => intern!(py, "1.0"),
                Version::Http11 => intern!(py, "1.1"),
            },
        )?;
        let (raw_path, query) = parse::split_target(head.target());
        // An absolute-form target (`GET http://host/p`): the path is what follows the authority.
        let raw_path = strip_authority(raw_path);
        let decoded = if raw_path.contains(&b'%') {
            std::borrow::Cow::Owned(parse::decode_path(raw_path))
        } else {
            std::borrow::Cow::Borrowed(raw_path)
        };
        let path = String::from_utf8_lossy(&decoded);
        if self.root_path.is_empty() {
            d.set_item(intern!(py, "path"), PyString::new(py, &path))?;
            d.set_item(intern!(py, "raw_path"), PyBytes::new(py, raw_path))?;
        } else {
            let full = format!("{}{path}", self.root_path);
            d.set_item(intern!(py, "path"), PyString::new(py, &full))?;
            let mut raw = self.root_path.as_bytes().to_vec();
            raw.extend_from_slice(raw_path);
            d.set_item(intern!(py, "raw_path"), PyBytes::new(py, &raw))?;
        }
        d.set_item(intern!(py, "query_string"), PyBytes::new(py, query))?;
        let headers = PyList::empty(py);
        for f in &head.fields {
            let pair = PyTuple::new(
                py,
                [
                    self.name(py, head.name(f)).into_any(),
                    PyBytes::new(py, head.value(f)).into_any(),
                ],
            )?;
            headers.append(pair)?;
        }
        d.set_item(intern!(py, "headers"), headers)?;
        match &req.conn.remote {
            Some(r) => {
                let port: u16 = r.port.parse().unwrap_or(0);
                d.set_item(intern!(py, "client"), (r.addr.as_str(), port))?;
            }
            None => d.set_item(intern!(py, "client"), py.None())?,
        }
        d.set_item(intern!(py, "server"), self.server(py, &req.conn.local)?)?;
        if let Some(s) = state {
            d.set_item(intern!(py, "state"), s.bind(py).copy()?)?;
        }
        Ok(())
    }
}

impl Template {
    fn server<'py>(&self, py: Python<'py>, local: &LocalAddr) -> PyResult<Bound<'py, PyTuple>> {
        let mut servers = self.servers.borrow_mut();
        if let Some((_, t)) = servers.iter().find(|(l, _)| l == local) {
            return Ok(t.bind(py).clone());
        }
        let t = match local {
            LocalAddr::Tcp(a) => (a.ip().to_string(), a.port()).into_pyobject(py)?,
            LocalAddr::Unix(p) => (p.display().to_string(), py.None()).into_pyobject(py)?,
        };
        if servers.len() < 64 {
            servers.push((local.clone(), t.clone().unbind()));
        }
        Ok(t)
    }
}

fn strip_authority(p: &[u8]) -> &[u8] {
    for scheme in [&b"http://"[..], b"https://"] {
        if let Some(rest) = p.strip_prefix(scheme) {
            return match rest.iter().position(|&b| b == b'/') {
                Some(i) => &rest[i..],
                None => b"/",
            };
        }
    }
    p
}

fn method<'py>(py: Python<'py>, req: &Request) -> Bound<'py, PyString> {
    match req.head.method {
        Method::Get => intern!(py, "GET").clone(),
        Method::Post => intern!(py, "POST").clone(),
        Method::Head => intern!(py, "HEAD").clone(),
        Method::Put => intern!(py, "PUT").clone(),
        Method::Delete => intern!(py, "DELETE").clone(),
        _ => PyString::new(py, req.head.method_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::strip_authority;

    #[test]
    fn absolute_form_targets_lose_their_authority() {
        assert_eq!(strip_authority(b"http://h.example:81/p/q"), b"/p/q");
        assert_eq!(strip_authority(b"https://h.example"), b"/");
        assert_eq!(strip_authority(b"/plain"), b"/plain");
    }
}

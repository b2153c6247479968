//! Serving ASGI apps (ASGI 3.0: `http` and `websocket` at spec version 2.4, `lifespan` 2.0)
//! behind the HTTP layer's dispatch seam.
//!
//! Threads: the worker's tokio thread does all the I/O (our HTTP/1.1 layer, WebSocket frames
//! through tokio-tungstenite) and never takes the GIL; one Python thread runs the worker's
//! asyncio event loop (uvloop when installed, `--asgi-loop`), where every app coroutine runs.
//! A request crosses once each way: the connection queues it for the loop ([`runloop`]: one
//! eventfd write per burst), the loop builds the scope and starts the app's task; `send()`
//! hands the reply back through a `oneshot` (a streamed body through the HTTP layer's bounded
//! channel). What the app awaits from the I/O side (body chunks, room to send, WebSocket
//! messages, the client going away) is a Rust future polled on the loop thread and woken by
//! tokio's channels, so neither thread ever blocks the other.
//!
//! | module | concern |
//! |---|---|
//! | [`runloop`] | the loop thread, the queue between the threads, parked futures, awaitables |
//! | [`scope`] | `http` and `websocket` scopes from the parsed head |
//! | [`http`] | a request's `receive`/`send`, and the reply |
//! | [`websocket`] | the handshake, accept/deny, the upgraded connection |
//! | [`lifespan`] | startup before `Booted`, shutdown while draining, `state` |
//!
//! `bridge.py` is the Python side: telling ASGI from WSGI, making the loop, the coroutine each
//! app call runs in.

pub mod http;
pub mod lifespan;
pub mod runloop;
pub mod scope;
pub mod websocket;

use std::ffi::CString;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyModule};
use tokio::sync::oneshot;

use crate::busy::Busy;
use crate::config::Config;
use crate::http::dispatch::{Dispatch, Outcome, Request};
use runloop::LoopHandle;
use websocket::{Handshake, Registry};

/// The ASGI settings of a worker.
#[derive(Debug, Clone)]
pub struct Options {
    pub loop_kind: runloop::LoopKind,
    pub lifespan: lifespan::Mode,
    pub root_path: String,
}

impl Options {
    pub fn from_config(cfg: &Config) -> Options {
        Options {
            loop_kind: runloop::LoopKind::parse(&cfg.asgi_loop),
            lifespan: lifespan::Mode::parse(&cfg.asgi_lifespan),
            root_path: cfg.root_path.trim_end_matches('/').to_string(),
        }
    }
}

/// `bridge.py`, compiled once per process.
pub(crate) fn bridge(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    let sys = py.import("sys")?;
    let modules = sys.getattr("modules")?.cast_into::<PyDict>()?;
    if let Some(m) = modules.get_item("_ferricorn_asgi")? {
        return Ok(m.cast_into::<PyModule>()?);
    }
    let code = CString::new(include_str!("bridge.py")).expect("no NUL in the bridge");
    let m = PyModule::from_code(
        py,
        code.as_c_str(),
        c"ferricorn/asgi/bridge.py",
        c"_ferricorn_asgi",
    )?;
    modules.set_item("_ferricorn_asgi", &m)?;
    Ok(m)
}

/// Whether this worker serves `app` as ASGI: `--interface`, else `-k asgi` (or a uvicorn
/// class), else what the app is (a coroutine function, or an object whose `__call__` is one).
pub fn wants_asgi(cfg: &Config, app: &Py<PyAny>) -> Result<bool, String> {
    match cfg.interface.as_str() {
        "asgi" => return Ok(true),
        "wsgi" => return Ok(false),
        _ => {}
    }
    if crate::config::is_asgi_class(&cfg.worker_class) {
        return Ok(true);
    }
    Python::attach(|py| {
        bridge(py)?
            .call_method1("is_asgi", (app.bind(py),))?
            .is_truthy()
    })
    .map_err(|e| format!("cannot tell whether the app is ASGI or WSGI: {e}"))
}

/// A worker's ASGI machinery, as the worker's tokio side holds it.
pub struct Engine {
    handle: Arc<LoopHandle>,
    ws: Arc<Registry>,
    shutdown: Mutex<Option<lifespan::Shutdown>>,
}

impl Engine {
    /// Starts the event loop thread for `app` (its busy slot is `slot` of `busy`).
    pub fn start(
        app: Py<PyAny>,
        o: &Options,
        busy: Arc<Busy>,
        slot: usize,
    ) -> Result<Engine, String> {
        let scope = scope::Options {
            root_path: o.root_path.clone(),
        };
        let handle = runloop::start(app, o.loop_kind, scope, busy, slot)?;
        Ok(Engine {
            handle,
            ws: Arc::new(Registry::default()),
            shutdown: Mutex::new(None),
        })
    }

    /// Runs the lifespan startup (before the worker reports `Booted`); the error is why the
    /// boot failed.
    pub fn startup(&self, mode: lifespan::Mode) -> Result<(), String> {
        let s = lifespan::startup(&self.handle, mode)?;
        *self.shutdown.lock().unwrap_or_else(|e| e.into_inner()) = s;
        Ok(())
    }

    pub fn dispatch(&self) -> AsgiDispatch {
        AsgiDispatch {
            handle: self.handle.clone(),
            ws: self.ws.clone(),
            delivering: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Asks the loop whether it answers (each heartbeat): see [`LoopHandle::ping`].
    pub fn ping(&self) {
        self.handle.ping();
    }

    /// While the worker drains (its HTTP connections done): WebSockets still open get until
    /// `deadline` (just before `--graceful-timeout` ends, so the close frame goes out before the
    /// master's SIGKILL), then close 1001; then the lifespan shutdown, within `within`.
    pub async fn drain(&self, deadline: tokio::time::Instant, within: Duration) {
        self.ws.drain(deadline).await;
        let s = self
            .shutdown
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(s) = s {
            s.run(within).await;
        }
    }
}

/// The ASGI side of the dispatch seam.
pub struct AsgiDispatch {
    handle: Arc<LoopHandle>,
    ws: Arc<Registry>,
    /// The task that delivers the loop's replies runs (started with the first request, on
    /// the worker's runtime).
    delivering: std::sync::atomic::AtomicBool,
}

impl Dispatch for AsgiDispatch {
    async fn call(&self, req: Request) -> Outcome {
        if !self.delivering.load(std::sync::atomic::Ordering::Relaxed)
            && !self
                .delivering
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tokio::spawn(self.handle.clone().deliver_replies());
        }
        let (tx, rx) = oneshot::channel();
        match websocket::handshake(&req.head) {
            Handshake::No => self.handle.run(move |py| http::start(py, req, tx)),
            Handshake::Bad(o) => return o,
            Handshake::Yes(key) => {
                let ws = self.ws.clone();
                self.handle
                    .run(move |py| websocket::start(py, req, key, tx, ws))
            }
        }
        rx.await.unwrap_or(Outcome::Failed)
    }
}

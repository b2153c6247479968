//! The `lifespan` scope: startup before the worker reports that it serves, shutdown while it
//! drains, and the `state` every request's scope gets a copy of.
//!
//! `--asgi-lifespan auto` (`--lifespan`): an app that raises before answering the startup
//! event does not speak lifespan (Django's handler, for one): noted, and the worker serves
//! without it. `on`: that is a failed boot. `lifespan.startup.failed` is a failed boot in both
//! (exit 4, like an app that does not import). `off`: never called.

use std::sync::mpsc as std_mpsc;

use pyo3::exceptions::PyRuntimeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use tokio::sync::oneshot;

use super::runloop::{self, LoopHandle, Resolved};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Auto,
    On,
    Off,
}

impl Mode {
    pub fn parse(s: &str) -> Mode {
        match s {
            "on" => Mode::On,
            "off" => Mode::Off,
            _ => Mode::Auto,
        }
    }
}

enum Startup {
    Complete,
    Unsupported(String),
    Failed(String),
}

type ShutdownReply = oneshot::Sender<Result<(), String>>;

/// Asks a running lifespan to shut down.
pub struct Shutdown {
    tx: oneshot::Sender<ShutdownReply>,
}

impl Shutdown {
    /// Sends `lifespan.shutdown` and waits for the app's answer (up to `within`).
    pub async fn run(self, within: std::time::Duration) {
        let (rtx, rrx) = oneshot::channel();
        if self.tx.send(rtx).is_err() {
            return; // the lifespan task has ended already
        }
        match tokio::time::timeout(within, rrx).await {
            Ok(Ok(Ok(()))) => tracing::info!("ASGI lifespan shutdown complete"),
            Ok(Ok(Err(why))) => tracing::error!("ASGI lifespan shutdown failed: {why}"),
            Ok(Err(_)) => {}
            Err(_) => tracing::warn!(
                "ASGI lifespan shutdown did not complete within {} s",
                within.as_secs()
            ),
        }
    }
}

/// Runs the lifespan startup (blocking the calling thread, which must not hold the GIL).
/// `Ok(Some)`: it completed (call [`Shutdown::run`] when draining); `Ok(None)`: no lifespan.
pub fn startup(handle: &LoopHandle, mode: Mode) -> Result<Option<Shutdown>, String> {
    if mode == Mode::Off {
        return Ok(None);
    }
    let (tx, rx) = std_mpsc::channel();
    let (stx, srx) = oneshot::channel();
    handle.run(move |py| {
        if let Err(e) = start(py, mode, tx.clone(), srx) {
            let _ = tx.send(Startup::Failed(crate::python::format_traceback(py, &e)));
        }
    });
    match rx.recv() {
        Ok(Startup::Complete) => {
            tracing::info!("ASGI lifespan startup complete");
            Ok(Some(Shutdown { tx: stx }))
        }
        Ok(Startup::Unsupported(tb)) => {
            tracing::info!("ASGI 'lifespan' protocol appears unsupported by the app");
            if !tb.is_empty() {
                tracing::debug!("{}", tb.trim_end());
            }
            Ok(None)
        }
        Ok(Startup::Failed(why)) => Err(why),
        Err(_) => Err("the ASGI event loop ended during lifespan startup".into()),
    }
}

fn start(
    py: Python<'_>,
    mode: Mode,
    tx: std_mpsc::Sender<Startup>,
    shutdown: oneshot::Receiver<ShutdownReply>,
) -> PyResult<()> {
    let state = PyDict::new(py);
    let scope = PyDict::new(py);
    scope.set_item("type", "lifespan")?;
    let asgi = PyDict::new(py);
    asgi.set_item("version", "3.0")?;
    asgi.set_item("spec_version", "2.0")?;
    scope.set_item("asgi", asgi)?;
    scope.set_item("state", &state)?;
    let cycle = Bound::new(
        py,
        LifespanCycle {
            mode,
            started: false,
            startup: Some(tx),
            shutdown: Some(shutdown),
            reply: None,
            state: state.unbind(),
        },
    )?;
    let recv = cycle.getattr("receive")?;
    let send = cycle.getattr("send")?;
    runloop::start_task(py, scope.into_any(), recv, send, cycle.into_any())
}

/// The lifespan's `receive`/`send` and its end.
#[pyclass(module = "ferricorn")]
struct LifespanCycle {
    mode: Mode,
    /// `lifespan.startup` was received.
    started: bool,
    startup: Option<std_mpsc::Sender<Startup>>,
    shutdown: Option<oneshot::Receiver<ShutdownReply>>,
    reply: Option<ShutdownReply>,
    state: Py<PyDict>,
}

fn event(py: Python<'_>, t: &str) -> PyResult<Py<PyAny>> {
    let d = PyDict::new(py);
    d.set_item(intern!(py, "type"), PyString::new(py, t))?;
    Ok(d.into_any().unbind())
}

#[pymethods]
impl LifespanCycle {
    fn receive(slf: Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let mut c = slf.borrow_mut();
        if !c.started {
            c.started = true;
            return runloop::ready(py, event(py, "lifespan.startup")?);
        }
        let Some(rx) = c.shutdown.take() else {
            return Err(PyRuntimeError::new_err(
                "receive() called again after lifespan.shutdown",
            ));
        };
        drop(c);
        let cyc = slf.clone().unbind();
        runloop::await_rust(py, async move {
            let reply = rx.await.ok();
            Box::new(move |py: Python<'_>, _| {
                cyc.bind(py).borrow_mut().reply = reply;
                event(py, "lifespan.shutdown")
            }) as Resolved
        })
    }

    fn send(slf: Bound<'_, Self>, message: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let (d, t) = super::http::message(message)?;
        let text = || -> PyResult<String> {
            Ok(match d.get_item(intern!(py, "message"))? {
                Some(m) => m.str()?.to_string(),
                None => String::new(),
            })
        };
        let mut c = slf.borrow_mut();
        match t.as_str() {
            "lifespan.startup.complete" | "lifespan.startup.failed" => {
                let Some(tx) = c.startup.take() else {
                    return Err(PyRuntimeError::new_err(format!(
                        "Unexpected ASGI message '{t}': startup was answered already"
                    )));
                };
                if t == "lifespan.startup.complete" {
                    let state = c.state.clone_ref(py);
                    runloop::with_ctx(|ctx| ctx.state = Some(state));
                    let _ = tx.send(Startup::Complete);
                } else {
                    let m = text()?;
                    let _ = tx.send(Startup::Failed(if m.is_empty() {
                        "lifespan.startup.failed".to_string()
                    } else {
                        format!("lifespan.startup.failed: {m}")
                    }));
                }
            }
            "lifespan.shutdown.complete" | "lifespan.shutdown.failed" => {
                let Some(r) = c.reply.take() else {
                    return Err(PyRuntimeError::new_err(format!(
                        "Unexpected ASGI message '{t}' before lifespan.shutdown"
                    )));
                };
                let _ = r.send(if t == "lifespan.shutdown.complete" {
                    Ok(())
                } else {
                    Err(text()?)
                });
            }
            other => {
                return Err(PyRuntimeError::new_err(format!(
                    "Unexpected ASGI message '{other}' for a lifespan scope"
                )));
            }
        }
        runloop::ready_none(py)
    }

    #[pyo3(signature = (exc))]
    fn done(&mut self, py: Python<'_>, exc: Option<&Bound<'_, PyAny>>) {
        let tb = exc
            .map(|e| crate::python::format_traceback(py, &PyErr::from_value(e.clone())))
            .unwrap_or_default();
        if let Some(tx) = self.startup.take() {
            let _ = tx.send(match (self.mode, exc.is_some()) {
                (Mode::Auto, _) => Startup::Unsupported(tb),
                (_, true) => Startup::Failed(format!(
                    "the ASGI app raised during lifespan startup\n{}",
                    tb.trim_end()
                )),
                (_, false) => Startup::Failed(
                    "the ASGI app returned without answering lifespan startup".into(),
                ),
            });
            return;
        }
        if let Some(r) = self.reply.take() {
            let _ = r.send(if exc.is_some() {
                Err(format!("the app raised\n{}", tb.trim_end()))
            } else {
                Ok(())
            });
        } else if exc.is_some() {
            tracing::error!("ASGI lifespan task raised\n{}", tb.trim_end());
        }
    }
}

//! Gunicorn's server hooks: the Python callables a config file defines (`post_fork`,
//! `when_ready`, ...), called with Gunicorn's arguments at Gunicorn's call points.
//!
//! The callables are the configuration's ([`crate::config::HookSet`], filled by
//! `python::conffile`), so each generation calls its own: a reload (HUP) that reads new hooks
//! uses them for its workers and, once it commits, in the master. The objects they are given
//! (`server`, `worker`, `cfg`, `log`, `req`, `resp`) are `objects.py`'s.
//!
//! Where each runs, and what an exception in it does (the traceback is always logged; the
//! effect is Gunicorn's, read from its `arbiter.py` and `workers/`, except where noted):
//!
//! | hook | runs | an exception |
//! |---|---|---|
//! | `on_starting(server)` | master, before the listeners open | stops the start (exit 1) |
//! | `when_ready(server)` | master, listeners open, before the first fork | logged; the server starts anyway (in Gunicorn the exception escapes `Arbiter.start()` and the master exits: a hook that runs once the server is ready, a watchdog's say, should not keep a site down) |
//! | `nworkers_changed(server, new, old)` | master: at start (`old` None), TTIN/TTOU, a reload's commit | at start: stops the start; later: stops the server (Gunicorn's "Unhandled exception in main loop") |
//! | `pre_fork(server, worker)` | master, before each fork | stops the server (as Gunicorn's main loop) |
//! | `child_exit(server, worker)` | master, after a worker was reaped | stops the server (as Gunicorn's main loop) |
//! | `on_reload(server)` | master, HUP, the new configuration's | refuses the reload, the old workers keep serving (Gunicorn's master dies; ferricorn's reload is a transaction) |
//! | `pre_exec(server)` | the new master (USR2, HUP with `--preload`), forked, before exec | that upgrade fails, the old master keeps serving (Gunicorn's forked child would go on to stop the old master's workers) |
//! | `on_exit(server)` | master, before it exits | the exit status is 1 (Gunicorn's exception escapes `halt`) |
//! | `post_fork(server, worker)` | worker, after the fork, before `--user` | the worker exits 3 (it failed to boot) |
//! | `post_worker_init(worker)` | worker, app loaded, before it serves | the worker exits 3 |
//! | `worker_int(worker)` | worker, on INT or QUIT | logged; the worker exits as asked |
//! | `worker_abort(worker)` | worker, on SIGABRT (the master's timeout) | logged; the worker dies as it would |
//! | `worker_exit(server, worker)` | worker, just before it exits | logged (Gunicorn logs it as a warning) |
//! | `pre_request(worker, req)` | worker, before the app is called | that request is answered 500 |
//! | `post_request(worker, req, environ, resp)` | worker, after the response | logged ("Exception in post_request hook") |
//!
//! Master-side hooks run with the GIL taken only around the call (the master's loop runs
//! without it). A hook may start Python threads in the master (Gunicorn's memory watchdog
//! calls `server.kill_worker` from one): they inherit the master's blocked signals (blocked
//! before any user code runs, see `master::block_signals`), so signals still reach only its
//! signalfd; the master keeps `server.WORKERS` current under the GIL; and a worker fork holds
//! the GIL across `fork()` (`python::fork`), so no such thread is inside Python, or inside
//! the Rust functions it can call (`server.log` runs with the GIL held), when the child is
//! made.

mod worker;

use std::ffi::CString;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyModule, PyTuple};

pub use worker::{
    RequestInfo, install_abort, post_fork, post_request, post_worker_init, pre_request,
    worker_exit, worker_int,
};

use crate::config::{Config, SETTINGS};
use crate::logging::CRITICAL;
use crate::python::conffile::Callables;

/// `server.log.*`: a line in ferricorn's error log (and journald) at `level`.
#[pyfunction]
fn log_line(level: &str, text: &str) {
    match level {
        "debug" => tracing::debug!("{text}"),
        "warning" | "warn" => tracing::warn!("{text}"),
        "error" => tracing::error!("{text}"),
        "critical" => tracing::error!(target: CRITICAL, "{text}"),
        _ => tracing::info!("{text}"),
    }
}

/// `objects.py`, compiled once per process.
fn objects(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    let modules = py
        .import("sys")?
        .getattr("modules")?
        .cast_into::<PyDict>()?;
    if let Some(m) = modules.get_item("_ferricorn_hooks")? {
        return Ok(m.cast_into::<PyModule>()?);
    }
    let code = CString::new(include_str!("objects.py")).expect("no NUL in the source");
    let m = PyModule::from_code(
        py,
        code.as_c_str(),
        c"ferricorn/hooks.py",
        c"_ferricorn_hooks",
    )?;
    m.setattr("_log", wrap_pyfunction!(log_line, &m)?)?;
    modules.set_item("_ferricorn_hooks", &m)?;
    Ok(m)
}

/// The hooks `cfg`'s Python config file defined.
fn callables(cfg: &Config) -> Option<&Callables> {
    cfg.hooks.held()?.downcast_ref::<Callables>()
}

/// Whether `cfg` defines hook `name`.
pub fn defined(cfg: &Config, name: &str) -> bool {
    cfg.hooks.has(name)
}

/// `cfg` as `server.cfg`: every setting by Gunicorn's name (ferricorn's own by its name).
fn cfg_object<'py>(py: Python<'py>, cfg: &Config) -> PyResult<Bound<'py, PyAny>> {
    let layer = cfg.to_layer();
    let mut map = serde_json::Map::new();
    for s in SETTINGS {
        let key = s.gunicorn_name().unwrap_or(s.name);
        let v = layer
            .get_toml(s.name)
            .and_then(|v| serde_json::to_value(v).ok())
            .unwrap_or(serde_json::Value::Null);
        map.insert(key.to_string(), v);
    }
    let text = serde_json::Value::Object(map).to_string();
    objects(py)?.call_method1("make_config", (text,))
}

/// Calls hook `name` of `cfg` (if defined) with the arguments `args` makes; an exception is
/// logged with its traceback and returned as one line.
fn call<'py>(
    py: Python<'py>,
    cfg: &Config,
    name: &str,
    args: impl FnOnce(Python<'py>) -> PyResult<Bound<'py, PyTuple>>,
) -> Result<(), String> {
    let Some(f) = callables(cfg).and_then(|c| c.get(name)) else {
        return Ok(());
    };
    let result = args(py).and_then(|a| f.bind(py).call1(a));
    let _ = objects(py).and_then(|o| o.call_method0("flush"));
    match result {
        Ok(_) => Ok(()),
        Err(e) => {
            let tb = crate::python::format_traceback(py, &e);
            tracing::error!("Exception in {name} hook\n{}", tb.trim_end());
            Err(format!("the {name} hook raised {}", e.value(py)))
                .map_err(|m: String| m.lines().next().unwrap_or("").to_string())
        }
    }
}

/// The master's side: the `server` object, kept current, and the master's hooks.
///
/// Nothing here takes the GIL until a configuration with hooks has been seen.
#[derive(Default)]
pub struct Server {
    active: std::cell::Cell<bool>,
}

/// What `server` says about the master when a hook is called.
pub struct State<'a> {
    pub cfg: &'a Config,
    pub num_workers: u32,
}

impl Server {
    pub fn new() -> Server {
        Server::default()
    }

    /// Whether `cfg` has hooks, which makes the `server` object live from now on.
    fn wakes(&self, cfg: &Config) -> bool {
        if !cfg.hooks.is_empty() {
            self.active.set(true);
        }
        self.active.get()
    }

    fn server<'py>(py: Python<'py>, now: &State<'_>) -> PyResult<Bound<'py, PyAny>> {
        let server = objects(py)?.getattr("SERVER")?;
        server.call_method1(
            "_update",
            (
                cfg_object(py, now.cfg)?,
                now.num_workers,
                now.cfg.timeout,
                now.cfg.proc_name(),
            ),
        )?;
        Ok(server)
    }

    /// Calls a master-side hook that takes only `server`.
    pub fn call(&self, now: &State<'_>, name: &str) -> Result<(), String> {
        self.call_with(now, name, |_, server| Ok(vec![server]))
    }

    /// Calls a master-side hook with `server` and the arguments `more` adds.
    pub fn call_with(
        &self,
        now: &State<'_>,
        name: &str,
        more: impl for<'py> FnOnce(Python<'py>, Bound<'py, PyAny>) -> PyResult<Vec<Bound<'py, PyAny>>>,
    ) -> Result<(), String> {
        if !self.wakes(now.cfg) || !defined(now.cfg, name) {
            return Ok(());
        }
        Python::attach(|py| {
            call(py, now.cfg, name, |py| {
                let server = Self::server(py, now)?;
                PyTuple::new(py, more(py, server)?)
            })
        })
    }

    /// `nworkers_changed(server, new_value, old_value)`.
    pub fn nworkers_changed(&self, now: &State<'_>, old: Option<u32>) -> Result<(), String> {
        let new = now.num_workers;
        self.call_with(now, "nworkers_changed", |py, server| {
            Ok(vec![
                server,
                new.into_pyobject(py)?.into_any(),
                old.into_pyobject(py)?.into_any(),
            ])
        })
    }

    /// Before a worker of `cfg` is forked: its `worker` object (taken by `post_fork` in the
    /// child), then `pre_fork(server, worker)`.
    pub fn pre_fork(&self, now: &State<'_>, cfg: &Config) -> Result<(), String> {
        if !self.wakes(cfg) {
            return Ok(());
        }
        let prepared = Python::attach(|py| -> PyResult<()> {
            let server = Self::server(py, now)?;
            server.call_method1("_prepare_fork", (cfg_object(py, cfg)?, cfg.timeout))?;
            Ok(())
        });
        if let Err(e) = prepared {
            tracing::error!("cannot prepare the worker object for the hooks: {e}");
        }
        if !defined(cfg, "pre_fork") {
            return Ok(());
        }
        Python::attach(|py| {
            call(py, cfg, "pre_fork", |py| {
                let server = objects(py)?.getattr("SERVER")?;
                let worker = server.getattr("_forking")?;
                PyTuple::new(py, [server, worker])
            })
        })
    }

    /// After the fork, in the master: the worker joins `server.WORKERS`.
    pub fn forked(&self, pid: i32) {
        if !self.active.get() {
            return;
        }
        let _ = Python::attach(|py| -> PyResult<()> {
            objects(py)?
                .getattr("SERVER")?
                .call_method1("_forked", (pid,))?;
            Ok(())
        });
    }

    /// A worker was reaped: it leaves `server.WORKERS`, then `child_exit(server, worker)`.
    pub fn exited(&self, now: &State<'_>, pid: i32) -> Result<(), String> {
        if !self.active.get() {
            return Ok(());
        }
        Python::attach(|py| {
            let worker = match objects(py)
                .and_then(|o| o.getattr("SERVER")?.call_method1("_exited", (pid,)))
            {
                Ok(w) if !w.is_none() => w,
                _ => return Ok(()),
            };
            if !defined(now.cfg, "child_exit") {
                return Ok(());
            }
            call(py, now.cfg, "child_exit", |py| {
                let server = Self::server(py, now)?;
                PyTuple::new(py, [server, worker])
            })
        })
    }
}

//! The hooks that run inside a worker: `post_fork`, `post_worker_init`, `worker_int`,
//! `worker_abort`, `worker_exit`, and the per-request `pre_request` / `post_request`.
//!
//! Each is called with the worker's own `worker` object (made in the master before the fork,
//! given its pid here) and its generation's configuration. None costs anything when it is not
//! defined: the request path checks one flag.

use std::sync::atomic::{AtomicI32, Ordering};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use super::{call, defined, objects};
use crate::config::Config;
use crate::http::parse::Head;
use crate::http::response::ResponseHead;

fn worker<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
    objects(py)?.getattr("WORKER")
}

fn server<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
    objects(py)?.getattr("SERVER")
}

/// In the freshly forked worker: its `worker` object gets its pid, then `post_fork(server,
/// worker)`. An exception fails the boot.
pub fn post_fork(cfg: &Config) -> Result<(), String> {
    if cfg.hooks.is_empty() {
        return Ok(());
    }
    Python::attach(|py| {
        let w = objects(py)
            .and_then(|o| o.call_method0("in_worker"))
            .map_err(|e| format!("cannot prepare the worker object: {e}"))?;
        if w.is_none() || !defined(cfg, "post_fork") {
            return Ok(());
        }
        call(py, cfg, "post_fork", |py| {
            PyTuple::new(py, [server(py)?, w])
        })
    })
}

/// The app is loaded: `post_worker_init(worker)`. An exception fails the boot.
pub fn post_worker_init(cfg: &Config, app: &Py<PyAny>) -> Result<(), String> {
    if cfg.hooks.is_empty() {
        return Ok(());
    }
    Python::attach(|py| {
        if let Ok(w) = worker(py)
            && !w.is_none()
        {
            let _ = w.setattr("wsgi", app.bind(py));
            let _ = w.setattr("booted", true);
        }
        call(py, cfg, "post_worker_init", |py| {
            PyTuple::new(py, [worker(py)?])
        })
    })
}

/// INT or QUIT: `worker_int(worker)`, then the worker exits as asked.
pub fn worker_int(cfg: &Config) {
    if !defined(cfg, "worker_int") {
        return;
    }
    let _ = Python::attach(|py| {
        if let Ok(w) = worker(py) {
            let _ = w.setattr("alive", false);
        }
        call(py, cfg, "worker_int", |py| PyTuple::new(py, [worker(py)?]))
    });
}

/// Just before the worker exits: `worker_exit(server, worker)`; an exception is logged.
pub fn worker_exit(cfg: &Config) {
    if !defined(cfg, "worker_exit") {
        return;
    }
    let _ = Python::attach(|py| {
        if let Ok(w) = worker(py) {
            let _ = w.setattr("alive", false);
        }
        call(py, cfg, "worker_exit", |py| {
            PyTuple::new(py, [server(py)?, worker(py)?])
        })
    });
}

/// The write end of the pipe the SIGABRT handler writes to (-1: none).
static ABORT_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_abort(_: libc::c_int) {
    let fd = ABORT_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; one byte from a static buffer.
        unsafe {
            libc::write(fd, b"a".as_ptr().cast(), 1);
        }
    }
}

/// With `worker_abort` defined: SIGABRT (the master's `--timeout`) runs `worker_abort(worker)`
/// on a thread of its own (the event loop may be the thread that hangs), then dumps every
/// thread's Python stack as before and dies by SIGABRT. Installed after faulthandler, whose
/// SIGABRT handler it replaces (faulthandler keeps SIGSEGV, SIGBUS, SIGFPE and SIGILL).
pub fn install_abort(cfg: &Config) {
    if !defined(cfg, "worker_abort") {
        return;
    }
    let Ok((r, w)) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) else {
        tracing::warn!("cannot install the worker_abort hook: no pipe");
        return;
    };
    use std::os::fd::IntoRawFd;
    ABORT_PIPE.store(w.into_raw_fd(), Ordering::Relaxed);
    let cfg = cfg.clone();
    let spawned = std::thread::Builder::new()
        .name("worker-abort".into())
        .spawn(move || {
            let mut b = [0u8; 1];
            loop {
                match nix::unistd::read(&r, &mut b) {
                    Ok(1) => break,
                    Err(nix::errno::Errno::EINTR) => continue,
                    _ => return,
                }
            }
            let fd = crate::logging::error_sink().raw_fd();
            let _ = Python::attach(|py| {
                if let Ok(w) = worker(py) {
                    let _ = w.setattr("alive", false);
                    let _ = w.setattr("aborted", true);
                }
                let _ = call(py, &cfg, "worker_abort", |py| {
                    PyTuple::new(py, [worker(py)?])
                });
                let kwargs = PyDict::new(py);
                kwargs.set_item("file", fd)?;
                kwargs.set_item("all_threads", true)?;
                py.import("faulthandler")?
                    .call_method("dump_traceback", (), Some(&kwargs))?;
                PyResult::Ok(())
            });
            // SAFETY: back to the default action, then the signal again: the worker dies by
            // SIGABRT, as it does without the hook.
            unsafe {
                libc::signal(libc::SIGABRT, libc::SIG_DFL);
                libc::raise(libc::SIGABRT);
            }
        });
    if spawned.is_err() {
        tracing::warn!("cannot install the worker_abort hook: no thread");
        return;
    }
    // SAFETY: installing a handler that only calls write(2).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_abort as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGABRT, &sa, std::ptr::null_mut());
    }
}

/// What `req` is made from: the parsed head and the peer.
pub struct RequestInfo<'a> {
    pub head: &'a Head,
    /// The client's address as Gunicorn's `req.peer_addr` gives it (`(host, port)`), if TCP.
    pub peer: Option<(&'a str, &'a str)>,
}

/// `pre_request(worker, req)`, before the app is called; returns `req` for `post_request`.
/// An exception makes that request fail (500).
pub fn pre_request<'py>(
    py: Python<'py>,
    cfg: &Config,
    info: &RequestInfo<'_>,
) -> Result<Bound<'py, PyAny>, String> {
    let req = make_request(py, info).map_err(|e| {
        let e = format!("cannot make the request object for the hooks: {e}");
        tracing::error!("{e}");
        e
    })?;
    if defined(cfg, "pre_request") {
        let r = req.clone();
        call(py, cfg, "pre_request", move |py| {
            PyTuple::new(py, [worker(py)?, r])
        })?;
    }
    Ok(req)
}

fn make_request<'py>(py: Python<'py>, info: &RequestInfo<'_>) -> PyResult<Bound<'py, PyAny>> {
    let head = info.head;
    let target = head.target_lossy();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.to_string(), String::new()),
    };
    let path = path.split('#').next().unwrap_or("").to_string();
    let headers = PyList::empty(py);
    for f in &head.fields {
        let name = String::from_utf8_lossy(head.name(f)).to_ascii_uppercase();
        let value = String::from_utf8_lossy(head.value(f)).into_owned();
        headers.append((name, value))?;
    }
    let peer: Bound<'py, PyAny> = match info.peer {
        Some((h, p)) => (h, p.parse::<u16>().unwrap_or(0))
            .into_pyobject(py)?
            .into_any(),
        None => "".into_pyobject(py)?.into_any(),
    };
    let version = match head.version.as_str() {
        "HTTP/1.0" => (1, 0),
        _ => (1, 1),
    };
    objects(py)?.getattr("Request")?.call1((
        head.method_str(),
        target.as_ref(),
        path,
        query,
        version,
        headers,
        peer,
    ))
}

/// `post_request(worker, req, environ, resp)`, once the response is done (`head`: what the
/// app answered, if it did). An exception is logged.
pub fn post_request(
    py: Python<'_>,
    cfg: &Config,
    req: &Bound<'_, PyAny>,
    environ: &Bound<'_, PyAny>,
    head: Option<&ResponseHead>,
) {
    if let Ok(w) = worker(py)
        && let Ok(nr) = w.getattr("nr").and_then(|n| n.extract::<u64>())
    {
        let _ = w.setattr("nr", nr + 1);
    }
    if !defined(cfg, "post_request") {
        return;
    }
    let resp = (|| -> PyResult<Bound<'_, PyAny>> {
        let (status, headers) = match head {
            Some(h) => {
                let reason = h
                    .reason
                    .as_deref()
                    .unwrap_or_else(|| crate::http::response::reason_for(h.status));
                let list = PyList::empty(py);
                for line in h.lines.split(|&b| b == b'\n') {
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    if let Some(i) = line.iter().position(|&b| b == b':') {
                        list.append((
                            String::from_utf8_lossy(&line[..i]).into_owned(),
                            String::from_utf8_lossy(crate::http::parse::trim(&line[i + 1..]))
                                .into_owned(),
                        ))?;
                    }
                }
                (format!("{} {reason}", h.status), list)
            }
            None => ("500 Internal Server Error".to_string(), PyList::empty(py)),
        };
        objects(py)?
            .getattr("Response")?
            .call1((status, headers, head.is_some()))
    })();
    let Ok(resp) = resp else {
        return;
    };
    let _ = call(py, cfg, "post_request", |py| {
        PyTuple::new(py, [worker(py)?, req.clone(), environ.clone(), resp])
    });
}

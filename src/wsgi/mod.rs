//! Calling a WSGI application (PEP 3333) behind the HTTP layer's dispatch seam.
//!
//! [`WsgiApp::call`] runs the app with the GIL held. A `list`/`tuple` result (the common case)
//! completes right there. Anything else — a generator, a `wsgi.file_wrapper` — is returned as
//! [`Pending`] and consumed by [`WsgiApp::iterate`] on a Python thread (`response.rs`), which
//! sends the head as soon as the first body bytes exist (PEP 3333 lets `start_response` be called
//! lazily) and then streams chunks through a bounded channel; the GIL is released whenever that
//! channel is full. `close()` is always called on the result, whatever happens. Where the call
//! runs (the event-loop thread or a pool thread) is decided once, in `dispatch.rs`.
//!
//! | module | concern |
//! |---|---|
//! | `request` | the environ, built from the parsed head |
//! | `start_response` | `start_response` and `write()` |
//! | `input` | `wsgi.input` |
//! | `errors` | `wsgi.errors` |
//! | `file_wrapper` | `wsgi.file_wrapper` |
//! | `response` | turning the app's result into a reply |
//! | `dispatch` | inline or pool, and the reply |

pub mod dispatch;
pub mod errors;
pub mod file_wrapper;
pub mod input;
pub mod pool;
pub mod request;
pub mod response;
pub mod start_response;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use crate::http::dispatch::{Outcome, Reply, ReplyBody, Request};
use start_response::StartResponse;

pub use dispatch::WsgiDispatch;
pub use start_response::Head;

/// The result of an app call that still needs iterating.
pub struct Pending {
    result: Py<PyAny>,
    sr: Py<StartResponse>,
    target: String,
    log_vars: Vec<(String, String)>,
    /// `post_request` once the iteration ends: the hooks' `req` and the environ (boxed: this
    /// travels with every iterated response).
    post_request: Option<Box<PostRequest>>,
    /// The request's `wsgi.input`, closed when the request is done.
    input: input::Finish,
}

/// A request whose `post_request` hook is due when its response is done (dropped: called).
pub struct PostRequest {
    cfg: std::sync::Arc<crate::config::Config>,
    req: Py<PyAny>,
    environ: Py<PyAny>,
    sr: Py<StartResponse>,
    fired: bool,
}

impl PostRequest {
    /// Calls the hook with the response head the app gave.
    fn fire(&mut self, py: Python<'_>, head: Option<&Head>) {
        crate::hooks::post_request(
            py,
            &self.cfg,
            self.req.bind(py),
            self.environ.bind(py),
            head,
        );
        self.fired = true;
    }
}

impl Drop for PostRequest {
    fn drop(&mut self) {
        if self.fired {
            return;
        }
        Python::attach(|py| {
            let head = self.sr.bind(py).borrow().head().cloned();
            crate::hooks::post_request(
                py,
                &self.cfg,
                self.req.bind(py),
                self.environ.bind(py),
                head.as_ref(),
            );
        });
    }
}

/// What [`WsgiApp::call`] produced.
pub enum Called {
    Done(Outcome),
    Iterate(Pending),
}

/// One worker's app and its per-worker environ template.
pub struct WsgiApp {
    app: Py<PyAny>,
    template: request::Template,
    /// Environ keys (lower-case) the access log format prints.
    log_keys: Vec<String>,
    /// `start_response` objects (each with its `write`) of finished requests that nothing else
    /// refers to, for the next requests: two Python objects fewer to make and free per request.
    spare: std::sync::Mutex<Vec<Py<StartResponse>>>,
    /// The configuration whose `pre_request` / `post_request` hooks run around each call,
    /// when it defines either (one check per request otherwise).
    pub request_hooks: Option<std::sync::Arc<crate::config::Config>>,
}

/// Spare `start_response` objects kept (one per Python thread that calls the app, usually).
const SPARE_MAX: usize = 4;

impl WsgiApp {
    pub fn new(
        py: Python<'_>,
        app: Py<PyAny>,
        multithread: bool,
        multiprocess: bool,
        log_keys: Vec<String>,
    ) -> PyResult<WsgiApp> {
        Ok(WsgiApp {
            app,
            template: request::Template::new(py, multithread, multiprocess)?,
            log_keys,
            spare: std::sync::Mutex::new(Vec::new()),
            request_hooks: None,
        })
    }

    /// `--forwarder-headers` for the environ.
    pub fn set_forwarder_headers(&mut self, f: crate::proxy::ForwarderHeaders) {
        self.template.set_forwarder_headers(f);
    }

    /// A `start_response` for a new request: a spare one nothing else refers to, or a new one.
    fn start_response<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, StartResponse>> {
        if let Ok(mut spare) = self.spare.try_lock() {
            while let Some(sr) = spare.pop() {
                let sr = sr.into_bound(py);
                if StartResponse::unshared(&sr, 1) {
                    sr.borrow_mut().reset();
                    return Ok(sr);
                }
                // Kept by the app (or a hook): it is theirs now.
                StartResponse::release(&sr);
            }
        }
        Bound::new(py, StartResponse::new())
    }

    /// Takes back the `start_response` of a finished request.
    fn recycle(&self, sr: Bound<'_, StartResponse>) {
        if let Ok(mut spare) = self.spare.try_lock()
            && spare.len() < SPARE_MAX
        {
            spare.push(sr.unbind());
            return;
        }
        StartResponse::release(&sr);
    }

    /// Calls the app for `req`.
    pub fn call(&self, py: Python<'_>, req: Request) -> Called {
        let head = req.head.clone();
        let fail = |e: PyErr| {
            response::log_app_error(py, &head.target_lossy(), &e);
            Called::Done(Outcome::Failed)
        };
        let hook_req = match &self.request_hooks {
            Some(cfg) => {
                let peer = req
                    .conn
                    .remote
                    .as_ref()
                    .map(|r| (r.addr.as_str(), r.port.as_str()));
                let info = crate::hooks::RequestInfo { head: &head, peer };
                match crate::hooks::pre_request(py, cfg, &info) {
                    Ok(r) => Some((cfg.clone(), r)),
                    // Gunicorn: an exception in pre_request fails that request.
                    Err(_) => return Called::Done(Outcome::Failed),
                }
            }
            None => None,
        };
        let (environ, input) = match self.template.build(py, req) {
            Ok(e) => e,
            Err(e) => return fail(e),
        };
        // Dropped last (after the post_request hook): the body's memory is the worker's again,
        // whoever keeps the object.
        let input = input::Finish(input);
        let sr = match self.start_response(py) {
            Ok(s) => s,
            Err(e) => return fail(e),
        };
        let post_request = hook_req.map(|(cfg, req)| {
            Box::new(PostRequest {
                cfg,
                req: req.unbind(),
                environ: environ.clone().into_any().unbind(),
                sr: sr.clone().unbind(),
                fired: false,
            })
        });
        let result = match StartResponse::callable(&sr)
            .and_then(|callable| self.app.bind(py).call1((&environ, callable)))
        {
            Ok(r) => r,
            Err(e) => {
                let failed = fail(e);
                drop(post_request);
                self.recycle(sr);
                return failed;
            }
        };
        let log_vars = self.log_vars(&environ);
        if result.is_exact_instance_of::<PyList>() || result.is_exact_instance_of::<PyTuple>() {
            let done = match response::complete(&result, &sr) {
                Ok((rhead, body)) => {
                    if let Some(mut p) = post_request {
                        p.fire(py, Some(&rhead));
                    }
                    Outcome::Reply(Reply {
                        log_vars,
                        ..Reply::new(rhead, ReplyBody::Full(body))
                    })
                }
                Err(e) => {
                    response::log_app_error(py, &head.target_lossy(), &e);
                    drop(post_request);
                    Outcome::Failed
                }
            };
            // The hook has run: nothing of this request refers to `sr` any more, unless the
            // app or a hook kept it (the next request then checks the counts).
            drop(result);
            drop(environ);
            self.recycle(sr);
            return Called::Done(done);
        }
        Called::Iterate(Pending {
            result: result.unbind(),
            sr: sr.unbind(),
            target: head.target_lossy().into_owned(),
            log_vars,
            post_request,
            input,
        })
    }

    fn log_vars(&self, environ: &Bound<'_, PyDict>) -> Vec<(String, String)> {
        if self.log_keys.is_empty() {
            return Vec::new();
        }
        environ
            .iter()
            .filter_map(|(k, v)| {
                let k: String = k.extract().ok()?;
                let k = k.to_lowercase();
                self.log_keys
                    .contains(&k)
                    .then(|| (k, v.str().map(|s| s.to_string()).unwrap_or_default()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    //! The reuse of `start_response` objects, in-process: whether one may serve another request
    //! is decided by reference counts, which no HTTP exchange can observe (a freed object's
    //! address is handed out again at once).

    use std::sync::Arc;

    use pyo3::types::PyModule;

    use super::*;
    use crate::http::dispatch::{Body, ConnInfo};
    use crate::http::limits::Limits;
    use crate::http::parse;
    use crate::proxy::Peer;
    use crate::sockets::LocalAddr;

    const APP: &std::ffi::CStr = c"
KEPT = []
def app(environ, start_response):
    write = start_response('200 OK', [('Content-Length', '2')])
    if environ['PATH_INFO'] == '/keep':
        KEPT.append(start_response)
    elif environ['PATH_INFO'] == '/keep-write':
        KEPT.append(write)
    return [b'ok']
";

    fn app() -> WsgiApp {
        Python::initialize();
        Python::attach(|py| {
            let m = PyModule::from_code(py, APP, c"reuse_test.py", c"reuse_test").unwrap();
            WsgiApp::new(py, m.getattr("app").unwrap().unbind(), false, false, vec![]).unwrap()
        })
    }

    fn call(app: &WsgiApp, path: &str) {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        let head = parse::parse(bytes::Bytes::from(raw), &Limits::for_tests()).unwrap();
        let req = Request {
            head: Arc::new(head),
            body: Body::Empty,
            conn: Arc::new(ConnInfo::new(
                Peer::Unix,
                Arc::new(LocalAddr::Unix("/t.sock".into())),
            )),
            scheme: "http",
            trusted: true,
        };
        Python::attach(|py| match app.call(py, req) {
            Called::Done(Outcome::Reply(r)) => assert_eq!(r.head.status, 200),
            _ => panic!("not a complete reply"),
        });
    }

    /// The spare objects' addresses, and whether each is free to serve again.
    fn spare(app: &WsgiApp) -> Vec<(usize, bool)> {
        Python::attach(|py| {
            app.spare
                .lock()
                .unwrap()
                .iter()
                .map(|sr| {
                    let sr = sr.bind(py);
                    (sr.as_ptr() as usize, StartResponse::unshared(sr, 1))
                })
                .collect()
        })
    }

    #[test]
    fn a_start_response_nothing_else_holds_is_kept_for_the_next_request() {
        let app = app();
        call(&app, "/");
        let first = spare(&app);
        assert_eq!(first.len(), 1);
        assert!(
            first[0].1,
            "a finished request's start_response is not free: {first:?}"
        );
        call(&app, "/");
        assert_eq!(spare(&app), first);
    }

    #[test]
    fn a_start_response_the_app_holds_is_not_served_again() {
        for path in ["/keep", "/keep-write"] {
            let app = app();
            call(&app, path);
            let kept = spare(&app);
            assert_eq!(kept.len(), 1);
            assert!(!kept[0].1, "{path}: what the app holds counts as free");
            // The next request gets a new one, which is free after it.
            call(&app, "/");
            let next = spare(&app);
            assert!(
                next.len() == 1 && next[0].1 && next[0].0 != kept[0].0,
                "{path}: {next:?}"
            );
        }
    }
}

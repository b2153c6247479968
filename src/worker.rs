//! A worker process: starts Python, imports the app, and serves HTTP on the inherited
//! listeners until told to stop.
//!
//! Lifecycle: forked by the master → `Booted` once the app is imported and the listeners are
//! polled → `Heartbeat`s → on TERM (or after `--max-requests`) stops accepting, lets in-flight
//! requests finish, and exits 0. INT/QUIT exit at once. A failed import exits with
//! [`EXIT_APP_LOAD`] after logging the traceback and telling the master why.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use pyo3::prelude::*;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, Semaphore};

use crate::busy::Busy;
use crate::coalesce::Coalesced;
use crate::config::Config;
use crate::http::dispatch::{ConnInfo, Dispatch};
use crate::http::send_timeout::SendTimeout;
use crate::http::{Limits, Shared};
use crate::ipc::{self, Msg};
use crate::logging::access::AccessLog;
use crate::privileges::Identity;
use crate::proxy::Peer;
use crate::proxy::{ForwarderHeaders, SchemeHeaders};
use crate::sockets::{Listener, LocalAddr};
use crate::wsgi::pool::Pool;
use crate::wsgi::{WsgiApp, WsgiDispatch};

pub use crate::exit::{EXIT_APP_LOAD, EXIT_BOOT_ERROR};

/// Exit code of a worker that panicked after it booted (as a Rust program whose `main` panics).
pub const EXIT_PANIC: i32 = 101;

/// What a freshly forked worker is given.
pub struct Spawn<'a> {
    pub cfg: &'a Config,
    pub listeners: &'a [&'a Listener],
    pub ipc: &'a ipc::Sender,
    /// Descriptors of the master the worker must not keep: its signalfd, the pipe's read end,
    /// the notification socket, and every listener this worker does not serve.
    pub close_fds: Vec<RawFd>,
    pub argv: &'a [String],
    pub master_pid: i32,
    /// `--user`/`--group` to switch to before anything else runs.
    pub identity: Option<&'a Identity>,
    /// Its generation's working directory (where the app is imported from).
    pub cwd: &'a Path,
    /// Its generation's `-e` changes to the environment inherited from the master.
    pub env: &'a [(String, Option<String>)],
}

/// Runs in the child right after `fork()`; returns the worker's exit code (or exits itself).
pub fn run(s: Spawn<'_>) -> i32 {
    // The master blocks its signals (it reads them from a signalfd); a worker handles its own.
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
    // Its own statsd socket first: the master's, which the next lines close, is let go.
    open_statsd(s.cfg);
    for fd in &s.close_fds {
        let _ = nix::unistd::close(*fd);
    }
    if let Err(e) = std::env::set_current_dir(s.cwd) {
        let msg = format!("--chdir {}: {e}", s.cwd.display());
        tracing::error!("{msg}");
        s.ipc.send(&Msg::BootFailed(msg));
        return EXIT_BOOT_ERROR;
    }
    for (k, v) in s.env {
        // SAFETY: a freshly forked worker has one thread; nothing reads the environment
        // concurrently.
        unsafe {
            match v {
                Some(v) => std::env::set_var(k, v),
                None => std::env::remove_var(k),
            }
        }
    }
    crate::proctitle::set(&format!("ferricorn: worker [{}]", s.cfg.proc_name()));
    // Gunicorn's post_fork: in the new worker, before it switches user or loads the app. An
    // exception fails the boot.
    if !s.cfg.hooks.is_empty() {
        let hooked = crate::python::sync_environ().and_then(|()| crate::hooks::post_fork(s.cfg));
        if let Err(e) = hooked {
            tracing::error!("Worker (pid:{}) failed to boot: {e}", std::process::id());
            return EXIT_BOOT_ERROR;
        }
    }
    if let Some(id) = s.identity
        && let Err(e) = crate::privileges::drop_to(id)
    {
        let msg = format!("cannot switch to user {}: {e}", id.user);
        tracing::error!("{msg}");
        s.ipc.send(&Msg::BootFailed(msg));
        return EXIT_BOOT_ERROR;
    }
    // Die with the master: a worker must never outlive it (no orphans after SIGKILL). Set after
    // the identity switch, which clears it (prctl(2)); then a master that died before it was
    // set is caught by the parent check.
    // SAFETY: prctl with constant arguments.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
    }
    if nix::unistd::getppid().as_raw() != s.master_pid {
        return 0;
    }
    // A panic ends this worker only: it is caught here, never unwound into the master's frames
    // that `fork()` copied below this one.
    std::panic::set_hook(Box::new(log_panic));
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| boot_and_serve(&s))) {
        Ok(code) => code,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_string());
            if ipc::booted_sent() {
                EXIT_PANIC
            } else {
                s.ipc
                    .send(&Msg::BootFailed(format!("the worker panicked: {what}")));
                EXIT_BOOT_ERROR
            }
        }
    }
}

/// A worker's panic goes to the error log (with a backtrace when `RUST_BACKTRACE` asks for one).
fn log_panic(info: &std::panic::PanicHookInfo<'_>) {
    let pid = std::process::id();
    let at = info
        .location()
        .map(|l| format!(" at {}:{}", l.file(), l.line()))
        .unwrap_or_default();
    let what = info.payload_as_str().unwrap_or("a panic");
    let backtrace = std::backtrace::Backtrace::capture();
    match backtrace.status() {
        std::backtrace::BacktraceStatus::Captured => {
            tracing::error!("Worker (pid:{pid}) panicked{at}: {what}\n{backtrace}")
        }
        _ => tracing::error!("Worker (pid:{pid}) panicked{at}: {what}"),
    }
}

fn exit(code: i32) -> ! {
    // Skip Rust and C atexit handlers inherited from the master (Python ran its own already).
    // SAFETY: _exit is always safe to call.
    unsafe { libc::_exit(code) }
}

// Kept out of `run` (whose panic handling would otherwise absorb it): inlined there, it left
// tokio's task loop un-inlined and cost ~75 instructions per request (callgrind).
#[inline(never)]
fn boot_and_serve(s: &Spawn<'_>) -> i32 {
    let cfg = s.cfg;
    if let Err(e) = crate::python::setup_worker(cfg) {
        tracing::error!("{e}");
        s.ipc.send(&Msg::BootFailed(e));
        return EXIT_BOOT_ERROR;
    }
    install_faulthandler();
    crate::hooks::install_abort(cfg);
    let import_start = std::time::Instant::now();
    let loaded = match crate::python::preloaded_app() {
        Some(app) => Ok(app),
        None => crate::python::load_app(cfg.app_spec())
            .inspect(|_| crate::metrics::app_imported(import_start.elapsed())),
    };
    let app = match loaded {
        Ok(a) => a,
        Err(e) => {
            if e.traceback.is_empty() {
                tracing::error!("Exception in worker process: {}", e.reason);
            } else {
                tracing::error!("Exception in worker process\n{}", e.traceback.trim_end());
            }
            s.ipc.send(&Msg::BootFailed(e.reason));
            return EXIT_APP_LOAD;
        }
    };
    let asgi = match crate::asgi::wants_asgi(cfg, &app) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!("{e}");
            s.ipc.send(&Msg::BootFailed(e));
            return EXIT_APP_LOAD;
        }
    };
    if let Err(e) = crate::hooks::post_worker_init(cfg, &app) {
        tracing::error!("Worker (pid:{}) failed to boot: {e}", std::process::id());
        return EXIT_BOOT_ERROR;
    }
    if cfg.reload {
        let fd = s.ipc.raw_fd();
        let started = crate::reloader::start(cfg, move |path| {
            ipc::Sender::send_on(fd, &Msg::SourceChanged(path.display().to_string()));
        });
        if let Err(e) = started {
            tracing::warn!("{e}");
        }
    }
    let access = crate::logging::access_out().map(|out| {
        AccessLog::new(
            crate::logging::access::AccessFormat::parse(&cfg.access_log_format)
                .expect("validated at load"),
            out,
        )
    });
    let log_keys = access
        .as_ref()
        .map(|a| a.format.environ_vars())
        .unwrap_or_default();
    let max_requests = match cfg.max_requests {
        0 => 0,
        n => n + fastrand::u64(0..=cfg.max_requests_jitter),
    };
    if asgi {
        return serve_asgi(s, app, access, max_requests);
    }
    let threads = cfg.threads as usize;
    let wsgi =
        match Python::attach(|py| WsgiApp::new(py, app, threads > 1, cfg.workers > 1, log_keys)) {
            Ok(mut w) => {
                if crate::hooks::defined(cfg, "pre_request")
                    || crate::hooks::defined(cfg, "post_request")
                {
                    w.request_hooks = Some(Arc::new(cfg.clone()));
                }
                w.set_forwarder_headers(ForwarderHeaders::new(&cfg.forwarder_headers));
                Arc::new(w)
            }
            Err(e) => {
                let msg = format!("cannot prepare the WSGI environment: {e}");
                tracing::error!("{msg}");
                s.ipc.send(&Msg::BootFailed(msg));
                return EXIT_BOOT_ERROR;
            }
        };
    // Slot 0 is the event-loop thread (inline calls), 1..=threads the pool.
    let busy = Arc::new(Busy::new(threads + 1));
    let pool = Pool::start(threads, wsgi.clone(), busy.clone(), 1);
    let dispatch = WsgiDispatch {
        app: wsgi,
        pool,
        slots: Arc::new(Semaphore::new(threads)),
        inline: threads == 1,
        busy: busy.clone(),
    };
    let mut shared = Shared::new(dispatch, limits(cfg), cfg.forwarded());
    shared.access = access;
    shared.max_requests = max_requests;
    configure(&mut shared, cfg);
    run_service(s, Arc::new(shared), busy, None)
}

/// The rest of an ASGI worker's boot: its event loop thread and the lifespan startup (a failed
/// startup is a failed boot, exit 4), then the same serving loop as WSGI.
fn serve_asgi(s: &Spawn<'_>, app: Py<PyAny>, access: Option<AccessLog>, max_requests: u64) -> i32 {
    let cfg = s.cfg;
    let opts = crate::asgi::Options::from_config(cfg);
    // Slot 0: the event loop thread (busy while it does not answer a ping).
    let busy = Arc::new(Busy::new(1));
    let engine = match crate::asgi::Engine::start(app, &opts, busy.clone(), 0) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!("{e}");
            s.ipc.send(&Msg::BootFailed(e));
            return EXIT_BOOT_ERROR;
        }
    };
    if let Err(e) = engine.startup(opts.lifespan) {
        tracing::error!("Exception in worker process: ASGI lifespan startup failed: {e}");
        let first = e.lines().next().unwrap_or("").to_string();
        s.ipc.send(&Msg::BootFailed(format!(
            "ASGI lifespan startup failed: {first}"
        )));
        return EXIT_APP_LOAD;
    }
    let mut shared = Shared::new(engine.dispatch(), limits(cfg), cfg.forwarded());
    shared.access = access;
    shared.max_requests = max_requests;
    configure(&mut shared, cfg);
    run_service(s, Arc::new(shared), busy, Some(engine))
}

/// What the connection layer does besides dispatching, the same for WSGI and ASGI: the health
/// path, the PROXY protocol, the proxy headers, the per-request observers (statsd).
fn configure<D>(s: &mut Shared<D>, cfg: &Config) {
    s.health_path = cfg.health_path.as_ref().map(|p| p.as_bytes().into());
    s.proxy_protocol = proxy_protocol(cfg);
    s.scheme_headers = SchemeHeaders::new(
        cfg.secure_scheme_headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    s.forwarder = ForwarderHeaders::new(&cfg.forwarder_headers);
    if let Some(statsd) = crate::statsd::installed() {
        s.observers.push(statsd);
    }
}

fn run_service<D: Dispatch>(
    s: &Spawn<'_>,
    service: Arc<Shared<D>>,
    busy: Arc<Busy>,
    asgi: Option<crate::asgi::Engine>,
) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the event loop: {e}");
            return EXIT_BOOT_ERROR;
        }
    };
    let code = rt.block_on(serve(s.cfg, s.listeners, s.ipc, service, busy, asgi));
    crate::hooks::worker_exit(s.cfg);
    finalize_python();
    code
}

/// This worker's own statsd socket (`--statsd-host`), also counting its log lines; the one
/// inherited from the master is let go.
fn open_statsd(cfg: &Config) {
    let s = cfg.statsd_host.as_deref().and_then(|host| {
        crate::statsd::Statsd::open(host, &cfg.statsd_prefix, &cfg.dogstatsd_tags)
            .map_err(|e| tracing::debug!("no statsd metrics from this worker: {e}"))
            .ok()
            .map(Arc::new)
    });
    crate::statsd::install(s);
}

/// `--proxy-protocol` and `--proxy-allow-from` for the connection layer.
fn proxy_protocol(cfg: &Config) -> crate::http::proxy_protocol::Accept {
    use crate::config::ProxyProtocol as P;
    crate::http::proxy_protocol::Accept {
        v1: matches!(cfg.proxy_protocol, P::V1 | P::Auto),
        v2: matches!(cfg.proxy_protocol, P::V2 | P::Auto),
        allow: crate::proxy::ForwardedAllowIps::parse(&cfg.proxy_allow_ips)
            .expect("validated at load"),
    }
}

/// The request limits of this config (`--limit-request-*`, the timeouts).
fn limits(cfg: &Config) -> Limits {
    Limits {
        // Gunicorn: 0 means its maximum, 8190.
        line: match cfg.limit_request_line {
            0 => 8190,
            n => n as usize,
        },
        fields: cfg.limit_request_fields as usize,
        field_size: cfg.limit_request_field_size as usize,
        body: cfg.limit_request_body,
        header_timeout: Duration::from_secs(cfg.header_timeout.max(1)),
        keep_alive: (cfg.keep_alive > 0).then(|| Duration::from_secs(cfg.keep_alive)),
        body_timeout: Duration::from_secs(cfg.body_timeout.max(1)),
        body_min_rate: cfg.body_min_rate,
        send_timeout: (cfg.send_timeout > 0).then(|| Duration::from_secs(cfg.send_timeout)),
    }
}

/// Python's faulthandler for the fatal signals (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT):
/// every thread's Python stack goes to the error log before the worker dies, whether the app
/// crashed or the master sent SIGABRT because the worker timed out.
fn install_faulthandler() {
    let fd = crate::logging::error_sink().raw_fd();
    let installed = Python::attach(|py| -> pyo3::PyResult<()> {
        let kwargs = pyo3::types::PyDict::new(py);
        kwargs.set_item("file", fd)?;
        kwargs.set_item("all_threads", true)?;
        py.import("faulthandler")?
            .call_method("enable", (), Some(&kwargs))?;
        Ok(())
    });
    if let Err(e) = installed {
        tracing::warn!("cannot enable Python's faulthandler: {e}");
    }
}

/// Runs `atexit` handlers and flushes Python's streams before a graceful exit.
fn finalize_python() {
    let _ = Python::attach(|py| {
        py.run(
            c"import atexit, sys\natexit._run_exitfuncs()\nsys.stdout.flush()\nsys.stderr.flush()",
            None,
            None,
        )
    });
}

enum Stop {
    Graceful,
    Fast,
}

/// Counts open connections so a draining worker knows when the last one is done, and so that
/// the accept loops stop at `--worker-connections`.
#[derive(Default)]
struct Connections {
    open: std::sync::atomic::AtomicUsize,
    none_left: Notify,
    /// `--worker-connections`.
    limit: usize,
    /// One closed while at the limit.
    freed: Notify,
}

/// Held by a connection's task for its lifetime.
struct ConnGuard(Arc<Connections>);

impl ConnGuard {
    fn new(c: &Arc<Connections>) -> ConnGuard {
        c.open.fetch_add(1, Ordering::SeqCst);
        ConnGuard(c.clone())
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let was = self.0.open.fetch_sub(1, Ordering::SeqCst);
        if was == 1 {
            self.0.none_left.notify_waiters();
        }
        if was >= self.0.limit {
            self.0.freed.notify_waiters();
        }
    }
}

/// The cap is logged at most this often.
const CAP_LOG_EVERY: Duration = Duration::from_secs(10);

impl Connections {
    /// Waits until fewer than `--worker-connections` are open (Gunicorn's cap: beyond it the
    /// worker stops accepting, so new connections wait in the listen backlog, where another
    /// worker can take them, instead of being refused).
    async fn below_limit(&self, last_log: &mut Option<std::time::Instant>) {
        loop {
            let freed = self.freed.notified();
            if self.open.load(Ordering::SeqCst) < self.limit {
                return;
            }
            if last_log.is_none_or(|t| t.elapsed() >= CAP_LOG_EVERY) {
                tracing::warn!(
                    "Worker (pid:{}) has {} connections (--worker-connections): not accepting \
                     until one closes (logged at most every {} s)",
                    std::process::id(),
                    self.limit,
                    CAP_LOG_EVERY.as_secs()
                );
                *last_log = Some(std::time::Instant::now());
            }
            freed.await;
        }
    }

    async fn drained(&self) {
        loop {
            let notified = self.none_left.notified();
            if self.open.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

async fn serve<D: Dispatch>(
    cfg: &Config,
    listeners: &[&Listener],
    ipc: &ipc::Sender,
    service: Arc<Shared<D>>,
    busy: Arc<Busy>,
    asgi: Option<crate::asgi::Engine>,
) -> i32 {
    let asgi = asgi.map(Arc::new);
    let conns = Arc::new(Connections {
        limit: cfg.worker_connections.max(1) as usize,
        ..Connections::default()
    });
    let mut accepts = Vec::new();
    for l in listeners {
        let fd = match l.try_clone_fd() {
            Ok(fd) => fd,
            Err(e) => {
                tracing::error!("cannot use listener {}: {e}", l.local);
                return EXIT_BOOT_ERROR;
            }
        };
        match accept_loop(fd, l.local.clone(), service.clone(), conns.clone()) {
            Ok(task) => accepts.push(task),
            Err(e) => {
                tracing::error!("cannot use listener {}: {e}", l.local);
                return EXIT_BOOT_ERROR;
            }
        }
    }
    let (Ok(mut term), Ok(mut quit), Ok(mut int), Ok(mut usr1), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::quit()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::user_defined1()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return EXIT_BOOT_ERROR;
    };
    ipc.send(&Msg::Booted);
    let heartbeat = heartbeat_every(cfg.timeout);
    let beat = {
        let service = service.clone();
        let ipc_fd = ipc.raw_fd();
        let asgi = asgi.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(heartbeat);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Some(a) = &asgi {
                    // A loop that does not answer is busy from this ping on (--timeout).
                    a.ping();
                }
                let msg = Msg::Heartbeat {
                    busy_since: busy.oldest(),
                    requests: service.requests.load(Ordering::Relaxed),
                };
                ipc::Sender::send_on(ipc_fd, &msg);
            }
        })
    };
    let stop = loop {
        tokio::select! {
            _ = term.recv() => break Stop::Graceful,
            _ = quit.recv() => break Stop::Fast,
            _ = int.recv() => break Stop::Fast,
            _ = usr1.recv() => crate::logging::reopen(),
            _ = hup.recv() => {} // the master handles reloads; workers are replaced, not reloaded
            _ = service.retire.notified() => {
                let n = service.requests.load(Ordering::Relaxed);
                tracing::info!("Autorestarting worker after {n} requests (pid: {})", std::process::id());
                ipc.send(&Msg::Retiring { requests: n });
                break Stop::Graceful;
            }
        }
    };
    if let Stop::Fast = stop {
        fast_exit(cfg);
    }
    // Stop accepting; the master (or a new worker) keeps the listeners. Requests still arriving
    // on open connections are served, with `Connection: close`; idle keep-alive connections
    // end at their keep-alive timeout. Closing them at once instead would race with a client
    // sending its next request on them, and that request would fail.
    service.draining.store(true, Ordering::SeqCst);
    let drain_start = tokio::time::Instant::now();
    for a in accepts {
        a.abort();
        let _ = a.await;
    }
    // This process's own references to the listening sockets (inherited from the master) go
    // too: while any process holds one, the kernel keeps completing connections into its
    // backlog that no one will accept, and they are reset only when the last worker exits.
    // (Never used again here, and never closed twice: a worker leaves through `_exit`.)
    for l in listeners {
        // SAFETY: closing a descriptor this process inherited and no longer uses.
        unsafe { libc::close(l.raw_fd()) };
    }
    tokio::select! {
        _ = conns.drained() => {}
        _ = quit.recv() => fast_exit(cfg),
        _ = int.recv() => fast_exit(cfg),
    }
    if let Some(a) = &asgi {
        // Open WebSockets get --graceful-timeout (less half a second, so that their close
        // frame goes out before a stopping master's SIGKILL), then the lifespan shutdown.
        let graceful = Duration::from_secs(cfg.graceful_timeout);
        let deadline = drain_start + graceful.saturating_sub(Duration::from_millis(500));
        tokio::select! {
            _ = a.drain(deadline, graceful.max(Duration::from_secs(1))) => {}
            _ = quit.recv() => fast_exit(cfg),
            _ = int.recv() => fast_exit(cfg),
        }
    }
    beat.abort();
    tracing::info!("Worker exiting (pid: {})", std::process::id());
    0
}

/// INT or QUIT: Gunicorn's `worker_int` and `worker_exit` hooks, then out at once.
fn fast_exit(cfg: &Config) -> ! {
    crate::hooks::worker_int(cfg);
    crate::hooks::worker_exit(cfg);
    exit(0)
}

/// How often a worker reports: often enough for `--timeout` to be precise, at most 1/s.
fn heartbeat_every(timeout: u64) -> Duration {
    if timeout == 0 {
        return Duration::from_secs(1);
    }
    Duration::from_millis((timeout * 1000 / 4).clamp(50, 1000))
}

type AcceptTask = tokio::task::JoinHandle<()>;

/// Logs accept() failures at most once per [`ACCEPT_LOG_EVERY`], with how many were not logged
/// (under fd exhaustion the loop retries every 100 ms and would otherwise flood the log).
struct AcceptErrors {
    last: Option<std::time::Instant>,
    suppressed: u64,
}

const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(10);

impl AcceptErrors {
    fn report(&mut self, raw: i32, e: &std::io::Error) {
        let now = std::time::Instant::now();
        match self.last {
            Some(t) if now.duration_since(t) < ACCEPT_LOG_EVERY => self.suppressed += 1,
            _ => {
                let more = match self.suppressed {
                    0 => String::new(),
                    n => format!(" ({n} more since the last report)"),
                };
                tracing::error!(
                    "accept() on fd {raw} failed: {e}; retrying every 100 ms{more} \
                     (logged at most every {} s)",
                    ACCEPT_LOG_EVERY.as_secs()
                );
                self.last = Some(now);
                self.suppressed = 0;
            }
        }
    }
}

fn accept_loop<D: Dispatch>(
    fd: OwnedFd,
    local: LocalAddr,
    service: Arc<Shared<D>>,
    conns: Arc<Connections>,
) -> std::io::Result<AcceptTask> {
    let local = Arc::new(local);
    enum L {
        Tcp(tokio::net::TcpListener),
        Unix(tokio::io::unix::AsyncFd<std::os::unix::net::UnixListener>),
    }
    let raw = fd.as_raw_fd();
    let listener = match local.as_ref() {
        LocalAddr::Tcp(_) => {
            let std = std::net::TcpListener::from(fd);
            std.set_nonblocking(true)?;
            L::Tcp(tokio::net::TcpListener::from_std(std)?)
        }
        LocalAddr::Unix(_) => {
            let std = std::os::unix::net::UnixListener::from(fd);
            std.set_nonblocking(true)?;
            L::Unix(crate::unix_conn::register(
                std,
                tokio::io::Interest::READABLE,
            )?)
        }
    };
    Ok(tokio::spawn(async move {
        let mut errors = AcceptErrors {
            last: None,
            suppressed: 0,
        };
        let mut cap_logged = None;
        let send_timeout = service.limits.send_timeout;
        loop {
            if conns.open.load(Ordering::Relaxed) >= conns.limit {
                conns.below_limit(&mut cap_logged).await;
            }
            let accepted = match &listener {
                L::Tcp(l) => l.accept().await.map(|(s, a)| {
                    let _ = s.set_nodelay(true);
                    (Conn::Tcp(s), Peer::Tcp(a))
                }),
                L::Unix(l) => crate::unix_conn::accept(l)
                    .await
                    .map(|s| (Conn::Unix(s), Peer::Unix)),
            };
            let (stream, peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    ) {
                        errors.report(raw, &e);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
            };
            // Formatted once per connection, not per request.
            let fd = match &stream {
                Conn::Tcp(s) => std::os::fd::AsRawFd::as_raw_fd(s),
                Conn::Unix(s) => std::os::fd::AsRawFd::as_raw_fd(s),
            };
            let info = Arc::new(ConnInfo::new(peer, local.clone()).with_fd(fd));
            let guard = ConnGuard::new(&conns);
            let svc = service.clone();
            match stream {
                // The send timeout inside the coalescing: a write Coalesced defers is not one
                // that waits for the client.
                Conn::Tcp(s) => {
                    tokio::spawn(async move {
                        let s = Coalesced::new(SendTimeout::new(s, send_timeout));
                        crate::http::serve(s, svc, info).await;
                        drop(guard);
                    });
                }
                // Not coalesced: measured as a loss on unix sockets (src/coalesce.rs).
                Conn::Unix(s) => {
                    tokio::spawn(async move {
                        crate::http::serve(SendTimeout::new(s, send_timeout), svc, info).await;
                        drop(guard);
                    });
                }
            }
        }
    }))
}

enum Conn {
    Tcp(tokio::net::TcpStream),
    /// Registered for write readiness only once a write blocks (src/unix_conn.rs).
    Unix(crate::unix_conn::UnixConn),
}

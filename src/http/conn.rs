//! One HTTP/1.1 connection: read a head, decide how its body reaches the app, dispatch, write
//! the reply, and decide whether the connection can be kept — in a loop, for keep-alive and
//! pipelining.
//!
//! With `--proxy-protocol`, a connection may start with a PROXY header (read by
//! [`super::proxy_protocol`] before anything else; the client it names replaces the peer in
//! the [`ConnInfo`]).
//!
//! Timeouts: a new connection gets `--header-timeout` from the accept for its first head; a
//! kept-alive one waits `--keep-alive` for the next request's first byte (then closes silently)
//! and then gets `--header-timeout` for the rest of that head (then `408`). A body is read under
//! the deadline of [`BodyClock`] (`408` then close). All of these are one timer per connection,
//! moved from deadline to deadline (see `read_by`); a request without a body reads the clock
//! once (for its keep-alive deadline). Writes wait at most `--send-timeout` for the client to
//! read (the stream is wrapped in [`super::send_timeout::SendTimeout`] by the worker).
//!
//! Memory: a head past [`HEAD_FREE`] bytes counts against the worker's head budget (503 when it
//! is spent); body bytes against its body budget (see below); a connection closed while its
//! client may still be sending lingers (reads and discards, bounded) so that the reply is not
//! cut by a reset.
//!
//! Bodies: up to [`BUFFER_BODY`] bytes are read before the app is called (all of a body that
//! small; bytes past [`SMALL_BODY`] within the worker's [`Budget`]), so a slow or stalled upload
//! costs no Python thread; the rest of a larger body, or a body the client sends only after
//! `100 Continue`, is streamed to the app through a channel of one chunk, so a connection holds
//! at most a few chunks. While
//! a body streams the connection reads and writes at once (the app may answer as it reads). A
//! reply that leaves a body unread is followed by a bounded drain, or the connection closes.

use std::future::Future;
use std::io;
use std::os::fd::RawFd;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::{Instant, Sleep, timeout_at};

use super::body::{Decoder, Step};
use super::dispatch::{
    Body, BodyChunk, BodyError, BodyStream, ConnInfo, Dispatch, Ended, Outcome, Reply, ReplyBody,
    Request, Upgraded,
};
use super::limits::{
    BODY_CHUNK, BUFFER_BODY, BodyClock, Budget, DRAIN_MAX, DRAIN_TIME, HEAD_FREE, Held,
    LINGER_IDLE, LINGER_TIME, Limits, SMALL_BODY,
};
use super::parse::{self, Framing, Head, Method, Reject};
use super::response::{self, Wire};
use crate::logging::access::{AccessLog, AccessRecord};
use crate::proxy::ForwardedAllowIps;

/// Output bytes gathered before they are written (responses to pipelined requests go out
/// together up to this).
const OUT_FLUSH: usize = 64 * 1024;
/// Body chunks smaller than this are copied next to their framing (one write); larger ones are
/// written as they are.
const COPY_MAX: usize = 16 * 1024;

/// Everything a worker's connections share.
pub struct Shared<D> {
    pub dispatch: D,
    pub limits: Limits,
    pub forwarded: ForwardedAllowIps,
    pub access: Option<AccessLog>,
    pub budget: Arc<Budget>,
    /// The per-worker budget of request-head bytes past [`HEAD_FREE`].
    pub head_budget: Arc<Budget>,
    /// Requests finished (response sent or abandoned).
    pub requests: AtomicU64,
    /// Stop after this many requests (0: never); `retire` is notified when reached.
    pub max_requests: u64,
    pub retire: Notify,
    /// The worker is stopping: responses carry `Connection: close`.
    pub draining: AtomicBool,
    /// `--health-path`, answered here (see [`super::health`]).
    pub health_path: Option<Box<[u8]>>,
    /// `--proxy-protocol`, `--proxy-allow-from`.
    pub proxy_protocol: super::proxy_protocol::Accept,
    /// `secure_scheme_headers` and `--forwarder-headers`, for peers in `forwarded`.
    pub scheme_headers: crate::proxy::SchemeHeaders,
    pub forwarder: crate::proxy::ForwarderHeaders,
    /// Who counts finished requests (statsd; see `crate::observe`).
    pub observers: crate::observe::Observers,
}

impl<D> Shared<D> {
    pub fn new(dispatch: D, limits: Limits, forwarded: ForwardedAllowIps) -> Shared<D> {
        Shared {
            dispatch,
            limits,
            forwarded,
            access: None,
            budget: Budget::new(super::limits::WORKER_BODY_BUDGET),
            head_budget: Budget::new(super::limits::WORKER_HEAD_BUDGET),
            requests: AtomicU64::new(0),
            max_requests: 0,
            retire: Notify::new(),
            draining: AtomicBool::new(false),
            health_path: None,
            proxy_protocol: super::proxy_protocol::Accept::off(),
            scheme_headers: crate::proxy::SchemeHeaders::gunicorn_default(),
            forwarder: crate::proxy::ForwarderHeaders::gunicorn_default(),
            observers: crate::observe::Observers::default(),
        }
    }
}

/// How reading a head ended without one.
enum NoHead {
    /// Closed or idle: end silently.
    Quiet,
    /// Answer this and close.
    Reject(Reject),
}

/// What one request's exchange came to, for the access log and the keep-alive decision.
struct Done {
    status: u16,
    sent: u64,
    /// Request body bytes read.
    received: u64,
    keep: bool,
    /// The app's head (for `{header}o`) and `{var}e` values.
    resp: Option<response::ResponseHead>,
    log_vars: Vec<(String, String)>,
    /// Part of the request body was left unread: the client may still be sending it.
    unread: bool,
}

impl Done {
    fn server(status: u16, keep: bool) -> Done {
        Done {
            status,
            sent: 0,
            received: 0,
            keep,
            resp: None,
            log_vars: Vec::new(),
            unread: false,
        }
    }
}

/// Serves one connection until it closes.
pub async fn serve<S, D>(mut io: S, shared: Arc<Shared<D>>, mut info: Arc<ConnInfo>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    D: Dispatch,
{
    let _open = crate::metrics::Gauge::hold(crate::metrics::Held::Connection);
    let mut rbuf = BytesMut::with_capacity(8192);
    if shared.proxy_protocol.enabled() {
        let pp = &shared.proxy_protocol;
        match super::proxy_protocol::read(
            &mut io,
            &mut rbuf,
            pp,
            &info.peer,
            shared.limits.header_timeout,
        )
        .await
        {
            Ok(None) => {}
            Ok(Some(p)) => info = Arc::new(ConnInfo::new(info.peer, info.local.clone()).proxied(p)),
            Err(refused) => {
                if let super::proxy_protocol::Refused::Warn(w) = refused {
                    tracing::warn!("{w}; connection closed");
                }
                let _ = io.shutdown().await;
                return;
            }
        }
    }
    // Whether the peer may set forwarded headers, and whether a request's duration is wanted:
    // both fixed for the connection, so asked once.
    let trusted = info.peer.trusted_by(&shared.forwarded);
    let timed =
        shared.access.is_some() || !shared.observers.is_empty() || crate::metrics::recording();
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    let mut first = true;
    // The client may still be sending when the server closes: linger before closing.
    let mut linger = false;
    // The connection's one timer, moved to each deadline in turn (see `read_by`).
    let timer = tokio::time::sleep_until(Instant::now() + shared.limits.header_timeout);
    let mut timer = pin!(timer);
    loop {
        let read = read_head(&mut io, &mut rbuf, &mut out, &shared, first, &mut timer).await;
        let (head, _head_held) = match read {
            Ok(h) => h,
            Err(NoHead::Quiet) => break,
            Err(NoHead::Reject(r)) => {
                // After any responses still gathered for earlier pipelined requests.
                reject(&shared, &info, None, &r);
                super::errors::write(r.status, false, rbuf.starts_with(b"HEAD "), &mut out);
                linger = true;
                break;
            }
        };
        first = false;
        let start = timed.then(std::time::Instant::now);
        let was_head = head.starts_with(b"HEAD ");
        let head = match parse::parse(head, &shared.limits) {
            Ok(h) => Arc::new(h),
            Err(r) => {
                reject(&shared, &info, None, &r);
                super::errors::write(r.status, false, was_head, &mut out);
                linger = true;
                break;
            }
        };
        if super::health::wanted(shared.health_path.as_deref(), &head) {
            let keep = head.keep_alive
                && shared.limits.keep_alive.is_some()
                && !shared.draining.load(Ordering::Relaxed);
            if super::health::answer(&head, keep, &mut out) {
                continue;
            }
            break;
        }
        crate::metrics::request_started();
        let (done, upgrade) = exchange(
            &mut io, &mut rbuf, &mut out, &shared, &info, trusted, &head, &mut timer,
        )
        .await;
        if let Some(up) = upgrade {
            if !out.is_empty() && io.write_all(&out).await.is_err() {
                shared_finished(&shared, &info, &head, &done, start);
                break;
            }
            let buffered = rbuf.split().freeze();
            // Logged when the upgraded connection ends, with its whole duration.
            let (shared, info, head) = (shared.clone(), info.clone(), head.clone());
            let ended = Ended::new(move |sent| {
                let done = Done { sent, ..done };
                shared_finished(&shared, &info, &head, &done, start);
            });
            up(Upgraded {
                io: Box::new(io),
                buffered,
                ended,
            });
            return;
        }
        shared_finished(&shared, &info, &head, &done, start);
        if !done.keep {
            linger = done.unread || !rbuf.is_empty();
            break;
        }
    }
    if !out.is_empty() {
        let _ = io.write_all(&out).await;
    }
    let _ = io.shutdown().await;
    if linger && !info.is_gone() {
        linger_close(&mut io, &mut rbuf, info.fd).await;
    }
}

/// Reads and discards what the client still sends (nginx's lingering close): closing a socket
/// with unread bytes makes the kernel answer with a reset, which discards the part of the reply
/// the client has not received yet. Ends as soon as the kernel has nothing of the reply left to
/// deliver (then a reset loses nothing: a client that keeps reading ends it as soon as it has
/// the reply, however fast it uploads), when the client closes, falls silent for
/// [`LINGER_IDLE`], or after [`LINGER_TIME`] (a client that uploads and never reads).
async fn linger_close<S: AsyncRead + Unpin>(io: &mut S, rbuf: &mut BytesMut, fd: Option<RawFd>) {
    let start = Instant::now();
    let until = start + LINGER_TIME;
    let mut quiet_since = start;
    loop {
        if fd.is_some_and(|fd| undelivered(fd) == Some(0)) {
            return;
        }
        rbuf.clear();
        if rbuf.capacity() < 16384 {
            rbuf.reserve(16384);
        }
        // Wakes up now and then to ask the kernel again while the client sends nothing.
        let now = Instant::now();
        let wait = (quiet_since + LINGER_IDLE)
            .min(until)
            .min(now + LINGER_POLL);
        match timeout_at(wait, io.read_buf(rbuf)).await {
            Ok(Ok(n)) if n > 0 => quiet_since = Instant::now(),
            Ok(_) => return,
            Err(_) => {
                let now = Instant::now();
                if now >= until || now >= quiet_since + LINGER_IDLE {
                    return;
                }
            }
        }
    }
}

/// How often a lingering connection asks the kernel whether its reply is delivered.
const LINGER_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// Bytes written to socket `fd` that its peer has not acknowledged yet (`TIOCOUTQ`).
fn undelivered(fd: RawFd) -> Option<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ writes one int; `fd` is the connection's socket, open while it is served.
    let r = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) };
    (r == 0).then_some(n.max(0) as usize)
}

/// Rejected requests logged per [`REJECT_LOG_WINDOW`]; more are counted, not logged (a flood of
/// bad requests must not flood the log).
const REJECT_LOG_MAX: u32 = 20;
const REJECT_LOG_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// (window start, logged in the window, not logged since the last line).
static REJECT_LOG: std::sync::Mutex<(Option<std::time::Instant>, u32, u64)> =
    std::sync::Mutex::new((None, 0, 0));

/// Whether to log this rejection, and how many were not logged before it.
fn reject_log_allowed() -> Option<u64> {
    let mut g = REJECT_LOG.lock().unwrap_or_else(|e| e.into_inner());
    let now = std::time::Instant::now();
    match g.0 {
        Some(t) if now.duration_since(t) < REJECT_LOG_WINDOW => {
            if g.1 < REJECT_LOG_MAX {
                g.1 += 1;
                let n = g.2;
                g.2 = 0;
                Some(n)
            } else {
                g.2 += 1;
                None
            }
        }
        _ => {
            let n = g.2;
            *g = (Some(now), 1, 0);
            Some(n)
        }
    }
}

/// Logs a refused request once, at warning level, with the peer and the reason (at most
/// [`REJECT_LOG_MAX`] lines per [`REJECT_LOG_WINDOW`]; the next line says how many were not).
fn reject<D>(shared: &Shared<D>, info: &ConnInfo, head: Option<&Head>, r: &Reject) {
    let _ = shared;
    crate::metrics::rejected(r.status);
    let Some(skipped) = reject_log_allowed() else {
        return;
    };
    let more = match skipped {
        0 => String::new(),
        n => format!(" ({n} more rejected requests were not logged)"),
    };
    let peer = match info.peer {
        crate::proxy::Peer::Tcp(a) => a.to_string(),
        crate::proxy::Peer::Unix => "unix socket".to_string(),
    };
    match head {
        Some(h) => tracing::warn!(
            "Rejected request from {peer}: {} ({} {} {}){more}",
            r.reason,
            r.status,
            h.method_str(),
            h.target_lossy()
        ),
        None => tracing::warn!(
            "Rejected request from {peer}: {} ({}){more}",
            r.reason,
            r.status
        ),
    }
}

/// Reads into `buf`; `None` if `deadline` passes first. The connection's one timer is moved to
/// the deadline: moving it later (the usual case: the next keep-alive wait) only updates the
/// timer's entry, so no timer is created, registered and dropped per read.
async fn read_by<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    timer: &mut Pin<&mut Sleep>,
    deadline: Instant,
) -> Option<io::Result<usize>> {
    if timer.deadline() != deadline {
        timer.as_mut().reset(deadline);
    }
    let mut read = pin!(io.read_buf(buf));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = read.as_mut().poll(cx) {
            return Poll::Ready(Some(r));
        }
        timer.as_mut().poll(cx).map(|()| None)
    })
    .await
}

/// Waits for and returns the next complete head, with what it holds of the worker's head
/// budget (kept until its request is done).
async fn read_head<S: AsyncRead + AsyncWrite + Unpin, D>(
    io: &mut S,
    rbuf: &mut BytesMut,
    out: &mut Vec<u8>,
    shared: &Shared<D>,
    first: bool,
    timer: &mut Pin<&mut Sleep>,
) -> Result<(Bytes, Option<Held>), NoHead> {
    let limits = &shared.limits;
    let mut scanned = 0;
    let mut deadline = None;
    let mut held: Option<Held> = None;
    let mut held_n = 0;
    if rbuf.capacity() > HEAD_FREE && rbuf.len() < HEAD_FREE {
        // A large head or body went before: give its buffer back (idle connections keep little).
        let mut small = BytesMut::with_capacity(8192.max(rbuf.len()));
        small.extend_from_slice(rbuf);
        *rbuf = small;
    }
    loop {
        let skip = parse::leading_crlf(rbuf);
        if skip > 0 {
            let _ = rbuf.split_to(skip);
            scanned = 0;
        }
        if !rbuf.is_empty() {
            match parse::find_end(rbuf, scanned, limits) {
                Ok(Some(n)) => return Ok((rbuf.split_to(n).freeze(), held)),
                Ok(None) => scanned = rbuf.len(),
                Err(r) => return Err(NoHead::Reject(r)),
            }
        }
        // About to wait for the client: what is ready goes out first.
        if !out.is_empty() {
            if io.write_all(out).await.is_err() {
                return Err(NoHead::Quiet);
            }
            out.clear();
        }
        let wait_until = match deadline {
            Some(d) => d,
            None if !rbuf.is_empty() => {
                let d = Instant::now() + limits.header_timeout;
                deadline = Some(d);
                d
            }
            None if first => {
                // A new connection's time runs from the accept, not from its first byte.
                let d = Instant::now() + limits.header_timeout;
                deadline = Some(d);
                d
            }
            None => match limits.keep_alive {
                Some(k) => Instant::now() + k,
                None => return Err(NoHead::Quiet),
            },
        };
        if rbuf.capacity() - rbuf.len() < 1024 {
            rbuf.reserve(8192);
        }
        if rbuf.capacity() > HEAD_FREE + held_n {
            // A large head: what it holds past HEAD_FREE comes from the worker's head budget.
            let more = rbuf.capacity() - HEAD_FREE - held_n;
            match shared.head_budget.try_take(more) {
                Some(h) => {
                    held_n += more;
                    match &mut held {
                        Some(all) => all.merge(h),
                        None => held = Some(h),
                    }
                }
                None => {
                    return Err(NoHead::Reject(Reject {
                        status: 503,
                        reason: "large request head while the worker's memory for large heads \
                                 is in use",
                    }));
                }
            }
        }
        // The head's own deadline is set on the next turn, if it is still incomplete then.
        match read_by(io, rbuf, timer, wait_until).await {
            Some(Ok(0)) | Some(Err(_)) => return Err(NoHead::Quiet),
            Some(Ok(_)) => {}
            None if rbuf.is_empty() => return Err(NoHead::Quiet),
            None => {
                return Err(NoHead::Reject(Reject {
                    status: 408,
                    reason: "request head not received in time (--header-timeout)",
                }));
            }
        }
    }
}

/// What a trusted proxy's headers say: the scheme (`secure_scheme_headers`), after checking
/// that a `SCRIPT_NAME` header (`--forwarder-headers`) is a prefix of the path (400 if not, as
/// in Gunicorn: the app could not be told its `PATH_INFO`). For a trusted peer.
fn forwarded<D>(shared: &Shared<D>, head: &Head) -> Result<&'static str, &'static str> {
    if shared.forwarder.script_name()
        && let Some(i) = head.script_name
    {
        let script_name = crate::proxy::script_name_value(head.value(&head.fields[i]));
        let (raw, _) = parse::split_target(head.target());
        let path = if raw.contains(&b'%') {
            std::borrow::Cow::Owned(parse::decode_path(raw))
        } else {
            std::borrow::Cow::Borrowed(raw)
        };
        if crate::proxy::strip_script_name(&path, script_name).is_none() {
            return Err("the request path does not start with its SCRIPT_NAME header");
        }
    }
    if shared.scheme_headers.worth_looking(head.forwarded) {
        shared
            .scheme_headers
            .url_scheme(head.fields.iter().map(|f| (head.name(f), head.value(f))))
    } else {
        Ok("http")
    }
}

/// A failed body read as a status for the client.
fn body_status(e: &BodyError) -> Option<u16> {
    match e {
        BodyError::Disconnected => None,
        BodyError::TimedOut => Some(408),
        BodyError::Invalid(s, _) => Some(*s),
    }
}

/// Nginx's code for "the client closed the request before a response was sent".
const CLIENT_CLOSED: u16 = 499;

type UpgradeHandoff = Option<Box<dyn FnOnce(Upgraded) + Send>>;

/// One request on the connection: body, dispatch, reply.
#[allow(clippy::too_many_arguments)] // the connection's state, borrowed from `serve`'s loop
async fn exchange<S, D>(
    io: &mut S,
    rbuf: &mut BytesMut,
    out: &mut Vec<u8>,
    shared: &Shared<D>,
    info: &Arc<ConnInfo>,
    trusted: bool,
    head: &Arc<Head>,
    timer: &mut Pin<&mut Sleep>,
) -> (Done, UpgradeHandoff)
where
    S: AsyncRead + AsyncWrite + Unpin,
    D: Dispatch,
{
    let limits = &shared.limits;
    let keep_wanted =
        head.keep_alive && limits.keep_alive.is_some() && !shared.draining.load(Ordering::Relaxed);
    let fail = |status: u16, reason: &'static str, out: &mut Vec<u8>| {
        reject(shared, info, Some(head), &Reject { status, reason });
        super::errors::write(status, false, head.method == Method::Head, out);
        let done = Done {
            unread: head.framing != Framing::None,
            ..Done::server(status, false)
        };
        (done, None)
    };
    // The proxy rules are asked only when the head has a header they read.
    let wanted = shared.scheme_headers.worth_looking(head.forwarded)
        || (head.script_name.is_some() && shared.forwarder.script_name());
    let scheme = if trusted && wanted {
        match forwarded(shared, head) {
            Ok(s) => s,
            Err(why) => return fail(400, why, out),
        }
    } else {
        "http"
    };
    if let Framing::Length(n) = head.framing
        && limits.body > 0
        && n > limits.body
    {
        return fail(413, "Content-Length larger than --limit-request-body", out);
    }

    let mut dec = Decoder::new(head.framing, limits.body);
    // Started when a body is first read (a request without one never reads the clock).
    let mut clock = None;
    let mut body = Body::Empty;
    // Up to BUFFER_BODY bytes are read before the app is called (all of a body that small), so
    // a slow or stalled upload holds no Python thread; a body the client sends only after
    // `100 Continue` is left to the app (the client is waiting for its answer first).
    let mut prefix = None;
    if !dec.is_done() && !head.expect_continue {
        let want = match head.framing {
            Framing::Length(n) => (n as usize).min(BUFFER_BODY),
            _ => BUFFER_BODY,
        };
        let clock = clock.insert(BodyClock::new(limits));
        match prebuffer(io, rbuf, &mut dec, clock, &shared.budget, want, timer).await {
            Ok(chunk) if dec.is_done() => body = Body::Full(chunk),
            Ok(chunk) => prefix = Some(chunk),
            Err(e) => {
                return match body_status(&e) {
                    Some(s) => fail(
                        s,
                        match &e {
                            BodyError::Invalid(_, why) => why,
                            _ => "request body not received in time",
                        },
                        out,
                    ),
                    None => {
                        info.set_gone();
                        (Done::server(CLIENT_CLOSED, false), None)
                    }
                };
            }
        }
    }
    let streaming = !dec.is_done();
    if !streaming {
        let req = Request {
            head: head.clone(),
            body,
            conn: info.clone(),
            scheme,
            trusted,
        };
        let outcome = {
            let mut fut = pin!(shared.dispatch.call(req));
            match poll_once(fut.as_mut()).await {
                Poll::Ready(o) => o,
                Poll::Pending => {
                    if !out.is_empty() {
                        let ok = io.write_all(out).await.is_ok();
                        out.clear();
                        if !ok {
                            info.set_gone();
                        }
                    }
                    wait_watching(&mut fut, io, rbuf, info).await
                }
            }
        };
        let mut none: Option<Pump<'_, tokio::io::Empty>> = None;
        let (mut done, up) =
            write_outcome(io, out, outcome, head, keep_wanted, &mut none, info).await;
        done.received = dec.decoded;
        return (done, up);
    }

    // Streaming: the app reads the body while the connection keeps reading it.
    let (tx, rx) = mpsc::channel(1);
    let (want_tx, want_rx) = if head.expect_continue {
        let (a, b) = oneshot::channel();
        (Some(a), Some(b))
    } else {
        (None, None)
    };
    let req = Request {
        head: head.clone(),
        body: Body::Stream(BodyStream {
            prefix,
            rx,
            want: want_tx,
        }),
        conn: info.clone(),
        scheme,
        trusted,
    };
    if !out.is_empty() {
        let ok = io.write_all(out).await.is_ok();
        out.clear();
        if !ok {
            info.set_gone();
        }
    }
    let (rd, mut wr) = tokio::io::split(&mut *io);
    let mut pump = Some(Pump {
        rd,
        rbuf: &mut *rbuf,
        dec,
        clock: clock.unwrap_or_else(|| BodyClock::new(limits)),
        timer: timer.as_mut(),
        tx: Some(tx),
        want: want_rx,
        budget: shared.budget.clone(),
        pending: None,
        failed: None,
        continue_sent: false,
        asked_continue: head.expect_continue,
    });
    let outcome = {
        let mut fut = pin!(shared.dispatch.call(req));
        loop {
            let p = pump.as_mut().expect("pump");
            if !p.active() {
                break fut.await;
            }
            tokio::select! {
                biased;
                o = &mut fut => break o,
                ev = p.step() => {
                    if ev == Event::Continue && !p.continue_sent {
                        if wr.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.is_err() {
                            info.set_gone();
                        }
                        p.continue_sent = true;
                    }
                }
            }
        }
    };
    let p = pump.as_ref().expect("pump");
    if let Some(e) = p.failed.clone() {
        // The body failed before the reply: the client is told why (or is gone).
        drop(outcome);
        return match body_status(&e) {
            Some(s) => {
                let mut o = Vec::new();
                reject(
                    shared,
                    info,
                    Some(head),
                    &Reject {
                        status: s,
                        reason: match &e {
                            BodyError::Invalid(_, why) => why,
                            _ => "request body not received in time",
                        },
                    },
                );
                super::errors::write(s, false, head.method == Method::Head, &mut o);
                let _ = wr.write_all(&o).await;
                let done = Done {
                    unread: true,
                    ..Done::server(s, false)
                };
                (done, None)
            }
            None => {
                info.set_gone();
                (Done::server(CLIENT_CLOSED, false), None)
            }
        };
    }
    let (mut done, up) =
        write_outcome(&mut wr, out, outcome, head, keep_wanted, &mut pump, info).await;
    if !out.is_empty() {
        if wr.write_all(out).await.is_err() {
            done.keep = false;
        }
        out.clear();
    }
    let mut p = pump.take().expect("pump");
    if done.keep && !p.finish().await {
        done.keep = false;
    }
    done.unread = !p.dec.is_done();
    done.received = p.dec.decoded;
    (done, up)
}

/// Awaits the app while watching the connection: a client that closes it is marked gone (an
/// async app learns it through [`ConnInfo::gone`]); bytes of a pipelined next request are kept,
/// up to a bound.
async fn wait_watching<F, S>(
    fut: &mut std::pin::Pin<&mut F>,
    io: &mut S,
    rbuf: &mut BytesMut,
    info: &ConnInfo,
) -> F::Output
where
    F: Future,
    S: AsyncRead + Unpin,
{
    const WATCH_MAX: usize = 64 * 1024;
    loop {
        if info.is_gone() || rbuf.len() >= WATCH_MAX {
            return fut.await;
        }
        if rbuf.capacity() - rbuf.len() < 1024 {
            rbuf.reserve(4096);
        }
        tokio::select! {
            biased;
            o = fut.as_mut() => return o,
            r = io.read_buf(rbuf) => {
                if !matches!(r, Ok(n) if n > 0) {
                    info.set_gone();
                }
            }
        }
    }
}

/// Polls a future once.
async fn poll_once<F: Future + Unpin>(mut f: F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(std::pin::Pin::new(&mut f).poll(cx))).await
}

/// Polls a pinned future once.
async fn futures_poll<F: Future>(mut f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(f.as_mut().poll(cx))).await
}

/// Why an upload was refused after waiting `--body-timeout` for room in the worker's budget.
const BUDGET_SPENT: &str =
    "the worker's memory for request bodies stayed in use for --body-timeout";

/// Reads up to `want` body bytes before the app is called. Bytes beyond [`SMALL_BODY`] are
/// counted against the worker's budget as they arrive; while it is spent, the connection waits
/// (without reading, and without the wait counting against the client's body deadline).
async fn prebuffer<S: AsyncRead + Unpin>(
    io: &mut S,
    rbuf: &mut BytesMut,
    dec: &mut Decoder,
    clock: &mut BodyClock,
    budget: &Arc<Budget>,
    want: usize,
    timer: &mut Pin<&mut Sleep>,
) -> Result<BodyChunk, BodyError> {
    let mut acc: Option<BytesMut> = None;
    let mut first: Option<Bytes> = None;
    let mut have = 0usize;
    let mut held: Option<Held> = None;
    loop {
        match dec
            .decode(rbuf, want - have)
            .map_err(|r| BodyError::Invalid(r.status, r.reason))?
        {
            Step::Data(b) => {
                if have + b.len() > SMALL_BODY {
                    let n = (have + b.len() - SMALL_BODY).min(b.len());
                    let h = match budget.try_take(n) {
                        Some(h) => h,
                        None => {
                            // Waited for at most --body-timeout: request bodies that an app
                            // keeps (or leaks) must not make every later upload hang.
                            let waited = Instant::now();
                            let Ok(h) = tokio::time::timeout(clock.timeout(), budget.take(n)).await
                            else {
                                return Err(BodyError::Invalid(503, BUDGET_SPENT));
                            };
                            clock.pause(waited.elapsed());
                            h
                        }
                    };
                    match &mut held {
                        Some(all) => all.merge(h),
                        None => held = Some(h),
                    }
                }
                have += b.len();
                match (&mut first, &mut acc) {
                    (None, None) => first = Some(b),
                    (Some(f), None) => {
                        let mut a = BytesMut::with_capacity(2 * (f.len() + b.len()));
                        a.extend_from_slice(f);
                        a.extend_from_slice(&b);
                        first = None;
                        acc = Some(a);
                    }
                    (_, Some(a)) => a.extend_from_slice(&b),
                }
                if have >= want {
                    break;
                }
                continue;
            }
            Step::Done => break,
            Step::NeedMore => {}
        }
        let room = dec
            .remaining()
            .map_or(BODY_CHUNK, |r| (r as usize).min(BODY_CHUNK))
            .max(512);
        if rbuf.capacity() - rbuf.len() < room {
            rbuf.reserve(room);
        }
        match read_by(io, rbuf, timer, clock.deadline()).await {
            Some(Ok(0)) | Some(Err(_)) => return Err(BodyError::Disconnected),
            Some(Ok(n)) => clock.got(n),
            None => return Err(BodyError::TimedOut),
        }
    }
    // A chunked body's end (its last chunk and trailers) may be here already.
    if !dec.is_done()
        && let Err(r) = dec.decode(rbuf, 0)
    {
        return Err(BodyError::Invalid(r.status, r.reason));
    }
    let data = match (first, acc) {
        (Some(f), _) => f,
        (None, Some(a)) => a.freeze(),
        (None, None) => Bytes::new(),
    };
    Ok(BodyChunk { data, held })
}

#[derive(Debug, PartialEq, Eq)]
enum Event {
    Progress,
    /// The app asked for the body of an `Expect: 100-continue` request.
    Continue,
    Stopped,
}

/// Moves a streamed body from the socket to the app, one chunk at a time.
struct Pump<'a, R> {
    rd: R,
    rbuf: &'a mut BytesMut,
    dec: Decoder,
    clock: BodyClock,
    /// The connection's timer.
    timer: Pin<&'a mut Sleep>,
    tx: Option<mpsc::Sender<Result<BodyChunk, BodyError>>>,
    want: Option<oneshot::Receiver<()>>,
    budget: Arc<Budget>,
    /// A decoded chunk waiting for room in the worker's budget.
    pending: Option<Bytes>,
    failed: Option<BodyError>,
    continue_sent: bool,
    asked_continue: bool,
}

impl<R: AsyncRead + Unpin> Pump<'_, R> {
    fn active(&self) -> bool {
        self.tx.is_some()
    }

    fn fail(&mut self, e: BodyError, permit: mpsc::Permit<'_, Result<BodyChunk, BodyError>>) {
        permit.send(Err(e.clone()));
        self.failed = Some(e);
    }

    /// One step; cancel-safe (state changes only between awaits).
    async fn step(&mut self) -> Event {
        if let Some(w) = &mut self.want {
            let wanted = w.await.is_ok();
            self.want = None;
            if !wanted {
                // The app finished without reading: nothing more to move.
                self.tx = None;
                return Event::Stopped;
            }
            self.clock = self.clock.restarted();
            return Event::Continue;
        }
        let Some(tx) = self.tx.clone() else {
            return Event::Stopped;
        };
        let waited = Instant::now();
        let Ok(permit) = tx.reserve().await else {
            // The app dropped its end: it will not read more.
            self.tx = None;
            return Event::Stopped;
        };
        if let Some(data) = self.pending.take() {
            // Decoded earlier while the worker's budget was spent: wait for room (the client is
            // not to blame for that time), then hand it over.
            let budget = self.budget.clone();
            let take = budget.take(data.len());
            let held = {
                let mut take = std::pin::pin!(take);
                match futures_poll(take.as_mut()).await {
                    Poll::Ready(h) => h,
                    Poll::Pending => {
                        self.pending = Some(data.clone());
                        let Ok(h) = tokio::time::timeout(self.clock.timeout(), take).await else {
                            self.fail(BodyError::Invalid(503, BUDGET_SPENT), permit);
                            self.tx = None;
                            return Event::Stopped;
                        };
                        self.pending = None;
                        h
                    }
                }
            };
            self.clock.pause(waited.elapsed());
            permit.send(Ok(BodyChunk {
                data,
                held: Some(held),
            }));
            return Event::Progress;
        }
        self.clock.pause(waited.elapsed());
        loop {
            match self.dec.decode(self.rbuf, BODY_CHUNK) {
                Ok(Step::Data(b)) => {
                    // Small chunks already here go in one message (a body of 1-byte chunks
                    // would otherwise cost a channel hand-off per byte).
                    let b = if b.len() < BODY_CHUNK {
                        coalesce(&mut self.dec, self.rbuf, b)
                    } else {
                        b
                    };
                    // Counted against the worker's budget only once it is in memory; a
                    // connection waiting for its client holds nothing.
                    match self.budget.try_take(b.len()) {
                        Some(held) => permit.send(Ok(BodyChunk {
                            data: b,
                            held: Some(held),
                        })),
                        None => self.pending = Some(b),
                    }
                    return Event::Progress;
                }
                Ok(Step::Done) => {
                    drop(permit);
                    self.tx = None;
                    return Event::Stopped;
                }
                Ok(Step::NeedMore) => {}
                Err(r) => {
                    self.fail(BodyError::Invalid(r.status, r.reason), permit);
                    self.tx = None;
                    return Event::Stopped;
                }
            }
            if self.rbuf.capacity() - self.rbuf.len() < 4096 {
                self.rbuf.reserve(BODY_CHUNK);
            }
            let deadline = self.clock.deadline();
            match read_by(&mut self.rd, self.rbuf, &mut self.timer, deadline).await {
                Some(Ok(0)) | Some(Err(_)) => {
                    self.fail(BodyError::Disconnected, permit);
                    self.tx = None;
                    return Event::Stopped;
                }
                Some(Ok(n)) => self.clock.got(n),
                None => {
                    self.fail(BodyError::TimedOut, permit);
                    self.tx = None;
                    return Event::Stopped;
                }
            }
        }
    }

    /// After the reply: discards what is left of the body (a bounded amount, in bounded time)
    /// so the connection can be kept. False: it cannot be.
    async fn finish(&mut self) -> bool {
        self.tx = None;
        if self.failed.is_some() {
            return false;
        }
        if self.asked_continue && !self.continue_sent && !self.dec.is_done() {
            // The client is waiting for 100 Continue that never came: it may or may not send
            // the body now, so the connection's framing is unknown.
            return false;
        }
        if let Some(r) = self.dec.remaining()
            && r > DRAIN_MAX
        {
            return false;
        }
        let until = Instant::now() + DRAIN_TIME;
        let start = self.dec.decoded;
        loop {
            match self.dec.decode(self.rbuf, usize::MAX) {
                Ok(Step::Data(_)) => {
                    if self.dec.decoded - start > DRAIN_MAX {
                        return false;
                    }
                    continue;
                }
                Ok(Step::Done) => return true,
                Ok(Step::NeedMore) => {}
                Err(_) => return false,
            }
            if self.rbuf.capacity() - self.rbuf.len() < 4096 {
                self.rbuf.reserve(8192);
            }
            match read_by(&mut self.rd, self.rbuf, &mut self.timer, until).await {
                Some(Ok(n)) if n > 0 => {}
                _ => return false,
            }
        }
    }
}

/// `first` and the body bytes that follow it in `rbuf`, up to [`BODY_CHUNK`], in one piece. Stops
/// at anything but data (the end, an error, bytes still to come): the next decode reports it
/// (the decoder consumes nothing when it fails).
fn coalesce(dec: &mut Decoder, rbuf: &mut BytesMut, first: Bytes) -> Bytes {
    let mut acc: Option<BytesMut> = None;
    loop {
        let have = acc.as_ref().map_or(first.len(), |a| a.len());
        if have >= BODY_CHUNK {
            break;
        }
        match dec.decode(rbuf, BODY_CHUNK - have) {
            Ok(Step::Data(more)) => {
                let a = acc.get_or_insert_with(|| {
                    let mut a = BytesMut::with_capacity((first.len() + more.len()) * 2);
                    a.extend_from_slice(&first);
                    a
                });
                a.extend_from_slice(&more);
            }
            _ => break,
        }
    }
    match acc {
        Some(a) => a.freeze(),
        None => first,
    }
}

/// Writes all of `buf`, moving the request body meanwhile when one is streaming.
async fn write_all<W, R>(
    w: &mut W,
    mut buf: &[u8],
    pump: &mut Option<Pump<'_, R>>,
) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    while !buf.is_empty() {
        let n = match pump.as_mut().filter(|p| p.active()) {
            Some(p) => {
                tokio::select! {
                    biased;
                    n = w.write(buf) => n?,
                    _ = p.step() => continue,
                }
            }
            None => w.write(buf).await?,
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
    }
    Ok(())
}

/// Writes `a` then `b`, in one vectored write where the stream takes one.
async fn write_pair<W, R>(
    w: &mut W,
    a: &[u8],
    b: &[u8],
    pump: &mut Option<Pump<'_, R>>,
) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    if a.is_empty() || !w.is_write_vectored() {
        write_all(w, a, pump).await?;
        return write_all(w, b, pump).await;
    }
    let n = loop {
        let bufs = [io::IoSlice::new(a), io::IoSlice::new(b)];
        match pump.as_mut().filter(|p| p.active()) {
            Some(p) => {
                tokio::select! {
                    biased;
                    n = w.write_vectored(&bufs) => break n?,
                    _ = p.step() => continue,
                }
            }
            None => break w.write_vectored(&bufs).await?,
        }
    };
    if n == 0 {
        return Err(io::ErrorKind::WriteZero.into());
    }
    if n < a.len() {
        write_all(w, &a[n..], pump).await?;
        write_all(w, b, pump).await
    } else {
        write_all(w, &b[n - a.len()..], pump).await
    }
}

/// Writes the reply (or a 500 for a failed app) and says how the exchange ended.
async fn write_outcome<W, R>(
    w: &mut W,
    out: &mut Vec<u8>,
    outcome: Outcome,
    head: &Head,
    keep_wanted: bool,
    pump: &mut Option<Pump<'_, R>>,
    info: &ConnInfo,
) -> (Done, UpgradeHandoff)
where
    W: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    let reply = match outcome {
        Outcome::Reply(r) => r,
        Outcome::Failed => {
            super::errors::write(
                500,
                keep_wanted && pump.is_none(),
                head.method == Method::Head,
                out,
            );
            return (Done::server(500, keep_wanted && pump.is_none()), None);
        }
    };
    let Reply {
        head: rh,
        body,
        upgrade,
        log_vars,
    } = reply;
    let status = rh.status;
    if status < 200 && status != 101 {
        // An interim status as the final answer: the client would wait for another response.
        tracing::error!(
            "Error handling request {}: invalid final status {status}",
            head.target_lossy()
        );
        super::errors::write(500, false, head.method == Method::Head, out);
        return (Done::server(500, false), None);
    }
    if status == 101 {
        if let (Some(up), true) = (upgrade, pump.is_none()) {
            response::encode(&rh, Wire::Empty, None, true, head.version, out);
            return (Done::server(status, false), Some(up));
        }
        tracing::error!(
            "Error handling request {}: the app answered 101 but does not take the connection",
            head.target_lossy()
        );
        super::errors::write(500, false, head.method == Method::Head, out);
        return (Done::server(500, false), None);
    }
    if let (ReplyBody::Stream(_), Some(p)) = (&body, pump.as_mut())
        && p.asked_continue
        && !p.continue_sent
        && p.want.is_some()
        && p.active()
    {
        // The app streams its reply and still holds the body it has not asked for yet: it may
        // read it later (an upload page), and the client sends it only after 100 Continue, which
        // must come before the final head.
        out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        p.continue_sent = true;
    }
    let is_head = head.method == Method::Head;
    let known = match &body {
        ReplyBody::Full(chunks) => Some(chunks.iter().map(|c| c.len() as u64).sum::<u64>()),
        ReplyBody::Stream(_) => None,
    };
    let (wire, declared) = response::framing(&rh, is_head, head.version, known);
    let mut keep = keep_wanted && !rh.close && wire != Wire::UntilClose;
    // A Full body shorter than its declared length cannot be kept: the client would wait.
    if let (Wire::Length(n), Some(k)) = (wire, known)
        && k < n
    {
        keep = false;
    }
    if let Some(p) = pump.as_ref()
        && !p.dec.is_done()
    {
        // An unread body: kept only if what is left can be drained.
        if p.asked_continue && !p.continue_sent {
            keep = false;
        }
        if p.dec.remaining().is_some_and(|r| r > DRAIN_MAX) {
            keep = false;
        }
    }
    response::encode(&rh, wire, declared, keep, head.version, out);
    let mut sent = 0u64;
    let mut intact = true;
    match body {
        ReplyBody::Full(chunks) => {
            if wire != Wire::Empty {
                let limit = match wire {
                    Wire::Length(n) => n,
                    _ => u64::MAX,
                };
                for c in chunks {
                    let c = if sent + c.len() as u64 > limit {
                        c.slice(..(limit - sent) as usize)
                    } else {
                        c
                    };
                    if c.is_empty() {
                        break;
                    }
                    sent += c.len() as u64;
                    if c.len() <= COPY_MAX || out.len() + c.len() <= OUT_FLUSH {
                        out.extend_from_slice(&c);
                    } else {
                        if write_all(w, out, pump).await.is_err() {
                            // Part of `out` may be on the wire: it must not go again.
                            out.clear();
                            intact = false;
                            break;
                        }
                        out.clear();
                        if write_all(w, &c, pump).await.is_err() {
                            intact = false;
                            break;
                        }
                    }
                }
                if let Wire::Length(n) = wire
                    && sent < n
                    && intact
                {
                    tracing::error!(
                        "Response to {} {}: the app declared Content-Length {n} but sent {sent} \
                         bytes; the connection is closed",
                        head.method_str(),
                        head.target_lossy()
                    );
                }
            }
            if out.len() >= OUT_FLUSH || pump.is_some() {
                if write_all(w, out, pump).await.is_err() {
                    intact = false;
                }
                out.clear();
            }
        }
        ReplyBody::Stream(mut rx) => {
            let limit = match wire {
                Wire::Length(n) => n,
                _ => u64::MAX,
            };
            loop {
                // What is ready is taken without waiting; before waiting for the app, what is
                // gathered goes out.
                let ready = std::future::poll_fn(|cx| match rx.poll_recv(cx) {
                    Poll::Ready(c) => Poll::Ready(Some(c)),
                    Poll::Pending => Poll::Ready(None),
                })
                .await;
                let next = match ready {
                    Some(c) => c,
                    None => {
                        if !out.is_empty() {
                            if write_all(w, out, pump).await.is_err() {
                                out.clear();
                                intact = false;
                                break;
                            }
                            out.clear();
                        }
                        match pump.as_mut().filter(|p| p.active()) {
                            Some(p) => {
                                tokio::select! {
                                    biased;
                                    c = rx.recv() => c,
                                    _ = p.step() => continue,
                                }
                            }
                            None => rx.recv().await,
                        }
                    }
                };
                match next {
                    None => break,
                    Some(Err(e)) => {
                        tracing::debug!("response stream aborted: {e}");
                        intact = false;
                        break;
                    }
                    Some(Ok(c)) => {
                        if wire == Wire::Empty || sent >= limit {
                            // Nothing more goes out: dropping the channel stops the producer
                            // (which then closes the app's iterable).
                            break;
                        }
                        let c = if sent + c.len() as u64 > limit {
                            c.slice(..(limit - sent) as usize)
                        } else {
                            c
                        };
                        sent += c.len() as u64;
                        if wire == Wire::Chunked {
                            response::push_hex(c.len(), out);
                            out.extend_from_slice(b"\r\n");
                        }
                        if c.len() <= COPY_MAX {
                            out.extend_from_slice(&c);
                        } else {
                            // What is gathered (the head, a chunk's framing) and the chunk go
                            // out in one write.
                            if write_pair(w, out, &c, pump).await.is_err() {
                                // Part of `out` may be on the wire: it must not go again.
                                out.clear();
                                intact = false;
                                break;
                            }
                            out.clear();
                        }
                        if wire == Wire::Chunked {
                            out.extend_from_slice(b"\r\n");
                        }
                        if out.len() >= OUT_FLUSH {
                            if write_all(w, out, pump).await.is_err() {
                                out.clear();
                                intact = false;
                                break;
                            }
                            out.clear();
                        }
                    }
                }
            }
            if intact {
                if wire == Wire::Chunked {
                    out.extend_from_slice(b"0\r\n\r\n");
                }
                if let Wire::Length(n) = wire
                    && sent < n
                {
                    tracing::error!(
                        "Response to {} {}: the app declared Content-Length {n} but sent {sent} \
                         bytes; the connection is closed",
                        head.method_str(),
                        head.target_lossy()
                    );
                    keep = false;
                }
            }
            if !out.is_empty() {
                // A streamed response is flushed at its end (its client is waiting for it).
                if write_all(w, out, pump).await.is_err() {
                    intact = false;
                }
                out.clear();
            }
        }
    }
    if !intact {
        // Cut: the client sees an incomplete response, never a wrong one.
        out.clear();
        keep = false;
        info.set_gone();
    }
    if let (Wire::Length(n), Some(k)) = (wire, known)
        && k < n
    {
        keep = false;
    }
    (
        Done {
            status,
            sent,
            received: 0,
            keep,
            resp: Some(rh),
            log_vars,
            unread: false,
        },
        None,
    )
}

/// The access log line and the request count, once per request.
fn shared_finished<D>(
    shared: &Shared<D>,
    info: &ConnInfo,
    head: &Head,
    done: &Done,
    start: Option<std::time::Instant>,
) {
    if let Some(a) = &shared.access {
        let target = head.target_lossy();
        let (path, query) = if a.needs_path() {
            let (p, q) = parse::split_target(head.target());
            (
                String::from_utf8_lossy(&parse::decode_path(p)).into_owned(),
                String::from_utf8_lossy(q).into_owned(),
            )
        } else {
            (String::new(), String::new())
        };
        a.emit(&AccessRecord {
            peer: info.client(),
            method: head.method_str(),
            target: &target,
            path: &path,
            query: &query,
            protocol: head.version.as_str(),
            status: done.status,
            sent: done.sent,
            req_headers: head,
            resp_headers: done
                .resp
                .as_ref()
                .map(|r| r as &dyn crate::logging::access::Headers),
            environ: &done.log_vars,
            duration: start.map(|s| s.elapsed()).unwrap_or_default(),
        });
    }
    // `start` is set whenever metrics are recorded (see `timed` in `serve`).
    if let Some(start) = start {
        crate::metrics::request_finished(
            method_class(head.method),
            done.status,
            done.received,
            done.sent,
            start,
        );
    }
    if !shared.observers.is_empty() {
        shared.observers.request(&crate::observe::Finished {
            status: done.status,
            sent: done.sent,
            duration: start.map(|s| s.elapsed()).unwrap_or_default(),
        });
    }
    let n = shared.requests.fetch_add(1, Ordering::Relaxed) + 1;
    if shared.max_requests > 0 && n == shared.max_requests {
        shared.retire.notify_one();
    }
}

/// A method's index in the metrics' method labels (`crate::metrics::shared::METHODS`).
fn method_class(m: Method) -> usize {
    match m {
        Method::Get => 0,
        Method::Head => 1,
        Method::Post => 2,
        Method::Put => 3,
        Method::Delete => 4,
        Method::Options => 5,
        Method::Connect => 6,
        Method::Other => 7,
    }
}

#[cfg(test)]
mod tests {
    //! The connection against a Rust dispatcher over an in-memory pipe: the parts of the seam
    //! WSGI does not use (the upgrade hand-off, the client-gone signal, an async body reader).

    use super::*;
    use crate::http::dispatch::ReplyBody;
    use crate::http::response::ResponseHead;
    use crate::proxy::Peer;
    use crate::sockets::LocalAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    enum Mode {
        /// 101, then the upgraded connection gets the buffered bytes written back.
        Upgrade,
        /// Answers once the client has gone.
        AfterGone(Arc<AtomicBool>),
        /// Reads the body with the async reader and answers its length.
        CountBody,
    }

    struct Fake(Mode);

    impl Dispatch for Fake {
        async fn call(&self, req: Request) -> Outcome {
            let mut head = ResponseHead::new(200, None);
            match &self.0 {
                Mode::Upgrade => {
                    let mut head = ResponseHead::new(101, None);
                    head.push(b"Upgrade", b"echo").unwrap();
                    head.push(b"Connection", b"Upgrade").unwrap();
                    let mut r = Reply::new(head, ReplyBody::Full(Vec::new()));
                    r.upgrade = Some(Box::new(|mut up: Upgraded| {
                        tokio::spawn(async move {
                            let _ = up.io.write_all(b"buffered:").await;
                            let _ = up.io.write_all(&up.buffered).await;
                            // Then it is the new protocol's: echo five more bytes.
                            let mut more = [0u8; 5];
                            if up.io.read_exact(&mut more).await.is_ok() {
                                let _ = up.io.write_all(b"|").await;
                                let _ = up.io.write_all(&more).await;
                            }
                            let _ = up.io.shutdown().await;
                        });
                    }));
                    Outcome::Reply(r)
                }
                Mode::AfterGone(seen) => {
                    let _ = tokio::time::timeout(Duration::from_secs(5), req.conn.gone()).await;
                    seen.store(req.conn.is_gone(), Ordering::SeqCst);
                    head.push(b"Content-Length", b"0").unwrap();
                    Outcome::Reply(Reply::new(head, ReplyBody::Full(Vec::new())))
                }
                Mode::CountBody => {
                    let mut n = 0usize;
                    if let Body::Stream(mut s) = req.body {
                        while let Ok(Some(c)) = s.next().await {
                            n += c.data.len();
                        }
                    } else if let Body::Full(c) = req.body {
                        n = c.data.len();
                    }
                    let text = n.to_string();
                    head.push(b"Content-Length", text.len().to_string().as_bytes())
                        .unwrap();
                    Outcome::Reply(Reply::new(head, ReplyBody::Full(vec![Bytes::from(text)])))
                }
            }
        }
    }

    use std::time::Duration;

    fn shared(mode: Mode) -> Arc<Shared<Fake>> {
        let mut l = Limits::for_tests();
        l.body = 0;
        Arc::new(Shared::new(
            Fake(mode),
            l,
            ForwardedAllowIps::parse("").unwrap(),
        ))
    }

    fn info() -> Arc<ConnInfo> {
        Arc::new(ConnInfo::new(
            Peer::Unix,
            Arc::new(LocalAddr::Unix("/test.sock".into())),
        ))
    }

    async fn read_to_end(c: &mut tokio::io::DuplexStream) -> String {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn upgrade_hands_over_the_connection_with_buffered_bytes() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let task = tokio::spawn(serve(server, shared(Mode::Upgrade), info()));
        client
            .write_all(
                b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\nearly",
            )
            .await
            .unwrap();
        let mut head = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut head))
            .await
            .unwrap()
            .unwrap();
        let mut got = String::from_utf8_lossy(&head[..n]).into_owned();
        client.write_all(b"later").await.unwrap();
        got.push_str(&read_to_end(&mut client).await);
        assert!(
            got.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
            "{got:?}"
        );
        assert!(
            got.contains("Upgrade: echo\r\n") && got.contains("Connection: Upgrade\r\n"),
            "{got:?}"
        );
        assert!(got.ends_with("\r\n\r\nbuffered:early|later"), "{got:?}");
        task.await.unwrap();
    }

    #[tokio::test]
    async fn the_app_learns_that_the_client_went_away() {
        let seen = Arc::new(AtomicBool::new(false));
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let task = tokio::spawn(serve(server, shared(Mode::AfterGone(seen.clone())), info()));
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        client.shutdown().await.unwrap();
        let t = read_to_end(&mut client).await;
        assert!(t.starts_with("HTTP/1.1 200 OK\r\n"), "{t:?}");
        assert!(seen.load(Ordering::SeqCst), "the app was not told");
        task.await.unwrap();
    }

    #[tokio::test]
    async fn an_async_consumer_reads_a_streamed_body() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let task = tokio::spawn(serve(server, shared(Mode::CountBody), info()));
        let body = vec![b'x'; 3 << 20];
        let head = format!(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let writer = tokio::spawn(async move {
            client.write_all(head.as_bytes()).await.unwrap();
            client.write_all(&body).await.unwrap();
            client
        });
        let mut client = writer.await.unwrap();
        let t = read_to_end(&mut client).await;
        assert!(t.ends_with("\r\n\r\n3145728"), "{t:?}");
        task.await.unwrap();
    }
}

//! The `websocket` scope: the handshake checked by the server, the app's accept (subprotocol,
//! headers) or denial (`websocket.close` → 403, or the `websocket.http.response` extension),
//! then the connection handed off by the HTTP layer after the `101` and run by
//! tokio-tungstenite on the tokio thread.
//!
//! Both directions are bounded: the session reads the next message from the client only when
//! there is room in the app's inbox ([`INBOX`] messages), and the app's `send()` waits while
//! its outbox ([`OUTBOX`]) is full, which happens when the client reads slowly (each message is
//! written before the next is taken). The client closing is `websocket.disconnect` with its
//! code; the app raising is close 1011; a worker that drains closes what is still open with
//! 1001 after `--graceful-timeout`. Each connection gets one access-log line when it ends,
//! with its duration.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};

use super::http::{body_bytes, message, response_head};
use super::runloop::{self, Resolved};
use crate::http::dispatch::{Outcome, Reply, ReplyBody, Request, Upgraded};
use crate::http::parse::{self, Head, Version};
use crate::http::response::ResponseHead;

/// Messages from the client waiting for the app's `receive()`.
pub const INBOX: usize = 8;
/// Messages from the app waiting to be written.
pub const OUTBOX: usize = 8;
/// The largest message accepted from a client (uvicorn's `--ws-max-size` default).
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// How long a closing handshake may take before the connection is dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// The open WebSocket connections of a worker, for draining.
pub struct Registry {
    open: AtomicUsize,
    none_left: Notify,
    going_away: watch::Sender<bool>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            open: AtomicUsize::new(0),
            none_left: Notify::new(),
            going_away: watch::channel(false).0,
        }
    }
}

struct Open(Arc<Registry>);

impl Drop for Open {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.none_left.notify_waiters();
        }
    }
}

impl Registry {
    fn enter(self: &Arc<Self>) -> Open {
        self.open.fetch_add(1, Ordering::SeqCst);
        Open(self.clone())
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    async fn none_left(&self) {
        loop {
            let n = self.none_left.notified();
            let mut n = std::pin::pin!(n);
            n.as_mut().enable();
            if self.open() == 0 {
                return;
            }
            n.await;
        }
    }

    /// Lets open connections end by themselves until `deadline`, then closes the rest with
    /// 1001 (going away) and gives them [`CLOSE_WAIT`] for the closing handshake.
    pub async fn drain(&self, deadline: tokio::time::Instant) {
        if tokio::time::timeout_at(deadline, self.none_left())
            .await
            .is_ok()
        {
            return;
        }
        tracing::info!(
            "Closing {} WebSocket connection(s) with 1001 (going away)",
            self.open()
        );
        let _ = self.going_away.send(true);
        let _ = tokio::time::timeout(CLOSE_WAIT + Duration::from_secs(1), self.none_left()).await;
    }
}

/// What the handshake request says: not a WebSocket request, a bad one (answered here), or the
/// `Sec-WebSocket-Accept` value for a good one.
pub enum Handshake {
    No,
    Bad(Outcome),
    Yes(String),
}

fn has_token(head: &Head, name: &str, token: &str) -> bool {
    head.values(name).any(|v| {
        v.split(|&b| b == b',')
            .any(|t| parse::trim(t).eq_ignore_ascii_case(token.as_bytes()))
    })
}

fn refuse(status: u16, why: &str, extra: Option<(&[u8], &[u8])>) -> Outcome {
    let mut head = ResponseHead::new(status, None);
    let body = Bytes::from(format!("{why}\n"));
    let _ = head.push(b"Content-Type", b"text/plain; charset=utf-8");
    if let Some((n, v)) = extra {
        let _ = head.push(n, v);
    }
    Outcome::Reply(Reply::new(head, ReplyBody::Full(vec![body])))
}

/// Checks a request that asks for `Upgrade: websocket` (RFC 6455 §4.2.1).
pub fn handshake(head: &Head) -> Handshake {
    if !has_token(head, "upgrade", "websocket") {
        return Handshake::No;
    }
    if head.method != parse::Method::Get || head.version != Version::Http11 {
        return Handshake::Bad(refuse(
            400,
            "a WebSocket handshake is a GET over HTTP/1.1",
            None,
        ));
    }
    if !has_token(head, "connection", "upgrade") {
        return Handshake::Bad(refuse(400, "Connection: Upgrade is missing", None));
    }
    let version = head.values("sec-websocket-version").next().map(parse::trim);
    if version != Some(b"13") {
        return Handshake::Bad(refuse(
            426,
            "unsupported Sec-WebSocket-Version (this server speaks 13)",
            Some((b"Sec-WebSocket-Version", b"13")),
        ));
    }
    let key = head.values("sec-websocket-key").next().map(parse::trim);
    match key {
        Some(k) if k.len() == 24 => {
            Handshake::Yes(tokio_tungstenite::tungstenite::handshake::derive_accept_key(k))
        }
        _ => Handshake::Bad(refuse(
            400,
            "Sec-WebSocket-Key is missing or malformed",
            None,
        )),
    }
}

enum In {
    Text(tokio_tungstenite::tungstenite::Utf8Bytes),
    Binary(Bytes),
}

enum Out {
    Text(String),
    Binary(Bytes),
    Close(u16, String),
}

/// How the connection ended, for the app's `websocket.disconnect`.
type Closed = Arc<Mutex<Option<(u16, String)>>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// `websocket.connect` not yet received.
    Connecting,
    /// Waiting for the app to accept or deny.
    Handshake,
    Open,
    /// The app sent a denial response start.
    Denying,
    Closed,
}

/// One WebSocket connection's state, on the loop thread.
#[pyclass(module = "ferricorn")]
pub struct WsCycle {
    head: Arc<Head>,
    accept_key: String,
    phase: Phase,
    reply: Option<oneshot::Sender<Outcome>>,
    deny: Option<(ResponseHead, Vec<Bytes>)>,
    out: Option<mpsc::Sender<Out>>,
    inbox: Option<mpsc::Receiver<In>>,
    /// A `receive()` is waiting.
    reading: bool,
    closed: Closed,
    /// The app sent `websocket.close`.
    app_closed: bool,
    /// A message made for a `receive()` the app cancelled: the next one returns it.
    unclaimed: Option<Py<PyAny>>,
    /// The waiting `receive()`.
    pending: Option<Arc<runloop::Parked>>,
    registry: Arc<Registry>,
}

fn disconnect(py: Python<'_>, closed: &Closed) -> PyResult<Py<PyAny>> {
    let (code, reason) = closed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or((1006, String::new()));
    let d = PyDict::new(py);
    d.set_item(intern!(py, "type"), intern!(py, "websocket.disconnect"))?;
    d.set_item(intern!(py, "code"), code)?;
    d.set_item(intern!(py, "reason"), reason)?;
    Ok(d.into_any().unbind())
}

fn receive(py: Python<'_>, cycle: &Bound<'_, WsCycle>) -> PyResult<Py<PyAny>> {
    let mut c = cycle.borrow_mut();
    match c.phase {
        Phase::Connecting => {
            c.phase = Phase::Handshake;
            let d = PyDict::new(py);
            d.set_item(intern!(py, "type"), intern!(py, "websocket.connect"))?;
            runloop::ready(py, d.into_any().unbind())
        }
        Phase::Handshake | Phase::Denying => Err(PyRuntimeError::new_err(
            "receive() called before the WebSocket was accepted (send websocket.accept first)",
        )),
        Phase::Closed => runloop::ready(py, disconnect(py, &c.closed)?),
        Phase::Open => {
            if let Some(m) = c.unclaimed.take() {
                return runloop::ready(py, m);
            }
            if c.reading {
                // The earlier receive() was cancelled while it waited: this one takes its place.
                if let Some(p) = c.pending.clone()
                    && let Some(f) = runloop::retarget(py, &p)?
                {
                    return Ok(f);
                }
                return Err(PyRuntimeError::new_err(
                    "receive() called while an earlier receive() is still waiting",
                ));
            }
            let Some(mut rx) = c.inbox.take() else {
                return runloop::ready(py, disconnect(py, &c.closed)?);
            };
            c.reading = true;
            drop(c);
            let cyc = cycle.clone().unbind();
            let (a, parked) = runloop::await_rust_parked(py, async move {
                let m = rx.recv().await;
                Box::new(move |py: Python<'_>, wanted: bool| {
                    let mut c = cyc.bind(py).borrow_mut();
                    c.reading = false;
                    c.pending = None;
                    let d = PyDict::new(py);
                    match m {
                        Some(In::Text(t)) => {
                            c.inbox = Some(rx);
                            d.set_item(intern!(py, "type"), intern!(py, "websocket.receive"))?;
                            d.set_item(intern!(py, "text"), PyString::new(py, t.as_str()))?;
                            d.set_item(intern!(py, "bytes"), py.None())?;
                        }
                        Some(In::Binary(b)) => {
                            c.inbox = Some(rx);
                            d.set_item(intern!(py, "type"), intern!(py, "websocket.receive"))?;
                            d.set_item(intern!(py, "bytes"), PyBytes::new(py, &b))?;
                            d.set_item(intern!(py, "text"), py.None())?;
                        }
                        None => {
                            c.phase = Phase::Closed;
                            return disconnect(py, &c.closed);
                        }
                    }
                    let m = d.into_any().unbind();
                    if !wanted {
                        c.unclaimed = Some(m.clone_ref(py));
                    }
                    Ok(m)
                }) as Resolved
            })?;
            if parked.is_some() {
                cycle.borrow_mut().pending = parked;
            }
            Ok(a)
        }
    }
}

fn closed_error() -> PyErr {
    PyOSError::new_err("the WebSocket connection is closed")
}

/// Queues `m` for the client; the awaitable waits while the outbox is full.
fn push_out(py: Python<'_>, out: &mpsc::Sender<Out>, m: Out) -> PyResult<Py<PyAny>> {
    match out.try_send(m) {
        Ok(()) => runloop::ready_none(py),
        Err(mpsc::error::TrySendError::Closed(_)) => Err(closed_error()),
        Err(mpsc::error::TrySendError::Full(m)) => {
            let out = out.clone();
            runloop::await_rust(py, async move {
                let sent = out.send(m).await.is_ok();
                Box::new(move |py: Python<'_>, _| {
                    if sent {
                        Ok(py.None())
                    } else {
                        Err(closed_error())
                    }
                }) as Resolved
            })
        }
    }
}

fn accept(py: Python<'_>, c: &mut WsCycle, d: &Bound<'_, PyDict>) -> PyResult<Py<PyAny>> {
    let mut head = ResponseHead::new(101, None);
    let push = |head: &mut ResponseHead, n: &[u8], v: &[u8]| {
        head.push(n, v)
            .map_err(|e| PyValueError::new_err(format!("websocket.accept: header: {e}")))
    };
    push(&mut head, b"Upgrade", b"websocket")?;
    push(&mut head, b"Connection", b"Upgrade")?;
    push(&mut head, b"Sec-WebSocket-Accept", c.accept_key.as_bytes())?;
    if let Some(p) = d.get_item(intern!(py, "subprotocol"))?
        && !p.is_none()
    {
        let p: String = p.extract()?;
        push(&mut head, b"Sec-WebSocket-Protocol", p.as_bytes())?;
    }
    if let Some(hs) = d.get_item(intern!(py, "headers"))? {
        for item in hs.try_iter()? {
            let (n, v): (Vec<u8>, Vec<u8>) = item?.extract()?;
            if n.eq_ignore_ascii_case(b"sec-websocket-protocol")
                && d.get_item(intern!(py, "subprotocol"))?
                    .is_some_and(|p| !p.is_none())
            {
                continue;
            }
            push(&mut head, &n, &v)?;
        }
    }
    let (in_tx, in_rx) = mpsc::channel(INBOX);
    let (out_tx, out_rx) = mpsc::channel(OUTBOX);
    let closed = c.closed.clone();
    let registry = c.registry.clone();
    let mut reply = Reply::new(head, ReplyBody::Full(Vec::new()));
    reply.upgrade = Some(Box::new(move |up: Upgraded| {
        tokio::spawn(session(up, in_tx, out_rx, closed, registry));
    }));
    c.phase = Phase::Open;
    c.out = Some(out_tx);
    c.inbox = Some(in_rx);
    if let Some(r) = c.reply.take() {
        let _ = r.send(Outcome::Reply(reply));
    }
    runloop::ready_none(py)
}

fn send(py: Python<'_>, cycle: &Bound<'_, WsCycle>, msg: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    let (d, t) = message(msg)?;
    let mut c = cycle.borrow_mut();
    match (t.as_str(), c.phase) {
        ("websocket.accept", Phase::Connecting | Phase::Handshake) => accept(py, &mut c, &d),
        ("websocket.close", Phase::Connecting | Phase::Handshake) => {
            // Denied before the handshake: 403 (ASGI spec).
            c.phase = Phase::Closed;
            if let Some(r) = c.reply.take() {
                let _ = r.send(refuse(403, "Forbidden", None));
            }
            runloop::ready_none(py)
        }
        ("websocket.http.response.start", Phase::Connecting | Phase::Handshake) => {
            c.deny = Some((response_head(&d)?, Vec::new()));
            c.phase = Phase::Denying;
            runloop::ready_none(py)
        }
        ("websocket.http.response.body", Phase::Denying) => {
            if let Some(b) = d.get_item(intern!(py, "body"))? {
                let b = body_bytes(&b, "'body'")?;
                if let Some((_, body)) = c.deny.as_mut()
                    && !b.is_empty()
                {
                    body.push(b);
                }
            }
            let more = match d.get_item(intern!(py, "more_body"))? {
                Some(v) => v.is_truthy()?,
                None => false,
            };
            if !more {
                c.phase = Phase::Closed;
                if let (Some((head, body)), Some(r)) = (c.deny.take(), c.reply.take()) {
                    let _ = r.send(Outcome::Reply(Reply::new(head, ReplyBody::Full(body))));
                }
            }
            runloop::ready_none(py)
        }
        ("websocket.send", Phase::Open) => {
            if c.app_closed {
                return Err(closed_error());
            }
            let text = d.get_item(intern!(py, "text"))?.filter(|v| !v.is_none());
            let bytes = d.get_item(intern!(py, "bytes"))?.filter(|v| !v.is_none());
            let m = match (bytes, text) {
                (Some(b), _) => Out::Binary(body_bytes(&b, "'bytes'")?),
                (None, Some(t)) => Out::Text(t.extract()?),
                (None, None) => {
                    return Err(PyValueError::new_err(
                        "websocket.send needs 'bytes' or 'text'",
                    ));
                }
            };
            let out = c.out.clone().ok_or_else(closed_error)?;
            drop(c);
            push_out(py, &out, m)
        }
        ("websocket.send", Phase::Closed) => Err(closed_error()),
        ("websocket.close", Phase::Open) => {
            if c.app_closed {
                return runloop::ready_none(py);
            }
            c.app_closed = true;
            let code: u16 = match d.get_item(intern!(py, "code"))? {
                Some(v) if !v.is_none() => v.extract()?,
                _ => 1000,
            };
            let reason: String = match d.get_item(intern!(py, "reason"))? {
                Some(v) if !v.is_none() => v.extract()?,
                _ => String::new(),
            };
            let out = c.out.clone().ok_or_else(closed_error)?;
            drop(c);
            push_out(py, &out, Out::Close(code, reason))
        }
        ("websocket.close", Phase::Closed) => runloop::ready_none(py),
        (other, phase) => Err(PyRuntimeError::new_err(format!(
            "Unexpected ASGI message '{other}' for a websocket scope in state {phase:?}"
        ))),
    }
}

#[pymethods]
impl WsCycle {
    #[pyo3(signature = (exc))]
    fn done(&mut self, py: Python<'_>, exc: Option<&Bound<'_, PyAny>>) {
        let target = self.head.target_lossy().into_owned();
        if let Some(e) = exc {
            let tb = crate::python::format_traceback(py, &PyErr::from_value(e.clone()));
            tracing::error!("Error handling WebSocket {target}\n{}", tb.trim_end());
        }
        if let Some(r) = self.reply.take() {
            match self.deny.take() {
                Some((head, body)) if exc.is_none() => {
                    let _ = r.send(Outcome::Reply(Reply::new(head, ReplyBody::Full(body))));
                }
                _ => {
                    if exc.is_none() {
                        tracing::error!(
                            "Error handling WebSocket {target}: the ASGI app returned without \
                             accepting or closing the connection"
                        );
                    }
                    let _ = r.send(Outcome::Failed);
                }
            }
        } else if let Some(out) = self.out.take()
            && !self.app_closed
        {
            let code = if exc.is_some() { 1011 } else { 1000 };
            let _ = out.try_send(Out::Close(code, String::new()));
        }
        self.out = None;
        self.phase = Phase::Closed;
    }
}

#[pyclass(module = "ferricorn", frozen)]
pub struct WsReceive {
    cycle: Py<WsCycle>,
}

#[pymethods]
impl WsReceive {
    fn __call__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        receive(py, self.cycle.bind(py))
    }
}

#[pyclass(module = "ferricorn", frozen)]
pub struct WsSend {
    cycle: Py<WsCycle>,
}

#[pymethods]
impl WsSend {
    fn __call__(&self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        send(py, self.cycle.bind(py), message)
    }
}

/// On the loop thread: the scope, the cycle and the app's task for one handshake.
pub fn start(
    py: Python<'_>,
    req: Request,
    accept_key: String,
    reply: oneshot::Sender<Outcome>,
    registry: Arc<Registry>,
) {
    let target = req.head.target_lossy().into_owned();
    let started = (|| -> PyResult<()> {
        let scope = runloop::with_ctx(|c| c.scope.websocket(py, &req, c.state.as_ref()))?;
        let cycle = Bound::new(
            py,
            WsCycle {
                head: req.head.clone(),
                accept_key,
                phase: Phase::Connecting,
                reply: Some(reply),
                deny: None,
                out: None,
                inbox: None,
                reading: false,
                closed: Arc::new(Mutex::new(None)),
                app_closed: false,
                unclaimed: None,
                pending: None,
                registry,
            },
        )?;
        let recv = Bound::new(
            py,
            WsReceive {
                cycle: cycle.clone().unbind(),
            },
        )?;
        let send = Bound::new(
            py,
            WsSend {
                cycle: cycle.clone().unbind(),
            },
        )?;
        runloop::start_task(
            py,
            scope.into_any(),
            recv.into_any(),
            send.into_any(),
            cycle.into_any(),
        )
    })();
    if let Err(e) = started {
        tracing::error!(
            "Error handling WebSocket {target}\n{}",
            crate::python::format_traceback(py, &e).trim_end()
        );
    }
}

fn close_frame(code: u16, reason: &str) -> Message {
    // A close reason is at most 123 bytes (RFC 6455 §5.5).
    let mut r = reason;
    while r.len() > 123 {
        let mut end = 123;
        while !r.is_char_boundary(end) {
            end -= 1;
        }
        r = &r[..end];
    }
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: r.to_string().into(),
    }))
}

/// Runs one upgraded connection on the tokio thread until it closes.
async fn session(
    up: Upgraded,
    in_tx: mpsc::Sender<In>,
    mut out_rx: mpsc::Receiver<Out>,
    closed: Closed,
    registry: Arc<Registry>,
) {
    let _open = registry.enter();
    let mut going_away = registry.going_away.subscribe();
    let Upgraded {
        io,
        buffered,
        ended,
    } = up;
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let ws =
        WebSocketStream::from_partially_read(io, buffered.to_vec(), Role::Server, Some(config))
            .await;
    let (mut sink, mut stream) = ws.split();
    let set_closed = |code: u16, reason: String| {
        let mut c = closed.lock().unwrap_or_else(|e| e.into_inner());
        if c.is_none() {
            *c = Some((code, reason));
        }
    };
    let mut permit: Option<mpsc::OwnedPermit<In>> = None;
    let mut inbox_gone = false;
    let mut sent = 0u64;
    // Set once a close frame was sent or received: the closing handshake's end.
    let mut closing: Option<tokio::time::Instant> = None;
    let mut app_done = false;
    loop {
        let until =
            closing.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86400));
        tokio::select! {
            p = in_tx.clone().reserve_owned(), if permit.is_none() && !inbox_gone && closing.is_none() => {
                match p {
                    Ok(p) => permit = Some(p),
                    Err(_) => inbox_gone = true,
                }
            }
            m = stream.next(), if permit.is_some() || inbox_gone || closing.is_some() => {
                match m {
                    Some(Ok(Message::Text(t))) => {
                        if closing.is_none() && let Some(p) = permit.take() {
                            p.send(In::Text(t));
                        }
                    }
                    Some(Ok(Message::Binary(b))) => {
                        if closing.is_none() && let Some(p) = permit.take() {
                            p.send(In::Binary(b));
                        }
                    }
                    Some(Ok(Message::Close(f))) => {
                        let (code, reason) = match f {
                            Some(f) => (u16::from(f.code), f.reason.to_string()),
                            None => (1005, String::new()),
                        };
                        set_closed(code, reason);
                        if closing.is_none() {
                            // tungstenite queued the reply; the next read flushes it.
                            closing = Some(tokio::time::Instant::now() + CLOSE_WAIT);
                        }
                    }
                    Some(Ok(_)) => {} // pings are answered by tungstenite
                    Some(Err(_)) | None => {
                        set_closed(1006, String::new());
                        break;
                    }
                }
            }
            o = out_rx.recv(), if !app_done => {
                let msg = match o {
                    Some(Out::Text(s)) => {
                        sent += s.len() as u64;
                        Message::Text(s.into())
                    }
                    Some(Out::Binary(b)) => {
                        sent += b.len() as u64;
                        Message::Binary(b)
                    }
                    Some(Out::Close(code, reason)) => {
                        app_done = true;
                        if closing.is_some() {
                            continue;
                        }
                        set_closed(code, reason.clone());
                        closing = Some(tokio::time::Instant::now() + CLOSE_WAIT);
                        close_frame(code, &reason)
                    }
                    None => {
                        app_done = true;
                        if closing.is_some() {
                            continue;
                        }
                        set_closed(1000, String::new());
                        closing = Some(tokio::time::Instant::now() + CLOSE_WAIT);
                        close_frame(1000, "")
                    }
                };
                if closing.is_some() && !matches!(msg, Message::Close(_)) {
                    continue;
                }
                if sink.send(msg).await.is_err() {
                    set_closed(1006, String::new());
                    break;
                }
            }
            r = going_away.changed(), if closing.is_none() => {
                if r.is_ok() && *going_away.borrow() {
                    set_closed(1001, String::new());
                    closing = Some(tokio::time::Instant::now() + CLOSE_WAIT);
                    if sink.send(close_frame(1001, "server shutting down")).await.is_err() {
                        break;
                    }
                }
            }
            _ = tokio::time::sleep_until(until), if closing.is_some() => break,
        }
    }
    drop(permit);
    // The app's receive() now says websocket.disconnect with the code set above.
    drop(in_tx);
    let _ = sink.close().await;
    ended.done(sent);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::limits::Limits;

    fn head(raw: &str) -> Head {
        parse::parse(Bytes::from(raw.replace('\n', "\r\n")), &Limits::for_tests()).unwrap()
    }

    fn status(h: Handshake) -> Option<u16> {
        match h {
            Handshake::No => None,
            Handshake::Bad(Outcome::Reply(r)) => Some(r.head.status),
            Handshake::Bad(Outcome::Failed) => Some(500),
            Handshake::Yes(_) => Some(101),
        }
    }

    #[test]
    fn handshakes() {
        let ok = "GET /ws HTTP/1.1\nHost: x\nUpgrade: WebSocket\nConnection: keep-alive, Upgrade\n\
                  Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\nSec-WebSocket-Version: 13\n\n";
        match handshake(&head(ok)) {
            Handshake::Yes(k) => assert_eq!(k, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            _ => panic!("refused"),
        }
        assert_eq!(
            status(handshake(&head("GET / HTTP/1.1\nHost: x\n\n"))),
            None
        );
        assert_eq!(status(handshake(&head(&ok.replace("13", "8")))), Some(426));
        assert_eq!(
            status(handshake(&head(
                &ok.replace("keep-alive, Upgrade", "keep-alive")
            ))),
            Some(400)
        );
        assert_eq!(
            status(handshake(&head(&ok.replace("GET", "POST")))),
            Some(400)
        );
        assert_eq!(
            status(handshake(&head(
                &ok.replace("dGhlIHNhbXBsZSBub25jZQ==", "short")
            ))),
            Some(400)
        );
    }

    #[test]
    fn close_reasons_are_cut_at_a_char_boundary() {
        let long = "é".repeat(100);
        match close_frame(1000, &long) {
            Message::Close(Some(f)) => {
                assert!(f.reason.len() <= 123);
                assert!(f.reason.as_str().chars().all(|c| c == 'é'));
            }
            _ => panic!(),
        }
    }
}

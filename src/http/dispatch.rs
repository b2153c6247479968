//! The seam between the HTTP layer and an application interface (`wsgi/` now, `asgi/` later).
//!
//! The connection hands a [`Request`] to a [`Dispatch`] and awaits an [`Outcome`]. What crosses
//! the seam is Python-free: the parsed head, the body (complete, or a bounded stream that a
//! blocking consumer on a Python thread or an async consumer reads with backpressure), the
//! connection (peer, local address, and whether the client went away), and back a response head
//! already in wire format with a complete or streamed body, an optional upgrade hand-off for a
//! `101`, and what the access log needs from the app's side.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use tokio::sync::{Notify, mpsc, oneshot};

use super::limits::Held;
use super::parse::Head;
use super::proxy_protocol::ProxyInfo;
use super::response::ResponseHead;
use crate::proxy::Peer;
use crate::sockets::LocalAddr;

/// A TCP peer's address and port as text, formatted once per connection.
#[derive(Debug)]
pub struct Remote {
    pub addr: String,
    pub port: String,
}

/// One connection, as the app sees it.
#[derive(Debug)]
pub struct ConnInfo {
    pub peer: Peer,
    /// `REMOTE_ADDR`/`REMOTE_PORT`: the TCP peer, or the client a PROXY header named.
    pub remote: Option<Remote>,
    /// What the connection's PROXY protocol header said, if one came.
    pub proxy: Option<ProxyInfo>,
    pub local: Arc<LocalAddr>,
    /// The connection's socket, for asking the kernel what it has not delivered yet (lingering
    /// close); `None` for a stream that is not a socket.
    pub fd: Option<std::os::fd::RawFd>,
    gone: AtomicBool,
    gone_notify: Notify,
}

impl ConnInfo {
    pub fn new(peer: Peer, local: Arc<LocalAddr>) -> ConnInfo {
        let remote = match peer {
            Peer::Tcp(a) => Some(Remote {
                addr: a.ip().to_string(),
                port: a.port().to_string(),
            }),
            Peer::Unix => None,
        };
        ConnInfo {
            peer,
            remote,
            proxy: None,
            local,
            fd: None,
            gone: AtomicBool::new(false),
            gone_notify: Notify::new(),
        }
    }

    /// The same, for the socket `fd` (which outlives it).
    pub fn with_fd(self, fd: std::os::fd::RawFd) -> ConnInfo {
        ConnInfo {
            fd: Some(fd),
            ..self
        }
    }

    /// The connection as a PROXY header describes it: the client it names becomes the remote
    /// address (the peer stays the proxy, which the forwarded-header rules trust or not).
    pub fn proxied(mut self, info: ProxyInfo) -> ConnInfo {
        if let Some(src) = info.source {
            self.remote = Some(Remote {
                addr: src.ip().to_string(),
                port: src.port().to_string(),
            });
        }
        self.proxy = Some(info);
        self
    }

    /// The client for the access log (`%(h)s`): the one a PROXY header named, else the peer.
    pub fn client(&self) -> Peer {
        match self.proxy.as_ref().and_then(|p| p.source) {
            Some(src) => Peer::Tcp(src),
            None => self.peer,
        }
    }

    /// The client closed the connection or it failed.
    pub fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }

    /// Resolves when the client has gone (for an async app's `http.disconnect`).
    pub async fn gone(&self) {
        loop {
            let n = self.gone_notify.notified();
            if self.is_gone() {
                return;
            }
            n.await;
        }
    }

    pub(super) fn set_gone(&self) {
        self.gone.store(true, Ordering::Release);
        self.gone_notify.notify_waiters();
    }
}

/// Why a request body could not be read to its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// The client went away before sending all of it.
    Disconnected,
    /// The client was too slow (`--body-timeout`, `--body-min-rate`).
    TimedOut,
    /// Malformed framing (status and reason).
    Invalid(u16, &'static str),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Disconnected => f.write_str("the client closed the connection mid-body"),
            BodyError::TimedOut => f.write_str("the client was too slow sending the body"),
            BodyError::Invalid(_, why) => write!(f, "invalid request body: {why}"),
        }
    }
}

impl std::error::Error for BodyError {}

/// Body bytes from the connection, with the part of the worker's budget they hold.
#[derive(Debug)]
pub struct BodyChunk {
    pub data: Bytes,
    pub held: Option<Held>,
}

/// A request body still arriving: read chunk by chunk, each read making room for the next.
#[derive(Debug)]
pub struct BodyStream {
    /// What was read before the app was called.
    pub(super) prefix: Option<BodyChunk>,
    pub(super) rx: mpsc::Receiver<Result<BodyChunk, BodyError>>,
    /// Told on the first read (so `100 Continue` is sent only when the body is wanted).
    pub(super) want: Option<oneshot::Sender<()>>,
}

impl BodyStream {
    fn wanted(&mut self) {
        if let Some(w) = self.want.take() {
            let _ = w.send(());
        }
    }

    /// The next chunk; `Ok(None)` at the end. Blocks: call it off the event loop (a Python
    /// thread, with the GIL released).
    pub fn blocking_next(&mut self) -> Result<Option<BodyChunk>, BodyError> {
        if let Some(p) = self.prefix.take() {
            return Ok(Some(p));
        }
        self.wanted();
        match self.rx.blocking_recv() {
            Some(Ok(c)) => Ok(Some(c)),
            Some(Err(e)) => Err(e),
            None => Ok(None),
        }
    }

    /// The next chunk, for an async consumer.
    pub async fn next(&mut self) -> Result<Option<BodyChunk>, BodyError> {
        if let Some(p) = self.prefix.take() {
            return Ok(Some(p));
        }
        self.wanted();
        match self.rx.recv().await {
            Some(Ok(c)) => Ok(Some(c)),
            Some(Err(e)) => Err(e),
            None => Ok(None),
        }
    }
}

/// A request body as the app gets it.
#[derive(Debug)]
pub enum Body {
    Empty,
    /// Read completely before the app was called.
    Full(BodyChunk),
    Stream(BodyStream),
}

/// A request crossing the seam.
#[derive(Debug)]
pub struct Request {
    pub head: Arc<Head>,
    pub body: Body,
    pub conn: Arc<ConnInfo>,
    /// `http` or `https` (`wsgi.url_scheme` / ASGI `scheme`), from the proxy rules.
    pub scheme: &'static str,
    /// The peer is in `--forwarded-allow-ips` (or on a unix socket): its `--forwarder-headers`
    /// count.
    pub trusted: bool,
}

/// A streamed response body chunk, or the reason the stream must be cut (the client then sees
/// an incomplete response, which is the truth).
pub type Chunk = Result<Bytes, StreamAborted>;

#[derive(Debug)]
pub struct StreamAborted(pub String);

impl std::fmt::Display for StreamAborted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StreamAborted {}

/// A response body.
pub enum ReplyBody {
    Full(Vec<Bytes>),
    Stream(super::stream::Receiver),
}

/// The raw connection after a `101 Switching Protocols`, with bytes the client already sent.
pub struct Upgraded {
    pub io: Box<dyn Io>,
    pub buffered: Bytes,
    /// Told when the upgraded connection ends: the request's access-log line (with the
    /// duration of the whole connection) and its count towards `--max-requests` wait for it.
    pub ended: Ended,
}

/// The end of an upgraded connection, reported once (with 0 bytes if it is only dropped).
pub struct Ended(Option<Box<dyn FnOnce(u64) + Send>>);

impl Ended {
    pub fn new(f: impl FnOnce(u64) + Send + 'static) -> Ended {
        Ended(Some(Box::new(f)))
    }

    /// The connection is over; `sent` payload bytes went to the client.
    pub fn done(mut self, sent: u64) {
        if let Some(f) = self.0.take() {
            f(sent);
        }
    }
}

impl Drop for Ended {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f(0);
        }
    }
}

/// A connection's byte stream, boxed for a hand-off.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// What the app answered.
pub struct Reply {
    pub head: ResponseHead,
    pub body: ReplyBody,
    /// Values for the access log's `{var}e` atoms (lower-case keys).
    pub log_vars: Vec<(String, String)>,
    /// For a `101`: who takes the connection once the head is sent.
    pub upgrade: Option<Box<dyn FnOnce(Upgraded) + Send>>,
}

impl Reply {
    pub fn new(head: ResponseHead, body: ReplyBody) -> Reply {
        Reply {
            head,
            body,
            log_vars: Vec::new(),
            upgrade: None,
        }
    }
}

pub enum Outcome {
    Reply(Reply),
    /// The app failed before a response started (already logged): the server answers 500.
    Failed,
}

/// An application interface behind the HTTP layer.
pub trait Dispatch: Send + Sync + 'static {
    /// Runs one request to its reply. Called on the event-loop thread; the implementation
    /// decides where the app runs (inline or on a pool thread).
    fn call(&self, req: Request) -> impl Future<Output = Outcome> + Send;
}

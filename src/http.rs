//! The HTTP side of a worker: one hyper HTTP/1.1 service per connection.
//!
//! A request is checked against the limits, its body is read completely by Rust (in memory,
//! spilling to an unnamed temporary file past [`SPILL_AT`]), and only then does it wait for a
//! Python slot — so a slow client never holds a Python thread. With `--threads 1` the app is
//! called right on the event-loop thread (no hand-off); with more, a pool thread takes it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use pyo3::Python;
use tokio::sync::{Notify, Semaphore, oneshot};

use crate::config::Config;
use crate::logging::AccessOut;
use crate::logging::access::{AccessFormat, AccessRecord};
use crate::pool::{Busy, Job, Pool};
use crate::proxy::{ForwardedAllowIps, Peer};
use crate::sockets::LocalAddr;
use crate::wsgi::{self, Called, Reply, WsgiApp};

/// Request bodies larger than this are kept in a temporary file instead of memory.
pub const SPILL_AT: usize = 1024 * 1024;

/// Request-size limits (Gunicorn's `--limit-request-*`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Request line bytes; 0 = unlimited.
    pub line: usize,
    pub fields: usize,
    /// One header field's bytes (`name: value`); 0 = unlimited.
    pub field_size: usize,
}

impl Limits {
    pub fn from_config(cfg: &Config) -> Limits {
        Limits {
            line: cfg.limit_request_line as usize,
            fields: cfg.limit_request_fields as usize,
            field_size: cfg.limit_request_field_size as usize,
        }
    }

    /// hyper's read buffer must hold the largest head the limits allow.
    pub fn max_head_bytes(&self) -> usize {
        let line = if self.line == 0 { 65536 } else { self.line };
        let field = if self.field_size == 0 {
            65536
        } else {
            self.field_size
        };
        (line + 2 + self.fields * (field + 2) + 2).clamp(8192, 8 << 20)
    }
}

/// The access log of a worker.
pub struct AccessLog {
    pub format: AccessFormat,
    pub out: AccessOut,
    /// Request headers the format prints (the rest are not kept after the app ran).
    req_headers: Vec<HeaderName>,
    resp_headers: bool,
}

impl AccessLog {
    pub fn new(format: AccessFormat, out: AccessOut) -> AccessLog {
        let req_headers = format.request_headers();
        let resp_headers = format.needs_response_headers();
        AccessLog {
            format,
            out,
            req_headers,
            resp_headers,
        }
    }
}

/// Everything a worker's connections share.
pub struct Service {
    pub app: Arc<WsgiApp>,
    pub pool: Pool,
    /// `--threads` permits: requests inside Python at once.
    pub slots: Arc<Semaphore>,
    /// Call the app on the event-loop thread (`--threads 1`).
    pub inline: bool,
    pub busy: Arc<Busy>,
    pub limits: Limits,
    pub forwarded: ForwardedAllowIps,
    pub access: Option<AccessLog>,
    /// Requests finished (response sent or abandoned).
    pub requests: AtomicU64,
    /// Stop after this many requests (0: never); `retire` is notified when reached.
    pub max_requests: u64,
    pub retire: Notify,
    /// The worker is stopping: responses carry `Connection: close`.
    pub draining: AtomicBool,
}

impl Service {
    /// Serves one request.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: Peer,
        remote: Option<Arc<wsgi::environ::Remote>>,
        local: Arc<LocalAddr>,
    ) -> Result<Response<LoggedBody>, Infallible> {
        let start = Instant::now();
        let (parts, body) = req.into_parts();
        let target = request_target(&parts.uri);
        let log = LogInfo {
            start,
            peer,
            method: parts.method.clone(),
            target,
            version: parts.version,
            req_headers: self.kept_headers(&parts.headers),
            resp_headers: None,
            log_environ: Vec::new(),
            status: 0,
        };
        if let Some((status, why)) = self.check_limits(&parts, &log.target) {
            return Ok(self.error(status, why, true, log));
        }
        let scheme =
            match crate::proxy::url_scheme(&parts.headers, peer.trusted_by(&self.forwarded)) {
                Ok(s) => s,
                Err(why) => return Ok(self.error(StatusCode::BAD_REQUEST, why, true, log)),
            };
        let body = match read_body(body).await {
            Ok(b) => b,
            Err(why) => return Ok(self.error(StatusCode::BAD_REQUEST, &why, true, log)),
        };
        let wreq = wsgi::Request {
            method: parts.method,
            target: log.target.clone(),
            version: parts.version,
            headers: parts.headers,
            body,
            peer,
            remote,
            local,
            scheme,
        };
        let permit = match self.slots.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => {
                return Ok(self.error(StatusCode::SERVICE_UNAVAILABLE, "shutting down", true, log));
            }
        };
        let reply = if self.inline {
            let called = {
                let _busy = self.busy.enter(0);
                Python::attach(|py| self.app.call(py, wreq))
            };
            match called {
                Called::Done(r) => {
                    drop(permit);
                    r
                }
                Called::Iterate(pending) => {
                    let (tx, rx) = oneshot::channel();
                    self.pool.submit(Job::Iterate {
                        pending,
                        reply: tx,
                        permit,
                    });
                    rx.await.unwrap_or(Reply::Failed)
                }
            }
        } else {
            let (tx, rx) = oneshot::channel();
            self.pool.submit(Job::Call {
                req: wreq,
                reply: tx,
                permit,
            });
            rx.await.unwrap_or(Reply::Failed)
        };
        Ok(self.respond(reply, log))
    }

    fn kept_headers(&self, h: &HeaderMap) -> HeaderMap {
        let mut out = HeaderMap::new();
        if let Some(a) = &self.access {
            for name in &a.req_headers {
                for v in h.get_all(name) {
                    out.append(name.clone(), v.clone());
                }
            }
        }
        out
    }

    fn check_limits(
        &self,
        parts: &http::request::Parts,
        target: &str,
    ) -> Option<(StatusCode, &'static str)> {
        let l = &self.limits;
        let line = parts.method.as_str().len() + 1 + target.len() + 1 + 8;
        if l.line > 0 && line > l.line {
            return Some((StatusCode::URI_TOO_LONG, "Request line is too large"));
        }
        if parts.headers.len() > l.fields {
            return Some((
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "Too many header fields",
            ));
        }
        if l.field_size > 0
            && parts
                .headers
                .iter()
                .any(|(n, v)| n.as_str().len() + 2 + v.len() > l.field_size)
        {
            return Some((
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "A header field is too large",
            ));
        }
        None
    }

    /// A plain error response generated by the server itself.
    fn error(
        self: &Arc<Self>,
        status: StatusCode,
        why: &str,
        close: bool,
        mut log: LogInfo,
    ) -> Response<LoggedBody> {
        let reason = status.canonical_reason().unwrap_or("Error");
        let text = format!(
            "<html><head><title>{reason}</title></head><body><h1><p>{reason}</p></h1>{why}</body></html>\n"
        );
        let mut r = Response::new(());
        *r.status_mut() = status;
        let h = r.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/html"),
        );
        h.insert(http::header::SERVER, HeaderValue::from_static("ferricorn"));
        if close || self.draining.load(Ordering::Relaxed) {
            h.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        log.status = status.as_u16();
        let body = RespBody::full(vec![Bytes::from(text)]);
        let (parts, ()) = r.into_parts();
        if self.access.as_ref().is_some_and(|a| a.resp_headers) {
            log.resp_headers = Some(parts.headers.clone());
        }
        Response::from_parts(parts, LoggedBody::new(body, self.clone(), log))
    }

    fn respond(self: &Arc<Self>, reply: Reply, mut log: LogInfo) -> Response<LoggedBody> {
        let (head, body, env) = match reply {
            Reply::Failed => {
                return self.error(StatusCode::INTERNAL_SERVER_ERROR, "", false, log);
            }
            Reply::Complete {
                head,
                body,
                log_environ,
            } => (head, RespBody::full(body), log_environ),
            Reply::Stream {
                head,
                body,
                log_environ,
            } => (head, RespBody::Stream(body), log_environ),
        };
        let status = match StatusCode::from_u16(head.status) {
            Ok(s) if s.as_u16() >= 200 || s == StatusCode::SWITCHING_PROTOCOLS => s,
            _ => {
                tracing::error!(
                    "Error handling request {}: invalid final status {}",
                    log.target,
                    head.status
                );
                return self.error(StatusCode::INTERNAL_SERVER_ERROR, "", false, log);
            }
        };
        let mut r = Response::new(());
        *r.status_mut() = status;
        if status.canonical_reason() != Some(head.reason.as_str())
            && let Ok(rp) = hyper::ext::ReasonPhrase::try_from(head.reason.into_bytes())
        {
            r.extensions_mut().insert(rp);
        }
        *r.headers_mut() = head.headers;
        if !r.headers().contains_key(http::header::SERVER) {
            r.headers_mut()
                .insert(http::header::SERVER, HeaderValue::from_static("ferricorn"));
        }
        if self.draining.load(Ordering::Relaxed) {
            r.headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        log.status = status.as_u16();
        log.log_environ = env;
        let (parts, ()) = r.into_parts();
        if self.access.as_ref().is_some_and(|a| a.resp_headers) {
            log.resp_headers = Some(parts.headers.clone());
        }
        Response::from_parts(parts, LoggedBody::new(body, self.clone(), log))
    }

    /// Called once per finished request.
    fn finished(&self, log: &LogInfo, sent: u64) {
        if let Some(a) = &self.access {
            let path = wsgi::environ::decode_path(wsgi::environ::raw_path(&log.target));
            let path = String::from_utf8_lossy(&path);
            let rec = AccessRecord {
                peer: log.peer,
                method: log.method.as_str(),
                target: &log.target,
                path: &path,
                query: log.target.split_once('?').map_or("", |(_, q)| q),
                protocol: wsgi::environ::protocol(log.version),
                status: log.status,
                sent,
                req_headers: &log.req_headers,
                resp_headers: log.resp_headers.as_ref(),
                environ: &log.log_environ,
                duration: log.start.elapsed(),
            };
            let mut line = Vec::with_capacity(160);
            a.format.render(&rec, &mut line);
            match &a.out {
                AccessOut::Sink(sink) => sink.write(&line),
                AccessOut::Journal => {
                    let text = String::from_utf8_lossy(&line);
                    let client = match log.peer {
                        Peer::Tcp(addr) => addr.ip().to_string(),
                        Peer::Unix => String::new(),
                    };
                    tracing::info!(
                        target: crate::logging::ACCESS_TARGET,
                        CLIENT_ADDR = client.as_str(),
                        REQUEST_METHOD = log.method.as_str(),
                        REQUEST_PATH = rec.path,
                        STATUS = log.status,
                        BYTES = sent,
                        DURATION_USEC = rec.duration.as_micros() as u64,
                        WORKER_PID = std::process::id(),
                        "{}",
                        text.trim_end()
                    );
                }
            }
        }
        let n = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        if self.max_requests > 0 && n == self.max_requests {
            self.retire.notify_one();
        }
    }
}

/// The request target as received: the URI's own text for the usual origin-form (no
/// formatting, no copy beyond one shared allocation), else its rendering.
fn request_target(uri: &http::Uri) -> Arc<str> {
    match (uri.scheme(), uri.authority(), uri.path_and_query()) {
        (None, None, Some(pq)) => Arc::from(pq.as_str()),
        _ => Arc::from(uri.to_string()),
    }
}

/// Reads a whole request body (de-chunked by hyper), spilling large ones to a temporary file.
async fn read_body(mut body: Incoming) -> Result<wsgi::Body, String> {
    let mut mem = BytesMut::new();
    let mut file: Option<(std::fs::File, u64)> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("Invalid request body: {e}"))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if let Some((f, len)) = file.as_mut() {
            f.write_all(&data)
                .map_err(|e| format!("cannot buffer the request body: {e}"))?;
            *len += data.len() as u64;
        } else if mem.len() + data.len() > SPILL_AT {
            let mut f =
                tempfile::tempfile().map_err(|e| format!("cannot buffer the request body: {e}"))?;
            f.write_all(&mem)
                .and_then(|_| f.write_all(&data))
                .map_err(|e| format!("cannot buffer the request body: {e}"))?;
            file = Some((f, (mem.len() + data.len()) as u64));
            mem = BytesMut::new();
        } else if mem.is_empty() && body.is_end_stream() {
            // The whole body in one frame: keep it without copying.
            return Ok(wsgi::Body::Mem(data));
        } else {
            mem.extend_from_slice(&data);
        }
    }
    Ok(match file {
        Some((file, len)) => wsgi::Body::File { file, len },
        None if mem.is_empty() => wsgi::Body::Empty,
        None => wsgi::Body::Mem(mem.freeze()),
    })
}

/// What the access log needs once the response is finished.
pub struct LogInfo {
    start: Instant,
    peer: Peer,
    method: http::Method,
    target: Arc<str>,
    version: http::Version,
    req_headers: HeaderMap,
    resp_headers: Option<HeaderMap>,
    log_environ: Vec<(String, String)>,
    status: u16,
}

/// A response body.
pub enum RespBody {
    Full { chunks: VecDeque<Bytes>, len: u64 },
    Stream(wsgi::stream::Receiver),
}

impl RespBody {
    fn full(chunks: Vec<Bytes>) -> RespBody {
        let len = chunks.iter().map(|c| c.len() as u64).sum();
        RespBody::Full {
            chunks: chunks.into(),
            len,
        }
    }
}

/// The body handed to hyper: counts bytes and writes the access log line when the response is
/// done (or abandoned by the client).
pub struct LoggedBody {
    inner: RespBody,
    sent: u64,
    service: Arc<Service>,
    log: Option<Box<LogInfo>>,
}

impl LoggedBody {
    fn new(inner: RespBody, service: Arc<Service>, log: LogInfo) -> LoggedBody {
        LoggedBody {
            inner,
            sent: 0,
            service,
            log: Some(Box::new(log)),
        }
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        if let Some(log) = self.log.take() {
            self.service.finished(&log, self.sent);
        }
    }
}

impl HttpBody for LoggedBody {
    type Data = Bytes;
    type Error = wsgi::StreamAborted;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let r = match &mut this.inner {
            RespBody::Full { chunks, len } => match chunks.pop_front() {
                Some(c) => {
                    *len -= c.len() as u64;
                    Poll::Ready(Some(Ok(c)))
                }
                None => Poll::Ready(None),
            },
            RespBody::Stream(rx) => rx.poll_recv(cx),
        };
        match r {
            Poll::Ready(Some(Ok(c))) => {
                this.sent += c.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(c))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(&self.inner, RespBody::Full { chunks, .. } if chunks.is_empty())
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            RespBody::Full { len, .. } => SizeHint::with_exact(*len),
            RespBody::Stream(_) => SizeHint::default(),
        }
    }
}

/// The hyper connection settings for this config.
pub fn builder(cfg: &Config, limits: &Limits) -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(hyper_util::rt::TokioTimer::new());
    b.keep_alive(cfg.keep_alive > 0);
    let head_timeout = if cfg.keep_alive > 0 {
        cfg.keep_alive
    } else {
        cfg.timeout.max(1)
    };
    b.header_read_timeout(Duration::from_secs(head_timeout));
    if limits.fields != 100 {
        b.max_headers(limits.fields);
    }
    b.max_buf_size(limits.max_head_bytes());
    b.max_header_size(limits.max_head_bytes());
    b
}

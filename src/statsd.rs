//! statsd metrics as Gunicorn sends them (`gunicorn/instrument/statsd.py`, `--statsd-host`,
//! `--statsd-prefix`, `--dogstatsd-tags`), with the same names and types:
//!
//! | metric | type | sent |
//! |---|---|---|
//! | `gunicorn.requests` | counter (`\|c\|@1.0`) | by a worker, per request |
//! | `gunicorn.request.duration` | timer in ms (`\|ms`) | by a worker, per request |
//! | `gunicorn.request.status.NNN` | counter | by a worker, per request |
//! | `gunicorn.workers` | gauge (`\|g`) | by the master, when the number changes |
//! | `gunicorn.backlog` | histogram (`\|ms`) | by the master, every second, with `--enable-backlog-metric` |
//! | `gunicorn.log.critical`, `.error`, `.warning`, `.exception` | counter | by any process, per log line |
//!
//! A request is counted where its access line is written (a refused head that never became a
//! request is not), through [`crate::observe`]. Every metric gets the prefix (Gunicorn's
//! dot handling: `app` and `app...` both become `app.`) and, with `--dogstatsd-tags`, Datadog's
//! `|#tags` suffix.
//!
//! The socket (UDP to `HOST:PORT`, or a unix datagram socket for `unix://PATH`) is connected
//! and non-blocking, one per process (each worker opens its own after the fork): a metric
//! never makes a request wait. What cannot be sent at once (`EAGAIN` from a full socket
//! buffer, a receiver that is not there) is dropped and counted, with at most one warning a
//! minute. Gunicorn sends one datagram per metric; here the three metrics of a request go
//! in one datagram, newline-separated (statsd, the Datadog agent and Telegraf's statsd input
//! all split datagrams on newlines): one `send()` per request. Batching several requests per
//! datagram would save more `send()`s but delay every metric to a flush, and lose the last
//! ones when a worker exits; one non-blocking `send()` costs the worker about a microsecond
//! of kernel time and no instructions worth counting (`bench/callgrind.sh`).
//! A unix socket whose receiver is not there yet (or restarted) is connected again, at most
//! once a second.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::observe::{Finished, Observer};

/// Gunicorn's default port for `--statsd-host HOST`.
const DEFAULT_PORT: u16 = 8125;
/// Larger datagrams are sent one metric each (a safe UDP payload on a 1500-byte MTU).
const MAX_DATAGRAM: usize = 1432;
/// At most one warning about dropped metrics per this many seconds.
const WARN_EVERY: u64 = 60;

/// Where metrics go: `--statsd-host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Udp { host: String, port: u16 },
    Unix(PathBuf),
}

impl Target {
    /// `HOST:PORT`, `HOST` (port 8125), `[IPV6]:PORT`, `unix://PATH` or `unix:PATH` (as
    /// Gunicorn's `validate_statsd_address`; `unix:8125` is the host `unix`, as in Gunicorn).
    pub fn parse(s: &str) -> Result<Target, String> {
        let s = s.trim();
        let bad = || format!("'{s}': expected HOST:PORT or unix://PATH");
        if let Some(rest) = s.strip_prefix("unix:") {
            if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) {
                let port = rest.parse().map_err(|_| bad())?;
                return Ok(Target::Udp {
                    host: "unix".into(),
                    port,
                });
            }
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(format!("'{s}' names no socket path"));
            }
            return Ok(Target::Unix(PathBuf::from(path)));
        }
        let hp = s.strip_prefix("udp://").unwrap_or(s);
        if let Some(rest) = hp.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(bad)?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad())?,
                None if after.is_empty() => DEFAULT_PORT,
                None => return Err(bad()),
            };
            host.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
            return Ok(Target::Udp {
                host: host.into(),
                port,
            });
        }
        if hp.parse::<std::net::Ipv6Addr>().is_ok() {
            return Ok(Target::Udp {
                host: hp.into(),
                port: DEFAULT_PORT,
            });
        }
        let (host, port) = match hp.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| bad())?),
            None => (hp, DEFAULT_PORT),
        };
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(bad());
        }
        Ok(Target::Udp {
            host: host.into(),
            port,
        })
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Udp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Target::Udp { host, port } => write!(f, "{host}:{port}"),
            Target::Unix(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

/// Gunicorn's `statsd_prefix` handling (`re.sub(r"^(.+[^.]+)\.*$", r"\g<1>.", prefix)`): a
/// prefix of two characters or more gets exactly one trailing dot; a shorter one (or one of
/// dots only) is used as it is.
pub fn gunicorn_prefix(p: &str) -> String {
    let stem = p.trim_end_matches('.');
    if stem.chars().count() >= 2 && !stem.contains('\n') {
        format!("{stem}.")
    } else {
        p.to_string()
    }
}

enum Sock {
    Udp(UdpSocket),
    Unix(UnixDatagram, PathBuf),
}

/// A statsd client: one connected, non-blocking datagram socket.
pub struct Statsd {
    sock: Sock,
    target: Target,
    prefix: String,
    /// `|#tags`, or empty.
    tags: String,
    /// A request's datagram around its duration and status.
    req_head: Box<[u8]>,
    req_mid: Box<[u8]>,
    req_tail: Box<[u8]>,
    epoch: Instant,
    dropped: AtomicU64,
    /// Seconds since `epoch` of the last warning about dropped metrics (+1; 0: none yet).
    warned: AtomicU64,
    /// Seconds since `epoch` of the last reconnection attempt (unix sockets).
    reconnected: AtomicU64,
    last_error: RwLock<Option<String>>,
}

impl Statsd {
    /// Opens the socket for `--statsd-host host` (resolving a host name once, here).
    pub fn open(host: &str, prefix: &str, tags: &str) -> Result<Statsd, String> {
        let target = Target::parse(host)?;
        let fail = |e: io::Error| format!("statsd at {target}: {e}");
        let sock = match &target {
            Target::Udp { host, port } => {
                let addr: SocketAddr = (host.as_str(), *port)
                    .to_socket_addrs()
                    .map_err(fail)?
                    .next()
                    .ok_or_else(|| format!("statsd at {target}: the name has no address"))?;
                let any: SocketAddr = match addr.ip() {
                    IpAddr::V4(_) => "0.0.0.0:0".parse().expect("literal"),
                    IpAddr::V6(_) => "[::]:0".parse().expect("literal"),
                };
                let s = UdpSocket::bind(any).map_err(fail)?;
                s.connect(addr).map_err(fail)?;
                s.set_nonblocking(true).map_err(fail)?;
                Sock::Udp(s)
            }
            Target::Unix(path) => {
                let s = UnixDatagram::unbound().map_err(fail)?;
                s.set_nonblocking(true).map_err(fail)?;
                // A receiver that is not there yet is connected to later (see `send`).
                let _ = s.connect(path);
                Sock::Unix(s, path.clone())
            }
        };
        let prefix = gunicorn_prefix(prefix);
        let tags = match tags.trim() {
            "" => String::new(),
            t => format!("|#{t}"),
        };
        let req_head = format!("{prefix}gunicorn.request.duration:").into_bytes();
        let req_mid = format!(
            "|ms{tags}\n{prefix}gunicorn.requests:1|c|@1.0{tags}\n{prefix}gunicorn.request.status."
        )
        .into_bytes();
        let req_tail = format!(":1|c|@1.0{tags}").into_bytes();
        Ok(Statsd {
            sock,
            target,
            prefix,
            tags,
            req_head: req_head.into(),
            req_mid: req_mid.into(),
            req_tail: req_tail.into(),
            epoch: Instant::now(),
            dropped: AtomicU64::new(0),
            warned: AtomicU64::new(0),
            reconnected: AtomicU64::new(0),
            last_error: RwLock::new(None),
        })
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The socket's descriptor (the master's is closed in its workers, which open their own).
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        match &self.sock {
            Sock::Udp(s) => s.as_raw_fd(),
            Sock::Unix(s, _) => s.as_raw_fd(),
        }
    }

    /// One finished request: its duration, the request counter and its status counter, in
    /// one datagram.
    pub fn request(&self, status: u16, duration: Duration) {
        let mut buf = Buf::new();
        buf.push(&self.req_head);
        push_ms(&mut buf, duration);
        buf.push(&self.req_mid);
        push_u64(&mut buf, u64::from(status));
        buf.push(&self.req_tail);
        let d = buf.as_slice();
        if d.len() <= MAX_DATAGRAM {
            self.send(d, true);
        } else {
            for line in d.split(|&b| b == b'\n') {
                self.send(line, true);
            }
        }
    }

    /// `name:value|c|@1.0`.
    pub fn increment(&self, name: &str, value: u64) {
        self.metric(name, &value.to_string(), "c|@1.0", true);
    }

    /// `name:value|g`.
    pub fn gauge(&self, name: &str, value: u64) {
        self.metric(name, &value.to_string(), "g", true);
    }

    /// `name:value|ms`.
    pub fn histogram(&self, name: &str, value: u64) {
        self.metric(name, &value.to_string(), "ms", true);
    }

    fn metric(&self, name: &str, value: &str, kind: &str, may_warn: bool) {
        let line = format!("{}{name}:{value}|{kind}{}", self.prefix, self.tags);
        self.send(line.as_bytes(), may_warn);
    }

    fn now_secs(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }

    /// Sends one datagram without waiting; what cannot go now is dropped (and counted).
    fn send(&self, d: &[u8], may_warn: bool) {
        let sent = match &self.sock {
            Sock::Udp(s) => s.send(d),
            Sock::Unix(s, path) => match s.send(d) {
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOTCONN | libc::ECONNREFUSED | libc::ENOENT)
                    ) =>
                {
                    // The receiver is not there (yet, or it restarted): connect again, at
                    // most once a second.
                    let now = self.now_secs() + 1;
                    if self.reconnected.swap(now, Ordering::Relaxed) != now
                        && s.connect(path).is_ok()
                    {
                        s.send(d)
                    } else {
                        Err(e)
                    }
                }
                r => r,
            },
        };
        if let Err(e) = sent {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut last) = self.last_error.write() {
                *last = Some(e.to_string());
            }
            if may_warn {
                self.maybe_warn();
            }
        }
    }

    /// At most once a minute: how many metrics were dropped since the last warning.
    fn maybe_warn(&self) {
        let now = self.now_secs() + 1;
        let last = self.warned.load(Ordering::Relaxed);
        if last != 0 && now < last + WARN_EVERY {
            return;
        }
        if self
            .warned
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let n = self.dropped.swap(0, Ordering::Relaxed);
        let why = self
            .last_error
            .read()
            .ok()
            .and_then(|e| e.clone())
            .unwrap_or_default();
        tracing::warn!(
            "statsd: {n} datagram(s) to {} dropped ({why}); metrics are never waited for",
            self.target
        );
    }
}

impl Observer for Statsd {
    fn request(&self, r: &Finished) {
        Statsd::request(self, r.status, r.duration);
    }
}

/// The milliseconds of `d` as Gunicorn writes them (a Python float of whole microseconds:
/// `12.345`, `1.0`).
fn push_ms(buf: &mut Buf, d: Duration) {
    let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
    push_u64(buf, us / 1000);
    let mut frac = (us % 1000) as u32;
    let mut digits = [b'0'; 3];
    for i in (0..3).rev() {
        digits[i] = b'0' + (frac % 10) as u8;
        frac /= 10;
    }
    let n = match digits {
        [_, b'0', b'0'] => 1,
        [_, _, b'0'] => 2,
        _ => 3,
    };
    buf.push(b".");
    buf.push(&digits[..n]);
}

/// `n` in decimal, without allocating.
fn push_u64(buf: &mut Buf, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.push(&digits[i..]);
}

/// A datagram being written: on the stack unless it is long.
struct Buf {
    stack: [u8; 256],
    len: usize,
    heap: Option<Vec<u8>>,
}

impl Buf {
    fn new() -> Buf {
        Buf {
            stack: [0; 256],
            len: 0,
            heap: None,
        }
    }

    fn push(&mut self, b: &[u8]) {
        if let Some(h) = &mut self.heap {
            h.extend_from_slice(b);
        } else if self.len + b.len() <= self.stack.len() {
            self.stack[self.len..self.len + b.len()].copy_from_slice(b);
            self.len += b.len();
        } else {
            let mut h = Vec::with_capacity(self.len + b.len() + 64);
            h.extend_from_slice(&self.stack[..self.len]);
            h.extend_from_slice(b);
            self.heap = Some(h);
        }
    }

    fn as_slice(&self) -> &[u8] {
        match &self.heap {
            Some(h) => h,
            None => &self.stack[..self.len],
        }
    }
}

// ---- the process's client, for the log counters ----------------------------------------

static PROCESS: RwLock<Option<Arc<Statsd>>> = RwLock::new(None);
static COUNTING: AtomicBool = AtomicBool::new(false);

/// Makes `s` this process's client (the master's, then each worker's own after the fork; the
/// one inherited from the master is dropped).
pub fn install(s: Option<Arc<Statsd>>) {
    COUNTING.store(s.is_some(), Ordering::Relaxed);
    let old = std::mem::replace(&mut *PROCESS.write().unwrap_or_else(|e| e.into_inner()), s);
    drop(old);
}

/// This process's client, if any.
pub fn installed() -> Option<Arc<Statsd>> {
    PROCESS.read().ok().and_then(|g| g.clone())
}

/// Whether log lines are counted (a client is installed).
pub fn counting_logs() -> bool {
    COUNTING.load(Ordering::Relaxed)
}

/// The log levels Gunicorn counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    Critical,
    Error,
    Warning,
    /// An app's exception (Gunicorn's `log.exception`: "Error handling request").
    Exception,
}

/// `gunicorn.log.<kind>:1|c|@1.0`, for one log line of this process.
pub fn count_log(kind: LogKind) {
    if !counting_logs() {
        return;
    }
    let Some(s) = installed() else {
        return;
    };
    let name = match kind {
        LogKind::Critical => "gunicorn.log.critical",
        LogKind::Error => "gunicorn.log.error",
        LogKind::Warning => "gunicorn.log.warning",
        LogKind::Exception => "gunicorn.log.exception",
    };
    // Never a warning from here: this runs inside the logger.
    s.metric(name, "1", "c|@1.0", false);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let udp = |h: &str, p| Target::Udp {
            host: h.into(),
            port: p,
        };
        assert_eq!(Target::parse("localhost:8125"), Ok(udp("localhost", 8125)));
        assert_eq!(Target::parse("statsd"), Ok(udp("statsd", 8125)));
        assert_eq!(Target::parse("[::1]:9"), Ok(udp("::1", 9)));
        assert_eq!(Target::parse("[::1]"), Ok(udp("::1", 8125)));
        assert_eq!(Target::parse("::1"), Ok(udp("::1", 8125)));
        assert_eq!(Target::parse("unix:8125"), Ok(udp("unix", 8125)));
        assert_eq!(
            Target::parse("unix:///run/statsd.sock"),
            Ok(Target::Unix("/run/statsd.sock".into()))
        );
        assert_eq!(
            Target::parse("unix:/run/statsd.sock"),
            Ok(Target::Unix("/run/statsd.sock".into()))
        );
        for bad in ["host:port", "unix://", ":8125", "[::1", "a b:1", "h:70000"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(udp("::1", 9).to_string(), "[::1]:9");
    }

    #[test]
    fn prefix_as_gunicorn_rewrites_it() {
        for (given, want) in [
            ("", ""),
            ("app", "app."),
            ("app.", "app."),
            ("app...", "app."),
            ("my.app", "my.app."),
            ("a", "a"),
            ("a.", "a."),
            ("..", ".."),
        ] {
            assert_eq!(gunicorn_prefix(given), want, "{given:?}");
        }
    }

    #[test]
    fn milliseconds_as_python_writes_them() {
        let ms = |us| {
            let mut b = Buf::new();
            push_ms(&mut b, Duration::from_micros(us));
            String::from_utf8(b.as_slice().to_vec()).unwrap()
        };
        assert_eq!(ms(0), "0.0");
        assert_eq!(ms(5), "0.005");
        assert_eq!(ms(1200), "1.2");
        assert_eq!(ms(1000), "1.0");
        assert_eq!(ms(12_345), "12.345");
        assert_eq!(ms(3_000_010), "3000.01");
    }

    #[test]
    fn a_request_is_one_datagram_of_three_lines() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let host = rx.local_addr().unwrap().to_string();
        let s = Statsd::open(&host, "web", "env:prod,app:x").unwrap();
        s.request(404, Duration::from_micros(2500));
        let mut buf = [0u8; 2048];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(
            std::str::from_utf8(&buf[..n]).unwrap(),
            "web.gunicorn.request.duration:2.5|ms|#env:prod,app:x\n\
             web.gunicorn.requests:1|c|@1.0|#env:prod,app:x\n\
             web.gunicorn.request.status.404:1|c|@1.0|#env:prod,app:x"
        );
        s.gauge("gunicorn.workers", 3);
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(
            &buf[..n],
            b"web.gunicorn.workers:3|g|#env:prod,app:x".as_slice()
        );
        // A long prefix splits the datagram into one per metric.
        let long = "p".repeat(600);
        let s = Statsd::open(&host, &long, "").unwrap();
        s.request(200, Duration::from_millis(1));
        for want in [
            "request.duration:1.0|ms",
            "requests:1|c|@1.0",
            "status.200:1|c|@1.0",
        ] {
            let n = rx.recv(&mut buf).unwrap();
            let got = std::str::from_utf8(&buf[..n]).unwrap();
            assert!(got.starts_with(&long) && got.ends_with(want), "{got}");
        }
    }

    #[test]
    fn a_unix_receiver_that_comes_later_gets_the_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("statsd.sock");
        let s = Statsd::open(&format!("unix://{}", path.display()), "", "").unwrap();
        s.increment("gunicorn.log.error", 7); // nobody there: dropped
        let rx = UnixDatagram::bind(&path).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // The next reconnection is allowed a second after the last attempt.
        std::thread::sleep(Duration::from_millis(1100));
        s.increment("gunicorn.log.error", 1);
        let mut buf = [0u8; 256];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"gunicorn.log.error:1|c|@1.0".as_slice());
        rx.set_nonblocking(true).unwrap();
        assert!(rx.recv(&mut buf).is_err(), "the first one was not dropped");
    }
}

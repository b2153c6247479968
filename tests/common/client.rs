//! A small, strict, blocking raw HTTP/1.1 client for tests (std only).
//!
//! It is deliberately strict about what the server sends: a malformed status
//! line or header, a bad chunk size, conflicting framing headers, or EOF inside
//! a framed body is reported as an `io::Error` (`InvalidData` or
//! `UnexpectedEof`), never a panic, so tests can assert on well-formedness.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Read/write timeout set on every new connection.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest status, header, or chunk-size line accepted (without CRLF).
const MAX_LINE: usize = 64 * 1024;
/// Most header (or trailer) lines accepted in one response.
const MAX_HEADERS: usize = 1000;

/// Where a server listens.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Addr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Addr {
    /// Parses `http://127.0.0.1:8000`, `http://[::1]:8000/`, `127.0.0.1:8000`,
    /// `unix:/path/to.sock` or `unix:///path/to.sock`.
    pub fn parse(s: &str) -> Option<Addr> {
        let s = s.trim();
        if let Some(path) = s
            .strip_prefix("unix://")
            .or_else(|| s.strip_prefix("unix:"))
        {
            return (!path.is_empty()).then(|| Addr::Unix(PathBuf::from(path)));
        }
        let hp = s
            .strip_prefix("http://")
            .or_else(|| s.strip_prefix("https://"))
            .unwrap_or(s)
            .trim_end_matches('/');
        if let Ok(sa) = hp.parse::<SocketAddr>() {
            return Some(Addr::Tcp(sa));
        }
        hp.to_socket_addrs().ok()?.next().map(Addr::Tcp)
    }

    /// The unix socket at `path`.
    pub fn unix(path: &Path) -> Addr {
        Addr::Unix(path.to_path_buf())
    }

    /// The TCP port, if this is a TCP address.
    pub fn port(&self) -> Option<u16> {
        match self {
            Addr::Tcp(sa) => Some(sa.port()),
            Addr::Unix(_) => None,
        }
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Tcp(sa) => write!(f, "http://{sa}"),
            Addr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// One parsed HTTP response.
#[derive(Clone, Debug, Default)]
pub struct Response {
    /// e.g. "HTTP/1.1"
    pub version: String,
    pub status: u16,
    pub reason: String,
    /// Header names as received, in order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    /// `Transfer-Encoding: chunked` was used.
    pub chunked: bool,
    /// Sizes of the chunks as received (chunked only, excluding the final 0).
    pub chunk_sizes: Vec<usize>,
    /// Trailer fields after the last chunk (chunked only).
    pub trailers: Vec<(String, String)>,
    /// Status codes of interim (1xx, other than 101) responses that were skipped,
    /// e.g. `[100]` after an `Expect: 100-continue` request.
    pub interim: Vec<u16>,
}

impl Response {
    /// First header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All headers with this name (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; panics with the status and body in the message if it isn't JSON.
    pub fn json(&self) -> serde_json::Value {
        match serde_json::from_slice(&self.body) {
            Ok(v) => v,
            Err(e) => panic!(
                "response body is not JSON ({e}); status {} {}, headers {:?}, body:\n{}",
                self.status,
                self.reason,
                self.headers,
                self.text()
            ),
        }
    }
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(d),
            Stream::Unix(s) => s.set_read_timeout(d),
        }
    }

    fn set_write_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_write_timeout(d),
            Stream::Unix(s) => s.set_write_timeout(d),
        }
    }

    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(s) => s.shutdown(how),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn eof(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, msg.into())
}

pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Field-value bytes: VCHAR, SP, HTAB, obs-text (no other CTLs).
fn is_field_byte(b: u8) -> bool {
    b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80
}

fn parse_status_line(line: &[u8]) -> io::Result<(String, u16, String)> {
    let show = || String::from_utf8_lossy(line).into_owned();
    if line.len() < 12 {
        return Err(invalid(format!("malformed status line {:?}", show())));
    }
    let version = &line[..8];
    if version != b"HTTP/1.1" && version != b"HTTP/1.0" {
        return Err(invalid(format!(
            "bad HTTP version in status line {:?}",
            show()
        )));
    }
    if line[8] != b' ' {
        return Err(invalid(format!("malformed status line {:?}", show())));
    }
    let code = &line[9..12];
    if !code.iter().all(u8::is_ascii_digit) {
        return Err(invalid(format!(
            "bad status code in status line {:?}",
            show()
        )));
    }
    let status = u16::from(code[0] - b'0') * 100
        + u16::from(code[1] - b'0') * 10
        + u16::from(code[2] - b'0');
    if !(100..=599).contains(&status) {
        return Err(invalid(format!("status code out of range in {:?}", show())));
    }
    // RFC 9112: status-line = HTTP-version SP status-code SP [ reason-phrase ]
    if line.len() == 12 || line[12] != b' ' {
        return Err(invalid(format!(
            "status line must have a space after the status code: {:?}",
            show()
        )));
    }
    let reason = &line[13..];
    if !reason.iter().all(|&b| is_field_byte(b)) {
        return Err(invalid(format!(
            "control character in reason phrase: {:?}",
            show()
        )));
    }
    Ok((
        String::from_utf8_lossy(version).into_owned(),
        status,
        String::from_utf8_lossy(reason).into_owned(),
    ))
}

fn parse_header_line(line: &[u8]) -> io::Result<(String, String)> {
    let show = || String::from_utf8_lossy(line).into_owned();
    if line[0] == b' ' || line[0] == b'\t' {
        return Err(invalid(format!(
            "obsolete line folding in header: {:?}",
            show()
        )));
    }
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(|| invalid(format!("header line without colon: {:?}", show())))?;
    let name = &line[..colon];
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(invalid(format!("invalid header name in {:?}", show())));
    }
    let mut value = &line[colon + 1..];
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    if !value.iter().all(|&b| is_field_byte(b)) {
        return Err(invalid(format!(
            "invalid character in header value: {:?}",
            show()
        )));
    }
    Ok((
        String::from_utf8_lossy(name).into_owned(),
        String::from_utf8_lossy(value).into_owned(),
    ))
}

/// A connection to the server with a read buffer.
pub struct Conn {
    stream: Stream,
    buf: Vec<u8>,
    pos: usize,
    timeout: Duration,
}

impl Conn {
    /// Connects, with read/write timeouts of 30 s (and TCP_NODELAY for TCP).
    pub fn connect(addr: &Addr) -> io::Result<Conn> {
        let stream = match addr {
            Addr::Tcp(sa) => {
                let s = TcpStream::connect(sa)?;
                s.set_nodelay(true)?;
                Stream::Tcp(s)
            }
            Addr::Unix(p) => Stream::Unix(UnixStream::connect(p)?),
        };
        let mut conn = Conn {
            stream,
            buf: Vec::new(),
            pos: 0,
            timeout: DEFAULT_TIMEOUT,
        };
        conn.apply_timeouts()?;
        Ok(conn)
    }

    fn apply_timeouts(&mut self) -> io::Result<()> {
        let d = Some(self.timeout.max(Duration::from_millis(1)));
        self.stream.set_read_timeout(d)?;
        self.stream.set_write_timeout(d)
    }

    /// Sets the read and write timeouts (a zero duration is treated as 1 ms).
    pub fn set_timeout(&mut self, d: Duration) {
        self.timeout = d;
        // Setting a socket timeout only fails for a zero duration, which is clamped.
        let _ = self.apply_timeouts();
    }

    /// Writes all bytes and flushes.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Half-closes the connection (no more data will be sent).
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        self.stream.shutdown(Shutdown::Write)
    }

    /// Bytes already received but not yet consumed by a parse.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Reads more bytes into the buffer; returns how many (0 at EOF).
    fn fill(&mut self) -> io::Result<usize> {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 64 * 1024 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let mut tmp = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut tmp) {
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads one CRLF-terminated line (returned without the CRLF).
    /// A bare LF or CR, or an over-long line, is `InvalidData`; EOF is `UnexpectedEof`.
    fn read_line(&mut self, what: &str) -> io::Result<Vec<u8>> {
        // Bytes after `self.pos` already searched for LF (`fill` may move the data).
        let mut scanned = 0;
        loop {
            let from = self.pos + scanned;
            if let Some(i) = self.buf[from..].iter().position(|&b| b == b'\n') {
                let nl = from + i;
                let line = &self.buf[self.pos..nl];
                let Some((&b'\r', content)) = line.split_last() else {
                    return Err(invalid(format!(
                        "{what}: line not terminated by CRLF (bare LF): {:?}",
                        String::from_utf8_lossy(line)
                    )));
                };
                if content.contains(&b'\r') {
                    return Err(invalid(format!(
                        "{what}: bare CR in line {:?}",
                        String::from_utf8_lossy(content)
                    )));
                }
                let content = content.to_vec();
                self.pos = nl + 1;
                return Ok(content);
            }
            scanned = self.buf.len() - self.pos;
            if scanned > MAX_LINE {
                return Err(invalid(format!(
                    "{what}: line longer than {MAX_LINE} bytes"
                )));
            }
            if self.fill()? == 0 {
                let partial = self.buf.len() - self.pos;
                return Err(eof(if partial == 0 {
                    format!("connection closed while waiting for {what}")
                } else {
                    format!(
                        "connection closed in the middle of {what} (got {:?})",
                        String::from_utf8_lossy(&self.buf[self.pos..])
                    )
                }));
            }
        }
    }

    /// Reads exactly `n` bytes.
    fn read_exact_n(&mut self, n: usize, what: &str) -> io::Result<Vec<u8>> {
        while self.buf.len() - self.pos < n {
            if self.fill()? == 0 {
                return Err(eof(format!(
                    "connection closed after {} of {n} bytes of {what}",
                    self.buf.len() - self.pos
                )));
            }
        }
        let out = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        Ok(out)
    }

    /// Reads exactly `n` bytes (buffered ones first), e.g. a frame after an upgrade.
    pub fn read_bytes(&mut self, n: usize) -> io::Result<Vec<u8>> {
        self.read_exact_n(n, "bytes")
    }

    /// Reads everything until the peer closes (buffered bytes included).
    /// ECONNRESET is returned as an error.
    pub fn read_until_close(&mut self) -> io::Result<Vec<u8>> {
        while self.fill()? != 0 {}
        let out = self.buf[self.pos..].to_vec();
        self.buf.clear();
        self.pos = 0;
        Ok(out)
    }

    fn read_fields(&mut self, what: &str) -> io::Result<Vec<(String, String)>> {
        let mut fields = Vec::new();
        loop {
            let line = self.read_line(what)?;
            if line.is_empty() {
                return Ok(fields);
            }
            if fields.len() >= MAX_HEADERS {
                return Err(invalid(format!("more than {MAX_HEADERS} {what} lines")));
            }
            fields.push(parse_header_line(&line)?);
        }
    }

    /// Reads one response. `method` is the request's method: for HEAD, and for
    /// status 1xx/204/304, there is no body. Interim 1xx responses (other than
    /// 101) are skipped and recorded in `Response::interim`. Body framing:
    /// chunked, else Content-Length, else read until EOF.
    pub fn read_response(&mut self, method: &str) -> io::Result<Response> {
        let mut interim = Vec::new();
        loop {
            let line = self.read_line("status line")?;
            let (version, status, reason) = parse_status_line(&line)?;
            let headers = self.read_fields("header")?;
            if (100..200).contains(&status) && status != 101 {
                interim.push(status);
                continue;
            }
            let mut resp = Response {
                version,
                status,
                reason,
                headers,
                interim,
                ..Default::default()
            };
            self.read_body(method, &mut resp)?;
            return Ok(resp);
        }
    }

    fn read_body(&mut self, method: &str, resp: &mut Response) -> io::Result<()> {
        let status = resp.status;
        let te = resp.header_all("transfer-encoding");
        let cls = resp.header_all("content-length");
        if !te.is_empty() && !cls.is_empty() {
            return Err(invalid(format!(
                "response has both Transfer-Encoding {te:?} and Content-Length {cls:?}"
            )));
        }
        if (status < 200 || status == 204) && (!te.is_empty() || !cls.is_empty()) {
            return Err(invalid(format!(
                "status {status} response must not have Content-Length/Transfer-Encoding \
                 (got CL {cls:?}, TE {te:?})"
            )));
        }
        let mut content_length: Option<u64> = None;
        for v in &cls {
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(format!("invalid Content-Length {v:?}")));
            }
            let n: u64 = v
                .parse()
                .map_err(|_| invalid(format!("Content-Length out of range: {v:?}")))?;
            if content_length.is_some_and(|prev| prev != n) {
                return Err(invalid(format!(
                    "conflicting Content-Length headers {cls:?}"
                )));
            }
            content_length = Some(n);
        }
        let codings: Vec<String> = te
            .iter()
            .flat_map(|v| v.split(','))
            .map(|c| c.trim().to_ascii_lowercase())
            .collect();
        if codings.iter().any(|c| c.is_empty()) {
            return Err(invalid(format!("empty transfer coding in {te:?}")));
        }
        let chunked = codings.last().is_some_and(|c| c == "chunked");
        if codings.iter().rev().skip(1).any(|c| c == "chunked") {
            return Err(invalid(format!(
                "chunked is not the final transfer coding: {te:?}"
            )));
        }

        let no_body = method.eq_ignore_ascii_case("HEAD")
            || (100..200).contains(&status)
            || status == 204
            || status == 304;
        if no_body {
            return Ok(());
        }
        if !codings.is_empty() {
            if chunked {
                resp.chunked = true;
                self.read_chunked(resp)?;
            } else {
                resp.body = self.read_until_close()?;
            }
        } else if let Some(n) = content_length {
            let n = usize::try_from(n).map_err(|_| invalid("Content-Length too large"))?;
            resp.body = self.read_exact_n(n, "Content-Length body")?;
        } else {
            resp.body = self.read_until_close()?;
        }
        Ok(())
    }

    fn read_chunked(&mut self, resp: &mut Response) -> io::Result<()> {
        loop {
            let line = self.read_line("chunk size line")?;
            let show = || String::from_utf8_lossy(&line).into_owned();
            let hex_len = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
            if hex_len == 0 || hex_len > 16 {
                return Err(invalid(format!("bad chunk size line {:?}", show())));
            }
            // After the size only chunk extensions may follow: BWS ";" ...
            let rest = &line[hex_len..];
            let ext_start = rest.iter().position(|&b| b != b' ' && b != b'\t');
            if let Some(i) = ext_start
                && rest[i] != b';'
            {
                return Err(invalid(format!("bad chunk size line {:?}", show())));
            }
            let hex =
                std::str::from_utf8(&line[..hex_len]).map_err(|_| invalid("bad chunk size"))?;
            let size = u64::from_str_radix(hex, 16)
                .map_err(|_| invalid(format!("bad chunk size {hex:?}")))?;
            let size = usize::try_from(size)
                .map_err(|_| invalid(format!("chunk size too large {hex:?}")))?;
            if size == 0 {
                resp.trailers = self.read_fields("trailer")?;
                return Ok(());
            }
            let data = self.read_exact_n(size, "chunk data")?;
            resp.body.extend_from_slice(&data);
            resp.chunk_sizes.push(size);
            let after = self.read_line("CRLF after chunk data")?;
            if !after.is_empty() {
                return Err(invalid(format!(
                    "chunk data longer than its size {size}: extra {:?}",
                    String::from_utf8_lossy(&after)
                )));
            }
        }
    }

    /// Builds a request: "{method} {target} HTTP/1.1\r\nHost: localhost\r\n" +
    /// headers + (Content-Length if body is Some and no Transfer-Encoding or
    /// Content-Length header is given) + "\r\n" + body; sends it and reads the
    /// response. The Host header is left out if `headers` has one. With a
    /// Transfer-Encoding header the body is sent as given (pre-chunk it yourself).
    ///
    /// If sending fails because the server already closed (EPIPE/ECONNRESET,
    /// e.g. after an early 413), the response is still read if one arrived.
    pub fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> io::Result<Response> {
        let req = build_request(method, target, headers, body);
        if let Err(e) = self.send_raw(&req) {
            if matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ) {
                return self.read_response(method).map_err(|_| e);
            }
            return Err(e);
        }
        self.read_response(method)
    }

    /// true if the server has closed the connection (a read returns EOF or an
    /// error such as ECONNRESET within `wait`); false if it is still open (the
    /// read times out). Any data that arrives meanwhile is kept in the buffer
    /// (see [`Conn::buffered`]) and the wait continues until EOF or `wait` ends.
    pub fn peer_closed(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let closed = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if self
                .stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .is_err()
            {
                break false;
            }
            match self.fill() {
                Ok(0) => break true,
                Ok(_) if Instant::now() < deadline => continue,
                Ok(_) => break false,
                Err(e) if is_timeout(&e) => break false,
                Err(_) => break true,
            }
        };
        let _ = self.apply_timeouts();
        closed
    }
}

/// The bytes of a request as [`Conn::request`] sends it.
pub fn build_request(
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Vec<u8> {
    let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    let mut req = format!("{method} {target} HTTP/1.1\r\n");
    if !has("host") {
        req.push_str("Host: localhost\r\n");
    }
    for (k, v) in headers {
        req.push_str(k);
        req.push_str(": ");
        req.push_str(v);
        req.push_str("\r\n");
    }
    if let Some(b) = body
        && !has("transfer-encoding")
        && !has("content-length")
    {
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    if let Some(b) = body {
        bytes.extend_from_slice(b);
    }
    bytes
}

/// One request on a fresh connection with "Connection: close" (unless
/// `headers` has a Connection header).
pub fn request(
    addr: &Addr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> io::Result<Response> {
    let mut conn = Conn::connect(addr)?;
    if headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("connection"))
    {
        conn.request(method, target, headers, body)
    } else {
        let mut h: Vec<(&str, &str)> = headers.to_vec();
        h.push(("Connection", "close"));
        conn.request(method, target, &h, body)
    }
}

/// GET `target` on a fresh connection with "Connection: close".
pub fn get(addr: &Addr, target: &str) -> io::Result<Response> {
    request(addr, "GET", target, &[], None)
}

/// GET `target` on a fresh connection, which must answer 200: the body as text (panics
/// otherwise, naming the target and the address).
pub fn get_text(addr: &Addr, target: &str) -> String {
    let r = get(addr, target).unwrap_or_else(|e| panic!("GET {target} on {addr:?}: {e}"));
    assert_eq!(r.status, 200, "GET {target}: {}", r.text());
    r.text()
}

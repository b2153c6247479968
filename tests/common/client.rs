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
use std::path::PathBuf;
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

fn is_timeout(e: &io::Error) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::thread;

    /// What the scripted server does after writing its canned responses.
    #[derive(Clone, Copy)]
    enum After {
        Close,
        /// Keep the connection open this long, then close.
        Linger(Duration),
    }

    /// Reads one request (head + Content-Length body) from a raw stream.
    fn read_request(s: &mut TcpStream) -> Option<Vec<u8>> {
        let mut req = Vec::new();
        let mut byte = [0u8; 1];
        while !req.ends_with(b"\r\n\r\n") {
            match s.read(&mut byte) {
                Ok(1) => req.push(byte[0]),
                _ => return None,
            }
        }
        let head = String::from_utf8_lossy(&req).to_ascii_lowercase();
        let cl = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse::<usize>().unwrap())
            .unwrap_or(0);
        let mut body = vec![0u8; cl];
        s.read_exact(&mut body).ok()?;
        req.extend_from_slice(&body);
        Some(req)
    }

    /// A one-connection scripted server: for each canned response, reads one
    /// request and writes the bytes. Received requests are sent on the channel.
    fn scripted(responses: Vec<&'static [u8]>, after: After) -> (Addr, mpsc::Receiver<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = Addr::Tcp(listener.local_addr().unwrap());
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            for r in responses {
                let Some(req) = read_request(&mut s) else {
                    return;
                };
                let _ = tx.send(req);
                if s.write_all(r).is_err() {
                    return;
                }
            }
            if let After::Linger(d) = after {
                thread::sleep(d);
            }
        });
        (addr, rx)
    }

    fn one(resp: &'static [u8], method: &str) -> io::Result<Response> {
        let (addr, _rx) = scripted(vec![resp], After::Close);
        let mut c = Conn::connect(&addr).unwrap();
        c.request(method, "/", &[], None)
    }

    fn err_kind(resp: &'static [u8]) -> ErrorKind {
        match one(resp, "GET") {
            Ok(r) => panic!("expected an error, got {r:?}"),
            Err(e) => e.kind(),
        }
    }

    #[test]
    fn content_length_keep_alive() {
        let (addr, rx) = scripted(
            vec![
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\n\r\nhello",
                b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            ],
            After::Linger(Duration::from_secs(2)),
        );
        let mut c = Conn::connect(&addr).unwrap();
        let r = c
            .request("POST", "/p?q=1", &[("X-Test", "yes")], Some(b"abc"))
            .unwrap();
        assert_eq!(r.version, "HTTP/1.1");
        assert_eq!((r.status, r.reason.as_str()), (200, "OK"));
        assert_eq!(r.body, b"hello");
        assert!(!r.chunked);
        assert_eq!(r.header("content-LENGTH"), Some("5"));
        assert_eq!(r.header_all("x-a"), vec!["1", "2"]);
        assert_eq!(r.header("missing"), None);
        let req = rx.recv().unwrap();
        assert_eq!(
            req,
            b"POST /p?q=1 HTTP/1.1\r\nHost: localhost\r\nX-Test: yes\r\nContent-Length: 3\r\n\r\nabc"
        );
        let r = c.request("GET", "/two", &[], None).unwrap();
        assert_eq!(r.status, 404);
        assert!(r.body.is_empty());
        assert!(!c.peer_closed(Duration::from_millis(100)));
    }

    #[test]
    fn chunked_body() {
        let r = one(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n1;ext=1\r\n \r\nA \t;x\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n",
            "GET",
        )
        .unwrap();
        assert!(r.chunked);
        assert_eq!(r.body, b"hello 0123456789");
        assert_eq!(r.chunk_sizes, vec![5, 1, 10]);
        assert_eq!(r.trailers, vec![("X-Trailer".to_string(), "t".to_string())]);
    }

    #[test]
    fn chunked_then_next_response_on_same_conn() {
        let (addr, _rx) = scripted(
            vec![
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            ],
            After::Close,
        );
        let mut c = Conn::connect(&addr).unwrap();
        assert_eq!(c.request("GET", "/", &[], None).unwrap().body, b"abc");
        assert_eq!(c.request("GET", "/", &[], None).unwrap().body, b"ok");
        assert!(c.peer_closed(Duration::from_secs(5)));
    }

    #[test]
    fn large_bodies_across_buffer_refills() {
        let big: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        let mut sizes = Vec::new();
        for part in big.chunks(7_777) {
            chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            chunked.extend_from_slice(part);
            chunked.extend_from_slice(b"\r\n");
            sizes.push(part.len());
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let mut cl =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", big.len()).into_bytes();
        cl.extend_from_slice(&big);
        let (addr, _rx) = scripted(vec![chunked.leak(), cl.leak()], After::Close);
        let mut c = Conn::connect(&addr).unwrap();
        let r = c.request("GET", "/", &[], None).unwrap();
        assert_eq!(r.chunk_sizes, sizes);
        assert!(r.body == big);
        let r = c.request("GET", "/", &[], None).unwrap();
        assert!(r.body == big);
    }

    #[test]
    fn close_delimited_body() {
        let r = one(b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\nuntil the end", "GET").unwrap();
        assert_eq!(r.version, "HTTP/1.0");
        assert_eq!(r.text(), "until the end");
    }

    #[test]
    fn head_has_no_body() {
        let (addr, _rx) = scripted(
            vec![
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                b"HTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx",
            ],
            After::Close,
        );
        let mut c = Conn::connect(&addr).unwrap();
        let r = c.request("HEAD", "/", &[], None).unwrap();
        assert_eq!(r.header("content-length"), Some("100"));
        assert!(r.body.is_empty());
        let r = c.request("head", "/", &[], None).unwrap();
        assert!(r.body.is_empty() && !r.chunked);
        let r = c.request("GET", "/", &[], None).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (201, &b"x"[..]));
    }

    #[test]
    fn skips_100_continue() {
        let r = one(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\n\
              HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone",
            "POST",
        )
        .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.interim, vec![100, 103]);
        assert_eq!(r.body, b"done");
    }

    #[test]
    fn no_body_for_204_and_304() {
        let (addr, _rx) = scripted(
            vec![
                b"HTTP/1.1 204 No Content\r\nX: y\r\n\r\n",
                b"HTTP/1.1 304 Not Modified\r\nETag: \"a\"\r\nContent-Length: 10\r\n\r\n",
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nend",
            ],
            After::Close,
        );
        let mut c = Conn::connect(&addr).unwrap();
        let r = c.request("GET", "/", &[], None).unwrap();
        assert_eq!((r.status, r.reason.as_str()), (204, "No Content"));
        assert!(r.body.is_empty());
        let r = c.request("GET", "/", &[], None).unwrap();
        assert_eq!(r.status, 304);
        assert!(r.body.is_empty());
        assert_eq!(c.request("GET", "/", &[], None).unwrap().text(), "end");
    }

    #[test]
    fn empty_reason_phrase() {
        let r = one(b"HTTP/1.1 299 \r\nContent-Length: 0\r\n\r\n", "GET").unwrap();
        assert_eq!((r.status, r.reason.as_str()), (299, ""));
    }

    #[test]
    fn malformed_status_lines() {
        for bad in [
            &b"HTTP/1.1 20 OK\r\n\r\n"[..],
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/2 200 OK\r\n\r\n",
            b"HTTP/1.1  200 OK\r\n\r\n",
            b"HTTP/1.1 200\r\n\r\n",
            b"HTTP/1.1 600 Nope\r\n\r\n",
            b"http/1.1 200 OK\r\n\r\n",
            b"garbage\r\n\r\n",
            b"HTTP/1.1 200 OK\n\n",
        ] {
            let (addr, _rx) = scripted(vec![bad], After::Close);
            let mut c = Conn::connect(&addr).unwrap();
            let e = c.request("GET", "/", &[], None).unwrap_err();
            assert_eq!(
                e.kind(),
                ErrorKind::InvalidData,
                "{:?}: {e}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn malformed_headers() {
        assert_eq!(
            err_kind(b"HTTP/1.1 200 OK\r\nNoColon\r\n\r\n"),
            ErrorKind::InvalidData
        );
        assert_eq!(
            err_kind(b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n"),
            ErrorKind::InvalidData
        );
        assert_eq!(
            err_kind(b"HTTP/1.1 200 OK\r\nA: b\r\n folded\r\n\r\n"),
            ErrorKind::InvalidData
        );
        assert_eq!(
            err_kind(b"HTTP/1.1 200 OK\r\nA: b\rc\r\n\r\n"),
            ErrorKind::InvalidData
        );
        assert_eq!(
            err_kind(b"HTTP/1.1 200 OK\r\nA: b\x01\r\n\r\n"),
            ErrorKind::InvalidData
        );
    }

    #[test]
    fn bad_framing_headers() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1, 1\r\n\r\nx",
            b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
        ] {
            let (addr, _rx) = scripted(vec![bad], After::Close);
            let mut c = Conn::connect(&addr).unwrap();
            let e = c.request("GET", "/", &[], None).unwrap_err();
            assert_eq!(
                e.kind(),
                ErrorKind::InvalidData,
                "{:?}: {e}",
                String::from_utf8_lossy(bad)
            );
        }
        // Equal duplicate Content-Length values are tolerated.
        let r = one(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
            "GET",
        )
        .unwrap();
        assert_eq!(r.body, b"x");
    }

    #[test]
    fn bad_chunks() {
        let base = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        for (chunks, kind) in [
            ("zz\r\nab\r\n0\r\n\r\n", ErrorKind::InvalidData),
            ("\r\n", ErrorKind::InvalidData),
            ("-1\r\n", ErrorKind::InvalidData),
            ("0x2\r\nab\r\n0\r\n\r\n", ErrorKind::InvalidData),
            ("2 junk\r\nab\r\n0\r\n\r\n", ErrorKind::InvalidData),
            ("11111111111111111\r\n", ErrorKind::InvalidData),
            ("2\r\nabc\r\n0\r\n\r\n", ErrorKind::InvalidData),
            ("2\nab\n0\n\n", ErrorKind::InvalidData),
            ("5\r\nab", ErrorKind::UnexpectedEof),
            ("2\r\nab\r\n", ErrorKind::UnexpectedEof),
            ("2\r\nab\r\n0\r\n", ErrorKind::UnexpectedEof),
            ("", ErrorKind::UnexpectedEof),
        ] {
            let resp: &'static [u8] = format!("{base}{chunks}").into_bytes().leak();
            let (addr, _rx) = scripted(vec![resp], After::Close);
            let mut c = Conn::connect(&addr).unwrap();
            let e = c.request("GET", "/", &[], None).unwrap_err();
            assert_eq!(e.kind(), kind, "{chunks:?}: {e}");
        }
    }

    #[test]
    fn eof_errors() {
        assert_eq!(
            err_kind(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"),
            ErrorKind::UnexpectedEof
        );
        assert_eq!(err_kind(b""), ErrorKind::UnexpectedEof);
        assert_eq!(
            err_kind(b"HTTP/1.1 200 OK\r\nContent-Le"),
            ErrorKind::UnexpectedEof
        );
        assert_eq!(err_kind(b"HTTP/1.1 200 O"), ErrorKind::UnexpectedEof);
    }

    #[test]
    fn read_timeout_is_an_error_not_a_hang() {
        let (addr, _rx) = scripted(
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"],
            After::Linger(Duration::from_secs(3)),
        );
        let mut c = Conn::connect(&addr).unwrap();
        c.set_timeout(Duration::from_millis(200));
        let e = c.request("GET", "/", &[], None).unwrap_err();
        assert!(is_timeout(&e), "{e:?}");
    }

    #[test]
    fn module_request_sends_connection_close() {
        let (addr, rx) = scripted(
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"],
            After::Close,
        );
        let r = get(&addr, "/x").unwrap();
        assert_eq!(r.text(), "hi");
        assert_eq!(
            rx.recv().unwrap(),
            b"GET /x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn custom_host_and_transfer_encoding_are_respected() {
        let req = build_request(
            "POST",
            "/",
            &[("host", "example"), ("Transfer-Encoding", "chunked")],
            Some(b"1\r\na\r\n0\r\n\r\n"),
        );
        assert_eq!(
            req,
            b"POST / HTTP/1.1\r\nhost: example\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n"
        );
    }

    #[test]
    fn peer_closed_detects_close_and_open() {
        let (addr, _rx) = scripted(
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"],
            After::Linger(Duration::from_millis(500)),
        );
        let mut c = Conn::connect(&addr).unwrap();
        c.request("GET", "/", &[], None).unwrap();
        assert!(!c.peer_closed(Duration::from_millis(100)));
        assert!(c.peer_closed(Duration::from_secs(5)));
    }

    #[test]
    fn peer_closed_keeps_late_data() {
        let (addr, _rx) = scripted(vec![b"HTTP/1.1 408 Request Timeout\r\n\r\n"], After::Close);
        let mut c = Conn::connect(&addr).unwrap();
        c.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert!(c.peer_closed(Duration::from_secs(5)));
        assert_eq!(c.buffered(), b"HTTP/1.1 408 Request Timeout\r\n\r\n");
    }

    #[test]
    fn json_ok() {
        let r = one(
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{\"a\": 1}\n",
            "GET",
        )
        .unwrap();
        assert_eq!(r.json()["a"], 1);
    }

    #[test]
    #[should_panic(expected = "not json at all")]
    fn json_panics_with_body() {
        let r = Response {
            body: b"not json at all".to_vec(),
            ..Default::default()
        };
        r.json();
    }

    #[test]
    fn unix_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let t = thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = Vec::new();
            let mut b = [0u8; 1];
            while !buf.ends_with(b"\r\n\r\n") {
                s.read_exact(&mut b).unwrap();
                buf.push(b[0]);
            }
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nunix")
                .unwrap();
        });
        let r = get(&Addr::Unix(path), "/").unwrap();
        assert_eq!(r.text(), "unix");
        t.join().unwrap();
    }

    #[test]
    fn addr_parse_and_display() {
        let a = Addr::parse("http://127.0.0.1:8000").unwrap();
        assert_eq!(a, Addr::Tcp("127.0.0.1:8000".parse().unwrap()));
        assert_eq!(a.port(), Some(8000));
        assert_eq!(a.to_string(), "http://127.0.0.1:8000");
        assert_eq!(
            Addr::parse("http://[::1]:9/").unwrap(),
            Addr::Tcp("[::1]:9".parse().unwrap())
        );
        assert_eq!(
            Addr::parse("unix:/tmp/x.sock").unwrap(),
            Addr::Unix("/tmp/x.sock".into())
        );
        assert_eq!(
            Addr::parse("unix:///tmp/x.sock").unwrap(),
            Addr::Unix("/tmp/x.sock".into())
        );
        assert_eq!(
            Addr::Unix("/tmp/x.sock".into()).to_string(),
            "unix:/tmp/x.sock"
        );
        assert_eq!(Addr::parse("unix:"), None);
        assert_eq!(Addr::parse("nonsense"), None);
    }
}

//! Parsing a request head, strictly (RFC 9112): the request line by hand, the header fields by
//! `httparse`, then the checks that decide how the message is framed.
//!
//! Why by hand for the request line: what must be rejected (a method that is not a token,
//! `GET *`, an authority-form target outside CONNECT, bare LF) and what must be accepted (`"` and
//! other harmless bytes in the target, `HTTP/1.2` as 1.1) differ from any parser's defaults. The
//! parsed head keeps the received bytes ([`Head::buf`]) and ranges into them, so the environ and
//! the access log read the client's own bytes without a header map in between.

use bytes::Bytes;

use super::limits::Limits;

/// Why a head was refused: the status to answer and a reason for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub status: u16,
    pub reason: &'static str,
}

const fn reject(status: u16, reason: &'static str) -> Reject {
    Reject { status, reason }
}

/// The HTTP version of a request (1.x with x ≥ 1 is 1.1, as RFC 9110 §2.5 says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// Methods the server treats specially, and the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Connect,
    Other,
}

/// A byte range into [`Head::buf`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    fn of(base: &[u8], part: &[u8]) -> Span {
        let start = part.as_ptr() as usize - base.as_ptr() as usize;
        Span {
            start: start as u32,
            end: (start + part.len()) as u32,
        }
    }
}

/// One header field: name and value ranges (the value without surrounding whitespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub name: Span,
    pub value: Span,
}

/// How the request body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// A parsed, validated request head.
#[derive(Debug, Clone)]
pub struct Head {
    /// The head's bytes as received (request line through the empty line).
    pub buf: Bytes,
    pub method: Method,
    method_span: Span,
    target_span: Span,
    pub version: Version,
    pub fields: Vec<Field>,
    pub framing: Framing,
    /// The client asked for the connection to stay open (HTTP/1.1 default, 1.0 keep-alive).
    pub keep_alive: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    /// Index in `fields` of the Host field.
    pub host: Option<usize>,
    /// Whether any header name starts with `x-forwarded-` (the proxy rules look only then).
    pub forwarded: bool,
    /// Index in `fields` of the last `SCRIPT_NAME` field (a proxy's, `--forwarder-headers`).
    pub script_name: Option<usize>,
}

impl Head {
    #[inline]
    fn bytes(&self, s: Span) -> &[u8] {
        &self.buf[s.start as usize..s.end as usize]
    }

    pub fn method_str(&self) -> &str {
        // A token: ASCII by construction.
        std::str::from_utf8(self.bytes(self.method_span)).unwrap_or("")
    }

    /// The request target exactly as received (visible ASCII and obs-text bytes).
    pub fn target(&self) -> &[u8] {
        self.bytes(self.target_span)
    }

    /// The target as text for logs and messages (lossy for bytes ≥ 0x80).
    pub fn target_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.target())
    }

    #[inline]
    pub fn name(&self, f: &Field) -> &[u8] {
        self.bytes(f.name)
    }

    #[inline]
    pub fn value(&self, f: &Field) -> &[u8] {
        self.bytes(f.value)
    }

    /// Every value of the header `name` (case-insensitive), in order.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields
            .iter()
            .filter(move |f| self.name(f).eq_ignore_ascii_case(name.as_bytes()))
            .map(move |f| self.value(f))
    }

    pub fn host(&self) -> Option<&[u8]> {
        self.host.map(|i| self.value(&self.fields[i]))
    }
}

/// What [`parse`] found in the buffer.
#[derive(Debug)]
pub enum Parsed {
    /// A complete head of `len` bytes (the caller splits them off its buffer).
    Complete(Head),
    /// More bytes are needed; `scanned` bytes are known to contain no end of head.
    Partial { scanned: usize },
}

/// Empty lines (CRLF) allowed before a request line (RFC 9112 §2.2: a client may send one after
/// a body); more is not a request.
const MAX_LEADING_CRLF: usize = 8;

/// Bytes of leading CRLFs at the start of `buf` (a keep-alive client's stray line ends).
pub fn leading_crlf(buf: &[u8]) -> usize {
    let mut n = 0;
    while n + 1 < buf.len() && buf[n] == b'\r' && buf[n + 1] == b'\n' && n < 2 * MAX_LEADING_CRLF {
        n += 2;
    }
    n
}

/// The end of a head.
static HEAD_END: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\r\n\r\n"));

/// Looks for a complete head at the start of `buf` (leading CRLFs already removed), from
/// `scanned` on. Returns the head's length when complete.
///
/// A complete head (the usual case: it arrived in one read) is found with one search for its
/// end; [`parse`] then checks it whole (the request line's length, bare LFs). Only an
/// incomplete one is scanned line by line here, so that a request line over its limit or a
/// bare LF is refused before the rest of the head arrives.
pub fn find_end(buf: &[u8], scanned: usize, limits: &Limits) -> Result<Option<usize>, Reject> {
    let from = scanned.saturating_sub(3);
    if let Some(i) = HEAD_END.find(&buf[from..]) {
        return Ok(Some(from + i + 4));
    }
    // The request line alone must fit its limit, even before its end has arrived.
    let line_end = memchr::memchr(b'\n', buf);
    let line_len = line_end.unwrap_or(buf.len());
    if limits.line > 0 && line_len > limits.line + 1 {
        return Err(reject(414, "request line too long"));
    }
    let mut from = from;
    while let Some(i) = memchr::memchr(b'\n', &buf[from..]) {
        let at = from + i;
        if at == 0 || buf[at - 1] != b'\r' {
            return Err(reject(400, "bare LF in the request head"));
        }
        from = at + 1;
    }
    if buf.len() > limits.max_head_bytes() {
        return Err(reject(431, "request head too large"));
    }
    Ok(None)
}

/// Bytes a token (a method, a header name) may hold (RFC 9110 §5.6.2), as a table: one load
/// per byte.
pub const TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        i += 1;
    }
    t
};

/// Bytes of a Host's reg-name or IPv4 address (RFC 3986 §3.2.2: unreserved, sub-delims, `%`).
const HOST_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            );
        i += 1;
    }
    t
};

/// The number of LFs minus the number of CRs in `b`, 64 bytes at a time (the last block padded
/// with zeros) into byte counters, which the compiler turns into vector compares.
fn lf_minus_cr(b: &[u8]) -> isize {
    fn block(c: &[u8; 64]) -> isize {
        // At most 64 either way: an i8 holds it.
        let mut d = 0i8;
        for &x in c {
            d = d
                .wrapping_add(i8::from(x == b'\n'))
                .wrapping_sub(i8::from(x == b'\r'));
        }
        d as isize
    }
    let mut chunks = b.chunks_exact(64);
    let mut total = 0;
    for c in &mut chunks {
        total += block(c.try_into().expect("64 bytes"));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut pad = [0u8; 64];
        pad[..rest.len()].copy_from_slice(rest);
        total += block(&pad);
    }
    total
}

fn is_tchar(b: u8) -> bool {
    TCHAR[b as usize]
}

/// Bytes allowed in a request target: visible ASCII except nothing Gunicorn refuses, and
/// obs-text (decoded as latin-1 later). Spaces and controls end or break the line.
fn is_target_byte(b: u8) -> bool {
    b > 0x20 && b != 0x7f
}

fn parse_version(v: &[u8]) -> Result<Version, Reject> {
    match v {
        b"HTTP/1.1" => Ok(Version::Http11),
        b"HTTP/1.0" => Ok(Version::Http10),
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            match major {
                b'1' => Ok(Version::Http11),
                b'0' => Err(reject(505, "HTTP/0.x is not supported")),
                _ => Err(reject(505, "HTTP version not supported")),
            }
        }
        _ => Err(reject(400, "invalid HTTP version")),
    }
}

fn method_of(m: &[u8]) -> Method {
    match m {
        b"GET" => Method::Get,
        b"HEAD" => Method::Head,
        b"POST" => Method::Post,
        b"PUT" => Method::Put,
        b"DELETE" => Method::Delete,
        b"OPTIONS" => Method::Options,
        b"CONNECT" => Method::Connect,
        _ => Method::Other,
    }
}

/// A Host value: `reg-name / IPv4 / [IP-literal]` with an optional `:port` (RFC 3986 §3.2.2),
/// or empty.
pub fn valid_host(h: &[u8]) -> bool {
    let (host, port) = if let Some(rest) = h.strip_prefix(b"[") {
        let Some(close) = rest.iter().position(|&b| b == b']') else {
            return false;
        };
        let lit = &rest[..close];
        if lit.is_empty()
            || !lit
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.' | b'v' | b'V'))
        {
            return false;
        }
        match &rest[close + 1..] {
            [] => return true,
            [b':', port @ ..] => (&b""[..], port),
            _ => return false,
        }
    } else {
        match h.iter().rposition(|&b| b == b':') {
            Some(i) => (&h[..i], &h[i + 1..]),
            None => (h, &b""[..]),
        }
    };
    let reg_name_ok = host.iter().all(|&b| HOST_BYTE[b as usize]);
    reg_name_ok
        && port.iter().all(u8::is_ascii_digit)
        && (port.len() < 5 || (port.len() == 5 && port <= &b"65535"[..]))
}

/// The authority of an absolute-form target (`http://authority/...`, scheme in any case).
pub fn absolute_authority(target: &[u8]) -> Option<&[u8]> {
    let rest = if starts_with_ignore_case(target, b"http://") {
        &target[7..]
    } else if starts_with_ignore_case(target, b"https://") {
        &target[8..]
    } else {
        return None;
    };
    let end = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?' || b == b'#')
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Parses a complete head (`buf` is exactly the head, ending in CRLF CRLF).
pub fn parse(buf: Bytes, limits: &Limits) -> Result<Head, Reject> {
    let b = &buf[..];
    let line_end = memchr::memchr(b'\n', b).ok_or(reject(400, "no request line"))?;
    if limits.line > 0 && line_end > limits.line + 1 {
        return Err(reject(414, "request line too long"));
    }
    if line_end == 0 || b[line_end - 1] != b'\r' {
        return Err(reject(400, "bare LF in the request head"));
    }
    let line = &b[..line_end - 1];
    let rest = &b[line_end + 1..];
    // httparse takes a bare LF for a line end, and refuses a CR that no LF follows: so every
    // line of the fields ends in CRLF exactly when there are as many CRs as LFs.
    if lf_minus_cr(rest) != 0 {
        return Err(reject(400, "bare LF in the request head"));
    }
    let sp1 = memchr::memchr(b' ', line).ok_or(reject(400, "malformed request line"))?;
    let method = &line[..sp1];
    let after = &line[sp1 + 1..];
    let sp2 = memchr::memchr(b' ', after).ok_or(reject(400, "malformed request line"))?;
    let target = &after[..sp2];
    let version = &after[sp2 + 1..];
    if method.is_empty() || !method.iter().all(|&c| is_tchar(c)) {
        return Err(reject(400, "invalid method"));
    }
    if target.is_empty() || !target.iter().all(|&c| is_target_byte(c)) {
        return Err(reject(400, "invalid request target"));
    }
    let version = parse_version(version)?;
    let m = method_of(method);
    match target[0] {
        b'/' => {}
        b'*' if target.len() == 1 => {
            if m != Method::Options {
                return Err(reject(400, "asterisk-form target outside OPTIONS"));
            }
        }
        _ if starts_with_ignore_case(target, b"http://")
            || starts_with_ignore_case(target, b"https://") =>
        {
            if m == Method::Connect {
                return Err(reject(400, "CONNECT needs an authority-form target"));
            }
            // The target's authority is the request's host (RFC 9112 §3.2.2): checked as a Host.
            match absolute_authority(target) {
                Some(a) if !a.is_empty() && !a.contains(&b'@') && valid_host(a) => {}
                _ => return Err(reject(400, "invalid authority in an absolute-form target")),
            }
        }
        _ => {
            if m != Method::Connect {
                return Err(reject(400, "authority-form target outside CONNECT"));
            }
        }
    }
    if m == Method::Connect {
        if target[0] == b'/' || target[0] == b'*' {
            return Err(reject(400, "CONNECT needs an authority-form target"));
        }
        // A well-formed CONNECT asks for a tunnel, which an application server does not make
        // (and a WSGI app could not be given: it has no path).
        return Err(reject(
            501,
            "CONNECT is not supported (ferricorn is not a proxy)",
        ));
    }

    // Header fields.
    // Most heads have a few fields: their slots live on the stack; more are parsed again with
    // room for the limit.
    let mut storage_small = [httparse::EMPTY_HEADER; 32];
    let mut storage_big;
    let small = limits.fields < storage_small.len();
    let first_try = if small {
        &mut storage_small[..limits.fields + 1]
    } else {
        &mut storage_small[..]
    };
    let parsed = match httparse::parse_headers(rest, first_try) {
        Err(httparse::Error::TooManyHeaders) if !small => {
            storage_big = vec![httparse::EMPTY_HEADER; limits.fields + 1];
            httparse::parse_headers(rest, &mut storage_big)
        }
        r => r,
    };
    let parsed = match parsed {
        // The fields end where the head does (an earlier end would be at a bare LF).
        Ok(httparse::Status::Complete((n, h))) if n == rest.len() => h,
        Ok(httparse::Status::Complete(_)) => {
            return Err(reject(400, "bare LF in the request head"));
        }
        Ok(httparse::Status::Partial) => return Err(reject(400, "malformed header fields")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(reject(431, "too many header fields"));
        }
        Err(_) => return Err(reject(400, "malformed header field")),
    };
    if parsed.len() > limits.fields {
        return Err(reject(431, "too many header fields"));
    }
    let mut fields = Vec::with_capacity(parsed.len());
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut te_seen = false;
    let mut conn_close = false;
    let mut conn_keep = false;
    let mut expect_continue = false;
    let mut host = None;
    let mut content_type = false;
    let mut script_name = None;
    let mut forwarded = false;
    for h in parsed.iter() {
        let name = h.name.as_bytes();
        // httparse has already trimmed the value's surrounding whitespace.
        let value = h.value;
        if limits.field_size > 0 && name.len() + 2 + h.value.len() > limits.field_size {
            return Err(reject(431, "header field too large"));
        }
        let idx = fields.len();
        fields.push(Field {
            name: Span::of(b, name),
            value: Span::of(b, value),
        });
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => {
                if host.is_some() {
                    return Err(reject(400, "more than one Host header"));
                }
                if !valid_host(value) {
                    return Err(reject(400, "invalid Host header"));
                }
                host = Some(idx);
            }
            6 if name.eq_ignore_ascii_case(b"expect") => {
                if value.eq_ignore_ascii_case(b"100-continue") {
                    expect_continue = true;
                } else {
                    return Err(reject(417, "unsupported Expect"));
                }
            }
            12 if name.eq_ignore_ascii_case(b"content-type") => {
                // A singleton field (RFC 9110 §5.3): two values mean different things to
                // different recipients (Gunicorn refuses them too).
                if content_type {
                    return Err(reject(400, "more than one Content-Type header"));
                }
                content_type = true;
            }
            11 if name.eq_ignore_ascii_case(b"script_name") => script_name = Some(idx),
            10 if name.eq_ignore_ascii_case(b"connection") => {
                for t in value.split(|&c| c == b',') {
                    let t = trim(t);
                    if t.eq_ignore_ascii_case(b"close") {
                        conn_close = true;
                    } else if t.eq_ignore_ascii_case(b"keep-alive") {
                        conn_keep = true;
                    }
                }
            }
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                if content_length.is_some() {
                    return Err(reject(400, "more than one Content-Length"));
                }
                if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
                    return Err(reject(400, "invalid Content-Length"));
                }
                content_length = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
                if content_length.is_none() {
                    return Err(reject(400, "invalid Content-Length"));
                }
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                for t in value.split(|&c| c == b',') {
                    let t = trim(t);
                    if t.is_empty() {
                        continue;
                    }
                    if chunked {
                        // Anything after chunked (chunked twice included) cannot be framed.
                        return Err(reject(400, "chunked must be the last transfer coding"));
                    }
                    if t.eq_ignore_ascii_case(b"chunked") {
                        chunked = true;
                    } else if t.eq_ignore_ascii_case(b"identity")
                        || t.eq_ignore_ascii_case(b"gzip")
                        || t.eq_ignore_ascii_case(b"deflate")
                        || t.eq_ignore_ascii_case(b"compress")
                        || t.eq_ignore_ascii_case(b"x-gzip")
                    {
                        return Err(reject(501, "unsupported transfer coding"));
                    } else {
                        return Err(reject(400, "invalid transfer coding"));
                    }
                }
                te_seen = true;
            }
            _ => {}
        }
        if name.len() > 12 && name[..12].eq_ignore_ascii_case(b"x-forwarded-") {
            forwarded = true;
        }
    }
    if te_seen && !chunked {
        return Err(reject(400, "Transfer-Encoding without chunked"));
    }
    if te_seen && version == Version::Http10 {
        return Err(reject(400, "Transfer-Encoding in an HTTP/1.0 request"));
    }
    if chunked && content_length.is_some() {
        return Err(reject(400, "both Content-Length and Transfer-Encoding"));
    }
    let framing = match (chunked, content_length) {
        (true, _) => Framing::Chunked,
        (false, Some(0)) | (false, None) => Framing::None,
        (false, Some(n)) => Framing::Length(n),
    };
    let keep_alive = match version {
        Version::Http11 => !conn_close,
        Version::Http10 => conn_keep && !conn_close,
    };
    Ok(Head {
        method: m,
        method_span: Span::of(b, method),
        target_span: Span::of(b, target),
        version,
        fields,
        framing,
        keep_alive,
        // An HTTP/1.0 client does not know 100 Continue (RFC 9110 §10.1.1): it sends the body.
        expect_continue: expect_continue && framing != Framing::None && version == Version::Http11,
        host,
        forwarded,
        script_name,
        buf,
    })
}

/// The path part (still percent-encoded; an absolute-form target loses its `scheme://authority`)
/// and the query of a request target.
pub fn split_target(target: &[u8]) -> (&[u8], &[u8]) {
    // A fragment is not the server's (clients should not send one; Gunicorn drops it too).
    let target = match memchr::memchr(b'#', target) {
        Some(i) => &target[..i],
        None => target,
    };
    let (p, q) = match memchr::memchr(b'?', target) {
        Some(i) => (&target[..i], &target[i + 1..]),
        None => (target, &b""[..]),
    };
    let p = if starts_with_ignore_case(p, b"http://") || starts_with_ignore_case(p, b"https://") {
        let rest = &p[p.iter().position(|&b| b == b'/').unwrap_or(0) + 2..];
        match memchr::memchr(b'/', rest) {
            Some(i) => &rest[i..],
            None => &b"/"[..],
        }
    } else {
        p
    };
    (p, q)
}

/// Percent-decodes a URL path into bytes (invalid escapes are kept as they are).
pub fn decode_path(raw: &[u8]) -> Vec<u8> {
    percent_encoding::percent_decode(raw).collect()
}

fn starts_with_ignore_case(s: &[u8], prefix: &[u8]) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// `s` without leading and trailing spaces and tabs.
pub fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|&c| c != b' ' && c != b'\t')
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|&c| c != b' ' && c != b'\t')
        .map_or(start, |i| i + 1);
    &s[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::for_tests()
    }

    fn head(raw: &str) -> Result<Head, Reject> {
        let b = raw.as_bytes();
        match find_end(b, 0, &limits())? {
            Some(n) => parse(Bytes::copy_from_slice(&b[..n]), &limits()),
            None => Err(reject(0, "incomplete")),
        }
    }

    fn status(raw: &str) -> u16 {
        match head(raw) {
            Ok(_) => 200,
            Err(r) => r.status,
        }
    }

    #[test]
    fn plain_get() {
        let h = head("GET /a?b HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\n").unwrap();
        assert_eq!(h.method, Method::Get);
        assert_eq!(h.target(), b"/a?b");
        assert_eq!(h.version, Version::Http11);
        assert_eq!(h.host(), Some(&b"x"[..]));
        assert_eq!(h.values("x-a").collect::<Vec<_>>(), [b"1"]);
        assert!(h.keep_alive);
        assert_eq!(h.framing, Framing::None);
    }

    #[test]
    fn strictness() {
        let base = |extra: &str| format!("POST / HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n"), 200);
        assert_eq!(
            status(&base("Content-Length: 3\r\nTransfer-Encoding: chunked\r\n")),
            400
        );
        assert_eq!(
            status(&base("Content-Length: 3\r\nContent-Length: 3\r\n")),
            400
        );
        assert_eq!(
            status(&base("Transfer-Encoding: chunked, chunked\r\n")),
            400
        );
        assert_eq!(
            status(&base(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"
            )),
            400
        );
        assert_eq!(status(&base("Content-Length: +3\r\n")), 400);
        assert_eq!(status("GET / HTTP/1.1\nHost: x\n\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: x\n\r\n"), 400);
        // Bare LFs before a CRLF CRLF (a head found whole, checked by parse).
        assert_eq!(status("GET / HTTP/1.1\nHost: x\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nA: b\nC: d\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nA: b\n\r\nC: d\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\n\nGET / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nA: b\r\r\n\r\n"), 400);
        assert_eq!(status("G@T / HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(status("GET * HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(status("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"), 200);
        assert_eq!(
            status("GET example.com:80 HTTP/1.1\r\nHost: x\r\n\r\n"),
            400
        );
        assert_eq!(
            status("CONNECT example.com:80 HTTP/1.1\r\nHost: x\r\n\r\n"),
            501
        );
        assert_eq!(status("CONNECT / HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(
            status(&base("Content-Type: a/b\r\nContent-Type: c/d\r\n")),
            400
        );
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a:65535\r\n\r\n"), 200);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a:65536\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a:99999\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a:080\r\n\r\n"), 200);
        assert_eq!(status("GET HTTP://h.example:81/x HTTP/1.1\r\n\r\n"), 200);
        assert_eq!(
            status("GET http://h:99999/ HTTP/1.1\r\nHost: x\r\n\r\n"),
            400
        );
        assert_eq!(status("GET http:///x HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(status("GET http://u@h/x HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(status(&base("Expect: fancy\r\n")), 417);
        assert_eq!(status("GET /a\"b|c{} HTTP/1.1\r\nHost: x\r\n\r\n"), 200);
        assert_eq!(status("GET / HTTP/1.2\r\nHost: x\r\n\r\n"), 200);
        assert_eq!(status("GET / HTTP/2.0\r\nHost: x\r\n\r\n"), 505);
        assert_eq!(status("GET / HTTX/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(status("GET  / HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nBad Header\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nX : y\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nX: a\0b\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nX: a\rb\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n"), 400);
    }

    #[test]
    fn framing_and_connection() {
        let h =
            head("POST / HTTP/1.0\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n").unwrap();
        assert_eq!(h.framing, Framing::Length(5));
        assert!(h.keep_alive);
        let h = head("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
            .unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        assert!(!h.keep_alive);
        assert_eq!(
            status("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
    }

    #[test]
    fn target_parts() {
        assert_eq!(
            split_target(b"/a%20b/c?x=1&y=%20"),
            (&b"/a%20b/c"[..], &b"x=1&y=%20"[..])
        );
        assert_eq!(split_target(b"http://h:1/p?q"), (&b"/p"[..], &b"q"[..]));
        assert_eq!(split_target(b"http://h:1"), (&b"/"[..], &b""[..]));
        assert_eq!(split_target(b"/a?b#c"), (&b"/a"[..], &b"b"[..]));
        assert_eq!(decode_path(b"/%zz%41"), b"/%zzA");
    }

    #[test]
    fn limits_apply() {
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(5000));
        assert_eq!(status(&long), 414);
        let mut many = String::from("GET / HTTP/1.1\r\n");
        for i in 0..101 {
            many.push_str(&format!("X-{i}: v\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(status(&many), 431);
        for n in [31, 32, 33, 100] {
            let mut h = String::from("GET / HTTP/1.1\r\n");
            for i in 0..n {
                h.push_str(&format!("X-{i}: v\r\n"));
            }
            h.push_str("\r\n");
            assert_eq!(head(&h).map(|h| h.fields.len()), Ok(n), "{n} fields");
        }
        assert_eq!(
            status(&format!(
                "GET / HTTP/1.1\r\nX: {}\r\n\r\n",
                "b".repeat(9000)
            )),
            431
        );
    }
}

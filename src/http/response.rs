//! Response heads: the app's header list validated and written straight into wire format
//! ([`ResponseHead::push`]), then framed by the connection ([`encode`]) so that a response can
//! never desynchronise the connection: the server alone decides `Content-Length` /
//! chunked / close-delimited, HEAD and 1xx/204/304 carry no body, hop-by-hop headers from the
//! app are dropped (with one warning per name), and the app's `Connection: close` is honoured.

use std::sync::Mutex;

use super::parse::Version;

/// Why a header from the app was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    InvalidName,
    InvalidValue,
    /// A `Content-Length` that is not a number.
    BadLength,
    /// Two `Content-Length` headers with different values.
    ConflictingLength,
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HeaderError::InvalidName => "invalid header name",
            HeaderError::InvalidValue => "invalid header value (control characters)",
            HeaderError::BadLength => "Content-Length is not a number",
            HeaderError::ConflictingLength => "conflicting Content-Length values",
        })
    }
}

/// A response head as the app gave it (validated), before framing.
#[derive(Debug, Clone, Default)]
pub struct ResponseHead {
    pub status: u16,
    /// The reason phrase, when it is not the canonical one (latin-1 characters: each is sent as
    /// its one byte).
    pub reason: Option<Box<str>>,
    /// `Name: value\r\n` lines, as the app gave them (minus what was dropped).
    pub lines: Vec<u8>,
    pub content_length: Option<u64>,
    /// The app said `Connection: close`.
    pub close: bool,
    has_server: bool,
    has_date: bool,
}

/// Bytes a header value may not hold: controls other than HTAB, and DEL.
const BAD_VALUE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = (i < 0x20 && i != b'\t' as usize) || i == 0x7f;
        i += 1;
    }
    t
};

/// A `Content-Length` value: digits only (after trimming), within `u64`.
fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &b in v {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}

/// Names of hop-by-hop headers (RFC 9110 §7.6.1 and the usual extras); only the connection
/// sets these. Compared by length first: most names are rejected without a byte compared.
fn hop_by_hop(name: &[u8], status: u16) -> bool {
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    match name.len() {
        2 => is("te"),
        7 => is("trailer") || (is("upgrade") && status != 101),
        8 => is("trailers"),
        10 => (is("connection") && status != 101) || is("keep-alive"),
        16 => is("proxy-connection"),
        17 => is("transfer-encoding"),
        18 => is("proxy-authenticate"),
        19 => is("proxy-authorization"),
        _ => false,
    }
}

/// Names already warned about (so a misbehaving app logs once per name, not per request).
static WARNED: Mutex<Vec<Box<[u8]>>> = Mutex::new(Vec::new());

fn warn_dropped(name: &[u8]) {
    let mut w = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    let lower: Box<[u8]> = name.to_ascii_lowercase().into();
    if w.len() >= 32 || w.contains(&lower) {
        return;
    }
    w.push(lower);
    tracing::warning_dropped(name);
}

/// Logging lives behind a tiny shim so the message is written once.
mod tracing {
    pub fn warning_dropped(name: &[u8]) {
        ::tracing::warn!(
            "the app set the hop-by-hop header {:?}: dropped (the server frames the connection; \
             logged once per name)",
            String::from_utf8_lossy(name)
        );
    }
}

impl ResponseHead {
    pub fn new(status: u16, reason: Option<Box<str>>) -> ResponseHead {
        ResponseHead {
            status,
            reason,
            lines: Vec::with_capacity(128),
            ..Default::default()
        }
    }

    /// Adds one header from the app (latin-1 bytes).
    pub fn push(&mut self, name: &[u8], value: &[u8]) -> Result<(), HeaderError> {
        // Without early exits: one table load per byte.
        let name_ok = name.iter().fold(!name.is_empty(), |ok, &b| {
            ok & super::parse::TCHAR[b as usize]
        });
        if !name_ok {
            return Err(HeaderError::InvalidName);
        }
        if value
            .iter()
            .fold(false, |bad, &b| bad | BAD_VALUE[b as usize])
        {
            return Err(HeaderError::InvalidValue);
        }
        if hop_by_hop(name, self.status) {
            if name.eq_ignore_ascii_case(b"connection")
                && value
                    .split(|&b| b == b',')
                    .any(|t| super::parse::trim(t).eq_ignore_ascii_case(b"close"))
            {
                self.close = true;
            }
            warn_dropped(name);
            return Ok(());
        }
        if name.len() == 14 && name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_length(super::parse::trim(value)).ok_or(HeaderError::BadLength)?;
            match self.content_length {
                Some(prev) if prev != n => return Err(HeaderError::ConflictingLength),
                Some(_) => return Ok(()), // an identical duplicate is the same header
                None => self.content_length = Some(n),
            }
            if (100..200).contains(&self.status) || self.status == 204 {
                // RFC 9110 §8.6: a server MUST NOT send Content-Length in a 1xx or 204.
                self.content_length = None;
                return Ok(());
            }
        } else if name.len() == 6 && name.eq_ignore_ascii_case(b"server") {
            self.has_server = true;
        } else if name.len() == 4 && name.eq_ignore_ascii_case(b"date") {
            self.has_date = true;
        }
        self.lines.reserve(name.len() + value.len() + 4);
        self.lines.extend_from_slice(name);
        self.lines.extend_from_slice(b": ");
        self.lines.extend_from_slice(value);
        self.lines.extend_from_slice(b"\r\n");
        Ok(())
    }

    /// The values of header `name` the app set (for `{header}o` in the access log).
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.lines.split(|&b| b == b'\n').filter_map(move |l| {
            let l = l.strip_suffix(b"\r")?;
            let i = l.iter().position(|&b| b == b':')?;
            l[..i]
                .eq_ignore_ascii_case(name.as_bytes())
                .then(|| super::parse::trim(&l[i + 1..]))
        })
    }
}

/// How a response body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// No body bytes at all (HEAD, 1xx, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// HTTP/1.0 without a length: the end of the body is the end of the connection.
    UntilClose,
}

/// Whether a status forbids a body.
pub fn bodiless(status: u16) -> bool {
    (100..200).contains(&status) || status == 204 || status == 304
}

/// Picks the framing: `known` is the body's length when the server has it all.
pub fn framing(
    head: &ResponseHead,
    is_head: bool,
    version: Version,
    known: Option<u64>,
) -> (Wire, Option<u64>) {
    // The length to declare, if any.
    let declared = head.content_length.or(known);
    if bodiless(head.status) {
        // 304 may repeat the length of what a GET would send; 1xx and 204 must not.
        let cl = if head.status == 304 {
            head.content_length
        } else {
            None
        };
        return (Wire::Empty, cl);
    }
    if is_head {
        return (Wire::Empty, declared);
    }
    match declared {
        Some(n) => (Wire::Length(n), Some(n)),
        None if version == Version::Http11 => (Wire::Chunked, None),
        None => (Wire::UntilClose, None),
    }
}

pub fn reason_for(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown")
}

/// Appends `n` in decimal (without the formatting machinery: this runs per response).
pub fn push_decimal(mut n: u64, out: &mut Vec<u8>) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Appends `n` in lower-case hex (a chunk size).
pub fn push_hex(mut n: usize, out: &mut Vec<u8>) {
    let mut buf = [0u8; 16];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Writes the status line and headers for `head` into `out`.
pub fn encode(
    head: &ResponseHead,
    wire: Wire,
    declared: Option<u64>,
    keep_alive: bool,
    version: Version,
    out: &mut Vec<u8>,
) {
    out.reserve(head.lines.len() + 128);
    out.extend_from_slice(b"HTTP/1.1 ");
    let mut code = [0u8; 3];
    code[0] = b'0' + (head.status / 100 % 10) as u8;
    code[1] = b'0' + (head.status / 10 % 10) as u8;
    code[2] = b'0' + (head.status % 10) as u8;
    out.extend_from_slice(&code);
    out.push(b' ');
    match &head.reason {
        Some(r) if r.is_ascii() => out.extend_from_slice(r.as_bytes()),
        // Latin-1 (PEP 3333): each character is one byte on the wire, not its UTF-8.
        Some(r) => out.extend(
            r.chars()
                .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?')),
        ),
        None => out.extend_from_slice(reason_for(head.status).as_bytes()),
    }
    out.extend_from_slice(b"\r\n");
    if !head.has_server {
        out.extend_from_slice(b"Server: ferricorn\r\n");
    }
    if !head.has_date {
        super::date::append(out);
    }
    // The app's own Content-Length line is in `lines`; the server adds one only when the app
    // gave none.
    out.extend_from_slice(&head.lines);
    if head.content_length.is_none()
        && let Some(n) = declared
    {
        out.extend_from_slice(b"Content-Length: ");
        push_decimal(n, out);
        out.extend_from_slice(b"\r\n");
    }
    if wire == Wire::Chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    }
    if head.status != 101 {
        if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if version == Version::Http10 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(head: &ResponseHead, wire: Wire, cl: Option<u64>, keep: bool) -> String {
        let mut out = Vec::new();
        encode(head, wire, cl, keep, Version::Http11, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn app_headers_written_through_hop_by_hop_dropped() {
        let mut h = ResponseHead::new(200, None);
        h.push(b"Content-Type", b"text/plain").unwrap();
        h.push(b"Connection", b"close").unwrap();
        h.push(b"Transfer-Encoding", b"chunked").unwrap();
        h.push(b"Content-Length", b"5").unwrap();
        h.push(b"Content-Length", b"5").unwrap();
        assert_eq!(
            h.push(b"Content-Length", b"6"),
            Err(HeaderError::ConflictingLength)
        );
        assert!(h.close);
        assert_eq!(h.content_length, Some(5));
        let (wire, cl) = framing(&h, false, Version::Http11, None);
        assert_eq!(wire, Wire::Length(5));
        let t = text(&h, wire, cl, false);
        assert!(t.starts_with("HTTP/1.1 200 OK\r\n"), "{t}");
        assert_eq!(t.matches("Content-Length: 5\r\n").count(), 1, "{t}");
        assert!(!t.contains("chunked"), "{t}");
        assert!(t.contains("Connection: close\r\n"), "{t}");
        assert_eq!(
            h.values("content-type").collect::<Vec<_>>(),
            [b"text/plain"]
        );
    }

    #[test]
    fn numbers() {
        let mut out = Vec::new();
        for n in [0u64, 7, 10, 12345, u64::MAX] {
            out.clear();
            push_decimal(n, &mut out);
            assert_eq!(out, n.to_string().as_bytes());
        }
        for n in [0usize, 9, 10, 255, 65536] {
            out.clear();
            push_hex(n, &mut out);
            assert_eq!(out, format!("{n:x}").as_bytes());
        }
    }

    #[test]
    fn invalid_headers() {
        let mut h = ResponseHead::new(200, None);
        assert_eq!(h.push(b"Bad Name", b"x"), Err(HeaderError::InvalidName));
        assert_eq!(h.push(b"X", b"a\r\nb"), Err(HeaderError::InvalidValue));
        assert_eq!(
            h.push(b"Content-Length", b"-1"),
            Err(HeaderError::BadLength)
        );
    }

    #[test]
    fn framing_rules() {
        let h = ResponseHead::new(200, None);
        assert_eq!(framing(&h, false, Version::Http11, None).0, Wire::Chunked);
        assert_eq!(
            framing(&h, false, Version::Http10, None).0,
            Wire::UntilClose
        );
        assert_eq!(
            framing(&h, true, Version::Http11, Some(3)),
            (Wire::Empty, Some(3))
        );
        let h = ResponseHead::new(204, None);
        assert_eq!(
            framing(&h, false, Version::Http11, Some(3)),
            (Wire::Empty, None)
        );
    }

    #[test]
    fn no_content_length_on_204_and_a_latin1_reason() {
        let mut h = ResponseHead::new(204, Some("Nö Content".into()));
        h.push(b"Content-Length", b"5").unwrap();
        let (wire, cl) = framing(&h, false, Version::Http11, None);
        let mut out = Vec::new();
        encode(&h, wire, cl, true, Version::Http11, &mut out);
        assert!(
            out.starts_with(b"HTTP/1.1 204 N\xf6 Content\r\n"),
            "{out:?}"
        );
        assert!(
            !String::from_utf8_lossy(&out).contains("Content-Length"),
            "{out:?}"
        );
        let mut h = ResponseHead::new(304, None);
        h.push(b"Content-Length", b"5").unwrap();
        assert_eq!(h.content_length, Some(5));
    }
}

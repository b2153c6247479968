//! The access log: Gunicorn's `--access-log-format` atoms, parsed once and rendered per request.
//!
//! | atom | meaning |
//! |---|---|
//! | `h` | remote address (`-` on a unix socket) |
//! | `l` | `-` |
//! | `u` | user name from HTTP Basic auth, else `-` |
//! | `t` | date of the request, `[23/Nov/2026:22:26:30 +0000]` |
//! | `r` | request line, `GET /path?q HTTP/1.1` |
//! | `m` `U` `q` `H` | method, URL path, query string, protocol |
//! | `s` | status |
//! | `B` `b` | response body length (`b`: `-` when nothing was sent) |
//! | `f` `a` | referer, user agent |
//! | `T` `M` `D` `L` | request time in s, ms, µs, and decimal seconds |
//! | `p` | process id, `<1234>` |
//! | `{header}i` `{header}o` | request / response header |
//! | `{var}e` | a WSGI environ variable |
//!
//! Values that come from the client are escaped (control bytes as `\xNN`), so a request cannot
//! forge log lines. [`AccessLog::emit`] writes one record per request, as a line to a file or
//! stream, or as a journald entry with its fields.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Duration;

use crate::logging::AccessOut;
use crate::proxy::Peer;
use base64::Engine as _;

/// Header values by name, for the `{header}i`/`{header}o`, `f`, `a` and `u` atoms.
pub trait Headers {
    /// Calls `f` with each value of `name` (lower-case), in order.
    fn each(&self, name: &str, f: &mut dyn FnMut(&[u8]));
}

impl Headers for http::HeaderMap {
    fn each(&self, name: &str, f: &mut dyn FnMut(&[u8])) {
        for v in self.get_all(name) {
            f(v.as_bytes());
        }
    }
}

/// The access log of a worker: its format and where lines go.
pub struct AccessLog {
    pub format: AccessFormat,
    pub out: AccessOut,
}

impl AccessLog {
    pub fn new(format: AccessFormat, out: AccessOut) -> AccessLog {
        AccessLog { format, out }
    }

    /// Whether a record needs the decoded path and the query.
    pub fn needs_path(&self) -> bool {
        self.format.needs_path() || matches!(self.out, AccessOut::Journal)
    }

    /// Writes the record of one finished request.
    pub fn emit(&self, rec: &AccessRecord<'_>) {
        let mut line = Vec::with_capacity(160);
        self.format.render(rec, &mut line);
        match &self.out {
            AccessOut::Sink(sink) => sink.write(&line),
            AccessOut::Journal => {
                let text = String::from_utf8_lossy(&line);
                let client = match rec.peer {
                    Peer::Tcp(addr) => addr.ip().to_string(),
                    Peer::Unix => String::new(),
                };
                let path = if rec.path.is_empty() {
                    rec.target.split('?').next().unwrap_or("")
                } else {
                    rec.path
                };
                tracing::info!(
                    target: crate::logging::ACCESS_TARGET,
                    CLIENT_ADDR = client.as_str(),
                    REQUEST_METHOD = rec.method,
                    REQUEST_PATH = path,
                    STATUS = rec.status,
                    BYTES = rec.sent,
                    DURATION_USEC = rec.duration.as_micros() as u64,
                    WORKER_PID = std::process::id(),
                    "{}",
                    text.trim_end()
                );
            }
        }
    }
}

/// One piece of a parsed format.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Lit(String),
    Atom(char),
    ReqHeader(String),
    RespHeader(String),
    Environ(String),
}

/// A parsed access log format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessFormat {
    segs: Vec<Seg>,
    /// `json`: one JSON object per request instead of a formatted line (see `logging::json`).
    json: bool,
}

/// The `--access-log-format` value that asks for JSON lines.
pub const JSON_FORMAT: &str = "json";

const ATOMS: &str = "hlutrmUqHsBbfaTMDLp";

impl AccessFormat {
    /// Parses Gunicorn's `%(atom)s` syntax; `%%` is a literal `%`.
    pub fn parse(fmt: &str) -> Result<Self, String> {
        if fmt.trim() == JSON_FORMAT {
            return Ok(AccessFormat {
                segs: Vec::new(),
                json: true,
            });
        }
        let mut segs = Vec::new();
        let mut lit = String::new();
        let mut rest = fmt;
        while let Some(i) = rest.find('%') {
            lit.push_str(&rest[..i]);
            rest = &rest[i + 1..];
            if let Some(r) = rest.strip_prefix('%') {
                lit.push('%');
                rest = r;
                continue;
            }
            let Some(r) = rest.strip_prefix('(') else {
                return Err(format!(
                    "a '%' must start an atom like %(h)s or be doubled (%%), near '%{}'",
                    rest.chars().take(8).collect::<String>()
                ));
            };
            let close = r.find(')').ok_or("an atom '%(' is not closed with ')s'")?;
            let name = &r[..close];
            let after = &r[close + 1..];
            let Some(after) = after.strip_prefix('s').or_else(|| after.strip_prefix('d')) else {
                return Err(format!(
                    "atom %({name}) must be followed by 's', as in %({name})s"
                ));
            };
            rest = after;
            if !lit.is_empty() {
                segs.push(Seg::Lit(std::mem::take(&mut lit)));
            }
            segs.push(parse_atom(name)?);
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            segs.push(Seg::Lit(lit));
        }
        Ok(AccessFormat { segs, json: false })
    }

    /// Whether rendering needs the decoded path or the query (`U`, `q`).
    pub fn needs_path(&self) -> bool {
        self.json
            || self
                .segs
                .iter()
                .any(|s| matches!(s, Seg::Atom('U') | Seg::Atom('q')))
    }

    /// The WSGI environ variables (lower-case) the format prints.
    pub fn environ_vars(&self) -> Vec<String> {
        self.segs
            .iter()
            .filter_map(|s| match s {
                Seg::Environ(v) => Some(v.clone()),
                _ => None,
            })
            .collect()
    }

    /// Appends one line (with its newline) for `rec` to `out`.
    pub fn render(&self, rec: &AccessRecord<'_>, out: &mut Vec<u8>) {
        if self.json {
            return super::json::access_line(rec, out);
        }
        for seg in &self.segs {
            match seg {
                Seg::Lit(s) => out.extend_from_slice(s.as_bytes()),
                Seg::Atom(c) => atom(*c, rec, out),
                Seg::ReqHeader(h) => header(rec.req_headers, h, out),
                Seg::RespHeader(h) => match rec.resp_headers {
                    Some(hs) => header(hs, h, out),
                    None => out.push(b'-'),
                },
                Seg::Environ(v) => match rec.environ.iter().find(|(k, _)| k == v) {
                    Some((_, val)) => escaped(val.as_bytes(), out),
                    None => out.push(b'-'),
                },
            }
        }
        out.push(b'\n');
    }
}

fn parse_atom(name: &str) -> Result<Seg, String> {
    if let Some(inner) = name.strip_prefix('{') {
        let (key, kind) = inner.rsplit_once('}').ok_or_else(|| {
            format!("atom %({name})s: expected {{name}}i, {{name}}o or {{name}}e")
        })?;
        let key = key.to_ascii_lowercase();
        return match kind {
            "i" => Ok(Seg::ReqHeader(key)),
            "o" => Ok(Seg::RespHeader(key)),
            "e" => Ok(Seg::Environ(key)),
            _ => Err(format!(
                "atom %({name})s: expected {{name}}i, {{name}}o or {{name}}e"
            )),
        };
    }
    let mut chars = name.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if ATOMS.contains(c) => Ok(Seg::Atom(c)),
        _ => Err(format!(
            "unknown atom %({name})s; known: h l u t r m U q H s B b f a T M D L p, \
             {{header}}i, {{header}}o, {{variable}}e"
        )),
    }
}

/// What the access log knows about one finished request.
pub struct AccessRecord<'a> {
    pub peer: Peer,
    pub method: &'a str,
    /// The request target as received.
    pub target: &'a str,
    /// The URL path, percent-decoded (PATH_INFO).
    pub path: &'a str,
    pub query: &'a str,
    pub protocol: &'a str,
    pub status: u16,
    /// Body bytes sent.
    pub sent: u64,
    pub req_headers: &'a dyn Headers,
    pub resp_headers: Option<&'a dyn Headers>,
    /// WSGI environ values asked for by `{var}e` atoms, lower-case keys.
    pub environ: &'a [(String, String)],
    pub duration: Duration,
}

fn atom(c: char, r: &AccessRecord<'_>, out: &mut Vec<u8>) {
    match c {
        'h' => match r.peer {
            Peer::Tcp(a) => {
                let _ = write!(out, "{}", a.ip());
            }
            Peer::Unix => out.push(b'-'),
        },
        'l' => out.push(b'-'),
        'u' => match basic_auth_user(r.req_headers) {
            Some(u) => escaped(u.as_bytes(), out),
            None => out.push(b'-'),
        },
        't' => timestamp(out),
        'r' => {
            escaped(r.method.as_bytes(), out);
            out.push(b' ');
            escaped(r.target.as_bytes(), out);
            out.push(b' ');
            out.extend_from_slice(r.protocol.as_bytes());
        }
        'm' => escaped(r.method.as_bytes(), out),
        'U' => escaped(r.path.as_bytes(), out),
        'q' => escaped(r.query.as_bytes(), out),
        'H' => out.extend_from_slice(r.protocol.as_bytes()),
        's' => {
            let _ = write!(out, "{}", r.status);
        }
        'B' => {
            let _ = write!(out, "{}", r.sent);
        }
        'b' => {
            if r.sent == 0 {
                out.push(b'-');
            } else {
                let _ = write!(out, "{}", r.sent);
            }
        }
        'f' => header(r.req_headers, "referer", out),
        'a' => header(r.req_headers, "user-agent", out),
        'T' => {
            let _ = write!(out, "{}", r.duration.as_secs());
        }
        'M' => {
            let _ = write!(out, "{}", r.duration.as_millis());
        }
        'D' => {
            let _ = write!(out, "{}", r.duration.as_micros());
        }
        'L' => {
            let _ = write!(
                out,
                "{}.{:06}",
                r.duration.as_secs(),
                r.duration.subsec_micros()
            );
        }
        'p' => {
            let _ = write!(out, "<{}>", std::process::id());
        }
        _ => out.push(b'-'),
    }
}

fn header(h: &dyn Headers, name: &str, out: &mut Vec<u8>) {
    let mut first = true;
    h.each(name, &mut |v| {
        if !first {
            out.push(b',');
        }
        first = false;
        escaped(v, out);
    });
    if first {
        out.push(b'-');
    }
}

fn escaped(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        if b < 0x20 || b == 0x7f || b == b'\\' {
            let _ = write!(out, "\\x{b:02x}");
        } else {
            out.push(b);
        }
    }
}

fn basic_auth_user(h: &dyn Headers) -> Option<String> {
    let mut v = None;
    h.each("authorization", &mut |b| {
        if v.is_none() {
            v = std::str::from_utf8(b).ok().map(str::to_string);
        }
    });
    let v = v?;
    let (scheme, cred) = v.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(cred.trim())
        .ok()?;
    let text = String::from_utf8_lossy(&raw);
    Some(text.split(':').next().unwrap_or("").to_string())
}

thread_local! {
    /// The formatted `[date]` for the current second.
    static STAMP: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
}

fn timestamp(out: &mut Vec<u8>) {
    let now = chrono::Local::now();
    let secs = now.timestamp();
    STAMP.with(|s| {
        let mut s = s.borrow_mut();
        if s.0 != secs {
            s.1.clear();
            let _ = write!(s.1, "[{}]", now.format("%d/%b/%Y:%H:%M:%S %z"));
            s.0 = secs;
        }
        out.extend_from_slice(s.1.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_ACCESS_LOG_FORMAT;
    use http::HeaderMap;

    fn rec<'a>(
        req: &'a HeaderMap,
        resp: &'a HeaderMap,
        env: &'a [(String, String)],
    ) -> AccessRecord<'a> {
        AccessRecord {
            peer: Peer::Tcp("127.0.0.1:5555".parse().unwrap()),
            method: "GET",
            target: "/a%20b?x=1",
            path: "/a b",
            query: "x=1",
            protocol: "HTTP/1.1",
            status: 200,
            sent: 13,
            req_headers: req,
            resp_headers: Some(resp as &dyn Headers),
            environ: env,
            duration: Duration::from_micros(1_234_567),
        }
    }

    fn render(fmt: &str, r: &AccessRecord<'_>) -> String {
        let mut out = Vec::new();
        AccessFormat::parse(fmt).unwrap().render(r, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn gunicorn_default_format() {
        let mut req = HeaderMap::new();
        req.insert("user-agent", "curl/8".parse().unwrap());
        req.insert("authorization", "Basic YWxpY2U6c2VjcmV0".parse().unwrap());
        let resp = HeaderMap::new();
        let line = render(DEFAULT_ACCESS_LOG_FORMAT, &rec(&req, &resp, &[]));
        let (head, tail) = line.split_once(" [").unwrap();
        assert_eq!(head, "127.0.0.1 - alice");
        let tail = tail.split_once("] ").unwrap().1;
        assert_eq!(
            tail,
            "\"GET /a%20b?x=1 HTTP/1.1\" 200 13 \"-\" \"curl/8\"\n"
        );
    }

    #[test]
    fn every_atom() {
        let mut req = HeaderMap::new();
        req.insert("x-req", "in".parse().unwrap());
        req.append("x-req", "twice".parse().unwrap());
        let mut resp = HeaderMap::new();
        resp.insert("content-type", "text/plain".parse().unwrap());
        let env = vec![("remote_addr".to_string(), "127.0.0.1".to_string())];
        let r = rec(&req, &resp, &env);
        let line = render(
            "%(m)s|%(U)s|%(q)s|%(H)s|%(s)s|%(B)s|%(b)s|%(T)s|%(M)s|%(D)s|%(L)s|%(l)s|%(f)s|\
             %({X-Req}i)s|%({content-type}o)s|%({remote_addr}e)s|%({nope}e)s|100%%",
            &r,
        );
        assert_eq!(
            line,
            "GET|/a b|x=1|HTTP/1.1|200|13|13|1|1234|1234567|1.234567|-|-|in,twice|text/plain|\
             127.0.0.1|-|100%\n"
        );
        let p = render("%(p)s", &r);
        assert_eq!(p, format!("<{}>\n", std::process::id()));
        let t = render("%(t)s", &r);
        assert!(
            t.starts_with('[') && t.trim_end().ends_with(']') && t.len() > 26,
            "{t}"
        );
    }

    #[test]
    fn unix_peer_and_zero_bytes() {
        let h = HeaderMap::new();
        let mut r = rec(&h, &h, &[]);
        r.peer = Peer::Unix;
        r.sent = 0;
        assert_eq!(render("%(h)s %(b)s %(B)s", &r), "- - 0\n");
    }

    #[test]
    fn control_bytes_are_escaped() {
        let h = HeaderMap::new();
        let mut r = rec(&h, &h, &[]);
        r.path = "/x\ny";
        assert_eq!(render("%(U)s", &r), "/x\\x0ay\n");
    }

    #[test]
    fn bad_formats_are_refused_with_a_reason() {
        assert!(
            AccessFormat::parse("%(zz)s")
                .unwrap_err()
                .contains("unknown atom")
        );
        assert!(
            AccessFormat::parse("%(h)")
                .unwrap_err()
                .contains("followed by 's'")
        );
        assert!(AccessFormat::parse("%(h").is_err());
        assert!(AccessFormat::parse("50% off").is_err());
        assert!(AccessFormat::parse("%({x}z)s").is_err());
        assert!(AccessFormat::parse("plain text").is_ok());
    }
}

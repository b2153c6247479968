//! Trusting a reverse proxy: `--forwarded-allow-ips`, `secure_scheme_headers` and
//! `--forwarder-headers`, as Gunicorn has them.
//!
//! Only a trusted peer may tell the app the original scheme (`X-Forwarded-Proto: https` and
//! the other secure-scheme headers) or where the app is mounted (a `SCRIPT_NAME` header). Any
//! other header still reaches the app, as `HTTP_*`; `REMOTE_ADDR` stays the TCP peer, as RFC
//! 3875 says (unless a PROXY protocol header named the client: `http::proxy_protocol`); the
//! client's address reaches the app as `HTTP_X_FORWARDED_FOR`.

use std::net::IpAddr;

use ipnet::IpNet;

/// The peers allowed to set forwarded headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardedAllowIps {
    any: bool,
    nets: Vec<IpNet>,
}

impl ForwardedAllowIps {
    /// Parses a comma-separated list of IP addresses, CIDR networks and `*`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut out = ForwardedAllowIps {
            any: false,
            nets: Vec::new(),
        };
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            if item == "*" {
                out.any = true;
            } else if let Ok(net) = item.parse::<IpNet>() {
                out.nets.push(net);
            } else if let Ok(ip) = item.parse::<IpAddr>() {
                out.nets.push(IpNet::from(ip));
            } else {
                return Err(format!(
                    "'{item}' is not an IP address, a CIDR network (10.0.0.0/8) or '*'"
                ));
            }
        }
        Ok(out)
    }

    /// Whether a TCP peer at `ip` is trusted. (A unix-socket peer always is; see [`Peer`].)
    pub fn trusts(&self, ip: IpAddr) -> bool {
        if self.any {
            return true;
        }
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

/// The other end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Tcp(std::net::SocketAddr),
    /// A unix-socket peer (the local proxy); it has no address.
    Unix,
}

impl Peer {
    pub fn trusted_by(&self, allow: &ForwardedAllowIps) -> bool {
        match self {
            Peer::Unix => true,
            Peer::Tcp(a) => allow.trusts(a.ip()),
        }
    }
}

type NameValue = (Box<[u8]>, Box<[u8]>);

/// `secure_scheme_headers`: the headers (and the value of each) by which a trusted proxy says
/// the request came over HTTPS. Names match in any case; values exactly, as in Gunicorn
/// ("The value comparisons are case-sensitive").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemeHeaders {
    /// Lower-case name, value meaning https.
    headers: Vec<NameValue>,
    /// Every name starts with `x-forwarded-`: the parser's `Head::forwarded` says when to look.
    x_forwarded_only: bool,
}

impl SchemeHeaders {
    pub fn new<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> SchemeHeaders {
        let headers: Vec<NameValue> = pairs
            .into_iter()
            .map(|(n, v)| {
                (
                    n.trim().to_ascii_lowercase().into_bytes().into(),
                    v.trim().as_bytes().into(),
                )
            })
            .collect();
        let x_forwarded_only = headers
            .iter()
            .all(|(n, _)| n.len() > 12 && n.starts_with(b"x-forwarded-"));
        SchemeHeaders {
            headers,
            x_forwarded_only,
        }
    }

    /// Gunicorn's default: `X-FORWARDED-PROTOCOL: ssl`, `X-FORWARDED-PROTO: https`,
    /// `X-FORWARDED-SSL: on`.
    pub fn gunicorn_default() -> SchemeHeaders {
        SchemeHeaders::new([
            ("X-FORWARDED-PROTOCOL", "ssl"),
            ("X-FORWARDED-PROTO", "https"),
            ("X-FORWARDED-SSL", "on"),
        ])
    }

    /// Whether a head can hold one of the headers; `forwarded` is the parser's flag (some
    /// header name starts with `x-forwarded-`).
    pub fn worth_looking(&self, forwarded: bool) -> bool {
        !self.headers.is_empty() && (forwarded || !self.x_forwarded_only)
    }

    /// `wsgi.url_scheme` for a request from a trusted peer, given its header fields: `https`
    /// when a secure-scheme header says so, else `http`. Headers that contradict each other
    /// are an error (400), as in Gunicorn.
    pub fn url_scheme<'a>(
        &self,
        fields: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Result<&'static str, &'static str> {
        let mut verdict: Option<bool> = None;
        for (name, value) in fields {
            let Some((_, secure)) = self
                .headers
                .iter()
                .find(|(n, _)| name.eq_ignore_ascii_case(n))
            else {
                continue;
            };
            let is_secure = value == &secure[..];
            match verdict {
                Some(prev) if prev != is_secure => return Err("Contradictory scheme headers"),
                _ => verdict = Some(is_secure),
            }
        }
        Ok(if verdict == Some(true) {
            "https"
        } else {
            "http"
        })
    }
}

/// `forwarder_headers`: the header names (with `_`, which are otherwise dropped) a trusted
/// proxy may set into the environ, upper-case as Gunicorn writes them; `*` for every one.
/// They reach the app as `HTTP_<NAME>`; `SCRIPT_NAME` also sets the environ's `SCRIPT_NAME`
/// and is taken off `PATH_INFO` (Gunicorn's `wsgi.py`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ForwarderHeaders {
    any: bool,
    names: Vec<Box<[u8]>>,
    /// `SCRIPT_NAME` is one of them.
    script_name: bool,
}

impl ForwarderHeaders {
    pub fn new<S: AsRef<str>>(list: &[S]) -> ForwarderHeaders {
        let mut f = ForwarderHeaders::default();
        for n in list
            .iter()
            .map(|n| n.as_ref().trim())
            .filter(|n| !n.is_empty())
        {
            if n == "*" {
                f.any = true;
            } else {
                f.names.push(n.as_bytes().into());
            }
        }
        f.script_name = f.allows(b"SCRIPT_NAME");
        f
    }

    /// Gunicorn's default: `SCRIPT_NAME,PATH_INFO`.
    pub fn gunicorn_default() -> ForwarderHeaders {
        ForwarderHeaders::new(&["SCRIPT_NAME", "PATH_INFO"])
    }

    /// Whether a header `name` from a trusted peer goes into the environ.
    pub fn allows(&self, name: &[u8]) -> bool {
        self.any || self.names.iter().any(|n| name.eq_ignore_ascii_case(n))
    }

    /// Whether a `SCRIPT_NAME` header is honoured.
    pub fn script_name(&self) -> bool {
        self.script_name
    }
}

/// A `SCRIPT_NAME` header's value as the environ's `SCRIPT_NAME`: without trailing slashes
/// (so that `PATH_INFO` keeps its leading one).
pub fn script_name_value(v: &[u8]) -> &[u8] {
    let end = v.iter().rposition(|&b| b != b'/').map_or(0, |i| i + 1);
    &v[..end]
}

/// `path` without the leading `script_name`, if it starts with it at a segment boundary
/// (`/app` is taken off `/app` and `/app/x`, not `/apples`).
pub fn strip_script_name<'a>(path: &'a [u8], script_name: &[u8]) -> Option<&'a [u8]> {
    let rest = path.strip_prefix(script_name)?;
    (rest.is_empty() || rest[0] == b'/').then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ips_cidrs_and_star() {
        let a = ForwardedAllowIps::parse("127.0.0.1, ::1,10.0.0.0/8").unwrap();
        assert!(a.trusts("127.0.0.1".parse().unwrap()));
        assert!(a.trusts("::1".parse().unwrap()));
        assert!(a.trusts("10.1.2.3".parse().unwrap()));
        assert!(a.trusts("::ffff:10.9.9.9".parse().unwrap()));
        assert!(!a.trusts("192.168.1.1".parse().unwrap()));
        assert!(
            ForwardedAllowIps::parse("*")
                .unwrap()
                .trusts("8.8.8.8".parse().unwrap())
        );
        assert!(
            !ForwardedAllowIps::parse("")
                .unwrap()
                .trusts("127.0.0.1".parse().unwrap())
        );
        assert!(
            ForwardedAllowIps::parse("10.0.0.300")
                .unwrap_err()
                .contains("10.0.0.300")
        );
    }

    fn pairs<'a>(h: &'a [(&'a str, &'a str)]) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
        h.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()))
    }

    #[test]
    fn scheme_from_secure_scheme_headers() {
        let d = SchemeHeaders::gunicorn_default();
        let f = |h: &[(&str, &str)]| d.url_scheme(pairs(h));
        assert_eq!(f(&[("X-Forwarded-Proto", "https")]), Ok("https"));
        assert_eq!(f(&[("X-FORWARDED-SSL", "on")]), Ok("https"));
        // Values match exactly, as in Gunicorn.
        assert_eq!(f(&[("X-Forwarded-Proto", "HTTPS")]), Ok("http"));
        assert!(f(&[("x-forwarded-proto", "https"), ("x-forwarded-ssl", "off")]).is_err());
        assert_eq!(f(&[("x-other", "1")]), Ok("http"));
        assert!(Peer::Unix.trusted_by(&ForwardedAllowIps::parse("").unwrap()));
        assert!(d.worth_looking(true) && !d.worth_looking(false));

        let own = SchemeHeaders::new([("Front-End-Https", "on")]);
        assert!(own.worth_looking(false));
        assert_eq!(
            own.url_scheme(pairs(&[("front-end-https", "on")])),
            Ok("https")
        );
        assert_eq!(
            own.url_scheme(pairs(&[("X-Forwarded-Proto", "https")])),
            Ok("http")
        );
        let none = SchemeHeaders::new([]);
        assert!(!none.worth_looking(true));
    }

    #[test]
    fn forwarder_headers_and_script_name() {
        let d = ForwarderHeaders::new(&["SCRIPT_NAME", "PATH_INFO"]);
        assert!(d.allows(b"SCRIPT_NAME") && d.allows(b"script_name") && d.script_name());
        assert!(!d.allows(b"REMOTE_USER"));
        assert!(ForwarderHeaders::new(&["*"]).allows(b"ANY_THING"));
        assert!(!ForwarderHeaders::new(&[""]).script_name());
        assert_eq!(script_name_value(b"/app//"), b"/app");
        assert_eq!(script_name_value(b"/"), b"");
        assert_eq!(script_name_value(b"/a/b"), b"/a/b");
        assert_eq!(strip_script_name(b"/app/x", b"/app"), Some(&b"/x"[..]));
        assert_eq!(strip_script_name(b"/app", b"/app"), Some(&b""[..]));
        assert_eq!(strip_script_name(b"/apples", b"/app"), None);
        assert_eq!(strip_script_name(b"/other", b"/app"), None);
    }
}

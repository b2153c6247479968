//! Trusting a reverse proxy: `--forwarded-allow-ips` and the secure-scheme headers.
//!
//! Only a trusted peer may tell the app the original scheme (`X-Forwarded-Proto: https` and
//! Gunicorn's other secure-scheme headers). `REMOTE_ADDR` always stays the TCP peer, as RFC 3875
//! says; the client's address reaches the app only as `HTTP_X_FORWARDED_FOR`.

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

/// Gunicorn's default `secure_scheme_headers`: header → the value that means https.
const SECURE_SCHEME_HEADERS: [(&str, &str); 3] = [
    ("x-forwarded-protocol", "ssl"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-ssl", "on"),
];

/// `wsgi.url_scheme` for a request from a trusted peer, given its header fields:
/// `https` when a secure-scheme header says so, else `http`. Contradicting headers are an error
/// (400), as in Gunicorn.
pub fn url_scheme<'a>(
    fields: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> Result<&'static str, &'static str> {
    let mut verdict: Option<bool> = None;
    for (name, value) in fields {
        let Some((_, secure)) = SECURE_SCHEME_HEADERS
            .iter()
            .find(|(n, _)| name.eq_ignore_ascii_case(n.as_bytes()))
        else {
            continue;
        };
        let is_secure = std::str::from_utf8(value)
            .map(|s| s.trim().eq_ignore_ascii_case(secure))
            .unwrap_or(false);
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

    #[test]
    fn scheme_from_secure_scheme_headers() {
        let f = |h: &[(&'static str, &'static str)]| {
            url_scheme(h.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
        };
        assert_eq!(f(&[("X-Forwarded-Proto", "https")]), Ok("https"));
        assert!(f(&[("x-forwarded-proto", "https"), ("x-forwarded-ssl", "off")]).is_err());
        assert_eq!(f(&[("x-other", "1")]), Ok("http"));
        assert!(Peer::Unix.trusted_by(&ForwardedAllowIps::parse("").unwrap()));
    }
}

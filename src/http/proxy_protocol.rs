//! The PROXY protocol (HAProxy's `proxy-protocol.txt`, versions 1 and 2) at the start of a
//! connection: a proxy that passes TCP through (nginx's `stream` module with
//! `proxy_protocol on;`, HAProxy's `send-proxy` / `send-proxy-v2`, stunnel, a cloud load
//! balancer) first says who the client is, then the client's bytes follow.
//!
//! As in Gunicorn (`--proxy-protocol`, `--proxy-allow-from`): the header is read once, before
//! the first request; it is optional (a connection that does not start with one is plain HTTP,
//! and its peer is the client); it is only taken from a peer in `--proxy-allow-from` (a
//! unix-socket peer is trusted, as for `--forwarded-allow-ips`). A header from any other peer,
//! a malformed one, or one of the version not enabled closes the connection with a warning. A
//! header that stops arriving is cut by `--header-timeout`.
//!
//! Version 1 is a text line (`PROXY TCP4 192.0.2.1 192.0.2.2 56324 443\r\n`, at most 107
//! bytes; `PROXY UNKNOWN ...` keeps the real addresses). Version 2 is binary: a 12-byte
//! signature, version and command, family and transport, a length, the addresses, then TLVs
//! (skipped). `LOCAL` (a health check from the proxy itself) and the families this server does
//! not use (UDP, unix) keep the real addresses, as the specification asks ("falls back to the
//! UNSPEC mode"); an invalid version, command, family or length is refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::{Instant, timeout_at};

use crate::proxy::{ForwardedAllowIps, Peer};

/// Version 1 starts with this.
const V1_PREFIX: &[u8] = b"PROXY ";
/// A version 1 line is at most this long, CRLF included.
const V1_MAX: usize = 107;
/// Version 2 starts with this.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Signature, version/command, family/transport, length.
const V2_FIXED: usize = 16;

/// Which headers a listener takes (`--proxy-protocol`), and from whom (`--proxy-allow-from`).
#[derive(Debug, Clone)]
pub struct Accept {
    pub v1: bool,
    pub v2: bool,
    pub allow: ForwardedAllowIps,
}

impl Accept {
    /// No PROXY protocol (`--proxy-protocol off`).
    pub fn off() -> Accept {
        Accept {
            v1: false,
            v2: false,
            allow: ForwardedAllowIps::parse("").expect("empty list"),
        }
    }

    pub fn enabled(&self) -> bool {
        self.v1 || self.v2
    }
}

/// What a PROXY header said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyInfo {
    /// Gunicorn's `PROXY_PROTOCOL` value: `TCP4`, `TCP6`, `UNKNOWN` (v1), `LOCAL`, `UNSPEC`
    /// (v2; also a UDP or unix family, which keep the real addresses).
    pub protocol: &'static str,
    /// The client, when the header names one.
    pub source: Option<SocketAddr>,
    /// The address the client connected to (at the proxy).
    pub destination: Option<SocketAddr>,
}

/// How a buffer's start reads.
#[derive(Debug, PartialEq, Eq)]
enum Detect {
    /// Too short to tell.
    Incomplete,
    /// Not a PROXY header: plain HTTP.
    NotProxy,
    V1,
    V2,
}

fn detect(buf: &[u8]) -> Detect {
    let could = |sig: &[u8]| {
        let n = buf.len().min(sig.len());
        buf[..n] == sig[..n]
    };
    if buf.is_empty() {
        Detect::Incomplete
    } else if could(V1_PREFIX) {
        if buf.len() >= V1_PREFIX.len() {
            Detect::V1
        } else {
            Detect::Incomplete
        }
    } else if could(&V2_SIGNATURE) {
        if buf.len() >= V2_SIGNATURE.len() {
            Detect::V2
        } else {
            Detect::Incomplete
        }
    } else {
        Detect::NotProxy
    }
}

/// A header's parse.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    Incomplete,
    /// The header is `len` bytes long.
    Header(usize, ProxyInfo),
    Invalid(&'static str),
}

/// Parses a version 1 line at the start of `buf` (which starts with `PROXY `).
pub fn parse_v1(buf: &[u8]) -> Parsed {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(lf) = memchr::memchr(b'\n', window) else {
        return if buf.len() >= V1_MAX {
            Parsed::Invalid("PROXY v1 line longer than 107 bytes")
        } else {
            Parsed::Incomplete
        };
    };
    if lf == 0 || window[lf - 1] != b'\r' {
        return Parsed::Invalid("PROXY v1 line not ended by CRLF");
    }
    let line = &window[V1_PREFIX.len()..lf - 1];
    let mut parts = line.split(|&b| b == b' ');
    let info = match parts.next() {
        // The proxy does not know the addresses: the rest of the line is ignored.
        Some(b"UNKNOWN") => ProxyInfo {
            protocol: "UNKNOWN",
            source: None,
            destination: None,
        },
        Some(family @ (b"TCP4" | b"TCP6")) => {
            let v4 = family == b"TCP4";
            let fields: Vec<&[u8]> = parts.collect();
            let [src, dst, sport, dport] = fields[..] else {
                return Parsed::Invalid("PROXY v1 line without two addresses and two ports");
            };
            let (Some(src), Some(dst)) = (ip(src, v4), ip(dst, v4)) else {
                return Parsed::Invalid("PROXY v1 line with an invalid address");
            };
            let (Some(sport), Some(dport)) = (port(sport), port(dport)) else {
                return Parsed::Invalid("PROXY v1 line with an invalid port");
            };
            ProxyInfo {
                protocol: if v4 { "TCP4" } else { "TCP6" },
                source: Some(SocketAddr::new(src, sport)),
                destination: Some(SocketAddr::new(dst, dport)),
            }
        }
        _ => return Parsed::Invalid("PROXY v1 line with an unknown protocol"),
    };
    Parsed::Header(lf + 1, info)
}

fn ip(b: &[u8], v4: bool) -> Option<IpAddr> {
    let s = std::str::from_utf8(b).ok()?;
    if v4 {
        s.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
    } else {
        s.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    }
}

/// A decimal port, 0 to 65535, digits only.
fn port(b: &[u8]) -> Option<u16> {
    if b.is_empty() || b.len() > 5 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Parses a version 2 header at the start of `buf` (which starts with the signature).
pub fn parse_v2(buf: &[u8]) -> Parsed {
    if buf.len() < V2_FIXED {
        return Parsed::Incomplete;
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 {
        return Parsed::Invalid("PROXY v2 header with a version other than 2");
    }
    let (family, transport) = (buf[13] >> 4, buf[13] & 0x0f);
    let len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    let total = V2_FIXED + len;
    let local = match command {
        0 => true,
        1 => false,
        _ => return Parsed::Invalid("PROXY v2 header with an unknown command"),
    };
    // The valid combinations: UNSPEC/UNSPEC, or an IPv4, IPv6 or unix family over a stream
    // or a datagram transport.
    let valid = (family == 0 && transport == 0)
        || ((1..=3).contains(&family) && (1..=2).contains(&transport));
    if !valid {
        return Parsed::Invalid("PROXY v2 header with an unknown address family or transport");
    }
    // The address block each family needs (the length may be larger: TLVs follow).
    let need = match family {
        1 => 12,
        2 => 36,
        3 => 216,
        _ => 0,
    };
    if !local && len < need {
        return Parsed::Invalid("PROXY v2 header too short for its addresses");
    }
    if buf.len() < total {
        return Parsed::Incomplete;
    }
    let unspec = |protocol| ProxyInfo {
        protocol,
        source: None,
        destination: None,
    };
    if local {
        // The proxy's own connection (a health check): the real addresses count.
        return Parsed::Header(total, unspec("LOCAL"));
    }
    let a = &buf[V2_FIXED..total];
    let be16 = |i: usize| u16::from_be_bytes([a[i], a[i + 1]]);
    let info = match (family, transport) {
        (1, 1) => {
            let src = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            let dst = Ipv4Addr::new(a[4], a[5], a[6], a[7]);
            ProxyInfo {
                protocol: "TCP4",
                source: Some(SocketAddr::new(src.into(), be16(8))),
                destination: Some(SocketAddr::new(dst.into(), be16(10))),
            }
        }
        (2, 1) => {
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&a[0..16]);
            d.copy_from_slice(&a[16..32]);
            ProxyInfo {
                protocol: "TCP6",
                source: Some(SocketAddr::new(Ipv6Addr::from(s).into(), be16(32))),
                destination: Some(SocketAddr::new(Ipv6Addr::from(d).into(), be16(34))),
            }
        }
        // UNSPEC, and the valid combinations that are not TCP over IP (UDP, unix sockets):
        // the specification's fallback, the real connection's addresses.
        _ => unspec("UNSPEC"),
    };
    Parsed::Header(total, info)
}

/// Why a connection is closed before its first request.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The peer closed, or sent nothing before the timeout: nothing to say.
    Quiet,
    /// Closed with this warning.
    Warn(String),
}

/// Reads the PROXY header at the start of a connection, if one comes. Returns what it said
/// (`None`: the connection is plain HTTP); the header's bytes are consumed from `rbuf`, what
/// follows stays there.
pub async fn read<S: AsyncRead + Unpin>(
    io: &mut S,
    rbuf: &mut BytesMut,
    accept: &Accept,
    peer: &Peer,
    header_timeout: Duration,
) -> Result<Option<ProxyInfo>, Refused> {
    let deadline = Instant::now() + header_timeout;
    let mut trusted = false;
    loop {
        let parsed = match detect(rbuf) {
            Detect::NotProxy => return Ok(None),
            Detect::Incomplete => Parsed::Incomplete,
            d => {
                let (on, name) = match d {
                    Detect::V1 => (accept.v1, "v1"),
                    _ => (accept.v2, "v2"),
                };
                if !on {
                    return Err(Refused::Warn(format!(
                        "PROXY protocol {name} header from {}, but --proxy-protocol does not \
                         take {name}",
                        describe(peer)
                    )));
                }
                if !trusted {
                    trusted = match peer {
                        Peer::Unix => true,
                        Peer::Tcp(a) => accept.allow.trusts(a.ip()),
                    };
                    if !trusted {
                        return Err(Refused::Warn(format!(
                            "PROXY protocol header from {}, which is not in --proxy-allow-from",
                            describe(peer)
                        )));
                    }
                }
                match d {
                    Detect::V1 => parse_v1(rbuf),
                    _ => parse_v2(rbuf),
                }
            }
        };
        match parsed {
            Parsed::Header(len, info) => {
                rbuf.advance(len);
                return Ok(Some(info));
            }
            Parsed::Invalid(why) => {
                return Err(Refused::Warn(format!(
                    "Invalid PROXY protocol header from {}: {why}",
                    describe(peer)
                )));
            }
            Parsed::Incomplete => {}
        }
        if rbuf.capacity() - rbuf.len() < 1024 {
            rbuf.reserve(8192);
        }
        match timeout_at(deadline, io.read_buf(rbuf)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => return Err(Refused::Quiet),
            Err(_) if rbuf.is_empty() => return Err(Refused::Quiet),
            Err(_) => {
                return Err(Refused::Warn(format!(
                    "PROXY protocol header from {} not received in time (--header-timeout)",
                    describe(peer)
                )));
            }
        }
    }
}

fn describe(peer: &Peer) -> String {
    match peer {
        Peer::Tcp(a) => a.to_string(),
        Peer::Unix => "unix socket".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(cmd: u8, fam: u8, addrs: &[u8]) -> Vec<u8> {
        let mut v = V2_SIGNATURE.to_vec();
        v.push(0x20 | cmd);
        v.push(fam);
        v.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
        v.extend_from_slice(addrs);
        v
    }

    #[test]
    fn detects_either_version_or_plain_http() {
        assert_eq!(detect(b""), Detect::Incomplete);
        assert_eq!(detect(b"PRO"), Detect::Incomplete);
        assert_eq!(detect(b"PROXY "), Detect::V1);
        assert_eq!(detect(b"PROXZ"), Detect::NotProxy);
        assert_eq!(detect(b"GET / HTTP/1.1\r\n"), Detect::NotProxy);
        assert_eq!(detect(b"\r\n\r\n\0"), Detect::Incomplete);
        assert_eq!(detect(b"\r\nGET /"), Detect::NotProxy);
        assert_eq!(detect(&V2_SIGNATURE), Detect::V2);
    }

    #[test]
    fn v1_lines() {
        let line = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET /";
        let Parsed::Header(n, info) = parse_v1(line) else {
            panic!()
        };
        assert_eq!(&line[n..], b"GET /");
        assert_eq!(info.protocol, "TCP4");
        assert_eq!(info.source, Some("192.0.2.1:56324".parse().unwrap()));
        assert_eq!(info.destination, Some("198.51.100.2:443".parse().unwrap()));
        let Parsed::Header(_, info) = parse_v1(b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n") else {
            panic!()
        };
        assert_eq!(info.source, Some("[2001:db8::1]:1".parse().unwrap()));
        let Parsed::Header(n, info) = parse_v1(b"PROXY UNKNOWN whatever here\r\nX") else {
            panic!()
        };
        assert_eq!((n, info.protocol, info.source), (29, "UNKNOWN", None));
        assert_eq!(parse_v1(b"PROXY TCP4 1.2.3.4"), Parsed::Incomplete);
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
            b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY \r\n",
        ] {
            assert!(
                matches!(parse_v1(bad), Parsed::Invalid(_)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 100]].concat();
        assert!(matches!(parse_v1(&long), Parsed::Invalid(_)));
    }

    #[test]
    fn v2_headers() {
        let mut a = vec![192, 0, 2, 1, 198, 51, 100, 2];
        a.extend_from_slice(&56324u16.to_be_bytes());
        a.extend_from_slice(&443u16.to_be_bytes());
        // A TLV after the addresses (PP2_TYPE_AUTHORITY "x") is skipped.
        a.extend_from_slice(&[0x02, 0x00, 0x01, b'x']);
        let mut h = v2(1, 0x11, &a);
        let len = h.len();
        h.extend_from_slice(b"GET /");
        let Parsed::Header(n, info) = parse_v2(&h) else {
            panic!()
        };
        assert_eq!(n, len);
        assert_eq!(info.protocol, "TCP4");
        assert_eq!(info.source, Some("192.0.2.1:56324".parse().unwrap()));
        assert_eq!(info.destination, Some("198.51.100.2:443".parse().unwrap()));

        let mut a6 = vec![0u8; 36];
        a6[15] = 1;
        a6[16] = 0x20;
        a6[17] = 0x01;
        a6[32..34].copy_from_slice(&7u16.to_be_bytes());
        let Parsed::Header(_, info) = parse_v2(&v2(1, 0x21, &a6)) else {
            panic!()
        };
        assert_eq!(info.source, Some("[::1]:7".parse().unwrap()));

        // LOCAL, UNSPEC and the families kept at the real addresses.
        for (cmd, fam, addrs, want) in [
            (0u8, 0x00u8, vec![], "LOCAL"),
            (0, 0x11, vec![1, 2, 3], "LOCAL"),
            (1, 0x00, vec![], "UNSPEC"),
            (1, 0x12, vec![0; 12], "UNSPEC"),
            (1, 0x31, vec![0; 216], "UNSPEC"),
        ] {
            match parse_v2(&v2(cmd, fam, &addrs)) {
                Parsed::Header(_, i) => assert_eq!((i.protocol, i.source), (want, None)),
                other => panic!("{cmd} {fam:#x}: {other:?}"),
            }
        }
        assert_eq!(parse_v2(&v2(1, 0x11, &a)[..20]), Parsed::Incomplete);
        let mut bad_version = v2(1, 0x11, &a);
        bad_version[12] = 0x11;
        for bad in [
            bad_version,
            v2(2, 0x11, &a),
            v2(1, 0x41, &a),
            v2(1, 0x13, &a),
            v2(1, 0x10, &a),
            v2(1, 0x01, &a),
            v2(1, 0x11, &a[..11]),
            v2(1, 0x21, &a),
        ] {
            assert!(matches!(parse_v2(&bad), Parsed::Invalid(_)), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn read_takes_the_header_and_leaves_the_request() {
        let all = Accept {
            v1: true,
            v2: true,
            allow: ForwardedAllowIps::parse("127.0.0.1").unwrap(),
        };
        let local: Peer = Peer::Tcp("127.0.0.1:1000".parse().unwrap());
        let far: Peer = Peer::Tcp("10.0.0.1:1000".parse().unwrap());
        let t = Duration::from_secs(5);
        let (mut client, mut server) = tokio::io::duplex(4096);
        use tokio::io::AsyncWriteExt;
        client
            .write_all(b"PROXY TCP4 1.2.3.4 5.6.7.8 9 10\r\nGET")
            .await
            .unwrap();
        let mut rbuf = BytesMut::new();
        let info = read(&mut server, &mut rbuf, &all, &local, t).await.unwrap();
        assert_eq!(info.unwrap().source, Some("1.2.3.4:9".parse().unwrap()));
        assert_eq!(&rbuf[..], b"GET");

        // Plain HTTP stays in the buffer.
        let mut rbuf = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
        assert_eq!(read(&mut server, &mut rbuf, &all, &far, t).await, Ok(None));
        assert_eq!(&rbuf[..], b"GET / HTTP/1.1\r\n");

        // From an untrusted peer, or a version not enabled: refused.
        let mut rbuf = BytesMut::from(&b"PROXY TCP4"[..]);
        let e = read(&mut server, &mut rbuf, &all, &far, t)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Refused::Warn(w) if w.contains("--proxy-allow-from")),
            "{e:?}"
        );
        let v1_only = Accept {
            v2: false,
            ..all.clone()
        };
        let mut rbuf = BytesMut::from(&V2_SIGNATURE[..]);
        let e = read(&mut server, &mut rbuf, &v1_only, &Peer::Unix, t)
            .await
            .unwrap_err();
        assert!(matches!(&e, Refused::Warn(w) if w.contains("v2")), "{e:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_header_that_stops_arriving_is_cut() {
        let all = Accept {
            v1: true,
            v2: true,
            allow: ForwardedAllowIps::parse("*").unwrap(),
        };
        let (_client, mut server) = tokio::io::duplex(4096);
        let mut rbuf = BytesMut::from(&b"PROXY TCP4 1.2"[..]);
        let e = read(
            &mut server,
            &mut rbuf,
            &all,
            &Peer::Unix,
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&e, Refused::Warn(w) if w.contains("in time")),
            "{e:?}"
        );
        let mut empty = BytesMut::new();
        let e = read(
            &mut server,
            &mut empty,
            &all,
            &Peer::Unix,
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert_eq!(e, Refused::Quiet);
    }
}

//! Decoding a request body from the connection's read buffer: `Content-Length` or chunked
//! (RFC 9112 §7.1), strictly — a chunk size is hex digits (leading zeros allowed) followed by
//! CRLF, or by `;extensions` with optional whitespace before the `;` (RFC 9112's BWS, as
//! Gunicorn); whitespace with no extension after it, or bare LF, is refused; trailer fields are
//! parsed and those that could change how the message is framed, routed or authenticated are
//! refused. The decoder is a plain state machine over a `BytesMut`, so the connection can feed
//! it whatever arrived; a decode that fails consumes nothing (the same call fails again).

use bytes::{Buf, Bytes, BytesMut};

use super::parse::{Framing, Reject};

/// The longest chunk-size line accepted (size and extensions).
const MAX_CHUNK_LINE: usize = 4096;
/// The most trailer bytes accepted.
const MAX_TRAILERS: usize = 16 * 1024;

/// Fields a trailer must not carry (RFC 9110 §6.5.1: framing, routing, authentication,
/// connection control, content metadata).
const FORBIDDEN_TRAILERS: [&str; 14] = [
    "content-length",
    "transfer-encoding",
    "trailer",
    "host",
    "connection",
    "keep-alive",
    "te",
    "upgrade",
    "expect",
    "authorization",
    "proxy-authorization",
    "content-encoding",
    "content-type",
    "content-range",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

/// What one [`Decoder::decode`] call produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Data(Bytes),
    /// The buffer holds no more decodable bytes: read more.
    NeedMore,
    Done,
}

#[derive(Debug)]
pub struct Decoder {
    state: State,
    /// Body bytes decoded so far.
    pub decoded: u64,
    /// `--limit-request-body` (0: none), checked as a chunked body arrives.
    limit: u64,
}

fn bad(reason: &'static str) -> Reject {
    Reject {
        status: 400,
        reason,
    }
}

impl Decoder {
    pub fn new(framing: Framing, limit: u64) -> Decoder {
        let state = match framing {
            Framing::None => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Size,
        };
        Decoder {
            state,
            decoded: 0,
            limit,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Bytes still to come, when known (`Content-Length` bodies).
    pub fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Length(n) => Some(n),
            State::Done => Some(0),
            _ => None,
        }
    }

    /// Decodes what `buf` holds, at most `max` body bytes; consumes framing bytes.
    pub fn decode(&mut self, buf: &mut BytesMut, max: usize) -> Result<Step, Reject> {
        loop {
            match self.state {
                State::Done => return Ok(Step::Done),
                State::Length(left) => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    let n = (left.min(max as u64) as usize).min(buf.len());
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::Done
                    } else {
                        State::Length(left)
                    };
                    self.decoded += n as u64;
                    return Ok(Step::Data(buf.split_to(n).freeze()));
                }
                State::Size => {
                    let Some(eol) = memchr::memchr(b'\n', buf) else {
                        if buf.len() > MAX_CHUNK_LINE {
                            return Err(bad("chunk size line too long"));
                        }
                        return Ok(Step::NeedMore);
                    };
                    if eol == 0 || buf[eol - 1] != b'\r' {
                        return Err(bad("bare LF in a chunk size line"));
                    }
                    let line = &buf[..eol - 1];
                    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
                    if digits == 0 {
                        return Err(bad("invalid chunk size"));
                    }
                    let zeros = line[..digits].iter().take_while(|&&b| b == b'0').count();
                    if digits - zeros > 15 {
                        return Err(bad("chunk size too large"));
                    }
                    let ext = &line[digits..];
                    if !ext.is_empty() {
                        // Only `;ext` may follow the size, after optional whitespace (BWS):
                        // whitespace alone, or any other byte, is refused.
                        let bws = ext.iter().take_while(|&&c| c == b' ' || c == b'\t').count();
                        if ext.get(bws) != Some(&b';')
                            || ext.iter().any(|&c| (c < 0x20 && c != b'\t') || c == 0x7f)
                        {
                            return Err(bad("invalid chunk size"));
                        }
                    }
                    let size = line[zeros..digits]
                        .iter()
                        .fold(0u64, |acc, &c| (acc << 4) | hex(c) as u64);
                    if size > 0 && self.limit > 0 && self.decoded + size > self.limit {
                        return Err(Reject {
                            status: 413,
                            reason: "request body larger than --limit-request-body",
                        });
                    }
                    buf.advance(eol + 1);
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    let n = (left.min(max as u64) as usize).min(buf.len());
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                    self.decoded += n as u64;
                    return Ok(Step::Data(buf.split_to(n).freeze()));
                }
                State::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Step::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(bad("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.state = State::Size;
                }
                State::Trailers => {
                    if buf.len() >= 2 && &buf[..2] == b"\r\n" {
                        buf.advance(2);
                        self.state = State::Done;
                        continue;
                    }
                    let Some(end) = find_trailer_end(buf)? else {
                        if buf.len() > MAX_TRAILERS {
                            return Err(bad("trailers too large"));
                        }
                        return Ok(Step::NeedMore);
                    };
                    check_trailers(&buf[..end])?;
                    buf.advance(end);
                    self.state = State::Done;
                }
            }
        }
    }
}

fn hex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    }
}

/// The end of a trailer section (after its empty line), refusing bare LF.
fn find_trailer_end(buf: &[u8]) -> Result<Option<usize>, Reject> {
    let mut from = 0;
    while let Some(i) = memchr::memchr(b'\n', &buf[from..]) {
        let at = from + i;
        if at == 0 || buf[at - 1] != b'\r' {
            return Err(bad("bare LF in trailers"));
        }
        if at >= 3 && buf[at - 2] == b'\n' && buf[at - 3] == b'\r' {
            return Ok(Some(at + 1));
        }
        from = at + 1;
    }
    Ok(None)
}

fn check_trailers(block: &[u8]) -> Result<(), Reject> {
    let mut h = [httparse::EMPTY_HEADER; 32];
    match httparse::parse_headers(block, &mut h) {
        Ok(httparse::Status::Complete((_, fields))) => {
            for f in fields.iter() {
                if FORBIDDEN_TRAILERS
                    .iter()
                    .any(|n| f.name.eq_ignore_ascii_case(n))
                {
                    return Err(bad("forbidden field in trailers"));
                }
            }
            Ok(())
        }
        _ => Err(bad("malformed trailers")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(framing: Framing, raw: &[u8]) -> Result<(Vec<u8>, usize), Reject> {
        let mut d = Decoder::new(framing, 1 << 20);
        let mut buf = BytesMut::from(raw);
        let mut out = Vec::new();
        loop {
            match d.decode(&mut buf, 7)? {
                Step::Data(b) => out.extend_from_slice(&b),
                Step::NeedMore => return Err(bad("incomplete")),
                Step::Done => return Ok((out, buf.len())),
            }
        }
    }

    #[test]
    fn chunked() {
        let (b, rest) = all(
            Framing::Chunked,
            b"3\r\nabc\r\nA;x=y\r\n0123456789\r\n0\r\n\r\nGET",
        )
        .unwrap();
        assert_eq!(b, b"abc0123456789");
        assert_eq!(rest, 3);
        let (b, _) = all(Framing::Chunked, b"1\r\nz\r\n0\r\nX-T: 1\r\n\r\n").unwrap();
        assert_eq!(b, b"z");
    }

    #[test]
    fn strict_chunks() {
        let st = |raw: &[u8]| all(Framing::Chunked, raw).err().map(|r| r.status);
        assert_eq!(st(b"3 \r\nabc\r\n0\r\n\r\n"), Some(400));
        assert_eq!(st(b"3\t\r\nabc\r\n0\r\n\r\n"), Some(400));
        assert_eq!(st(b"3\nabc\r\n0\r\n\r\n"), Some(400));
        assert_eq!(st(b"zz\r\nabc\r\n0\r\n\r\n"), Some(400));
        assert_eq!(st(b"3\r\nabcX\r\n0\r\n\r\n"), Some(400));
        assert_eq!(st(b"3\r\nabc\r\n0\r\nContent-Length: 3\r\n\r\n"), Some(400));
        assert_eq!(st(b"3\r\nabc\r\n0\r\nHost: x\r\n\r\n"), Some(400));
        assert_eq!(
            st(b"3\r\nabc\r\n0\r\nTransfer-Encoding: x\r\n\r\n"),
            Some(400)
        );
        assert_eq!(st(b"ffffffffffffffffff\r\n"), Some(400));
        assert_eq!(
            st(b"0000000000000000000000001000000000000000\r\n"),
            Some(400)
        );
        assert_eq!(st(b"200000\r\n"), Some(413));
        assert_eq!(st(b"3 x\r\nabc\r\n0\r\n\r\n"), Some(400));
        assert_eq!(st(b"3;a\r\nabc\r\n0 \r\n\r\n"), Some(400));
    }

    #[test]
    fn leading_zeros_and_whitespace_before_extensions_are_accepted() {
        // Gunicorn accepts both; RFC 9112 §7.1.1 allows BWS before `;`.
        let (b, _) = all(
            Framing::Chunked,
            b"00000003\r\nabc\r\n2 ;x=y\r\nde\r\n1\t;z\r\nf\r\n000\r\n\r\n",
        )
        .unwrap();
        assert_eq!(b, b"abcdef");
        let (b, _) = all(
            Framing::Chunked,
            b"00000000000000000000000000000001\r\nz\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(b, b"z");
    }

    #[test]
    fn a_failed_decode_consumes_nothing() {
        let mut d = Decoder::new(Framing::Chunked, 10);
        let mut buf = BytesMut::from(&b"3\r\nabc\r\nff\r\n"[..]);
        assert_eq!(
            d.decode(&mut buf, 100).unwrap(),
            Step::Data(Bytes::from_static(b"abc"))
        );
        for _ in 0..2 {
            assert_eq!(d.decode(&mut buf, 100).unwrap_err().status, 413);
        }
    }

    #[test]
    fn length() {
        let (b, rest) = all(Framing::Length(5), b"helloGET").unwrap();
        assert_eq!((b.as_slice(), rest), (&b"hello"[..], 3));
    }
}

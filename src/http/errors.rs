//! Responses the server makes itself (a refused request, a failed app): a short text body
//! naming the status, so a client, a proxy or a person with curl sees what happened.

use super::parse::Version;
use super::response::{ResponseHead, Wire, encode, reason_for};

/// A server-made response (an error page): a short text body naming the status.
/// `head`: the request was a HEAD (the length is sent, the body not).
pub fn write(status: u16, keep_alive: bool, is_head: bool, out: &mut Vec<u8>) {
    let reason = reason_for(status);
    let body = format!("{status} {reason}\n");
    let mut head = ResponseHead::new(status, None);
    let _ = head.push(b"Content-Type", b"text/plain; charset=utf-8");
    encode(
        &head,
        Wire::Length(body.len() as u64),
        Some(body.len() as u64),
        keep_alive,
        Version::Http11,
        out,
    );
    if !is_head {
        out.extend_from_slice(body.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_the_status() {
        let mut out = Vec::new();
        super::write(408, false, false, &mut out);
        let t = String::from_utf8(out).unwrap();
        assert!(t.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{t}");
        assert!(t.ends_with("\r\n\r\n408 Request Timeout\n"), "{t}");
        assert!(t.contains("Connection: close\r\n"), "{t}");
    }
}

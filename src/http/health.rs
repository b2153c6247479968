//! `--health-path`: a path the HTTP layer answers itself, without the app, for load balancers
//! and orchestrators: `200` while the host serves, `503` once its master is stopping (TERM,
//! and during `--drain-delay`), so a balancer stops sending before the listeners close.
//!
//! The host's state comes from the master (the shared region's readiness flag), not from the
//! worker: a worker draining because a reload replaced it still answers `200` (the host
//! serves on with the new generation), with `Connection: close`. Only `GET` and `HEAD` without
//! a body are answered here; anything else on that path goes to the app. Health answers are
//! not app requests: they are not in the access log, not in `ferricorn_requests_total`, and do
//! not count towards `--max-requests` (`ferricorn_health_checks_total` counts them).

use super::parse::{self, Framing, Head, Method};
use super::response::{ResponseHead, Wire, encode};

/// Whether `head` is a health check for `path`.
pub fn wanted(path: Option<&[u8]>, head: &Head) -> bool {
    let Some(path) = path else { return false };
    matches!(head.method, Method::Get | Method::Head)
        && matches!(head.framing, Framing::None)
        && parse::split_target(head.target()).0 == path
}

/// Writes the answer into `out`; `keep`: the connection may stay open. Returns whether it
/// stays open (not after a 503: the host is leaving).
pub fn answer(head: &Head, keep: bool, out: &mut Vec<u8>) -> bool {
    let ready = !crate::metrics::draining();
    let keep = keep && ready;
    crate::metrics::health(ready);
    let (status, body): (u16, &[u8]) = if ready {
        (200, b"OK\n")
    } else {
        (503, b"draining\n")
    };
    let mut rh = ResponseHead::new(status, None);
    let _ = rh.push(b"Content-Type", b"text/plain; charset=utf-8");
    let _ = rh.push(b"Cache-Control", b"no-store");
    encode(
        &rh,
        Wire::Length(body.len() as u64),
        Some(body.len() as u64),
        keep,
        head.version,
        out,
    );
    if head.method != Method::Head {
        out.extend_from_slice(body);
    }
    keep
}

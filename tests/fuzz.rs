//! Fuzzing the HTTP/1.1 layer through the real binary: mutated and random requests, a fixed
//! seed, a bounded count (`FERRICORN_FUZZ_COUNT`, default 400; `FERRICORN_FUZZ_SEED` to vary).
//!
//! After each input the same connection gets a probe, `GET /probe/<n>`. The server may refuse
//! the input (and close), may take the probe as part of an unfinished body or head (and then
//! time out with 408), or must answer the probe with its own response. Every byte it sends must
//! parse as well-formed HTTP/1.1 responses (the strict test client), no connection may hang,
//! and the worker must be the same process at the end, with no panic in its log.
//!
//! The same with PROXY protocol headers (v1 lines, v2 headers, valid and mutated) in front of the
//! requests, against a server with `--proxy-protocol auto`: a header the server refuses closes
//! the connection without a byte; a valid one is followed by the request as usual.
//!
//! More by hand: `FERRICORN_FUZZ_COUNT=4000 cargo test --release --test fuzz -- --nocapture`.

mod common;
mod http_support;

use std::io::ErrorKind;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use common::client::*;
use http_support::*;

/// Well-formed requests the mutations start from (HEAD only alone: its response is read as one).
const SEEDS: [&str; 14] = [
    "GET /probe/seed HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET / HTTP/1.0\r\n\r\n",
    "GET /?a=1&b=%20 HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: fuzz\r\nAccept: */*\r\n\r\n",
    "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n",
    "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nX-T: 1\r\n\r\n",
    "POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n",
    "POST /noread HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n01234567890123456789",
    "POST /stream-echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n",
    "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
    "GET /hop?name=Transfer-Encoding&value=chunked HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /probe/a HTTP/1.1\r\nHost: x\r\n\r\nGET /probe/b HTTP/1.1\r\nHost: x\r\n\r\n",
    "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET http://x/probe/abs HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n",
];

const INTERESTING: &[u8] = b"\r\n :;,\0\x7f\xff0123456789abcdefABCDEF\t-_/?#%*\"";

fn seed_body(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    if s.contains("Content-Length: 70000") {
        v.extend(std::iter::repeat_n(b'z', 70000));
    }
    v
}

/// One fuzz input.
fn input(rng: &mut fastrand::Rng) -> Vec<u8> {
    if rng.u8(..) < 20 {
        // Random bytes.
        let n = rng.usize(1..300);
        return (0..n).map(|_| rng.u8(..)).collect();
    }
    let mut v = seed_body(SEEDS[rng.usize(..SEEDS.len())]);
    if rng.u8(..) < 25 {
        return v; // unmutated: must be answered
    }
    for _ in 0..rng.usize(1..3) {
        if v.is_empty() {
            v.push(b'G');
        }
        let at = rng.usize(..v.len());
        match rng.u8(..8) {
            0 => v[at] ^= 1 << rng.u8(..8),
            1 => v[at] = INTERESTING[rng.usize(..INTERESTING.len())],
            2 => {
                let k = rng.usize(1..8);
                for _ in 0..k {
                    v.insert(at, INTERESTING[rng.usize(..INTERESTING.len())]);
                }
            }
            3 => {
                let end = (at + rng.usize(1..16)).min(v.len());
                v.drain(at..end);
            }
            4 => {
                let end = (at + rng.usize(1..32)).min(v.len());
                let dup = v[at..end].to_vec();
                v.splice(at..at, dup);
            }
            5 => v.truncate(at),
            6 => {
                // A header line in the head: a framing or routing field, often a duplicate.
                const LINES: [&str; 8] = [
                    "Content-Length: 3\r\n",
                    "Content-Length: 99999999999999999999\r\n",
                    "Transfer-Encoding: chunked\r\n",
                    "Transfer-Encoding: gzip\r\n",
                    "Host: y\r\n",
                    "Connection: close\r\n",
                    "Expect: 100-continue\r\n",
                    "X_Under: 1\r\n",
                ];
                if let Some(i) = v.windows(2).position(|w| w == b"\r\n") {
                    let line = LINES[rng.usize(..LINES.len())].as_bytes();
                    v.splice(i + 2..i + 2, line.iter().copied());
                }
            }
            _ => {
                // CRLF → LF somewhere.
                if let Some(i) = v[at..].windows(2).position(|w| w == b"\r\n") {
                    v.remove(at + i);
                }
            }
        }
    }
    v
}

#[derive(Default)]
struct Tally {
    answered: AtomicUsize,
    refused: AtomicUsize,
    absorbed: AtomicUsize,
}

/// What follows a PROXY header at the start of `raw` (all of `raw` without one).
fn after_proxy_header(raw: &[u8]) -> &[u8] {
    if raw.starts_with(b"PROXY ") {
        return match raw.windows(2).position(|w| w == b"\r\n") {
            Some(i) => &raw[i + 2..],
            None => raw,
        };
    }
    if raw.starts_with(b"\r\n\r\n\0\r\nQUIT\n") && raw.len() >= 16 {
        let len = u16::from_be_bytes([raw[14], raw[15]]) as usize;
        return raw.get(16 + len..).unwrap_or(raw);
    }
    raw
}

/// Runs one input and its probe; `Err` describes a violation.
fn run_one(addr: &Addr, n: usize, raw: &[u8], tally: &Tally) -> Result<(), String> {
    let show = || String::from_utf8_lossy(raw).into_owned();
    let mut c = Conn::connect(addr).map_err(|e| format!("connect: {e}"))?;
    c.set_timeout(Duration::from_secs(6));
    let probe = format!("GET /probe/{n} HTTP/1.1\r\nHost: p\r\n\r\n");
    let mut wire = raw.to_vec();
    wire.extend_from_slice(probe.as_bytes());
    if let Err(e) = c.send_raw(&wire)
        && !matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset)
    {
        return Err(format!("send: {e}"));
    }
    let mut method = if after_proxy_header(raw).starts_with(b"HEAD ") {
        "HEAD"
    } else {
        "GET"
    };
    let want = format!("/probe/{n}");
    for _ in 0..8 {
        match c.read_response(method) {
            Ok(r) => {
                method = "GET";
                if r.body == want.as_bytes() {
                    tally.answered.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                if r.status >= 400 && r.header("connection") == Some("close") {
                    // Refused: nothing may follow the error response.
                    return if c.peer_closed(Duration::from_secs(2)) && c.buffered().is_empty() {
                        if r.status == 408 {
                            tally.absorbed.fetch_add(1, Ordering::Relaxed);
                        } else {
                            tally.refused.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(())
                    } else {
                        Err(format!(
                            "bytes after a closing {}: {:?} (input {:?})",
                            r.status,
                            String::from_utf8_lossy(c.buffered()),
                            show()
                        ))
                    };
                }
            }
            Err(e) if e.kind() == ErrorKind::UnexpectedEof && c.buffered().is_empty() => {
                // Closed between responses: the server gave up on the connection.
                tally.refused.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            Err(e) => {
                return Err(format!(
                    "{e} (received {:?}) for input {:?}",
                    String::from_utf8_lossy(c.buffered()),
                    show()
                ));
            }
        }
    }
    Err(format!("more than 8 responses to {:?}", show()))
}

/// A PROXY protocol header: a valid v1 line or v2 header, often mutated, sometimes random.
fn proxy_header(rng: &mut fastrand::Rng) -> Vec<u8> {
    const V1: [&str; 4] = [
        "PROXY TCP4 203.0.113.7 198.51.100.2 40001 443\r\n",
        "PROXY TCP6 2001:db8::7 ::1 5 80\r\n",
        "PROXY UNKNOWN\r\n",
        "PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n",
    ];
    let mut v = if rng.bool() {
        V1[rng.usize(..V1.len())].as_bytes().to_vec()
    } else {
        let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        let (cmd, fam, len) = [
            (0x21u8, 0x11u8, 12usize),
            (0x21, 0x21, 36),
            (0x20, 0, 0),
            (0x21, 0x31, 216),
        ][rng.usize(..4)];
        let tlvs = rng.usize(..3) * 4;
        h.extend_from_slice(&[cmd, fam]);
        h.extend_from_slice(&((len + tlvs) as u16).to_be_bytes());
        h.extend((0..len).map(|_| rng.u8(..)));
        for _ in 0..tlvs / 4 {
            h.extend_from_slice(&[0x02, 0x00, 0x01, b'x']);
        }
        h
    };
    if rng.bool() {
        return v; // unmutated
    }
    for _ in 0..rng.usize(1..3) {
        if v.is_empty() {
            break;
        }
        let at = rng.usize(..v.len());
        match rng.u8(..5) {
            0 => v[at] ^= 1 << rng.u8(..8),
            1 => v[at] = INTERESTING[rng.usize(..INTERESTING.len())],
            2 => v.truncate(at),
            3 => {
                let end = (at + rng.usize(1..8)).min(v.len());
                v.drain(at..end);
            }
            _ => v.insert(at, rng.u8(..)),
        }
    }
    v
}

fn fuzz_count_and_seed() -> (usize, u64) {
    let count: usize = std::env::var("FERRICORN_FUZZ_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let seed: u64 = std::env::var("FERRICORN_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_f00d);
    (count, seed)
}

const FUZZ_SERVER: [&str; 10] = [
    "--threads",
    "2",
    "--header-timeout",
    "1",
    "--body-timeout",
    "1",
    "--keep-alive",
    "2",
    "--timeout",
    "60",
];

#[test]
fn mutated_requests_never_desync_a_connection_or_kill_a_worker() {
    let (count, seed) = fuzz_count_and_seed();
    let (server, addr) = start(&FUZZ_SERVER);
    fuzz(&server, &addr, count, seed, input);
}

#[test]
fn proxy_protocol_headers_before_mutated_requests() {
    let (count, seed) = fuzz_count_and_seed();
    let mut args = FUZZ_SERVER.to_vec();
    args.extend(["--proxy-protocol", "auto"]);
    let (server, addr) = start(&args);
    fuzz(&server, &addr, count, seed ^ 0x9090, |rng| {
        let mut v = proxy_header(rng);
        v.extend(input(rng));
        v
    });
}

/// Runs `count` inputs from `make` on 6 threads; no violation, the worker still the same.
fn fuzz(
    server: &common::server::Server,
    addr: &Addr,
    count: usize,
    seed: u64,
    make: fn(&mut fastrand::Rng) -> Vec<u8>,
) {
    let worker = worker_pid(server, addr);
    let tally = Arc::new(Tally::default());
    const THREADS: usize = 6;
    let failures: Vec<String> = (0..THREADS)
        .map(|t| {
            let addr = addr.clone();
            let tally = tally.clone();
            thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(seed ^ (t as u64).wrapping_mul(0x9e37));
                let mut fails = Vec::new();
                for i in (t..count).step_by(THREADS) {
                    let raw = make(&mut rng);
                    if let Err(e) = run_one(&addr, i, &raw, &tally) {
                        fails.push(format!("input {i}: {e}"));
                    }
                }
                fails
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .flat_map(|h| h.join().expect("fuzz thread"))
        .collect();
    eprintln!(
        "fuzz: {count} inputs (seed {seed:#x}): {} answered the probe, {} refused, {} took the \
         probe as body or head and timed out; {} violations",
        tally.answered.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed),
        tally.absorbed.load(Ordering::Relaxed),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} violations:\n{}\n{}",
        failures.len(),
        failures[..failures.len().min(10)].join("\n"),
        server.report()
    );
    assert_eq!(worker_pid(server, addr), worker, "the worker was replaced");
    let err = server.stderr();
    assert!(
        !err.contains("panicked") && !err.contains("Worker exited"),
        "{}",
        server.report()
    );
}

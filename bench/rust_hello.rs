//! A plain Rust "hello world" HTTP/1.1 server on ferricorn's stack — tokio's current-thread
//! runtime, `httparse`, one process, `TCP_NODELAY` — for `bench/`: the ceiling a server that
//! calls Python per request can approach (issue 16: ferricorn's hello world ≥ 0.8× this).
//!
//! `cargo build --release --example rust_hello`, then
//! `target/release/examples/rust_hello 127.0.0.1:PORT` or `... unix:/PATH`.
//!
//! It answers every request with the same 13 bytes and the headers ferricorn sends for
//! `bench/apps/hello.py` (Server, Date, Content-Type, Content-Length), keeps connections open
//! unless asked to close (HTTP/1.1 rules), answers pipelined requests together, and skips a
//! request body it is told the length of. Nothing else: it is a benchmark peer, not a server.

use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const BODY: &[u8] = b"Hello, World!";

/// The `Date` line, formatted once per second.
struct Date {
    secs: u64,
    line: Vec<u8>,
}

impl Date {
    fn append(&mut self, out: &mut Vec<u8>) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if now != self.secs || self.line.is_empty() {
            let t = chrono::DateTime::from_timestamp(now as i64, 0).unwrap_or_default();
            self.line = format!("Date: {}\r\n", t.format("%a, %d %b %Y %H:%M:%S GMT")).into_bytes();
            self.secs = now;
        }
        out.extend_from_slice(&self.line);
    }
}

/// Serves one connection until the client closes it, asks to, or sends garbage.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut io: S) -> io::Result<()> {
    let mut buf = BytesMut::with_capacity(8192);
    let mut out = Vec::with_capacity(4096);
    let mut date = Date {
        secs: 0,
        line: Vec::new(),
    };
    // Body bytes still to skip.
    let mut skip = 0usize;
    loop {
        if io.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
        let mut close = false;
        loop {
            if skip > 0 {
                let n = skip.min(buf.len());
                buf.advance(n);
                skip -= n;
                if skip > 0 {
                    break;
                }
            }
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            let n = match req.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => break,
                Err(_) => return Ok(()),
            };
            let http10 = req.version == Some(0);
            let mut keep = !http10;
            for h in req.headers.iter() {
                if h.name.eq_ignore_ascii_case("connection") {
                    let v = h.value.to_ascii_lowercase();
                    if v.windows(5).any(|w| w == b"close") {
                        keep = false;
                    } else if v.windows(10).any(|w| w == b"keep-alive") {
                        keep = true;
                    }
                } else if h.name.eq_ignore_ascii_case("content-length") {
                    skip = std::str::from_utf8(h.value)
                        .ok()
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                }
            }
            buf.advance(n);
            out.extend_from_slice(b"HTTP/1.1 200 OK\r\nServer: rust-hello\r\n");
            date.append(&mut out);
            out.extend_from_slice(b"Content-Type: text/plain\r\nContent-Length: 13\r\n");
            if !keep {
                out.extend_from_slice(b"Connection: close\r\n");
            } else if http10 {
                out.extend_from_slice(b"Connection: keep-alive\r\n");
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(BODY);
            if !keep {
                close = true;
                break;
            }
        }
        if !out.is_empty() {
            io.write_all(&out).await?;
            out.clear();
        }
        if close {
            return io.shutdown().await;
        }
    }
}

fn main() -> io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8000".to_string());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        if let Some(path) = addr.strip_prefix("unix:") {
            let _ = std::fs::remove_file(path);
            let l = tokio::net::UnixListener::bind(path)?;
            loop {
                if let Ok((s, _)) = l.accept().await {
                    tokio::spawn(serve(s));
                }
            }
        } else {
            let l = tokio::net::TcpListener::bind(&addr).await?;
            loop {
                if let Ok((s, _)) = l.accept().await {
                    let _ = s.set_nodelay(true);
                    tokio::spawn(serve(s));
                }
            }
        }
    })
}

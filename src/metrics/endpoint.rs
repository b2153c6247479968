//! The metrics listener (`--metrics-bind`), served by the master inside its own `poll()` loop:
//! no thread, no async runtime, nothing that can block the loop. Every socket is non-blocking;
//! each turn of the loop accepts what is waiting, reads what arrived, and writes what can be
//! written. Bounded: at most [`MAX_CONNS`] scrapes at once (the rest wait in the backlog), a
//! request head of at most [`MAX_HEAD`] bytes, [`TIMEOUT`] for a whole exchange, one request per
//! connection. `GET /metrics` (or `HEAD`) is answered; any other path is a 404.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, SockFlag, accept4, send};

use crate::sockets::{BindAddr, Listener};

/// Scrapes served at once.
pub const MAX_CONNS: usize = 16;
/// Largest request head read.
pub const MAX_HEAD: usize = 8192;
/// How long one scrape may take, from accept to the last byte written.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// The name the listener is handed to an upgraded master under (`LISTEN_FDNAMES`).
pub const FD_NAME: &str = "ferricorn-metrics";

struct Conn {
    fd: OwnedFd,
    head: Vec<u8>,
    /// The response and how much of it is written.
    out: Option<(Vec<u8>, usize)>,
    deadline: Instant,
}

/// The metrics listener and its open connections.
pub struct Endpoint {
    listener: Listener,
    conns: Vec<Conn>,
    /// Accepting scrapes (false in an upgraded master until it takes over, and in the old one
    /// after it handed over: the socket is shared, one master at a time answers).
    pub active: bool,
}

fn set_nonblocking(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor this process owns.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

impl Endpoint {
    /// Binds `--metrics-bind`.
    pub fn open(bind: &BindAddr) -> Result<Endpoint, String> {
        let mut ls = crate::sockets::bind_all(std::slice::from_ref(bind), 64)
            .map_err(|e| format!("--metrics-bind: {e}"))?;
        let l = ls.pop().expect("one listener per address");
        Endpoint::adopt(l).map_err(|e| format!("--metrics-bind: {e}"))
    }

    /// Serves a listener handed over by the master this one upgrades from.
    pub fn adopt(listener: Listener) -> std::io::Result<Endpoint> {
        set_nonblocking(listener.raw_fd())?;
        tracing::info!(
            "Metrics at: {}/metrics ({})",
            listener.local,
            std::process::id()
        );
        Ok(Endpoint {
            listener,
            conns: Vec::new(),
            active: true,
        })
    }

    pub fn listener(&self) -> &Listener {
        &self.listener
    }

    /// The descriptors to poll, with what to wait for.
    pub fn interest(&self) -> Vec<(BorrowedFd<'_>, nix::poll::PollFlags)> {
        use nix::poll::PollFlags;
        let mut v = Vec::with_capacity(self.conns.len() + 1);
        if self.active && self.conns.len() < MAX_CONNS {
            v.push((self.listener.fd(), PollFlags::POLLIN));
        }
        for c in &self.conns {
            let ev = if c.out.is_some() {
                PollFlags::POLLOUT
            } else {
                PollFlags::POLLIN
            };
            v.push((c.fd.as_fd(), ev));
        }
        v
    }

    /// Every descriptor it holds (a forked worker closes them).
    pub fn raw_fds(&self) -> Vec<RawFd> {
        std::iter::once(self.listener.raw_fd())
            .chain(self.conns.iter().map(|c| c.fd.as_raw_fd()))
            .collect()
    }

    /// The earliest connection deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.conns.iter().map(|c| c.deadline).min()
    }

    /// Does whatever can be done without waiting: accept, read, answer, write, expire.
    /// `render` makes the metrics text (called once per `GET /metrics`).
    pub fn service(&mut self, mut render: impl FnMut() -> String) {
        let now = Instant::now();
        while self.active && self.conns.len() < MAX_CONNS {
            match accept4(
                self.listener.raw_fd(),
                SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            ) {
                // SAFETY: accept4 returned a new descriptor that nothing else owns.
                Ok(fd) => self.conns.push(Conn {
                    fd: unsafe { OwnedFd::from_raw_fd(fd) },
                    head: Vec::new(),
                    out: None,
                    deadline: now + TIMEOUT,
                }),
                Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
                Err(_) => break,
            }
        }
        self.conns.retain_mut(|c| c.step(now, &mut render));
    }

    /// Stops answering and gives the socket up, leaving a unix socket's file to the master
    /// that took over.
    pub fn hand_over(&mut self) {
        self.active = false;
        self.conns.clear();
        self.listener.disown();
    }

    /// Closes the listener (and removes its socket file if ferricorn created it).
    pub fn close(self) {
        self.listener.close_and_unlink();
    }
}

impl Conn {
    /// Moves the exchange on; false once the connection is done with.
    fn step(&mut self, now: Instant, render: &mut impl FnMut() -> String) -> bool {
        if now >= self.deadline {
            return false;
        }
        if self.out.is_none() {
            let mut buf = [0u8; 2048];
            loop {
                match nix::unistd::read(&self.fd, &mut buf) {
                    Ok(0) => return false,
                    Ok(n) => {
                        self.head.extend_from_slice(&buf[..n]);
                        if self.head.len() > MAX_HEAD {
                            self.out = Some((simple(431, "request head too large\n"), 0));
                            break;
                        }
                    }
                    Err(Errno::EINTR) => continue,
                    Err(Errno::EAGAIN) => break,
                    Err(_) => return false,
                }
            }
            if self.out.is_none() {
                self.out = answer(&self.head, render).map(|r| (r, 0));
            }
        }
        let Some((out, at)) = &mut self.out else {
            return true;
        };
        while *at < out.len() {
            match send(self.fd.as_raw_fd(), &out[*at..], MsgFlags::MSG_NOSIGNAL) {
                Ok(n) => *at += n,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return true,
                Err(_) => return false,
            }
        }
        // SAFETY: shutdown on an open socket; the descriptor is closed when dropped.
        unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_WR) };
        false
    }
}

/// The response to a complete head, or None while it is incomplete.
fn answer(head: &[u8], render: &mut impl FnMut() -> String) -> Option<Vec<u8>> {
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut fields);
    match req.parse(head) {
        Ok(httparse::Status::Partial) => None,
        Err(_) => Some(simple(400, "malformed request\n")),
        Ok(httparse::Status::Complete(_)) => {
            let path = req.path.unwrap_or("").split('?').next().unwrap_or("");
            let method = req.method.unwrap_or("");
            Some(match (method, path) {
                ("GET" | "HEAD", "/metrics") => {
                    let body = render();
                    respond(200, super::render::CONTENT_TYPE, &body, method == "HEAD")
                }
                ("GET" | "HEAD", _) => simple(404, "not found: the metrics are at /metrics\n"),
                _ => simple(405, "only GET and HEAD\n"),
            })
        }
    }
}

fn simple(status: u16, text: &str) -> Vec<u8> {
    respond(status, "text/plain; charset=utf-8", text, false)
}

fn respond(status: u16, content_type: &str, body: &str, head_only: bool) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Request Header Fields Too Large",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_metrics_and_refuses_the_rest() {
        let mut render = || "x 1\n".to_string();
        assert!(answer(b"GET /metrics HTTP/1.1\r\nHost: a", &mut render).is_none());
        let r = String::from_utf8(
            answer(b"GET /metrics?x HTTP/1.1\r\nHost: a\r\n\r\n", &mut render).unwrap(),
        )
        .unwrap();
        assert!(
            r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\nx 1\n"),
            "{r}"
        );
        let r = answer(b"HEAD /metrics HTTP/1.1\r\n\r\n", &mut render).unwrap();
        assert!(r.ends_with(b"\r\n\r\n"));
        let r = answer(b"GET / HTTP/1.1\r\n\r\n", &mut render).unwrap();
        assert!(r.starts_with(b"HTTP/1.1 404 "));
        let r = answer(b"POST /metrics HTTP/1.1\r\n\r\n", &mut render).unwrap();
        assert!(r.starts_with(b"HTTP/1.1 405 "));
        let r = answer(b"GET /metrics HTTP/1.1\n\x01\r\n\r\n", &mut render).unwrap();
        assert!(r.starts_with(b"HTTP/1.1 400 "));
    }
}

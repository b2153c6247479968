//! Worker → master messages over one shared pipe.
//!
//! Every worker writes small frames to the same pipe; each frame is one `write(2)` of less than
//! `PIPE_BUF` bytes, which POSIX makes atomic, so frames from different workers never interleave.
//! The write end is non-blocking: if the master is stopped and the pipe fills, a heartbeat is
//! dropped rather than stalling a worker (and the master, once it runs again, will see silence).
//!
//! Frame: `pid: u32 LE | kind: u8 | len: u16 LE | payload[len]`.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::{FcntlArg, OFlag, fcntl};

/// A message from a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// The app is imported and the worker accepts connections.
    Booted,
    /// The worker's event loop is alive. `busy_since` is the monotonic time (ns) at which the
    /// oldest request still inside Python started, or 0 when none is; `requests` is the number of
    /// requests served so far.
    Heartbeat { busy_since: u64, requests: u64 },
    /// The worker reached `max-requests` and is draining; start its replacement now.
    Retiring { requests: u64 },
    /// The app could not be loaded: a one-line reason (the traceback is in the error log).
    BootFailed(String),
    /// `--reload`: a source file of the app changed (its path).
    SourceChanged(String),
}

const HEADER: usize = 7;
/// Largest payload: keeps every frame within PIPE_BUF (4096 on Linux).
const MAX_PAYLOAD: usize = 4000;

impl Msg {
    fn encode(&self, pid: u32) -> Vec<u8> {
        let (kind, payload): (u8, Vec<u8>) = match self {
            Msg::Booted => (1, vec![]),
            Msg::Heartbeat {
                busy_since,
                requests,
            } => {
                let mut p = busy_since.to_le_bytes().to_vec();
                p.extend_from_slice(&requests.to_le_bytes());
                (2, p)
            }
            Msg::Retiring { requests } => (3, requests.to_le_bytes().to_vec()),
            Msg::BootFailed(reason) => {
                let mut b = reason.as_bytes().to_vec();
                b.truncate(MAX_PAYLOAD);
                (4, b)
            }
            Msg::SourceChanged(path) => {
                let mut b = path.as_bytes().to_vec();
                b.truncate(MAX_PAYLOAD);
                (5, b)
            }
        };
        let mut out = Vec::with_capacity(HEADER + payload.len());
        out.extend_from_slice(&pid.to_le_bytes());
        out.push(kind);
        out.extend_from_slice(&(payload.len() as u16).to_le_bytes());
        out.extend_from_slice(&payload);
        out
    }

    fn decode(kind: u8, p: &[u8]) -> Option<Msg> {
        let u64_at = |i: usize| {
            p.get(i..i + 8)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
        };
        Some(match kind {
            1 => Msg::Booted,
            2 => Msg::Heartbeat {
                busy_since: u64_at(0)?,
                requests: u64_at(8)?,
            },
            3 => Msg::Retiring {
                requests: u64_at(0)?,
            },
            4 => Msg::BootFailed(String::from_utf8_lossy(p).into_owned()),
            5 => Msg::SourceChanged(String::from_utf8_lossy(p).into_owned()),
            _ => return None,
        })
    }
}

/// Creates the pipe: (master's read end, workers' write end). Both close on exec.
pub fn channel() -> nix::Result<(Receiver, Sender)> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    fcntl(&r, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    fcntl(&w, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    Ok((
        Receiver {
            fd: r,
            buf: Vec::new(),
        },
        Sender { fd: w },
    ))
}

/// The workers' end.
#[derive(Debug)]
pub struct Sender {
    fd: OwnedFd,
}

impl Sender {
    /// Sends one frame; a full pipe drops it (see the module docs).
    pub fn send(&self, msg: &Msg) {
        Self::send_on(self.fd.as_raw_fd(), msg);
    }

    /// [`Sender::send`] on a raw descriptor (for tasks that cannot borrow the sender).
    pub fn send_on(fd: RawFd, msg: &Msg) {
        if *msg == Msg::Booted {
            BOOTED_SENT.store(true, Ordering::Relaxed);
        }
        let frame = msg.encode(std::process::id());
        // SAFETY: writing a byte buffer to an open descriptor; a closed one only fails.
        let _ = unsafe { libc::write(fd, frame.as_ptr().cast(), frame.len()) };
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Set in a worker once it has reported `Booted`.
static BOOTED_SENT: AtomicBool = AtomicBool::new(false);

/// Whether this process (a worker) has told the master it serves: a failure before that is a
/// boot failure.
pub fn booted_sent() -> bool {
    BOOTED_SENT.load(Ordering::Relaxed)
}

/// The master's end.
#[derive(Debug)]
pub struct Receiver {
    fd: OwnedFd,
    buf: Vec<u8>,
}

impl Receiver {
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Reads what is available and returns the complete frames.
    pub fn drain(&mut self) -> Vec<(i32, Msg)> {
        let mut chunk = [0u8; 8192];
        loop {
            match nix::unistd::read(&self.fd, &mut chunk) {
                Ok(0) => break,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
        let mut out = Vec::new();
        let mut at = 0;
        while self.buf.len() - at >= HEADER {
            let h = &self.buf[at..at + HEADER];
            let pid = u32::from_le_bytes(h[0..4].try_into().unwrap()) as i32;
            let kind = h[4];
            let len = u16::from_le_bytes(h[5..7].try_into().unwrap()) as usize;
            if self.buf.len() - at < HEADER + len {
                break;
            }
            let payload = &self.buf[at + HEADER..at + HEADER + len];
            if let Some(m) = Msg::decode(kind, payload) {
                out.push((pid, m));
            }
            at += HEADER + len;
        }
        self.buf.drain(..at);
        out
    }
}

/// CLOCK_MONOTONIC in nanoseconds: comparable between the master and its workers.
pub fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_in_order() {
        let (mut rx, tx) = channel().unwrap();
        let msgs = vec![
            Msg::Booted,
            Msg::Heartbeat {
                busy_since: 42,
                requests: 7,
            },
            Msg::Retiring { requests: 9 },
            Msg::BootFailed("ModuleNotFoundError: No module named 'x'".into()),
            Msg::SourceChanged("/srv/app/views.py".into()),
        ];
        for m in &msgs {
            tx.send(m);
        }
        let got: Vec<Msg> = rx.drain().into_iter().map(|(_, m)| m).collect();
        assert_eq!(got, msgs);
        assert!(rx.drain().is_empty());
    }

    #[test]
    fn a_full_pipe_drops_instead_of_blocking() {
        let (mut rx, tx) = channel().unwrap();
        for _ in 0..100_000 {
            tx.send(&Msg::Heartbeat {
                busy_since: 0,
                requests: 0,
            });
        }
        let n = rx.drain().len();
        assert!(n > 0 && n < 100_000, "{n}");
    }
}

//! A unix-socket connection that asks epoll for write readiness only once a write would block.
//!
//! Why: tokio registers every stream for both read and write readiness, for its whole life. On a
//! unix socket the kernel tells the writer's waiters every time the peer consumes data
//! (`unix_write_space`), so each response nginx reads from an upstream connection woke the
//! worker's epoll with an `EPOLLOUT` nobody waits for, and the wake-up (an inter-processor
//! interrupt when the worker sleeps on the other CPU) was paid on nginx's CPU. TCP does not do
//! this (it signals write space only after a write found the buffer full), which is why only the
//! unix-socket path lost: measured on the 2-core VM of `bench/`, hello world behind nginx over a
//! unix socket, nginx's CPU per request 20.5–21.9 µs with tokio's `UnixStream` against
//! 14.2–16.3 µs with read interest only — the same as with bjoern, whose event loop adds write
//! interest only while a response waits, and the worker's own CPU per request halved.
//!
//! How: [`UnixConn`] registers the socket for read readiness only and writes to it directly.
//! A write that would block registers a duplicate of the descriptor for write readiness (a
//! second epoll entry for the same socket, so the read registration and any reader waiting on
//! it are left alone) and waits on that, for the rest of the connection's life: a connection
//! whose writes block is a slow reader or a large response, for which one more wake-up per
//! read of the peer costs nothing measurable. The write registration is made after the write
//! found the buffer full, and epoll reports the socket's state at registration, so room made
//! in between is not missed.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// An accepted unix-socket connection, registered for writes only after one would block.
pub struct UnixConn {
    read: AsyncFd<UnixStream>,
    /// A duplicate of the descriptor, registered for write readiness once a write blocked.
    write: Option<AsyncFd<OwnedFd>>,
}

/// Registers a descriptor-owning object with the runtime's reactor for `interest`.
pub fn register<T: AsFd + AsRawFd>(inner: T, interest: Interest) -> io::Result<AsyncFd<T>> {
    // SAFETY: `T` owns its descriptor (an `AsFd` type: a stream, a listener, an `OwnedFd`), so it
    // stays open and the same for as long as the `AsyncFd` holds it.
    unsafe { AsyncFd::register_with_interest(inner, interest) }.map_err(|e| e.into_parts().1)
}

/// Accepts the next connection on `listener` (registered for read readiness).
pub async fn accept(listener: &AsyncFd<std::os::unix::net::UnixListener>) -> io::Result<UnixConn> {
    loop {
        let mut guard = listener.readable().await?;
        match guard.try_io(|l| l.get_ref().accept()) {
            Ok(r) => return UnixConn::new(r?.0),
            Err(_would_block) => continue,
        }
    }
}

impl UnixConn {
    /// Takes over an accepted stream (made non-blocking here).
    pub fn new(stream: UnixStream) -> io::Result<UnixConn> {
        stream.set_nonblocking(true)?;
        Ok(UnixConn {
            read: register(stream, Interest::READABLE)?,
            write: None,
        })
    }

    /// Whether the connection has a write registration (a write has blocked).
    #[cfg(test)]
    fn waits_for_writes(&self) -> bool {
        self.write.is_some()
    }

    fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }
}

/// A system call's return value as a byte count or the error it set.
fn check(n: isize) -> io::Result<usize> {
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: sending from a live slice on a descriptor this connection owns; MSG_NOSIGNAL makes
    // a peer that went away an EPIPE error, not a SIGPIPE.
    check(unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) })
}

fn send_vectored(fd: RawFd, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: an all-zero msghdr is valid (no address, no control data); `IoSlice` is
    // ABI-compatible with `iovec`, and the slices outlive the call. MSG_NOSIGNAL as in `send`.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len().min(libc::UIO_MAXIOV as usize) as _;
    check(unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) })
}

impl UnixConn {
    /// Runs `op` (a send) once the socket can take it: straight away while writes do not
    /// block, on write readiness (through the duplicate descriptor) once one has.
    fn poll_send(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        op: impl Fn(RawFd) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        let fd = self.fd();
        loop {
            if let Some(w) = &self.write {
                let mut guard = ready!(w.poll_write_ready(cx))?;
                match guard.try_io(|_| op(fd)) {
                    Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                    Ok(r) => return Poll::Ready(r),
                    Err(_would_block) => {}
                }
                continue;
            }
            match op(fd) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let dup = self.read.get_ref().as_fd().try_clone_to_owned()?;
                    self.write = Some(register(dup, Interest::WRITABLE)?);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => return Poll::Ready(r),
            }
        }
    }
}

impl AsyncRead for UnixConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.read.poll_read_ready(cx))?;
            // SAFETY: the kernel writes at most `unfilled.len()` bytes into the unfilled part,
            // and exactly the `n` it returns are then marked initialised and filled.
            let unfilled = unsafe { buf.unfilled_mut() };
            let got = guard.try_io(|s| {
                // SAFETY: read(2) into the unfilled part, at most its length.
                check(unsafe {
                    libc::read(s.as_raw_fd(), unfilled.as_mut_ptr().cast(), unfilled.len())
                })
            });
            match got {
                Ok(Ok(n)) => {
                    // SAFETY: see above; `n` bytes were written by read(2).
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                // Not readable after all: the readiness was cleared, wait again.
                Err(_would_block) => {}
            }
        }
    }
}

impl AsyncWrite for UnixConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_send(cx, |fd| send(fd, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_send(cx, |fd| send_vectored(fd, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.read.get_ref().shutdown(std::net::Shutdown::Write))
    }
}

impl AsRawFd for UnixConn {
    fn as_raw_fd(&self) -> RawFd {
        self.fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn reads_and_small_writes_need_no_write_registration() {
        rt().block_on(async {
            let (a, mut b) = UnixStream::pair().unwrap();
            let mut c = UnixConn::new(a).unwrap();
            std::io::Write::write_all(&mut b, b"ping").unwrap();
            let mut got = [0u8; 4];
            c.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"ping");
            c.write_all(b"pong").await.unwrap();
            let mut back = [0u8; 4];
            b.read_exact(&mut back).unwrap();
            assert_eq!(&back, b"pong");
            assert!(!c.waits_for_writes());
        });
    }

    #[test]
    fn a_write_larger_than_the_buffer_waits_for_the_reader_and_arrives_whole() {
        rt().block_on(async {
            let (a, b) = UnixStream::pair().unwrap();
            let mut c = UnixConn::new(a).unwrap();
            let data: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
            let want = data.clone();
            let reader = std::thread::spawn(move || {
                let mut b = b;
                std::thread::sleep(std::time::Duration::from_millis(50));
                let mut got = Vec::new();
                b.read_to_end(&mut got).unwrap();
                got
            });
            c.write_all(&data).await.unwrap();
            assert!(c.waits_for_writes());
            // Reads still work on the read registration after the write one was added.
            c.shutdown().await.unwrap();
            assert_eq!(reader.join().unwrap(), want);
        });
    }

    #[test]
    fn a_reader_waiting_while_a_write_blocks_is_still_woken() {
        rt().block_on(async {
            let (a, b) = UnixStream::pair().unwrap();
            let c = UnixConn::new(a).unwrap();
            let (mut r, mut w) = tokio::io::split(c);
            let peer = std::thread::spawn(move || {
                let mut b = b;
                // Let the write fill the buffer and block, and the read wait, then drain the
                // write and answer.
                std::thread::sleep(std::time::Duration::from_millis(50));
                let mut sink = vec![0u8; 1 << 20];
                let mut total = 0;
                while total < 1 << 20 {
                    total += b.read(&mut sink).unwrap();
                }
                std::io::Write::write_all(&mut b, b"done").unwrap();
                b
            });
            let reading = tokio::spawn(async move {
                let mut got = [0u8; 4];
                r.read_exact(&mut got).await.unwrap();
                got
            });
            w.write_all(&vec![7u8; 1 << 20]).await.unwrap();
            let got = tokio::time::timeout(std::time::Duration::from_secs(10), reading)
                .await
                .expect("the reader is woken")
                .unwrap();
            assert_eq!(&got, b"done");
            drop(peer.join().unwrap());
        });
    }

    #[test]
    fn a_peer_that_went_away_is_an_error_not_a_signal() {
        rt().block_on(async {
            let (a, b) = UnixStream::pair().unwrap();
            let mut c = UnixConn::new(a).unwrap();
            drop(b);
            let e = c.write_all(b"x").await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        });
    }
}

//! The send timeout (`--send-timeout`, nginx's `send_timeout`): a connection whose client stops
//! reading is cut once a write has waited that long, so that a slow or absent reader costs only
//! its own connection — never a Python thread blocked behind a full channel, nor a reply held in
//! memory for ever. The limit is on the time between two successful writes, not on a whole
//! response: a long download at any steady rate is never cut.
//!
//! [`SendTimeout`] wraps a connection's stream. A write the kernel takes at once (every small
//! response) costs no timer: the timer is armed only when a write would block, and disarmed by
//! the next write that makes progress.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A stream whose writes fail with `TimedOut` after waiting `timeout` for the client.
pub struct SendTimeout<S> {
    inner: S,
    timeout: Option<Duration>,
    /// Reused across waits (allocated on the first write that would block).
    timer: Option<Pin<Box<Sleep>>>,
    /// The timer runs for the write waiting now.
    armed: bool,
}

impl<S> SendTimeout<S> {
    /// `None`: writes wait as long as it takes.
    pub fn new(inner: S, timeout: Option<Duration>) -> SendTimeout<S> {
        SendTimeout {
            inner,
            timeout,
            timer: None,
            armed: false,
        }
    }

    /// A write is waiting: starts the timer if it is not running; an error once it ran out.
    fn waiting<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let Some(t) = self.timeout else {
            return Poll::Pending;
        };
        if !self.armed {
            let deadline = Instant::now() + t;
            match &mut self.timer {
                Some(s) => s.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.armed = true;
        }
        let timer = self.timer.as_mut().expect("armed");
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing for --send-timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// What a write poll returned, with the timer's verdict when it must wait.
    fn check<T>(&mut self, r: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.armed = false;
                Poll::Ready(r)
            }
            Poll::Pending => self.waiting(cx),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SendTimeout<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SendTimeout<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.check(r, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.check(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.check(r, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.check(r, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_stops_cuts_the_write_after_the_timeout() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut w = SendTimeout::new(a, Some(Duration::from_secs(3)));
        // Fits the pipe: no wait, no timer.
        w.write_all(&[0u8; 1000]).await.unwrap();
        assert!(w.timer.is_none());
        let t0 = Instant::now();
        let e = w.write_all(&[0u8; 4096]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(t0.elapsed().as_secs(), 3);
        // A reader that keeps reading, however slowly, is never cut.
        let mut w = SendTimeout::new(w.inner, Some(Duration::from_secs(3)));
        let mut sink = vec![0u8; 512];
        let reader = tokio::spawn(async move {
            let mut got = 0;
            while got < 1024 + 20 * 512 {
                tokio::time::sleep(Duration::from_secs(2)).await;
                got += b.read(&mut sink).await.unwrap();
            }
        });
        w.write_all(&[0u8; 20 * 512]).await.unwrap();
        drop(w);
        reader.await.unwrap();
    }
}

//! Write coalescing across connections: a response is written after the other connections the
//! worker woke up in the same scheduler pass have produced theirs, so they reach the kernel back
//! to back.
//!
//! Why: on a single event-loop thread each connection's response used to be written the moment it
//! was ready, one `write` per connection spread over the pass (with `--threads 1` the app runs
//! between them). A client waiting on several connections — a load balancer, nginx's upstream
//! pool, a benchmark — was then woken once per response, and every wake-up of a sleeping task on
//! another CPU costs the worker an inter-processor interrupt (expensive on virtual machines). Event
//! loops such as bjoern's write in a separate phase after the read phase and so get this batching
//! for free.
//!
//! Only TCP connections are wrapped. Measured on the 2-core VM of bench/ (json4k, one worker,
//! interleaved runs, median worker CPU per request): TCP from wrk 125 → 92 µs, nginx over TCP
//! 122 → 108 µs; but a unix socket from oha 115 → 129 µs and nginx over a unix socket 119 → 127
//! µs, with lower throughput and a higher p99. On loopback TCP every write runs the receiver's
//! protocol processing and wake-up on the writer's CPU, which batching amortises; on a unix socket
//! batching did not pay for the delay.
//!
//! How: [`Coalesced`] wraps a connection's stream. The first write after a request has been read
//! is put back once if producing it took at least [`DEFER_AFTER`]: the task wakes itself and
//! returns `Pending`, which on tokio's current-thread runtime puts it at the back of the run queue,
//! behind every connection already woken, and the write goes out when the task is polled again.
//! The delay is therefore bounded by one pass over the tasks that were ready, never by a timer;
//! later writes of the same response (a streamed body) are not delayed, and a connection with
//! nothing else runnable loses one task poll, not time. A response produced faster than
//! [`DEFER_AFTER`] is written at once: its peer is most likely still awake (measured: hello world
//! lost ~0.5 µs of CPU per request to the extra poll and gained nothing).

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How long a response must have taken, from the first byte of its request read to its first
/// write, to be deferred. A wake-up costs the worker a few microseconds; a response that took
/// long enough for the peer to have gone to sleep is worth batching, a faster one is not.
pub const DEFER_AFTER: Duration = Duration::from_micros(20);

/// A stream whose first write after each read is deferred by one scheduler pass.
pub struct Coalesced<S> {
    inner: S,
    /// When the first bytes read since the last write arrived.
    read_at: Option<Instant>,
}

impl<S> Coalesced<S> {
    pub fn new(inner: S) -> Self {
        Coalesced {
            inner,
            read_at: None,
        }
    }

    /// Whether this write is the one to put back; if so, schedules the task again.
    fn defer(&mut self, cx: &mut Context<'_>) -> bool {
        match self.read_at.take() {
            Some(t) if t.elapsed() >= DEFER_AFTER => {
                cx.waker().wake_by_ref();
                true
            }
            _ => false,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesced<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if self.read_at.is_none() && matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before
        {
            self.read_at = Some(Instant::now());
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesced<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.defer(cx) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if self.defer(cx) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

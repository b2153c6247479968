//! The channel a streamed response body flows through: from the Python thread that iterates
//! the app's result to the connection that writes it.
//!
//! Bounded twice: in chunks (so a flood of tiny chunks cannot grow it) and in bytes (so a
//! generator of huge chunks cannot either). Within those bounds the producer runs ahead of the
//! socket, so a response of a few hundred KiB is produced in one go instead of one context
//! switch per chunk — which matters when the worker is pinned to a single CPU.

use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll};

use tokio::sync::mpsc;

use super::dispatch::Chunk;

/// Chunks queued at most.
pub const MAX_CHUNKS: usize = 64;
/// Bytes queued at most (a single larger chunk is still let through, alone).
pub const MAX_BYTES: usize = 1024 * 1024;

#[derive(Default)]
struct Budget {
    state: Mutex<(usize, bool)>, // (bytes queued, receiver gone)
    freed: Condvar,
    /// The same news for an async producer (an ASGI app's `send`).
    room: tokio::sync::Notify,
}

impl Budget {
    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, bool)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn release(&self, n: usize) {
        let mut s = self.lock();
        s.0 = s.0.saturating_sub(n);
        self.freed.notify_one();
        drop(s);
        self.room.notify_waiters();
    }
}

pub struct Sender {
    tx: mpsc::Sender<Chunk>,
    budget: Arc<Budget>,
}

pub struct Receiver {
    rx: mpsc::Receiver<Chunk>,
    budget: Arc<Budget>,
}

pub fn channel() -> (Sender, Receiver) {
    let (tx, rx) = mpsc::channel(MAX_CHUNKS);
    let budget = Arc::new(Budget::default());
    (
        Sender {
            tx,
            budget: budget.clone(),
        },
        Receiver { rx, budget },
    )
}

fn size(c: &Chunk) -> usize {
    c.as_ref().map(|b| b.len()).unwrap_or(0)
}

/// What a non-blocking send did.
pub enum TrySend {
    Sent,
    /// The receiver is gone (the client disconnected).
    Closed,
    /// It would have to wait; the chunk is handed back.
    Full(Chunk),
}

impl Sender {
    pub fn try_send(&self, c: Chunk) -> TrySend {
        let n = size(&c);
        {
            let mut s = self.budget.lock();
            if s.1 {
                return TrySend::Closed;
            }
            if s.0 > 0 && s.0 + n > MAX_BYTES {
                return TrySend::Full(c);
            }
            s.0 += n;
        }
        match self.tx.try_send(c) {
            Ok(()) => TrySend::Sent,
            Err(mpsc::error::TrySendError::Closed(_)) => TrySend::Closed,
            Err(mpsc::error::TrySendError::Full(c)) => {
                self.budget.release(n);
                TrySend::Full(c)
            }
        }
    }

    /// Sends, waiting for room; false when the receiver is gone. Must not run on the event
    /// loop (it blocks) and should not hold the GIL while waiting.
    pub fn send_blocking(&self, c: Chunk) -> bool {
        let n = size(&c);
        {
            let mut s = self.budget.lock();
            while !s.1 && s.0 > 0 && s.0 + n > MAX_BYTES {
                s = self.budget.freed.wait(s).unwrap_or_else(|e| e.into_inner());
            }
            if s.1 {
                return false;
            }
            s.0 += n;
        }
        self.tx.blocking_send(c).is_ok()
    }

    /// Sends, waiting for room without blocking the thread (for an async producer on another
    /// thread's event loop: this future needs no tokio runtime); false when the receiver is
    /// gone.
    pub async fn send(&self, c: Chunk) -> bool {
        let n = size(&c);
        loop {
            let room = self.budget.room.notified();
            let mut room = std::pin::pin!(room);
            room.as_mut().enable();
            {
                let mut s = self.budget.lock();
                if s.1 {
                    return false;
                }
                if s.0 == 0 || s.0 + n <= MAX_BYTES {
                    s.0 += n;
                    break;
                }
            }
            room.await;
        }
        self.tx.send(c).await.is_ok()
    }
}

impl Receiver {
    pub async fn recv(&mut self) -> Option<Chunk> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Chunk>> {
        let r = self.rx.poll_recv(cx);
        if let Poll::Ready(Some(c)) = &r {
            self.budget.release(size(c));
        }
        r
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut s = self.budget.lock();
        s.1 = true;
        self.budget.freed.notify_all();
        drop(s);
        self.budget.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn bounded_in_bytes_but_a_big_chunk_passes_alone() {
        let (tx, mut rx) = channel();
        let big = || Ok(Bytes::from(vec![0u8; 600 * 1024]));
        assert!(matches!(tx.try_send(big()), TrySend::Sent));
        assert!(
            matches!(tx.try_send(big()), TrySend::Full(_)),
            "1.2 MiB queued"
        );
        let waker = futures_task_noop();
        let mut cx = Context::from_waker(&waker);
        assert!(matches!(rx.poll_recv(&mut cx), Poll::Ready(Some(Ok(_)))));
        assert!(matches!(
            tx.try_send(Ok(Bytes::from(vec![0u8; 2 << 20]))),
            TrySend::Sent
        ));
    }

    #[test]
    fn a_blocked_sender_is_released_when_the_receiver_goes() {
        let (tx, rx) = channel();
        assert!(matches!(
            tx.try_send(Ok(Bytes::from(vec![0u8; MAX_BYTES]))),
            TrySend::Sent
        ));
        let t = std::thread::spawn(move || tx.send_blocking(Ok(Bytes::from_static(b"more"))));
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(rx);
        assert!(!t.join().unwrap());
    }

    fn futures_task_noop() -> std::task::Waker {
        std::task::Waker::noop().clone()
    }
}

//! The channel a streamed response body flows through: from the thread that produces it (a
//! WSGI pool thread iterating the app's result, an ASGI event loop's `send`) to the connection
//! that writes it.
//!
//! Bounded twice: in chunks (so a flood of tiny chunks cannot grow it) and in bytes (so a
//! generator of huge chunks cannot either). Within those bounds the producer runs ahead of the
//! socket, so a response of a few hundred KiB is produced in one go.
//!
//! Wake-ups are the cost here, not the copying: with the worker on one CPU, every wake-up of
//! the connection's thread preempts the producer, so waking it per chunk costs two context
//! switches per chunk (28 per 1 MiB response of 64 KiB chunks, measured). So the two sides wake
//! each other only when they must:
//! - The connection is woken by the first chunk after it went idle, by a producer about to wait
//!   for room, and by the end of the body. After it has taken chunks and
//!   found the queue empty, it is not woken per chunk: it looks again by itself after
//!   [`LOOK_AGAIN`] (a chunk produced during a burst goes out at most that late; one produced
//!   after a pause goes out at once).
//! - A producer waiting for room is woken when the queue has drained to half (or has room for
//!   its chunk when that is bigger), not per chunk taken.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use super::dispatch::Chunk;

/// Chunks queued at most.
pub const MAX_CHUNKS: usize = 64;
/// Bytes queued at most (a single larger chunk is still let through, alone).
pub const MAX_BYTES: usize = 1024 * 1024;
/// How soon a connection that has just taken chunks looks for more without being woken.
pub const LOOK_AGAIN: Duration = Duration::from_millis(1);

#[derive(Default)]
struct State {
    queue: VecDeque<Chunk>,
    /// Bytes in `queue`.
    bytes: usize,
    /// The receiver is gone (the client disconnected, or nothing more goes out).
    rx_gone: bool,
    /// The sender is gone: the body is complete.
    tx_gone: bool,
    /// The receiver's, while it waits for a chunk.
    waker: Option<Waker>,
    /// The receiver will look again by itself soon: a new chunk need not wake it.
    looking_again: bool,
    /// Producers wait for room (blocking or async), and the size of the chunk one waits with.
    producers_waiting: bool,
    need: usize,
}

impl State {
    fn fits(&self, n: usize) -> bool {
        self.queue.len() < MAX_CHUNKS && (self.bytes == 0 || self.bytes + n <= MAX_BYTES)
    }

    /// Queues `c` and says which waker (if any) to wake once the lock is released.
    fn push(&mut self, c: Chunk) -> Option<Waker> {
        self.bytes += size(&c);
        self.queue.push_back(c);
        if self.looking_again {
            None
        } else {
            self.waker.take()
        }
    }

    /// A producer is about to wait for room: the receiver must not be left to its timer.
    fn wait_for_room(&mut self, n: usize) -> Option<Waker> {
        self.producers_waiting = true;
        self.need = n;
        self.waker.take()
    }

    /// Whether waiting producers should look again now that a chunk was taken.
    fn room_for_waiting(&mut self) -> bool {
        let drained = (self.bytes <= MAX_BYTES / 2 && self.queue.len() <= MAX_CHUNKS / 2)
            || self.queue.is_empty();
        if self.producers_waiting && drained && self.fits(self.need) {
            self.producers_waiting = false;
            return true;
        }
        false
    }
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Room, for a blocking producer (a WSGI pool thread).
    freed: Condvar,
    /// The same news for an async producer (an ASGI app's `send`).
    room: tokio::sync::Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tell_producers(&self) {
        self.freed.notify_all();
        self.room.notify_waiters();
    }
}

pub struct Sender {
    shared: Arc<Shared>,
}

pub struct Receiver {
    shared: Arc<Shared>,
    /// Chunks were taken since the receiver last waited.
    took: bool,
    /// When to look again without being woken (see the module's comment).
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    timer_armed: bool,
}

pub fn channel() -> (Sender, Receiver) {
    let shared = Arc::new(Shared::default());
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver {
            shared,
            took: false,
            timer: None,
            timer_armed: false,
        },
    )
}

fn size(c: &Chunk) -> usize {
    c.as_ref().map(|b| b.len()).unwrap_or(0)
}

fn wake(w: Option<Waker>) {
    if let Some(w) = w {
        w.wake();
    }
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
        let mut s = self.shared.lock();
        if s.rx_gone {
            return TrySend::Closed;
        }
        if !s.fits(size(&c)) {
            return TrySend::Full(c);
        }
        let w = s.push(c);
        drop(s);
        wake(w);
        TrySend::Sent
    }

    /// Sends, waiting for room; false when the receiver is gone. Must not run on the event
    /// loop (it blocks) and should not hold the GIL while waiting.
    pub fn send_blocking(&self, c: Chunk) -> bool {
        let n = size(&c);
        let mut s = self.shared.lock();
        loop {
            if s.rx_gone {
                return false;
            }
            if s.fits(n) {
                let w = s.push(c);
                drop(s);
                wake(w);
                return true;
            }
            let w = s.wait_for_room(n);
            if let Some(w) = w {
                drop(s);
                w.wake();
                s = self.shared.lock();
                continue;
            }
            s = self.shared.freed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Sends, waiting for room without blocking the thread (for an async producer on another
    /// thread's event loop: this future needs no tokio runtime); false when the receiver is
    /// gone.
    pub async fn send(&self, c: Chunk) -> bool {
        let n = size(&c);
        loop {
            let room = self.shared.room.notified();
            let mut room = std::pin::pin!(room);
            room.as_mut().enable();
            let w = {
                let mut s = self.shared.lock();
                if s.rx_gone {
                    return false;
                }
                if s.fits(n) {
                    let w = s.push(c);
                    drop(s);
                    wake(w);
                    return true;
                }
                s.wait_for_room(n)
            };
            wake(w);
            room.await;
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let mut s = self.shared.lock();
        s.tx_gone = true;
        let w = s.waker.take();
        drop(s);
        wake(w);
    }
}

impl Receiver {
    pub async fn recv(&mut self) -> Option<Chunk> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Chunk>> {
        // A look-again time that has come ends the quiet spell: the next chunk wakes us.
        if self.timer_armed
            && let Some(t) = self.timer.as_mut()
            && t.as_mut().poll(cx).is_ready()
        {
            self.timer_armed = false;
        }
        let mut s = self.shared.lock();
        if let Some(c) = s.queue.pop_front() {
            s.bytes -= size(&c);
            let tell = s.room_for_waiting();
            drop(s);
            if tell {
                self.shared.tell_producers();
            }
            self.took = true;
            return Poll::Ready(Some(c));
        }
        if s.tx_gone {
            return Poll::Ready(None);
        }
        if std::mem::take(&mut self.took) && arm(&mut self.timer, &mut self.timer_armed, cx) {
            s.looking_again = true;
        } else if !self.timer_armed {
            s.looking_again = false;
        }
        match &s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => s.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// Arms the look-again timer (registering `cx` with it); false outside a tokio runtime, where
/// the receiver is simply woken per chunk. (A runtime must have its timer enabled: the worker's
/// and every test's are built with `enable_all`.)
fn arm(
    timer: &mut Option<Pin<Box<tokio::time::Sleep>>>,
    armed: &mut bool,
    cx: &mut Context<'_>,
) -> bool {
    let at = tokio::time::Instant::now() + LOOK_AGAIN;
    match timer.as_mut() {
        Some(t) => t.as_mut().reset(at),
        None => {
            if tokio::runtime::Handle::try_current().is_err() {
                return false;
            }
            *timer = Some(Box::pin(tokio::time::sleep_until(at)));
        }
    }
    let t = timer.as_mut().expect("just set");
    if t.as_mut().poll(cx).is_ready() {
        // Nothing is registered to wake us: the next chunk must.
        *armed = false;
        return false;
    }
    *armed = true;
    true
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut s = self.shared.lock();
        s.rx_gone = true;
        let queued = std::mem::take(&mut s.queue);
        let waiting = std::mem::take(&mut s.producers_waiting);
        // Our own waker (the connection task's) need not outlive us.
        let waker = s.waker.take();
        drop(s);
        drop(waker);
        if waiting {
            self.shared.tell_producers();
        }
        drop(queued);
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

    /// A waker that counts its wakes.
    struct Count(std::sync::atomic::AtomicUsize);
    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
    fn counting() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(Default::default()));
        (c.clone(), Waker::from(c))
    }
    fn wakes(c: &Count) -> usize {
        c.0.load(std::sync::atomic::Ordering::SeqCst)
    }
    fn chunk(n: usize) -> Chunk {
        Ok(Bytes::from(vec![7u8; n]))
    }
    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    #[test]
    fn after_a_burst_the_receiver_looks_again_by_itself_instead_of_being_woken_per_chunk() {
        let rt = runtime();
        let _in = rt.enter();
        let (tx, mut rx) = channel();
        let (count, waker) = counting();
        let mut cx = Context::from_waker(&waker);

        // Idle: the first chunk wakes it at once.
        assert!(rx.poll_recv(&mut cx).is_pending());
        assert!(matches!(tx.try_send(chunk(10)), TrySend::Sent));
        assert_eq!(wakes(&count), 1);
        assert!(matches!(rx.poll_recv(&mut cx), Poll::Ready(Some(Ok(_)))));

        // It took a chunk and found no more: the next ones do not wake it...
        assert!(rx.poll_recv(&mut cx).is_pending());
        for _ in 0..5 {
            assert!(matches!(tx.try_send(chunk(10)), TrySend::Sent));
        }
        assert_eq!(wakes(&count), 1, "woken per chunk during a burst");
        // ...its own timer does, within LOOK_AGAIN, and it takes them all.
        rt.block_on(tokio::time::sleep(LOOK_AGAIN * 5));
        assert_eq!(wakes(&count), 2, "the look-again timer did not fire");
        for _ in 0..5 {
            assert!(matches!(rx.poll_recv(&mut cx), Poll::Ready(Some(Ok(_)))));
        }

        // A look again that finds nothing ends the quiet spell: the next chunk wakes it.
        assert!(rx.poll_recv(&mut cx).is_pending());
        rt.block_on(tokio::time::sleep(LOOK_AGAIN * 5));
        assert_eq!(wakes(&count), 3);
        assert!(rx.poll_recv(&mut cx).is_pending());
        assert!(matches!(tx.try_send(chunk(10)), TrySend::Sent));
        assert_eq!(
            wakes(&count),
            4,
            "a chunk after a pause waits for the timer"
        );
        assert!(matches!(rx.poll_recv(&mut cx), Poll::Ready(Some(Ok(_)))));

        // The end of the body wakes it at once, timer or not.
        assert!(rx.poll_recv(&mut cx).is_pending());
        drop(tx);
        assert_eq!(wakes(&count), 5, "the end of the body waits for the timer");
        assert!(matches!(rx.poll_recv(&mut cx), Poll::Ready(None)));
    }

    #[test]
    fn a_producer_about_to_wait_for_room_wakes_a_receiver_that_would_look_again_later() {
        let rt = runtime();
        let _in = rt.enter();
        let (tx, mut rx) = channel();
        let (count, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        assert!(matches!(tx.try_send(chunk(10)), TrySend::Sent));
        assert!(matches!(rx.poll_recv(&mut cx), Poll::Ready(Some(Ok(_)))));
        assert!(rx.poll_recv(&mut cx).is_pending()); // looking again later
        for _ in 0..MAX_CHUNKS {
            assert!(matches!(tx.try_send(chunk(1)), TrySend::Sent));
        }
        assert_eq!(wakes(&count), 0);
        // The runtime is not driven, so no timer fires: only the producer can wake it.
        let producer = std::thread::spawn(move || tx.send_blocking(chunk(1)));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while wakes(&count) == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            wakes(&count),
            1,
            "a full queue left to the receiver's timer"
        );
        let mut taken = 0;
        while let Poll::Ready(Some(_)) = rx.poll_recv(&mut cx) {
            taken += 1;
        }
        assert!(producer.join().unwrap());
        while let Poll::Ready(Some(_)) = rx.poll_recv(&mut cx) {
            taken += 1;
        }
        assert_eq!(taken, MAX_CHUNKS + 1);
    }

    #[test]
    fn a_waiting_producer_is_woken_when_the_queue_has_drained_to_half_not_per_chunk() {
        let (tx, mut rx) = channel();
        let waker = futures_task_noop();
        let mut cx = Context::from_waker(&waker);
        for _ in 0..MAX_CHUNKS {
            assert!(matches!(tx.try_send(chunk(1)), TrySend::Sent));
        }
        let sent = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let producer = {
            let sent = sent.clone();
            std::thread::spawn(move || {
                let ok = tx.send_blocking(chunk(1));
                sent.store(true, std::sync::atomic::Ordering::SeqCst);
                ok
            })
        };
        // Wait until it waits (it says so under the lock).
        while !rx.shared.lock().producers_waiting {
            std::thread::sleep(Duration::from_millis(1));
        }
        for _ in 0..MAX_CHUNKS / 2 - 1 {
            assert!(matches!(rx.poll_recv(&mut cx), Poll::Ready(Some(Ok(_)))));
        }
        assert!(
            rx.shared.lock().producers_waiting,
            "the producer was told of room before the queue drained to half"
        );
        assert!(!sent.load(std::sync::atomic::Ordering::SeqCst));
        assert!(matches!(rx.poll_recv(&mut cx), Poll::Ready(Some(Ok(_)))));
        assert!(producer.join().unwrap());
        assert_eq!(rx.shared.lock().queue.len(), MAX_CHUNKS / 2 + 1);
    }

    fn futures_task_noop() -> std::task::Waker {
        std::task::Waker::noop().clone()
    }
}

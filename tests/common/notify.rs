//! A fake `NOTIFY_SOCKET`, as systemd's would be: a datagram socket the test owns, recording
//! every message the server sends (`READY=1`, `RELOADING=1`, `STATUS=`, `WATCHDOG=1`, ...)
//! with the time it arrived, so tests can check what systemd hears, in which order and when.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::server::wait_until;

/// A fake `NOTIFY_SOCKET`: records every datagram with the time it arrived.
pub struct Notify {
    /// The socket's path, for the server's `NOTIFY_SOCKET`.
    pub path: PathBuf,
    log: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Notify {
    /// Binds `notify.sock` in `dir` and records what arrives on it from a thread of its own.
    pub fn new(dir: &Path) -> Notify {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let l2 = log.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            // Ends when the test (and its temp dir) is gone: recv then fails for good.
            let deadline = Instant::now() + Duration::from_secs(300);
            while Instant::now() < deadline {
                match sock.recv(&mut buf) {
                    Ok(n) => l2.lock().unwrap().push((
                        Instant::now(),
                        String::from_utf8_lossy(&buf[..n]).into_owned(),
                    )),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if Arc::strong_count(&l2) == 1 {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        });
        Notify { path, log }
    }

    /// Every datagram so far, in order, with the time it arrived.
    pub fn messages(&self) -> Vec<(Instant, String)> {
        self.log.lock().unwrap().clone()
    }

    /// Every datagram so far, in order.
    pub fn texts(&self) -> Vec<String> {
        self.messages().into_iter().map(|(_, m)| m).collect()
    }

    /// Waits for a datagram containing `needle` (after `from` messages); returns its index.
    pub fn wait_for(&self, needle: &str, from: usize, timeout: Duration) -> usize {
        let mut found = None;
        wait_until(timeout, || {
            found = self
                .messages()
                .iter()
                .skip(from)
                .position(|(_, m)| m.contains(needle))
                .map(|i| i + from);
            found.is_some()
        });
        found.unwrap_or_else(|| {
            panic!(
                "no {needle:?} on the notify socket after message {from}; got {:#?}",
                self.messages()
            )
        })
    }
}

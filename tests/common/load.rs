//! A bounded client load for the tests that change a running server under traffic (HUP reloads,
//! USR2 upgrades, HUP with `--preload`) and must show that no request failed meanwhile.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::client::{Addr, Conn, get};

/// A bounded load: `threads` clients, half on fresh connections and half keep-alive, until
/// `stop` (or 120 s); counts successes in `ok`; returns (ok, failures with their reasons).
pub fn load(
    addr: Addr,
    threads: usize,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<(usize, Vec<String>)> {
    std::thread::spawn(move || {
        let errors = Arc::new(Mutex::new(Vec::new()));
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let (addr, stop, ok, errors) =
                    (addr.clone(), stop.clone(), ok.clone(), errors.clone());
                std::thread::spawn(move || {
                    let deadline = Instant::now() + Duration::from_secs(120);
                    let mut conn: Option<Conn> = None;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        let keep_alive = i % 2 == 1;
                        let result = if keep_alive {
                            match conn.as_mut() {
                                Some(c) => c.request("GET", "/", &[], None),
                                None => match Conn::connect(&addr) {
                                    Ok(c) => conn.insert(c).request("GET", "/", &[], None),
                                    Err(e) => Err(e),
                                },
                            }
                        } else {
                            get(&addr, "/")
                        };
                        match result {
                            Ok(r) if r.status == 200 => {
                                ok.fetch_add(1, Ordering::Relaxed);
                                if r.header("connection")
                                    .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                                {
                                    conn = None;
                                }
                            }
                            Ok(r) => errors.lock().unwrap().push(format!("status {}", r.status)),
                            Err(e) => {
                                errors.lock().unwrap().push(format!("{e}"));
                                conn = None;
                            }
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let errors = errors.lock().unwrap().clone();
        (ok.load(Ordering::Relaxed), errors)
    })
}

//! The master's statsd metrics (Gunicorn's arbiter sends the same): `gunicorn.workers`, a
//! gauge, whenever the number of workers changes; `gunicorn.backlog`, a histogram, every
//! second with `--enable-backlog-metric`. The master's socket also counts the master's own log
//! lines (`crate::statsd::install`); each worker opens its own after the fork.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::sockets::{Listener, LocalAddr};
use crate::statsd::Statsd;

/// How often the backlog is sent (Gunicorn: each turn of its arbiter's one-second loop).
const BACKLOG_EVERY: Duration = Duration::from_secs(1);

pub(super) struct MasterStatsd {
    client: Option<Arc<Statsd>>,
    /// `--statsd-host`, `--statsd-prefix`, `--dogstatsd-tags` it was opened with (a reload
    /// may change them).
    opened_for: Option<(Option<String>, String, String)>,
    last_workers: Option<u32>,
    next_backlog: Instant,
}

impl MasterStatsd {
    pub fn new() -> MasterStatsd {
        MasterStatsd {
            client: None,
            opened_for: None,
            last_workers: None,
            next_backlog: Instant::now(),
        }
    }

    /// Each turn of the master's loop: (re)open for `cfg` if its statsd settings changed, then
    /// send what is due.
    pub fn tick(&mut self, cfg: &Config, workers: u32, listeners: &[Listener]) {
        let same = self.opened_for.as_ref().is_some_and(|(h, p, t)| {
            *h == cfg.statsd_host && *p == cfg.statsd_prefix && *t == cfg.dogstatsd_tags
        });
        if !same {
            self.reopen(cfg);
        }
        let Some(s) = &self.client else {
            return;
        };
        if self.last_workers != Some(workers) {
            self.last_workers = Some(workers);
            s.gauge("gunicorn.workers", u64::from(workers));
        }
        if cfg.enable_backlog_metric && Instant::now() >= self.next_backlog {
            self.next_backlog = Instant::now() + BACKLOG_EVERY;
            s.histogram("gunicorn.backlog", backlog(listeners));
        }
    }

    /// The socket's descriptor, which a worker closes (it opens its own).
    pub fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        self.client.as_ref().map(|s| s.raw_fd())
    }

    fn reopen(&mut self, cfg: &Config) {
        self.opened_for = Some((
            cfg.statsd_host.clone(),
            cfg.statsd_prefix.clone(),
            cfg.dogstatsd_tags.clone(),
        ));
        self.last_workers = None;
        self.client = cfg.statsd_host.as_deref().and_then(|host| {
            match Statsd::open(host, &cfg.statsd_prefix, &cfg.dogstatsd_tags) {
                Ok(s) => {
                    tracing::info!("Sending statsd metrics to {}", s.target());
                    Some(Arc::new(s))
                }
                Err(e) => {
                    tracing::warn!("No statsd metrics: {e}");
                    None
                }
            }
        });
        crate::statsd::install(self.client.clone());
    }
}

/// Connections waiting to be accepted, summed over the TCP listeners (Linux `TCP_INFO`'s
/// `tcpi_unacked` of a listening socket; unix sockets have no such count, as in Gunicorn).
fn backlog(listeners: &[Listener]) -> u64 {
    listeners
        .iter()
        .filter(|l| matches!(l.local, LocalAddr::Tcp(_)))
        .filter_map(|l| {
            // SAFETY: an all-zero tcp_info is valid; getsockopt writes at most `len` bytes of
            // it into memory we own, on a descriptor the listener keeps open.
            unsafe {
                let mut info: libc::tcp_info = std::mem::zeroed();
                let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
                let r = libc::getsockopt(
                    l.raw_fd(),
                    libc::IPPROTO_TCP,
                    libc::TCP_INFO,
                    (&mut info as *mut libc::tcp_info).cast(),
                    &mut len,
                );
                (r == 0).then_some(u64::from(info.tcpi_unacked))
            }
        })
        .sum()
}

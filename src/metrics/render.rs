//! A scrape's numbers in the Prometheus text format (OpenMetrics 1.0), written by the
//! `prometheus-client` crate's encoder from a [`Snapshot`] (a custom collector: the numbers
//! come from the shared region and the master's book, not from the crate's own metric types).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use super::book::{RESTART_REASONS, Totals};
use super::shared::{BUCKETS_US, METHODS, REJECT_STATUSES, STATUS_CLASSES};

/// The Content-Type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the master tells a scrape about its workers.
#[derive(Debug, Clone, Default)]
pub struct MasterView {
    /// Live workers by state (`booting`, `serving`, ...).
    pub workers: Vec<(&'static str, u64)>,
    /// Python threads of the workers that serve (`--threads` each).
    pub python_threads: u64,
}

/// Every number of one scrape.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub totals: Totals,
    pub in_flight: u64,
    pub connections: u64,
    pub python_busy: u64,
    pub python_queued: u64,
    pub restarts: [u64; 4],
    pub reloads: [u64; 2],
    pub upgrades: [u64; 2],
    pub import_seconds: f64,
    pub python: String,
    pub view: MasterView,
}

type Fmt = Result<(), std::fmt::Error>;

fn counter(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: u64,
) -> Fmt {
    let m = e.encode_descriptor(name, help, unit, MetricType::Counter)?;
    ConstCounter::new(v).encode(m)
}

fn gauge<V: prometheus_client::encoding::EncodeGaugeValue + std::fmt::Debug + Send + Sync>(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: V,
) -> Fmt {
    let m = e.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    ConstGauge::new(v).encode(m)
}

/// A counter with one label, one series per value.
fn labelled(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    label: &str,
    series: &[(&str, u64)],
) -> Fmt {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, n) in series {
        let labels = [(label, *value)];
        ConstCounter::new(*n).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> Fmt {
        let t = &self.totals;
        let m = e.encode_descriptor(
            "build",
            "The ferricorn version and the Python it runs the app on.",
            None,
            MetricType::Info,
        )?;
        let mut m = m;
        m.encode_info(&[
            ("version", crate::VERSION),
            ("python", self.python.as_str()),
        ])?;

        let mut m = e.encode_descriptor(
            "requests",
            "Requests answered, by method and status class (the health path's aside).",
            None,
            MetricType::Counter,
        )?;
        for (mi, method) in METHODS.iter().enumerate() {
            for (si, class) in STATUS_CLASSES.iter().enumerate() {
                let labels = [("method", *method), ("status", *class)];
                ConstCounter::new(t.requests[mi][si]).encode(m.encode_family(&labels)?)?;
            }
        }

        // Per bucket, not cumulative: the encoder adds them up for `le`.
        let buckets: Vec<(f64, u64)> = BUCKETS_US
            .iter()
            .map(|b| *b as f64 / 1e6)
            .chain([f64::INFINITY])
            .zip(t.duration)
            .collect();
        let count = t.duration.iter().sum();
        let mut m = e.encode_descriptor(
            "request_duration",
            "Time from a request's head to the end of its response.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            t.duration_sum_us as f64 / 1e6,
            count,
            &buckets,
            None,
        )?;

        gauge(
            &mut e,
            "requests_in_flight",
            "Requests whose head was read and whose response is not finished.",
            None,
            self.in_flight as i64,
        )?;
        counter(
            &mut e,
            "request_body",
            "Request body bytes read.",
            Some(&Unit::Bytes),
            t.request_body_bytes,
        )?;
        counter(
            &mut e,
            "response_body",
            "Response body bytes sent.",
            Some(&Unit::Bytes),
            t.response_body_bytes,
        )?;
        let rejected: Vec<(String, u64)> = REJECT_STATUSES
            .iter()
            .map(|s| s.to_string())
            .chain(["other".to_string()])
            .zip(t.rejected)
            .collect();
        let rejected: Vec<(&str, u64)> = rejected.iter().map(|(s, n)| (s.as_str(), *n)).collect();
        labelled(
            &mut e,
            "rejected_requests",
            "Requests the server refused itself (malformed, over a limit, too slow), by status.",
            "status",
            &rejected,
        )?;
        labelled(
            &mut e,
            "health_checks",
            "Answers of the health path (--health-path), by status.",
            "status",
            &[("200", t.health[0]), ("503", t.health[1])],
        )?;
        gauge(
            &mut e,
            "connections",
            "Open client connections.",
            None,
            self.connections as i64,
        )?;

        let mut m = e.encode_descriptor(
            "workers",
            "Worker processes by state.",
            None,
            MetricType::Gauge,
        )?;
        for (state, n) in &self.view.workers {
            let labels = [("state", *state)];
            ConstGauge::new(*n as i64).encode(m.encode_family(&labels)?)?;
        }
        let restarts: Vec<(&str, u64)> =
            RESTART_REASONS.iter().copied().zip(self.restarts).collect();
        labelled(
            &mut e,
            "worker_restarts",
            "Workers replaced, by reason (timeout, crash, max_requests, reload).",
            "reason",
            &restarts,
        )?;
        labelled(
            &mut e,
            "reloads",
            "Reloads (HUP), by result.",
            "result",
            &[("ok", self.reloads[0]), ("failed", self.reloads[1])],
        )?;
        labelled(
            &mut e,
            "upgrades",
            "Upgrades (USR2), by result: a success is counted by the new master, a failure by \
             the old one (which keeps serving).",
            "result",
            &[("ok", self.upgrades[0]), ("failed", self.upgrades[1])],
        )?;
        gauge(
            &mut e,
            "python_threads",
            "Python threads of the workers that serve (--threads each).",
            None,
            self.view.python_threads as i64,
        )?;
        gauge(
            &mut e,
            "python_threads_busy",
            "Python threads running the app now.",
            None,
            self.python_busy as i64,
        )?;
        gauge(
            &mut e,
            "python_requests_queued",
            "Requests waiting for a free Python thread.",
            None,
            self.python_queued as i64,
        )?;
        gauge(
            &mut e,
            "app_import",
            "How long the most recently booted worker took to import the app.",
            Some(&Unit::Seconds),
            self.import_seconds,
        )?;
        Ok(())
    }
}

/// The text of one scrape.
pub fn render(snapshot: Snapshot) -> String {
    let mut registry = Registry::with_prefix("ferricorn");
    registry.register_collector(Box::new(snapshot));
    let mut out = String::with_capacity(8192);
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

//! Reading ferricorn's Prometheus metrics in tests: where the master serves them (its
//! "Metrics at:" line), and one scrape as a map from series (`name{labels}`) to value.

use std::collections::BTreeMap;
use std::time::Duration;

use super::client::{Addr, get};
use super::server::Server;

/// The metrics listener the master logged ("Metrics at: http://HOST:PORT/metrics (PID)").
pub fn metrics_addr(s: &Server) -> Addr {
    let line = s.wait_for_stderr("Metrics at: ", Duration::from_secs(30));
    let rest = &line[line.find("Metrics at: ").unwrap() + 12..];
    let url = rest.split_whitespace().next().unwrap();
    let url = url.strip_suffix("/metrics").unwrap_or(url);
    Addr::parse(url).unwrap_or_else(|| panic!("cannot parse {line:?}"))
}

/// One scrape: every sample line as `series -> value` (comments left out).
pub fn scrape(addr: &Addr) -> BTreeMap<String, f64> {
    let r = get(addr, "/metrics").unwrap_or_else(|e| panic!("scrape {addr}: {e}"));
    assert_eq!(r.status, 200, "{}", r.text());
    parse(&r.text())
}

/// Parses the text format's samples.
pub fn parse(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            let v = match v {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value in {l:?}")),
            };
            (k.to_string(), v)
        })
        .collect()
}

/// The value of a series, 0 when absent.
pub fn value(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    m.get(series).copied().unwrap_or(0.0)
}

/// The sum of every series of a metric (`name` or `name{...}`).
pub fn total(m: &BTreeMap<String, f64>, name: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| *k == name || k.starts_with(&format!("{name}{{")))
        .map(|(_, v)| v)
        .sum()
}

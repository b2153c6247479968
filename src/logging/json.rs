//! JSON lines for log collectors (`--log-format json`, `--access-log-format json`): one object
//! per line, written with `serde_json` (so every string is escaped and the line is valid JSON
//! whatever a client sent). Field names are those of the journald entries ferricorn writes
//! (`CLIENT_ADDR`, `REQUEST_METHOD`, ...), plus `timestamp`, `level` and `message` for the
//! error log. Used when the log is not journald (which has those fields natively).

use serde::Serialize;

use super::access::{AccessRecord, Headers};
use crate::proxy::Peer;

/// RFC 3339, milliseconds, with the local offset: `2026-12-02T00:49:42.123+00:00`.
pub fn timestamp() -> String {
    chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, false)
}

#[derive(Serialize)]
#[allow(non_snake_case)]
struct Event<'a> {
    timestamp: String,
    level: &'a str,
    message: &'a str,
    PID: u32,
    /// The event's other fields (the four above win over a field of the same name).
    #[serde(flatten)]
    fields: std::collections::BTreeMap<&'a str, &'a str>,
}

/// One error-log event. `fields`: the event's other fields, by name.
pub fn error_line(level: &str, message: &str, fields: &[(String, String)]) -> Vec<u8> {
    let event = Event {
        timestamp: timestamp(),
        level,
        message,
        PID: std::process::id(),
        fields: fields
            .iter()
            .filter(|(k, _)| !["timestamp", "level", "message", "PID"].contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
    };
    let mut out = serde_json::to_vec(&event).unwrap_or_default();
    out.push(b'\n');
    out
}

#[derive(Serialize)]
#[allow(non_snake_case)]
struct Access<'a> {
    timestamp: String,
    CLIENT_ADDR: String,
    REQUEST_METHOD: &'a str,
    REQUEST_PATH: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    REQUEST_QUERY: &'a str,
    PROTOCOL: &'a str,
    STATUS: u16,
    BYTES: u64,
    DURATION_USEC: u64,
    WORKER_PID: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    REFERER: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    USER_AGENT: Option<String>,
}

fn first(h: &dyn Headers, name: &str) -> Option<String> {
    let mut v = None;
    h.each(name, &mut |b| {
        if v.is_none() {
            v = Some(String::from_utf8_lossy(b).into_owned());
        }
    });
    v
}

/// Appends one access record as a JSON line.
pub fn access_line(rec: &AccessRecord<'_>, out: &mut Vec<u8>) {
    let path = if rec.path.is_empty() {
        rec.target.split('?').next().unwrap_or("")
    } else {
        rec.path
    };
    let line = Access {
        timestamp: timestamp(),
        CLIENT_ADDR: match rec.peer {
            Peer::Tcp(a) => a.ip().to_string(),
            Peer::Unix => String::new(),
        },
        REQUEST_METHOD: rec.method,
        REQUEST_PATH: path,
        REQUEST_QUERY: rec.query,
        PROTOCOL: rec.protocol,
        STATUS: rec.status,
        BYTES: rec.sent,
        DURATION_USEC: rec.duration.as_micros() as u64,
        WORKER_PID: std::process::id(),
        REFERER: first(rec.req_headers, "referer"),
        USER_AGENT: first(rec.req_headers, "user-agent"),
    };
    if serde_json::to_writer(&mut *out, &line).is_ok() {
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lines_are_one_json_object() {
        let line = error_line(
            "WARNING",
            "a \"quoted\"\nmessage",
            &[("peer".into(), "x".into()), ("level".into(), "no".into())],
        );
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["level"], "WARNING");
        assert_eq!(v["message"], "a \"quoted\"\nmessage");
        assert_eq!(v["peer"], "x");
        assert_eq!(v["PID"], std::process::id());
        assert!(v["timestamp"].as_str().unwrap().contains('T'));
    }
}

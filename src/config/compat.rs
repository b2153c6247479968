//! What ferricorn does with Gunicorn's values: the verdicts the table's statuses give, and the
//! settings whose verdict depends on the value (`-k`, `--protocol`, `--http-protocols`, ...).

use super::spec::{Spec, Status, Verdict};
use crate::sockets::BindAddr;

/// The verdict of a setting's [`Status`]: nothing to say at the default; otherwise a note
/// (ignored), or a refusal (refused, not yet).
pub fn status_verdict(spec: &Spec, at_default: bool) -> Verdict {
    if at_default {
        return Verdict::Fine;
    }
    let name = spec.gunicorn_name().unwrap_or(spec.name);
    match spec.status {
        Status::Works => Verdict::Fine,
        Status::Ignored(why) => {
            Verdict::Note(format!("`{name}` has no effect in ferricorn: {why}"))
        }
        Status::Refused(why) => {
            Verdict::Refuse(format!("`{name}` is not supported by ferricorn: {why}"))
        }
        Status::NotYet(what) => Verdict::Refuse(format!(
            "`{name}` is not implemented in ferricorn yet: {what}"
        )),
    }
}

/// The ASGI worker classes (Gunicorn's own and uvicorn's).
const ASGI_CLASSES: &[&str] = &[
    "asgi",
    "gunicorn.workers.gasgi.ASGIWorker",
    "uvicorn.workers.UvicornWorker",
    "uvicorn.workers.UvicornH11Worker",
    "uvicorn_worker.UvicornWorker",
    "uvicorn_worker.UvicornH11Worker",
];

/// Whether a `-k` class means an ASGI worker.
pub fn is_asgi_class(class: &str) -> bool {
    let c = class.trim();
    ASGI_CLASSES.contains(&c.strip_prefix("egg:gunicorn#").unwrap_or(c))
}

/// `-k` / `--worker-class`. Gunicorn's `sync` and `gthread` are ferricorn's workers (an event
/// loop per worker and `--threads` Python threads; with `sync` and `--threads` above 1
/// Gunicorn too switches to threads); the ASGI classes are ferricorn's ASGI worker. Anything
/// else is refused by name.
pub fn worker_class(class: &str) -> Verdict {
    // `egg:gunicorn#gevent` is Gunicorn's old spelling of `gevent`.
    let c = class.trim();
    let c = c.strip_prefix("egg:gunicorn#").unwrap_or(c);
    match c {
        "sync"
        | "gthread"
        | "gunicorn.workers.sync.SyncWorker"
        | "gunicorn.workers.gthread.ThreadWorker" => Verdict::Fine,
        _ if ASGI_CLASSES.contains(&c) => Verdict::Fine,
        _ if [
            "gevent",
            "gevent_wsgi",
            "gevent_pywsgi",
            "eventlet",
            "tornado",
        ]
        .contains(&c)
            || c.starts_with("gunicorn.workers.ggevent.")
            || c.starts_with("gunicorn.workers.geventlet.")
            || c.starts_with("gunicorn.workers.gtornado.") =>
        {
            let kind = if c.contains("eventlet") {
                "eventlet"
            } else if c.contains("tornado") {
                "tornado"
            } else {
                "gevent"
            };
            Verdict::Refuse(format!(
                "worker class `{c}`: ferricorn has no {kind} worker; use --threads N (each \
                 worker keeps many connections on its event loop, and N Python threads run \
                 the app)"
            ))
        }
        _ => Verdict::Refuse(format!(
            "worker class `{c}` cannot be used: ferricorn runs its own workers (`sync` or \
             `gthread`, with --threads N), not Python worker classes"
        )),
    }
}

/// `--logger-class`: Gunicorn's default (and its `simple` alias) is what ferricorn's error log
/// does; another class is Python code ferricorn cannot run for its own log.
pub fn logger_class(class: &str) -> Verdict {
    match class.trim() {
        "gunicorn.glogging.Logger" | "simple" => Verdict::Fine,
        other => Verdict::Refuse(format!(
            "logger class `{other}` cannot be used: ferricorn writes its log itself, in \
             Gunicorn's format, to --error-logfile or journald; configure the app's own \
             loggers in the app"
        )),
    }
}

/// `--http-protocols`: HTTP/1.1 only; HTTP/2 needs TLS, which is the proxy's.
pub fn http_protocols(p: &[String]) -> Verdict {
    match p.iter().find(|p| *p != "h1") {
        None => Verdict::Fine,
        Some(other) => Verdict::Refuse(format!(
            "`http_protocols` {other} is not supported by ferricorn: it serves HTTP/1.1 to the \
             proxy in front; enable HTTP/2 there (nginx `listen 443 ssl; http2 on;`)"
        )),
    }
}

/// `--http2-cleartext`: only `off`.
pub fn http2_cleartext(v: &str) -> Verdict {
    if v.trim().eq_ignore_ascii_case("off") {
        Verdict::Fine
    } else {
        Verdict::Refuse(format!(
            "`http2_cleartext` {v} is not supported by ferricorn: it serves HTTP/1.1 only; \
             terminate HTTP/2 in the proxy in front"
        ))
    }
}

/// `--protocol`: `http` only.
pub fn protocol(v: &str) -> Verdict {
    if v == "http" {
        Verdict::Fine
    } else {
        Verdict::Refuse(format!(
            "`protocol` {v} is not supported by ferricorn: it speaks HTTP only; in nginx use \
             `proxy_pass http://unix:/run/app/socket;` instead of `uwsgi_pass`"
        ))
    }
}

/// `--header-map`: ferricorn always drops header names with `_` (Gunicorn's `drop`).
pub fn header_map(v: &str) -> Verdict {
    match v {
        "drop" => Verdict::Fine,
        "dangerous" => Verdict::Refuse(
            "`header_map` dangerous is not supported by ferricorn: a header name with `_` \
             could impersonate one with `-`, so such headers are always dropped; have the \
             proxy rename the header the app needs"
                .into(),
        ),
        other => Verdict::Refuse(format!(
            "`header_map` {other} is not supported by ferricorn: header names with `_` are \
             dropped (Gunicorn's `drop`); have the proxy refuse them if they must fail"
        )),
    }
}

/// A list of addresses in a config file: `"a,b"` (Gunicorn's form) or `["a", "b"]`.
pub fn accept_comma_string(v: toml::Value) -> Result<String, String> {
    match v {
        toml::Value::String(s) => Ok(s),
        toml::Value::Array(a) => a
            .into_iter()
            .map(|i| match i {
                toml::Value::String(s) => Ok(s),
                other => Err(format!(
                    "invalid type: {}, expected a string",
                    other.type_str()
                )),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|v| v.join(",")),
        other => Err(format!(
            "invalid type: {}, expected a string or a list of strings",
            other.type_str()
        )),
    }
}

/// `PORT` (Gunicorn's, and Heroku's): listen on all addresses at that port.
pub fn port_bind(v: &str) -> Result<Vec<BindAddr>, String> {
    let port: u16 = v
        .trim()
        .parse()
        .map_err(|_| "expected a port number 0-65535".to_string())?;
    Ok(vec![BindAddr::Tcp {
        host: "0.0.0.0".into(),
        port,
    }])
}

/// `--statsd-host`: `HOST:PORT`, `HOST` (port 8125) or `unix://PATH` (`crate::statsd`).
pub fn statsd_address(v: &str) -> Result<(), String> {
    crate::statsd::Target::parse(v).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(v: Verdict) -> String {
        match v {
            Verdict::Refuse(m) => m,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn worker_classes() {
        for ok in [
            "sync",
            "gthread",
            "gunicorn.workers.gthread.ThreadWorker",
            "egg:gunicorn#sync",
        ] {
            assert_eq!(worker_class(ok), Verdict::Fine, "{ok}");
            assert!(!is_asgi_class(ok));
        }
        for asgi in [
            "asgi",
            "uvicorn.workers.UvicornWorker",
            "uvicorn_worker.UvicornWorker",
        ] {
            assert_eq!(worker_class(asgi), Verdict::Fine, "{asgi}");
            assert!(is_asgi_class(asgi));
        }
        let g = refused(worker_class("gevent"));
        assert!(g.contains("no gevent worker; use --threads N"), "{g}");
        let e = refused(worker_class("gunicorn.workers.geventlet.EventletWorker"));
        assert!(e.contains("no eventlet worker"), "{e}");
        let other = refused(worker_class("myapp.workers.Custom"));
        assert!(other.contains("`myapp.workers.Custom`"), "{other}");
    }

    #[test]
    fn statsd_addresses() {
        assert!(statsd_address("localhost:8125").is_ok());
        assert!(statsd_address("unix:///run/statsd.sock").is_ok());
        assert!(statsd_address("host:port").is_err());
    }
}

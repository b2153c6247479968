//! Logging: the error log (through `tracing`) and the access log (see [`access`]).
//!
//! Both logs are [`Sink`]s opened by the master before it forks, so a bad path fails at startup
//! and every process appends to the same open file. `USR1` calls [`reopen`] in the master and in
//! each worker (logrotate's `postrotate`); a reload (HUP) calls [`reconfigure`]. Every line is
//! written with a single `write(2)` on an `O_APPEND` descriptor, so lines from several processes
//! never interleave.
//!
//! When stderr is the journal (`JOURNAL_STREAM`, see [`journal`]) error-log events go to journald
//! natively, with their priority and fields; so do access lines when stdout is the journal.
//! Otherwise `--log-format json` and `--access-log-format json` write JSON lines ([`json`]).

pub mod access;
pub mod journal;
pub mod json;

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

use crate::config::{Config, LogLevel};

/// Where a log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stdout,
    Stderr,
    File(PathBuf),
}

impl Target {
    /// `-` means the given standard stream; anything else is a file path.
    pub fn from_spec(spec: &str, dash: Target) -> Target {
        if spec == "-" {
            dash
        } else {
            Target::File(PathBuf::from(spec))
        }
    }
}

/// An append-only log destination that can be reopened.
#[derive(Debug)]
pub struct Sink {
    target: Target,
    file: RwLock<Option<File>>,
}

fn open_append(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o644)
        .open(path)
}

impl Sink {
    pub fn open(target: Target) -> Result<Sink, String> {
        let file = match &target {
            Target::File(p) => Some(
                open_append(p).map_err(|e| format!("cannot open log file {}: {e}", p.display()))?,
            ),
            _ => None,
        };
        Ok(Sink {
            target,
            file: RwLock::new(file),
        })
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    fn fd_of(&self, file: &Option<File>) -> RawFd {
        match (&self.target, file) {
            (Target::Stdout, _) => 1,
            (Target::Stderr, _) => 2,
            (Target::File(_), Some(f)) => f.as_raw_fd(),
            (Target::File(_), None) => 2,
        }
    }

    /// The descriptor lines currently go to.
    pub fn raw_fd(&self) -> RawFd {
        let guard = self.file.read().unwrap_or_else(|e| e.into_inner());
        self.fd_of(&guard)
    }

    /// Writes `buf` (one or more whole lines). Errors are dropped: a log must never stop the
    /// server, and there is nowhere else to report them.
    pub fn write(&self, buf: &[u8]) {
        let guard = self.file.read().unwrap_or_else(|e| e.into_inner());
        let fd = self.fd_of(&guard);
        let mut rest = buf;
        while !rest.is_empty() {
            // SAFETY: `fd` is open for as long as the read guard is held.
            let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
            if n < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return;
            }
            rest = &rest[n as usize..];
        }
    }

    /// Opens the file again by name (after logrotate moved it). Standard streams are left alone.
    pub fn reopen(&self) -> io::Result<()> {
        if let Target::File(p) = &self.target {
            let f = open_append(p)?;
            *self.file.write().unwrap_or_else(|e| e.into_inner()) = Some(f);
        }
        Ok(())
    }
}

/// Where access lines go.
#[derive(Debug, Clone)]
pub enum AccessOut {
    Sink(Arc<Sink>),
    /// To journald, one entry per request with structured fields.
    Journal,
}

static ERROR_LOG: RwLock<Option<Arc<Sink>>> = RwLock::new(None);
static ACCESS_LOG: RwLock<Option<AccessOut>> = RwLock::new(None);
/// Error-log events go to journald.
static ERRORS_TO_JOURNAL: AtomicBool = AtomicBool::new(false);
/// Error-log lines are JSON (`--log-format json`).
static ERRORS_AS_JSON: AtomicBool = AtomicBool::new(false);
/// Most verbose level shown: 1 error … 4 debug.
static LEVEL: AtomicU8 = AtomicU8::new(3);
static JOURNALD: OnceLock<Option<tracing_journald::Layer>> = OnceLock::new();

/// The target of access-log events sent to journald.
pub const ACCESS_TARGET: &str = "ferricorn::access";
/// Events logged with this target are shown as CRITICAL (Gunicorn's level for worker timeouts).
pub const CRITICAL: &str = "critical";
/// Errors logged with this target are an app's exception (Gunicorn's `log.exception`): shown
/// as ERROR, counted as `gunicorn.log.exception` by statsd.
pub const EXCEPTION: &str = "exception";

/// The error log (stderr until [`init`] ran).
pub fn error_sink() -> Arc<Sink> {
    if let Some(s) = ERROR_LOG.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return s.clone();
    }
    Arc::new(Sink {
        target: Target::Stderr,
        file: RwLock::new(None),
    })
}

/// Where access lines go, if the access log is enabled.
pub fn access_out() -> Option<AccessOut> {
    ACCESS_LOG.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Whether error-log events currently go to journald.
pub fn errors_to_journal() -> bool {
    ERRORS_TO_JOURNAL.load(Ordering::Relaxed)
}

fn level_num(l: &Level) -> u8 {
    match *l {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        Level::TRACE => 5,
    }
}

fn journald() -> Option<&'static tracing_journald::Layer> {
    JOURNALD
        .get_or_init(|| {
            let mappings = tracing_journald::PriorityMappings {
                info: tracing_journald::Priority::Informational,
                debug: tracing_journald::Priority::Debug,
                ..tracing_journald::PriorityMappings::new()
            };
            tracing_journald::layer().ok().map(|l| {
                l.with_field_prefix(None)
                    .with_syslog_identifier("ferricorn".into())
                    .with_priority_mappings(mappings)
            })
        })
        .as_ref()
}

/// Installs the logger and opens the logs. Called once, in the master.
pub fn init(cfg: &Config) -> Result<(), String> {
    reconfigure(cfg)?;
    tracing_subscriber::registry()
        .with(Router)
        .try_init()
        .map_err(|e| format!("cannot install the logger: {e}"))
}

/// Opens the logs `cfg` names and makes them current (startup, and HUP).
pub fn reconfigure(cfg: &Config) -> Result<(), String> {
    let err_target = Target::from_spec(&cfg.error_logfile, Target::Stderr);
    let journal_errors =
        err_target == Target::Stderr && journal::is_journal(2) && journald().is_some();
    let err = Sink::open(err_target)?;
    let access = match &cfg.access_logfile {
        None => None,
        Some(spec) => {
            let t = Target::from_spec(spec, Target::Stdout);
            if t == Target::Stdout && journal::is_journal(1) && journald().is_some() {
                Some(AccessOut::Journal)
            } else {
                Some(AccessOut::Sink(Arc::new(Sink::open(t)?)))
            }
        }
    };
    LEVEL.store(
        match cfg.log_level {
            LogLevel::Debug => 4,
            LogLevel::Info => 3,
            LogLevel::Warning => 2,
            LogLevel::Error | LogLevel::Critical => 1,
        },
        Ordering::Relaxed,
    );
    ERRORS_TO_JOURNAL.store(journal_errors, Ordering::Relaxed);
    ERRORS_AS_JSON.store(cfg.log_format == "json", Ordering::Relaxed);
    *ERROR_LOG.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(err));
    *ACCESS_LOG.write().unwrap_or_else(|e| e.into_inner()) = access;
    Ok(())
}

/// Reopens every log file (USR1).
pub fn reopen() {
    if let Err(e) = error_sink().reopen() {
        tracing::error!("cannot reopen the error log: {e}");
    }
    if let Some(AccessOut::Sink(a)) = access_out()
        && let Err(e) = a.reopen()
    {
        tracing::error!("cannot reopen the access log: {e}");
    }
}

/// The one tracing layer: decides per event (levels and destinations change on reload) whether
/// it goes to the error log file/stream in Gunicorn's format or to journald.
struct Router;

impl<S> Layer<S> for Router
where
    S: Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::sometimes()
    }

    fn enabled(&self, meta: &Metadata<'_>, _: Context<'_, S>) -> bool {
        meta.target() == ACCESS_TARGET
            || level_num(meta.level()) <= LEVEL.load(Ordering::Relaxed)
            // statsd counts warnings and errors whatever --log-level shows (as Gunicorn does).
            || (*meta.level() <= Level::WARN && crate::statsd::counting_logs())
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        if meta.target() == ACCESS_TARGET {
            if let Some(j) = journald() {
                j.on_event(event, ctx);
            }
            return;
        }
        count_for_statsd(meta);
        if level_num(meta.level()) > LEVEL.load(Ordering::Relaxed) {
            return;
        }
        if ERRORS_TO_JOURNAL.load(Ordering::Relaxed)
            && let Some(j) = journald()
        {
            j.on_event(event, ctx);
            return;
        }
        let level = match *meta.level() {
            Level::ERROR if meta.target() == CRITICAL => "CRITICAL",
            Level::ERROR => "ERROR",
            Level::WARN => "WARNING",
            Level::INFO => "INFO",
            Level::DEBUG => "DEBUG",
            Level::TRACE => "TRACE",
        };
        if ERRORS_AS_JSON.load(Ordering::Relaxed) {
            let mut fields = FieldsVisitor::default();
            event.record(&mut fields);
            error_sink().write(&json::error_line(level, &fields.message, &fields.fields));
            return;
        }
        let mut line = format!(
            "[{}] [{}] [{level}] ",
            chrono::Local::now().format("%Y-%m-%d %H:%M:%S %z"),
            std::process::id()
        );
        event.record(&mut LineVisitor(&mut line));
        line.push('\n');
        error_sink().write(line.as_bytes());
    }
}

/// An event's message and its other fields, apart (for JSON lines).
#[derive(Default)]
struct FieldsVisitor {
    message: String,
    fields: Vec<(String, String)>,
}

impl Visit for FieldsVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.fields
                .push((field.name().to_string(), value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.fields
                .push((field.name().to_string(), format!("{value:?}")));
        }
    }
}

/// `gunicorn.log.critical`, `.error`, `.warning`, `.exception` (statsd, when it is on).
fn count_for_statsd(meta: &Metadata<'_>) {
    use crate::statsd::LogKind;
    let kind = match *meta.level() {
        Level::ERROR if meta.target() == CRITICAL => LogKind::Critical,
        Level::ERROR if meta.target() == EXCEPTION => LogKind::Exception,
        Level::ERROR => LogKind::Error,
        Level::WARN => LogKind::Warning,
        _ => return,
    };
    crate::statsd::count_log(kind);
}

/// Renders an event's message and fields as `message key=value ...`.
struct LineVisitor<'a>(&'a mut String);

impl Visit for LineVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

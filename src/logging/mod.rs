//! Logging: the error log (through `tracing`) and the access log (see [`access`]).
//!
//! Both logs are [`Sink`]s opened by the master before it forks, so a bad path fails at startup
//! and every process appends to the same open file. `USR1` calls [`reopen`] in the master and in
//! each worker (logrotate's `postrotate`). Every line is written with a single `write(2)` on an
//! `O_APPEND` descriptor, so lines from several processes never interleave.

pub mod access;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::{OnceLock, RwLock};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

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

static ERROR_LOG: OnceLock<Sink> = OnceLock::new();
static ACCESS_LOG: OnceLock<Option<Sink>> = OnceLock::new();

/// The error log (stderr until [`init`] ran).
pub fn error_sink() -> &'static Sink {
    ERROR_LOG.get_or_init(|| Sink {
        target: Target::Stderr,
        file: RwLock::new(None),
    })
}

/// The access log, if enabled.
pub fn access_sink() -> Option<&'static Sink> {
    ACCESS_LOG.get().and_then(Option::as_ref)
}

/// Opens both logs and installs the error-log subscriber. Called once, in the master.
pub fn init(cfg: &Config) -> Result<(), String> {
    let err = Sink::open(Target::from_spec(&cfg.error_logfile, Target::Stderr))?;
    let access = match &cfg.access_logfile {
        Some(spec) => Some(Sink::open(Target::from_spec(spec, Target::Stdout))?),
        None => None,
    };
    let _ = ERROR_LOG.set(err);
    let _ = ACCESS_LOG.set(access);
    let level = match cfg.log_level {
        LogLevel::Debug => Level::DEBUG,
        LogLevel::Info => Level::INFO,
        LogLevel::Warning => Level::WARN,
        LogLevel::Error | LogLevel::Critical => Level::ERROR,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .event_format(GunicornFormat)
        .with_writer(ErrorLogWriter)
        .try_init()
        .map_err(|e| format!("cannot install the logger: {e}"))
}

/// Reopens every log file (USR1).
pub fn reopen() {
    if let Err(e) = error_sink().reopen() {
        tracing::error!("cannot reopen the error log: {e}");
    }
    if let Some(a) = access_sink()
        && let Err(e) = a.reopen()
    {
        tracing::error!("cannot reopen the access log: {e}");
    }
}

/// Writes each formatted event to the error sink in one call.
struct ErrorLogWriter;

impl io::Write for ErrorLogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        error_sink().write(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for ErrorLogWriter {
    type Writer = ErrorLogWriter;
    fn make_writer(&'a self) -> Self::Writer {
        ErrorLogWriter
    }
}

/// Gunicorn's error log line: `[2026-11-23 22:26:30 +0000] [1234] [INFO] message`.
struct GunicornFormat;

/// Events logged with this target are shown as CRITICAL (Gunicorn's level for worker timeouts).
pub const CRITICAL: &str = "critical";

impl<S, N> FormatEvent<S, N> for GunicornFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let level = match *meta.level() {
            Level::ERROR if meta.target() == CRITICAL => "CRITICAL",
            Level::ERROR => "ERROR",
            Level::WARN => "WARNING",
            Level::INFO => "INFO",
            Level::DEBUG => "DEBUG",
            Level::TRACE => "TRACE",
        };
        let now = chrono::Local::now().format("%Y-%m-%d %H:%M:%S %z");
        write!(writer, "[{now}] [{}] [{level}] ", std::process::id())?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

//! Configuration: one set of settings, four layers.
//!
//! `defaults < environment (WEB_CONCURRENCY, FORWARDED_ALLOW_IPS, PORT, VIRTUAL_ENV) <
//! config file (-c FILE, else ./ferricorn.toml) < command line`. Every layer is a [`Layer`]
//! (all fields optional); the same struct is the clap argument set and the TOML schema, so a
//! flag and its config key can never disagree. [`Config`] is the resolved, validated result.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::logging::access::AccessFormat;
use crate::proxy::ForwardedAllowIps;
use crate::sockets::BindAddr;

/// Gunicorn's default access log format.
pub const DEFAULT_ACCESS_LOG_FORMAT: &str =
    r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#;

/// `--limit-request-body` default, 100 MiB (stream `http`). Bodies are streamed to the app, so
/// the server itself holds at most a few chunks per connection whatever this is; the limit
/// bounds what an app that reads a whole body into memory (`wsgi.input.read()`, most form
/// parsers) can be made to hold: one such request on a 512 MiB machine is survivable, a 1 GiB
/// one is not.
pub const DEFAULT_LIMIT_REQUEST_BODY: u64 = 100 * 1024 * 1024;

/// The file read when `-c` is not given, if it exists in the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "ferricorn.toml";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    #[serde(alias = "DEBUG")]
    Debug,
    #[serde(alias = "INFO")]
    Info,
    #[serde(alias = "WARNING", alias = "warn", alias = "WARN")]
    Warning,
    #[serde(alias = "ERROR")]
    Error,
    #[serde(alias = "CRITICAL")]
    Critical,
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warning => "warning",
            LogLevel::Error => "error",
            LogLevel::Critical => "critical",
        })
    }
}

/// `forwarded-allow-ips` in a config file: `"a,b"` (Gunicorn's form) or `["a", "b"]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    Many(Vec<String>),
}

fn de_comma_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Some(match StringOrList::deserialize(d)? {
        StringOrList::One(s) => s,
        StringOrList::Many(v) => v.join(","),
    }))
}

/// One layer of settings. Field names are the long flags; in TOML the same names are the keys
/// (`graceful-timeout = 30`; the snake_case spelling `graceful_timeout` is accepted too).
#[derive(Debug, Clone, Default, PartialEq, clap::Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Layer {
    /// The WSGI application: `module:callable`, `module` (meaning `module:application`) or
    /// `module:factory()` (calls a factory; literal arguments allowed).
    #[arg(value_name = "APP_MODULE")]
    #[serde(
        skip_serializing_if = "Option::is_none",
        alias = "wsgi-app",
        alias = "wsgi_app"
    )]
    pub app: Option<String>,

    /// Address to listen on: HOST:PORT, HOST, [IPV6]:PORT, unix:PATH or fd://N. Repeatable.
    /// [default: 127.0.0.1:8000, or 0.0.0.0:$PORT when PORT is set]
    #[arg(short = 'b', long, value_name = "ADDRESS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<Vec<BindAddr>>,

    /// Maximum number of pending connections per listener. [default: 2048]
    #[arg(long, value_name = "INT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u32>,

    /// Number of worker processes. [default: $WEB_CONCURRENCY or 1]
    #[arg(short = 'w', long, value_name = "INT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<u32>,

    /// Python threads per worker handling requests. [default: 1]
    #[arg(long, value_name = "INT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,

    /// Seconds a worker may be silent (busy in one request, or hung) before it is killed and
    /// replaced; 0 disables. [default: 30]
    #[arg(short = 't', long, value_name = "SECONDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,

    /// Seconds in-flight requests get to finish after TERM or a reload. [default: 30]
    #[arg(long, value_name = "SECONDS")]
    #[serde(skip_serializing_if = "Option::is_none", alias = "graceful_timeout")]
    pub graceful_timeout: Option<u64>,

    /// Seconds an idle keep-alive connection is kept open (also the time a client has to send
    /// a request head); 0 disables keep-alive. [default: 2]
    #[arg(long, value_name = "SECONDS")]
    #[serde(
        skip_serializing_if = "Option::is_none",
        alias = "keep_alive",
        alias = "keepalive"
    )]
    pub keep_alive: Option<u64>,

    /// Change to this directory before loading the app.
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chdir: Option<PathBuf>,

    /// Comma-separated directories added to the Python path.
    #[arg(long, value_name = "DIRS", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pythonpath: Option<Vec<String>>,

    /// Virtualenv whose packages the app imports. [default: $VIRTUAL_ENV]
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virtualenv: Option<PathBuf>,

    /// Environment variable for the app, as KEY=VALUE. Repeatable.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    #[serde(
        skip_serializing_if = "Option::is_none",
        alias = "raw-env",
        alias = "raw_env"
    )]
    pub env: Option<Vec<String>>,

    /// Requests a worker serves before it is replaced; 0 disables. [default: 0]
    #[arg(long, value_name = "INT")]
    #[serde(skip_serializing_if = "Option::is_none", alias = "max_requests")]
    pub max_requests: Option<u64>,

    /// Random extra requests (0..=N) added to max-requests per worker. [default: 0]
    #[arg(long, value_name = "INT")]
    #[serde(skip_serializing_if = "Option::is_none", alias = "max_requests_jitter")]
    pub max_requests_jitter: Option<u64>,

    /// Access log file; '-' is stdout, '' disables it. [default: -]
    #[arg(long, value_name = "FILE")]
    #[serde(
        skip_serializing_if = "Option::is_none",
        alias = "access_logfile",
        alias = "accesslog"
    )]
    pub access_logfile: Option<String>,

    /// Access log format, with Gunicorn's atoms (%(h)s %(r)s %(s)s %({header}i)s ...).
    #[arg(long, value_name = "FORMAT")]
    #[serde(skip_serializing_if = "Option::is_none", alias = "access_log_format")]
    pub access_log_format: Option<String>,

    /// Error log file; '-' is stderr. [default: -]
    #[arg(long, visible_alias = "log-file", value_name = "FILE")]
    #[serde(
        skip_serializing_if = "Option::is_none",
        alias = "error_logfile",
        alias = "errorlog"
    )]
    pub error_logfile: Option<String>,

    /// Error log level. [default: info]
    #[arg(long, value_name = "LEVEL", ignore_case = true)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        alias = "log_level",
        alias = "loglevel"
    )]
    pub log_level: Option<LogLevel>,

    /// Peers trusted to set X-Forwarded-Proto & co: comma-separated IPs or CIDRs, '*' for all;
    /// a unix-socket peer is always trusted. [default: $FORWARDED_ALLOW_IPS or 127.0.0.1,::1]
    #[arg(long, value_name = "IPS")]
    #[serde(
        skip_serializing_if = "Option::is_none",
        alias = "forwarded_allow_ips",
        deserialize_with = "de_comma_list"
    )]
    pub forwarded_allow_ips: Option<String>,

    /// Maximum size of the request line in bytes (414 beyond); 0 means 8190. [default: 4094]
    #[arg(long, value_name = "INT")]
    #[serde(skip_serializing_if = "Option::is_none", alias = "limit_request_line")]
    pub limit_request_line: Option<u32>,

    /// Maximum number of request header fields (431 beyond). [default: 100]
    #[arg(long, value_name = "INT")]
    #[serde(
        skip_serializing_if = "Option::is_none",
        alias = "limit_request_fields"
    )]
    pub limit_request_fields: Option<u32>,

    /// Maximum size of one request header field in bytes (431 beyond); 0 means unlimited.
    /// [default: 8190]
    #[arg(
        long = "limit-request-field_size",
        visible_alias = "limit-request-field-size",
        value_name = "INT"
    )]
    #[serde(
        skip_serializing_if = "Option::is_none",
        alias = "limit_request_field_size",
        alias = "limit-request-field_size"
    )]
    pub limit_request_field_size: Option<u32>,

    // ---- stream `http`: request-path settings (the lead ports this block) ----
    /// Maximum size of a request body in bytes (413 beyond, checked against Content-Length
    /// before reading and while a chunked body arrives); 0 means unlimited. [default: 104857600]
    #[arg(long = "limit-request-body", value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none", alias = "limit_request_body")]
    pub limit_request_body: Option<u64>,

    /// Seconds a client has to send a whole request head (408 beyond); separate from
    /// --keep-alive. [default: 5]
    #[arg(long, value_name = "SECONDS")]
    #[serde(skip_serializing_if = "Option::is_none", alias = "header_timeout")]
    pub header_timeout: Option<u64>,

    /// Seconds a client gets to send a request body, plus one more second for every
    /// --body-min-rate bytes it sends; also the longest silence allowed mid-body (408 beyond).
    /// [default: 20]
    #[arg(long, value_name = "SECONDS")]
    #[serde(skip_serializing_if = "Option::is_none", alias = "body_timeout")]
    pub body_timeout: Option<u64>,

    /// Bytes per second of request body that earn one more second of --body-timeout (Apache
    /// mod_reqtimeout's MinRate); 0 means no extension. [default: 500]
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none", alias = "body_min_rate")]
    pub body_min_rate: Option<u64>,
    // ---- end of stream `http` block ----
    /// Process name shown in ps/top: 'ferricorn: master [NAME]'. [default: the app module]
    #[arg(short = 'n', long, value_name = "NAME")]
    #[serde(
        skip_serializing_if = "Option::is_none",
        alias = "proc_name",
        alias = "proc-name"
    )]
    pub name: Option<String>,

    /// PID file, written by the master (atomically) and removed at exit.
    #[arg(short = 'p', long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none", alias = "pidfile")]
    pub pid: Option<PathBuf>,

    /// Run workers as this user (name or uid); the master binds and writes the pid file first.
    #[arg(short = 'u', long, value_name = "USER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,

    /// Run workers as this group (name or gid). [default: the user's primary group]
    #[arg(short = 'g', long, value_name = "GROUP")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,

    /// File mode mask for files ferricorn creates (unix sockets, pid file), e.g. 0o007 or 007.
    /// [default: inherited]
    #[arg(short = 'm', long, value_name = "MASK", value_parser = parse_umask)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub umask: Option<u32>,

    /// Detach from the terminal (for plain shells; refused under systemd and other monitors).
    #[arg(short = 'D', long, num_args = 0, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daemon: Option<bool>,
}

/// `--umask`: octal with a leading `0` or `0o` (`007`, `0o007`), else decimal.
pub fn parse_umask(s: &str) -> Result<u32, String> {
    let s = s.trim();
    let v = if let Some(o) = s.strip_prefix("0o").or_else(|| s.strip_prefix("0O")) {
        u32::from_str_radix(o, 8)
    } else if s.len() > 1 && s.starts_with('0') {
        u32::from_str_radix(&s[1..], 8)
    } else {
        s.parse()
    };
    match v {
        Ok(m) if m <= 0o777 => Ok(m),
        _ => Err("expected an octal mask like 0o022 or 022 (at most 0o777)".into()),
    }
}

/// Settings with Gunicorn's defaults.
fn defaults() -> Layer {
    Layer {
        app: None,
        bind: Some(vec![BindAddr::Tcp {
            host: "127.0.0.1".into(),
            port: 8000,
        }]),
        backlog: Some(2048),
        workers: Some(1),
        threads: Some(1),
        timeout: Some(30),
        graceful_timeout: Some(30),
        keep_alive: Some(2),
        chdir: None,
        pythonpath: Some(vec![]),
        virtualenv: None,
        env: Some(vec![]),
        max_requests: Some(0),
        max_requests_jitter: Some(0),
        access_logfile: Some("-".into()),
        access_log_format: Some(DEFAULT_ACCESS_LOG_FORMAT.into()),
        error_logfile: Some("-".into()),
        log_level: Some(LogLevel::Info),
        forwarded_allow_ips: Some("127.0.0.1,::1".into()),
        limit_request_line: Some(4094),
        limit_request_fields: Some(100),
        limit_request_field_size: Some(8190),
        // ---- stream `http` ----
        limit_request_body: Some(DEFAULT_LIMIT_REQUEST_BODY),
        header_timeout: Some(5),
        body_timeout: Some(20),
        body_min_rate: Some(500),
        // ----
        name: None,
        pid: None,
        user: None,
        group: None,
        umask: None,
        daemon: Some(false),
    }
}

macro_rules! merge_fields {
    ($hi:ident, $lo:ident; $($f:ident),* $(,)?) => {
        Layer { $($f: $hi.$f.or($lo.$f)),* }
    };
}

impl Layer {
    /// `self` where set, else `lower`.
    pub fn over(self, lower: Layer) -> Layer {
        let hi = self;
        let lo = lower;
        merge_fields!(hi, lo; app, bind, backlog, workers, threads, timeout, graceful_timeout,
            keep_alive, chdir, pythonpath, virtualenv, env, max_requests, max_requests_jitter,
            access_logfile, access_log_format, error_logfile, log_level, forwarded_allow_ips,
            limit_request_line, limit_request_fields, limit_request_field_size,
            limit_request_body, header_timeout, body_timeout, body_min_rate, name, pid, user,
            group, umask, daemon)
    }

    /// Checks each value that is set. Returns the offending key (kebab-case) and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        self.validate_for(true)
    }

    /// [`Layer::validate`]; with `host` false, the checks that ask this machine (that `user`
    /// and `group` exist here) are skipped: the settings describe another machine
    /// (`ferricorn systemd generate`).
    pub fn validate_for(&self, host: bool) -> Result<(), (&'static str, String)> {
        fn range<T: PartialOrd + fmt::Display + Copy>(
            key: &'static str,
            v: Option<T>,
            lo: T,
            hi: T,
        ) -> Result<(), (&'static str, String)> {
            match v {
                Some(x) if x < lo || x > hi => {
                    Err((key, format!("{x} is out of range: expected {lo} to {hi}")))
                }
                _ => Ok(()),
            }
        }
        range("backlog", self.backlog, 1, 65535)?;
        range("workers", self.workers, 1, 1024)?;
        range("threads", self.threads, 1, 4096)?;
        range("limit-request-line", self.limit_request_line, 0, 8190)?;
        range("limit-request-fields", self.limit_request_fields, 1, 32768)?;
        range(
            "limit-request-field-size",
            self.limit_request_field_size,
            0,
            1 << 20,
        )?;
        range("timeout", self.timeout, 0, 86400 * 365)?;
        range("graceful-timeout", self.graceful_timeout, 0, 86400 * 365)?;
        range("keep-alive", self.keep_alive, 0, 86400)?;
        // ---- stream `http` ----
        range("header-timeout", self.header_timeout, 1, 3600)?;
        range("body-timeout", self.body_timeout, 1, 86400)?;
        // ----
        if let Some(app) = &self.app {
            crate::python::AppSpec::parse(app).map_err(|e| ("app", e))?;
        }
        if let Some(b) = &self.bind
            && b.is_empty()
        {
            return Err(("bind", "at least one address is needed".into()));
        }
        for kv in self.env.iter().flatten() {
            match kv.split_once('=') {
                Some((k, _)) if !k.is_empty() && !k.contains('\0') => {}
                _ => return Err(("env", format!("'{kv}' is not KEY=VALUE"))),
            }
        }
        if let Some(f) = &self.access_log_format {
            AccessFormat::parse(f).map_err(|e| ("access-log-format", e))?;
        }
        if let Some(ips) = &self.forwarded_allow_ips {
            ForwardedAllowIps::parse(ips).map_err(|e| ("forwarded-allow-ips", e))?;
        }
        range("umask", self.umask, 0, 0o777)?;
        if let Some(u) = self.user.as_ref().filter(|_| host) {
            crate::privileges::lookup_user(u).map_err(|e| ("user", e))?;
        }
        if let Some(g) = self.group.as_ref().filter(|_| host) {
            crate::privileges::lookup_group(g).map_err(|e| ("group", e))?;
        }
        if let Some(n) = &self.name
            && n.is_empty()
        {
            return Err(("name", "must not be empty".into()));
        }
        Ok(())
    }
}

/// The resolved configuration a server runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub app: Option<String>,
    pub bind: Vec<BindAddr>,
    pub backlog: u32,
    pub workers: u32,
    pub threads: u32,
    pub timeout: u64,
    pub graceful_timeout: u64,
    pub keep_alive: u64,
    pub chdir: Option<PathBuf>,
    pub pythonpath: Vec<String>,
    pub virtualenv: Option<PathBuf>,
    pub env: Vec<String>,
    pub max_requests: u64,
    pub max_requests_jitter: u64,
    /// `None`: no access log. `Some("-")`: stdout.
    pub access_logfile: Option<String>,
    pub access_log_format: String,
    pub error_logfile: String,
    pub log_level: LogLevel,
    pub forwarded_allow_ips: String,
    pub limit_request_line: u32,
    pub limit_request_fields: u32,
    pub limit_request_field_size: u32,
    // ---- stream `http` ----
    pub limit_request_body: u64,
    pub header_timeout: u64,
    pub body_timeout: u64,
    pub body_min_rate: u64,
    // ----
    pub name: Option<String>,
    pub pid: Option<PathBuf>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub umask: Option<u32>,
    pub daemon: bool,
    /// The config file that was read, if any (not a setting; kept for reloads and messages).
    pub source_file: Option<PathBuf>,
    /// Whether `bind` was configured (flag, file or `PORT`) rather than left at the default.
    pub bind_explicit: bool,
}

impl Config {
    fn from_layer(l: Layer, source_file: Option<PathBuf>) -> Config {
        let bind_explicit = l.bind.is_some();
        let d = defaults();
        let l = l.over(d);
        Config {
            app: l.app,
            bind: l.bind.unwrap_or_default(),
            backlog: l.backlog.unwrap_or(2048),
            workers: l.workers.unwrap_or(1),
            threads: l.threads.unwrap_or(1),
            timeout: l.timeout.unwrap_or(30),
            graceful_timeout: l.graceful_timeout.unwrap_or(30),
            keep_alive: l.keep_alive.unwrap_or(2),
            chdir: l.chdir,
            pythonpath: l.pythonpath.unwrap_or_default(),
            virtualenv: l.virtualenv,
            env: l.env.unwrap_or_default(),
            max_requests: l.max_requests.unwrap_or(0),
            max_requests_jitter: l.max_requests_jitter.unwrap_or(0),
            access_logfile: l.access_logfile.filter(|s| !s.is_empty()),
            access_log_format: l.access_log_format.unwrap_or_default(),
            error_logfile: l.error_logfile.unwrap_or_else(|| "-".into()),
            log_level: l.log_level.unwrap_or(LogLevel::Info),
            forwarded_allow_ips: l.forwarded_allow_ips.unwrap_or_default(),
            limit_request_line: l.limit_request_line.unwrap_or(4094),
            limit_request_fields: l.limit_request_fields.unwrap_or(100),
            limit_request_field_size: l.limit_request_field_size.unwrap_or(8190),
            // ---- stream `http` ----
            limit_request_body: l.limit_request_body.unwrap_or(DEFAULT_LIMIT_REQUEST_BODY),
            header_timeout: l.header_timeout.unwrap_or(5),
            body_timeout: l.body_timeout.unwrap_or(20),
            body_min_rate: l.body_min_rate.unwrap_or(500),
            // ----
            name: l.name,
            pid: l.pid,
            user: l.user,
            group: l.group,
            umask: l.umask,
            daemon: l.daemon.unwrap_or(false),
            bind_explicit,
            source_file,
        }
    }

    /// The configuration with nothing set: Gunicorn's defaults, no environment, no file.
    pub fn builtin_defaults() -> Config {
        Config::from_layer(Layer::default(), None)
    }

    /// Every setting, as a layer (used by `--print-config`).
    pub fn to_layer(&self) -> Layer {
        Layer {
            app: self.app.clone(),
            bind: Some(self.bind.clone()),
            backlog: Some(self.backlog),
            workers: Some(self.workers),
            threads: Some(self.threads),
            timeout: Some(self.timeout),
            graceful_timeout: Some(self.graceful_timeout),
            keep_alive: Some(self.keep_alive),
            chdir: self.chdir.clone(),
            pythonpath: Some(self.pythonpath.clone()),
            virtualenv: self.virtualenv.clone(),
            env: Some(self.env.clone()),
            max_requests: Some(self.max_requests),
            max_requests_jitter: Some(self.max_requests_jitter),
            access_logfile: Some(self.access_logfile.clone().unwrap_or_default()),
            access_log_format: Some(self.access_log_format.clone()),
            error_logfile: Some(self.error_logfile.clone()),
            log_level: Some(self.log_level),
            forwarded_allow_ips: Some(self.forwarded_allow_ips.clone()),
            limit_request_line: Some(self.limit_request_line),
            limit_request_fields: Some(self.limit_request_fields),
            limit_request_field_size: Some(self.limit_request_field_size),
            // ---- stream `http` ----
            limit_request_body: Some(self.limit_request_body),
            header_timeout: Some(self.header_timeout),
            body_timeout: Some(self.body_timeout),
            body_min_rate: Some(self.body_min_rate),
            // ----
            name: self.name.clone(),
            pid: self.pid.clone(),
            user: self.user.clone(),
            group: self.group.clone(),
            umask: self.umask,
            daemon: Some(self.daemon),
        }
    }

    /// The effective configuration as TOML that loads back to the same configuration.
    pub fn to_toml(&self) -> String {
        let mut out = String::from("# ferricorn effective configuration (--print-config)\n");
        out.push_str(&toml::to_string(&self.to_layer()).expect("a layer always serializes"));
        out
    }

    /// The name in process titles: `--name`, else the app module.
    pub fn proc_name(&self) -> &str {
        self.name
            .as_deref()
            .or(self.app.as_deref())
            .unwrap_or("ferricorn")
    }

    pub fn app_spec(&self) -> &str {
        self.app.as_deref().unwrap_or("")
    }

    /// The access log format, parsed (validated when the config was loaded).
    pub fn access_format(&self) -> AccessFormat {
        AccessFormat::parse(&self.access_log_format).expect("validated at load")
    }

    /// The trusted proxy list, parsed (validated when the config was loaded).
    pub fn forwarded(&self) -> ForwardedAllowIps {
        ForwardedAllowIps::parse(&self.forwarded_allow_ips).expect("validated at load")
    }
}

/// What the environment contributes, from a snapshot of variables.
pub fn env_layer(get: impl Fn(&str) -> Option<String>) -> Result<Layer, String> {
    let mut l = Layer::default();
    if let Some(v) = get("WEB_CONCURRENCY").filter(|v| !v.trim().is_empty()) {
        l.workers = Some(v.trim().parse().map_err(|_| {
            format!("WEB_CONCURRENCY={v}: expected a number of workers (a positive integer)")
        })?);
    }
    if let Some(v) = get("FORWARDED_ALLOW_IPS").filter(|v| !v.trim().is_empty()) {
        l.forwarded_allow_ips = Some(v);
    }
    if let Some(v) = get("PORT").filter(|v| !v.trim().is_empty()) {
        let port: u16 = v
            .trim()
            .parse()
            .map_err(|_| format!("PORT={v}: expected a port number 0-65535"))?;
        l.bind = Some(vec![BindAddr::Tcp {
            host: "0.0.0.0".into(),
            port,
        }]);
    }
    if let Some(v) = get("VIRTUAL_ENV").filter(|v| !v.trim().is_empty()) {
        l.virtualenv = Some(PathBuf::from(v));
    }
    if let Err((key, msg)) = l.validate() {
        let var = match key {
            "workers" => "WEB_CONCURRENCY",
            "forwarded-allow-ips" => "FORWARDED_ALLOW_IPS",
            other => other,
        };
        return Err(format!("${var}: {msg}"));
    }
    Ok(l)
}

/// Parses a TOML config file. Errors name the file, the line and the key.
pub fn file_layer(path: &Path, text: &str) -> Result<Layer, String> {
    file_layer_for(path, text, true)
}

/// [`file_layer`], with or without the checks that ask this machine (see [`Layer::validate_for`]).
fn file_layer_for(path: &Path, text: &str, host: bool) -> Result<Layer, String> {
    let name = path.display();
    let layer: Layer = toml::from_str(text).map_err(|e| {
        let (line, key) = match e.span() {
            Some(span) => {
                let line_no = text[..span.start.min(text.len())].matches('\n').count() + 1;
                let line_text = text.lines().nth(line_no - 1).unwrap_or("");
                let key = line_text.split('=').next().unwrap_or("").trim().to_string();
                (Some(line_no), key)
            }
            None => (None, String::new()),
        };
        let msg = e.message().trim().replace('\n', " ");
        match (line, key.is_empty()) {
            (Some(n), false) => format!("{name}:{n}: key `{key}`: {msg}"),
            (Some(n), true) => format!("{name}:{n}: {msg}"),
            (None, _) => format!("{name}: {msg}"),
        }
    })?;
    layer
        .validate_for(host)
        .map_err(|(key, msg)| match find_key_line(text, key) {
            Some(n) => format!("{name}:{n}: key `{key}`: {msg}"),
            None => format!("{name}: key `{key}`: {msg}"),
        })?;
    Ok(layer)
}

/// The 1-based line where `key` (kebab or snake spelling) is assigned.
fn find_key_line(text: &str, key: &str) -> Option<usize> {
    let snake = key.replace('-', "_");
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            [key, snake.as_str()].iter().any(|k| {
                l.strip_prefix(k)
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
            })
        })
        .map(|i| i + 1)
}

/// Everything that decides a configuration, so that it can be loaded again (on HUP).
#[derive(Debug, Clone)]
pub struct Sources {
    pub cli: Layer,
    pub config_file: Option<PathBuf>,
    /// Whether `config_file` was named with `-c` (must exist) or found as ./ferricorn.toml.
    pub explicit_file: bool,
}

impl Sources {
    /// Resolves the layers into a validated config.
    pub fn load(&self) -> Result<Config, String> {
        self.load_for(true)
    }

    /// Resolves the layers into a config for another machine (`ferricorn systemd generate`):
    /// the same precedence and validation, less what only this machine can answer (whether
    /// `user`/`group` exist here, whether the virtualenv exists and matches this build).
    pub fn load_for_target(&self) -> Result<Config, String> {
        self.load_for(false)
    }

    fn load_for(&self, host: bool) -> Result<Config, String> {
        let env = env_layer(|k| std::env::var(k).ok())?;
        let (file, source) = match &self.config_file {
            Some(p) => match std::fs::read_to_string(p) {
                Ok(text) => (file_layer_for(p, &text, host)?, Some(p.clone())),
                Err(e) if !self.explicit_file && e.kind() == std::io::ErrorKind::NotFound => {
                    (Layer::default(), None)
                }
                Err(e) => return Err(format!("cannot read config file {}: {e}", p.display())),
            },
            None => (Layer::default(), None),
        };
        if let Err((key, msg)) = self.cli.validate_for(host) {
            return Err(format!("invalid value for '--{key}': {msg}"));
        }
        let merged = self.cli.clone().over(file).over(env);
        let cfg = Config::from_layer(merged, source);
        if let Some(v) = cfg.virtualenv.as_ref().filter(|_| host) {
            crate::python::check_virtualenv(v)?;
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> Result<Layer, String> {
        file_layer(Path::new("test.toml"), text)
    }

    #[test]
    fn precedence_default_env_file_cli() {
        let env = env_layer(|k| (k == "WEB_CONCURRENCY").then(|| "4".to_string())).unwrap();
        let d = Config::from_layer(Layer::default(), None);
        assert_eq!(d.workers, 1);
        assert_eq!(Config::from_layer(env.clone(), None).workers, 4);
        let f = file("workers = 6\n").unwrap();
        assert_eq!(
            Config::from_layer(f.clone().over(env.clone()), None).workers,
            6
        );
        let cli = Layer {
            workers: Some(8),
            ..Layer::default()
        };
        assert_eq!(Config::from_layer(cli.over(f.over(env)), None).workers, 8);
    }

    #[test]
    fn unknown_key_and_wrong_type_name_file_line_and_key() {
        let e = file("workers = 2\nwrokers = 3\n").unwrap_err();
        assert!(e.starts_with("test.toml:2:"), "{e}");
        assert!(e.contains("wrokers"), "{e}");
        let e = file("# c\n\nworkers = \"three\"\n").unwrap_err();
        assert!(e.starts_with("test.toml:3:"), "{e}");
        assert!(e.contains("workers"), "{e}");
        let e = file("threads = 2\nworkers = 0\n").unwrap_err();
        assert_eq!(
            e,
            "test.toml:2: key `workers`: 0 is out of range: expected 1 to 1024"
        );
        let e = file("bind = [\"host:nope\"]\n").unwrap_err();
        assert!(e.starts_with("test.toml:1:") && e.contains("bind"), "{e}");
    }

    #[test]
    fn snake_case_keys_are_accepted() {
        let l =
            file("graceful_timeout = 5\nkeepalive = 7\nlimit_request_field_size = 10\n").unwrap();
        assert_eq!(l.graceful_timeout, Some(5));
        assert_eq!(l.keep_alive, Some(7));
        assert_eq!(l.limit_request_field_size, Some(10));
    }

    #[test]
    fn print_config_round_trips() {
        let cli = Layer {
            app: Some("hello:app".into()),
            bind: Some(vec![
                "unix:/tmp/x.sock".parse().unwrap(),
                "[::1]:9".parse().unwrap(),
            ]),
            workers: Some(3),
            env: Some(vec!["A=1".into(), "B=x=y".into()]),
            access_logfile: Some(String::new()),
            forwarded_allow_ips: Some("*".into()),
            ..Layer::default()
        };
        let cfg = Config::from_layer(cli, None);
        let text = cfg.to_toml();
        let back = Config::from_layer(file(&text).unwrap(), None);
        assert_eq!(back, cfg, "{text}");
        assert!(parse_umask("0o27").unwrap() == 0o27 && parse_umask("027").unwrap() == 0o27);
        assert_eq!(parse_umask("18"), Ok(18));
        assert!(parse_umask("0o1000").is_err() && parse_umask("x").is_err());
        assert_eq!(back.to_toml(), text);
        assert_eq!(back.access_logfile, None);
    }

    #[test]
    fn env_layer_reports_the_variable() {
        let e = env_layer(|k| (k == "WEB_CONCURRENCY").then(|| "many".to_string())).unwrap_err();
        assert!(e.contains("WEB_CONCURRENCY=many"), "{e}");
        let e = env_layer(|k| (k == "WEB_CONCURRENCY").then(|| "0".to_string())).unwrap_err();
        assert!(e.contains("$WEB_CONCURRENCY"), "{e}");
        let l = env_layer(|k| (k == "PORT").then(|| "5000".to_string())).unwrap();
        assert_eq!(l.bind.unwrap()[0].to_string(), "0.0.0.0:5000");
    }

    #[test]
    fn forwarded_allow_ips_accepts_a_list_in_toml() {
        let l = file("forwarded-allow-ips = [\"10.0.0.0/8\", \"::1\"]\n").unwrap();
        assert_eq!(l.forwarded_allow_ips.as_deref(), Some("10.0.0.0/8,::1"));
    }
}

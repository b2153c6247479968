//! The settings table: every setting ferricorn has and every setting Gunicorn has (26.x,
//! `gunicorn/config.py`), declared once each, in the sections and order of Gunicorn's settings
//! documentation. See the module documentation of [`crate::config`] for how to add one.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::args::{add_arg, read_items};
use super::compat::{
    accept_comma_string, header_map, http_protocols, http2_cleartext, logger_class, port_bind,
    protocol, statsd_address, status_verdict, worker_class,
};
use super::pyfile::HookSet;
use super::spec::Gunicorn::{As, No};
use super::spec::Section::*;
use super::spec::Shape::*;
use super::spec::Status::*;
use super::spec::{Hook, Shape, Spec, Verdict};
use super::value::{
    LogLevel, ProxyProtocol, Resolve, Value, env_value, one_of, parse_umask, range,
};
use super::{DEFAULT_ACCESS_LOG_FORMAT, DEFAULT_LIMIT_REQUEST_BODY};
use crate::proxy::ForwardedAllowIps;
use crate::sockets::BindAddr;

const TLS: &str = "ferricorn does not terminate TLS: terminate it in the proxy in front \
                   (nginx `listen 443 ssl; ssl_certificate ...;`) and let it speak plain HTTP to \
                   ferricorn's unix socket";
const TLS_ONLY: &str = "it only tunes TLS, which ferricorn leaves to the proxy in front";
const HTTP2_ONLY: &str = "it only tunes HTTP/2, which ferricorn leaves to the proxy in front \
                          (nginx speaks HTTP/1.1 to ferricorn)";
const PASTE: &str = "PasteDeploy files are not loaded: give APP_MODULE a module that builds \
                     the app (`app = paste.deploy.loadapp('config:/srv/app/production.ini')`)";
const LENIENT: &str = "ferricorn's HTTP parser has no lenient mode (each of these leniencies \
                       is a request-smuggling risk between a proxy and the server): fix the \
                       client, or let nginx normalise its requests";
const PY_LOGGING: &str = "ferricorn does not configure Python's logging: configure the app's \
                          loggers in the app (logging.config at import); ferricorn's own log \
                          follows --error-logfile and --log-level";
const SYSLOG_ONLY: &str = "it only tunes --log-syslog, which ferricorn does not have (under \
                           systemd the log goes to journald, which can forward to syslog)";
const DIRTY: &str = "ferricorn has no dirty arbiters: run long blocking work in a task queue \
                     (Celery, RQ, Dramatiq) or a service of its own";
const DIRTY_ONLY: &str = "it only tunes dirty workers, which ferricorn does not have";
const CONTROL: &str = "ferricorn has no control socket (gunicornc): manage the master with \
                       signals — HUP reloads, TTIN/TTOU add or remove a worker, USR1 reopens \
                       the logs, TERM stops (`systemctl reload`, `systemctl kill -s ...`)";
settings! {
    // ---- Config file -------------------------------------------------------------------

    /// Config file: a Python file as Gunicorn reads it (gunicorn.conf.py, or python:MODULE),
    /// or TOML with the settings' names as keys (`file:PATH` is accepted).
    setting config: String = None => Option<String> {
        section: ConfigFile, long: Some("config"), short: Some('c'), value_name: "FILE",
        default_doc: Some("./gunicorn.conf.py or ./ferricorn.toml if it exists"), action: true,
        note: "a `.py` file or `python:MODULE` is run as Gunicorn runs it (settings and server \
               hooks); another file is TOML",
    }

    /// The WSGI application: `module:callable`, `module` (meaning `module:application`) or
    /// `module:factory()` (calls a factory; literal arguments allowed).
    setting app: String = None => Option<String> {
        section: ConfigFile, shape: Positional, value_name: "APP_MODULE",
        gunicorn: As("wsgi_app"),
    }
    check |v| if v.trim().is_empty() { Err("names no app".into()) } else { Ok(()) };

    // ---- Control -----------------------------------------------------------------------

    /// Unix socket path of Gunicorn's control interface (gunicornc).
    setting control_socket: String = None => Option<String> {
        section: Control, long: Some("control-socket"), value_name: "PATH",
        default_doc: Some("Gunicorn: $XDG_RUNTIME_DIR/gunicorn.ctl"), status: Ignored(CONTROL),
    }

    /// File mode of the control socket.
    setting control_socket_mode: u32 = Some(0o600) => u32 {
        section: Control, long: Some("control-socket-mode"), value_name: "INT",
        default_doc: Some("0o600"), status: Ignored(CONTROL),
    }
    parse parse_umask;

    /// Disable the control socket.
    setting control_socket_disable: bool = Some(false) => bool {
        section: Control, long: Some("no-control-socket"), shape: Switch("true"),
        status: Ignored("ferricorn has no control socket to disable"),
    }

    // ---- Debugging ---------------------------------------------------------------------

    /// Reload when a source file of the app changes (development; not with --preload).
    setting reload: bool = Some(false) => bool {
        section: Debugging, long: Some("reload"), shape: Switch("true"),
        note: "a changed file starts a reload as HUP does: a syntax error leaves the old code \
               serving (Gunicorn restarts the worker)",
    }

    /// The implementation behind --reload: auto, poll or inotify.
    setting reload_engine: String = Some("auto".into()) => String {
        section: Debugging, long: Some("reload-engine"), value_name: "STRING",
    }
    check |v| one_of(v, &["auto", "poll", "inotify"]);

    /// More files --reload watches. Repeatable.
    setting reload_extra_files: Vec<String> = Some(vec![]) => Vec<String> {
        section: Debugging, long: Some("reload-extra-file"), shape: Repeat, value_name: "FILES",
    }

    /// Trace every line the server executes.
    setting spew: bool = Some(false) => bool {
        section: Debugging, long: Some("spew"), shape: Switch("true"),
        status: Refused("the server is not Python, so there is nothing to trace line by line; \
                         to trace the app, run it under `python -m trace` or a debugger"),
    }

    /// Check the configuration, import the app, and exit 0 (or 1 on failure).
    setting check_config: bool = Some(false) => bool {
        section: Debugging, long: Some("check-config"), shape: Switch("true"), action: true,
    }

    /// Print the effective configuration as TOML (it loads back to the same) and exit.
    setting print_config: bool = Some(false) => bool {
        section: Debugging, long: Some("print-config"), shape: Switch("true"), action: true,
    }

    // ---- Logging -----------------------------------------------------------------------

    /// Access log file; '-' is stdout, '' disables it.
    setting access_logfile: String = Some("-".into()) => Option<String> {
        section: Logging, long: Some("access-logfile"), value_name: "FILE",
        gunicorn: As("accesslog"), default_doc: Some("- (stdout)"),
        note: "default `-` (stdout); Gunicorn's is no access log",
    }
    convert |v: Option<String>| v.filter(|s| !s.is_empty()),
        |c: &Option<String>| Some(c.clone().unwrap_or_default());

    /// Do not send access lines to syslog.
    setting disable_redirect_access_to_syslog: bool = Some(false) => bool {
        section: Logging, long: Some("disable-redirect-access-to-syslog"), shape: Switch("true"),
        status: Ignored(SYSLOG_ONLY),
    }

    /// Access log format, with Gunicorn's atoms: h l u t r m U q H s B b f a T M D L p
    /// {header}i {header}o {var}e, each as %(X)s; or json (one object per line, with the
    /// journald fields' names).
    setting access_log_format: String = Some(DEFAULT_ACCESS_LOG_FORMAT.into()) => String {
        section: Logging, long: Some("access-log-format"), aliases: &["access-logformat"],
        value_name: "FORMAT", default_doc: Some("Gunicorn's"),
    }

    /// Error log file; '-' is stderr (journald natively when stderr is the journal).
    setting error_logfile: String = Some("-".into()) => String {
        section: Logging, long: Some("error-logfile"), aliases: &["log-file"],
        value_name: "FILE", gunicorn: As("errorlog"), default_doc: Some("- (stderr)"),
    }

    /// Error log level.
    setting log_level: LogLevel = Some(LogLevel::Info) => LogLevel {
        section: Logging, long: Some("log-level"), value_name: "LEVEL", gunicorn: As("loglevel"),
    }

    // -- issue 17 (fleet): JSON logs and Prometheus metrics --

    /// Error log format: text (Gunicorn's lines) or json (one object per line: timestamp,
    /// level, message, PID), when the error log is not journald.
    setting log_format: String = Some("text".into()) => String {
        section: Logging, long: Some("log-format"), value_name: "FORMAT", gunicorn: No,
    }
    check |v| one_of(v, &["text", "json"]);

    /// Serve Prometheus metrics on this address (HOST:PORT, [IPV6]:PORT or unix:PATH), from
    /// the master, at /metrics.
    setting metrics_bind: BindAddr = None => Option<BindAddr> {
        section: Logging, long: Some("metrics-bind"), value_name: "ADDRESS", gunicorn: No,
        default_doc: Some("off"),
    }
    check |v| match v {
        BindAddr::Fd(_) => Err("takes HOST:PORT, [IPV6]:PORT or unix:PATH, not fd://".into()),
        _ => Ok(()),
    };

    /// Send the app's stdout and stderr to the error log file.
    setting capture_output: bool = Some(false) => bool {
        section: Logging, long: Some("capture-output"), shape: Switch("true"),
        status: Refused("ferricorn does not redirect the app's stdout and stderr into the error \
                         log file: keep --error-logfile '-' and let the supervisor collect both \
                         streams (journald, svlogd, supervisord's stdout_logfile)"),
    }

    /// A Python logger class for the server's logs.
    setting logger_class: String = Some("gunicorn.glogging.Logger".into()) => String {
        section: Logging, long: Some("logger-class"), value_name: "STRING",
        note: "`gunicorn.glogging.Logger` and `simple` work; another class is refused",
    }
    verdict logger_class;

    /// A Python logging configuration file (fileConfig format).
    setting logconfig: String = None => Option<String> {
        section: Logging, long: Some("log-config"), value_name: "FILE",
        status: Refused(PY_LOGGING),
    }

    /// A Python logging configuration dictionary (dictConfig format).
    setting logconfig_dict: toml::Table = Some(toml::Table::new()) => toml::Table {
        section: Logging, shape: NoFlag, status: Refused(PY_LOGGING), default_doc: Some("{}"),
    }

    /// A Python logging configuration in a JSON file (dictConfig format).
    setting logconfig_json: String = None => Option<String> {
        section: Logging, long: Some("log-config-json"), value_name: "FILE",
        status: Refused(PY_LOGGING),
    }

    /// Where --log-syslog sends: unix://PATH#TYPE, udp://HOST:PORT or tcp://HOST:PORT.
    setting syslog_addr: String = Some("udp://localhost:514".into()) => String {
        section: Logging, long: Some("log-syslog-to"), value_name: "SYSLOG_ADDR",
        status: Ignored(SYSLOG_ONLY),
    }

    /// Send the server's log to syslog.
    setting syslog: bool = Some(false) => bool {
        section: Logging, long: Some("log-syslog"), shape: Switch("true"),
        status: Refused("ferricorn does not write to syslog: under systemd its log goes to \
                         journald natively (which forwards to syslog when configured); \
                         elsewhere pipe stderr to logger(1)"),
    }

    /// The program name in syslog entries.
    setting syslog_prefix: String = None => Option<String> {
        section: Logging, long: Some("log-syslog-prefix"), value_name: "SYSLOG_PREFIX",
        status: Ignored(SYSLOG_ONLY),
    }

    /// The syslog facility.
    setting syslog_facility: String = Some("user".into()) => String {
        section: Logging, long: Some("log-syslog-facility"), value_name: "SYSLOG_FACILITY",
        status: Ignored(SYSLOG_ONLY),
    }

    /// Keep stdin, stdout and stderr open in --daemon mode.
    setting enable_stdio_inheritance: bool = Some(false) => bool {
        section: Logging, long: Some("enable-stdio-inheritance"), short: Some('R'),
        shape: Switch("true"),
        status: Refused("with --daemon ferricorn connects stdin, stdout and stderr to \
                         /dev/null: write the logs to files (--error-logfile, \
                         --access-logfile), or run it in the foreground under a supervisor"),
    }

    /// Send statsd metrics (Gunicorn's names: gunicorn.requests, gunicorn.request.duration,
    /// gunicorn.request.status.NNN, gunicorn.workers, gunicorn.log.*) to HOST:PORT (UDP; port
    /// 8125 by default) or unix://PATH (a datagram socket).
    setting statsd_host: String = None => Option<String> {
        section: Logging, long: Some("statsd-host"), value_name: "STATSD_ADDR",
        note: "never waits: what the socket cannot take at once is dropped (one warning a \
               minute); a request's three metrics go in one datagram",
    }
    check |v| statsd_address(v);

    /// Datadog tags added to every statsd metric (`|#TAGS`), e.g. env:prod,service:app.
    setting dogstatsd_tags: String = Some(String::new()) => String {
        section: Logging, long: Some("dogstatsd-tags"), value_name: "DOGSTATSD_TAGS",
    }

    /// Prefix of the statsd metric names (a dot is added, as in Gunicorn).
    setting statsd_prefix: String = Some(String::new()) => String {
        section: Logging, long: Some("statsd-prefix"), value_name: "STATSD_PREFIX",
    }

    /// Send the number of connections waiting to be accepted on the TCP listeners as the
    /// statsd histogram gunicorn.backlog, every second (needs --statsd-host).
    setting enable_backlog_metric: bool = Some(false) => bool {
        section: Logging, long: Some("enable-backlog-metric"), shape: Switch("true"),
        note: "TCP listeners only, as in Gunicorn (Linux TCP_INFO); a unix socket's backlog \
               is not counted",
    }

    // ---- Process naming ----------------------------------------------------------------

    /// Process name shown in ps/top: 'ferricorn: master [NAME]'.
    setting name: String = None => Option<String> {
        section: ProcessNaming, long: Some("name"), short: Some('n'), value_name: "NAME",
        gunicorn: As("proc_name"), default_doc: Some("the app module"),
    }
    check |v| if v.is_empty() { Err("must not be empty".into()) } else { Ok(()) };

    /// The process name when --name is not set (an internal Gunicorn setting).
    setting default_proc_name: String = None => Option<String> {
        section: ProcessNaming, shape: NoFlag, default_doc: Some("gunicorn"),
        status: Ignored("without --name ferricorn names its processes after the app module"),
    }

    // ---- SSL ---------------------------------------------------------------------------

    /// TLS key file.
    setting keyfile: String = None => Option<String> {
        section: Ssl, long: Some("keyfile"), value_name: "FILE", status: Refused(TLS),
    }

    /// TLS certificate file.
    setting certfile: String = None => Option<String> {
        section: Ssl, long: Some("certfile"), value_name: "FILE", status: Refused(TLS),
    }

    /// TLS version (deprecated and ignored by Gunicorn too).
    setting ssl_version: String = Some("TLS".into()) => String {
        section: Ssl, long: Some("ssl-version"), value_name: "STRING", status: Ignored(TLS_ONLY),
    }

    /// Whether a client certificate is required: 0 no, 1 optional, 2 required.
    setting cert_reqs: u32 = Some(0) => u32 {
        section: Ssl, long: Some("cert-reqs"), value_name: "INT", status: Ignored(TLS_ONLY),
    }
    check |v| range(*v, 0, 2);

    /// CA certificates file.
    setting ca_certs: String = None => Option<String> {
        section: Ssl, long: Some("ca-certs"), value_name: "FILE", status: Ignored(TLS_ONLY),
    }

    /// Suppress ragged EOFs (Python's ssl module).
    setting suppress_ragged_eofs: bool = Some(true) => bool {
        section: Ssl, long: Some("suppress-ragged-eofs"), shape: Switch("true"),
        status: Ignored(TLS_ONLY),
    }

    /// Do the TLS handshake when a connection is accepted.
    setting do_handshake_on_connect: bool = Some(false) => bool {
        section: Ssl, long: Some("do-handshake-on-connect"), shape: Switch("true"),
        status: Ignored(TLS_ONLY),
    }

    /// TLS cipher suites, in OpenSSL's cipher list format.
    setting ciphers: String = None => Option<String> {
        section: Ssl, long: Some("ciphers"), value_name: "STRING", status: Ignored(TLS_ONLY),
    }

    // ---- HTTP/2 ------------------------------------------------------------------------

    /// HTTP versions to serve, by preference: h1, h2 (comma-separated).
    setting http_protocols: Vec<String> = Some(vec!["h1".into()]) => Vec<String> {
        section: Http2, long: Some("http-protocols"), shape: Comma, value_name: "STRING",
        default_doc: Some("h1"), note: "`h1` works; `h2` is refused (terminate HTTP/2 in nginx)",
    }
    check |v| v.iter().try_for_each(|p| one_of(p, &["h1", "h2", "h3"]));
    verdict http_protocols;

    /// Cleartext HTTP/2 (h2c).
    setting http2_cleartext: String = Some("off".into()) => String {
        section: Http2, long: Some("http2-cleartext"), value_name: "STRING",
        note: "`off` works; anything else is refused",
    }
    verdict http2_cleartext;

    /// Maximum concurrent streams per HTTP/2 connection.
    setting http2_max_concurrent_streams: u32 = Some(100) => u32 {
        section: Http2, long: Some("http2-max-concurrent-streams"), value_name: "INT",
        status: Ignored(HTTP2_ONLY),
    }

    /// Initial HTTP/2 flow-control window, in bytes.
    setting http2_initial_window_size: u32 = Some(65535) => u32 {
        section: Http2, long: Some("http2-initial-window-size"), value_name: "INT",
        status: Ignored(HTTP2_ONLY),
    }

    /// Maximum HTTP/2 frame size, in bytes.
    setting http2_max_frame_size: u32 = Some(16384) => u32 {
        section: Http2, long: Some("http2-max-frame-size"), value_name: "INT",
        status: Ignored(HTTP2_ONLY),
    }
    check |v| range(*v, 16384, 16_777_215);

    /// Maximum HTTP/2 header list size, in bytes.
    setting http2_max_header_list_size: u32 = Some(65536) => u32 {
        section: Http2, long: Some("http2-max-header-list-size"), value_name: "INT",
        status: Ignored(HTTP2_ONLY),
    }

    // ---- Security ----------------------------------------------------------------------

    /// Maximum size of the request line in bytes (414 beyond); 0 means 8190.
    setting limit_request_line: u32 = Some(4094) => u32 {
        section: Security, long: Some("limit-request-line"), value_name: "INT",
    }
    check |v| range(*v, 0, 8190);

    /// Maximum number of request header fields (431 beyond).
    setting limit_request_fields: u32 = Some(100) => u32 {
        section: Security, long: Some("limit-request-fields"), value_name: "INT",
    }
    check |v| range(*v, 1, 32768);

    /// Maximum size of one request header field in bytes (431 beyond); 0 means unlimited.
    setting limit_request_field_size: u32 = Some(8190) => u32 {
        section: Security, long: Some("limit-request-field_size"),
        aliases: &["limit-request-field-size"], value_name: "INT",
    }
    check |v| range(*v, 0, 1 << 20);

    /// Maximum size of a request body in bytes (413 beyond, checked against Content-Length
    /// before reading and while a chunked body arrives); 0 means unlimited.
    setting limit_request_body: u64 = Some(DEFAULT_LIMIT_REQUEST_BODY) => u64 {
        section: Security, long: Some("limit-request-body"), value_name: "BYTES", gunicorn: No,
    }

    /// Seconds a client has to send a whole request head (408 beyond); separate from
    /// --keep-alive, which is how long an idle connection waits for the next request to begin.
    setting header_timeout: u64 = Some(5) => u64 {
        section: Security, long: Some("header-timeout"), value_name: "SECONDS", gunicorn: No,
    }
    check |v| range(*v, 1, 3600);

    /// Seconds a client gets to send a request body, plus one more second for every
    /// --body-min-rate bytes it sends; also the longest silence allowed mid-body (408 beyond).
    setting body_timeout: u64 = Some(20) => u64 {
        section: Security, long: Some("body-timeout"), value_name: "SECONDS", gunicorn: No,
    }
    check |v| range(*v, 1, 86400);

    /// Bytes per second of request body that earn one more second of --body-timeout (Apache
    /// mod_reqtimeout's MinRate), never more than --body-timeout ahead; 0 means only silence
    /// is limited.
    setting body_min_rate: u64 = Some(500) => u64 {
        section: Security, long: Some("body-min-rate"), value_name: "BYTES", gunicorn: No,
    }

    /// Seconds a write to a client may wait for it to read (nginx's send_timeout: the time
    /// between two successful writes, not for a whole response); beyond, the connection is cut
    /// and the app's thread freed. 0 means no limit.
    setting send_timeout: u64 = Some(30) => u64 {
        section: Security, long: Some("send-timeout"), value_name: "SECONDS", gunicorn: No,
    }
    check |v| range(*v, 0, 86400);

    // ---- Server mechanics --------------------------------------------------------------

    /// Import the app in the master before forking the workers (they share its memory
    /// copy-on-write); a reload (HUP) then starts a new master.
    setting preload_app: bool = Some(false) => bool {
        section: ServerMechanics, long: Some("preload"), shape: Switch("true"),
        note: "HUP then starts a new master (as USR2 does) so that new code is served; \
               Gunicorn's HUP cannot load new code with --preload",
    }

    /// Disable sendfile() (default: the SENDFILE environment variable).
    setting sendfile: bool = None => Option<bool> {
        section: ServerMechanics, long: Some("no-sendfile"), shape: Switch("false"),
        env: Some("SENDFILE"),
        status: Ignored("ferricorn does not use sendfile(): wsgi.file_wrapper bodies are read \
                         and written by Rust without Python"),
    }

    /// Set SO_REUSEPORT on the listening sockets.
    setting reuse_port: bool = Some(false) => bool {
        section: ServerMechanics, long: Some("reuse-port"), shape: Switch("true"),
        status: Ignored("the master binds each address once and every worker accepts on that \
                         socket, so there is nothing for SO_REUSEPORT to spread"),
    }

    /// Change to this directory before loading the app.
    setting chdir: PathBuf = None => Option<PathBuf> {
        section: ServerMechanics, long: Some("chdir"), value_name: "DIR",
        default_doc: Some("the current directory"),
    }

    /// Detach from the terminal (for plain shells; refused under systemd and other monitors).
    setting daemon: bool = Some(false) => bool {
        section: ServerMechanics, long: Some("daemon"), short: Some('D'), shape: Switch("true"),
    }

    /// Environment variable for the app, as KEY=VALUE. Repeatable.
    setting env: Vec<String> = Some(vec![]) => Vec<String> {
        section: ServerMechanics, long: Some("env"), short: Some('e'), shape: Repeat,
        value_name: "KEY=VALUE", gunicorn: As("raw_env"),
    }
    check |v| v.iter().try_for_each(|kv| match kv.split_once('=') {
        Some((k, _)) if !k.is_empty() && !k.contains('\0') => Ok(()),
        _ => Err(format!("'{kv}' is not KEY=VALUE")),
    });

    /// PID file, written by the master (atomically) and removed at exit.
    setting pid: PathBuf = None => Option<PathBuf> {
        section: ServerMechanics, long: Some("pid"), short: Some('p'), value_name: "FILE",
        gunicorn: As("pidfile"),
    }

    /// Directory of the workers' heartbeat files.
    setting worker_tmp_dir: String = None => Option<String> {
        section: ServerMechanics, long: Some("worker-tmp-dir"), value_name: "DIR",
        status: Ignored("workers write no heartbeat files: they report to the master over a \
                         pipe, so no directory (/dev/shm or another) is needed"),
    }

    /// Run workers as this user (name or uid); the master binds and writes the pid file first.
    setting user: String = None => Option<String> {
        section: ServerMechanics, long: Some("user"), short: Some('u'), value_name: "USER",
        default_doc: Some("the master's"),
    }

    /// Run workers as this group (name or gid).
    setting group: String = None => Option<String> {
        section: ServerMechanics, long: Some("group"), short: Some('g'), value_name: "GROUP",
        default_doc: Some("the user's primary group"),
    }

    /// File mode mask for files ferricorn creates (unix sockets, pid file), e.g. 0o007 or 007.
    setting umask: u32 = None => Option<u32> {
        section: ServerMechanics, long: Some("umask"), short: Some('m'), value_name: "MASK",
        default_doc: Some("inherited"), note: "default: inherited (Gunicorn's is 0)",
    }
    check |v| range(*v, 0, 0o777);
    parse parse_umask;

    /// Set the workers' supplementary groups to all of the user's groups.
    setting initgroups: bool = Some(false) => bool {
        section: ServerMechanics, long: Some("initgroups"), shape: Switch("true"),
        status: Ignored("ferricorn always gives workers the supplementary groups of --user \
                         (initgroups(3))"),
    }

    /// Directory for request bodies being read.
    setting tmp_upload_dir: String = None => Option<String> {
        section: ServerMechanics, shape: NoFlag,
        status: Ignored("request bodies over 1 MiB go to an unnamed temporary file in $TMPDIR \
                         (set TMPDIR in the environment to move them)"),
    }

    /// Headers by which a trusted proxy (--forwarded-allow-ips) says the request came over
    /// HTTPS, each with the exact value that means so (NAME=VALUE, comma-separated; '' for
    /// none); contradicting ones are a 400.
    setting secure_scheme_headers: BTreeMap<String, String> = Some(BTreeMap::from([
        ("X-FORWARDED-PROTOCOL".into(), "ssl".into()),
        ("X-FORWARDED-PROTO".into(), "https".into()),
        ("X-FORWARDED-SSL".into(), "on".into()),
    ])) => BTreeMap<String, String> {
        section: ServerMechanics, long: Some("secure-scheme-headers"), shape: Comma,
        value_name: "NAME=VALUE",
        default_doc: Some("X-FORWARDED-PROTOCOL=ssl,X-FORWARDED-PROTO=https,X-FORWARDED-SSL=on"),
        note: "a table in the config file; the flag is ferricorn's (Gunicorn has none); \
               names match in any case, values exactly (as in Gunicorn)",
    }

    /// Peers trusted to set X-Forwarded-Proto & co: comma-separated IPs or CIDRs, '*' for all;
    /// a unix-socket peer is always trusted.
    setting forwarded_allow_ips: String = Some("127.0.0.1,::1".into()) => String {
        section: ServerMechanics, long: Some("forwarded-allow-ips"), value_name: "IPS",
        env: Some("FORWARDED_ALLOW_IPS"), default_doc: Some("$FORWARDED_ALLOW_IPS or 127.0.0.1,::1"),
    }
    check |v| ForwardedAllowIps::parse(v).map(|_| ());
    toml_value accept_comma_string;

    /// Comma-separated directories added to the Python path.
    setting pythonpath: Vec<String> = Some(vec![]) => Vec<String> {
        section: ServerMechanics, long: Some("pythonpath"), shape: Comma, value_name: "DIRS",
    }

    /// A PasteDeploy config file to load the app from.
    setting paste: String = None => Option<String> {
        section: ServerMechanics, long: Some("paste"), aliases: &["paster"], value_name: "STRING",
        status: Refused(PASTE),
    }

    /// Read a PROXY protocol header (nginx `proxy_protocol on;`, HAProxy `send-proxy`) before
    /// the first request: off, v1, v2 or auto (both; the flag alone means auto). The client it
    /// names becomes REMOTE_ADDR and the access log's %(h)s.
    setting proxy_protocol: ProxyProtocol = Some(ProxyProtocol::Off) => ProxyProtocol {
        section: ServerMechanics, long: Some("proxy-protocol"), shape: OptionalValue("auto"),
        value_name: "MODE",
        note: "a connection without a header is plain HTTP; a header from a peer outside \
               --proxy-allow-from, or a malformed one, closes it with a warning",
    }

    /// Peers allowed to send a PROXY protocol header: comma-separated IPs or CIDRs, '*' for
    /// all; a unix-socket peer is always allowed.
    setting proxy_allow_ips: String = Some("127.0.0.1,::1".into()) => String {
        section: ServerMechanics, long: Some("proxy-allow-from"), value_name: "IPS",
    }
    check |v| ForwardedAllowIps::parse(v).map(|_| ());
    toml_value accept_comma_string;

    /// The protocol of incoming connections: http or uwsgi.
    setting protocol: String = Some("http".into()) => String {
        section: ServerMechanics, long: Some("protocol"), value_name: "STRING",
        note: "`http` works; `uwsgi` is refused (use `proxy_pass` in nginx)",
    }
    check |v| one_of(v, &["http", "uwsgi"]);
    verdict protocol;

    /// Peers allowed to speak the uWSGI protocol.
    setting uwsgi_allow_ips: String = Some("127.0.0.1,::1".into()) => String {
        section: ServerMechanics, long: Some("uwsgi-allow-from"), value_name: "IPS",
        status: Ignored("it only applies to --protocol uwsgi, which ferricorn does not speak"),
    }
    toml_value accept_comma_string;

    /// A PasteDeploy global variable, KEY=VALUE. Repeatable.
    setting raw_paste_global_conf: Vec<String> = Some(vec![]) => Vec<String> {
        section: ServerMechanics, long: Some("paste-global"), shape: Repeat, value_name: "CONF",
        status: Refused(PASTE),
    }

    /// Accept obsolete header line folding.
    setting permit_obsolete_folding: bool = Some(false) => bool {
        section: ServerMechanics, long: Some("permit-obsolete-folding"), shape: Switch("true"),
        status: Refused(LENIENT),
    }

    /// Accept spaces between a header name and its colon.
    setting strip_header_spaces: bool = Some(false) => bool {
        section: ServerMechanics, long: Some("strip-header-spaces"), shape: Switch("true"),
        status: Refused(LENIENT),
    }

    /// Accept request methods outside the usual conventions.
    setting permit_unconventional_http_method: bool = Some(false) => bool {
        section: ServerMechanics, long: Some("permit-unconventional-http-method"),
        shape: Switch("true"), status: Refused(LENIENT),
    }

    /// Accept HTTP versions other than 1.0 and 1.1.
    setting permit_unconventional_http_version: bool = Some(false) => bool {
        section: ServerMechanics, long: Some("permit-unconventional-http-version"),
        shape: Switch("true"), status: Refused(LENIENT),
    }

    /// Upper-case the request method.
    setting casefold_http_method: bool = Some(false) => bool {
        section: ServerMechanics, long: Some("casefold-http-method"), shape: Switch("true"),
        status: Refused(LENIENT),
    }

    /// Header names with `_` (otherwise dropped) that a trusted proxy (--forwarded-allow-ips)
    /// may send: they reach the app as HTTP_NAME; a SCRIPT_NAME header also sets SCRIPT_NAME
    /// and is taken off PATH_INFO. Comma-separated, '*' for all, '' for none.
    setting forwarder_headers: Vec<String> = Some(vec!["SCRIPT_NAME".into(), "PATH_INFO".into()])
        => Vec<String> {
        section: ServerMechanics, long: Some("forwarder-headers"), shape: Comma,
        value_name: "NAMES", default_doc: Some("SCRIPT_NAME,PATH_INFO"),
        note: "a path that does not start with the SCRIPT_NAME header is a 400 (Gunicorn's \
               \"Configuration problem\"); nginx: `proxy_set_header SCRIPT_NAME /prefix;`",
    }

    /// What to do with header names that cannot be mapped into the environ unambiguously
    /// (those with `_`): drop, refuse or dangerous.
    setting header_map: String = Some("drop".into()) => String {
        section: ServerMechanics, long: Some("header-map"), value_name: "STRING",
        note: "`drop` works (ferricorn's behaviour); `refuse` and `dangerous` are refused",
    }
    check |v| one_of(v, &["drop", "refuse", "dangerous"]);
    verdict header_map;

    /// The root path of an ASGI app (the prefix a proxy in front strips): the scope's
    /// `root_path`, and the front of its `path`, as uvicorn does.
    setting root_path: String = Some(String::new()) => String {
        section: ServerMechanics, long: Some("root-path"), value_name: "STRING",
        note: "ASGI apps; a WSGI app's SCRIPT_NAME comes from the environment",
    }

    /// The HTTP parser: auto, fast or python.
    setting http_parser: String = Some("auto".into()) => String {
        section: ServerMechanics, long: Some("http-parser"), value_name: "STRING",
        status: Ignored("ferricorn has one HTTP parser, in Rust"),
    }
    check |v| one_of(v, &["auto", "fast", "python"]);

    /// A path ferricorn answers itself, for load balancers and orchestrators (never passed to
    /// the app): 200 while serving, 503 once the server is stopping (after TERM).
    setting health_path: String = None => Option<String> {
        section: ServerMechanics, long: Some("health-path"), value_name: "PATH", gunicorn: No,
        default_doc: Some("off"),
    }
    check |v| if v.starts_with('/') && !v.contains(['?', '#', ' ']) {
        Ok(())
    } else {
        Err(format!("'{v}' is not a path: it must start with '/' and have no query"))
    };

    /// Virtualenv whose packages the app imports.
    setting virtualenv: PathBuf = None => Option<PathBuf> {
        section: ServerMechanics, long: Some("virtualenv"), value_name: "DIR",
        env: Some("VIRTUAL_ENV"), gunicorn: No, default_doc: Some("$VIRTUAL_ENV"),
    }

    // ---- Server socket -----------------------------------------------------------------

    /// Address to listen on: HOST:PORT, HOST, [IPV6]:PORT, unix:PATH or fd://N. Repeatable.
    setting bind: Vec<BindAddr> = Some(vec![BindAddr::Tcp {
        host: "127.0.0.1".into(),
        port: 8000,
    }]) => Vec<BindAddr> {
        section: ServerSocket, long: Some("bind"), short: Some('b'), shape: Repeat,
        value_name: "ADDRESS", env: Some("PORT"),
        default_doc: Some("127.0.0.1:8000, or 0.0.0.0:$PORT when PORT is set"),
    }
    check |v| if v.is_empty() { Err("at least one address is needed".into()) } else { Ok(()) };
    env_value port_bind;

    /// Maximum number of pending connections per listener.
    setting backlog: u32 = Some(2048) => u32 {
        section: ServerSocket, long: Some("backlog"), value_name: "INT",
    }
    check |v| range(*v, 1, 65535);

    // ---- Worker processes --------------------------------------------------------------

    /// Number of worker processes.
    setting workers: u32 = Some(1) => u32 {
        section: WorkerProcesses, long: Some("workers"), short: Some('w'), value_name: "INT",
        env: Some("WEB_CONCURRENCY"), default_doc: Some("$WEB_CONCURRENCY or 1"),
    }
    check |v| range(*v, 1, 1024);

    /// Worker class: sync or gthread (both are ferricorn's workers: --threads sets the
    /// Python threads); asgi, uvicorn.workers.UvicornWorker or uvicorn_worker.UvicornWorker
    /// serve the app as ASGI (as --interface asgi). gevent, eventlet and tornado are refused
    /// with the alternative.
    setting worker_class: String = Some("sync".into()) => String {
        section: WorkerProcesses, long: Some("worker-class"), short: Some('k'),
        value_name: "CLASS",
        note: "`sync`, `gthread` work; `asgi` and the uvicorn classes mean --interface asgi; \
               gevent, eventlet, tornado and other classes are refused",
    }
    verdict worker_class;

    // ---- ASGI (ferricorn's own settings; the asgi_* ones below are Gunicorn's) -----------

    /// The app's interface: auto (an `async def app(scope, receive, send)`, or an object whose
    /// `__call__` is a coroutine function, is ASGI; anything else WSGI), wsgi or asgi. `-k asgi`
    /// and the uvicorn worker classes mean asgi.
    setting interface: String = Some("auto".into()) => String {
        section: WorkerProcesses, long: Some("interface"), value_name: "INTERFACE", gunicorn: No,
    }
    check |v| one_of(v, &["auto", "wsgi", "asgi"]);

    /// Python threads per worker handling requests.
    setting threads: u32 = Some(1) => u32 {
        section: WorkerProcesses, long: Some("threads"), value_name: "INT",
    }
    check |v| range(*v, 1, 4096);

    /// Maximum number of simultaneous clients per worker: at the cap the worker stops
    /// accepting (the listen backlog and the other workers take new connections) until one
    /// closes.
    setting worker_connections: u32 = Some(10_000) => u32 {
        section: WorkerProcesses, long: Some("worker-connections"), value_name: "INT",
        note: "default 10000 (Gunicorn's is 1000): an idle or slow connection costs a worker a \
               few KiB and no thread, and at 1000 a thousand slowloris connections kept the \
               normal clients waiting in the backlog (p99 2.4 s, against 1.2 ms at 10000)",
    }
    check |v| range(*v, 1, 1_000_000);

    /// Requests a worker serves before it is replaced; 0 disables.
    setting max_requests: u64 = Some(0) => u64 {
        section: WorkerProcesses, long: Some("max-requests"), value_name: "INT",
    }

    /// Random extra requests (0..=N) added to max-requests per worker.
    setting max_requests_jitter: u64 = Some(0) => u64 {
        section: WorkerProcesses, long: Some("max-requests-jitter"), value_name: "INT",
    }

    /// Seconds a worker may be silent (busy in one request, or hung) before it is killed and
    /// replaced; 0 disables.
    setting timeout: u64 = Some(30) => u64 {
        section: WorkerProcesses, long: Some("timeout"), short: Some('t'), value_name: "SECONDS",
    }
    check |v| range(*v, 0, 86400 * 365);

    /// Seconds in-flight requests get to finish after TERM or a reload.
    setting graceful_timeout: u64 = Some(30) => u64 {
        section: WorkerProcesses, long: Some("graceful-timeout"), value_name: "SECONDS",
    }
    check |v| range(*v, 0, 86400 * 365);

    /// Seconds between TERM and stopping to accept, while --health-path answers 503 (so a load
    /// balancer or an orchestrator stops sending first); then the graceful stop.
    setting drain_delay: u64 = Some(0) => u64 {
        section: WorkerProcesses, long: Some("drain-delay"), value_name: "SECONDS", gunicorn: No,
    }
    check |v| range(*v, 0, 3600);

    /// Seconds an idle keep-alive connection is kept open (also the time a client has to send
    /// a request head); 0 disables keep-alive.
    setting keep_alive: u64 = Some(2) => u64 {
        section: WorkerProcesses, long: Some("keep-alive"), value_name: "SECONDS",
        gunicorn: As("keepalive"),
    }
    check |v| range(*v, 0, 86400);

    /// The ASGI event loop: auto (uvloop when it is installed, else asyncio), asyncio or
    /// uvloop.
    setting asgi_loop: String = Some("auto".into()) => String {
        section: WorkerProcesses, long: Some("asgi-loop"), value_name: "STRING",
    }
    check |v| one_of(v, &["auto", "asyncio", "uvloop"]);

    /// The ASGI lifespan protocol: auto (used if the app supports it), on (a failure is a
    /// failed boot) or off.
    setting asgi_lifespan: String = Some("auto".into()) => String {
        section: WorkerProcesses, long: Some("asgi-lifespan"), aliases: &["lifespan"],
        value_name: "STRING",
    }
    check |v| one_of(v, &["auto", "on", "off"]);

    /// Seconds an ASGI app gets to clean up after its client disconnected.
    setting asgi_disconnect_grace_period: u64 = Some(3) => u64 {
        section: WorkerProcesses, long: Some("asgi-disconnect-grace-period"), value_name: "INT",
        status: Ignored("ferricorn does not cancel an ASGI app whose client went away: the app \
                         learns it from `http.disconnect` (or a failing `send`) and ends itself"),
    }

    // ---- Dirty arbiters ----------------------------------------------------------------

    /// A dirty app: module:Class or module:Class:N. Repeatable.
    setting dirty_apps: Vec<String> = Some(vec![]) => Vec<String> {
        section: DirtyArbiter, long: Some("dirty-app"), shape: Repeat, value_name: "STRING",
        status: Refused(DIRTY),
    }

    /// Number of dirty workers (0: none).
    setting dirty_workers: u32 = Some(0) => u32 {
        section: DirtyArbiter, long: Some("dirty-workers"), value_name: "INT",
        status: Refused(DIRTY),
    }

    /// Seconds a dirty task may run (0: no limit).
    setting dirty_timeout: u64 = Some(300) => u64 {
        section: DirtyArbiter, long: Some("dirty-timeout"), value_name: "INT",
        status: Ignored(DIRTY_ONLY),
    }

    /// Threads per dirty worker.
    setting dirty_threads: u32 = Some(1) => u32 {
        section: DirtyArbiter, long: Some("dirty-threads"), value_name: "INT",
        status: Ignored(DIRTY_ONLY),
    }

    /// Seconds dirty workers get to stop.
    setting dirty_graceful_timeout: u64 = Some(30) => u64 {
        section: DirtyArbiter, long: Some("dirty-graceful-timeout"), value_name: "INT",
        status: Ignored(DIRTY_ONLY),
    }
}

hooks! {
    /// Just before the master is initialised.
    hook on_starting(server) => Works;
    /// When workers are recycled on HUP.
    hook on_reload(server) => Works;
    /// Just after the server started.
    hook when_ready(server) => Works;
    /// Just before a worker is forked.
    hook pre_fork(server, worker) => Works;
    /// Just after a worker was forked (in the worker).
    hook post_fork(server, worker) => Works;
    /// Just after a worker loaded the app.
    hook post_worker_init(worker) => Works;
    /// When a worker exits on SIGINT or SIGQUIT.
    hook worker_int(worker) => Works;
    /// When a worker receives SIGABRT (usually a timeout).
    hook worker_abort(worker) => Works;
    /// Just before a new master is executed (USR2).
    hook pre_exec(server) => Works;
    /// Just before a worker handles a request.
    hook pre_request(worker, req) => Works;
    /// After a worker handled a request.
    hook post_request(worker, req, environ, resp) => Works;
    /// In the master, just after a worker exited.
    hook child_exit(server, worker) => Works;
    /// In the worker, just before it exits.
    hook worker_exit(server, worker) => Works;
    /// When the number of workers changed.
    hook nworkers_changed(server, new_value, old_value) => Works;
    /// Just before the server exits.
    hook on_exit(server) => Works;
    /// Builds the TLS context.
    hook ssl_context(config, default_ssl_context_factory) => Refused(TLS);
    /// Before the dirty arbiter starts.
    hook on_dirty_starting(arbiter) => Refused(DIRTY);
    /// After a dirty worker was forked.
    hook dirty_post_fork(arbiter, worker) => Refused(DIRTY);
    /// After a dirty worker loaded its apps.
    hook dirty_worker_init(worker) => Refused(DIRTY);
    /// When a dirty worker exits.
    hook dirty_worker_exit(arbiter, worker) => Refused(DIRTY);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::spec::Status;

    /// No two settings answer to the same flag or config-file key, and every entry says what
    /// it is: a help text, and a reason unless it works.
    #[test]
    fn names_flags_and_keys_are_unique_and_explained() {
        let mut flags = BTreeMap::new();
        let mut keys = BTreeMap::new();
        for s in SETTINGS {
            assert!(!s.help.trim().is_empty(), "{} has no help", s.name);
            assert_eq!(
                s.status == Status::Works,
                s.status.reason().is_empty(),
                "{}: a reason unless it works",
                s.name
            );
            let mut own: Vec<String> = s.long.iter().map(|l| format!("--{l}")).collect();
            own.extend(s.aliases.iter().map(|a| format!("--{a}")));
            own.extend(s.short.iter().map(|c| format!("-{c}")));
            for f in own {
                if let Some(other) = flags.insert(f.clone(), s.name) {
                    panic!("{f} is both {other} and {}", s.name);
                }
            }
            let mut k: Vec<String> = vec![s.name.to_string()];
            k.extend(s.gunicorn_name().map(|g| g.replace('-', "_")));
            k.extend(s.keys.iter().map(|x| x.replace('-', "_")));
            k.dedup();
            for key in k {
                if let Some(other) = keys.insert(key.clone(), s.name) {
                    panic!("key {key} is both {other} and {}", s.name);
                }
            }
        }
        for h in HOOKS {
            assert!(
                !keys.contains_key(h.name),
                "hook {} is also a setting",
                h.name
            );
            assert!(
                h.status == Status::Works || !h.status.reason().is_empty(),
                "{}",
                h.name
            );
        }
    }
}

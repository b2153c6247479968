//! `ferricorn systemd generate`: the deployment files, from the server's own configuration.
//!
//! One [`Plan`] (unit name, user, socket path, ...) is derived from the resolved [`Config`]
//! and the deployment options; every file is rendered from it, so the socket path in the
//! `.socket` unit, in `ExecStart=`, in tmpfiles.d and in nginx is one value, written four times.
//! Output is deterministic: nothing about the generating machine (time, host name, installed
//! systemd) is written unless passed in. The one reading of the machine is [`runtime_paths`]:
//! when `--exe` exists here (generating on the target, e.g. from the virtualenv's `ferricorn`),
//! what it needs at run time decides `ProtectHome=`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::sockets::BindAddr;
use crate::units::unitfile::quote_word;

/// The systemd version that introduced `Type=notify-reload`.
pub const NOTIFY_RELOAD_SINCE: u32 = 253;
/// The systemd version that introduced `LogRateLimitIntervalSec=`.
pub const LOG_RATE_LIMIT_SINCE: u32 = 240;
/// Assumed when the installed version cannot be found (the conservative variant).
pub const FALLBACK_SYSTEMD_VERSION: u32 = 252;
/// `TimeoutStopSec=` is the graceful timeout plus this much.
pub const STOP_MARGIN: u64 = 15;
/// supervisor's `stopwaitsecs` and upstart's `kill timeout` are the graceful timeout plus this.
pub const SUPERVISOR_STOP_MARGIN: u64 = 5;

/// Deployment options that are not server settings.
#[derive(Debug, Clone)]
pub struct DeployOptions {
    /// The ferricorn executable on the target machine.
    pub exe: PathBuf,
    /// The group the proxy (nginx) runs as: the only one allowed to connect to the socket.
    pub socket_group: String,
    /// `WatchdogSec=`, if wanted.
    pub watchdog: Option<u64>,
    /// The systemd version the units are for.
    pub systemd_version: u32,
    /// What the executable needs at run time besides itself, when it is on this machine: the
    /// interpreter on a script's `#!` line (a virtualenv's `bin/ferricorn`), the libpython the
    /// binary loads. See [`runtime_paths`].
    pub runtime_paths: Vec<String>,
}

/// `--exe` when not given: the ferricorn running now if it is the one a service would run
/// (the wheel's script in a virtualenv, or a binary installed under /usr), else
/// /usr/bin/ferricorn (the `.deb`'s; e.g. when generating from a cargo build).
pub fn default_exe() -> PathBuf {
    match crate::python::launcher() {
        Some(p) if crate::python::is_extension() || p.starts_with("/usr/") => p,
        _ => PathBuf::from("/usr/bin/ferricorn"),
    }
}

/// The paths `exe` needs at run time, read from this machine (nothing if `exe` is not here):
/// a script's interpreter as written and with symlinks resolved (a virtualenv's `python` links
/// to its base interpreter), and for the running binary the libpython it loaded.
pub fn runtime_paths(exe: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(interp) = crate::units::check::shebang(exe) {
        if let Ok(real) = std::fs::canonicalize(&interp) {
            out.push(real.display().to_string());
        }
        out.insert(0, interp);
    }
    if std::env::current_exe().is_ok_and(|e| e == exe)
        && !crate::python::is_extension()
        && !crate::PYTHON_LIBDIR.is_empty()
    {
        out.push(crate::PYTHON_LIBDIR.to_string());
    }
    out
}

/// One generated file, its path relative to the output directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedFile {
    pub path: String,
    pub contents: String,
    pub executable: bool,
}

/// Everything the files are rendered from.
#[derive(Debug, Clone)]
pub struct Plan<'a> {
    pub cfg: &'a Config,
    pub name: String,
    pub user: String,
    pub group: String,
    pub socket: String,
    pub socket_dir: String,
    pub exe: String,
    pub socket_group: String,
    pub watchdog: Option<u64>,
    pub systemd_version: u32,
    /// Directories tmpfiles.d creates, owned by the service user: the socket's, the pid file's.
    pub run_dirs: Vec<String>,
    /// `ReadWritePaths=`.
    pub writable: Vec<String>,
    /// `LogsDirectory=` (relative to /var/log).
    pub logs_dirs: Vec<String>,
    /// `ProtectHome=` value.
    pub protect_home: &'static str,
    /// Why `ProtectHome=` is `read-only` when the reason is not a path the user gave.
    pub protect_home_note: Option<String>,
}

/// Which supervisor a command line is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Systemd,
    Supervisor,
    Runit,
    Upstart,
    Procfile,
}

/// Names that go into unit names, paths, nginx upstream names and a pkill pattern.
fn check_name(what: &str, v: &str) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} '{v}' must be 1-64 letters, digits, '_', '.' or '-', starting with a letter \
             or digit"
        ))
    }
}

/// A user or group name as systemd, tmpfiles.d and chpst accept it.
fn check_account(what: &str, v: &str) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.len() <= 32
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && !v.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!("{what} '{v}' is not a valid user or group name"))
    }
}

/// Paths written into unit directives (`WorkingDirectory=`, `ReadWritePaths=`, tmpfiles.d,
/// nginx, logrotate) must be absolute and need no quoting anywhere.
fn check_path(what: &str, p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("{what} '{p}' must be an absolute path"));
    }
    if !p
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '.' | '-' | '+' | '@' | ','))
    {
        return Err(format!(
            "{what} '{p}' may only contain letters, digits and / _ . - + @ , (it is written \
             unquoted into unit files, tmpfiles.d, nginx and logrotate)"
        ));
    }
    if p.split('/').any(|c| c == "..") {
        return Err(format!("{what} '{p}' must not contain '..'"));
    }
    Ok(())
}

fn parent(p: &str) -> String {
    match Path::new(p).parent() {
        Some(d) if d.as_os_str().is_empty() => "/".into(),
        Some(d) => d.display().to_string(),
        None => "/".into(),
    }
}

fn under(p: &str, dir: &str) -> bool {
    p == dir || p.starts_with(&format!("{dir}/"))
}

/// /var/run is a symlink to /run.
fn normalize_run(p: &str) -> String {
    match p.strip_prefix("/var/run/") {
        Some(rest) => format!("/run/{rest}"),
        None => p.to_string(),
    }
}

/// The log files the configuration names (not `-`, not disabled).
fn log_files(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(a) = cfg.access_logfile.as_deref().filter(|a| *a != "-") {
        out.push(a.to_string());
    }
    if cfg.error_logfile != "-" && !cfg.error_logfile.is_empty() {
        out.push(cfg.error_logfile.clone());
    }
    out
}

impl<'a> Plan<'a> {
    /// Derives the plan; errors are usage errors (a configuration no unit can express).
    pub fn new(cfg: &'a Config, d: &DeployOptions) -> Result<Plan<'a>, String> {
        let name = cfg.name.clone().unwrap_or_else(|| "app".to_string());
        check_name("--name", &name)?;
        if cfg.app.is_none() {
            return Err(
                "no app given: ferricorn systemd generate [OPTIONS] module:callable (or app = \
                 \"module:callable\" in the config file)"
                    .into(),
            );
        }
        let user = cfg.user.clone().unwrap_or_else(|| "www-data".to_string());
        let group = cfg.group.clone().unwrap_or_else(|| {
            if cfg.user.is_some() {
                user.clone()
            } else {
                "www-data".to_string()
            }
        });
        check_account("--user", &user)?;
        check_account("--group", &group)?;
        check_account("--socket-group", &d.socket_group)?;
        let socket = if cfg.bind_explicit {
            match cfg.bind.as_slice() {
                [BindAddr::Unix(p)] => p.display().to_string(),
                _ => {
                    return Err(format!(
                        "--bind {}: the generated units listen on one unix socket (the socket \
                         unit's ListenStream=, which nginx connects to); give --bind \
                         unix:/run/{name}/socket or leave --bind out",
                        cfg.bind
                            .iter()
                            .map(|b| b.to_string())
                            .collect::<Vec<_>>()
                            .join(" --bind ")
                    ));
                }
            }
        } else {
            format!("/run/{name}/socket")
        };
        let socket = normalize_run(&socket);
        check_path("the socket path", &socket)?;
        if under(&socket, "/tmp") || under(&socket, "/var/tmp") {
            return Err(format!(
                "socket {socket}: /tmp and /var/tmp are private to the service (PrivateTmp=yes) \
                 and cleaned by systemd-tmpfiles; use --bind unix:/run/{name}/socket"
            ));
        }
        let socket_dir = parent(&socket);
        if socket_dir == "/" || socket_dir == "/run" {
            return Err(format!(
                "socket {socket}: put the socket in a directory of its own (/run/{name}/socket) \
                 so that tmpfiles.d can give that directory to the service user"
            ));
        }
        let exe = d.exe.display().to_string();
        check_path("--exe", &exe)?;
        let mut read_paths = vec![exe.clone()];
        if let Some(c) = &cfg.chdir {
            let c = c.display().to_string();
            check_path("--chdir", &c)?;
            read_paths.push(c);
        }
        if let Some(v) = &cfg.virtualenv {
            let v = v.display().to_string();
            check_path("--virtualenv", &v)?;
            read_paths.push(v);
        }
        read_paths.extend(
            cfg.pythonpath
                .iter()
                .filter(|p| p.starts_with('/'))
                .cloned(),
        );
        let mut run_dirs = vec![socket_dir.clone()];
        let mut writable = Vec::new();
        let mut logs_dirs = Vec::new();
        if let Some(pid) = &cfg.pid {
            let pid = normalize_run(&pid.display().to_string());
            check_path("--pid", &pid)?;
            if under(&pid, "/tmp") || under(&pid, "/var/tmp") {
                return Err(format!(
                    "--pid {pid}: /tmp is private to the service (PrivateTmp=yes), so nothing \
                     else could read it; use /run/{name}/pid"
                ));
            }
            let dir = parent(&pid);
            if dir == "/run" || dir == "/" {
                return Err(format!(
                    "--pid {pid}: the service user cannot write to {dir}; use /run/{name}/pid"
                ));
            }
            if under(&dir, "/run") && !run_dirs.contains(&dir) {
                run_dirs.push(dir.clone());
            }
            writable.push(dir);
        }
        for f in log_files(cfg) {
            check_path("log file", &f)?;
            if under(&f, "/tmp") || under(&f, "/var/tmp") {
                return Err(format!(
                    "log file {f}: /tmp is private to the service (PrivateTmp=yes); use \
                     /var/log/{name}/"
                ));
            }
            let dir = parent(&f);
            match dir.strip_prefix("/var/log/") {
                Some(rel) => {
                    if !logs_dirs.contains(&rel.to_string()) {
                        logs_dirs.push(rel.to_string());
                    }
                }
                None if dir == "/var/log" || dir == "/" => {
                    return Err(format!(
                        "log file {f}: put log files in a directory of their own \
                         (/var/log/{name}/), which the service user may write to"
                    ));
                }
                None => {
                    if !writable.contains(&dir) {
                        writable.push(dir);
                    }
                }
            }
        }
        read_paths.extend(writable.iter().cloned());
        let in_home = |p: &String| under(p, "/home") || under(p, "/root") || under(p, "/run/user");
        let protect_home_note = match d.runtime_paths.iter().find(|p| in_home(p)) {
            Some(p) if !read_paths.iter().any(in_home) => Some(format!(
                "ProtectHome=read-only: {exe} needs {p}, which ProtectHome=yes would hide; the \
                 service user {user} must be able to read it (or install ferricorn into a \
                 virtualenv of a Python outside /home and /root)"
            )),
            _ => None,
        };
        read_paths.extend(d.runtime_paths.iter().cloned());
        let protect_home = if read_paths.iter().any(in_home) {
            "read-only"
        } else {
            "yes"
        };
        Ok(Plan {
            cfg,
            name,
            user,
            group,
            socket,
            socket_dir,
            exe,
            socket_group: d.socket_group.clone(),
            watchdog: d.watchdog,
            systemd_version: d.systemd_version,
            run_dirs,
            writable,
            logs_dirs,
            protect_home,
            protect_home_note,
        })
    }

    fn app(&self) -> &str {
        self.cfg.app_spec()
    }

    fn default_log(&self, which: &str) -> String {
        format!("/var/log/{}/{which}.log", self.name)
    }

    /// The server's options, grouped as flag + value, for one supervisor.
    fn server_args(&self, v: Variant) -> Vec<Vec<String>> {
        let c = self.cfg;
        let d = Config::builtin_defaults();
        let mut out: Vec<Vec<String>> = Vec::new();
        let mut opt = |flag: &str, val: String| out.push(vec![flag.to_string(), val]);
        opt("--name", self.name.clone());
        if v != Variant::Procfile {
            opt("--bind", format!("unix:{}", self.socket));
        }
        macro_rules! diff {
            ($flag:expr, $field:ident) => {
                if c.$field != d.$field {
                    opt($flag, c.$field.to_string());
                }
            };
        }
        diff!("--workers", workers);
        diff!("--threads", threads);
        diff!("--timeout", timeout);
        diff!("--graceful-timeout", graceful_timeout);
        diff!("--keep-alive", keep_alive);
        diff!("--backlog", backlog);
        if v != Variant::Procfile
            && let Some(dir) = &c.chdir
        {
            opt("--chdir", dir.display().to_string());
        }
        if !c.pythonpath.is_empty() {
            opt("--pythonpath", c.pythonpath.join(","));
        }
        if let Some(venv) = &c.virtualenv {
            opt("--virtualenv", venv.display().to_string());
        }
        for kv in &c.env {
            opt("--env", kv.clone());
        }
        diff!("--max-requests", max_requests);
        diff!("--max-requests-jitter", max_requests_jitter);
        // Issue 17: readiness, metrics, JSON logs.
        diff!("--drain-delay", drain_delay);
        if let Some(p) = &c.health_path {
            opt("--health-path", p.clone());
        }
        if let Some(m) = &c.metrics_bind {
            opt("--metrics-bind", m.to_string());
        }
        if c.log_format != d.log_format {
            opt("--log-format", c.log_format.clone());
        }
        let files = v == Variant::Supervisor && log_files(c).is_empty();
        if files && c.access_logfile.is_some() {
            opt("--access-logfile", self.default_log("access"));
        } else if c.access_logfile != d.access_logfile {
            opt(
                "--access-logfile",
                c.access_logfile.clone().unwrap_or_default(),
            );
        }
        diff!("--access-log-format", access_log_format);
        if files {
            opt("--error-logfile", self.default_log("error"));
        } else {
            diff!("--error-logfile", error_logfile);
        }
        diff!("--log-level", log_level);
        diff!("--forwarded-allow-ips", forwarded_allow_ips);
        diff!("--limit-request-line", limit_request_line);
        diff!("--limit-request-fields", limit_request_fields);
        diff!("--limit-request-field_size", limit_request_field_size);
        diff!("--limit-request-body", limit_request_body);
        diff!("--header-timeout", header_timeout);
        diff!("--body-timeout", body_timeout);
        diff!("--body-min-rate", body_min_rate);
        if v != Variant::Procfile
            && let Some(p) = &c.pid
        {
            opt("--pid", p.display().to_string());
        }
        if let Some(m) = c.umask {
            opt("--umask", format!("0{m:o}"));
        }
        if v == Variant::Upstart {
            opt("--user", self.user.clone());
            opt("--group", self.group.clone());
        }
        out.push(vec![self.app().to_string()]);
        out
    }

    /// The server command line as words (the executable first), for systemd's `ExecStart=`.
    pub fn exec_start_words(&self) -> Vec<String> {
        let mut w = vec![self.exe.clone()];
        w.extend(self.server_args(Variant::Systemd).into_iter().flatten());
        w
    }

    fn header(&self, comment: &str, what: &str) -> String {
        format!(
            "{comment} {what}: generated by `ferricorn systemd generate` from the server's\n\
             {comment} configuration. Change the configuration and generate again rather than\n\
             {comment} editing this file; `ferricorn systemd check` reports installed files that drifted.\n"
        )
    }

    pub fn socket_unit(&self) -> String {
        let mut s = self.header("#", &format!("{}.socket", self.name));
        let _ = write!(
            s,
            "[Unit]\n\
             Description={name} socket (ferricorn)\n\
             \n\
             [Socket]\n\
             ListenStream={socket}\n\
             # Only the proxy's group may connect: a unix-socket peer is trusted with\n\
             # X-Forwarded-For/-Proto, so nobody else may reach the socket directly.\n\
             SocketUser=root\n\
             SocketGroup={group}\n\
             SocketMode=0660\n\
             DirectoryMode=0755\n\
             Backlog={backlog}\n\
             \n\
             [Install]\n\
             WantedBy=sockets.target\n",
            name = self.name,
            socket = self.socket,
            group = self.socket_group,
            backlog = self.cfg.backlog,
        );
        s
    }

    pub fn service_unit(&self) -> String {
        let c = self.cfg;
        let notify_reload = self.systemd_version >= NOTIFY_RELOAD_SINCE;
        let mut s = self.header("#", &format!("{}.service", self.name));
        let _ = write!(
            s,
            "[Unit]\n\
             Description={name} (ferricorn serving {app})\n\
             Requires={name}.socket\n\
             After={name}.socket network.target\n\
             \n\
             [Service]\n",
            name = self.name,
            app = self.app(),
        );
        if notify_reload {
            s.push_str(
                "# The master reports READY=1 once its workers serve; on HUP (systemctl reload)\n\
                 # it reports RELOADING=1, then READY=1 when the new workers serve.\n\
                 Type=notify-reload\n",
            );
        } else {
            s.push_str(
                "# The master reports READY=1 once its workers serve (and RELOADING=1/READY=1\n\
                 # around a reload).\n\
                 Type=notify\n",
            );
        }
        s.push_str(
            "# NotifyAccess=all: an upgrade (USR2) starts a new master, a child of the old one,\n\
             # which sends MAINPID=<its pid> and READY=1 itself; with NotifyAccess=main systemd\n\
             # would drop those and take the old master's exit for the service's.\n\
             NotifyAccess=all\n",
        );
        let words = self.server_args(Variant::Systemd);
        let _ = write!(s, "ExecStart={}", quote_word(&self.exe));
        for g in &words {
            let q: Vec<String> = g.iter().map(|w| quote_word(w)).collect();
            let _ = write!(s, " \\\n          {}", q.join(" "));
        }
        s.push('\n');
        if !notify_reload {
            s.push_str("ExecReload=/bin/kill -s HUP $MAINPID\n");
        }
        let _ = write!(
            s,
            "# TERM goes to the master alone, which drains its workers within the graceful\n\
             # timeout ({g} s); anything left after TimeoutStopSec= is killed.\n\
             KillMode=mixed\n\
             TimeoutStopSec={stop}\n\
             Restart=on-failure\n",
            g = c.graceful_timeout,
            stop = c.drain_delay + c.graceful_timeout + STOP_MARGIN,
        );
        if let Some(w) = self.watchdog {
            let _ = writeln!(s, "WatchdogSec={w}");
        }
        let _ = write!(s, "User={}\nGroup={}\n", self.user, self.group);
        if let Some(dir) = &c.chdir {
            let _ = writeln!(s, "WorkingDirectory={}", dir.display());
        }
        let _ = writeln!(s, "UMask={:04o}", c.umask.unwrap_or(0o027));
        if log_files(c).is_empty() {
            let _ = writeln!(
                s,
                "# Logs go to the journal: journalctl -u {}.service",
                self.name
            );
        }
        if c.access_logfile.as_deref() == Some("-") && self.systemd_version >= LOG_RATE_LIMIT_SINCE
        {
            s.push_str(
                "# One journal entry per request: journald's default rate limit (10000 entries\n\
                 # per 30 s per service and priority, scaled up with free disk space) drops\n\
                 # access lines under load, and ferricorn's own info messages with them. 0 here\n\
                 # would mean journald's default, not \"off\": allow 10000 entries a second.\n\
                 # (Or --access-logfile '' to keep access lines out of the journal.)\n\
                 LogRateLimitIntervalSec=1s\n\
                 LogRateLimitBurst=10000\n",
            );
        }
        if !self.logs_dirs.is_empty() {
            let _ = writeln!(s, "LogsDirectory={}", self.logs_dirs.join(" "));
        }
        if !self.writable.is_empty() {
            let _ = writeln!(s, "ReadWritePaths={}", self.writable.join(" "));
        }
        let _ = write!(
            s,
            "\n\
             # Hardening: `systemd-analyze security {name}.service` rates this unit \"OK\".\n\
             # No RuntimeDirectory=: stopping the service would delete {dir} and the socket\n\
             # in it while {name}.socket stays active; tmpfiles.d/{name}.conf creates {dir}.\n\
             NoNewPrivileges=yes\n\
             CapabilityBoundingSet=\n\
             ProtectSystem=strict\n\
             ProtectHome={home}\n\
             PrivateTmp=yes\n\
             PrivateDevices=yes\n\
             PrivateMounts=yes\n\
             ProtectKernelTunables=yes\n\
             ProtectKernelModules=yes\n\
             ProtectKernelLogs=yes\n\
             ProtectControlGroups=yes\n\
             ProtectClock=yes\n\
             ProtectHostname=yes\n\
             ProtectProc=invisible\n\
             RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n\
             RestrictNamespaces=yes\n\
             RestrictRealtime=yes\n\
             RestrictSUIDSGID=yes\n\
             LockPersonality=yes\n\
             RemoveIPC=yes\n\
             SystemCallArchitectures=native\n\
             SystemCallFilter=@system-service\n\
             SystemCallFilter=~@privileged @resources\n\
             SystemCallErrorNumber=EPERM\n\
             # MemoryDenyWriteExecute= stays off: ctypes/cffi callbacks and JIT compilers in\n\
             # an app's dependencies need memory that is writable and executable.\n\
             \n\
             [Install]\n\
             WantedBy=multi-user.target\n\
             Also={name}.socket\n",
            name = self.name,
            dir = self.socket_dir,
            home = self.protect_home,
        );
        s
    }

    pub fn tmpfiles(&self) -> String {
        let mut s = self.header("#", &format!("tmpfiles.d/{}.conf", self.name));
        let _ = writeln!(
            s,
            "# The socket's directory (and the pid file's), owned by the service user. Not\n\
             # RuntimeDirectory=, which would delete it, socket included, when the service stops."
        );
        for d in &self.run_dirs {
            let _ = writeln!(s, "d {d} 0755 {} {} -", self.user, self.group);
        }
        s
    }

    fn nginx(&self, streaming: bool) -> String {
        let mut s = self.header(
            "#",
            &format!(
                "nginx site for {}{}",
                self.name,
                if streaming { " (streaming)" } else { "" }
            ),
        );
        if streaming {
            let _ = write!(
                s,
                "# Use this file instead of {name}.conf (not both) when responses must reach the\n\
                 # client as they are produced (server-sent events, long polling): nginx does\n\
                 # not buffer them, so a slow client holds a worker thread while it reads.\n",
                name = self.name
            );
        } else {
            let _ = write!(
                s,
                "# nginx buffers requests and responses, so slow clients cost ferricorn nothing.\n\
                 # For streaming responses use {name}-streaming.conf instead (not both).\n",
                name = self.name
            );
        }
        let _ = write!(
            s,
            "\n\
             upstream {name}_app {{\n\
             \x20   # fail_timeout=0: always try the socket again, even right after a failure.\n\
             \x20   server unix:{socket} fail_timeout=0;\n\
             }}\n\
             \n\
             server {{\n\
             \x20   listen 80;\n\
             \x20   # Your host name(s).\n\
             \x20   server_name _;\n\
             \x20   keepalive_timeout 5;\n\
             \n\
             \x20   location / {{\n\
             \x20       proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
             \x20       proxy_set_header X-Forwarded-Proto $scheme;\n\
             \x20       proxy_set_header Host $http_host;\n\
             \x20       proxy_redirect off;\n",
            name = self.name,
            socket = self.socket,
        );
        if streaming {
            s.push_str("        proxy_buffering off;\n");
        }
        let _ = write!(
            s,
            "        proxy_pass http://{name}_app;\n\
             \x20   }}\n\
             }}\n",
            name = self.name
        );
        s
    }

    /// The pattern that finds the master by its process title.
    fn master_pattern(&self) -> String {
        format!("^ferricorn: master \\[{}\\]", self.name.replace('.', "\\."))
    }

    fn logrotate(&self) -> String {
        let mut files = log_files(self.cfg);
        if files.is_empty() {
            files = vec![self.default_log("access"), self.default_log("error")];
        }
        let mut s = self.header("#", &format!("logrotate for {}", self.name));
        let _ = write!(
            s,
            "# For the variants that write log files (supervisor, or --access-logfile/\n\
             # --error-logfile FILE); the systemd unit logs to the journal. USR1 makes the\n\
             # master reopen its log files.\n\
             {files} {{\n\
             \x20   su {user} {group}\n\
             \x20   create 0640 {user} {group}\n\
             \x20   daily\n\
             \x20   rotate 14\n\
             \x20   missingok\n\
             \x20   notifempty\n\
             \x20   compress\n\
             \x20   delaycompress\n\
             \x20   sharedscripts\n\
             \x20   postrotate\n\
             \x20       systemctl kill --signal=USR1 --kill-whom=main {name}.service 2>/dev/null || pkill -USR1 -f '{pat}' || true\n\
             \x20   endscript\n\
             }}\n",
            files = files.join(" "),
            user = self.user,
            group = self.group,
            name = self.name,
            pat = self.master_pattern(),
        );
        s
    }

    fn command_line(&self, v: Variant, exe: &str) -> String {
        let mut words = vec![sh_quote(exe)];
        for g in self.server_args(v) {
            words.extend(g.iter().map(|w| sh_quote(w)));
        }
        words.join(" ")
    }

    /// The directory supervisord's own stdout/stderr logs go to: the one the configured log
    /// files are in (the error log's first), else /var/log/NAME, where the generated
    /// `--access-logfile`/`--error-logfile` go. supervisord does not create it.
    fn supervisor_log_dir(&self) -> String {
        let c = self.cfg;
        let err = Some(c.error_logfile.as_str()).filter(|e| *e != "-" && !e.is_empty());
        let access = c
            .access_logfile
            .as_deref()
            .filter(|a| *a != "-" && !a.is_empty());
        match err.or(access) {
            Some(f) => parent(f),
            None => format!("/var/log/{}", self.name),
        }
    }

    fn supervisor(&self) -> String {
        let c = self.cfg;
        let log_dir = self.supervisor_log_dir();
        let mut s = self.header(";", &format!("supervisor program {}", self.name));
        let _ = write!(
            s,
            "; /etc/supervisor/conf.d/{name}.conf. Needs {dir} writable by {user}\n\
             ; (tmpfiles.d/{name}.conf, or: install -d -o {user} -g {group} -m 0755 {dir}) and\n\
             ; the log directory: install -d -o {user} -g {group} -m 0750 {log_dir}\n\
             ; supervisord starts the program as {user} with that user's primary group; umask 007\n\
             ; leaves the socket to {user} and that group (the proxy must be one of them).\n\
             [program:{name}]\n\
             command={cmd}\n",
            name = self.name,
            dir = self.socket_dir,
            user = self.user,
            group = self.group,
            cmd = self
                .command_line(Variant::Supervisor, &self.exe)
                .replace('%', "%%"),
        );
        if let Some(d) = &c.chdir {
            let _ = writeln!(s, "directory={}", d.display());
        }
        let _ = write!(
            s,
            "user={user}\n\
             umask=007\n\
             autostart=true\n\
             autorestart=true\n\
             stopsignal=TERM\n\
             stopwaitsecs={wait}\n\
             killasgroup=true\n\
             stdout_logfile={log_dir}/stdout.log\n\
             stderr_logfile={log_dir}/stderr.log\n",
            user = self.user,
            wait = c.drain_delay + c.graceful_timeout + SUPERVISOR_STOP_MARGIN,
        );
        s
    }

    fn runit_run(&self) -> String {
        let mut s = String::from("#!/bin/sh\n");
        s.push_str(&self.header("#", &format!("runit service {}", self.name)));
        let _ = write!(
            s,
            "# /etc/sv/{name}/run (executable); enable: ln -s /etc/sv/{name} /etc/service/{name}\n\
             # Output goes to the log service (log/run).\n\
             set -e\n\
             exec 2>&1\n\
             install -d -o {user} -g {group} -m 0755 {dir}\n\
             umask 007\n",
            name = self.name,
            user = self.user,
            group = self.group,
            dir = self.socket_dir,
        );
        if let Some(d) = &self.cfg.chdir {
            let _ = writeln!(s, "cd {}", sh_quote(&d.display().to_string()));
        }
        let _ = write!(
            s,
            "exec chpst -u {user}:{group} {exe}",
            user = self.user,
            group = self.group,
            exe = sh_quote(&self.exe)
        );
        for g in self.server_args(Variant::Runit) {
            let q: Vec<String> = g.iter().map(|w| sh_quote(w)).collect();
            let _ = write!(s, " \\\n    {}", q.join(" "));
        }
        s.push('\n');
        s
    }

    fn runit_log_run(&self) -> String {
        let mut s = String::from("#!/bin/sh\n");
        s.push_str(&self.header("#", &format!("runit log service {}", self.name)));
        let _ = write!(
            s,
            "# /etc/sv/{name}/log/run (executable): svlogd rotates /var/log/{name}/current itself.\n\
             set -e\n\
             install -d -m 0750 /var/log/{name}\n\
             exec svlogd -tt /var/log/{name}\n",
            name = self.name
        );
        s
    }

    fn procfile(&self) -> String {
        // The platform sets PORT (ferricorn then binds 0.0.0.0:$PORT) and runs the process in
        // the app's directory: no --bind, no --chdir, no --pid.
        format!(
            "web: {}\n",
            self.command_line(Variant::Procfile, "ferricorn")
        )
    }

    fn upstart(&self) -> String {
        let c = self.cfg;
        let mut s = self.header("#", &format!("upstart job {}", self.name));
        let _ = write!(
            s,
            "# /etc/init/{name}.conf. upstart's setuid would apply to pre-start too, which must\n\
             # create {dir} (/run is emptied at boot): the master starts as root instead, binds\n\
             # the socket, and runs its workers as {user}:{group} (--user/--group). Output goes\n\
             # to /var/log/upstart/{name}.log.\n\
             description \"{name}: ferricorn serving {app}\"\n\
             \n\
             start on runlevel [2345]\n\
             stop on runlevel [!2345]\n\
             \n\
             respawn\n\
             respawn limit 10 5\n\
             umask 007\n",
            name = self.name,
            dir = self.socket_dir,
            user = self.user,
            group = self.group,
            app = self.app(),
        );
        if let Some(d) = &c.chdir {
            let _ = writeln!(s, "chdir {}", d.display());
        }
        let _ = write!(
            s,
            "console log\n\
             kill signal TERM\n\
             kill timeout {wait}\n\
             reload signal HUP\n\
             \n\
             pre-start exec install -d -m 0755 {dir}\n\
             exec {cmd}\n",
            wait = c.drain_delay + c.graceful_timeout + SUPERVISOR_STOP_MARGIN,
            dir = self.socket_dir,
            cmd = self.command_line(Variant::Upstart, &self.exe),
        );
        s
    }

    /// Every file, in a fixed order.
    pub fn files(&self) -> Vec<GeneratedFile> {
        let n = &self.name;
        let f = |path: String, contents: String| GeneratedFile {
            path,
            contents,
            executable: false,
        };
        let x = |path: String, contents: String| GeneratedFile {
            path,
            contents,
            executable: true,
        };
        vec![
            f(format!("systemd/{n}.socket"), self.socket_unit()),
            f(format!("systemd/{n}.service"), self.service_unit()),
            f(format!("tmpfiles.d/{n}.conf"), self.tmpfiles()),
            f(format!("packaging/nginx/{n}.conf"), self.nginx(false)),
            f(
                format!("packaging/nginx/{n}-streaming.conf"),
                self.nginx(true),
            ),
            f(format!("packaging/logrotate/{n}"), self.logrotate()),
            f(format!("packaging/supervisor/{n}.conf"), self.supervisor()),
            x(format!("packaging/runit/{n}/run"), self.runit_run()),
            x(format!("packaging/runit/{n}/log/run"), self.runit_log_run()),
            f("packaging/Procfile".to_string(), self.procfile()),
            f(format!("packaging/upstart/{n}.conf"), self.upstart()),
        ]
    }
}

/// A word for sh(1): bare when it is made of safe characters, else single-quoted.
pub fn sh_quote(w: &str) -> String {
    if !w.is_empty()
        && w.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '_' | '-' | '.' | '/' | ':' | ',' | '=' | '@' | '+')
        })
    {
        return w.to_string();
    }
    format!("'{}'", w.replace('\'', "'\\''"))
}

/// The installed systemd's version, from `systemctl --version` ("systemd 252 (252.38-1)").
pub fn installed_systemd_version() -> Option<u32> {
    let out = std::process::Command::new("systemctl")
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    parse_systemctl_version(&String::from_utf8_lossy(&out.stdout))
}

/// The number in the first line of `systemctl --version`.
pub fn parse_systemctl_version(text: &str) -> Option<u32> {
    let first = text.lines().next()?;
    let mut words = first.split_whitespace();
    if words.next()? != "systemd" {
        return None;
    }
    let v = words.next()?;
    let digits: String = v.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Layer;

    fn cfg(l: Layer) -> Config {
        crate::config::Sources {
            cli: l,
            checks: crate::checks::TARGET,
            ..Default::default()
        }
        .load()
        .unwrap()
    }

    fn deploy() -> DeployOptions {
        DeployOptions {
            exe: "/usr/bin/ferricorn".into(),
            socket_group: "www-data".into(),
            watchdog: None,
            systemd_version: 252,
            runtime_paths: Vec::new(),
        }
    }

    #[test]
    fn systemctl_version_parsing() {
        assert_eq!(
            parse_systemctl_version("systemd 252 (252.38-1~deb12u1)\n+PAM\n"),
            Some(252)
        );
        assert_eq!(parse_systemctl_version("systemd 256.4 (x)"), Some(256));
        assert_eq!(parse_systemctl_version("nope"), None);
    }

    #[test]
    fn only_non_default_options_are_passed() {
        let c = cfg(Layer {
            app: Some("hello:app".into()),
            workers: Some(3),
            timeout: Some(30),
            ..Layer::default()
        });
        let p = Plan::new(&c, &deploy()).unwrap();
        assert_eq!(
            p.exec_start_words(),
            [
                "/usr/bin/ferricorn",
                "--name",
                "app",
                "--bind",
                "unix:/run/app/socket",
                "--workers",
                "3",
                "hello:app"
            ]
        );
    }

    #[test]
    fn refuses_what_no_unit_can_express() {
        let bad = |l: Layer| {
            let c = cfg(Layer {
                app: Some("hello:app".into()),
                ..l
            });
            Plan::new(&c, &deploy()).unwrap_err()
        };
        let e = bad(Layer {
            bind: Some(vec!["127.0.0.1:9000".parse().unwrap()]),
            ..Layer::default()
        });
        assert!(e.contains("unix socket"), "{e}");
        let e = bad(Layer {
            bind: Some(vec!["unix:/tmp/app.sock".parse().unwrap()]),
            ..Layer::default()
        });
        assert!(e.contains("PrivateTmp"), "{e}");
        let e = bad(Layer {
            chdir: Some("relative/dir".into()),
            ..Layer::default()
        });
        assert!(e.contains("absolute"), "{e}");
        let e = bad(Layer {
            name: Some("a b".into()),
            ..Layer::default()
        });
        assert!(e.contains("--name"), "{e}");
    }

    #[test]
    fn an_interpreter_under_root_makes_protect_home_read_only_with_a_note() {
        let c = cfg(Layer {
            app: Some("hello:app".into()),
            chdir: Some("/srv/app".into()),
            ..Layer::default()
        });
        let venv = DeployOptions {
            exe: "/srv/app/venv/bin/ferricorn".into(),
            runtime_paths: vec![
                "/srv/app/venv/bin/python".into(),
                "/root/.pyenv/versions/3.12.1/bin/python3.12".into(),
            ],
            ..deploy()
        };
        let p = Plan::new(&c, &venv).unwrap();
        assert_eq!(p.protect_home, "read-only");
        let note = p.protect_home_note.clone().unwrap();
        assert!(
            note.contains("/root/.pyenv/versions/3.12.1/bin/python3.12"),
            "{note}"
        );
        assert!(
            p.service_unit()
                .contains("ExecStart=/srv/app/venv/bin/ferricorn ")
        );
        // A virtualenv of a system Python: nothing under /home or /root.
        let system = DeployOptions {
            runtime_paths: vec!["/usr/bin/python3.11".into()],
            ..venv
        };
        let p = Plan::new(&c, &system).unwrap();
        assert_eq!((p.protect_home, p.protect_home_note), ("yes", None));
    }

    #[test]
    fn runtime_paths_read_a_scripts_interpreter() {
        let d = tempfile::tempdir().unwrap();
        let script = d.path().join("ferricorn");
        std::fs::write(&script, "#!/usr/bin/python3 -s\nimport ferricorn\n").unwrap();
        let paths = runtime_paths(&script);
        assert_eq!(paths.first().map(String::as_str), Some("/usr/bin/python3"));
        let real = std::fs::canonicalize("/usr/bin/python3").unwrap();
        assert!(paths.contains(&real.display().to_string()), "{paths:?}");
        // Not a script, not here: nothing.
        assert!(runtime_paths(Path::new("/nonexistent/ferricorn")).is_empty());
    }

    #[test]
    fn home_paths_make_protect_home_read_only_and_pid_dirs_writable() {
        let c = cfg(Layer {
            app: Some("hello:app".into()),
            chdir: Some("/home/u/site".into()),
            pid: Some("/var/run/app/pid".into()),
            ..Layer::default()
        });
        let p = Plan::new(&c, &deploy()).unwrap();
        assert_eq!(p.protect_home, "read-only");
        assert_eq!(p.writable, ["/run/app"]);
        assert_eq!(p.run_dirs, ["/run/app"]);
        assert!(p.service_unit().contains("ReadWritePaths=/run/app\n"));
    }

    #[test]
    fn supervisor_logs_go_beside_the_configured_log_files() {
        let c = cfg(Layer {
            app: Some("hello:app".into()),
            access_logfile: Some("/srv/app/logs/access.log".into()),
            error_logfile: Some("/srv/app/logs/error.log".into()),
            ..Layer::default()
        });
        let sup = Plan::new(&c, &deploy()).unwrap().supervisor();
        assert!(
            sup.contains("stdout_logfile=/srv/app/logs/stdout.log\n"),
            "{sup}"
        );
        assert!(
            sup.contains("stderr_logfile=/srv/app/logs/stderr.log\n"),
            "{sup}"
        );
        assert!(sup.contains("-m 0750 /srv/app/logs\n"), "{sup}");
        assert!(!sup.contains("/var/log/"), "{sup}");
        // Without log files: the generated ones, and supervisord's, under /var/log/NAME.
        let c = cfg(Layer {
            app: Some("hello:app".into()),
            ..Layer::default()
        });
        let sup = Plan::new(&c, &deploy()).unwrap().supervisor();
        assert!(
            sup.contains("--error-logfile /var/log/app/error.log"),
            "{sup}"
        );
        assert!(
            sup.contains("stdout_logfile=/var/log/app/stdout.log\n"),
            "{sup}"
        );
    }

    #[test]
    fn journal_rate_limit_is_raised_when_access_lines_go_to_the_journal() {
        let unit = |access: Option<&str>, version: u32| {
            let c = cfg(Layer {
                app: Some("hello:app".into()),
                access_logfile: access.map(String::from),
                ..Layer::default()
            });
            let d = DeployOptions {
                systemd_version: version,
                ..deploy()
            };
            Plan::new(&c, &d).unwrap().service_unit()
        };
        let limit = "\nLogRateLimitIntervalSec=1s\nLogRateLimitBurst=10000\n";
        assert!(unit(None, 252).contains(limit));
        assert!(unit(Some("-"), 240).contains(limit));
        assert!(!unit(Some("-"), 239).contains("LogRateLimit"));
        assert!(!unit(Some(""), 252).contains("LogRateLimit"));
        assert!(!unit(Some("/var/log/app/access.log"), 252).contains("LogRateLimit"));
    }

    #[test]
    fn sh_quoting() {
        assert_eq!(sh_quote("/usr/bin/x"), "/usr/bin/x");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
        assert_eq!(sh_quote(""), "''");
    }
}

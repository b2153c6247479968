//! `ferricorn systemd check`: reads installed units, tmpfiles.d entries and nginx configuration
//! and reports the mistakes that break a ferricorn (or Gunicorn) deployment, each with its
//! `FILE:LINE` and a one-line fix.
//!
//! ExecStart= is read for both servers' flags: `-b/--bind`, `-p/--pid`, `-D/--daemon`,
//! `--graceful-timeout` (as `--flag VALUE`, `--flag=VALUE` or `-bVALUE`). A Gunicorn `-c`
//! config file (or a ferricorn TOML file) is not read: settings made only there are unseen.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::units::nginx::NginxFile;
use crate::units::tmpfiles::TmpFile;
use crate::units::unitfile::{Entry, UnitFile, parse_bool, parse_timespan, split_command};

/// Gunicorn's and ferricorn's `--graceful-timeout` default.
const DEFAULT_GRACEFUL: f64 = 30.0;
/// systemd's `DefaultTimeoutStopSec=`.
const DEFAULT_STOP_TIMEOUT: f64 = 90.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One finding. `id` is stable (scripts may match on it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Finding {
    pub file: String,
    pub line: usize,
    pub id: &'static str,
    pub severity: Severity,
    pub message: String,
    pub fix: String,
}

impl Finding {
    /// `FILE:LINE: [id] message` and an indented `fix:` line.
    pub fn text(&self) -> String {
        format!(
            "{}:{}: [{}] {}\n    fix: {}\n",
            self.file, self.line, self.id, self.message, self.fix
        )
    }
}

/// The files to check.
#[derive(Debug, Default)]
pub struct Inputs {
    pub units: Vec<UnitFile>,
    pub tmpfiles: Vec<TmpFile>,
    pub nginx: Vec<NginxFile>,
    /// Whether to check every service given (files named on the command line) or only those
    /// that run ferricorn or Gunicorn (a `--root` tree holds every unit of a system).
    pub all_services: bool,
    /// The tree the units were read from (`--root`); the programs they run are looked up in it.
    pub root: Option<PathBuf>,
}

/// Who nginx runs as.
#[derive(Debug, Clone)]
pub struct Proxy {
    pub user: String,
    pub group: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    Ferricorn,
    Gunicorn,
    Other,
}

/// What ExecStart= says.
#[derive(Debug, Clone)]
struct Exec {
    line: usize,
    server: Server,
    /// The program ExecStart= runs (systemd's `@-:+!` prefixes removed).
    program: String,
    /// `--bind` values with the word index.
    binds: Vec<String>,
    pid: Option<String>,
    daemon: bool,
    graceful: Option<f64>,
}

fn basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

fn parse_exec(e: &Entry) -> Result<Exec, String> {
    let words = split_command(&e.value)?;
    let mut server = Server::Other;
    let mut start = 1;
    if let Some(first) = words.first() {
        let prog = basename(first);
        if prog.starts_with("ferricorn") {
            server = Server::Ferricorn;
        } else if prog.contains("gunicorn") {
            server = Server::Gunicorn;
        } else if prog.starts_with("python")
            && let Some(i) = words
                .windows(2)
                .position(|w| w[0] == "-m" && w[1] == "gunicorn")
        {
            server = Server::Gunicorn;
            start = i + 2;
        }
    }
    let program = words
        .first()
        .map(|w| w.trim_start_matches(['@', '-', ':', '+', '!']).to_string())
        .unwrap_or_default();
    let mut x = Exec {
        line: e.line,
        server,
        program,
        binds: Vec::new(),
        pid: None,
        daemon: false,
        graceful: None,
    };
    let mut i = start;
    while i < words.len() {
        let w = words[i].as_str();
        let next = words.get(i + 1).cloned();
        let take = |long: &str, short: Option<&str>| -> Option<(String, bool)> {
            if w == long || Some(w) == short {
                return next.clone().map(|v| (v, true));
            }
            if let Some(v) = w.strip_prefix(&format!("{long}=")) {
                return Some((v.to_string(), false));
            }
            if let Some(s) = short
                && w.len() > 2
                && let Some(v) = w.strip_prefix(s)
            {
                return Some((v.to_string(), false));
            }
            None
        };
        if let Some((v, used_next)) = take("--bind", Some("-b")) {
            x.binds.push(v);
            i += 1 + used_next as usize;
            continue;
        }
        if let Some((v, used_next)) = take("--pid", Some("-p")) {
            x.pid = Some(v);
            i += 1 + used_next as usize;
            continue;
        }
        if let Some((v, used_next)) = take("--graceful-timeout", None) {
            x.graceful = v.parse().ok();
            i += 1 + used_next as usize;
            continue;
        }
        if w == "-D" || w == "--daemon" || w == "--daemon=true" {
            x.daemon = true;
        }
        i += 1;
    }
    Ok(x)
}

/// `unix:/path` (or `unix:///path`) as a path.
fn unix_path(bind: &str) -> Option<String> {
    bind.strip_prefix("unix://")
        .or_else(|| bind.strip_prefix("unix:"))
        .map(normalize)
}

/// /var/run is /run.
fn normalize(p: &str) -> String {
    match p.strip_prefix("/var/run/") {
        Some(rest) => format!("/run/{rest}"),
        None => p.to_string(),
    }
}

fn parent(p: &str) -> String {
    match Path::new(p).parent() {
        Some(d) if !d.as_os_str().is_empty() => d.display().to_string(),
        _ => "/".into(),
    }
}

fn under(p: &str, dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    p == dir || p.starts_with(&format!("{dir}/"))
}

/// The interpreter named on a script's `#!` line (the first word), if the file is a script.
pub(crate) fn shebang(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let n = std::fs::File::open(path).ok()?.read(&mut head).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = line.split(|b| *b == b'\n').next()?;
    let word = String::from_utf8_lossy(line)
        .split_whitespace()
        .next()?
        .to_string();
    word.starts_with('/').then_some(word)
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

/// The unix paths a socket unit listens on: (path, line).
fn listen_paths(s: &UnitFile) -> Vec<(String, usize)> {
    s.get_all("Socket", "ListenStream")
        .into_iter()
        .filter(|e| e.value.starts_with('/'))
        .map(|e| (normalize(&e.value), e.line))
        .collect()
}

/// The service a socket unit activates (`Service=`, else the same name).
fn socket_service(s: &UnitFile) -> String {
    match s.get("Socket", "Service") {
        Some(e) => e.value.clone(),
        None => format!("{}.service", s.stem()),
    }
}

struct Checker<'a> {
    inputs: &'a Inputs,
    proxy: Proxy,
    out: Vec<Finding>,
}

impl<'a> Checker<'a> {
    fn add(
        &mut self,
        file: &Path,
        line: usize,
        id: &'static str,
        severity: Severity,
        message: String,
        fix: String,
    ) {
        self.out.push(Finding {
            file: display(file),
            line,
            id,
            severity,
            message,
            fix,
        });
    }

    fn sockets_of(&self, svc: &UnitFile) -> Vec<&'a UnitFile> {
        let name = svc.file_name();
        let listed: Vec<String> = svc
            .get_all("Service", "Sockets")
            .iter()
            .flat_map(|e| e.value.split_whitespace().map(str::to_string))
            .collect();
        self.inputs
            .units
            .iter()
            .filter(|u| u.file_name().ends_with(".socket"))
            .filter(|u| socket_service(u) == name || listed.contains(&u.file_name()))
            .collect()
    }

    /// ExecStart='s program (and, for a script such as a virtualenv's `bin/ferricorn`, the
    /// interpreter on its `#!` line) must not be inside a directory the unit's own hardening
    /// hides: systemd would fail to start it (status 203/EXEC), or the script's interpreter.
    fn check_program_visible(&mut self, svc: &UnitFile, x: &Exec, private_tmp: bool) {
        let hides_home = svc
            .get("Service", "ProtectHome")
            .is_some_and(|e| e.value == "tmpfs" || parse_bool(&e.value) == Some(true));
        let inaccessible: Vec<String> = svc
            .get_all("Service", "InaccessiblePaths")
            .iter()
            .flat_map(|e| e.value.split_whitespace().map(str::to_string))
            .map(|p| p.trim_start_matches(['-', '+']).to_string())
            .collect();
        let hidden_by = |p: &str| -> Option<String> {
            if hides_home {
                for d in ["/home", "/root", "/run/user"] {
                    if under(p, d) {
                        return Some(format!("ProtectHome= hides {d}"));
                    }
                }
            }
            if private_tmp && (under(p, "/tmp") || under(p, "/var/tmp")) {
                return Some("PrivateTmp=yes gives the service its own empty /tmp".into());
            }
            inaccessible
                .iter()
                .find(|d| under(p, d))
                .map(|d| format!("InaccessiblePaths= hides {d}"))
        };
        if !x.program.starts_with('/') {
            return;
        }
        let file = svc.path.clone();
        let fix = "install the server outside /home, /root and /tmp (e.g. a virtualenv in \
                   /srv/APP/venv, or /usr/bin/ferricorn), or relax that setting (ProtectHome=read-only)";
        if let Some(why) = hidden_by(&x.program) {
            self.add(
                &file,
                x.line,
                "exec-hidden",
                Severity::Error,
                format!(
                    "ExecStart= runs {}, which the service cannot see: {why}",
                    x.program
                ),
                fix.into(),
            );
            return;
        }
        // A script's interpreter, as found on this machine (or in the --root tree).
        let local = match &self.inputs.root {
            Some(r) => r.join(x.program.trim_start_matches('/')),
            None => PathBuf::from(&x.program),
        };
        let Some(interp) = shebang(&local) else {
            return;
        };
        let mut seen = vec![interp.clone()];
        if self
            .inputs
            .root
            .as_deref()
            .is_none_or(|r| r == Path::new("/"))
            && let Ok(real) = std::fs::canonicalize(&interp)
        {
            seen.push(display(&real));
        }
        if let Some((p, why)) = seen.iter().find_map(|p| hidden_by(p).map(|w| (p, w))) {
            self.add(
                &file,
                x.line,
                "exec-hidden",
                Severity::Error,
                format!(
                    "ExecStart= runs {}, a script whose interpreter {p} the service cannot see: \
                     {why}",
                    x.program
                ),
                "make the virtualenv with a Python outside /home and /root (e.g. Debian's \
                 /usr/bin/python3), or relax that setting (ProtectHome=read-only)"
                    .into(),
            );
        }
    }

    fn check_service(&mut self, svc: &'a UnitFile) -> Result<(), String> {
        let file = svc.path.clone();
        let svc_line = svc.section_line("Service").unwrap_or(1);
        let exec = match svc.get_all("Service", "ExecStart").last() {
            Some(e) => Some(
                parse_exec(e)
                    .map_err(|m| format!("{}:{}: ExecStart=: {m}", file.display(), e.line))?,
            ),
            None => None,
        };
        if !self.inputs.all_services && exec.as_ref().is_none_or(|x| x.server == Server::Other) {
            return Ok(());
        }
        let sockets = self.sockets_of(svc);
        let listens: Vec<(String, usize, &UnitFile)> = sockets
            .iter()
            .flat_map(|s| listen_paths(s).into_iter().map(move |(p, l)| (p, l, *s)))
            .collect();
        let ty = svc.get("Service", "Type");
        let ty_value = ty.map(|e| e.value.as_str()).unwrap_or("simple");
        let ty_line = ty.map(|e| e.line).unwrap_or(svc_line);
        let user = svc.get("Service", "User").map(|e| e.value.clone());
        let graceful = exec
            .as_ref()
            .and_then(|x| x.graceful)
            .unwrap_or(DEFAULT_GRACEFUL);
        let private_tmp = svc
            .get("Service", "PrivateTmp")
            .and_then(|e| parse_bool(&e.value))
            .unwrap_or(false);

        // Socket path agreement between the socket unit and --bind.
        if let Some(x) = &exec {
            if !listens.is_empty() {
                for b in &x.binds {
                    let ok = match unix_path(b) {
                        Some(p) => listens.iter().any(|(l, _, _)| *l == p),
                        None => false,
                    };
                    if !ok {
                        let (l, _, s) = &listens[0];
                        self.add(
                            &file,
                            x.line,
                            "socket-path-mismatch",
                            Severity::Error,
                            format!(
                                "ExecStart= binds {b}, but {} listens on {l}: the server serves \
                                 the socket systemd passes and {b} is never used",
                                s.file_name()
                            ),
                            format!("use --bind unix:{l} (the socket unit's ListenStream=)"),
                        );
                    }
                }
            }
            if x.daemon {
                self.add(
                    &file,
                    x.line,
                    "daemon-flag",
                    Severity::Error,
                    "ExecStart= asks the server to daemonize (-D/--daemon): systemd loses the \
                     process it started"
                        .into(),
                    "remove -D/--daemon; systemd keeps the server in the background".into(),
                );
            }
            self.check_program_visible(svc, x, private_tmp);
            if private_tmp {
                for b in &x.binds {
                    if let Some(p) = unix_path(b)
                        && (under(&p, "/tmp") || under(&p, "/var/tmp"))
                        && !listens.iter().any(|(l, _, _)| *l == p)
                    {
                        self.add(
                            &file,
                            x.line,
                            "private-tmp-hides-path",
                            Severity::Error,
                            format!(
                                "the server creates its socket {p} inside the service's private \
                                 /tmp (PrivateTmp=yes): nginx cannot see it"
                            ),
                            format!(
                                "bind unix:/run/{}/socket (a directory from tmpfiles.d) instead \
                                 of a path under /tmp",
                                svc.stem()
                            ),
                        );
                    }
                }
                if let Some(p) = &x.pid
                    && (under(p, "/tmp") || under(p, "/var/tmp"))
                {
                    self.add(
                        &file,
                        x.line,
                        "private-tmp-hides-path",
                        Severity::Error,
                        format!(
                            "the pid file {p} is written inside the service's private /tmp \
                             (PrivateTmp=yes): nothing outside the service can read it"
                        ),
                        format!("use --pid /run/{}/pid", svc.stem()),
                    );
                }
            }
        }

        // RuntimeDirectory= removing the socket's directory on stop.
        let preserve = svc
            .get("Service", "RuntimeDirectoryPreserve")
            .map(|e| e.value.as_str() == "yes" || parse_bool(&e.value) == Some(true))
            .unwrap_or(false);
        if !preserve {
            for e in svc.get_all("Service", "RuntimeDirectory") {
                for d in e.value.split_whitespace() {
                    let d = d.split(':').next().unwrap_or(d);
                    let dir = format!("/run/{d}");
                    if let Some((l, _, s)) = listens.iter().find(|(l, _, _)| under(l, &dir)) {
                        let owner = user.clone().unwrap_or_else(|| "root".into());
                        self.add(
                            &file,
                            e.line,
                            "runtime-directory-deletes-socket",
                            Severity::Error,
                            format!(
                                "RuntimeDirectory={d} is deleted when the service stops, and \
                                 with it {l} of {}, which stays active: every later \
                                 connection is refused until the socket unit is restarted",
                                s.file_name()
                            ),
                            format!(
                                "remove RuntimeDirectory= and create {dir} with tmpfiles.d \
                                 (d {dir} 0755 {owner} {owner} -), or add \
                                 RuntimeDirectoryPreserve=yes"
                            ),
                        );
                    }
                }
            }
        }

        // PIDFile= against --pid.
        if let Some(pf) = svc.get("Service", "PIDFile") {
            let pf_path = normalize(&pf.value);
            match exec.as_ref().and_then(|x| x.pid.clone()) {
                Some(p) if normalize(&p) == pf_path => {}
                Some(p) => self.add(
                    &file,
                    pf.line,
                    "pidfile-mismatch",
                    Severity::Error,
                    format!(
                        "PIDFile={} but the server writes its pid to {p} (--pid)",
                        pf.value
                    ),
                    format!("make them one path: PIDFile={p}, or --pid {}", pf.value),
                ),
                None if exec.as_ref().is_some_and(|x| x.server != Server::Other) => self.add(
                    &file,
                    pf.line,
                    "pidfile-mismatch",
                    Severity::Error,
                    format!(
                        "PIDFile={} but ExecStart= has no --pid: nothing writes it",
                        pf.value
                    ),
                    "remove PIDFile= (Type=notify reports the main pid) or add --pid with the \
                     same path"
                        .into(),
                ),
                None => {}
            }
            if private_tmp && (under(&pf_path, "/tmp") || under(&pf_path, "/var/tmp")) {
                self.add(
                    &file,
                    pf.line,
                    "private-tmp-hides-path",
                    Severity::Error,
                    format!(
                        "PIDFile={} is under /tmp, which is private to the service \
                         (PrivateTmp=yes): systemd never sees the file",
                        pf.value
                    ),
                    format!("use /run/{}/pid", svc.stem()),
                );
            }
        }

        // Type= and reloading.
        let reload = svc.get_all("Service", "ExecReload");
        match ty_value {
            "forking" => self.add(
                &file,
                ty_line,
                "type-forking",
                Severity::Error,
                "Type=forking: the server runs in the foreground and does not fork away; \
                 systemd would wait for a fork that never comes (or lose track of the master)"
                    .into(),
                "Type=notify with NotifyAccess=all (Type=notify-reload on systemd >= 253), and \
                 no -D/--daemon"
                    .into(),
            ),
            "notify" if reload.is_empty() => self.add(
                &file,
                ty_line,
                "notify-without-reload",
                Severity::Error,
                "Type=notify without ExecReload=: `systemctl reload` fails (\"Job type reload is \
                 not applicable\")"
                    .into(),
                "add ExecReload=/bin/kill -s HUP $MAINPID (or Type=notify-reload on systemd \
                 >= 253)"
                    .into(),
            ),
            "simple" | "exec" | "" => self.add(
                &file,
                ty_line,
                "type-not-notify",
                Severity::Warning,
                format!(
                    "Type={ty_value}{}: systemd calls the service started before its workers \
                     serve, and after a USR2 upgrade takes the old master's exit for the \
                     service's and kills the new one",
                    if ty.is_none() { " (the default)" } else { "" }
                ),
                "Type=notify and NotifyAccess=all (Type=notify-reload on systemd >= 253)".into(),
            ),
            _ => {}
        }
        for e in &reload {
            if let Some(sig) = kill_signal(&e.value)
                && !is_hup(&sig)
            {
                self.add(
                    &file,
                    e.line,
                    "reload-wrong-signal",
                    Severity::Error,
                    format!(
                        "ExecReload= sends SIG{} to the master; a reload is HUP (TERM stops, \
                         USR1 reopens logs, USR2 upgrades)",
                        sig.trim_start_matches("SIG")
                    ),
                    "ExecReload=/bin/kill -s HUP $MAINPID".into(),
                );
            }
        }
        if ty_value == "notify-reload"
            && let Some(e) = svc.get("Service", "ReloadSignal")
            && !is_hup(&e.value)
        {
            self.add(
                &file,
                e.line,
                "reload-wrong-signal",
                Severity::Error,
                format!("ReloadSignal={}: a reload is HUP", e.value),
                "remove ReloadSignal= (SIGHUP is the default)".into(),
            );
        }

        // NotifyAccess= and the upgraded master.
        if ty_value == "notify" || ty_value == "notify-reload" {
            let na = svc.get("Service", "NotifyAccess");
            let value = na.map(|e| e.value.as_str()).unwrap_or("main");
            if value != "all" {
                self.add(
                    &file,
                    na.map(|e| e.line).unwrap_or(ty_line),
                    "notify-access-drops-upgrade",
                    Severity::Error,
                    format!(
                        "NotifyAccess={value}{}: after a USR2 upgrade the new master (a child of \
                         the old one) sends MAINPID= and READY=1 itself; systemd drops them and \
                         takes the old master's exit for the service's",
                        if na.is_none() { " (the default)" } else { "" }
                    ),
                    "NotifyAccess=all".into(),
                );
            }
        }

        // Stop timeout against the graceful timeout.
        let stop = svc
            .get("Service", "TimeoutStopSec")
            .or_else(|| svc.get("Service", "TimeoutSec"));
        let (stop_value, stop_line, stop_text) = match stop {
            Some(e) => (
                parse_timespan(&e.value).unwrap_or(DEFAULT_STOP_TIMEOUT),
                e.line,
                format!("{}={}", e.key, e.value),
            ),
            None => (
                DEFAULT_STOP_TIMEOUT,
                svc_line,
                "the default stop timeout (90 s)".to_string(),
            ),
        };
        if stop_value <= graceful {
            self.add(
                &file,
                stop_line,
                "timeout-stop-too-short",
                Severity::Error,
                format!(
                    "{stop_text} is not longer than the graceful timeout ({graceful} s): systemd \
                     kills requests the server is still allowed to finish"
                ),
                format!("TimeoutStopSec={}", graceful as u64 + 15),
            );
        }

        // Who may connect to the socket.
        for s in &sockets {
            if listen_paths(s).is_empty() {
                continue;
            }
            self.check_socket_access(s);
        }

        // tmpfiles.d owner of the directories the service uses.
        let mut dirs: Vec<String> = listens.iter().map(|(l, _, _)| parent(l)).collect();
        if let Some(p) = exec.as_ref().and_then(|x| x.pid.clone()) {
            dirs.push(parent(&normalize(&p)));
        }
        if let Some(x) = &exec {
            dirs.extend(
                x.binds
                    .iter()
                    .filter_map(|b| unix_path(b))
                    .map(|p| parent(&p)),
            );
        }
        let tmp_hits: Vec<(PathBuf, crate::units::tmpfiles::TmpLine)> = self
            .inputs
            .tmpfiles
            .iter()
            .flat_map(|t| {
                t.lines
                    .iter()
                    .filter(|l| l.is_dir() && dirs.contains(&normalize(&l.path)))
                    .map(|l| (t.path.clone(), l.clone()))
            })
            .collect();
        if let Some(u) = &user {
            for (path, l) in &tmp_hits {
                let owner = l.user.clone().unwrap_or_else(|| "root".into());
                if &owner != u {
                    self.add(
                        path,
                        l.line,
                        "tmpfiles-owner-mismatch",
                        Severity::Error,
                        format!(
                            "{} belongs to {owner}, but {} runs as User={u}: it cannot write \
                             there (pid file, its own socket)",
                            l.path,
                            svc.file_name()
                        ),
                        format!(
                            "d {} {:04o} {u} {} -",
                            l.path,
                            l.mode.unwrap_or(0o755),
                            svc.get("Service", "Group")
                                .map(|g| g.value.clone())
                                .unwrap_or_else(|| u.clone())
                        ),
                    );
                }
            }
        }
        // The socket's directory must let nginx through.
        for (l, _, _) in &listens {
            let dir = parent(l);
            for (path, t) in tmp_hits.iter().filter(|(_, t)| normalize(&t.path) == dir) {
                let mode = t.mode.unwrap_or(0o755);
                let owner = t.user.clone().unwrap_or_else(|| "root".into());
                let group = t.group.clone().unwrap_or_else(|| "root".into());
                if !self.proxy_may(mode, 0o1, &owner, &group) {
                    self.add(
                        path,
                        t.line,
                        "socket-keeps-nginx-out",
                        Severity::Error,
                        format!(
                            "{} is mode {mode:04o} {owner}:{group}: nginx ({}:{}) cannot reach \
                             the socket {l} inside it",
                            t.path, self.proxy.user, self.proxy.group
                        ),
                        format!("d {} 0755 {owner} {group} -", t.path),
                    );
                }
            }
        }
        Ok(())
    }

    /// Whether nginx has permission `bit` (1 = x, 2 = w) on a file with this mode and owner.
    fn proxy_may(&self, mode: u32, bit: u32, owner: &str, group: &str) -> bool {
        self.proxy.user == "root"
            || mode & bit != 0
            || (mode & (bit << 3) != 0 && group == self.proxy.group)
            || (mode & (bit << 6) != 0 && owner == self.proxy.user)
    }

    fn check_socket_access(&mut self, s: &UnitFile) {
        let mode_e = s.get("Socket", "SocketMode");
        let mode = mode_e
            .and_then(|e| u32::from_str_radix(&e.value, 8).ok())
            .unwrap_or(0o666);
        let owner = s
            .get("Socket", "SocketUser")
            .map(|e| e.value.clone())
            .unwrap_or_else(|| "root".into());
        let group_e = s.get("Socket", "SocketGroup");
        let group = group_e
            .map(|e| e.value.clone())
            .unwrap_or_else(|| "root".into());
        let line = mode_e
            .or(group_e)
            .map(|e| e.line)
            .or_else(|| s.section_line("Socket"))
            .unwrap_or(1);
        let fix = format!("SocketGroup={} and SocketMode=0660", self.proxy.group);
        if !self.proxy_may(mode, 0o2, &owner, &group) {
            self.add(
                &s.path,
                line,
                "socket-keeps-nginx-out",
                Severity::Error,
                format!(
                    "the socket is mode {mode:04o} {owner}:{group}: nginx ({}:{}) may not \
                     connect to it",
                    self.proxy.user, self.proxy.group
                ),
                fix,
            );
        } else if mode & 0o002 != 0 {
            self.add(
                &s.path,
                line,
                "socket-world-accessible",
                Severity::Warning,
                format!(
                    "the socket is mode {mode:04o}{}: any local user can connect, bypass nginx \
                     and send X-Forwarded-* headers that a unix-socket peer is trusted with",
                    if mode_e.is_none() {
                        " (the default)"
                    } else {
                        ""
                    }
                ),
                fix,
            );
        }
    }

    /// nginx targets that point near a checked socket but not at it.
    fn check_nginx(&mut self, served: &[String], names: &[String]) {
        let all = &self.inputs.nginx;
        let mut seen = BTreeSet::new();
        for f in all {
            for (path, t) in f.targets(all) {
                let Some(p) = t.unix.clone() else { continue };
                let p = normalize(&p);
                if !seen.insert((path.clone(), t.line, p.clone())) || served.contains(&p) {
                    continue;
                }
                let ours = served.iter().any(|s| parent(s) == parent(&p))
                    || p.split('/').any(|c| {
                        names
                            .iter()
                            .any(|n| c == n || c.starts_with(&format!("{n}.")))
                            || c.contains("gunicorn")
                            || c.contains("ferricorn")
                    });
                if !ours {
                    continue;
                }
                let want = served.first().cloned().unwrap_or_default();
                self.add(
                    &path,
                    t.line,
                    "socket-path-mismatch",
                    Severity::Error,
                    format!(
                        "nginx proxies to unix:{p}, but no checked socket listens there (they \
                         listen on {}): every request gets 502",
                        served.join(", ")
                    ),
                    format!("point nginx at unix:{want}"),
                );
            }
        }
    }
}

/// The signal of a `kill` command line (`kill -s HUP $MAINPID`, `kill -HUP`, `kill $MAINPID`
/// = TERM); `None` if the command is not a kill.
fn kill_signal(value: &str) -> Option<String> {
    let words = split_command(value).ok()?;
    let prog = basename(words.first()?);
    if prog != "kill" {
        return None;
    }
    let mut i = 1;
    while i < words.len() {
        let w = &words[i];
        if w == "-s" || w == "--signal" || w == "-n" {
            return words.get(i + 1).map(|s| s.to_ascii_uppercase());
        }
        if let Some(s) = w.strip_prefix("--signal=") {
            return Some(s.to_ascii_uppercase());
        }
        if let Some(s) = w.strip_prefix('-')
            && !s.is_empty()
            && w != "--"
        {
            return Some(s.to_ascii_uppercase());
        }
        i += 1;
    }
    Some("TERM".into())
}

fn is_hup(sig: &str) -> bool {
    matches!(
        sig.trim().to_ascii_uppercase().as_str(),
        "HUP" | "SIGHUP" | "1"
    )
}

/// Runs every check. Errors: a malformed command line.
pub fn check(inputs: &Inputs, proxy: Option<Proxy>) -> Result<Vec<Finding>, String> {
    let proxy = proxy.unwrap_or_else(|| match inputs.nginx.iter().find_map(|f| f.user.clone()) {
        Some((u, g, _)) => Proxy {
            group: g.unwrap_or_else(|| u.clone()),
            user: u,
        },
        None => Proxy {
            user: "www-data".into(),
            group: "www-data".into(),
        },
    });
    let mut c = Checker {
        inputs,
        proxy,
        out: Vec::new(),
    };
    let services: Vec<&UnitFile> = inputs
        .units
        .iter()
        .filter(|u| u.file_name().ends_with(".service"))
        .collect();
    let mut served = Vec::new();
    let mut names = Vec::new();
    for s in &services {
        let n = c.out.len();
        c.check_service(s)?;
        let relevant = inputs.all_services
            || s.get_all("Service", "ExecStart")
                .last()
                .and_then(|e| parse_exec(e).ok())
                .is_some_and(|x| x.server != Server::Other);
        if !relevant {
            c.out.truncate(n);
            continue;
        }
        names.push(s.stem());
        let sockets = c.sockets_of(s);
        let listens: Vec<String> = sockets
            .iter()
            .flat_map(|u| listen_paths(u).into_iter().map(|(p, _)| p))
            .collect();
        if listens.is_empty() {
            if let Some(e) = s.get_all("Service", "ExecStart").last()
                && let Ok(x) = parse_exec(e)
            {
                served.extend(x.binds.iter().filter_map(|b| unix_path(b)));
            }
        } else {
            served.extend(listens);
        }
    }
    if !served.is_empty() {
        c.check_nginx(&served, &names);
    }
    let mut out = c.out;
    out.sort();
    out.dedup();
    Ok(out)
}

/// The kinds of file `check` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Unit,
    Tmpfiles,
    Nginx,
}

/// What a file is, from its name and place.
fn classify(path: &Path) -> Option<Kind> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.ends_with(".service") || name.ends_with(".socket") {
        return Some(Kind::Unit);
    }
    let in_dir = |d: &str| path.components().any(|c| c.as_os_str() == d);
    if in_dir("tmpfiles.d") || name.contains("tmpfiles") {
        return Some(Kind::Tmpfiles);
    }
    if in_dir("nginx") || name.contains("nginx") {
        return Some(Kind::Nginx);
    }
    None
}

/// What a file is, from its contents (for a file named on the command line).
fn sniff(text: &str) -> Option<Kind> {
    if text.contains('{') && text.contains(';') {
        return Some(Kind::Nginx);
    }
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .peekable();
    lines.peek()?;
    lines
        .all(|l| {
            let mut f = l.split_whitespace();
            let t = f.next().unwrap_or("");
            t.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && t.len() <= 3
                && f.next().is_some_and(|p| p.starts_with('/'))
        })
        .then_some(Kind::Tmpfiles)
}

fn add_file(inputs: &mut Inputs, path: &Path, kind: Kind) -> Result<(), String> {
    match kind {
        Kind::Unit => inputs.units.push(UnitFile::read(path)?),
        Kind::Tmpfiles => inputs.tmpfiles.push(TmpFile::read(path)?),
        Kind::Nginx => inputs.nginx.push(NginxFile::read(path)?),
    }
    Ok(())
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let rd = std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// Files named on the command line; a directory stands for the files under it that are
/// recognisably units, tmpfiles.d entries or nginx configuration.
pub fn load_files(paths: &[PathBuf]) -> Result<Inputs, String> {
    let mut inputs = Inputs {
        all_services: true,
        ..Inputs::default()
    };
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
        if meta.is_dir() {
            let mut files = Vec::new();
            walk(p, &mut files)?;
            for f in files {
                if let Some(k) = classify(&f) {
                    add_file(&mut inputs, &f, k)?;
                }
            }
            continue;
        }
        let kind = match classify(p) {
            Some(k) => k,
            None => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
                sniff(&text).ok_or_else(|| {
                    format!(
                        "{}: cannot tell what this file is; name units *.service/*.socket, \
                         tmpfiles.d entries *tmpfiles* or put them in a tmpfiles.d directory, \
                         nginx configuration *nginx* or in an nginx directory",
                        p.display()
                    )
                })?
            }
        };
        add_file(&mut inputs, p, kind)?;
    }
    Ok(inputs)
}

/// Unit, tmpfiles.d and nginx directories under a root, in systemd's precedence order.
const UNIT_DIRS: [&str; 5] = [
    "etc/systemd/system",
    "run/systemd/system",
    "usr/local/lib/systemd/system",
    "usr/lib/systemd/system",
    "lib/systemd/system",
];
const TMPFILES_DIRS: [&str; 5] = [
    "etc/tmpfiles.d",
    "run/tmpfiles.d",
    "usr/local/lib/tmpfiles.d",
    "usr/lib/tmpfiles.d",
    "lib/tmpfiles.d",
];

fn dir_files(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| e.path())
        .filter(|p| keep(&p.file_name().unwrap_or_default().to_string_lossy()))
        .collect();
    v.sort();
    v
}

/// An installed system under `root` (`/` for this machine): its units, tmpfiles.d and nginx.
/// Only services that run ferricorn or Gunicorn are checked; files that cannot be parsed are
/// an error when they concern those services, and skipped otherwise.
pub fn load_root(root: &Path) -> Result<Inputs, String> {
    if !root.is_dir() {
        return Err(format!("--root {}: not a directory", root.display()));
    }
    let mut inputs = Inputs {
        root: Some(root.to_path_buf()),
        ..Default::default()
    };
    let mut names = BTreeSet::new();
    let relevant_text = |t: &str| t.contains("ferricorn") || t.contains("gunicorn");
    for d in UNIT_DIRS {
        for p in dir_files(&root.join(d), |n| {
            n.ends_with(".service") || n.ends_with(".socket")
        }) {
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if !names.insert(name) {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&p) else {
                continue;
            };
            match UnitFile::parse(&p, &text) {
                Ok(u) => inputs.units.push(u),
                Err(e) if relevant_text(&text) => return Err(e),
                Err(_) => {}
            }
        }
    }
    let mut tnames = BTreeSet::new();
    for d in TMPFILES_DIRS {
        for p in dir_files(&root.join(d), |n| n.ends_with(".conf")) {
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if !tnames.insert(name) {
                continue;
            }
            if let Ok(t) = TmpFile::read(&p) {
                inputs.tmpfiles.push(t);
            }
        }
    }
    let mut nginx = Vec::new();
    let main = root.join("etc/nginx/nginx.conf");
    if main.is_file() {
        nginx.push(main);
    }
    nginx.extend(dir_files(&root.join("etc/nginx/conf.d"), |n| {
        n.ends_with(".conf")
    }));
    nginx.extend(dir_files(&root.join("etc/nginx/sites-enabled"), |_| true));
    for p in nginx {
        inputs.nginx.push(NginxFile::read(&p)?);
    }
    let any = inputs.units.iter().any(|u| {
        u.file_name().ends_with(".service")
            && u.get_all("Service", "ExecStart")
                .last()
                .and_then(|e| parse_exec(e).ok())
                .is_some_and(|x| x.server != Server::Other)
    });
    if !any {
        return Err(format!(
            "nothing to check: no service under {} runs ferricorn or gunicorn (looked in {})",
            root.display(),
            UNIT_DIRS.join(", ")
        ));
    }
    Ok(inputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_signals() {
        assert_eq!(
            kill_signal("/bin/kill -s HUP $MAINPID").as_deref(),
            Some("HUP")
        );
        assert_eq!(
            kill_signal("/bin/kill -USR2 $MAINPID").as_deref(),
            Some("USR2")
        );
        assert_eq!(kill_signal("kill $MAINPID").as_deref(), Some("TERM"));
        assert_eq!(kill_signal("/usr/bin/foo reload"), None);
        assert!(is_hup("SIGHUP") && is_hup("1") && !is_hup("USR2"));
    }

    #[test]
    fn exec_flags_of_both_servers() {
        let e = |v: &str| {
            parse_exec(&Entry {
                section: "Service".into(),
                key: "ExecStart".into(),
                value: v.into(),
                line: 3,
            })
            .unwrap()
        };
        let x = e("/usr/bin/gunicorn --pid /run/g/pid --bind unix:/run/g/socket -D app.wsgi");
        assert_eq!(x.server, Server::Gunicorn);
        assert_eq!(x.binds, ["unix:/run/g/socket"]);
        assert_eq!(x.pid.as_deref(), Some("/run/g/pid"));
        assert!(x.daemon);
        let x =
            e("/usr/bin/ferricorn --bind=unix:/run/a/socket -p/run/a/pid --graceful-timeout 5 x:y");
        assert_eq!(x.server, Server::Ferricorn);
        assert_eq!(x.binds, ["unix:/run/a/socket"]);
        assert_eq!(x.pid.as_deref(), Some("/run/a/pid"));
        assert_eq!(x.graceful, Some(5.0));
        let x = e("/usr/bin/python3 -m gunicorn -b 127.0.0.1:8000 x:y");
        assert_eq!(x.server, Server::Gunicorn);
        assert_eq!(x.binds, ["127.0.0.1:8000"]);
    }

    #[test]
    fn classifies_by_name_and_sniffs_content() {
        assert_eq!(classify(Path::new("a/app.service")), Some(Kind::Unit));
        assert_eq!(
            classify(Path::new("etc/tmpfiles.d/app.conf")),
            Some(Kind::Tmpfiles)
        );
        assert_eq!(
            classify(Path::new("g/gunicorn.tmpfiles.conf")),
            Some(Kind::Tmpfiles)
        );
        assert_eq!(classify(Path::new("g/nginx.conf")), Some(Kind::Nginx));
        assert_eq!(classify(Path::new("g/site.conf")), None);
        assert_eq!(sniff("server { listen 80; }"), Some(Kind::Nginx));
        assert_eq!(sniff("# x\nd /run/x 0755 a b -\n"), Some(Kind::Tmpfiles));
        assert_eq!(sniff("hello world\n"), None);
    }
}

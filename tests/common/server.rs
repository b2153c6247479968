//! Spawning the real `ferricorn` binary for integration tests.
//!
//! The server runs in its own process group; dropping the [`Server`] SIGKILLs
//! the whole group (master and workers) and reaps the master. Its stdout and
//! stderr are captured line by line (ANSI colour codes stripped); set
//! `FERRICORN_TEST_ECHO=1` to also copy them to the test's stderr.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use super::client::Addr;

const POLL: Duration = Duration::from_millis(20);

/// Variables ferricorn reads (settings, `GUNICORN_CMD_ARGS`, systemd's protocols), removed from
/// every spawned server's environment; `.env()` sets one for a test.
pub const HERMETIC: [&str; 15] = [
    "WEB_CONCURRENCY",
    "PORT",
    "FORWARDED_ALLOW_IPS",
    "VIRTUAL_ENV",
    "SENDFILE",
    "GUNICORN_CMD_ARGS",
    "NOTIFY_SOCKET",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "INVOCATION_ID",
    "JOURNAL_STREAM",
    "PYTHONPATH",
];
const LISTENING: &str = "Listening at: ";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Result of [`ServerBuilder::run_to_exit`].
#[derive(Clone, Debug)]
pub struct Output {
    /// Exit code; None if the process was killed by a signal.
    pub code: Option<i32>,
    /// The signal that killed the process, if any.
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

enum EnvOp {
    Set(String, String),
    Remove(String),
}

/// Builds a server command; see [`ferricorn`].
pub struct ServerBuilder {
    program: PathBuf,
    args: Vec<String>,
    /// Environment changes, applied in order after the defaults.
    env_ops: Vec<EnvOp>,
    cwd: Option<PathBuf>,
    /// `RLIMIT_AS` (bytes) for the spawned process, as `ulimit -v` sets it.
    address_space: Option<u64>,
    tmp: tempfile::TempDir,
}

/// A builder for the `ferricorn` binary under test.
///
/// The child's environment is the test's, except that inherited `FERRICORN_*`
/// variables and `GUNICORN_CMD_ARGS` are removed and `PYTHONUNBUFFERED=1`,
/// `PYTHONDONTWRITEBYTECODE=1` and `NO_COLOR=1` are set (override with `.env()` /
/// `.env_remove()`).
pub fn ferricorn() -> ServerBuilder {
    program(env!("CARGO_BIN_EXE_ferricorn"))
}

/// A builder for any program (used by the harness's own tests).
pub fn program(path: impl Into<PathBuf>) -> ServerBuilder {
    ServerBuilder {
        program: path.into(),
        args: Vec::new(),
        env_ops: Vec::new(),
        cwd: None,
        address_space: None,
        tmp: tempfile::Builder::new()
            .prefix("ferricorn-test-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create temp dir: {e}")),
    }
}

/// `<CARGO_MANIFEST_DIR>/examples`
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

impl ServerBuilder {
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, a: I) -> Self {
        self.args.extend(a.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env_ops.push(EnvOp::Set(k.to_string(), v.to_string()));
        self
    }

    pub fn env_remove(mut self, k: &str) -> Self {
        self.env_ops.push(EnvOp::Remove(k.to_string()));
        self
    }

    pub fn cwd(mut self, p: impl Into<PathBuf>) -> Self {
        self.cwd = Some(p.into());
        self
    }

    /// Limits the process's address space (`RLIMIT_AS`, what `ulimit -v` sets) to `bytes`;
    /// inherited by the workers.
    pub fn address_space_limit(mut self, bytes: u64) -> Self {
        self.address_space = Some(bytes);
        self
    }

    /// A temporary directory owned by the server (deleted when the [`Server`]
    /// is dropped): a place for sockets, pid files, configs written before spawn.
    pub fn tmp_path(&self) -> &Path {
        self.tmp.path()
    }

    /// Spawns the program in its own process group with stdin null and
    /// stdout/stderr piped and captured.
    pub fn spawn(self) -> Server {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("FERRICORN_") {
                cmd.env_remove(&k);
            }
        }
        // Hermetic: no setting and no supervisor protocol reaches the server from the test's
        // own environment; a test sets what it means to test.
        for k in HERMETIC {
            cmd.env_remove(k);
        }
        cmd.env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("NO_COLOR", "1");
        for op in &self.env_ops {
            match op {
                EnvOp::Set(k, v) => cmd.env(k, v),
                EnvOp::Remove(k) => cmd.env_remove(k),
            };
        }
        if let Some(cwd) = &self.cwd {
            cmd.current_dir(cwd);
        }
        if let Some(bytes) = self.address_space {
            let lim = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            // SAFETY: setrlimit is async-signal-safe and `lim` is a plain value copied into
            // the closure.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot spawn {} {:?}: {e}",
                self.program.display(),
                self.args
            )
        });
        let echo = std::env::var_os("FERRICORN_TEST_ECHO").is_some_and(|v| !v.is_empty());
        let pid = i32::try_from(child.id()).expect("pid fits in i32");
        let stdout = capture(
            child.stdout.take().expect("piped stdout"),
            "stdout",
            pid,
            echo,
        );
        let stderr = capture(
            child.stderr.take().expect("piped stderr"),
            "stderr",
            pid,
            echo,
        );
        Server {
            child: Mutex::new(child),
            pid,
            status: Mutex::new(None),
            stdout,
            stderr,
            description: format!("{} {}", self.program.display(), self.args.join(" ")),
            tmp: self.tmp,
        }
    }

    /// Spawns, waits up to `timeout` for the program to exit (on timeout it
    /// SIGKILLs the group and panics with the output), and returns its output.
    pub fn run_to_exit(self, timeout: Duration) -> Output {
        let server = self.spawn();
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(st) = server.try_status() {
                break st;
            }
            if Instant::now() >= deadline {
                server.kill_group();
                server.reap(Duration::from_secs(5));
                server.drain(Duration::from_secs(2));
                panic!(
                    "`{}` did not exit within {timeout:?}; killed it\n{}",
                    server.description,
                    server.report()
                );
            }
            thread::sleep(POLL);
        };
        server.drain(Duration::from_secs(2));
        Output {
            code: status.code(),
            signal: status.signal(),
            stdout: server.stdout(),
            stderr: server.stderr(),
        }
    }
}

/// One captured output stream.
struct Captured {
    text: Arc<Mutex<String>>,
    eof: Arc<AtomicBool>,
}

/// Removes ANSI CSI escape sequences (`ESC [ ... final-byte`).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn capture(r: impl Read + Send + 'static, label: &'static str, pid: i32, echo: bool) -> Captured {
    let text = Arc::new(Mutex::new(String::new()));
    let eof = Arc::new(AtomicBool::new(false));
    let (t, e) = (Arc::clone(&text), Arc::clone(&eof));
    thread::Builder::new()
        .name(format!("capture-{label}-{pid}"))
        .spawn(move || {
            let mut reader = BufReader::new(r);
            let mut raw = Vec::new();
            loop {
                raw.clear();
                match reader.read_until(b'\n', &mut raw) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let mut line = strip_ansi(&String::from_utf8_lossy(&raw));
                if !line.ends_with('\n') {
                    line.push('\n');
                }
                if echo {
                    eprint!("[ferricorn {pid} {label}] {line}");
                }
                lock(&t).push_str(&line);
            }
            e.store(true, Ordering::SeqCst);
        })
        .expect("spawn capture thread");
    Captured { text, eof }
}

impl Captured {
    fn get(&self) -> String {
        lock(&self.text).clone()
    }

    fn done(&self) -> bool {
        self.eof.load(Ordering::SeqCst)
    }

    fn find_line(&self, needle: &str) -> Option<String> {
        lock(&self.text)
            .lines()
            .find(|l| l.contains(needle))
            .map(str::to_string)
    }

    fn count(&self, needle: &str) -> usize {
        lock(&self.text)
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Which {
    Stdout,
    Stderr,
    /// stderr first, then stdout
    Either,
}

/// A running server (the master process).
pub struct Server {
    child: Mutex<Child>,
    pid: i32,
    status: Mutex<Option<ExitStatus>>,
    stdout: Captured,
    stderr: Captured,
    description: String,
    tmp: tempfile::TempDir,
}

impl Server {
    /// The master's pid (also its process group id).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The temporary directory created with the builder (see [`ServerBuilder::tmp_path`]).
    pub fn tmp_path(&self) -> &Path {
        self.tmp.path()
    }

    /// All stderr captured so far.
    pub fn stderr(&self) -> String {
        self.stderr.get()
    }

    /// All stdout captured so far.
    pub fn stdout(&self) -> String {
        self.stdout.get()
    }

    /// Number of stderr lines containing `needle`.
    pub fn count_stderr(&self, needle: &str) -> usize {
        self.stderr.count(needle)
    }

    /// Number of stdout lines containing `needle`.
    pub fn count_stdout(&self, needle: &str) -> usize {
        self.stdout.count(needle)
    }

    /// The exit status if the master has exited (non-blocking; reaps it).
    pub fn try_status(&self) -> Option<ExitStatus> {
        let mut status = lock(&self.status);
        if status.is_none()
            && let Ok(Some(st)) = lock(&self.child).try_wait()
        {
            *status = Some(st);
        }
        *status
    }

    /// true once the master has exited.
    pub fn has_exited(&self) -> bool {
        self.try_status().is_some()
    }

    /// Everything known about the process, for panic messages.
    pub fn report(&self) -> String {
        let status = match self.try_status() {
            Some(st) => format!("exited: {st}"),
            None => "still running".to_string(),
        };
        format!(
            "--- server `{}` (pid {}) {status} ---\n--- stderr ---\n{}--- stdout ---\n{}--- end ---",
            self.description,
            self.pid,
            self.stderr(),
            self.stdout()
        )
    }

    fn find(&self, which: Which, needle: &str) -> Option<String> {
        match which {
            Which::Stdout => self.stdout.find_line(needle),
            Which::Stderr => self.stderr.find_line(needle),
            Which::Either => self
                .stderr
                .find_line(needle)
                .or_else(|| self.stdout.find_line(needle)),
        }
    }

    fn streams_done(&self, which: Which) -> bool {
        match which {
            Which::Stdout => self.stdout.done(),
            Which::Stderr => self.stderr.done(),
            Which::Either => self.stdout.done() && self.stderr.done(),
        }
    }

    fn wait_line(&self, which: Which, needle: &str, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            if let Some(line) = self.find(which, needle) {
                return line;
            }
            // Once the process has exited and its output pipes are closed,
            // nothing more can arrive: fail fast.
            if self.has_exited() && self.streams_done(which) {
                if let Some(line) = self.find(which, needle) {
                    return line;
                }
                panic!(
                    "server exited before printing {needle:?} on {which:?} (waited {:?})\n{}",
                    start.elapsed(),
                    self.report()
                );
            }
            if start.elapsed() >= timeout {
                panic!(
                    "timed out after {timeout:?} waiting for {needle:?} on {which:?}\n{}",
                    self.report()
                );
            }
            thread::sleep(POLL);
        }
    }

    /// Waits until a line of stderr contains `needle` and returns that line;
    /// panics after `timeout` (or as soon as the server has exited without
    /// printing it) with the full captured output in the message.
    pub fn wait_for_stderr(&self, needle: &str, timeout: Duration) -> String {
        self.wait_line(Which::Stderr, needle, timeout)
    }

    /// Like [`Server::wait_for_stderr`] for stdout.
    pub fn wait_for_stdout(&self, needle: &str, timeout: Duration) -> String {
        self.wait_line(Which::Stdout, needle, timeout)
    }

    /// Like [`Server::wait_for_stderr`], looking at stderr and stdout.
    pub fn wait_for_output(&self, needle: &str, timeout: Duration) -> String {
        self.wait_line(Which::Either, needle, timeout)
    }

    /// Waits until at least `n` stderr lines contain `needle`.
    pub fn wait_for_stderr_count(&self, needle: &str, n: usize, timeout: Duration) {
        let ok = wait_until(timeout, || {
            self.count_stderr(needle) >= n || (self.has_exited() && self.stderr.done())
        });
        let have = self.count_stderr(needle);
        if !ok || have < n {
            panic!(
                "wanted {n} stderr lines containing {needle:?} within {timeout:?}, have {have}\n{}",
                self.report()
            );
        }
    }

    /// Parses the address in "... Listening at: ADDR (PID)" (ADDR may be a
    /// unix path containing spaces when the "(PID)" suffix is present).
    pub fn parse_listening(line: &str) -> Option<Addr> {
        let rest = line[line.find(LISTENING)? + LISTENING.len()..].trim();
        let addr = match rest.rfind(" (") {
            Some(i) if rest.ends_with(')') => &rest[..i],
            _ => rest.split_whitespace().next()?,
        };
        Addr::parse(addr)
    }

    /// The first listener logged as "Listening at: http://HOST:PORT (PID)" or
    /// "Listening at: unix:/path (PID)" (stderr, or else stdout); waits up to 30 s.
    pub fn addr(&self) -> Addr {
        let line = self.wait_line(Which::Either, LISTENING, Duration::from_secs(30));
        Self::parse_listening(&line).unwrap_or_else(|| {
            panic!(
                "cannot parse listener address in {line:?}\n{}",
                self.report()
            )
        })
    }

    /// All distinct listeners logged so far, in order (stderr, then stdout).
    pub fn addrs(&self) -> Vec<Addr> {
        let text = format!("{}{}", self.stderr(), self.stdout());
        let mut out: Vec<Addr> = Vec::new();
        for a in text
            .lines()
            .filter(|l| l.contains(LISTENING))
            .filter_map(Self::parse_listening)
        {
            if !out.contains(&a) {
                out.push(a);
            }
        }
        out
    }

    /// Waits until the master logs "Ready:" (stderr, or else stdout).
    pub fn wait_ready(&self, timeout: Duration) {
        self.wait_line(Which::Either, "Ready:", timeout);
    }

    /// kill(master pid, sig)
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(self.pid, sig);
        }
    }

    /// kill(-pgid, sig): the master and every process still in its group.
    pub fn signal_group(&self, sig: i32) {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(-self.pid, sig);
        }
    }

    fn kill_group(&self) {
        self.signal_group(libc::SIGKILL);
    }

    /// SIGKILLs the whole process group and reaps the master.
    pub fn kill(&mut self) {
        self.kill_group();
        self.reap(Duration::from_secs(10));
    }

    fn reap(&self, max: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + max;
        loop {
            if let Some(st) = self.try_status() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits up to `max` for both output pipes to reach EOF.
    fn drain(&self, max: Duration) {
        wait_until(max, || self.stdout.done() && self.stderr.done());
    }

    /// Waits for the master to exit; returns its exit code (None if killed by
    /// a signal). Panics with the captured output on timeout. After the exit it
    /// waits briefly (≤ 2 s) for the output pipes to close so that
    /// `stderr()`/`stdout()` are complete.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let Some(status) = self.reap(timeout) else {
            panic!("server did not exit within {timeout:?}\n{}", self.report());
        };
        self.drain(Duration::from_secs(2));
        status.code()
    }

    /// The exit signal, if the master has exited because of one.
    pub fn exit_signal(&self) -> Option<i32> {
        self.try_status().and_then(|st| st.signal())
    }

    /// Pids of processes whose parent is the master.
    pub fn children(&self) -> Vec<i32> {
        procs_where(|st| st.ppid == self.pid)
    }

    /// Pids of all live processes in the master's process group (master included
    /// while it runs); useful to check that no worker outlived a shutdown.
    pub fn group_pids(&self) -> Vec<i32> {
        procs_where(|st| st.pgrp == self.pid && st.state != 'Z')
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill_group();
        if lock(&self.status).is_none() {
            let mut child = lock(&self.child);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The fields of /proc/PID/stat that tests care about.
#[derive(Clone, Debug)]
pub struct ProcStat {
    pub pid: i32,
    pub comm: String,
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    /// Minor page faults so far (absent from a truncated line).
    pub minflt: Option<u64>,
}

/// Parses /proc/PID/stat (`comm` may contain spaces and parentheses).
pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&s)
}

pub fn parse_stat(s: &str) -> Option<ProcStat> {
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let pid = s[..open].trim().parse().ok()?;
    let comm = s.get(open + 1..close)?.to_string();
    let mut rest = s[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    let pgrp = rest.next()?.parse().ok()?;
    // session, tty_nr, tpgid, flags, then minflt.
    let minflt = rest.nth(4).and_then(|v| v.parse().ok());
    Some(ProcStat {
        pid,
        comm,
        state,
        ppid,
        pgrp,
        minflt,
    })
}

fn procs_where(mut f: impl FnMut(&ProcStat) -> bool) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(proc_stat)
        .filter(|st| f(st))
        .map(|st| st.pid)
        .collect();
    pids.sort_unstable();
    pids
}

/// Pids of the processes whose parent is `pid` (any state, zombies included).
pub fn procs_children(pid: i32) -> Vec<i32> {
    procs_where(|st| st.ppid == pid)
}

/// kill(pid, 0) succeeds and the process is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill(2) with signal 0 only checks for existence/permission.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    proc_stat(pid).is_some_and(|st| st.state != 'Z')
}

/// Polls `f` every 20 ms until it returns true (→ true) or `timeout` passes (→ false).
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(POLL);
    }
}

/// /proc/PID/cmdline with NULs turned into spaces, trimmed ("" if unreadable).
pub fn proc_cmdline(pid: i32) -> String {
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(bytes) => {
            let s: Vec<u8> = bytes
                .into_iter()
                .map(|b| if b == 0 { b' ' } else { b })
                .collect();
            String::from_utf8_lossy(&s).trim().to_string()
        }
        Err(_) => String::new(),
    }
}

/// A `kB` field of /proc/PID/status (`VmSize`, `VmRSS`, ...), in KiB.
pub fn proc_status_kib(pid: i32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The program name of a process (/proc/PID/comm), if it exists.
pub fn proc_comm(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_string())
}

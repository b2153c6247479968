//! Upgrading the binary in place (USR2): the master forks and execs a successor — the
//! executable it was started from, with the same arguments — that inherits every listener as
//! socket activation (`LISTEN_FDS` from fd 3, `LISTEN_FDNAMES`). Once the successor's workers
//! serve, it sends TERM to this master, which hands over and drains.
//!
//! Everything the child needs (paths, argument and environment arrays, the descriptor plan) is
//! built before the fork; after it the child only makes async-signal-safe calls (`sigprocmask`,
//! `fcntl`, `dup2`, `getpid`, `chdir`, `execve`, `write`, `_exit`) and allocates nothing, so it
//! is sound even if the master has other threads (an embedded interpreter's, say). This is a
//! plain fork + exec, not a worker fork: it does not go through `workers::fork_worker`.
//!
//! Written by hand rather than with `std::process::Command`: the listeners must land on fixed
//! descriptor numbers (3, 4, ...), and `Command` keeps a descriptor of its own open in the child
//! (to report an exec failure), which may be one of those numbers.

use std::ffi::{CString, OsStr, c_char, c_int};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::unistd::{ForkResult, Pid, fork};

use crate::notify::NotifyEnv;
use crate::sockets::Listener;

/// Environment variable telling a new master (USR2) which master it replaces.
pub const UPGRADE_FROM_ENV: &str = "FERRICORN_UPGRADE_FROM";

/// Variables the successor gets from this master rather than from the inherited environment.
const REPLACED: [&str; 7] = [
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    UPGRADE_FROM_ENV,
];

/// The first descriptor of socket activation.
const LISTEN_FDS_START: c_int = 3;

/// A successor master started by USR2, not in charge yet.
///
/// Whether it still runs is only ever learned from `waitpid` (the master's reaping): a successor
/// that died is a zombie until reaped, and `kill(pid, 0)` succeeds on a zombie.
pub(super) struct Successor {
    pid: Pid,
}

impl Successor {
    pub fn pid(&self) -> Pid {
        self.pid
    }
}

/// What the successor is: the executable, its arguments, where it starts.
pub(super) struct Program<'a> {
    pub exe: &'a Path,
    pub argv: &'a [String],
    pub cwd: &'a Path,
}

/// Forks and execs the successor with `listeners`, and the environment of the current
/// generation's workers (this master's, with `env` applied).
/// `metrics`: the `--metrics-bind` listener, handed over after the others under its own name.
///
/// `before_exec` (the `pre_exec` server hook) runs in the child before the exec; the fork
/// then goes through CPython's fork protocol (`python::fork`), so that Python can run there.
/// If it returns false, the child exits and the master sees the upgrade fail.
pub(super) fn start(
    program: &Program<'_>,
    listeners: &[Listener],
    metrics: Option<&Listener>,
    env: &[(String, Option<String>)],
    notify: &NotifyEnv,
    before_exec: Option<&mut dyn FnMut() -> bool>,
) -> Result<Successor, String> {
    let mut exec = Exec::prepare(program, listeners, metrics, env, notify)?;
    let forked = match &before_exec {
        Some(_) => crate::python::fork(),
        // SAFETY: in the child, `Exec::run` makes only async-signal-safe calls and never
        // returns.
        None => unsafe { fork() },
    };
    match forked {
        Ok(ForkResult::Child) => {
            if let Some(hook) = before_exec
                && !hook()
            {
                fail(b"the pre_exec hook raised; not executing the new master")
            }
            exec.run()
        }
        Ok(ForkResult::Parent { child }) => Ok(Successor { pid: child }),
        Err(e) => Err(format!("cannot fork: {e}")),
    }
}

/// Everything the child needs, made before the fork.
struct Exec {
    exe: CString,
    cwd: CString,
    /// Owns the strings `argv` points to.
    _args: Vec<CString>,
    /// NULL-terminated.
    argv: Vec<*const c_char>,
    /// Owns the strings `envp` points to (but `LISTEN_PID`'s).
    _env: Vec<CString>,
    /// NULL-terminated; `envp[listen_pid_at]` is set in the child, once it knows its pid.
    envp: Vec<*const c_char>,
    listen_pid_at: usize,
    /// `LISTEN_PID=` followed by room for the digits and the NUL.
    listen_pid: [u8; 32],
    /// The listeners' descriptors, in `LISTEN_FDS` order; rewritten in the child as they move.
    fds: Vec<RawFd>,
    empty_mask: libc::sigset_t,
}

const LISTEN_PID_PREFIX: &[u8] = b"LISTEN_PID=";

fn cstring(bytes: &[u8], what: &str) -> Result<CString, String> {
    CString::new(bytes).map_err(|_| format!("{what} contains a NUL byte"))
}

impl Exec {
    fn prepare(
        program: &Program<'_>,
        listeners: &[Listener],
        metrics: Option<&Listener>,
        env: &[(String, Option<String>)],
        notify: &NotifyEnv,
    ) -> Result<Exec, String> {
        let exe = cstring(program.exe.as_os_str().as_bytes(), "the executable's path")?;
        let cwd = cstring(program.cwd.as_os_str().as_bytes(), "the start directory")?;
        let arg0 = program
            .argv
            .first()
            .map(String::as_str)
            .unwrap_or("ferricorn");
        let args = std::iter::once(arg0)
            .chain(program.argv.iter().skip(1).map(String::as_str))
            .map(|a| cstring(a.as_bytes(), "an argument"))
            .collect::<Result<Vec<_>, _>>()?;
        let mut names: Vec<String> = listeners.iter().map(Listener::handover_name).collect();
        let mut fds: Vec<RawFd> = listeners.iter().map(Listener::raw_fd).collect();
        if let Some(m) = metrics {
            names.push(crate::metrics::endpoint::FD_NAME.to_string());
            fds.push(m.raw_fd());
        }
        let changed = |k: &OsStr| env.iter().any(|(c, _)| OsStr::new(c) == k);
        let mut vars: Vec<Vec<u8>> = std::env::vars_os()
            .filter(|(k, _)| !REPLACED.iter().any(|r| OsStr::new(r) == k) && !changed(k))
            .map(|(k, v)| [k.as_bytes(), b"=", v.as_bytes()].concat())
            .collect();
        vars.extend(
            env.iter()
                .filter_map(|(k, v)| Some(format!("{k}={}", v.as_ref()?).into_bytes())),
        );
        vars.push(format!("LISTEN_FDS={}", fds.len()).into_bytes());
        vars.push(format!("LISTEN_FDNAMES={}", names.join(":")).into_bytes());
        vars.push(format!("{UPGRADE_FROM_ENV}={}", std::process::id()).into_bytes());
        if let Some(n) = &notify.notifier {
            vars.push(format!("NOTIFY_SOCKET={}", n.socket).into_bytes());
        }
        if let Some(w) = notify.watchdog {
            vars.push(format!("WATCHDOG_USEC={}", w.as_micros()).into_bytes());
        }
        let env = vars
            .into_iter()
            .map(|v| cstring(&v, "an environment variable"))
            .collect::<Result<Vec<_>, _>>()?;
        let mut argv: Vec<*const c_char> = args.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<*const c_char> = env.iter().map(|v| v.as_ptr()).collect();
        let listen_pid_at = envp.len();
        envp.push(std::ptr::null()); // LISTEN_PID=, filled in by the child
        envp.push(std::ptr::null());
        let mut listen_pid = [0u8; 32];
        listen_pid[..LISTEN_PID_PREFIX.len()].copy_from_slice(LISTEN_PID_PREFIX);
        // SAFETY: sigemptyset initialises the set it is given.
        let empty_mask = unsafe {
            let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(set.as_mut_ptr());
            set.assume_init()
        };
        Ok(Exec {
            exe,
            cwd,
            _args: args,
            argv,
            _env: env,
            envp,
            listen_pid_at,
            listen_pid,
            fds,
            empty_mask,
        })
    }

    /// In the forked child: unblock signals, put the listeners on 3, 4, ..., exec.
    fn run(&mut self) -> ! {
        // SAFETY (whole function): async-signal-safe calls on descriptors and memory this
        // process owns; every buffer was allocated before the fork and is only indexed here.
        unsafe {
            libc::sigprocmask(libc::SIG_SETMASK, &self.empty_mask, std::ptr::null_mut());
            self.place_listeners();
            // LISTEN_PID must be the successor's pid, which exec keeps: ours.
            let mut at = LISTEN_PID_PREFIX.len();
            at += write_decimal(&mut self.listen_pid[at..], libc::getpid() as u64);
            self.listen_pid[at] = 0;
            self.envp[self.listen_pid_at] = self.listen_pid.as_ptr().cast();
            if libc::chdir(self.cwd.as_ptr()) != 0 {
                report(b"cannot enter the start directory; starting where the master is");
            }
            libc::execve(self.exe.as_ptr(), self.argv.as_ptr(), self.envp.as_ptr());
            fail(b"cannot execute the new binary")
        }
    }

    /// Moves listener `i` to descriptor `3 + i`, for any number of listeners, checking every
    /// call. A listener whose descriptor lies in the target range but is not its own target
    /// could be overwritten by another's `dup2`, so it is first moved above the range; after
    /// that the only descriptors in the range that are listeners sit on their own targets.
    /// Targets end up without close-on-exec; the moved copies keep it, and so do the master's
    /// originals, so exec closes both.
    unsafe fn place_listeners(&mut self) {
        let n = self.fds.len() as c_int;
        let end = LISTEN_FDS_START + n;
        for i in 0..self.fds.len() {
            let fd = self.fds[i];
            let target = LISTEN_FDS_START + i as c_int;
            if (LISTEN_FDS_START..end).contains(&fd) && fd != target {
                // SAFETY: F_DUPFD_CLOEXEC on an open descriptor; the copy is >= end.
                let moved = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, end) };
                if moved < 0 {
                    fail(b"cannot move a listener out of the way");
                }
                self.fds[i] = moved;
            }
        }
        for i in 0..self.fds.len() {
            let fd = self.fds[i];
            let target = LISTEN_FDS_START + i as c_int;
            if fd == target {
                // Already in place: only clear close-on-exec (as dup2 would).
                // SAFETY: F_SETFD on an open descriptor.
                if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } != 0 {
                    fail(b"cannot keep a listener open across exec");
                }
            } else {
                // SAFETY: dup2 of an open descriptor onto a target no other listener occupies
                // (see above); whatever else was open there is replaced.
                if unsafe { libc::dup2(fd, target) } != target {
                    fail(b"cannot put a listener on its socket-activation descriptor");
                }
            }
        }
    }
}

/// Writes `n` in decimal at the start of `buf`; returns the number of digits.
fn write_decimal(buf: &mut [u8], mut n: u64) -> usize {
    let mut digits = [0u8; 20];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        buf[i] = digits[len - 1 - i];
    }
    len
}

/// Writes `ferricorn: upgrade: <what> (errno N)` to stderr, without allocating.
fn report(what: &[u8]) {
    // SAFETY: reading errno and writing a stack buffer to fd 2 are async-signal-safe.
    unsafe {
        let errno = *libc::__errno_location();
        let mut line = [0u8; 160];
        let mut at = 0;
        for part in [b"ferricorn: upgrade: ".as_slice(), what, b" (errno "] {
            let n = part.len().min(line.len() - at - 24);
            line[at..at + n].copy_from_slice(&part[..n]);
            at += n;
        }
        at += write_decimal(&mut line[at..], errno.max(0) as u64);
        line[at] = b')';
        line[at + 1] = b'\n';
        libc::write(2, line.as_ptr().cast(), at + 2);
    }
}

/// Reports and leaves the child; the master learns of it when it reaps the successor.
fn fail(what: &[u8]) -> ! {
    report(what);
    // SAFETY: leaving the forked child without running the master's exit handlers.
    unsafe { libc::_exit(127) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_digits_without_allocating() {
        let mut buf = [0u8; 20];
        let n = write_decimal(&mut buf, 4194304);
        assert_eq!(&buf[..n], b"4194304");
        let n = write_decimal(&mut buf, 0);
        assert_eq!(&buf[..n], b"0");
    }
}

//! `-D/--daemon`: detach from the terminal, for plain shells only.
//!
//! Under a process monitor (systemd sets `NOTIFY_SOCKET` or `INVOCATION_ID`; so do tools that
//! speak its protocol) detaching is refused: the monitor expects the process it started to stay
//! in the foreground, and would take the daemon's exit for the service's.

use std::os::fd::AsRawFd;

use nix::unistd::{ForkResult, setsid};

/// Why `--daemon` must not be honoured here, if it must not.
pub fn refusal(notify_socket: bool, invocation_id: bool) -> Option<String> {
    let by = match (notify_socket, invocation_id) {
        (true, _) => "NOTIFY_SOCKET is set",
        (false, true) => "INVOCATION_ID is set (started by systemd)",
        (false, false) => return None,
    };
    Some(format!(
        "--daemon refused: {by}; a process monitor expects ferricorn to stay in the \
         foreground (remove --daemon / daemon = true)"
    ))
}

/// Forks twice with a new session in between; the original process exits 0. Standard streams
/// are connected to /dev/null.
pub fn detach() -> Result<(), String> {
    // Single-threaded at this point (called before the master starts); python::fork keeps an
    // interpreter valid in the child (the wheel's, which runs already).
    match crate::python::fork().map_err(|e| format!("cannot fork: {e}"))? {
        ForkResult::Parent { child } => {
            // Return only once the daemon runs in its own session, so whoever started us
            // (and might clean up our process group when we exit) cannot catch it half-way.
            let code = match nix::sys::wait::waitpid(child, None) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, c)) => c,
                _ => 1,
            };
            // SAFETY: leaving the original process.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Child => {}
    }
    if let Err(e) = setsid() {
        eprintln!("ferricorn: error: setsid: {e}");
        // SAFETY: leaving the intermediate child.
        unsafe { libc::_exit(1) }
    }
    match crate::python::fork().map_err(|e| format!("cannot fork: {e}"))? {
        ForkResult::Parent { .. } => unsafe { libc::_exit(0) },
        ForkResult::Child => {}
    }
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("/dev/null: {e}"))?;
    for fd in 0..3 {
        // SAFETY: dup2 of an open descriptor onto a standard stream.
        unsafe { libc::dup2(null.as_raw_fd(), fd) };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_under_a_monitor_only() {
        assert!(refusal(true, false).unwrap().contains("NOTIFY_SOCKET"));
        assert!(refusal(false, true).unwrap().contains("INVOCATION_ID"));
        assert!(refusal(false, false).is_none());
    }
}

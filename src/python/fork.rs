//! Forking a process that has a Python interpreter in it, the way `os.fork()` does.
//!
//! The master holds a running interpreter (the embedded one, or the user's when ferricorn runs
//! from the wheel), so a plain `fork()` could copy a lock held by another thread or leave the
//! child's runtime believing threads exist that do not. CPython's fork protocol prevents that:
//! with the GIL held, `PyOS_BeforeFork()` takes the import lock and the other runtime locks,
//! and `PyOS_AfterFork_Child()` / `PyOS_AfterFork_Parent()` release them and, in the child,
//! reset the runtime's thread state (threading's after-fork hooks, `os.register_at_fork`).
//! Every fork after which the child goes on running (a worker, `--daemon`) goes through
//! [`fork`]; one that only `exec`s (the USR2 upgrade) need not.

use nix::unistd::ForkResult;
use pyo3::ffi;
use pyo3::prelude::*;

/// `fork()`, wrapped in CPython's fork protocol when an interpreter runs in this process.
/// The GIL is released again on both sides when it returns.
pub fn fork() -> nix::Result<ForkResult> {
    // SAFETY: Py_IsInitialized may be called at any time.
    if unsafe { ffi::Py_IsInitialized() } == 0 {
        // SAFETY: no interpreter, and the callers are single-threaded.
        return unsafe { nix::unistd::fork() };
    }
    Python::attach(|_py| {
        // SAFETY: the GIL is held, as the protocol requires; the callers (the master, the
        // daemonising start-up) have no other thread.
        unsafe {
            ffi::PyOS_BeforeFork();
            let r = nix::unistd::fork();
            match r {
                Ok(ForkResult::Child) => ffi::PyOS_AfterFork_Child(),
                _ => ffi::PyOS_AfterFork_Parent(),
            }
            r
        }
    })
}

//! Process titles (`ferricorn: master [app]`, `ferricorn: worker [app]`) as `ps` shows them.
//!
//! Written by hand: the crates that exist only set the 15-byte `comm` name (prctl), which `ps`
//! shows in its COMMAND column only with `-o comm`. `ps aux` reads `/proc/PID/cmdline`, i.e. the
//! original argv memory, so that is what must be rewritten — the technique of BSD `setproctitle`
//! and Python's `setproctitle`. The argv block and the environment strings that follow it are one
//! contiguous area; the environment is copied elsewhere first so the title may use both.

use std::ffi::{CStr, CString, c_char, c_int};
use std::sync::Mutex;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

static ARGV: AtomicPtr<*mut c_char> = AtomicPtr::new(std::ptr::null_mut());
static ARGC: AtomicUsize = AtomicUsize::new(0);
/// (start, len) of the writable area, computed on first use.
static AREA: Mutex<Option<(usize, usize)>> = Mutex::new(None);

/// glibc passes `argc, argv, envp` to `.init_array` functions; keep `argv` (as Rust's std does).
extern "C" fn capture_argv(argc: c_int, argv: *mut *mut c_char, _envp: *mut *mut c_char) {
    ARGV.store(argv, Ordering::Relaxed);
    ARGC.store(argc.max(0) as usize, Ordering::Relaxed);
}

#[used]
#[unsafe(link_section = ".init_array")]
static CAPTURE: extern "C" fn(c_int, *mut *mut c_char, *mut *mut c_char) = capture_argv;

unsafe extern "C" {
    static mut environ: *mut *mut c_char;
}

/// Moves the environment strings out of the argv area and returns the area (start, len).
/// Must run while the process has one thread (the master at startup).
fn area() -> Option<(usize, usize)> {
    let mut guard = AREA.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(a) = *guard {
        return Some(a);
    }
    let argv = ARGV.load(Ordering::Relaxed);
    let argc = ARGC.load(Ordering::Relaxed);
    if argv.is_null() || argc == 0 {
        return None;
    }
    // SAFETY: argv/argc come from the C runtime and stay valid for the life of the process;
    // `environ` is only read and replaced while the process is single-threaded.
    unsafe {
        let start = *argv as usize;
        let mut end = start;
        for i in 0..argc {
            let p = *argv.add(i);
            if p.is_null() || p as usize != end {
                break;
            }
            end = p as usize + CStr::from_ptr(p).to_bytes().len() + 1;
        }
        // Extend over environment strings that directly follow, after copying them.
        let env = environ;
        if !env.is_null() {
            let mut n = 0;
            while !(*env.add(n)).is_null() {
                n += 1;
            }
            let mut copies: Vec<*mut c_char> = Vec::with_capacity(n + 1);
            let mut env_end = end;
            for i in 0..n {
                let p = *env.add(i);
                let s = CStr::from_ptr(p);
                copies.push(CString::from(s).into_raw());
                if p as usize == env_end {
                    env_end = p as usize + s.to_bytes().len() + 1;
                }
            }
            copies.push(std::ptr::null_mut());
            let leaked: &'static mut [*mut c_char] = Box::leak(copies.into_boxed_slice());
            environ = leaked.as_mut_ptr();
            end = env_end;
        }
        *guard = Some((start, end - start));
        Some((start, end - start))
    }
}

/// Prepares the title area (moves the environment). Call early in the single-threaded master,
/// after the command line was read.
pub fn init() {
    let _ = area();
}

/// Sets the title shown by `ps` and in `/proc/PID/cmdline`.
pub fn set(title: &str) {
    let Some((start, len)) = area() else { return };
    if len < 2 {
        return;
    }
    let bytes = title.as_bytes();
    let n = bytes.len().min(len - 1);
    // SAFETY: [start, start+len) is the process's own argv/environ string area, which nothing
    // else reads any more (the environment was moved away, the arguments were parsed).
    unsafe {
        let dst = start as *mut u8;
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, n);
        std::ptr::write_bytes(dst.add(n), 0, len - n);
    }
}

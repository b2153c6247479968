//! Starting CPython inside the standalone binary (the `.deb`, `cargo run`, the tests), once,
//! in the master, before any worker forks.
//!
//! The interpreter is started with an explicit `PyConfig` rather than `Py_Initialize()`, so that
//! `sys.executable` is a real Python (the build's, or the virtualenv's `bin/python`) and a
//! virtualenv is activated the way CPython itself does it (`pyvenv.cfg` next to the executable):
//! its site-packages are importable whatever `PATH` says. Signal handlers stay the master's
//! (`install_signal_handlers = 0`). The wheel does none of this: there the user's interpreter
//! is already running (see `extension.rs`).

use std::ffi::{CStr, CString};
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};

use pyo3::ffi;
use pyo3::prelude::*;

/// The Python executable the interpreter presents itself as (`sys.executable`), if a real one
/// can be found: the virtualenv's, else the one the binary was built against, else the one that
/// belongs to the libpython actually loaded (the build's Python may be invisible at run time,
/// e.g. pyenv under /root behind systemd's `ProtectHome=`, and Debian's libpython loads).
fn executable(virtualenv: Option<&Path>) -> Option<PathBuf> {
    if let Some(v) = virtualenv {
        return Some(
            std::path::absolute(v.join("bin").join("python")).unwrap_or(v.join("bin/python")),
        );
    }
    let built = PathBuf::from(crate::PYTHON_EXECUTABLE);
    if built.is_file() {
        return Some(built);
    }
    // Only the interpreter of the installation the loaded libpython belongs to: mixing one
    // installation's library with another's standard library is not an option.
    let lib = loaded_libpython()?;
    let dir = lib.parent()?;
    let prefix = if dir.parent().is_some_and(|p| p.ends_with("lib")) {
        // Debian's multiarch layout: /usr/lib/x86_64-linux-gnu/libpython3.11.so
        dir.parent()?.parent()?
    } else {
        dir.parent()?
    };
    let exe = prefix
        .join("bin")
        .join(format!("python{}", super::venv::runtime_version()));
    exe.is_file().then_some(exe)
}

/// The path of the libpython this process loaded (None when Python is linked statically, as
/// in an interpreter that loaded the extension module).
pub fn loaded_libpython() -> Option<PathBuf> {
    // SAFETY: dladdr only reads the loader's tables for an address inside libpython.
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        let addr = ffi::Py_IsInitialized as *const std::ffi::c_void;
        if libc::dladdr(addr, &mut info) == 0 || info.dli_fname.is_null() {
            return None;
        }
        let p = CStr::from_ptr(info.dli_fname)
            .to_string_lossy()
            .into_owned();
        if !p.contains("libpython") {
            return None;
        }
        std::fs::canonicalize(&p).ok().or(Some(PathBuf::from(p)))
    }
}

fn status_error(status: ffi::PyStatus) -> Option<String> {
    // SAFETY: reading the plain-data status returned by CPython.
    unsafe {
        if ffi::PyStatus_Exception(status) == 0 {
            return None;
        }
        let msg = if status.err_msg.is_null() {
            "unknown error".to_string()
        } else {
            CStr::from_ptr(status.err_msg)
                .to_string_lossy()
                .into_owned()
        };
        Some(msg)
    }
}

/// Starts the interpreter (a no-op if it runs already) and releases the GIL: every later use
/// goes through `Python::attach`.
pub fn start(virtualenv: Option<&Path>, argv: &[String]) -> Result<(), String> {
    let exe = executable(virtualenv);
    let exe_c = match &exe {
        Some(p) => Some(
            CString::new(p.to_string_lossy().into_owned())
                .map_err(|_| "the Python executable path contains a NUL byte".to_string())?,
        ),
        None => None,
    };
    let args: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_str()).unwrap_or_default())
        .collect();
    let mut arg_ptrs: Vec<*const std::ffi::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    // SAFETY: standard PyConfig initialisation sequence; every pointer outlives the calls.
    unsafe {
        if ffi::Py_IsInitialized() != 0 {
            return Ok(());
        }
        let mut config = MaybeUninit::<ffi::PyConfig>::uninit();
        ffi::PyConfig_InitPythonConfig(config.as_mut_ptr());
        let config = config.assume_init_mut();
        config.install_signal_handlers = 0;
        config.parse_argv = 0;
        let mut result = match &exe_c {
            Some(exe) => status_error(ffi::PyConfig_SetBytesString(
                config,
                &mut config.executable,
                exe.as_ptr(),
            )),
            None => None,
        };
        if result.is_none() {
            result = status_error(ffi::PyConfig_SetBytesArgv(
                config,
                arg_ptrs.len() as ffi::Py_ssize_t,
                arg_ptrs.as_mut_ptr(),
            ));
        }
        if result.is_none() {
            result = status_error(ffi::Py_InitializeFromConfig(config));
        }
        ffi::PyConfig_Clear(config);
        if let Some(e) = result {
            return Err(format!("cannot start the Python interpreter: {e}"));
        }
        // Release the GIL taken by initialisation.
        ffi::PyEval_SaveThread();
    }
    if exe.is_none() {
        // No real Python executable exists here: say so the documented way instead of
        // pointing at ferricorn or at a path that does not exist.
        Python::attach(|py| py.import("sys")?.setattr("executable", ""))
            .map_err(|e| format!("cannot set sys.executable: {e}"))?;
    }
    Ok(())
}

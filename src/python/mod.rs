//! The embedded CPython: starting the interpreter in a worker, virtualenvs, loading the app.
//!
//! The interpreter is started with an explicit `PyConfig` rather than `Py_Initialize()`, so that
//! `sys.executable` is a real Python (the build's, or the virtualenv's `bin/python`) and a
//! virtualenv is activated the way CPython itself does it (`pyvenv.cfg` next to the executable):
//! its site-packages are importable whatever `PATH` says. Only workers start Python; the master
//! never does (it forks), except for the one-shot `--check-config`.

use std::ffi::{CStr, CString};
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyModule};

use crate::config::Config;

/// `APP_MODULE`: `module:callable`, `module`, or `module:factory(args)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSpec {
    pub module: String,
    pub expr: String,
}

impl AppSpec {
    pub fn parse(s: &str) -> Result<AppSpec, String> {
        let (module, expr) = match s.split_once(':') {
            Some((m, e)) => (m.trim(), e.trim()),
            None => (s.trim(), "application"),
        };
        let ident_ok = |p: &str| {
            let mut c = p.chars();
            c.next().is_some_and(|f| f.is_alphabetic() || f == '_')
                && c.all(|ch| ch.is_alphanumeric() || ch == '_')
        };
        if module.is_empty() || !module.split('.').all(ident_ok) {
            return Err(format!(
                "'{s}' is not an app module: expected module:callable, module or \
                 module:factory() (module being a dotted Python name)"
            ));
        }
        if expr.is_empty() {
            return Err(format!("'{s}' names no callable after ':'"));
        }
        Ok(AppSpec {
            module: module.to_string(),
            expr: expr.to_string(),
        })
    }
}

/// Refuses a virtualenv that is not one, or that was made by another Python version.
pub fn check_virtualenv(dir: &Path) -> Result<(), String> {
    let cfg_path = dir.join("pyvenv.cfg");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| {
        format!(
            "virtualenv {}: cannot read {} ({e}); is it a virtualenv?",
            dir.display(),
            cfg_path.display()
        )
    })?;
    let version = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| matches!(k.trim(), "version" | "version_info"))
        .map(|(_, v)| v.trim().to_string())
        .ok_or_else(|| {
            format!(
                "virtualenv {}: pyvenv.cfg names no Python version",
                dir.display()
            )
        })?;
    let minor: String = version.split('.').take(2).collect::<Vec<_>>().join(".");
    if minor != crate::PYTHON_VERSION {
        return Err(format!(
            "virtualenv {} was created with Python {version}, but ferricorn embeds Python {} \
             ({}); recreate the virtualenv with that Python",
            dir.display(),
            crate::PYTHON_VERSION,
            crate::PYTHON_EXECUTABLE
        ));
    }
    Ok(())
}

/// The Python executable the interpreter presents itself as (`sys.executable`), if a real one
/// can be found: the virtualenv's, else the one the binary was built against, else the one that
/// belongs to the libpython actually loaded (the build's Python may be invisible at run time,
/// e.g. pyenv under /root behind systemd's `ProtectHome=`, and Debian's libpython loads).
fn executable(cfg: &Config) -> Option<PathBuf> {
    if let Some(v) = &cfg.virtualenv {
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
        .join(format!("python{}", crate::PYTHON_VERSION));
    exe.is_file().then_some(exe)
}

/// The path of the libpython this process loaded.
fn loaded_libpython() -> Option<PathBuf> {
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

/// Starts the interpreter (once per process) and prepares `sys.path`.
pub fn init(cfg: &Config, argv: &[String]) -> Result<(), String> {
    let exe = executable(cfg);
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
        // Release the GIL taken by initialisation; every use goes through Python::attach.
        ffi::PyEval_SaveThread();
    }
    let cwd = std::env::current_dir()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    Python::attach(|py| -> PyResult<()> {
        if exe.is_none() {
            // No real Python executable exists here: say so the documented way instead of
            // pointing at ferricorn or at a path that does not exist.
            py.import("sys")?.setattr("executable", "")?;
        }
        let loader = loader(py)?;
        loader.call_method1("setup_path", (cwd, PyList::new(py, &cfg.pythonpath)?))?;
        Ok(())
    })
    .map_err(|e| format!("cannot prepare sys.path: {e}"))
}

fn loader(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    let sys = py.import("sys")?;
    let modules = sys.getattr("modules")?.cast_into::<PyDict>()?;
    if let Some(m) = modules.get_item("_ferricorn_loader")? {
        return Ok(m.cast_into::<PyModule>()?);
    }
    let m = PyModule::from_code(
        py,
        c_str(include_str!("loader.py")).as_c_str(),
        c"ferricorn/loader.py",
        c"_ferricorn_loader",
    )?;
    modules.set_item("_ferricorn_loader", &m)?;
    Ok(m)
}

fn c_str(s: &str) -> CString {
    CString::new(s).expect("embedded source has no NUL")
}

/// Why an app could not be loaded.
#[derive(Debug)]
pub struct LoadError {
    /// One line, e.g. `ModuleNotFoundError: No module named 'nosuch'`.
    pub reason: String,
    /// The Python traceback (empty for errors found without importing anything).
    pub traceback: String,
}

/// Imports the app module and returns the WSGI callable.
pub fn load_app(spec: &str) -> Result<Py<PyAny>, LoadError> {
    let spec = AppSpec::parse(spec).map_err(|reason| LoadError {
        reason,
        traceback: String::new(),
    })?;
    Python::attach(|py| {
        let loader = loader(py).map_err(|e| describe(py, &e))?;
        loader
            .call_method1("load_app", (spec.module.as_str(), spec.expr.as_str()))
            .map(Bound::unbind)
            .map_err(|e| describe(py, &e))
    })
}

fn describe(py: Python<'_>, err: &PyErr) -> LoadError {
    let reason = loader(py)
        .and_then(|l| l.call_method1("describe", (err.value(py),)))
        .and_then(|s| s.extract::<String>())
        .unwrap_or_else(|_| err.to_string());
    LoadError {
        reason,
        traceback: format_traceback(py, err),
    }
}

/// `traceback.format_exception(err)` as one string.
pub fn format_traceback(py: Python<'_>, err: &PyErr) -> String {
    let fmt = || -> PyResult<String> {
        let tb = py.import("traceback")?;
        let lines = tb.call_method1(
            "format_exception",
            (err.get_type(py), err.value(py), err.traceback(py)),
        )?;
        Ok(lines.extract::<Vec<String>>()?.concat())
    };
    fmt().unwrap_or_else(|_| err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_spec_forms() {
        assert_eq!(
            AppSpec::parse("hello:app").unwrap(),
            AppSpec {
                module: "hello".into(),
                expr: "app".into()
            }
        );
        assert_eq!(AppSpec::parse("pkg.mod").unwrap().expr, "application");
        assert_eq!(
            AppSpec::parse("f:create_app('x')").unwrap().expr,
            "create_app('x')"
        );
        assert!(AppSpec::parse("no-dash:app").is_err());
        assert!(AppSpec::parse(":app").is_err());
        assert!(AppSpec::parse("mod:").is_err());
        assert!(AppSpec::parse("1mod:app").is_err());
    }

    #[test]
    fn virtualenv_version_is_checked() {
        let d = tempfile::tempdir().unwrap();
        assert!(
            check_virtualenv(d.path())
                .unwrap_err()
                .contains("pyvenv.cfg")
        );
        std::fs::write(d.path().join("pyvenv.cfg"), "home = /x\nversion = 2.7.18\n").unwrap();
        let e = check_virtualenv(d.path()).unwrap_err();
        assert!(
            e.contains("2.7.18") && e.contains(crate::PYTHON_VERSION),
            "{e}"
        );
        std::fs::write(
            d.path().join("pyvenv.cfg"),
            format!("home = /x\nversion = {}.4\n", crate::PYTHON_VERSION),
        )
        .unwrap();
        check_virtualenv(d.path()).unwrap();
    }
}

//! CPython in ferricorn: one interpreter, started in the master before any worker forks.
//!
//! Two ways in, one code path after them:
//! - the standalone binary (the `.deb`, `cargo run`) links libpython and starts the embedded
//!   interpreter itself (`embed.rs`: `PyConfig`, `sys.executable`, the virtualenv);
//! - the wheel is an extension module (`crate::extension`): the user's interpreter is already
//!   running, its virtualenv is the one the app imports from, and nothing links a libpython
//!   (Debian's `python3.11` has Python linked in statically).
//!
//! Either way the master runs with the GIL released and never imports the app; workers are
//! forked through CPython's fork protocol (`fork.rs`), and each sets up `sys.path` for its
//! generation's configuration after the fork, then imports the app (`app.rs`).

pub mod app;
pub mod conffile;
mod embed;
pub mod fork;
pub mod venv;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

pub use app::{AppSpec, LoadError, format_traceback, load_app, module_files};
pub use fork::fork;
pub use venv::check_virtualenv;

use crate::config::Config;

/// Set by the extension module's entry point: the interpreter is the user's, not ours.
static EXTENSION: AtomicBool = AtomicBool::new(false);
/// The wheel's `ferricorn` script (or the binary) this process was started from.
static LAUNCHER: OnceLock<Option<PathBuf>> = OnceLock::new();
/// The virtualenv the master's interpreter serves from, fixed once it started.
static VIRTUALENV: OnceLock<Option<PathBuf>> = OnceLock::new();
/// The interpreter's standard library directory, which a worker's user must be able to read.
static STDLIB: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Called by the extension module before anything else: records that Python runs already and
/// where the command was started from (`argv[0]`, made absolute before any `--chdir`).
pub fn enter_extension(argv0: &str) {
    EXTENSION.store(true, Ordering::SeqCst);
    let p = Path::new(argv0);
    let launcher =
        (argv0.contains('/') && p.file_name().is_some_and(|n| n == "ferricorn") && p.is_file())
            .then(|| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()));
    let _ = LAUNCHER.set(launcher);
}

/// Whether ferricorn runs as the wheel's extension module inside the user's interpreter.
pub fn is_extension() -> bool {
    EXTENSION.load(Ordering::SeqCst)
}

/// A free-threaded CPython (`python3.13t`) is refused: the server relies on the GIL.
fn refuse_free_threaded() -> Result<(), String> {
    if cfg!(Py_GIL_DISABLED) {
        return Err(format!(
            "free-threaded Python ({}t) is not supported; use a regular build of CPython",
            venv::runtime_version()
        ));
    }
    Ok(())
}

/// The command line the interpreter's `sys.argv` is made from (the standalone binary).
static ARGV: OnceLock<Vec<String>> = OnceLock::new();

/// Records the command line before anything may start the interpreter.
pub fn set_argv(argv: &[String]) {
    let _ = ARGV.set(argv.to_vec());
}

/// Starts the interpreter if it has not started yet (a no-op after the first call): the
/// embedded one with `virtualenv` in force, or, in the wheel, the user's, which runs already.
/// Running a Python config file needs it before the configuration is complete.
pub fn boot(virtualenv: Option<&Path>) -> Result<(), String> {
    static BOOTED: OnceLock<Result<(), String>> = OnceLock::new();
    BOOTED
        .get_or_init(|| {
            refuse_free_threaded()?;
            if let Some(v) = virtualenv {
                check_virtualenv(v)?;
            }
            if !is_extension() {
                let argv = ARGV
                    .get()
                    .cloned()
                    .unwrap_or_else(|| vec!["ferricorn".into()]);
                embed::start(virtualenv, &argv)?;
                let _ = VIRTUALENV.set(virtualenv.map(venv::normalize));
            }
            // The loader (and the standard modules it uses) is compiled once here, not per
            // worker.
            let stdlib = Python::attach(|py| -> PyResult<PathBuf> {
                app::loader(py)?;
                py.import("sysconfig")?
                    .call_method1("get_path", ("stdlib",))?
                    .extract()
            })
            .map_err(|e| format!("cannot prepare the interpreter: {e}"))?;
            let _ = STDLIB.set(Some(stdlib));
            Ok(())
        })
        .clone()
}

/// Starts (or, in the wheel, adopts) the interpreter in the master, with the configured
/// virtualenv in force, and leaves the GIL released. Once per process.
pub fn start(cfg: &Config, argv: &[String]) -> Result<(), String> {
    set_argv(argv);
    boot(cfg.virtualenv.as_deref())?;
    if is_extension() {
        adopt(cfg)?;
        let _ = VIRTUALENV.set(cfg.virtualenv.as_deref().map(venv::normalize));
    } else if let Some(started) = VIRTUALENV.get() {
        // The interpreter started for a Python config file, with the virtualenv known before
        // it ran; the file cannot move it.
        let wanted = cfg.virtualenv.as_deref().map(venv::normalize);
        if &wanted != started {
            let show = |v: &Option<PathBuf>| match v {
                Some(p) => p.display().to_string(),
                None => "none".to_string(),
            };
            return Err(format!(
                "the Python config file sets virtualenv = {}, but the standalone binary's \
                 interpreter starts before the file runs (with {}): give --virtualenv on the \
                 command line or set VIRTUAL_ENV, or install ferricorn into the virtualenv \
                 (pip) and run its ferricorn",
                show(&wanted),
                show(started)
            ));
        }
    }
    Ok(())
}

/// The wheel: the interpreter is the user's. A `--virtualenv` other than its own (same Python
/// version, checked already) has its site-packages added, as `site` does for the own one.
fn adopt(cfg: &Config) -> Result<(), String> {
    let Some(v) = &cfg.virtualenv else {
        return Ok(());
    };
    let v = venv::normalize(v);
    Python::attach(|py| -> PyResult<()> {
        let sys = py.import("sys")?;
        let prefix: PathBuf = sys.getattr("prefix")?.extract()?;
        if venv::normalize(&prefix) != v {
            let dir = venv::site_packages(&v, &venv::runtime_version());
            tracing::info!(
                "Adding {} (--virtualenv) to the interpreter of {}",
                dir.display(),
                prefix.display()
            );
            py.import("site")?.call_method1("addsitedir", (dir,))?;
        }
        Ok(())
    })
    .map_err(|e| format!("--virtualenv {}: {e}", v.display()))
}

/// [`start`], then [`setup_worker`]: for one-shot uses in a single process (`--check-config`,
/// the micro-benchmark).
pub fn init(cfg: &Config, argv: &[String]) -> Result<(), String> {
    start(cfg, argv)?;
    setup_worker(cfg)
}

/// In a freshly forked worker (after `--user`): `os.environ` as the master left the process
/// environment for this generation (the interpreter's copy dates from the master's start),
/// and `sys.path` for this generation's configuration (Gunicorn's order: `--pythonpath`
/// entries, then the working directory, before the rest).
pub fn setup_worker(cfg: &Config) -> Result<(), String> {
    if let Some(Some(stdlib)) = STDLIB.get() {
        let need = nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::X_OK;
        if let Err(e) = nix::unistd::access(stdlib, need) {
            return Err(format!(
                "Python's standard library {} cannot be read by uid {} ({e}); with --user, \
                 use a Python that user can read (e.g. the system's, in a virtualenv)",
                stdlib.display(),
                nix::unistd::geteuid()
            ));
        }
    }
    let cwd = std::env::current_dir()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    Python::attach(|py| -> PyResult<()> {
        let loader = app::loader(py)?;
        sync_environ_with(py, &loader)?;
        loader.call_method1("setup_path", (cwd, PyList::new(py, &cfg.pythonpath)?))?;
        Ok(())
    })
    .map_err(|e| format!("cannot prepare sys.path: {e}"))
}

/// `os.environ` made the process environment (as the master left it for this generation).
pub fn sync_environ() -> Result<(), String> {
    Python::attach(|py| sync_environ_with(py, &app::loader(py)?))
        .map_err(|e| format!("cannot prepare os.environ: {e}"))
}

fn sync_environ_with(py: Python<'_>, loader: &Bound<'_, pyo3::types::PyModule>) -> PyResult<()> {
    let env = PyDict::new(py);
    for (k, v) in std::env::vars_os() {
        env.set_item(
            PyBytes::new(py, k.as_encoded_bytes()),
            PyBytes::new(py, v.as_encoded_bytes()),
        )?;
    }
    loader.call_method1("sync_environ", (env,))?;
    Ok(())
}

/// The app `--preload` imported in the master (the workers forked from it share it).
static PRELOADED: OnceLock<Py<PyAny>> = OnceLock::new();

/// `--preload`: imports the app in this process (the master), once.
pub fn preload_app(spec: &str) -> Result<(), LoadError> {
    let app = load_app(spec)?;
    let _ = PRELOADED.set(app);
    Ok(())
}

/// The app `--preload` imported before this worker was forked, if any.
pub fn preloaded_app() -> Option<Py<PyAny>> {
    let app = PRELOADED.get()?;
    Some(Python::attach(|py| app.clone_ref(py)))
}

/// A reload (HUP) cannot move the master's interpreter to another virtualenv: refused, naming
/// the way that can (USR2 starts a new master, which reads the new configuration).
pub fn check_reload(cfg: &Config) -> Result<(), String> {
    let Some(started) = VIRTUALENV.get() else {
        return Ok(());
    };
    let new = cfg.virtualenv.as_deref().map(venv::normalize);
    if &new == started {
        return Ok(());
    }
    let show = |v: &Option<PathBuf>| match v {
        Some(p) => p.display().to_string(),
        None => "none".to_string(),
    };
    Err(format!(
        "--virtualenv changed ({} -> {}): the master's interpreter keeps the virtualenv it \
         started with; send USR2 to start a new master with the new one",
        show(started),
        show(&new)
    ))
}

/// What USR2 executes to start the new master: the binary itself, or, from the wheel, the
/// virtualenv's interpreter with `-m ferricorn` (`/proc/self/exe` would name the base
/// interpreter the venv's `python` links to, and lose the virtualenv).
pub fn upgrade_command(argv: &[String]) -> (PathBuf, Vec<String>) {
    let exe = if is_extension() {
        Python::attach(|py| -> PyResult<PathBuf> {
            py.import("sys")?.getattr("executable")?.extract()
        })
        .ok()
        .filter(|p| !p.as_os_str().is_empty())
    } else {
        None
    };
    match exe {
        Some(python) => {
            let mut args = vec![
                python.display().to_string(),
                "-m".to_string(),
                "ferricorn".to_string(),
            ];
            args.extend(argv.iter().skip(1).cloned());
            (python, args)
        }
        None => (
            std::env::current_exe()
                .unwrap_or_else(|_| PathBuf::from(argv.first().map_or("ferricorn", |s| s))),
            argv.to_vec(),
        ),
    }
}

/// The executable this ferricorn was started as: the wheel's `ferricorn` script (the one next
/// to `sys.executable` when started with `python -m ferricorn`), or the binary.
pub fn launcher() -> Option<PathBuf> {
    if !is_extension() {
        return std::env::current_exe().ok();
    }
    if let Some(Some(p)) = LAUNCHER.get() {
        return Some(p.clone());
    }
    Python::attach(|py| -> PyResult<PathBuf> { py.import("sys")?.getattr("executable")?.extract() })
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("ferricorn")))
        .filter(|p| p.is_file())
}

/// The Python this process runs on, for `--version` and the start-up log: the version
/// (`sys.version`) and where it comes from (the libpython linked, or `sys.executable`).
pub fn describe_runtime() -> String {
    let version = venv::runtime_version_full();
    let origin = if is_extension() {
        Python::attach(|py| -> PyResult<String> {
            py.import("sys")?.getattr("executable")?.extract()
        })
        .unwrap_or_default()
    } else {
        embed::loaded_libpython()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "libpython".to_string())
    };
    format!("Python {version}, {origin}")
}

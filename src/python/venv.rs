//! Virtualenvs: which Python made one, and whether this process can serve from it.
//!
//! A virtualenv belongs to one `major.minor` of CPython (its `pyvenv.cfg` says which), and the
//! Python this process runs is fixed before any config is read: the libpython the standalone
//! binary links, or the interpreter that imported the extension module. Both are read from
//! `Py_GetVersion()`, which CPython allows before the interpreter starts.

use std::ffi::CStr;
use std::path::{Path, PathBuf};

use pyo3::ffi;

/// `Py_GetVersion()` on one line: `3.11.7 (main, May  9 2026, 07:35:25) [GCC 12.2.0]`.
pub fn runtime_version_full() -> String {
    // SAFETY: Py_GetVersion returns a static string and may be called before initialisation.
    let v = unsafe { CStr::from_ptr(ffi::Py_GetVersion()) };
    v.to_string_lossy()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// `major.minor` of the Python this process runs, e.g. `3.11`.
pub fn runtime_version() -> String {
    minor_of(runtime_version_full().split(' ').next().unwrap_or(""))
}

fn minor_of(version: &str) -> String {
    version.split('.').take(2).collect::<Vec<_>>().join(".")
}

/// The Python version a virtualenv was made with (`version` or `version_info` in pyvenv.cfg).
pub fn virtualenv_version(dir: &Path) -> Result<String, String> {
    let cfg_path = dir.join("pyvenv.cfg");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| {
        format!(
            "virtualenv {}: cannot read {} ({e}); is it a virtualenv?",
            dir.display(),
            cfg_path.display()
        )
    })?;
    text.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| matches!(k.trim(), "version" | "version_info"))
        .map(|(_, v)| v.trim().to_string())
        .ok_or_else(|| {
            format!(
                "virtualenv {}: pyvenv.cfg names no Python version",
                dir.display()
            )
        })
}

/// Refuses a virtualenv that is not one, or that was made by another Python version than the
/// one this process runs.
pub fn check_virtualenv(dir: &Path) -> Result<(), String> {
    check_against(dir, &runtime_version())
}

fn check_against(dir: &Path, runtime: &str) -> Result<(), String> {
    let version = virtualenv_version(dir)?;
    if minor_of(&version) != runtime {
        return Err(format!(
            "virtualenv {dir} was created with Python {version}, but this ferricorn runs on \
             Python {runtime}; install ferricorn into the virtualenv ({dir}/bin/pip install \
             ferricorn) and run {dir}/bin/ferricorn, or recreate it with Python {runtime}",
            dir = dir.display(),
        ));
    }
    Ok(())
}

/// A virtualenv path as it is compared across reloads: absolute, symlinks resolved if it exists.
pub fn normalize(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir)
        .or_else(|_| std::path::absolute(dir))
        .unwrap_or_else(|_| dir.to_path_buf())
}

/// Where a POSIX virtualenv keeps its packages: `DIR/lib/pythonX.Y/site-packages`.
pub fn site_packages(dir: &Path, minor: &str) -> PathBuf {
    dir.join("lib")
        .join(format!("python{minor}"))
        .join("site-packages")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtualenv_version_is_checked() {
        let d = tempfile::tempdir().unwrap();
        assert!(
            check_against(d.path(), "3.11")
                .unwrap_err()
                .contains("pyvenv.cfg")
        );
        std::fs::write(d.path().join("pyvenv.cfg"), "home = /x\nversion = 2.7.18\n").unwrap();
        let e = check_against(d.path(), "3.11").unwrap_err();
        assert!(e.contains("2.7.18") && e.contains("3.11"), "{e}");
        assert!(e.contains("bin/pip install ferricorn"), "{e}");
        std::fs::write(
            d.path().join("pyvenv.cfg"),
            "home = /x\nversion_info = 3.11.4\n",
        )
        .unwrap();
        check_against(d.path(), "3.11").unwrap();
        assert!(check_against(d.path(), "3.12").is_err());
    }

    #[test]
    fn runtime_version_is_the_linked_python() {
        // Readable without starting the interpreter (the unit tests never start it).
        let v = runtime_version();
        assert_eq!(v, crate::PYTHON_VERSION, "{}", runtime_version_full());
        assert!(runtime_version_full().starts_with(&format!("{v}.")));
    }
}

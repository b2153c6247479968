//! Loading the app inside a worker: `APP_MODULE` parsed, the module imported, the callable
//! found (or a factory called), and failures explained in one line for the master.
//!
//! The Python side of it is `loader.py`, compiled once per process as `_ferricorn_loader`.

use std::ffi::CString;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyModule};

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

pub(crate) fn loader(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
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

/// The source files of every module imported in this process (`--reload` watches them).
pub fn module_files() -> Vec<std::path::PathBuf> {
    Python::attach(|py| {
        loader(py)
            .and_then(|l| l.call_method0("module_files"))
            .and_then(|f| f.extract())
            .unwrap_or_default()
    })
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
}

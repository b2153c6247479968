//! Running a Python config file (`gunicorn.conf.py`, `-c python:MODULE`) in the master's
//! interpreter, for the configuration (`config::pyfile` decides what its names mean).
//!
//! The standalone binary starts its interpreter here if it has not started yet: with the
//! virtualenv known before the file runs (flags, `GUNICORN_CMD_ARGS`, `VIRTUAL_ENV`), since
//! the interpreter's virtualenv is fixed when it starts; `python::start` refuses a file that
//! names another one. The file's server hooks are kept as [`Callables`] inside the
//! configuration's [`HookSet`].

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyModule, PyTuple};

use crate::config::{HOOKS, HookSet, PyFile, PyName, PySource, PyValue};

/// The server hooks of one Python config file, by name.
pub struct Callables(pub Vec<(&'static str, Py<PyAny>)>);

impl Callables {
    pub fn get(&self, name: &str) -> Option<&Py<PyAny>> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, f)| f)
    }
}

fn runner(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    let sys = py.import("sys")?;
    let modules = sys.getattr("modules")?.cast_into::<PyDict>()?;
    if let Some(m) = modules.get_item("_ferricorn_conffile")? {
        return Ok(m.cast_into::<PyModule>()?);
    }
    let code = CString::new(include_str!("conffile.py")).expect("no NUL in the source");
    let m = PyModule::from_code(
        py,
        code.as_c_str(),
        c"ferricorn/conffile.py",
        c"_ferricorn_conffile",
    )?;
    modules.set_item("_ferricorn_conffile", &m)?;
    Ok(m)
}

/// The number of positional arguments of a hook, from its signature in the table.
fn arity(signature: &str) -> usize {
    let args = signature
        .split_once('(')
        .map(|(_, a)| a.trim_end_matches(')'))
        .unwrap_or("");
    args.split(',').filter(|a| !a.trim().is_empty()).count()
}

/// Runs the file (the [`crate::config::PyReader`] the server's checks give the
/// configuration).
pub fn read(src: &PySource, virtualenv: Option<&Path>) -> Result<PyFile, String> {
    super::boot(virtualenv)?;
    Python::attach(|py| run(py, src))
}

fn run(py: Python<'_>, src: &PySource) -> Result<PyFile, String> {
    let fail = |e: PyErr| {
        let tb = super::format_traceback(py, &e);
        format!(
            "{src}: the config file raised an exception:\n{}",
            tb.trim_end()
        )
    };
    let r = runner(py).map_err(|e| format!("cannot prepare the config file runner: {e}"))?;
    let module = match src {
        PySource::File(p) => r.call_method1("run_file", (p.as_path(),)),
        PySource::Module(m) => r.call_method1("run_module", (m.as_str(),)),
    }
    .map_err(fail)?;
    let path: Option<PathBuf> = match src {
        PySource::File(p) => Some(p.clone()),
        PySource::Module(_) => module
            .getattr("__file__")
            .ok()
            .and_then(|f| f.extract::<PathBuf>().ok()),
    };
    let shown = path
        .clone()
        .unwrap_or_else(|| PathBuf::from(src.to_string()));
    let hooks = PyDict::new(py);
    for h in HOOKS {
        hooks
            .set_item(h.name, arity(h.signature))
            .map_err(|e| e.to_string())?;
    }
    let listed = r
        .call_method1("names", (&module, path.as_deref(), &hooks))
        .map_err(|e| {
            let config_error = r.getattr("ConfigError").ok();
            if let Some(ce) = config_error
                && e.is_instance(py, &ce)
                && let Ok((name, msg)) = e
                    .value(py)
                    .getattr("args")
                    .and_then(|a| a.extract::<(String, String)>())
            {
                let lines = r
                    .call_method1("assigned_lines", (path.as_deref(),))
                    .ok()
                    .and_then(|l| l.get_item(&name).ok())
                    .and_then(|l| l.extract::<usize>().ok());
                return match lines {
                    Some(l) => format!("{}:{l}: `{name}`: {msg}", shown.display()),
                    None => format!("{}: `{name}`: {msg}", shown.display()),
                };
            }
            fail(e)
        })?;
    let (entries, found): (Bound<'_, PyList>, Bound<'_, PyDict>) =
        listed.extract().map_err(|e: PyErr| e.to_string())?;
    let mut names = Vec::new();
    let mut defined = Vec::new();
    let mut callables = Vec::new();
    for item in entries.iter() {
        let t = item.cast_into::<PyTuple>().map_err(|e| e.to_string())?;
        let name: String = t
            .get_item(0)
            .and_then(|v| v.extract())
            .map_err(|e| e.to_string())?;
        let line: Option<usize> = t
            .get_item(1)
            .and_then(|v| v.extract())
            .map_err(|e| e.to_string())?;
        let kind: String = t
            .get_item(2)
            .and_then(|v| v.extract())
            .map_err(|e| e.to_string())?;
        let value = t.get_item(3).map_err(|e| e.to_string())?;
        if kind == "hook" {
            let h = HOOKS.iter().find(|h| h.name == name).expect("a hook name");
            let f = found
                .get_item(&name)
                .ok()
                .flatten()
                .ok_or_else(|| format!("{name}: hook lost"))?;
            defined.push((h.name, line));
            callables.push((h.name, f.unbind()));
        }
        let value = match kind.as_str() {
            "hook" | "callable" => PyValue::Callable,
            "none" => PyValue::None,
            "module" => PyValue::Module,
            "str" => PyValue::Text(value.extract().map_err(|e: PyErr| e.to_string())?),
            "other" => PyValue::Other(
                value
                    .get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_else(|_| "object".into()),
            ),
            _ => match to_toml(&value) {
                Ok(v) => PyValue::Value(v),
                Err(t) => PyValue::Other(t),
            },
        };
        names.push(PyName { name, line, value });
    }
    Ok(PyFile {
        path: shown,
        names,
        hooks: HookSet::new(defined, Arc::new(Callables(callables))),
    })
}

/// A Python value as TOML data; `Err` names the type that has no TOML form.
fn to_toml(v: &Bound<'_, PyAny>) -> Result<toml::Value, String> {
    let type_name = || {
        v.get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "object".into())
    };
    if let Ok(b) = v.cast::<pyo3::types::PyBool>() {
        return Ok(toml::Value::Boolean(b.is_true()));
    }
    if v.is_instance_of::<pyo3::types::PyInt>() {
        return v
            .extract::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| "int (too large)".to_string());
    }
    if let Ok(f) = v.extract::<f64>()
        && v.is_instance_of::<pyo3::types::PyFloat>()
    {
        return Ok(toml::Value::Float(f));
    }
    if let Ok(s) = v.extract::<String>() {
        return Ok(toml::Value::String(s));
    }
    if let Ok(d) = v.cast::<PyDict>() {
        let mut t = toml::Table::new();
        for (k, val) in d.iter() {
            let k: String = k
                .extract()
                .map_err(|_| "dict with keys that are not str".to_string())?;
            if val.is_none() {
                continue;
            }
            t.insert(k, to_toml(&val)?);
        }
        return Ok(toml::Value::Table(t));
    }
    if v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>() {
        let items: Vec<Bound<'_, PyAny>> = v.extract().map_err(|_| type_name())?;
        return items
            .iter()
            .map(to_toml)
            .collect::<Result<Vec<_>, _>>()
            .map(toml::Value::Array);
    }
    Err(type_name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_arity_comes_from_the_signature() {
        assert_eq!(arity("on_starting(server)"), 1);
        assert_eq!(arity("nworkers_changed(server, new_value, old_value)"), 3);
        assert_eq!(arity("post_request(worker, req, environ, resp)"), 4);
    }
}

//! Python config files (`gunicorn.conf.py`, `-c python:MODULE`) as the configuration sees
//! them: the names the file defined, each with the line that assigns it and its value as
//! plain data, and its server hooks, held opaquely ([`HookSet`]).
//!
//! Running the file is Python's business (`python::conffile` executes it in the master's
//! interpreter, as Gunicorn executes it: a module namespace with `__file__` set); this
//! module decides what its names mean, with errors that name the file, the line and the
//! setting:
//! - a name that is one of Gunicorn's settings (or ferricorn's own `virtualenv`) sets it;
//!   a value of the wrong type is an error;
//! - a name that is a server hook must be a callable (checked with its arity by the Python
//!   side); a hook ferricorn refuses (`ssl_context`, the dirty-arbiter ones) is an error;
//! - any other name is ignored, as in Gunicorn (a config file has helpers: `import
//!   multiprocessing`, `PORT = os.environ[...]`), except one that looks like a misspelt
//!   setting (`wokers = 4`, `keep_alive = 5`), which is an error naming the setting it
//!   resembles; the ignored lower-case names are listed in one info line.

use std::any::Any;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use super::file::FileLayer;
use super::spec::{Spec, Status};
use super::{HOOKS, Layer, SETTINGS};

/// Where a Python config file comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PySource {
    /// `-c gunicorn.conf.py`, `./gunicorn.conf.py` (absolute).
    File(PathBuf),
    /// `-c python:MODULE`.
    Module(String),
}

impl fmt::Display for PySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PySource::File(p) => write!(f, "{}", p.display()),
            PySource::Module(m) => write!(f, "python:{m}"),
        }
    }
}

/// A value a Python config file bound to a name, as plain data.
#[derive(Debug, Clone, PartialEq)]
pub enum PyValue {
    /// A number, a boolean, a list or a dict (their items converted the same way).
    Value(toml::Value),
    /// A `str`: a string setting's value, or the text of a number or boolean (Gunicorn's
    /// validators accept `workers = "4"` and `preload_app = "true"`).
    Text(String),
    /// `None`: the setting keeps its default (as Gunicorn's `None` does for most settings).
    None,
    /// A function, class or other callable; a server hook when the name is one.
    Callable,
    /// A module (`import multiprocessing`).
    Module,
    /// Anything else: the Python type's name.
    Other(String),
}

/// One top-level name of a Python config file.
#[derive(Debug, Clone)]
pub struct PyName {
    pub name: String,
    /// The last line of the file that assigns it, if it is assigned there (not imported
    /// with `from x import *`).
    pub line: Option<usize>,
    pub value: PyValue,
}

/// A Python config file, run: where it is, its names, and its server hooks.
#[derive(Debug, Clone)]
pub struct PyFile {
    /// The file (a module's `__file__`), for messages.
    pub path: PathBuf,
    pub names: Vec<PyName>,
    pub hooks: HookSet,
}

/// Runs a Python config file (given by the commands that load a configuration, so that
/// `config` itself needs no interpreter): the source, and the virtualenv known before the
/// file runs (the standalone binary starts its interpreter with it).
pub type PyReader = fn(&PySource, Option<&std::path::Path>) -> Result<PyFile, String>;

/// The server hooks a Python config file defined: their names (with the line of each) and
/// the callables, held by the module that ran the file (opaque here).
#[derive(Clone, Default)]
pub struct HookSet {
    pub defined: Vec<(&'static str, Option<usize>)>,
    held: Option<Arc<dyn Any + Send + Sync>>,
}

impl HookSet {
    pub fn new(
        defined: Vec<(&'static str, Option<usize>)>,
        held: Arc<dyn Any + Send + Sync>,
    ) -> HookSet {
        HookSet {
            defined,
            held: Some(held),
        }
    }

    /// What the module that ran the file keeps for them.
    pub fn held(&self) -> Option<&Arc<dyn Any + Send + Sync>> {
        self.held.as_ref()
    }

    pub fn is_empty(&self) -> bool {
        self.defined.is_empty()
    }

    pub fn has(&self, name: &str) -> bool {
        self.defined.iter().any(|(n, _)| *n == name)
    }
}

impl PartialEq for HookSet {
    fn eq(&self, other: &HookSet) -> bool {
        self.defined == other.defined
            && match (&self.held, &other.held) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
    }
}

impl fmt::Debug for HookSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.defined.iter().map(|(n, _)| *n).collect();
        write!(f, "HookSet({names:?})")
    }
}

/// The setting a Python config file's name sets: Gunicorn's names, and ferricorn's own
/// settings that Gunicorn does not have.
fn setting_named(name: &str) -> Option<&'static Spec> {
    SETTINGS.iter().find(|s| match s.gunicorn_name() {
        Some(g) => g == name,
        None => s.name == name,
    })
}

/// The setting or hook a name resembles closely enough to be a misspelling of it.
fn resembles(name: &str) -> Option<String> {
    if name.starts_with('_') || name.chars().any(|c| c.is_ascii_uppercase()) {
        return None;
    }
    let candidates = SETTINGS
        .iter()
        .filter(|s| !s.action || s.name == "config")
        .filter_map(|s| s.gunicorn_name().or(Some(s.name)))
        .chain(HOOKS.iter().map(|h| h.name));
    candidates
        .map(|c| (strsim::jaro_winkler(name, c), c))
        .filter(|(score, _)| *score >= 0.9)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c.to_string())
}

/// What a Python config file's names set, as a [`FileLayer`]. Errors name the file, the
/// line and the setting.
pub fn layer(file: PyFile) -> Result<FileLayer, String> {
    let shown = file.path.display().to_string();
    let at = |n: &PyName| match n.line {
        Some(l) => format!("{shown}:{l}: `{}`", n.name),
        None => format!("{shown}: `{}`", n.name),
    };
    let mut layer = Layer::default();
    let mut lines = Vec::new();
    let mut ignored = Vec::new();
    for n in &file.names {
        if let Some(h) = HOOKS.iter().find(|h| h.name == n.name) {
            match h.status {
                Status::Works => {}
                Status::Refused(why) => {
                    return Err(format!(
                        "{}: the server hook `{}` is not supported by ferricorn: {why}",
                        at(n),
                        h.signature
                    ));
                }
                Status::NotYet(why) | Status::Ignored(why) => {
                    return Err(format!(
                        "{}: the server hook `{}` is not implemented in ferricorn yet: {why}",
                        at(n),
                        h.signature
                    ));
                }
            }
            continue;
        }
        let Some(spec) = setting_named(&n.name) else {
            if matches!(n.value, PyValue::Module | PyValue::Callable) || n.name.starts_with('_') {
                continue;
            }
            if let Some(near) = resembles(&n.name) {
                return Err(format!(
                    "{}: not a setting (did you mean `{near}`?); a helper name that is \
                     not a setting can start with `_`",
                    at(n)
                ));
            }
            if !n.name.chars().any(|c| c.is_ascii_uppercase()) {
                ignored.push(match n.line {
                    Some(l) => format!("{} (line {l})", n.name),
                    None => n.name.clone(),
                });
            }
            continue;
        };
        let set = match &n.value {
            PyValue::None => continue,
            PyValue::Value(v) => layer.set_toml(spec, v.clone()),
            PyValue::Text(t) if matches!(spec.kind, "int" | "bool") => layer.set_text(spec, t),
            PyValue::Text(t) => layer.set_toml(spec, toml::Value::String(t.clone())),
            PyValue::Callable => Err(format!("a callable, expected {}", expected(spec))),
            PyValue::Module => Err(format!("a module, expected {}", expected(spec))),
            PyValue::Other(t) => Err(format!("invalid type: {t}, expected {}", expected(spec))),
        };
        set.map_err(|e| format!("{}: {e}", at(n)))?;
        lines.push((spec.name, n.line));
    }
    let mut notices = Vec::new();
    if !ignored.is_empty() {
        notices.push(format!(
            "{shown}: names that are not settings are ignored, as in Gunicorn: {}",
            ignored.join(", ")
        ));
    }
    let out = FileLayer::python(file.path, layer, lines, file.hooks, notices);
    out.layer
        .check_values()
        .map_err(|(spec, msg)| format!("{}: {msg}", out.locate(spec)))?;
    Ok(out)
}

/// The type a setting takes, in Python's words.
fn expected(spec: &Spec) -> &'static str {
    match spec.kind {
        "int" => "an int",
        "bool" => "a bool",
        "list" => "a list of str (or one str)",
        "dict" => "a dict",
        _ => "a str",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str, line: usize, value: PyValue) -> PyName {
        PyName {
            name: n.into(),
            line: Some(line),
            value,
        }
    }

    fn file(names: Vec<PyName>) -> Result<FileLayer, String> {
        layer(PyFile {
            path: "/srv/gunicorn.conf.py".into(),
            names,
            hooks: HookSet::default(),
        })
    }

    #[test]
    fn names_are_gunicorns_settings_with_their_types() {
        let f = file(vec![
            name("workers", 1, PyValue::Text("4".into())),
            name("bind", 2, PyValue::Text("unix:/run/app.sock".into())),
            name("keepalive", 3, PyValue::Value(toml::Value::Integer(5))),
            name("preload_app", 4, PyValue::Value(toml::Value::Boolean(true))),
            name("multiprocessing", 5, PyValue::Module),
            name("PORT", 6, PyValue::Text("8000".into())),
            name("base_dir", 7, PyValue::Text("/srv".into())),
            name("certfile", 8, PyValue::None),
        ])
        .unwrap();
        assert_eq!(f.layer.workers, Some(4));
        assert_eq!(f.layer.keep_alive, Some(5));
        assert_eq!(f.layer.preload_app, Some(true));
        assert_eq!(f.layer.bind.as_ref().map(Vec::len), Some(1));
        assert_eq!(f.notices.len(), 1, "{:?}", f.notices);
        assert!(
            f.notices[0].contains("base_dir (line 7)"),
            "{:?}",
            f.notices
        );
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_setting() {
        let e = file(vec![name(
            "workers",
            3,
            PyValue::Value(toml::Value::Float(2.5)),
        )])
        .unwrap_err();
        assert!(e.starts_with("/srv/gunicorn.conf.py:3: `workers`: "), "{e}");
        let e = file(vec![name(
            "wokers",
            9,
            PyValue::Value(toml::Value::Integer(2)),
        )])
        .unwrap_err();
        assert!(
            e.contains(":9: `wokers`: not a setting (did you mean `workers`?)"),
            "{e}"
        );
        let e = file(vec![name(
            "keep_alive",
            2,
            PyValue::Value(toml::Value::Integer(2)),
        )])
        .unwrap_err();
        assert!(e.contains("did you mean `keepalive`"), "{e}");
        let e = file(vec![name("timeout", 4, PyValue::Other("set".into()))]).unwrap_err();
        assert!(
            e.contains(":4: `timeout`: invalid type: set, expected an int"),
            "{e}"
        );
        let e = file(vec![name(
            "workers",
            1,
            PyValue::Value(toml::Value::Integer(0)),
        )])
        .unwrap_err();
        assert!(e.contains(":1: setting `workers`"), "{e}");
    }

    #[test]
    fn helper_names_are_not_taken_for_misspellings() {
        for helper in [
            "port",
            "host",
            "name",
            "env",
            "log_dir",
            "base_dir",
            "cpu_count",
            "bind_address",
        ] {
            assert_eq!(resembles(helper), None, "{helper}");
        }
    }
}

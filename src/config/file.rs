//! The TOML config file: reading it into a [`Layer`] (errors name the file, the line and the
//! key), and writing a configuration back as TOML (`--print-config`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::pyfile::HookSet;
use super::spec::{Spec, Status};
use super::{Config, HOOKS, Layer, SETTINGS};

/// A config file, read: a TOML file, or a Python file run (see `pyfile.rs`).
#[derive(Debug, Clone)]
pub struct FileLayer {
    pub path: PathBuf,
    pub layer: Layer,
    /// The line where each setting is assigned, by setting name.
    lines: Vec<(&'static str, Option<usize>)>,
    /// A Python config file (its names are Gunicorn's settings).
    python: bool,
    /// The server hooks a Python config file defined.
    pub hooks: HookSet,
    /// What loading it found worth one info line each.
    pub notices: Vec<String>,
}

impl FileLayer {
    /// A Python config file's settings.
    pub(crate) fn python(
        path: PathBuf,
        layer: Layer,
        lines: Vec<(&'static str, Option<usize>)>,
        hooks: HookSet,
        notices: Vec<String>,
    ) -> FileLayer {
        FileLayer {
            path,
            layer,
            lines,
            python: true,
            hooks,
            notices,
        }
    }

    /// `file:line: key `k`` for the setting called `name` (or `file: key `k`` if unknown);
    /// in a Python file, `file:line: setting `gunicorn_name``.
    pub fn locate(&self, spec: &Spec) -> String {
        let file = self.path.display();
        let what = if self.python {
            format!("setting `{}`", spec.gunicorn_name().unwrap_or(spec.name))
        } else {
            format!("key `{}`", spec.key())
        };
        match self.lines.iter().find(|(n, _)| *n == spec.name) {
            Some((_, Some(line))) => format!("{file}:{line}: {what}"),
            _ => format!("{file}: {what}"),
        }
    }
}

fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Parses a TOML config file. Errors name the file, the line and the key.
pub fn parse(path: &Path, text: &str) -> Result<FileLayer, String> {
    let name = path.display();
    let table: BTreeMap<Spanned<String>, Spanned<toml::Value>> =
        toml::from_str(text).map_err(|e| {
            let msg = e.message().trim().replace('\n', " ");
            match e.span() {
                Some(span) => {
                    let line_no = line_at(text, span.start);
                    let line_text = text.lines().nth(line_no - 1).unwrap_or("");
                    let key = line_text.split('=').next().unwrap_or("").trim();
                    if key.is_empty() || key.starts_with('[') {
                        format!("{name}:{line_no}: {msg}")
                    } else {
                        format!("{name}:{line_no}: key `{key}`: {msg}")
                    }
                }
                None => format!("{name}: {msg}"),
            }
        })?;
    let mut entries: Vec<_> = table.into_iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    let mut out = FileLayer {
        path: path.to_path_buf(),
        layer: Layer::default(),
        lines: Vec::new(),
        python: false,
        hooks: HookSet::default(),
        notices: Vec::new(),
    };
    for (key, value) in entries {
        let line = line_at(text, key.span().start);
        let key = key.into_inner();
        let at = format!("{name}:{line}: key `{key}`");
        let Some(spec) = SETTINGS.iter().find(|s| s.has_key(&key)) else {
            return Err(format!("{at}: {}", unknown(&key)));
        };
        if let Some((_, Some(first))) = out.lines.iter().find(|(n, _)| *n == spec.name) {
            return Err(format!(
                "{at}: `{}` is already set on line {first}",
                spec.key()
            ));
        }
        out.layer
            .set_toml(spec, value.into_inner())
            .map_err(|e| format!("{at}: {e}"))?;
        out.lines.push((spec.name, Some(line)));
    }
    out.layer
        .check_values()
        .map_err(|(spec, msg)| format!("{}: {msg}", out.locate(spec)))?;
    Ok(out)
}

/// Why `key` is not a setting: a server hook (with its status), or unknown (with the nearest
/// setting's name).
fn unknown(key: &str) -> String {
    let k = key.replace('-', "_");
    if let Some(h) = HOOKS.iter().find(|h| h.name == k) {
        return match h.status {
            Status::Works => format!(
                "`{}` is a server hook: define it as a function in a Python config file \
                 (gunicorn.conf.py, `-c python:MODULE`), not in TOML",
                h.signature
            ),
            Status::Refused(why) => format!(
                "`{}` is a server hook, which is not supported by ferricorn: {why}",
                h.signature
            ),
            other => format!(
                "`{}` is a server hook, which is not implemented in ferricorn yet: {}",
                h.signature,
                other.reason()
            ),
        };
    }
    let names = SETTINGS
        .iter()
        .flat_map(|s| [Some(s.key()), s.gunicorn_name().map(str::to_string)])
        .flatten();
    let near = names
        .map(|n| (strsim::jaro_winkler(&n.replace('-', "_"), &k), n))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match near {
        Some((_, n)) => format!("unknown setting (did you mean `{n}`?)"),
        None => "unknown setting (the README's Usage section lists them)".to_string(),
    }
}

/// The configuration as TOML that loads back to the same configuration: every setting that
/// works in ferricorn, and any other one that is not at its default; in the table's order.
pub fn render(cfg: &Config) -> String {
    let defaults = Config::builtin_defaults();
    let layer = cfg.to_layer();
    let mut out = String::from("# ferricorn effective configuration (--print-config)\n");
    for s in SETTINGS {
        if s.action || (s.status != Status::Works && cfg.is_default(s.name, &defaults)) {
            continue;
        }
        if let Some(v) = layer.get_toml(s.name) {
            out.push_str(&format!("{} = {v}\n", s.key()));
        }
    }
    out
}

//! Where a configuration comes from, and how the layers resolve:
//! `defaults < environment < config file < GUNICORN_CMD_ARGS < command line`.
//!
//! [`Sources`] keeps what decides a configuration (the command line, the config file chosen
//! at start, the checks other modules own), so that it can be loaded again on HUP. Loading
//! validates each layer with errors that say where the value came from, then judges each
//! setting against its status (a note for an ignored one, a refusal for a refused one or one
//! not implemented yet).

use std::path::{Path, PathBuf};

use super::args::{CmdArgs, GUNICORN_CMD_ARGS, cmd_args};
use super::file::{self, FileLayer};
use super::pyfile::{self, PyReader, PySource};
use super::spec::{Spec, Verdict};
use super::{Config, Layer, SETTINGS};

/// The file read when no config file is named, if it exists in the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "ferricorn.toml";
/// Gunicorn's default config file, read when no config file is named and it exists in the
/// working directory.
pub const GUNICORN_CONFIG_FILE: &str = "gunicorn.conf.py";

/// The config file a configuration is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigFile {
    /// TOML (`-c app.toml`, `./ferricorn.toml`).
    Toml(PathBuf),
    /// A Python config file or module, run in the master's interpreter.
    Python(PySource),
}

/// Checks of setting values that other modules own, given to [`Sources`] by the commands
/// that load a configuration, so that `config` itself imports none of those modules (and can
/// be read and tested without user lookups or a Python install).
#[derive(Debug, Clone, Copy)]
pub struct Checks {
    /// Checks of one layer's values (the app's spelling, the access log format; on this
    /// machine, that users and groups exist): the setting's name and why not.
    pub layer: fn(&Layer) -> Result<(), (&'static str, String)>,
    /// Checks of the resolved configuration (on this machine: the virtualenv).
    pub config: fn(&Config) -> Result<(), String>,
    /// Runs a Python config file, where the command can (the server: in its interpreter).
    pub python: Option<PyReader>,
}

impl Checks {
    /// No checks beyond the table's own.
    pub const NONE: Checks = Checks {
        layer: |_| Ok(()),
        config: |_| Ok(()),
        python: None,
    };
}

impl Default for Checks {
    fn default() -> Checks {
        Checks::NONE
    }
}

/// Everything that decides a configuration, so that it can be loaded again (on HUP).
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub cli: Layer,
    pub config_file: Option<ConfigFile>,
    /// Whether `config_file` was named (with `-c`, here or in `GUNICORN_CMD_ARGS`: it must
    /// exist) or found as ./ferricorn.toml.
    pub explicit_file: bool,
    pub checks: Checks,
}

impl Sources {
    /// The sources of a command line: the config file it (or `GUNICORN_CMD_ARGS`) names, else
    /// `./ferricorn.toml` if present; made absolute, so that a reload after `--chdir` reads
    /// the same file.
    pub fn from_command_line(cli: Layer, checks: Checks) -> Result<Sources, String> {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        Sources::from_command_line_in(cli, checks, &|k| std::env::var(k).ok(), &cwd)
    }

    /// [`Sources::from_command_line`] with the environment read by `get`, in `cwd`.
    pub fn from_command_line_in(
        cli: Layer,
        checks: Checks,
        get: &dyn Fn(&str) -> Option<String>,
        cwd: &Path,
    ) -> Result<Sources, String> {
        let named = match &cli.config {
            Some(c) => Some((c.clone(), "-c".to_string())),
            None => cmd_args(get)?
                .layer
                .config
                .map(|c| (c, format!("{GUNICORN_CMD_ARGS} -c"))),
        };
        let (config_file, explicit_file) = match named {
            Some((c, by)) => (Some(config_source(&c, &by, cwd)?), true),
            None => {
                let toml = cwd.join(DEFAULT_CONFIG_FILE);
                let py = cwd.join(GUNICORN_CONFIG_FILE);
                match (py.exists(), toml.exists()) {
                    (true, true) => {
                        return Err(format!(
                            "both {} and {} are here: remove one, or name the one to use \
                             with -c",
                            toml.display(),
                            py.display()
                        ));
                    }
                    (true, false) => (Some(ConfigFile::Python(PySource::File(py))), true),
                    _ => (Some(ConfigFile::Toml(toml)), false),
                }
            }
        };
        Ok(Sources {
            cli,
            config_file,
            explicit_file,
            checks,
        })
    }

    /// Resolves the layers into a validated config.
    pub fn load(&self) -> Result<Config, String> {
        self.load_with(&|k| std::env::var(k).ok())
    }

    /// [`Sources::load`] with the environment read by `get`.
    pub fn load_with(&self, get: &dyn Fn(&str) -> Option<String>) -> Result<Config, String> {
        let env = env_layer(get)?;
        let args = cmd_args(get)?;
        let file = match &self.config_file {
            Some(ConfigFile::Toml(p)) => match std::fs::read_to_string(p) {
                Ok(text) => Some(file::parse(p, &text)?),
                Err(e) if !self.explicit_file && e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(format!("cannot read config file {}: {e}", p.display())),
            },
            Some(ConfigFile::Python(src)) => {
                let Some(run) = self.checks.python else {
                    return Err(format!(
                        "{src}: a Python config file is run by the server itself; give these \
                         settings as flags or in a TOML file (the same names) here"
                    ));
                };
                if let PySource::File(p) = src
                    && !p.is_file()
                {
                    return Err(format!(
                        "cannot read config file {}: not found",
                        p.display()
                    ));
                }
                // The standalone binary starts its interpreter before the file runs, so the
                // virtualenv comes from what is known before it.
                let venv = self
                    .cli
                    .virtualenv
                    .clone()
                    .or(args.layer.virtualenv.clone())
                    .or(env.virtualenv.clone());
                Some(pyfile::layer(run(src, venv.as_deref())?)?)
            }
            None => None,
        };
        // Each layer's values: the table's checks, then the other modules'; an error names
        // the value the way the user wrote it (`at`).
        let checked = |l: &Layer, at: &dyn Fn(&Spec) -> String| -> Result<(), String> {
            l.check_values()
                .map_err(|(s, m)| format!("{}: {m}", at(s)))?;
            (self.checks.layer)(l).map_err(|(n, m)| match spec_named(n) {
                Some(s) => format!("{}: {m}", at(s)),
                None => m,
            })
        };
        checked(&self.cli, &|s| {
            format!("invalid value for '{}'", s.display())
        })?;
        checked(&args.layer, &|s| {
            format!("{GUNICORN_CMD_ARGS}: invalid value for '{}'", s.display())
        })?;
        if let Some(f) = &file {
            checked(&f.layer, &|s| f.locate(s))?;
        }
        checked(&env, &|s| format!("${}", s.env.unwrap_or(s.name)))?;
        let file_layer = file.as_ref().map(|f| f.layer.clone()).unwrap_or_default();
        let merged = self
            .cli
            .clone()
            .over(args.layer.clone())
            .over(file_layer)
            .over(env.clone());
        let mut cfg = Config::from_layer(merged, file.as_ref().map(|f| f.path.clone()));
        let origin = Origin {
            cli: &self.cli,
            args: &args,
            file: file.as_ref(),
            env: &env,
        };
        let mut notices = args.notices.clone();
        if let Some(f) = &file {
            notices.extend(f.notices.iter().cloned());
            cfg.hooks = f.hooks.clone();
        }
        if let Some(f) = &file
            && f.layer.config.is_some()
        {
            let s = spec_named("config").expect("the table declares config");
            notices.push(format!(
                "{}: has no effect in a config file (as in Gunicorn): name the file with -c",
                f.locate(s)
            ));
        }
        let defaults = Config::builtin_defaults();
        for (s, verdict) in cfg.verdicts(&defaults) {
            match verdict {
                Verdict::Fine => {}
                Verdict::Note(n) => notices.push(format!("{}: {n}", origin.locate(s))),
                Verdict::Refuse(r) => return Err(format!("{}: {r}", origin.locate(s))),
            }
        }
        if cfg.reload && cfg.preload_app {
            let at = |n| origin.locate(spec_named(n).expect("declared"));
            return Err(format!(
                "{} cannot be used with {}: the app lives in the master with --preload, so \
                 a changed file would need a new master; drop --preload while developing",
                at("reload"),
                at("preload_app")
            ));
        }
        (self.checks.config)(&cfg)?;
        cfg.notices = notices;
        Ok(cfg)
    }
}

fn spec_named(name: &str) -> Option<&'static Spec> {
    SETTINGS.iter().find(|s| s.name == name)
}

/// The layers of one load, to say where a setting was set.
struct Origin<'a> {
    cli: &'a Layer,
    args: &'a CmdArgs,
    file: Option<&'a FileLayer>,
    env: &'a Layer,
}

impl Origin<'_> {
    /// The flag, `GUNICORN_CMD_ARGS` flag, `file:line: key` or `$VARIABLE` that set `s`.
    fn locate(&self, s: &Spec) -> String {
        if self.cli.is_set(s.name) {
            s.display()
        } else if self.args.layer.is_set(s.name) {
            format!("{GUNICORN_CMD_ARGS} {}", s.display())
        } else if let Some(f) = self.file.filter(|f| f.layer.is_set(s.name)) {
            f.locate(s)
        } else if let Some(var) = s.env.filter(|_| self.env.is_set(s.name)) {
            format!("${var}")
        } else {
            s.display()
        }
    }
}

/// What a `-c` value names: `python:MODULE`, a Python file (`.py`), or a TOML file
/// (`file:PATH` is Gunicorn's spelling of `PATH`); paths made absolute from `cwd`.
fn config_source(c: &str, by: &str, cwd: &Path) -> Result<ConfigFile, String> {
    let c = c.trim();
    if let Some(m) = c.strip_prefix("python:") {
        if m.is_empty() || !m.split('.').all(|p| !p.is_empty()) {
            return Err(format!("{by} {c}: `python:` names no module"));
        }
        return Ok(ConfigFile::Python(PySource::Module(m.to_string())));
    }
    let path = cwd.join(c.strip_prefix("file:").unwrap_or(c));
    if path.extension().is_some_and(|e| e == "py") {
        Ok(ConfigFile::Python(PySource::File(path)))
    } else {
        Ok(ConfigFile::Toml(path))
    }
}

/// What the environment contributes, from a snapshot of variables (`WEB_CONCURRENCY`,
/// `FORWARDED_ALLOW_IPS`, `PORT`, `VIRTUAL_ENV`, `SENDFILE`: the table's `env`).
pub fn env_layer(get: impl Fn(&str) -> Option<String>) -> Result<Layer, String> {
    let l = Layer::from_env(&get)?;
    if let Err((s, msg)) = l.check_values() {
        return Err(format!("${}: {msg}", s.env.unwrap_or(s.name)));
    }
    Ok(l)
}

/// Parses a TOML config file. Errors name the file, the line and the key.
pub fn file_layer(path: &Path, text: &str) -> Result<Layer, String> {
    file::parse(path, text).map(|f| f.layer)
}

//! Settings on a command line: how a table entry becomes a clap argument (its flag, aliases,
//! help, value parser and action), how its values are read back, and `GUNICORN_CMD_ARGS`,
//! which Gunicorn parses as command-line arguments.

use clap::builder::{PossibleValuesParser, TypedValueParser, ValueParser};
use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};

use super::Layer;
use super::spec::{Shape, Spec, Status};

/// `GUNICORN_CMD_ARGS`: more command-line arguments, ranked between the config file and the
/// real command line (as Gunicorn ranks them).
pub const GUNICORN_CMD_ARGS: &str = "GUNICORN_CMD_ARGS";

/// Adds `spec`'s flag to `cmd`; `parse` reads one value, `choices` lists the accepted ones.
pub(crate) fn add_arg<I: Clone + Send + Sync + 'static>(
    cmd: Command,
    spec: &'static Spec,
    parse: fn(&str) -> Result<I, String>,
    choices: Option<&'static [&'static str]>,
    default: fn() -> Option<toml::Value>,
) -> Command {
    let mut a = Arg::new(spec.name);
    match spec.shape {
        Shape::NoFlag => return cmd,
        Shape::Positional => {
            a = a.value_name(spec.value_name).action(ArgAction::Set);
        }
        Shape::Value | Shape::Repeat => {
            a = a.value_name(spec.value_name).action(ArgAction::Append);
        }
        Shape::Comma => {
            a = a
                .value_name(spec.value_name)
                .action(ArgAction::Append)
                .value_delimiter(',');
        }
        Shape::Switch(value) => {
            a = a
                .num_args(0)
                .default_missing_value(value)
                .action(ArgAction::Append);
        }
        Shape::OptionalValue(value) => {
            a = a
                .value_name(spec.value_name)
                .num_args(0..=1)
                .default_missing_value(value)
                .action(ArgAction::Append);
        }
    }
    if let Some(l) = spec.long {
        a = a.long(l);
    }
    if let Some(c) = spec.short {
        a = a.short(c);
    }
    for alias in spec.aliases {
        a = if spec.status == Status::Works {
            a.visible_alias(*alias)
        } else {
            a.alias(*alias)
        };
    }
    a = match choices {
        Some(list) => a
            .value_parser(PossibleValuesParser::new(list).try_map(move |s| parse(&s)))
            .ignore_case(true),
        None => a.value_parser(ValueParser::new(move |s: &str| parse(s))),
    };
    // The settings that have no effect here, or are refused, stay out of --help (the README
    // lists them): the help shows what ferricorn does. (Their help text is not made at all:
    // building the command line is part of every start.)
    if spec.status == Status::Works {
        a = a.help(help(spec, default()));
    } else {
        a = a.hide(true);
    }
    cmd.arg(a.help_heading(spec.section.title()))
}

/// The help line: the entry's text and its default.
fn help(spec: &Spec, default: Option<toml::Value>) -> String {
    let text = spec.help_text();
    match spec
        .default_doc
        .map(str::to_string)
        .or_else(|| show_default(default?))
    {
        Some(d) => format!("{text} [default: {d}]"),
        None => text,
    }
}

/// A default as the docs show it: strings bare, lists comma-separated, nothing for an empty
/// one or a `false` switch.
pub(crate) fn show_default(v: toml::Value) -> Option<String> {
    let s = match v {
        toml::Value::String(s) => s,
        toml::Value::Boolean(false) => String::new(),
        toml::Value::Array(a) => a
            .into_iter()
            .filter_map(show_default)
            .collect::<Vec<_>>()
            .join(","),
        toml::Value::Integer(n) => n.to_string(),
        other => other.to_string(),
    };
    Some(s).filter(|s| !s.is_empty())
}

/// The values given for the setting `id`, if any.
pub(crate) fn read_items<I: Clone + Send + Sync + 'static>(
    m: &ArgMatches,
    id: &str,
) -> Option<Vec<I>> {
    m.try_get_many::<I>(id)
        .ok()
        .flatten()
        .map(|v| v.cloned().collect())
}

/// The settings in `GUNICORN_CMD_ARGS`, read with `get`.
#[derive(Debug, Clone, Default)]
pub struct CmdArgs {
    pub layer: Layer,
    /// What the start-up log says about it (a positional argument, which Gunicorn ignores
    /// there too).
    pub notices: Vec<String>,
}

/// Parses `GUNICORN_CMD_ARGS` (shell words, as Gunicorn splits them) with the same flags as
/// the command line.
pub fn cmd_args(get: &dyn Fn(&str) -> Option<String>) -> Result<CmdArgs, String> {
    let Some(raw) = get(GUNICORN_CMD_ARGS).filter(|v| !v.trim().is_empty()) else {
        return Ok(CmdArgs::default());
    };
    let words = shlex::split(&raw)
        .ok_or_else(|| format!("{GUNICORN_CMD_ARGS}: unbalanced quotes or escape in `{raw}`"))?;
    let cmd = Layer::augment_args(
        Command::new(GUNICORN_CMD_ARGS)
            .no_binary_name(true)
            .disable_help_flag(true)
            .disable_version_flag(true),
    );
    let m = cmd
        .try_get_matches_from(words)
        .map_err(|e| format!("{GUNICORN_CMD_ARGS}: {}", crate::usage::describe(&e)))?;
    let mut layer = Layer::from_arg_matches(&m)
        .map_err(|e| format!("{GUNICORN_CMD_ARGS}: {}", crate::usage::describe(&e)))?;
    let mut notices = Vec::new();
    if let Some(app) = layer.app.take() {
        notices.push(format!(
            "{GUNICORN_CMD_ARGS}: the positional argument `{app}` is ignored (as Gunicorn \
             ignores it): the app comes from the command line or the config file"
        ));
    }
    Ok(CmdArgs { layer, notices })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Layer, String> {
        let cmd = Layer::augment_args(Command::new("t").no_binary_name(true));
        let m = cmd
            .try_get_matches_from(args)
            .map_err(|e| crate::usage::describe(&e))?;
        Layer::from_arg_matches(&m).map_err(|e| e.to_string())
    }

    #[test]
    fn shapes() {
        let l = parse(&[
            "-w",
            "2",
            "-w",
            "3",
            "-b",
            "127.0.0.1:1",
            "-b",
            "unix:/x",
            "--pythonpath",
            "a,b",
            "--pythonpath",
            "c",
            "-D",
            "--no-sendfile",
            "--proxy-protocol",
            "--access-logformat",
            "%(h)s",
            "app:x",
        ])
        .unwrap();
        assert_eq!(l.workers, Some(3), "the last one counts, as in Gunicorn");
        assert_eq!(l.bind.as_ref().map(Vec::len), Some(2));
        assert_eq!(l.pythonpath, Some(vec!["a".into(), "b".into(), "c".into()]));
        assert_eq!(l.daemon, Some(true));
        assert_eq!(l.sendfile, Some(false));
        assert_eq!(l.proxy_protocol, Some(super::super::ProxyProtocol::Auto));
        assert_eq!(l.access_log_format.as_deref(), Some("%(h)s"));
        assert_eq!(l.app.as_deref(), Some("app:x"));
        let l = parse(&[
            "--proxy-protocol",
            "v2",
            "--log-level",
            "DEBUG",
            "-m",
            "0o22",
        ])
        .unwrap();
        assert_eq!(l.proxy_protocol, Some(super::super::ProxyProtocol::V2));
        assert_eq!(l.log_level, Some(super::super::LogLevel::Debug));
        assert_eq!(l.umask, Some(0o22));
        assert!(
            parse(&["--log-level", "loud"])
                .unwrap_err()
                .contains("possible values")
        );
    }

    #[test]
    fn gunicorn_cmd_args_are_shell_words() {
        let get = |v: &'static str| move |k: &str| (k == GUNICORN_CMD_ARGS).then(|| v.to_string());
        let a = cmd_args(&get("--bind=127.0.0.1:5 --workers=3 -e 'A=x y'")).unwrap();
        assert_eq!(a.layer.workers, Some(3));
        assert_eq!(a.layer.env, Some(vec!["A=x y".into()]));
        let a = cmd_args(&get("-w 2 app:other")).unwrap();
        assert_eq!(a.layer.app, None);
        assert!(a.notices[0].contains("app:other"), "{:?}", a.notices);
        let e = cmd_args(&get("--workers")).unwrap_err();
        assert!(
            e.starts_with("GUNICORN_CMD_ARGS: ") && e.contains("--workers"),
            "{e}"
        );
        let e = cmd_args(&get("-w 'x")).unwrap_err();
        assert!(e.contains("unbalanced"), "{e}");
    }
}

//! The README's tables, made from the settings table: the options ferricorn has, and every
//! Gunicorn setting with its status. `tests/config_readme.rs` checks that the README holds
//! exactly these (and rewrites it with `FERRICORN_UPDATE_README=1`).

use std::fmt::Write as _;

use super::spec::{Gunicorn, Shape, Spec, Status};
use super::{Config, HOOKS, SETTINGS};

/// The options table: every setting that works, with its flag, default and meaning.
pub fn options_table() -> String {
    let defaults = Config::builtin_defaults().to_layer();
    let mut out = String::from("| option | config key | default | meaning |\n|---|---|---|---|\n");
    let mut section = None;
    for s in SETTINGS.iter().filter(|s| {
        s.status == Status::Works && !matches!(s.shape, Shape::NoFlag | Shape::Positional)
    }) {
        if section != Some(s.section) {
            let _ = writeln!(out, "| **{}** | | | |", s.section.title());
            section = Some(s.section);
        }
        let default = match s.default_doc {
            Some(d) => d.to_string(),
            None => defaults
                .get_toml(s.name)
                .and_then(super::args::show_default)
                .unwrap_or_default(),
        };
        let key = if s.action {
            String::new()
        } else {
            format!("`{}`", s.key())
        };
        let mut meaning = s.help_text();
        if let Some(c) = s.choices {
            meaning.push_str(&format!(" One of: {}.", c.join(", ")));
        }
        if !s.note.is_empty() {
            meaning.push_str(&format!(" ({})", s.note));
        }
        let _ = writeln!(
            out,
            "| {} | {key} | {} | {} |",
            code(&flag(s)),
            cell(&default),
            cell(&meaning)
        );
    }
    out
}

/// The Gunicorn table: every Gunicorn setting and hook, by section, with what it does here.
pub fn gunicorn_table() -> String {
    let (mut works, mut ignored, mut refused, mut not_yet) = (0, 0, 0, 0);
    let mut count = |st: Status| match st {
        Status::Works => works += 1,
        Status::Ignored(_) => ignored += 1,
        Status::Refused(_) => refused += 1,
        Status::NotYet(_) => not_yet += 1,
    };
    let mut rows: Vec<(super::spec::Section, String)> = Vec::new();
    for s in SETTINGS {
        let Some(name) = s.gunicorn_name() else {
            continue;
        };
        count(s.status);
        let flag = match (s.shape, s.long) {
            (Shape::Positional, _) => "APP_MODULE".to_string(),
            (Shape::NoFlag, _) | (_, None) => String::new(),
            _ => code(&flag(s)),
        };
        let name = match s.gunicorn {
            Gunicorn::As(_) => format!("`{name}` (`{}`)", s.key()),
            _ => format!("`{name}`"),
        };
        rows.push((
            s.section,
            format!(
                "| {name} | {} | {flag} | {} | {} |",
                s.kind,
                s.status.label(),
                cell(&why(s))
            ),
        ));
    }
    let hooks_at = rows
        .iter()
        .position(|(sec, _)| *sec > super::spec::Section::ServerHooks)
        .unwrap_or(rows.len());
    let hook_rows: Vec<_> = HOOKS
        .iter()
        .map(|h| {
            count(h.status);
            (
                super::spec::Section::ServerHooks,
                format!(
                    "| `{}` | callable | | {} | {} |",
                    h.signature,
                    h.status.label(),
                    cell(h.status.reason())
                ),
            )
        })
        .collect();
    rows.splice(hooks_at..hooks_at, hook_rows);
    let total = works + ignored + refused + not_yet;
    let mut out = format!(
        "{total} Gunicorn settings: {works} work, {ignored} are accepted and ignored (one info \
         line at start says why), {refused} are refused (with the reason and the \
         alternative), {not_yet} are not implemented yet (refused when set).\n\n\
         | setting | type | flag | status | in ferricorn |\n|---|---|---|---|---|\n"
    );
    let mut section = None;
    for (sec, row) in rows {
        if section != Some(sec) {
            let _ = writeln!(out, "| **{}** | | | | |", sec.title());
            section = Some(sec);
        }
        out.push_str(&row);
        out.push('\n');
    }
    out
}

/// The status's text, or the note (a works setting's nuance).
fn why(s: &Spec) -> String {
    match (s.status, s.note) {
        (Status::Works, n) => n.to_string(),
        (st, "") => st.reason().to_string(),
        (st, n) => format!("{}; {n}", st.reason()),
    }
}

/// `-w, --workers INT`.
fn flag(s: &Spec) -> String {
    let mut f = String::new();
    if let Some(c) = s.short {
        let _ = write!(f, "-{c}, ");
    }
    if let Some(l) = s.long {
        let _ = write!(f, "--{l}");
    }
    for a in s.aliases {
        let _ = write!(f, ", --{a}");
    }
    match s.shape {
        Shape::Switch(_) | Shape::NoFlag | Shape::Positional => {}
        Shape::OptionalValue(_) => {
            let _ = write!(f, " [{}]", s.value_name);
        }
        _ => {
            let _ = write!(f, " {}", s.value_name);
        }
    }
    f
}

fn code(s: &str) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!("`{s}`")
    }
}

/// Text safe in a table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

//! Usage errors: how a command line that cannot be parsed is reported, for every command
//! (`ferricorn`, `GUNICORN_CMD_ARGS`, `ferricorn systemd ...`): one line naming the flag and
//! what it accepts, then exit status [`crate::exit::EXIT_USAGE`].

/// One line from a clap error: `ferricorn: error: ` and [`describe`]; `help` is the command
/// that shows the usage (named when clap listed no possible values).
pub fn one_line(e: &clap::Error, help: &str) -> String {
    let (text, listed) = describe_parts(e);
    if listed {
        format!("ferricorn: error: {text}")
    } else {
        format!("ferricorn: error: {text} (see {help})")
    }
}

/// A clap error in one line: its first line, plus the possible values (or a similar flag) if
/// clap listed them.
pub fn describe(e: &clap::Error) -> String {
    describe_parts(e).0
}

fn describe_parts(e: &clap::Error) -> (String, bool) {
    let text = e.render().to_string();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("invalid arguments").to_string();
    let mut first = first.strip_prefix("error: ").unwrap_or(&first).to_string();
    // "the following required arguments were not provided:" names them on the next line.
    if first.ends_with(':')
        && let Some(next) = lines.next()
    {
        first = format!("{first} {next}");
    }
    let extra: Vec<&str> = lines
        .filter(|l| l.starts_with("[possible values") || l.starts_with("tip: a similar"))
        .collect();
    if extra.is_empty() {
        (first, false)
    } else {
        (format!("{first}; {}", extra.join("; ")), true)
    }
}

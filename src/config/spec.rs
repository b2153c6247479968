//! What the settings table says about one setting, apart from its type: its flag, its config
//! keys, its environment variable, where Gunicorn has it and what it means in ferricorn
//! ([`Status`]). One [`Spec`] per setting, made by the table in `table.rs`; the command line,
//! the config file, `--print-config`, the README tables and the start-up checks all read it.

/// Gunicorn's sections of its settings documentation, which the README table follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Section {
    ConfigFile,
    Control,
    Debugging,
    Logging,
    ProcessNaming,
    Ssl,
    Http2,
    Security,
    ServerHooks,
    ServerMechanics,
    ServerSocket,
    WorkerProcesses,
    DirtyArbiter,
}

impl Section {
    pub const fn title(self) -> &'static str {
        match self {
            Section::ConfigFile => "Config file",
            Section::Control => "Control",
            Section::Debugging => "Debugging",
            Section::Logging => "Logging",
            Section::ProcessNaming => "Process naming",
            Section::Ssl => "SSL",
            Section::Http2 => "HTTP/2",
            Section::Security => "Security",
            Section::ServerHooks => "Server hooks",
            Section::ServerMechanics => "Server mechanics",
            Section::ServerSocket => "Server socket",
            Section::WorkerProcesses => "Worker processes",
            Section::DirtyArbiter => "Dirty arbiters",
        }
    }
}

/// How a setting is given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// No flag: config file only (Gunicorn's `secure_scheme_headers`, `logconfig_dict`, ...).
    NoFlag,
    /// The positional argument (`APP_MODULE`).
    Positional,
    /// `--flag VALUE` (or `--flag=VALUE`); given twice, the last one counts (as in Gunicorn).
    Value,
    /// `--flag VALUE`, repeatable: each one adds an item (`-b A -b B`).
    Repeat,
    /// `--flag A,B`: comma-separated items, repeatable (`--pythonpath a,b`).
    Comma,
    /// `--flag` alone: sets the value written here (`"true"`, or `"false"` for `--no-sendfile`).
    Switch(&'static str),
    /// `--flag` alone means the value written here; `--flag VALUE` sets one
    /// (`--proxy-protocol` is `auto`, `--proxy-protocol v2`).
    OptionalValue(&'static str),
}

/// Where a setting stands against Gunicorn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gunicorn {
    /// ferricorn's own setting; Gunicorn has none.
    No,
    /// Gunicorn has it under the same name.
    Same,
    /// Gunicorn's name for it (also accepted as a config-file key).
    As(&'static str),
}

/// What a setting means in ferricorn. Settings that are not [`Status::Works`] are accepted
/// (so a Gunicorn command line or config never stops at "unexpected argument"); when one is
/// set to something other than its default, the start-up checks act on the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// It does what Gunicorn's does (or, for ferricorn's own settings, what its help says).
    Works,
    /// Accepted and ignored: one info line at start says why it has no effect here.
    Ignored(&'static str),
    /// Refused at start with this reason, which names the alternative.
    Refused(&'static str),
    /// Declared with Gunicorn's flag, name, type and default, refused at start until it is
    /// implemented; the text names what is missing.
    NotYet(&'static str),
}

impl Status {
    pub const fn label(self) -> &'static str {
        match self {
            Status::Works => "works",
            Status::Ignored(_) => "ignored",
            Status::Refused(_) => "refused",
            Status::NotYet(_) => "not yet",
        }
    }

    pub const fn reason(self) -> &'static str {
        match self {
            Status::Works => "",
            Status::Ignored(r) | Status::Refused(r) | Status::NotYet(r) => r,
        }
    }
}

/// What the start-up checks decide about one setting's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Fine,
    /// Logged at start (info): the value has no effect here, and why.
    Note(String),
    /// Start refused: why, and what to do instead.
    Refuse(String),
}

/// One setting, as the table declares it.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// The field name in [`super::Layer`] and [`super::Config`] (snake_case); the config-file
    /// key is the same name in kebab-case (printed) or snake_case.
    pub name: &'static str,
    /// The help text: the table entry's doc comment.
    pub help: &'static str,
    /// Gunicorn's word for the value's type (`int`, `bool`, `string`, `list`, `dict`).
    pub kind: &'static str,
    /// The accepted values, when the type has a fixed set.
    pub choices: Option<&'static [&'static str]>,
    pub section: Section,
    /// The long flag, without `--`.
    pub long: Option<&'static str>,
    pub short: Option<char>,
    /// Other long flags accepted (Gunicorn's spellings), without `--`.
    pub aliases: &'static [&'static str],
    pub value_name: &'static str,
    pub shape: Shape,
    /// Other config-file keys accepted (any mix of `-` and `_`).
    pub keys: &'static [&'static str],
    /// The environment variable that sets it (read by the environment layer).
    pub env: Option<&'static str>,
    pub gunicorn: Gunicorn,
    /// The default as the docs show it, when the value alone does not say it
    /// (`$WEB_CONCURRENCY or 1`).
    pub default_doc: Option<&'static str>,
    pub status: Status,
    /// A nuance for the README's Gunicorn table (a value that is refused, a default that
    /// differs).
    pub note: &'static str,
    /// An action rather than a setting (`--check-config`, `--print-config`, `-c`): never
    /// printed by `--print-config`.
    pub action: bool,
}

impl Spec {
    /// The defaults of the optional parts; table entries write `..Spec::BASE`.
    pub const BASE: Spec = Spec {
        name: "",
        help: "",
        kind: "",
        choices: None,
        section: Section::ServerMechanics,
        long: None,
        short: None,
        aliases: &[],
        value_name: "VALUE",
        shape: Shape::Value,
        keys: &[],
        env: None,
        gunicorn: Gunicorn::Same,
        default_doc: None,
        status: Status::Works,
        note: "",
        action: false,
    };

    /// The config-file key `--print-config` writes: the name in kebab-case.
    pub fn key(&self) -> String {
        self.name.replace('_', "-")
    }

    /// Gunicorn's name for this setting, if Gunicorn has it.
    pub fn gunicorn_name(&self) -> Option<&'static str> {
        match self.gunicorn {
            Gunicorn::No => None,
            Gunicorn::Same => Some(self.name),
            Gunicorn::As(n) => Some(n),
        }
    }

    /// Whether `key` (as written in a config file) names this setting: the name, Gunicorn's
    /// name or one of the extra keys, with `-` and `_` interchangeable.
    pub fn has_key(&self, key: &str) -> bool {
        let k = normalise(key);
        k == self.name
            || self.gunicorn_name().is_some_and(|g| k == normalise(g))
            || self.keys.iter().any(|x| k == normalise(x))
    }

    /// How the setting is named in messages: its flag, else its key.
    pub fn display(&self) -> String {
        match (self.shape, self.long) {
            (Shape::Positional, _) => "APP_MODULE".to_string(),
            (_, Some(l)) => format!("--{l}"),
            (_, None) => self.key(),
        }
    }

    /// The first line of the help text.
    pub fn summary(&self) -> &'static str {
        self.help.lines().next().unwrap_or("").trim()
    }

    /// The help text as one paragraph.
    pub fn help_text(&self) -> String {
        let mut out = String::with_capacity(self.help.len());
        for w in self.help.split_whitespace() {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(w);
        }
        out
    }
}

fn normalise(key: &str) -> String {
    key.trim().replace('-', "_")
}

/// A server hook (a Python callable in Gunicorn's config file). Declared by the table so that
/// its name is known (a config file naming it gets a clear answer, not "unknown key").
#[derive(Debug, Clone, Copy)]
pub struct Hook {
    pub name: &'static str,
    /// Gunicorn's signature, e.g. `post_fork(server, worker)`.
    pub signature: &'static str,
    pub help: &'static str,
    pub status: Status,
}

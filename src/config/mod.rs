//! Configuration: one table of settings, five layers.
//!
//! `defaults < environment (WEB_CONCURRENCY, FORWARDED_ALLOW_IPS, PORT, VIRTUAL_ENV,
//! SENDFILE) < config file (-c FILE, else ./ferricorn.toml or ./gunicorn.conf.py) <
//! GUNICORN_CMD_ARGS < command line`. The config file is TOML (`file.rs`) or Python
//! (`pyfile.rs`: run by the server's interpreter, its names are Gunicorn's settings and
//! server hooks). Every layer is a [`Layer`] (all fields optional); [`Config`] is the resolved,
//! validated result; [`Sources`] loads one (again on HUP).
//!
//! Every setting — ferricorn's own and every one Gunicorn has — is declared once, in
//! `table.rs`; the `settings!` macro (`declare.rs`) makes from that entry its field in
//! [`Layer`] and [`Config`], its flag and help (`clap`), its config-file keys (kebab-case and
//! snake_case, and Gunicorn's name), its environment variable, its default, its validation,
//! its `--print-config` line, its verdict at start ([`spec::Status`]: works, ignored with a
//! note, refused, not yet) and its rows in the README's tables (`docs.rs`).
//!
//! # Adding a setting
//!
//! One entry in `table.rs`, in its Gunicorn section:
//!
//! ```text
//! /// Seconds a client has to send the request body; 0 disables.
//! setting body_timeout: u64 = Some(60) => u64 {
//!     section: Security, long: Some("body-timeout"), value_name: "SECONDS", gunicorn: No,
//! }
//! check |v| range(*v, 0, 86400);
//! ```
//!
//! That is `NAME: LAYER_TYPE = DEFAULT => CONFIG_TYPE { Spec fields }` (see
//! [`spec::Spec`] for the fields, `..Spec::BASE` fills the rest; `gunicorn: No` for a setting
//! Gunicorn does not have), then the optional clauses `check`, `verdict`, `convert`, `parse`,
//! `toml_value`, `env_value` (see `declare.rs`). The field is then `cfg.body_timeout`; run
//! `FERRICORN_UPDATE_README=1 cargo test --test config_readme` to refresh the README's tables.
//!
//! Checks that need another module (the app's spelling, the access log format, users,
//! groups, the virtualenv) are not made here: the commands that load a configuration pass
//! them in as [`Checks`], so this module imports none of `python`, `privileges` or
//! `logging`.

#[macro_use]
mod declare;
mod args;
mod compat;
pub mod docs;
mod file;
pub mod pyfile;
mod sources;
pub mod spec;
mod table;
mod value;

use std::path::PathBuf;

pub use args::{CmdArgs, GUNICORN_CMD_ARGS, cmd_args};
pub use compat::is_asgi_class;
pub use file::FileLayer;
pub use pyfile::{HookSet, PyFile, PyName, PyReader, PySource, PyValue};
pub use sources::{
    Checks, ConfigFile, DEFAULT_CONFIG_FILE, GUNICORN_CONFIG_FILE, Sources, env_layer, file_layer,
};
pub use table::{Config, HOOKS, Layer, SETTINGS};
pub use value::{LogLevel, ProxyProtocol, parse_umask};

use crate::proxy::ForwardedAllowIps;

/// `--limit-request-body` default, 100 MiB. Bodies are streamed to the app, so the server itself
/// holds at most a few chunks per connection whatever this is; the limit bounds what an app that
/// reads a whole body into memory (`wsgi.input.read()`, most form parsers) can be made to hold:
/// one such request on a 512 MiB machine is survivable, a 1 GiB one is not.
pub const DEFAULT_LIMIT_REQUEST_BODY: u64 = 100 * 1024 * 1024;

/// Gunicorn's default access log format.
pub const DEFAULT_ACCESS_LOG_FORMAT: &str =
    r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#;

impl Layer {
    /// Checks each value that is set. Returns the offending setting's name and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        self.check_values().map_err(|(s, m)| (s.name, m))
    }
}

impl Config {
    /// `l` over the table's defaults.
    pub fn from_layer(l: Layer, source_file: Option<PathBuf>) -> Config {
        let bind_explicit = l.bind.is_some();
        let mut cfg = Config::resolve(l.over(Layer::defaults()));
        cfg.bind_explicit = bind_explicit;
        cfg.source_file = source_file;
        cfg
    }

    /// The configuration with nothing set: Gunicorn's defaults, no environment, no file.
    pub fn builtin_defaults() -> Config {
        Config::from_layer(Layer::default(), None)
    }

    /// The effective configuration as TOML that loads back to the same configuration.
    pub fn to_toml(&self) -> String {
        file::render(self)
    }

    /// The name in process titles: `--name`, else the app module.
    pub fn proc_name(&self) -> &str {
        self.name
            .as_deref()
            .or(self.app.as_deref())
            .unwrap_or("ferricorn")
    }

    pub fn app_spec(&self) -> &str {
        self.app.as_deref().unwrap_or("")
    }

    /// The trusted proxy list, parsed (validated when the config was loaded).
    pub fn forwarded(&self) -> ForwardedAllowIps {
        ForwardedAllowIps::parse(&self.forwarded_allow_ips).expect("validated at load")
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn file(text: &str) -> Result<Layer, String> {
        file_layer(Path::new("test.toml"), text)
    }

    #[test]
    fn precedence_default_env_file_cli() {
        let env = env_layer(|k| (k == "WEB_CONCURRENCY").then(|| "4".to_string())).unwrap();
        let d = Config::from_layer(Layer::default(), None);
        assert_eq!(d.workers, 1);
        assert_eq!(Config::from_layer(env.clone(), None).workers, 4);
        let f = file("workers = 6\n").unwrap();
        assert_eq!(
            Config::from_layer(f.clone().over(env.clone()), None).workers,
            6
        );
        let cli = Layer {
            workers: Some(8),
            ..Layer::default()
        };
        assert_eq!(Config::from_layer(cli.over(f.over(env)), None).workers, 8);
    }

    #[test]
    fn unknown_key_and_wrong_type_name_file_line_and_key() {
        let e = file("workers = 2\nwrokers = 3\n").unwrap_err();
        assert!(e.starts_with("test.toml:2:"), "{e}");
        assert!(e.contains("wrokers"), "{e}");
        let e = file("# c\n\nworkers = \"three\"\n").unwrap_err();
        assert!(e.starts_with("test.toml:3:"), "{e}");
        assert!(e.contains("workers"), "{e}");
        let e = file("threads = 2\nworkers = 0\n").unwrap_err();
        assert_eq!(
            e,
            "test.toml:2: key `workers`: 0 is out of range: expected 1 to 1024"
        );
        let e = file("bind = [\"host:nope\"]\n").unwrap_err();
        assert!(e.starts_with("test.toml:1:") && e.contains("bind"), "{e}");
    }

    #[test]
    fn snake_case_keys_are_accepted() {
        let l =
            file("graceful_timeout = 5\nkeepalive = 7\nlimit_request_field_size = 10\n").unwrap();
        assert_eq!(l.graceful_timeout, Some(5));
        assert_eq!(l.keep_alive, Some(7));
        assert_eq!(l.limit_request_field_size, Some(10));
    }

    #[test]
    fn print_config_round_trips() {
        let cli = Layer {
            app: Some("hello:app".into()),
            bind: Some(vec![
                "unix:/tmp/x.sock".parse().unwrap(),
                "[::1]:9".parse().unwrap(),
            ]),
            workers: Some(3),
            env: Some(vec!["A=1".into(), "B=x=y".into()]),
            access_logfile: Some(String::new()),
            forwarded_allow_ips: Some("*".into()),
            ..Layer::default()
        };
        let cfg = Config::from_layer(cli, None);
        let text = cfg.to_toml();
        let back = Config::from_layer(file(&text).unwrap(), None);
        assert_eq!(back, cfg, "{text}");
        assert!(parse_umask("0o27").unwrap() == 0o27 && parse_umask("027").unwrap() == 0o27);
        assert_eq!(parse_umask("18"), Ok(18));
        assert!(parse_umask("0o1000").is_err() && parse_umask("x").is_err());
        assert_eq!(back.to_toml(), text);
        assert_eq!(back.access_logfile, None);
    }

    #[test]
    fn env_layer_reports_the_variable() {
        let e = env_layer(|k| (k == "WEB_CONCURRENCY").then(|| "many".to_string())).unwrap_err();
        assert!(e.contains("WEB_CONCURRENCY=many"), "{e}");
        let e = env_layer(|k| (k == "WEB_CONCURRENCY").then(|| "0".to_string())).unwrap_err();
        assert!(e.contains("$WEB_CONCURRENCY"), "{e}");
        let l = env_layer(|k| (k == "PORT").then(|| "5000".to_string())).unwrap();
        assert_eq!(l.bind.unwrap()[0].to_string(), "0.0.0.0:5000");
    }

    #[test]
    fn forwarded_allow_ips_accepts_a_list_in_toml() {
        let l = file("forwarded-allow-ips = [\"10.0.0.0/8\", \"::1\"]\n").unwrap();
        assert_eq!(l.forwarded_allow_ips.as_deref(), Some("10.0.0.0/8,::1"));
    }
}

//! The command line: `ferricorn [OPTIONS] APP_MODULE`, with Gunicorn's flag names.
//!
//! The flags are the settings table's (`config`); errors in flags or values are one line
//! naming the flag and what it accepts, exit status 2.

use std::path::PathBuf;

use clap::Parser;

use crate::config::{self, Layer, Sources};
use crate::exit::{EXIT_FAILURE, EXIT_USAGE};
use crate::notify::{NOTIFY_ENV, NotifyEnv};

#[derive(Debug, Parser)]
#[command(
    name = "ferricorn",
    version = long_version(),
    about = "A systemd-native application server for Python WSGI apps.",
    after_help = "Config file: gunicorn.conf.py (Python, as Gunicorn reads it: settings and \
                  server hooks), or TOML with the settings' names as keys (workers = 3, \
                  bind = [\"unix:/run/app/socket\"]). Precedence: defaults < environment \
                  (WEB_CONCURRENCY, FORWARDED_ALLOW_IPS, PORT, VIRTUAL_ENV) < config file < \
                  GUNICORN_CMD_ARGS < flags. Gunicorn's other settings are accepted too; the \
                  README lists what each does here.\n\n\
                  Deployment files: ferricorn systemd generate [OPTIONS] APP_MODULE writes the \
                  systemd units, tmpfiles.d, nginx, logrotate, supervisor, runit, Procfile and \
                  upstart files for a configuration; ferricorn systemd check [FILES | --root DIR] \
                  checks installed ones."
)]
pub struct Cli {
    /// Every setting (`-c`, `--check-config` and `--print-config` included).
    #[command(flatten)]
    pub opts: Layer,
}

fn long_version() -> &'static str {
    Box::leak(
        format!("{} ({})", crate::VERSION, crate::python::describe_runtime()).into_boxed_str(),
    )
}

/// Entry point of the binary; returns the exit status.
pub fn main() -> i32 {
    // Keep the arguments: the process title later overwrites the memory they live in.
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    run(argv)
}

/// Runs ferricorn with a command line (the program name first): the binary's `main`, and the
/// wheel's entry point (`extension.rs`) with `sys.argv`. Returns the exit status.
pub fn run(argv: Vec<String>) -> i32 {
    // `ferricorn systemd generate|check ...`: deployment files (see `units`). To serve a
    // module named `systemd`, write `systemd:application`.
    if argv.get(1).map(String::as_str) == Some("systemd") {
        return crate::units::main(&argv);
    }
    let cli = match Cli::try_parse_from(&argv) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    let _ = e.print();
                    0
                }
                _ => {
                    eprintln!("{}", crate::usage::one_line(&e, "ferricorn --help"));
                    EXIT_USAGE
                }
            };
        }
    };
    let sources = match Sources::from_command_line(cli.opts, crate::checks::HOST) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ferricorn: error: {e}");
            return EXIT_USAGE;
        }
    };
    crate::python::set_argv(&argv);
    let one_shot = cli_flag(sources.cli.print_config) || cli_flag(sources.cli.check_config);
    if matches!(sources.config_file, Some(config::ConfigFile::Python(_))) && !one_shot {
        // A Python config file may start threads: they must inherit the master's blocked
        // signals (read from its signalfd), or a signal would be delivered to them instead.
        if let Err(e) = crate::master::block_signals() {
            eprintln!("ferricorn: error: {e}");
            return EXIT_FAILURE;
        }
    }
    let cfg = match sources.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ferricorn: error: {e}");
            return EXIT_USAGE;
        }
    };
    if cfg.print_config {
        for n in &cfg.notices {
            eprintln!("ferricorn: note: {n}");
        }
        print!("{}", cfg.to_toml());
        return 0;
    }
    if cfg.app.is_none() {
        eprintln!(
            "ferricorn: error: no app given: ferricorn [OPTIONS] module:callable \
             (or app = \"module:callable\" in the config file)"
        );
        return EXIT_USAGE;
    }
    // What systemd (or the master we replace) told us through the environment is read once
    // and removed, so neither the workers nor the app can act in the master's name.
    let notify = NotifyEnv::from_vars(|k| std::env::var(k).ok(), std::process::id());
    let predecessor = std::env::var(crate::master::UPGRADE_FROM_ENV)
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok());
    for v in NOTIFY_ENV.iter().chain([&crate::master::UPGRADE_FROM_ENV]) {
        // SAFETY: single-threaded: nothing else reads the environment concurrently.
        unsafe { std::env::remove_var(v) };
    }
    if cfg.daemon
        && let Some(why) = crate::daemon::refusal(
            notify.notifier.is_some(),
            std::env::var_os("INVOCATION_ID").is_some(),
        )
    {
        eprintln!("ferricorn: error: {why}");
        return EXIT_USAGE;
    }
    let start_cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    // What USR2 executes: this binary, or the virtualenv's `python -m ferricorn`.
    let (exe, upgrade_argv) = crate::python::upgrade_command(&argv);
    if let Some(dir) = &cfg.chdir
        && let Err(e) = std::env::set_current_dir(dir)
    {
        eprintln!("ferricorn: error: --chdir {}: {e}", dir.display());
        return EXIT_USAGE;
    }
    let mut env_applied = Vec::new();
    for kv in &cfg.env {
        if let Some((k, v)) = kv.split_once('=') {
            // SAFETY: still single-threaded: nothing else reads the environment concurrently.
            unsafe { std::env::set_var(k, v) };
            env_applied.push(k.to_string());
        }
    }
    if cfg.check_config {
        for n in &cfg.notices {
            eprintln!("ferricorn: note: {n}");
        }
        return check_config(&cfg, &argv);
    }
    if cfg.daemon
        && let Err(e) = crate::daemon::detach()
    {
        eprintln!("ferricorn: error: {e}");
        return EXIT_FAILURE;
    }
    if let Err(e) = crate::logging::init(&cfg) {
        eprintln!("ferricorn: error: {e}");
        return EXIT_FAILURE;
    }
    // Settings accepted with no effect here: one info line each.
    for n in &cfg.notices {
        tracing::info!("{n}");
    }
    crate::proctitle::init();
    // The interpreter starts in the master, before any worker forks (README "Architecture").
    if let Err(e) = crate::python::start(&cfg, &argv) {
        tracing::error!("{e}");
        return 1;
    }
    let startup = crate::master::Startup {
        sources,
        argv: upgrade_argv,
        exe,
        start_cwd,
        notify,
        predecessor,
        env_applied,
    };
    crate::master::run(cfg, startup)
}

fn cli_flag(v: Option<bool>) -> bool {
    v == Some(true)
}

/// `--check-config`: the config is valid (already checked) and the app imports.
fn check_config(cfg: &config::Config, argv: &[String]) -> i32 {
    if let Err(e) = crate::python::init(cfg, argv) {
        eprintln!("ferricorn: error: {e}");
        return EXIT_FAILURE;
    }
    match crate::python::load_app(cfg.app_spec()) {
        Ok(_) => {
            eprintln!(
                "ferricorn: configuration OK; app `{}` loaded",
                cfg.app_spec()
            );
            0
        }
        Err(e) => {
            if !e.traceback.is_empty() {
                eprint!("{}", e.traceback);
            }
            eprintln!(
                "ferricorn: error: the app `{}` failed to load: {}",
                cfg.app_spec(),
                e.reason
            );
            EXIT_FAILURE
        }
    }
}

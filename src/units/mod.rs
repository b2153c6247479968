//! `ferricorn systemd generate` and `ferricorn systemd check`: deployment files that cannot
//! drift from the server's configuration, and a checker for installed ones.
//!
//! - [`generate`]: the socket and service units, tmpfiles.d, nginx, logrotate, supervisor,
//!   runit, Procfile and upstart files, all from one resolved [`crate::config::Config`].
//! - [`check`]: reads installed units, tmpfiles.d entries and nginx configuration and reports
//!   the mistakes that break a deployment, with `FILE:LINE` and a fix.
//! - [`unitfile`], [`tmpfiles`], [`nginx`]: the small parsers they need.

pub mod check;
pub mod generate;
pub mod nginx;
pub mod tmpfiles;
pub mod unitfile;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{Layer, Sources};
use crate::exit::EXIT_USAGE;
use crate::usage::one_line;

#[derive(Debug, Parser)]
#[command(
    name = "ferricorn systemd",
    about = "Deployment files generated from ferricorn's configuration, and a checker for \
             installed ones."
)]
struct SystemdCli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Write the socket and service units, tmpfiles.d, nginx, logrotate, supervisor, runit,
    /// Procfile and upstart files for a configuration. Every server flag works; --name is
    /// the unit name (default: app) and the process name.
    Generate(Box<GenerateArgs>),
    /// Check installed units, tmpfiles.d entries and nginx configuration. Exit 0 when clean,
    /// 1 with findings, 2 when the files cannot be read.
    Check(CheckArgs),
}

#[derive(Debug, clap::Args)]
struct GenerateArgs {
    /// Every server setting, `-c FILE` included.
    #[command(flatten)]
    opts: Layer,

    /// The ferricorn executable on the target machine. [default: this ferricorn when it is a
    /// virtualenv's (pip) or installed under /usr, else /usr/bin/ferricorn]
    #[arg(long, value_name = "PATH")]
    exe: Option<PathBuf>,

    /// The group the proxy (nginx) runs as: the only group allowed to connect to the socket.
    #[arg(long, value_name = "GROUP", default_value = "www-data")]
    socket_group: String,

    /// WatchdogSec= for the service: systemd restarts a master silent this long.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    watchdog: Option<u64>,

    /// The systemd version to write for (Type=notify-reload from 253 on).
    /// [default: the installed one, else 252]
    #[arg(long, value_name = "N")]
    systemd_version: Option<u32>,

    /// Write the files under this directory (systemd/, tmpfiles.d/, packaging/); without it
    /// they are printed.
    #[arg(short = 'o', long, value_name = "DIR")]
    output: Option<PathBuf>,

    /// Print only this file.
    #[arg(long, value_enum, conflicts_with = "output")]
    only: Option<Only>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Only {
    Socket,
    Service,
    Tmpfiles,
    Nginx,
    NginxStreaming,
    Logrotate,
    Supervisor,
    Runit,
    RunitLog,
    Procfile,
    Upstart,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// Unit files, tmpfiles.d files, nginx configuration, or directories holding them.
    #[arg(
        value_name = "FILES",
        required_unless_present = "root",
        conflicts_with = "root"
    )]
    files: Vec<PathBuf>,

    /// Check an installed system under DIR (/ for this machine): etc/systemd/system,
    /// usr/lib/systemd/system, etc/tmpfiles.d, usr/lib/tmpfiles.d, etc/nginx; only the
    /// services that run ferricorn or gunicorn.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,

    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,

    /// The user (and group) nginx runs as. [default: nginx's `user` directive, else www-data]
    #[arg(long, value_name = "USER[:GROUP]")]
    nginx_user: Option<String>,
}

/// `ferricorn systemd ...`; `argv` is the whole command line. Returns the exit status.
pub fn main(argv: &[String]) -> i32 {
    let args = std::iter::once("ferricorn systemd".to_string()).chain(argv.iter().skip(2).cloned());
    let cli = match SystemdCli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            return match e.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = e.print();
                    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                        EXIT_USAGE
                    } else {
                        0
                    }
                }
                _ => {
                    eprintln!("{}", one_line(&e, "ferricorn systemd --help"));
                    EXIT_USAGE
                }
            };
        }
    };
    match cli.cmd {
        Cmd::Generate(g) => generate_main(*g),
        Cmd::Check(c) => check_main(c),
    }
}

fn generate_main(g: GenerateArgs) -> i32 {
    // PORT describes where a platform (Procfile) wants the server at run time, not the
    // socket of these units: the generated files must not depend on it.
    // SAFETY: single-threaded: nothing else reads the environment concurrently.
    unsafe { std::env::remove_var("PORT") };
    if g.opts.check_config.is_some() || g.opts.print_config.is_some() {
        eprintln!(
            "ferricorn: error: --check-config and --print-config are options of the server \
             (ferricorn --print-config ...), not of systemd generate"
        );
        return EXIT_USAGE;
    }
    let sources = match Sources::from_command_line(g.opts.clone(), crate::checks::TARGET) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ferricorn: error: {e}");
            return EXIT_USAGE;
        }
    };
    let cfg = match sources.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ferricorn: error: {e}");
            return EXIT_USAGE;
        }
    };
    for n in &cfg.notices {
        eprintln!("ferricorn: note: {n}");
    }
    if cfg.daemon {
        eprintln!(
            "ferricorn: note: --daemon/daemon = true is left out: systemd and the other \
             supervisors need ferricorn in the foreground"
        );
    }
    let systemd_version = match g.systemd_version {
        Some(v) => v,
        None => generate::installed_systemd_version().unwrap_or_else(|| {
            eprintln!(
                "ferricorn: note: cannot tell the installed systemd version (systemctl \
                 --version); writing for systemd {} (Type=notify + ExecReload=)",
                generate::FALLBACK_SYSTEMD_VERSION
            );
            generate::FALLBACK_SYSTEMD_VERSION
        }),
    };
    let exe = g.exe.clone().unwrap_or_else(generate::default_exe);
    let deploy = generate::DeployOptions {
        runtime_paths: generate::runtime_paths(&exe),
        exe,
        socket_group: g.socket_group.clone(),
        watchdog: g.watchdog,
        systemd_version,
    };
    let plan = match generate::Plan::new(&cfg, &deploy) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ferricorn: error: {e}");
            return EXIT_USAGE;
        }
    };
    if let Some(note) = &plan.protect_home_note {
        eprintln!("ferricorn: note: {note}");
    }
    let files = plan.files();
    if let Some(only) = g.only {
        let idx = match only {
            Only::Socket => 0,
            Only::Service => 1,
            Only::Tmpfiles => 2,
            Only::Nginx => 3,
            Only::NginxStreaming => 4,
            Only::Logrotate => 5,
            Only::Supervisor => 6,
            Only::Runit => 7,
            Only::RunitLog => 8,
            Only::Procfile => 9,
            Only::Upstart => 10,
        };
        print!("{}", files[idx].contents);
        return 0;
    }
    match &g.output {
        None => {
            for (i, f) in files.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                println!("==> {} <==", f.path);
                print!("{}", f.contents);
            }
            0
        }
        Some(dir) => match write_files(dir, &files) {
            Ok(()) => {
                eprintln!(
                    "ferricorn: wrote {} files under {}",
                    files.len(),
                    dir.display()
                );
                0
            }
            Err(e) => {
                eprintln!("ferricorn: error: {e}");
                1
            }
        },
    }
}

fn write_files(dir: &std::path::Path, files: &[generate::GeneratedFile]) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    for f in files {
        let path = dir.join(&f.path);
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p)
                .map_err(|e| format!("cannot create {}: {e}", p.display()))?;
        }
        std::fs::write(&path, &f.contents)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        let mode = if f.executable { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("cannot chmod {}: {e}", path.display()))?;
    }
    Ok(())
}

fn check_main(c: CheckArgs) -> i32 {
    let inputs = match &c.root {
        Some(root) => check::load_root(root),
        None => check::load_files(&c.files),
    };
    let inputs = match inputs {
        Ok(i) => i,
        Err(e) => {
            eprintln!("ferricorn: error: {e}");
            return EXIT_USAGE;
        }
    };
    let proxy = c.nginx_user.as_ref().map(|s| match s.split_once(':') {
        Some((u, g)) => check::Proxy {
            user: u.to_string(),
            group: g.to_string(),
        },
        None => check::Proxy {
            user: s.clone(),
            group: s.clone(),
        },
    });
    let findings = match check::check(&inputs, proxy) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("ferricorn: error: {e}");
            return EXIT_USAGE;
        }
    };
    let files = inputs.units.len() + inputs.tmpfiles.len() + inputs.nginx.len();
    match c.format {
        Format::Json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&findings).expect("findings serialize")
            );
        }
        Format::Text => {
            for f in &findings {
                print!("{}", f.text());
            }
            if findings.is_empty() {
                println!("no findings ({files} files checked)");
            } else {
                println!("{} finding(s) in {files} files checked", findings.len());
            }
        }
    }
    if findings.is_empty() { 0 } else { 1 }
}

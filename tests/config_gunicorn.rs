//! Every Gunicorn setting has a meaning in ferricorn: the settings table (one place in the
//! code, `ferricorn::config::{SETTINGS, HOOKS}`) holds each of Gunicorn's, and each one,
//! given on the command line (every spelling of its flag) and in a config file (under
//! Gunicorn's name), is either taken (works), accepted with a note saying why it has no
//! effect (ignored), or refused with the reason (refused, not yet) — never "unexpected
//! argument" or "unknown key".

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::server::{Output, ferricorn};
use ferricorn::config::spec::{Shape, Spec, Status};
use ferricorn::config::{Config, HOOKS, SETTINGS};

const EXIT_LIMIT: Duration = Duration::from_secs(30);

/// Gunicorn 26.2's settings registry (`gunicorn.config.KNOWN_SETTINGS`): reference data from
/// Gunicorn's settings documentation, to check the table against something it was not made
/// from.
const GUNICORN_26: &str = "
    config wsgi_app control_socket control_socket_mode control_socket_disable reload
    reload_engine reload_extra_files spew check_config print_config accesslog
    disable_redirect_access_to_syslog access_log_format errorlog loglevel capture_output
    logger_class logconfig logconfig_dict logconfig_json syslog_addr syslog syslog_prefix
    syslog_facility enable_stdio_inheritance statsd_host dogstatsd_tags statsd_prefix
    enable_backlog_metric proc_name default_proc_name keyfile certfile ssl_version cert_reqs
    ca_certs suppress_ragged_eofs do_handshake_on_connect ciphers http_protocols
    http2_cleartext http2_max_concurrent_streams http2_initial_window_size
    http2_max_frame_size http2_max_header_list_size limit_request_line limit_request_fields
    limit_request_field_size on_starting on_reload when_ready pre_fork post_fork
    post_worker_init worker_int worker_abort pre_exec pre_request post_request child_exit
    worker_exit nworkers_changed on_exit ssl_context preload_app sendfile reuse_port chdir
    daemon raw_env pidfile worker_tmp_dir user group umask initgroups tmp_upload_dir
    secure_scheme_headers forwarded_allow_ips pythonpath paste proxy_protocol proxy_allow_ips
    protocol uwsgi_allow_ips raw_paste_global_conf permit_obsolete_folding strip_header_spaces
    permit_unconventional_http_method permit_unconventional_http_version casefold_http_method
    forwarder_headers header_map root_path http_parser bind backlog workers worker_class
    threads worker_connections max_requests max_requests_jitter timeout graceful_timeout
    keepalive asgi_loop asgi_lifespan asgi_disconnect_grace_period dirty_apps dirty_workers
    dirty_timeout dirty_threads dirty_graceful_timeout on_dirty_starting dirty_post_fork
    dirty_worker_init dirty_worker_exit
";

/// Gunicorn 26.x's command-line flags (its `--help`), but `-h/--help` and `-v/--version`.
const GUNICORN_26_FLAGS: &str = "
    -c --config -b --bind --backlog -w --workers -k --worker-class --threads
    --worker-connections --max-requests --max-requests-jitter -t --timeout --graceful-timeout
    --keep-alive --limit-request-line --limit-request-fields --limit-request-field_size
    --reload-engine --reload-extra-file --chdir -e --env -p --pid --worker-tmp-dir -u --user
    -g --group -m --umask --forwarded-allow-ips --access-logfile --access-logformat
    --error-logfile --log-file --log-level --logger-class --log-config --log-config-json
    --log-syslog-to --log-syslog-prefix --log-syslog-facility --statsd-host --dogstatsd-tags
    --statsd-prefix -n --name --pythonpath --paste --paster --proxy-allow-from --protocol
    --uwsgi-allow-from --keyfile --certfile --ssl-version --cert-reqs --ca-certs --ciphers
    --http-protocols --http2-cleartext --http2-max-concurrent-streams
    --http2-initial-window-size --http2-max-frame-size --http2-max-header-list-size
    --paste-global --forwarder-headers --header-map --asgi-loop --asgi-lifespan
    --asgi-disconnect-grace-period --http-parser --root-path --dirty-app --dirty-workers
    --dirty-timeout --dirty-threads --dirty-graceful-timeout --control-socket
    --control-socket-mode --reload --spew --check-config --print-config --preload
    --no-sendfile --reuse-port -D --daemon --initgroups --disable-redirect-access-to-syslog
    --capture-output --log-syslog -R --enable-stdio-inheritance --enable-backlog-metric
    --suppress-ragged-eofs --do-handshake-on-connect --permit-obsolete-folding
    --strip-header-spaces --permit-unconventional-http-method
    --permit-unconventional-http-version --casefold-http-method --no-control-socket
    --proxy-protocol
";

fn gunicorn_settings() -> impl Iterator<Item = (&'static str, &'static Spec)> {
    SETTINGS
        .iter()
        .filter_map(|s| s.gunicorn_name().map(|g| (g, s)))
}

#[test]
fn the_table_holds_every_gunicorn_setting() {
    let reference: BTreeSet<&str> = GUNICORN_26.split_whitespace().collect();
    let table: BTreeSet<&str> = gunicorn_settings()
        .map(|(g, _)| g)
        .chain(HOOKS.iter().map(|h| h.name))
        .collect();
    let missing: Vec<_> = reference.difference(&table).collect();
    let extra: Vec<_> = table.difference(&reference).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, not Gunicorn's {extra:?}"
    );
    assert_eq!(reference.len(), 119);
    let flags: BTreeSet<String> = SETTINGS
        .iter()
        .flat_map(|s| {
            let mut f: Vec<String> = s.long.iter().map(|l| format!("--{l}")).collect();
            f.extend(s.aliases.iter().map(|a| format!("--{a}")));
            f.extend(s.short.iter().map(|c| format!("-{c}")));
            f
        })
        .collect();
    let missing: Vec<_> = GUNICORN_26_FLAGS
        .split_whitespace()
        .filter(|f| !flags.contains(*f))
        .collect();
    assert!(
        missing.is_empty(),
        "Gunicorn flags the table lacks: {missing:?}"
    );
}

/// How a setting answers a value other than its default.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Works,
    Note,
    Refused,
}

/// A value other than the default, valid for the setting: the command-line words after the
/// flag (none for a switch) and the config-file value.
fn sample(name: &str, spec: &Spec) -> (Option<String>, toml::Value) {
    let s = |v: &str| (Some(v.to_string()), toml::Value::String(v.into()));
    let list = |v: &str| {
        (
            Some(v.to_string()),
            toml::Value::Array(vec![toml::Value::String(v.into())]),
        )
    };
    match name {
        "config" => return s("sample.toml"),
        "wsgi_app" => return s("hello:app"),
        "bind" => return list("127.0.0.1:9"),
        "raw_env" => return list("A=1"),
        "http_protocols" => return list("h2"),
        "forwarder_headers" => return list("REMOTE_USER"),
        "reload_engine" => return s("poll"),
        "http_parser" => return s("python"),
        "asgi_loop" => return s("asyncio"),
        "asgi_lifespan" => return s("on"),
        "header_map" => return s("refuse"),
        "protocol" => return s("uwsgi"),
        "http2_cleartext" => return s("on"),
        "worker_class" => return s("gthread"),
        "logger_class" => return s("simple"),
        "statsd_host" => return s("localhost:8125"),
        "forwarded_allow_ips" | "proxy_allow_ips" | "uwsgi_allow_ips" => return s("10.0.0.0/8"),
        "loglevel" => return s("debug"),
        "access_log_format" => return s("%(h)s %(r)s"),
        "chdir" => return s("/tmp"),
        "user" | "group" => return s("root"),
        "umask" => return (Some("007".into()), toml::Value::Integer(7)),
        "control_socket_mode" => return (Some("0o660".into()), toml::Value::Integer(0o660)),
        "cert_reqs" => return (Some("2".into()), toml::Value::Integer(2)),
        "secure_scheme_headers" => {
            let mut t = toml::Table::new();
            t.insert("X-FORWARDED-PROTO".into(), "https".into());
            return (
                Some("X-FORWARDED-PROTO=https".into()),
                toml::Value::Table(t),
            );
        }
        "logconfig_dict" => {
            let mut t = toml::Table::new();
            t.insert("version".into(), 1.into());
            return (None, toml::Value::Table(t));
        }
        _ => {}
    }
    let default = Config::builtin_defaults().to_layer().get_toml(spec.name);
    match spec.shape {
        // The one switch whose flag sets its default: the file says the other value.
        Shape::Switch(_) if name == "suppress_ragged_eofs" => (None, toml::Value::Boolean(false)),
        Shape::Switch(v) => (None, toml::Value::Boolean(v == "true")),
        Shape::OptionalValue(_) => (None, toml::Value::String("v2".into())),
        Shape::Repeat | Shape::Comma => list("x"),
        _ => match default {
            Some(toml::Value::Integer(n)) => {
                (Some((n + 1).to_string()), toml::Value::Integer(n + 1))
            }
            _ => s("x"),
        },
    }
}

fn expect(name: &str, spec: &Spec, on_cli: bool) -> Expect {
    match name {
        // Refused for the sample value (other values work).
        "protocol" | "header_map" | "http2_cleartext" | "http_protocols" => Expect::Refused,
        // In a config file it names no file (as in Gunicorn).
        "config" if !on_cli => Expect::Note,
        // The flag sets the default (as in Gunicorn, where it is store_true of a True).
        "suppress_ragged_eofs" if on_cli => Expect::Works,
        _ => match spec.status {
            Status::Works => Expect::Works,
            Status::Ignored(_) => Expect::Note,
            Status::Refused(_) | Status::NotYet(_) => Expect::Refused,
        },
    }
}

fn print_config(cwd: &Path, args: &[String]) -> Output {
    let b = ferricorn().cwd(cwd).arg("--print-config");
    b.args(args.iter().cloned()).run_to_exit(EXIT_LIMIT)
}

/// The output shows `name` (as `spec`) doing what `want` says; `how` says what was run.
fn check(out: &Output, name: &str, spec: &Spec, want: Expect, how: &str) {
    let show = || {
        format!(
            "{how}: want {want:?}, got exit {:?}\n--- stderr ---\n{}--- stdout ---\n{}",
            out.code, out.stderr, out.stdout
        )
    };
    for bad in ["unexpected argument", "unknown setting", "panicked"] {
        assert!(!out.stderr.contains(bad), "{}", show());
    }
    match want {
        Expect::Works | Expect::Note => {
            assert_eq!(out.code, Some(0), "{}", show());
            // Printed: every setting that works, and any other one away from its default.
            if !spec.action && (spec.status == Status::Works || want == Expect::Note) {
                let key = format!("{} = ", spec.key());
                assert!(
                    out.stdout.lines().any(|l| l.starts_with(&key)),
                    "{}",
                    show()
                );
            }
            let noted = out.stderr.lines().any(|l| {
                l.starts_with("ferricorn: note: ")
                    && (l.contains(&format!("`{name}` has no effect in ferricorn: "))
                        || l.contains("has no effect in a config file"))
            });
            assert_eq!(noted, want == Expect::Note, "{}", show());
        }
        Expect::Refused => {
            assert_eq!(out.code, Some(2), "{}", show());
            let lines: Vec<&str> = out
                .stderr
                .lines()
                .filter(|l| !l.trim().is_empty())
                .collect();
            assert_eq!(lines.len(), 1, "{}", show());
            assert!(lines[0].starts_with("ferricorn: error: "), "{}", show());
            assert!(
                lines[0].contains(&format!("`{name}`"))
                    && (lines[0].contains(" is not supported by ferricorn: ")
                        || lines[0].contains(" is not implemented in ferricorn yet: ")),
                "{}",
                show()
            );
            assert!(out.stdout.trim().is_empty(), "{}", show());
        }
    }
}

#[test]
fn every_gunicorn_setting_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sample.toml"), "").unwrap();
    let mut runs = 0;
    for (name, spec) in gunicorn_settings() {
        let (value, _) = sample(name, spec);
        let mut spellings: Vec<String> = spec.long.iter().map(|l| format!("--{l}")).collect();
        spellings.extend(spec.aliases.iter().map(|a| format!("--{a}")));
        spellings.extend(spec.short.iter().map(|c| format!("-{c}")));
        if spec.shape == Shape::Positional {
            spellings.push(String::new());
        }
        for flag in spellings {
            let mut args = Vec::new();
            // A flag whose value is optional takes the next word, as Gunicorn's does: the
            // app goes first.
            if name != "wsgi_app" {
                args.push("hello:app".into());
            }
            if !flag.is_empty() {
                args.push(flag.clone());
            }
            if let Some(v) = &value {
                args.push(v.clone());
            }
            let out = print_config(dir.path(), &args);
            check(
                &out,
                name,
                spec,
                expect(name, spec, true),
                &format!("ferricorn --print-config {}", args.join(" ")),
            );
            runs += 1;
        }
    }
    assert!(runs > 100, "{runs} command lines");
}

#[test]
fn every_gunicorn_setting_in_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sample.toml"), "").unwrap();
    let file = dir.path().join("gunicorn-names.toml");
    for (name, spec) in gunicorn_settings() {
        let (_, value) = sample(name, spec);
        let text = format!("# {name}\n{name} = {value}\n");
        std::fs::write(&file, &text).unwrap();
        let out = print_config(
            dir.path(),
            &["-c".into(), file.display().to_string(), "hello:app".into()],
        );
        check(
            &out,
            name,
            spec,
            expect(name, spec, false),
            &format!("-c with\n{text}"),
        );
        if expect(name, spec, false) == Expect::Refused {
            assert!(
                out.stderr.contains("gunicorn-names.toml:2: key `"),
                "the file and line are named\n{}",
                out.stderr
            );
        }
    }
    for h in HOOKS {
        let text = format!("{} = \"myapp.hooks.{}\"\n", h.name, h.name);
        std::fs::write(&file, &text).unwrap();
        let out = print_config(
            dir.path(),
            &["-c".into(), file.display().to_string(), "hello:app".into()],
        );
        assert_eq!(out.code, Some(2), "{text}\n{}", out.stderr);
        let want = format!(
            "gunicorn-names.toml:1: key `{}`: `{}` is a server hook",
            h.name, h.signature
        );
        assert!(out.stderr.contains(&want), "{want}\n{}", out.stderr);
        assert!(out.stderr.contains(h.status.reason()), "{}", out.stderr);
        if h.status == Status::Works {
            assert!(
                out.stderr
                    .contains("define it as a function in a Python config file"),
                "{}",
                out.stderr
            );
        }
    }
}

/// A TOML value as a Python literal.
fn python_literal(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => serde_json::to_string(s).unwrap(),
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => if *b { "True" } else { "False" }.to_string(),
        toml::Value::Array(a) => {
            format!(
                "[{}]",
                a.iter().map(python_literal).collect::<Vec<_>>().join(", ")
            )
        }
        toml::Value::Table(t) => format!(
            "{{{}}}",
            t.iter()
                .map(|(k, v)| format!(
                    "{}: {}",
                    serde_json::to_string(k).unwrap(),
                    python_literal(v)
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => panic!("no Python literal for {other:?}"),
    }
}

/// The same list, in a Python config file (Gunicorn's `gunicorn.conf.py`), under Gunicorn's
/// names; and every server hook defined there as a function.
#[test]
fn every_gunicorn_setting_and_hook_in_a_python_config_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sample.toml"), "").unwrap();
    let file = dir.path().join("gunicorn.conf.py");
    let run = || {
        print_config(
            dir.path(),
            &["-c".into(), file.display().to_string(), "hello:app".into()],
        )
    };
    for (name, spec) in gunicorn_settings() {
        let (_, value) = sample(name, spec);
        let text = format!("import os\n{name} = {}\n", python_literal(&value));
        std::fs::write(&file, &text).unwrap();
        let out = run();
        check(
            &out,
            name,
            spec,
            expect(name, spec, false),
            &format!("-c with\n{text}"),
        );
        if expect(name, spec, false) == Expect::Refused {
            assert!(
                out.stderr
                    .contains(&format!("gunicorn.conf.py:2: setting `{name}`")),
                "the file, line and setting are named\n{}",
                out.stderr
            );
        }
    }
    for h in HOOKS {
        let args: Vec<String> = h.signature[h.name.len() + 1..h.signature.len() - 1]
            .split(',')
            .map(|a| a.trim().to_string())
            .collect();
        let text = format!("\n\ndef {}({}):\n    pass\n", h.name, args.join(", "));
        std::fs::write(&file, &text).unwrap();
        let out = run();
        match h.status {
            Status::Works => assert_eq!(out.code, Some(0), "{text}\n{}", out.stderr),
            _ => {
                assert_eq!(out.code, Some(2), "{text}\n{}", out.stderr);
                let want = format!(
                    "gunicorn.conf.py:3: `{}`: the server hook `{}`",
                    h.name, h.signature
                );
                assert!(out.stderr.contains(&want), "{want}\n{}", out.stderr);
                assert!(out.stderr.contains(h.status.reason()), "{}", out.stderr);
            }
        }
    }
}

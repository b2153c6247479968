//! The command line and its Gunicorn neighbours: `GUNICORN_CMD_ARGS` and its rank,
//! `-k/--worker-class`, Python config files (not read yet), `--print-config` round trips, and
//! what a server says at start about a setting that has no effect here.

mod common;

use std::path::Path;
use std::time::Duration;

use common::client::get;
use common::server::{Output, ServerBuilder, examples_dir, ferricorn};

const EXIT_LIMIT: Duration = Duration::from_secs(30);

/// `ferricorn ARGS` in `cwd`, with no setting from the test's environment.
fn builder(cwd: &Path, args: &[&str]) -> ServerBuilder {
    ferricorn().args(args.iter().copied()).cwd(cwd)
}

fn show(out: &Output) -> String {
    format!(
        "--- exit {:?} ---\n--- stderr ---\n{}--- stdout ---\n{}",
        out.code, out.stderr, out.stdout
    )
}

/// `--print-config` output, with `GUNICORN_CMD_ARGS` (if any) and `env`.
fn printed(cwd: &Path, cmd_args: Option<&str>, env: &[(&str, &str)], args: &[&str]) -> String {
    let mut b = builder(cwd, &[&["--print-config"], args].concat());
    if let Some(a) = cmd_args {
        b = b.env("GUNICORN_CMD_ARGS", a);
    }
    for (k, v) in env {
        b = b.env(k, v);
    }
    let out = b.run_to_exit(EXIT_LIMIT);
    assert_eq!(out.code, Some(0), "{}", show(&out));
    out.stdout
}

/// The value of `key = VALUE` in printed TOML.
fn value_of(toml: &str, key: &str) -> String {
    let prefix = format!("{key} = ");
    let found: Vec<&str> = toml
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .collect();
    assert_eq!(found.len(), 1, "want one `{key} = ` line in:\n{toml}");
    found[0].to_string()
}

/// A refused command line: exit 2, one error line (returned), nothing started.
fn refused(cwd: &Path, cmd_args: Option<&str>, args: &[&str]) -> String {
    let mut b = builder(cwd, args);
    if let Some(a) = cmd_args {
        b = b.env("GUNICORN_CMD_ARGS", a);
    }
    let out = b.run_to_exit(EXIT_LIMIT);
    assert_eq!(out.code, Some(2), "{}", show(&out));
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "want one error line\n{}", show(&out));
    assert!(lines[0].starts_with("ferricorn: error: "), "{}", show(&out));
    assert!(!out.stderr.contains("panicked"), "{}", show(&out));
    lines[0].to_string()
}

#[test]
fn gunicorn_cmd_args_rank_between_the_config_file_and_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let workers = |cmd_args: Option<&str>, env: &[(&str, &str)], args: &[&str]| {
        value_of(&printed(cwd, cmd_args, env, args), "workers")
    };
    // Without a file: environment < GUNICORN_CMD_ARGS < command line.
    let wc = [("WEB_CONCURRENCY", "5")];
    assert_eq!(workers(None, &wc, &["hello:app"]), "5");
    assert_eq!(workers(Some("-w 3"), &wc, &["hello:app"]), "3");
    assert_eq!(workers(Some("-w 3"), &wc, &["-w", "4", "hello:app"]), "4");
    // With ./ferricorn.toml: the file beats the environment, GUNICORN_CMD_ARGS beats the
    // file, the command line beats both.
    std::fs::write(cwd.join("ferricorn.toml"), "workers = 2\nthreads = 6\n").unwrap();
    assert_eq!(workers(None, &wc, &["hello:app"]), "2");
    assert_eq!(workers(Some("--workers=3"), &wc, &["hello:app"]), "3");
    assert_eq!(
        workers(Some("--workers=3"), &wc, &["-w", "4", "hello:app"]),
        "4"
    );
    // Settings GUNICORN_CMD_ARGS does not name still come from the file.
    let out = printed(
        cwd,
        Some("--bind=127.0.0.1:5 --workers=3"),
        &[],
        &["hello:app"],
    );
    assert_eq!(value_of(&out, "threads"), "6", "{out}");
    assert_eq!(value_of(&out, "bind"), "[\"127.0.0.1:5\"]", "{out}");
    // GUNICORN_CMD_ARGS may name the config file; a -c on the command line wins.
    std::fs::write(cwd.join("other.toml"), "workers = 7\n").unwrap();
    std::fs::write(cwd.join("third.toml"), "workers = 8\n").unwrap();
    let out = printed(cwd, Some("-c other.toml"), &[], &["hello:app"]);
    assert_eq!(value_of(&out, "workers"), "7", "{out}");
    assert_eq!(
        value_of(&out, "threads"),
        "1",
        "./ferricorn.toml is not read\n{out}"
    );
    assert_eq!(
        workers(
            Some("-c other.toml"),
            &[],
            &["-c", "third.toml", "hello:app"]
        ),
        "8"
    );
    // Shell quoting, as Gunicorn splits the variable.
    let out = printed(cwd, Some("-e 'GREETING=hello world'"), &[], &["hello:app"]);
    assert_eq!(value_of(&out, "env"), "[\"GREETING=hello world\"]", "{out}");
}

#[test]
fn gunicorn_cmd_args_errors_name_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let e = refused(dir.path(), Some("--workers many"), &["hello:app"]);
    assert!(
        e.contains("GUNICORN_CMD_ARGS: ") && e.contains("--workers"),
        "{e}"
    );
    let e = refused(dir.path(), Some("--no-such-flag"), &["hello:app"]);
    assert!(
        e.contains("GUNICORN_CMD_ARGS: ") && e.contains("--no-such-flag"),
        "{e}"
    );
    let e = refused(dir.path(), Some("-w 'two"), &["hello:app"]);
    assert!(e.contains("GUNICORN_CMD_ARGS: unbalanced"), "{e}");
    let e = refused(dir.path(), Some("--workers 0"), &["hello:app"]);
    assert!(
        e.contains("GUNICORN_CMD_ARGS: invalid value for '--workers'"),
        "{e}"
    );
    // A refused setting there says so.
    let e = refused(dir.path(), Some("--certfile c.pem"), &["hello:app"]);
    assert!(
        e.contains("GUNICORN_CMD_ARGS --certfile: `certfile`"),
        "{e}"
    );
    // A positional argument there is ignored, as Gunicorn ignores it, and said so.
    let out = builder(dir.path(), &["--print-config", "hello:app"])
        .env("GUNICORN_CMD_ARGS", "-w 2 other:app")
        .run_to_exit(EXIT_LIMIT);
    assert_eq!(out.code, Some(0), "{}", show(&out));
    assert_eq!(value_of(&out.stdout, "app"), "\"hello:app\"");
    assert!(
        out.stderr
            .contains("the positional argument `other:app` is ignored"),
        "{}",
        show(&out)
    );
}

#[test]
fn print_config_round_trips_with_gunicorn_settings() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let first = printed(
        cwd,
        Some("--worker-connections 50 --keep-alive 9"),
        &[],
        &[
            "-k",
            "gthread",
            "--threads",
            "4",
            "--worker-tmp-dir",
            "/dev/shm",
            "--no-sendfile",
            "--asgi-loop",
            "uvloop",
            "--access-logformat",
            "%(h)s %(s)s",
            "hello:app",
        ],
    );
    for (key, want) in [
        ("worker-class", "\"gthread\""),
        ("threads", "4"),
        ("worker-tmp-dir", "\"/dev/shm\""),
        ("sendfile", "false"),
        ("asgi-loop", "\"uvloop\""),
        ("worker-connections", "50"),
        ("keep-alive", "9"),
        ("access-log-format", "\"%(h)s %(s)s\""),
    ] {
        assert_eq!(value_of(&first, key), want, "{first}");
    }
    let saved = cwd.join("saved.toml");
    std::fs::write(&saved, &first).unwrap();
    let second = printed(cwd, None, &[], &["-c", saved.to_str().unwrap()]);
    assert_eq!(
        first, second,
        "--print-config does not load back to the same"
    );
}

#[test]
fn worker_classes_other_than_ours_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for (class, want) in [
        ("gevent", "no gevent worker; use --threads N"),
        ("eventlet", "no eventlet worker; use --threads N"),
        ("tornado", "no tornado worker; use --threads N"),
        (
            "gunicorn.workers.ggevent.GeventWorker",
            "no gevent worker; use --threads N",
        ),
        (
            "myproject.workers.Special",
            "`myproject.workers.Special` cannot be used",
        ),
    ] {
        let e = refused(dir.path(), None, &["-k", class, "hello:app"]);
        assert!(e.contains(want), "-k {class}: {e}");
        let e = refused(dir.path(), None, &["--worker-class", class, "hello:app"]);
        assert!(e.contains(want), "--worker-class {class}: {e}");
    }
    // The ASGI classes are ferricorn's ASGI worker (issue 15).
    for class in [
        "asgi",
        "uvicorn.workers.UvicornWorker",
        "uvicorn_worker.UvicornWorker",
    ] {
        let p = printed(dir.path(), None, &[], &["-k", class, "hello:app"]);
        assert_eq!(value_of(&p, "worker-class"), format!("\"{class}\""));
    }
    // In a config file, under Gunicorn's name, with the file and line.
    std::fs::write(
        dir.path().join("k.toml"),
        "workers = 2\nworker_class = \"gevent\"\n",
    )
    .unwrap();
    let e = refused(dir.path(), None, &["-c", "k.toml", "hello:app"]);
    assert!(e.contains("k.toml:2: key `worker-class`"), "{e}");
}

fn environ_of(args: &[&str]) -> serde_json::Value {
    let all = [&["-b", "127.0.0.1:0"], args, &["spec:app"]].concat();
    let server = builder(&examples_dir(), &all).spawn();
    server.wait_ready(Duration::from_secs(30));
    let r = get(&server.addr(), "/environ").unwrap_or_else(|e| panic!("{e}\n{}", server.report()));
    assert_eq!(r.status, 200, "{}", server.report());
    r.json()
}

#[test]
fn worker_class_gthread_and_sync_are_our_workers() {
    let e = environ_of(&["-k", "gthread", "--threads", "4"]);
    assert_eq!(e["wsgi.multithread"], true, "{e}");
    let e = environ_of(&["-k", "sync"]);
    assert_eq!(e["wsgi.multithread"], false, "{e}");
    // Gunicorn switches `sync` with --threads above 1 to threads; so do ours.
    let e = environ_of(&["--worker-class", "sync", "--threads", "2"]);
    assert_eq!(e["wsgi.multithread"], true, "{e}");
}

#[test]
fn a_setting_without_effect_is_one_info_line_at_start() {
    let server = builder(
        &examples_dir(),
        &[
            "-b",
            "127.0.0.1:0",
            "-w",
            "2",
            "--worker-tmp-dir",
            "/dev/shm",
            "hello:app",
        ],
    )
    .env("GUNICORN_CMD_ARGS", "--reuse-port")
    .spawn();
    server.wait_ready(Duration::from_secs(30));
    let r = get(&server.addr(), "/").unwrap_or_else(|e| panic!("{e}\n{}", server.report()));
    assert_eq!(r.status, 200, "{}", server.report());
    for needle in [
        "--worker-tmp-dir: `worker_tmp_dir` has no effect in ferricorn: workers write no \
         heartbeat files",
        "GUNICORN_CMD_ARGS --reuse-port: `reuse_port` has no effect in ferricorn",
    ] {
        assert_eq!(
            server.count_stderr(needle),
            1,
            "{needle}\n{}",
            server.report()
        );
    }
    let line = server
        .stderr()
        .lines()
        .find(|l| l.contains("`worker_tmp_dir`"))
        .unwrap_or_default()
        .to_string();
    assert!(line.contains("[INFO]"), "an info line: {line}");
}

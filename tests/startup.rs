//! Start-up: app loading failures, command-line and config-file errors,
//! configuration precedence, `--print-config` / `--check-config`, app
//! factories, the embedded interpreter's identity, virtualenvs and bind errors
//! (issue 2, acceptance 6 to 8); the pid file, stale or held by a running server,
//! and `--daemon`, detaching in a plain shell but refused under a supervisor
//! (issue 3, acceptance 7); `-e KEY=VALUE` in the app's environment.
//!
//! Servers bind `127.0.0.1:0` or unix sockets in temp dirs, and every run is
//! bounded, so the tests can run in parallel.

mod common;

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{client::*, server::*, workers};

const EXIT_LIMIT: Duration = Duration::from_secs(30);
/// How long a server may take to start, answer or stop.
const T: Duration = Duration::from_secs(30);

/// `ferricorn ARGS` in `cwd` with the environment knobs removed.
fn builder(cwd: &Path, args: &[&str]) -> ServerBuilder {
    ferricorn().args(args.iter().copied()).cwd(cwd)
}

/// A process name unique to this test run, for finding leftover processes.
fn unique_name(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "fcstartup-{}-{}-{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Pids (other than ours) whose command line contains `needle`.
fn procs_with(needle: &str) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter_map(|pid| {
            let cmd = proc_cmdline(pid);
            cmd.contains(needle).then_some((pid, cmd))
        })
        .collect()
}

/// No process is left whose command line mentions `name` (allowing a moment
/// for processes that are already dying).
fn assert_no_orphans(name: &str, out: &Output) {
    let ok = wait_until(Duration::from_secs(2), || procs_with(name).is_empty());
    assert!(
        ok,
        "processes left behind: {:?}\n{}",
        procs_with(name),
        show(out)
    );
}

fn show(out: &Output) -> String {
    format!(
        "--- exit {:?} (signal {:?}) ---\n--- stderr ---\n{}--- stdout ---\n{}--- end ---",
        out.code, out.signal, out.stderr, out.stdout
    )
}

/// No Rust panic in the output, and the process exited by itself.
fn assert_clean(out: &Output) {
    for bad in ["panicked", "RUST_BACKTRACE"] {
        assert!(
            !out.stderr.contains(bad) && !out.stdout.contains(bad),
            "{bad:?} in the output\n{}",
            show(out)
        );
    }
    assert_eq!(out.signal, None, "killed by a signal\n{}", show(out));
}

/// Non-empty lines of `s`.
fn lines(s: &str) -> Vec<&str> {
    s.lines().filter(|l| !l.trim().is_empty()).collect()
}

// ---------------------------------------------------------------------------
// 1-3, 6. apps that cannot be loaded
// ---------------------------------------------------------------------------

/// Runs `ferricorn -b 127.0.0.1:0 -n NAME APP` in examples/ to its exit, and
/// checks the exit is clean (code 4, no panic, no orphan).
fn failing_app(app: &str) -> Output {
    let name = unique_name("app");
    let out =
        builder(&examples_dir(), &["-b", "127.0.0.1:0", "-n", &name, app]).run_to_exit(EXIT_LIMIT);
    assert_eq!(out.code, Some(4), "{}", show(&out));
    assert_clean(&out);
    assert_no_orphans(&name, &out);
    out
}

#[test]
fn missing_module_exits_4_with_traceback() {
    let out = failing_app("nosuchmodule:app");
    assert!(
        out.stderr.contains("Traceback (most recent call last):"),
        "{}",
        show(&out)
    );
    assert!(
        out.stderr
            .lines()
            .any(|l| l.trim() == "ModuleNotFoundError: No module named 'nosuchmodule'"),
        "{}",
        show(&out)
    );
    // A one-line reason from the server, after the traceback.
    let all: Vec<&str> = out.stderr.lines().collect();
    let traceback = all
        .iter()
        .position(|l| l.contains("Traceback (most recent call last):"))
        .unwrap();
    let reason = all
        .iter()
        .rposition(|l| l.contains("[ERROR]") && l.contains("No module named 'nosuchmodule'"));
    assert!(
        reason.is_some_and(|r| r > traceback),
        "no one-line reason after the traceback\n{}",
        show(&out)
    );
}

#[test]
fn syntax_error_exits_4() {
    let out = failing_app("broken_syntax:app");
    assert!(out.stderr.contains("SyntaxError"), "{}", show(&out));
    assert!(out.stderr.contains("broken_syntax.py"), "{}", show(&out));
}

#[test]
fn missing_attribute_exits_4() {
    let out = failing_app("hello:nope");
    assert!(
        out.stderr
            .contains("Failed to find attribute 'nope' in 'hello'"),
        "{}",
        show(&out)
    );
}

// ---------------------------------------------------------------------------
// 4, 6. bad config files
// ---------------------------------------------------------------------------

/// Runs `ferricorn -c bad.toml` with `bad.toml` holding `toml`; expects exit 2.
fn bad_config(toml: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.toml"), toml).unwrap();
    let name = unique_name("cfg");
    let examples = examples_dir();
    let out = builder(
        dir.path(),
        &[
            "-c",
            "bad.toml",
            "-b",
            "127.0.0.1:0",
            "-n",
            &name,
            "--chdir",
            examples.to_str().unwrap(),
            "hello:app",
        ],
    )
    .run_to_exit(EXIT_LIMIT);
    assert_eq!(out.code, Some(2), "{}", show(&out));
    assert_clean(&out);
    assert_no_orphans(&name, &out);
    let l = lines(&out.stderr);
    assert_eq!(l.len(), 1, "want one error line\n{}", show(&out));
    assert!(l[0].starts_with("ferricorn: error: "), "{}", show(&out));
    out
}

#[test]
fn config_syntax_error_names_file_and_line() {
    let out = bad_config("# settings\nthreads = 2\nworkers = [\n");
    assert!(out.stderr.contains("bad.toml:3"), "{}", show(&out));
}

#[test]
fn config_unknown_key_names_file_line_and_key() {
    let out = bad_config("threads = 2\nwrokers = 3\n");
    assert!(out.stderr.contains("bad.toml:2"), "{}", show(&out));
    assert!(out.stderr.contains("wrokers"), "{}", show(&out));
}

#[test]
fn config_wrong_type_names_line_and_key() {
    let out = bad_config("# settings\nworkers = \"three\"\n");
    assert!(out.stderr.contains("bad.toml:2"), "{}", show(&out));
    assert!(out.stderr.contains("workers"), "{}", show(&out));
}

// ---------------------------------------------------------------------------
// 5, 6. bad flags
// ---------------------------------------------------------------------------

fn bad_flag(args: &[&str]) -> Output {
    let name = unique_name("flag");
    let mut all = vec!["-b", "127.0.0.1:0", "-n", &name];
    all.extend_from_slice(args);
    all.push("hello:app");
    let out = builder(&examples_dir(), &all).run_to_exit(EXIT_LIMIT);
    assert_eq!(out.code, Some(2), "{}", show(&out));
    assert_clean(&out);
    assert_no_orphans(&name, &out);
    let l = lines(&out.stderr);
    assert_eq!(l.len(), 1, "want exactly one error line\n{}", show(&out));
    assert!(l[0].starts_with("ferricorn: error: "), "{}", show(&out));
    assert!(out.stdout.trim().is_empty(), "{}", show(&out));
    out
}

#[test]
fn unknown_flag() {
    let out = bad_flag(&["--nope"]);
    assert!(out.stderr.contains("'--nope'"), "{}", show(&out));
}

#[test]
fn bad_workers_value() {
    let out = bad_flag(&["-w", "abc"]);
    assert!(out.stderr.contains("'--workers"), "{}", show(&out));
}

#[test]
fn bad_log_level_lists_possible_values() {
    let out = bad_flag(&["--log-level", "loud"]);
    assert!(out.stderr.contains("--log-level"), "{}", show(&out));
    assert!(out.stderr.contains("possible values"), "{}", show(&out));
    for v in ["debug", "info", "warning", "error", "critical"] {
        assert!(out.stderr.contains(v), "{v}\n{}", show(&out));
    }
}

// ---------------------------------------------------------------------------
// 7-8. precedence and --print-config
// ---------------------------------------------------------------------------

/// `ferricorn ARGS --print-config` in `cwd` with extra environment; checks
/// a clean exit 0 and returns stdout.
fn print_config(cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.push("--print-config");
    let mut b = builder(cwd, &all);
    for (k, v) in env {
        b = b.env(k, v);
    }
    let out = b.run_to_exit(EXIT_LIMIT);
    assert_eq!(out.code, Some(0), "{}", show(&out));
    assert_clean(&out);
    out.stdout
}

/// The N in the `workers = N` line of a --print-config output.
fn workers_in(config: &str) -> u32 {
    let found: Vec<u32> = config
        .lines()
        .filter_map(|l| l.trim().strip_prefix("workers = "))
        .map(|v| {
            v.trim()
                .parse()
                .unwrap_or_else(|e| panic!("bad workers value {v:?}: {e}\n{config}"))
        })
        .collect();
    assert_eq!(found.len(), 1, "want one `workers = N` line in:\n{config}");
    found[0]
}

#[test]
fn workers_precedence_default_env_file_flag() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let conf = cwd.join("conf.toml");
    std::fs::write(&conf, "workers = 5\n").unwrap();
    let conf = conf.to_str().unwrap();
    let wc = [("WEB_CONCURRENCY", "3")];

    assert_eq!(workers_in(&print_config(cwd, &[], &["hello:app"])), 1);
    assert_eq!(workers_in(&print_config(cwd, &wc, &["hello:app"])), 3);
    assert_eq!(
        workers_in(&print_config(cwd, &wc, &["-c", conf, "hello:app"])),
        5
    );
    assert_eq!(
        workers_in(&print_config(
            cwd,
            &wc,
            &["-c", conf, "-w", "7", "hello:app"]
        )),
        7
    );
    // The flag wins wherever it is placed.
    assert_eq!(
        workers_in(&print_config(
            cwd,
            &wc,
            &["-w", "7", "-c", conf, "hello:app"]
        )),
        7
    );
    // A flag without a file beats the environment too.
    assert_eq!(
        workers_in(&print_config(cwd, &wc, &["--workers", "2", "hello:app"])),
        2
    );
}

#[test]
fn ferricorn_toml_in_cwd_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    std::fs::write(cwd.join("ferricorn.toml"), "workers = 6\n").unwrap();
    let wc = [("WEB_CONCURRENCY", "3")];
    assert_eq!(workers_in(&print_config(cwd, &[], &["hello:app"])), 6);
    assert_eq!(workers_in(&print_config(cwd, &wc, &["hello:app"])), 6);
    assert_eq!(
        workers_in(&print_config(cwd, &wc, &["-w", "7", "hello:app"])),
        7
    );
    // An explicit -c replaces ./ferricorn.toml.
    let other = cwd.join("other.toml");
    std::fs::write(&other, "threads = 2\n").unwrap();
    let out = print_config(cwd, &[], &["-c", other.to_str().unwrap(), "hello:app"]);
    assert_eq!(workers_in(&out), 1, "{out}");
    assert!(out.lines().any(|l| l.trim() == "threads = 2"), "{out}");
}

#[test]
fn print_config_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let first = print_config(
        cwd,
        &[],
        &[
            "-w",
            "3",
            "-b",
            "unix:/tmp/x.sock",
            "-b",
            "127.0.0.1:9",
            "-e",
            "A=1",
            "--access-logfile",
            "",
            "--forwarded-allow-ips",
            "*",
            "hello:app",
        ],
    );
    assert_eq!(workers_in(&first), 3, "{first}");
    for needle in ["unix:/tmp/x.sock", "127.0.0.1:9", "A=1", "hello:app"] {
        assert!(first.contains(needle), "{needle:?} missing from\n{first}");
    }
    let saved = cwd.join("saved.toml");
    std::fs::write(&saved, &first).unwrap();
    let second = print_config(cwd, &[], &["-c", saved.to_str().unwrap()]);
    assert_eq!(
        first, second,
        "--print-config output does not load back to the same configuration"
    );
}

// ---------------------------------------------------------------------------
// 9. --check-config
// ---------------------------------------------------------------------------

#[test]
fn check_config() {
    let name = unique_name("check");
    let ok = builder(
        &examples_dir(),
        &["--check-config", "-n", &name, "hello:app"],
    )
    .run_to_exit(EXIT_LIMIT);
    assert_eq!(ok.code, Some(0), "{}", show(&ok));
    assert_clean(&ok);
    assert_no_orphans(&name, &ok);

    let name = unique_name("check");
    let bad = builder(
        &examples_dir(),
        &["--check-config", "-n", &name, "nosuchmodule:app"],
    )
    .run_to_exit(EXIT_LIMIT);
    assert_eq!(bad.code, Some(1), "{}", show(&bad));
    assert_clean(&bad);
    assert_no_orphans(&name, &bad);
    assert!(bad.stderr.contains("nosuchmodule"), "{}", show(&bad));
}

// ---------------------------------------------------------------------------
// 10. app specification forms
// ---------------------------------------------------------------------------

fn serves(app: &str, expected: &str) {
    let server = builder(&examples_dir(), &["-b", "127.0.0.1:0", app]).spawn();
    server.wait_ready(Duration::from_secs(30));
    let r = get(&server.addr(), "/").unwrap_or_else(|e| panic!("{e}\n{}", server.report()));
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, expected),
        "{}",
        server.report()
    );
}

#[test]
fn factory_without_arguments() {
    serves("factory:create_app()", "factory");
}

#[test]
fn factory_with_literal_argument() {
    serves("factory:create_app(\"hi\")", "hi");
}

#[test]
fn plain_module_means_application() {
    serves("hello", "Hello, World!");
}

// ---------------------------------------------------------------------------
// 11. the embedded interpreter is the one the build used
// ---------------------------------------------------------------------------

/// The Python the build used: $PYO3_PYTHON, else `python3` on PATH.
fn build_python() -> String {
    std::env::var("PYO3_PYTHON")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "python3".to_string())
}

/// Runs `python -c code` and parses its stdout as JSON.
fn python_json(python: &str, code: &str) -> serde_json::Value {
    let out = Command::new(python)
        .args(["-c", code])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert!(
        out.status.success(),
        "{python} -c failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{python}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

struct BuildPython {
    version: String,
    /// "3.11"
    short_version: String,
    libdir: PathBuf,
}

fn build_python_info() -> BuildPython {
    let v = python_json(
        &build_python(),
        "import json, sys, sysconfig; print(json.dumps({'version': sys.version, \
         'short': '%d.%d' % sys.version_info[:2], \
         'libdir': sysconfig.get_config_var('LIBDIR')}))",
    );
    BuildPython {
        version: v["version"].as_str().unwrap().to_string(),
        short_version: v["short"].as_str().unwrap().to_string(),
        libdir: PathBuf::from(v["libdir"].as_str().expect("LIBDIR")),
    }
}

/// `p` is inside `dir` (comparing both as given and with symlinks resolved).
fn is_under(p: &Path, dir: &Path) -> bool {
    if p.starts_with(dir) {
        return true;
    }
    match (p.canonicalize(), dir.canonicalize()) {
        (Ok(p), Ok(d)) => p.starts_with(d),
        _ => false,
    }
}

const DEBIAN_LIBDIR: &str = "/usr/lib/x86_64-linux-gnu";

#[test]
fn embedded_interpreter_is_the_build_python() {
    let py = build_python_info();
    // Like a user starting the binary directly: no LD_LIBRARY_PATH from cargo.
    let server = builder(&examples_dir(), &["-b", "127.0.0.1:0", "spec:app"])
        .env_remove("LD_LIBRARY_PATH")
        .spawn();
    server.wait_ready(Duration::from_secs(30));
    let r = get(&server.addr(), "/environ").unwrap_or_else(|e| panic!("{e}\n{}", server.report()));
    assert_eq!(r.status, 200);
    let env = r.json();
    let sys = &env["_sys"];
    assert_eq!(sys["version"].as_str(), Some(py.version.as_str()), "{sys}");

    let libs: Vec<&str> = env["_libpython"]
        .as_array()
        .expect("_libpython")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(!libs.is_empty(), "no libpython mapped in the worker");
    for lib in &libs {
        assert!(
            is_under(Path::new(lib), &py.libdir),
            "libpython {lib} is not under the build Python's LIBDIR {}",
            py.libdir.display()
        );
        assert!(
            !lib.starts_with(DEBIAN_LIBDIR),
            "Debian's libpython loaded: {lib}"
        );
    }

    let exe = sys["executable"].as_str().expect("sys.executable");
    assert!(
        !exe.is_empty() && Path::new(exe).is_file(),
        "sys.executable {exe:?} is not a file"
    );
    let v = python_json(exe, "import json, sys; print(json.dumps(sys.version))");
    assert_eq!(
        v.as_str(),
        Some(py.version.as_str()),
        "sys.executable {exe} is another Python"
    );
}

#[test]
fn binary_links_the_build_libpython() {
    let py = build_python_info();
    let out = Command::new("ldd")
        .arg(env!("CARGO_BIN_EXE_ferricorn"))
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("run ldd");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "ldd failed: {text}");
    let libs: Vec<&str> = text.lines().filter(|l| l.contains("libpython")).collect();
    assert_eq!(libs.len(), 1, "want one libpython in ldd output:\n{text}");
    let resolved = libs[0]
        .split("=>")
        .nth(1)
        .and_then(|r| r.split(" (").next())
        .map(str::trim)
        .unwrap_or_else(|| panic!("cannot parse {:?}", libs[0]));
    assert!(
        resolved.starts_with('/') && is_under(Path::new(resolved), &py.libdir),
        "libpython resolves to {resolved:?}, not into {}:\n{text}",
        py.libdir.display()
    );
    assert!(!resolved.starts_with(DEBIAN_LIBDIR), "{text}");
}

// ---------------------------------------------------------------------------
// 12. virtualenvs
// ---------------------------------------------------------------------------

const VENV_APP: &str = r#"import venvonly_mod

BODY = venvonly_mod.VALUE.encode()


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(BODY)))])
    return [BODY]
"#;

#[test]
fn virtualenv_packages_are_importable() {
    let dir = tempfile::tempdir().unwrap();
    let venv = dir.path().join("venv");
    let status = Command::new(build_python())
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .status()
        .expect("python -m venv");
    assert!(status.success(), "python -m venv failed");
    let out = Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ])
        .output()
        .expect("venv python");
    assert!(out.status.success());
    let purelib = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    assert!(purelib.starts_with(&venv), "{}", purelib.display());
    std::fs::create_dir_all(&purelib).unwrap();
    std::fs::write(purelib.join("venvonly_mod.py"), "VALUE = \"from-venv\"\n").unwrap();

    let appdir = dir.path().join("app");
    std::fs::create_dir(&appdir).unwrap();
    std::fs::write(appdir.join("venvapp.py"), VENV_APP).unwrap();

    let venv_s = venv.to_str().unwrap();
    let appdir_s = appdir.to_str().unwrap();
    let path = std::env::var("PATH").unwrap_or_default();
    assert!(
        !path.split(':').any(|p| Path::new(p).starts_with(&venv)),
        "PATH contains the venv"
    );

    // 1. --virtualenv
    let server = builder(
        dir.path(),
        &[
            "-b",
            "127.0.0.1:0",
            "--virtualenv",
            venv_s,
            "--chdir",
            appdir_s,
            "venvapp:app",
        ],
    )
    .spawn();
    server.wait_ready(Duration::from_secs(30));
    let r = get(&server.addr(), "/").unwrap_or_else(|e| panic!("{e}\n{}", server.report()));
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "from-venv"),
        "{}",
        server.report()
    );
    drop(server);

    // 2. $VIRTUAL_ENV
    let server = builder(
        dir.path(),
        &["-b", "127.0.0.1:0", "--chdir", appdir_s, "venvapp:app"],
    )
    .env("VIRTUAL_ENV", venv_s)
    .spawn();
    server.wait_ready(Duration::from_secs(30));
    let r = get(&server.addr(), "/").unwrap_or_else(|e| panic!("{e}\n{}", server.report()));
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "from-venv"),
        "{}",
        server.report()
    );
    drop(server);

    // 3. without the virtualenv the module is not found
    let name = unique_name("novenv");
    let out = builder(
        dir.path(),
        &[
            "-b",
            "127.0.0.1:0",
            "-n",
            &name,
            "--chdir",
            appdir_s,
            "venvapp:app",
        ],
    )
    .run_to_exit(EXIT_LIMIT);
    assert_eq!(out.code, Some(4), "{}", show(&out));
    assert!(
        out.stderr.contains("No module named 'venvonly_mod'"),
        "{}",
        show(&out)
    );
    assert_clean(&out);
    assert_no_orphans(&name, &out);
}

#[test]
fn virtualenv_of_another_python_version_is_refused() {
    let py = build_python_info();
    let dir = tempfile::tempdir().unwrap();
    let venv = dir.path().join("oldvenv");
    std::fs::create_dir_all(venv.join("lib/python3.9/site-packages")).unwrap();
    std::fs::create_dir_all(venv.join("bin")).unwrap();
    std::fs::write(
        venv.join("pyvenv.cfg"),
        "home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.9.1\n",
    )
    .unwrap();
    let name = unique_name("oldvenv");
    let out = builder(
        &examples_dir(),
        &[
            "-b",
            "127.0.0.1:0",
            "-n",
            &name,
            "--virtualenv",
            venv.to_str().unwrap(),
            "hello:app",
        ],
    )
    .run_to_exit(EXIT_LIMIT);
    assert_eq!(out.code, Some(2), "{}", show(&out));
    assert!(out.stderr.contains("3.9.1"), "{}", show(&out));
    assert!(
        out.stderr.contains(&py.short_version),
        "embedded version {} not named\n{}",
        py.short_version,
        show(&out)
    );
    assert_clean(&out);
    assert_no_orphans(&name, &out);
}

// ---------------------------------------------------------------------------
// 13. bind errors
// ---------------------------------------------------------------------------

fn bind_fails(bind: &str) -> Output {
    let name = unique_name("bind");
    let t0 = Instant::now();
    let out = builder(&examples_dir(), &["-b", bind, "-n", &name, "hello:app"])
        .run_to_exit(Duration::from_secs(15));
    let took = t0.elapsed();
    assert!(
        matches!(out.code, Some(c) if c != 0),
        "want a non-zero exit for -b {bind}\n{}",
        show(&out)
    );
    assert!(
        took < Duration::from_secs(10),
        "took {took:?} to give up\n{}",
        show(&out)
    );
    assert_clean(&out);
    assert_no_orphans(&name, &out);
    out
}

#[test]
fn tcp_port_in_use() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let out = bind_fails(&addr);
    let err = out.stderr.to_lowercase();
    assert!(
        err.contains("address already in use") || err.contains("in use"),
        "{}",
        show(&out)
    );
    assert!(
        out.stderr.contains(&addr),
        "address not named\n{}",
        show(&out)
    );
}

#[test]
fn unix_path_is_a_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-a-socket");
    std::fs::write(&path, "keep me").unwrap();
    let out = bind_fails(&format!("unix:{}", path.display()));
    assert!(out.stderr.contains("is not a socket"), "{}", show(&out));
    assert_eq!(
        std::fs::read_to_string(&path).ok().as_deref(),
        Some("keep me"),
        "the regular file was touched"
    );
}

#[test]
fn unix_socket_with_a_live_listener() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let out = bind_fails(&format!("unix:{}", path.display()));
    assert!(
        out.stderr.contains("another process is listening"),
        "{}",
        show(&out)
    );
    // Our socket is still there and still ours.
    let _client = UnixStream::connect(&path).expect("socket path was removed or replaced");
    listener.set_nonblocking(true).unwrap();
    let accepted = wait_until(Duration::from_secs(2), || listener.accept().is_ok());
    assert!(accepted, "the live listener lost its socket path");
}

// ---------------------------------------------------------------------------
// the orphan check itself
// ---------------------------------------------------------------------------

#[test]
fn orphan_check_sees_a_running_server() {
    let name = unique_name("alive");
    let mut server = builder(
        &examples_dir(),
        &["-b", "127.0.0.1:0", "-w", "2", "-n", &name, "hello:app"],
    )
    .spawn();
    server.wait_ready(Duration::from_secs(30));
    // The master and both workers carry the name in their titles.
    let ok = wait_until(Duration::from_secs(5), || procs_with(&name).len() == 3);
    assert!(ok, "{:?}\n{}", procs_with(&name), server.report());
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(Duration::from_secs(15)), Some(0));
    let ok = wait_until(Duration::from_secs(2), || procs_with(&name).is_empty());
    assert!(ok, "{:?}\n{}", procs_with(&name), server.report());
}

/// When the Python the binary was built against is not visible at run time (pyenv under /root
/// behind systemd's ProtectHome=, say), the libpython found by the loader's default path is used,
/// and `sys.executable` names that installation's interpreter, not a path that does not exist.
#[test]
#[cfg_attr(
    not(ferricorn_tests_as_root),
    ignore = "needs root (to mount over /root)"
)]
fn a_hidden_build_python_falls_back_to_the_system_one_with_a_real_sys_executable() {
    let built = Path::new(env!("FERRICORN_PYTHON_EXECUTABLE"));
    let hide = Path::new("/root/.pyenv");
    let system = Path::new("/usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0");
    assert!(
        built.starts_with(hide),
        "this test hides the build's Python under {}, but it is {}",
        hide.display(),
        built.display()
    );
    assert!(
        system.exists(),
        "{} is missing: apt-get install libpython3.11 (.ci/run does)",
        system.display()
    );
    let b = program("unshare");
    let sock = b.tmp_path().join("s.sock");
    let script = format!(
        "mount -t tmpfs none {} && exec {} -b unix:{} --access-logfile '' spec:app",
        hide.display(),
        env!("CARGO_BIN_EXE_ferricorn"),
        sock.display()
    );
    let s = b
        .args(["-m", "sh", "-c", &script])
        .cwd(examples_dir())
        .spawn();
    s.wait_ready(Duration::from_secs(30));
    let env = get(&Addr::Unix(sock), "/environ").unwrap().json();
    let libs: Vec<String> = serde_json::from_value(env["_libpython"].clone()).unwrap();
    assert!(libs.iter().all(|l| l.starts_with("/usr/lib/")), "{libs:?}");
    let exe = env["_sys"]["executable"].as_str().unwrap().to_string();
    assert!(
        exe.is_empty() || Path::new(&exe).is_file(),
        "sys.executable {exe:?} does not exist"
    );
    assert!(!exe.starts_with("/root/"), "{exe}");
}

#[test]
fn pid_file_written_removed_and_stale_ones_ignored() {
    let b = ferricorn();
    let pidfile = b.tmp_path().join("app.pid");
    // Stale: a pid that cannot exist.
    std::fs::write(&pidfile, "999999999\n").unwrap();
    let mut s = b
        .args([
            "-b",
            "127.0.0.1:0",
            "-p",
            pidfile.to_str().unwrap(),
            "hello:app",
        ])
        .cwd(examples_dir())
        .spawn();
    s.wait_ready(T);
    assert_eq!(
        std::fs::read_to_string(&pidfile).unwrap().trim(),
        s.pid().to_string()
    );
    // A second server on the same pid file refuses to start.
    let out = ferricorn()
        .args([
            "-b",
            "127.0.0.1:0",
            "-p",
            pidfile.to_str().unwrap(),
            "hello:app",
        ])
        .cwd(examples_dir())
        .run_to_exit(T);
    assert_ne!(out.code, Some(0));
    assert!(out.stderr.contains("already running"), "{}", out.stderr);
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(T), Some(0));
    assert!(!pidfile.exists());
}

#[test]
fn daemon_is_refused_under_a_monitor() {
    for (k, v) in [
        ("NOTIFY_SOCKET", "/run/systemd/notify"),
        ("INVOCATION_ID", "abc"),
    ] {
        let out = ferricorn()
            .args(["-D", "hello:app"])
            .cwd(examples_dir())
            .env(k, v)
            .run_to_exit(T);
        assert_eq!(out.code, Some(2), "{k}: {}", out.stderr);
        assert!(
            out.stderr.contains("--daemon refused") && out.stderr.contains(k),
            "{}",
            out.stderr
        );
    }
}

#[test]
fn daemon_detaches_in_a_plain_shell() {
    // run_to_exit removes the builder's temp dir; the daemon outlives it.
    let dir = tempfile::tempdir().unwrap();
    let b = ferricorn();
    let pidfile = dir.path().join("d.pid");
    let sock = dir.path().join("d.sock");
    let log = dir.path().join("error.log");
    let out = b
        .args([
            "-D",
            "-p",
            pidfile.to_str().unwrap(),
            "-b",
            &format!("unix:{}", sock.display()),
        ])
        .args(["--error-logfile", log.to_str().unwrap(), "hello:app"])
        .cwd(examples_dir())
        .env_remove("INVOCATION_ID")
        .env_remove("NOTIFY_SOCKET")
        .run_to_exit(T);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(wait_until(T, || pidfile.exists()));
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The pid file is written before the socket is bound: wait for the socket.
    assert!(wait_until(T, || get(&Addr::unix(&sock), "/").is_ok()));
    assert_eq!(get_text(&Addr::unix(&sock), "/"), "Hello, World!");
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert!(wait_until(T, || !pid_alive(pid)));
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("Shutting down: Master")
    );
}

#[test]
fn env_flag_reaches_the_app() {
    let (server, addr) = workers::start(
        "spec:app",
        &[
            "-e",
            "FERRICORN_TEST_X=42",
            "--env",
            "FERRICORN_TEST_Y=a=b c",
        ],
    );
    let r = get(&addr, "/environ").unwrap_or_else(|e| panic!("{e}\n{}", server.report()));
    assert_eq!(r.status, 200);
    let env = &r.json()["_os_environ"];
    assert_eq!(env["FERRICORN_TEST_X"], "42", "{env}");
    assert_eq!(env["FERRICORN_TEST_Y"], "a=b c", "{env}");
}

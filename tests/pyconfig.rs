//! Python config files (issue 14): `-c gunicorn.conf.py`, `-c python:MODULE` and
//! `./gunicorn.conf.py` are run as Gunicorn runs them (a module `__config__` with `__file__`,
//! names that are settings taken, helpers ignored), with Gunicorn's precedence (file <
//! `GUNICORN_CMD_ARGS` < command line), errors naming the file, the line and the setting,
//! `--print-config`, and a fresh read on HUP.

mod common;

use std::path::Path;
use std::time::Duration;

use common::client::{Addr, get};
use common::server::{Output, ServerBuilder, ferricorn, wait_until};

const T: Duration = Duration::from_secs(30);

/// An app that answers with the value of the environment variable named by the path.
const ENV_APP: &str = r#"import os
def app(environ, start_response):
    body = os.environ.get(environ["PATH_INFO"].strip("/"), "-").encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"#;

fn builder(cwd: &Path) -> ServerBuilder {
    let mut b = ferricorn().cwd(cwd);
    for k in [
        "WEB_CONCURRENCY",
        "PORT",
        "VIRTUAL_ENV",
        "GUNICORN_CMD_ARGS",
    ] {
        b = b.env_remove(k);
    }
    b
}

fn show(out: &Output) -> String {
    format!(
        "--- exit {:?} ---\n--- stderr ---\n{}--- stdout ---\n{}",
        out.code, out.stderr, out.stdout
    )
}

fn print_config(b: ServerBuilder) -> Output {
    b.arg("--print-config").run_to_exit(T)
}

fn value_of(toml: &str, key: &str) -> String {
    let prefix = format!("{key} = ");
    let found: Vec<&str> = toml
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .collect();
    assert_eq!(found.len(), 1, "want one `{key} = ` line in:\n{toml}");
    found[0].to_string()
}

fn body(addr: &Addr, path: &str) -> String {
    let r = get(addr, path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

/// `./gunicorn.conf.py` is read when no `-c` is given, as Gunicorn reads it: a module called
/// `__config__` with `__file__` set, the working directory importable, helper names and
/// imports ignored; and it is read again on HUP.
#[test]
fn the_default_gunicorn_conf_py_is_run_as_gunicorn_runs_it_and_again_on_hup() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("envapp.py"), ENV_APP).unwrap();
    std::fs::write(d.join("conf_helper.py"), "WORKERS = 2\n").unwrap();
    let sock = d.join("s.sock");
    let conf = |generation: &str| {
        format!(
            "import multiprocessing\nimport os\nimport conf_helper\n\n\
             _here = os.path.dirname(__file__)\nbase_dir = _here\n\
             bind = 'unix:' + os.path.join(_here, 's.sock')\n\
             workers = conf_helper.WORKERS\nwsgi_app = 'envapp:app'\n\
             raw_env = ['CONF_FILE=' + __file__, 'CONF_NAME=' + __name__, \
             'GENERATION={generation}']\n"
        )
    };
    std::fs::write(d.join("gunicorn.conf.py"), conf("one")).unwrap();
    let s = builder(d).spawn();
    s.wait_ready(T);
    let addr = Addr::Unix(sock);
    assert_eq!(
        body(&addr, "/CONF_FILE"),
        d.join("gunicorn.conf.py").display().to_string()
    );
    assert_eq!(body(&addr, "/CONF_NAME"), "__config__");
    assert_eq!(body(&addr, "/GENERATION"), "one");
    assert_eq!(s.children().len(), 2, "{}", s.report());
    s.wait_for_stderr(
        "names that are not settings are ignored, as in Gunicorn: base_dir",
        T,
    );
    std::fs::write(d.join("gunicorn.conf.py"), conf("two")).unwrap();
    s.signal(libc::SIGHUP);
    s.wait_for_stderr("Reload complete", T);
    assert!(
        wait_until(T, || body(&addr, "/GENERATION") == "two"),
        "{}",
        s.report()
    );
}

/// `-c FILE.py`, `-c python:MODULE` and `GUNICORN_CMD_ARGS` rank as in Gunicorn: the file
/// below `GUNICORN_CMD_ARGS` below the command line; `--print-config` shows the result.
#[test]
fn python_files_and_modules_rank_below_gunicorn_cmd_args_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("deploy")).unwrap();
    std::fs::write(d.join("deploy/__init__.py"), "").unwrap();
    let text = "workers = 3\ntimeout = '45'\nkeepalive = 7\nbind = '127.0.0.1:9'\n\
                preload_app = 'false'\nsecure_scheme_headers = None\n";
    std::fs::write(d.join("deploy/gconf.py"), text).unwrap();
    std::fs::write(d.join("my.conf.py"), text).unwrap();
    for c in ["my.conf.py", "python:deploy.gconf"] {
        let out = print_config(
            builder(d)
                .env("GUNICORN_CMD_ARGS", "--timeout 50 --keep-alive 8")
                .args(["-c", c, "--keep-alive", "9", "hello:app"]),
        );
        assert_eq!(out.code, Some(0), "{c}\n{}", show(&out));
        assert_eq!(value_of(&out.stdout, "workers"), "3", "{c}");
        assert_eq!(value_of(&out.stdout, "timeout"), "50", "{c}");
        assert_eq!(value_of(&out.stdout, "keep-alive"), "9", "{c}");
        assert_eq!(value_of(&out.stdout, "bind"), "[\"127.0.0.1:9\"]", "{c}");
    }
    // Named in GUNICORN_CMD_ARGS when the command line names none.
    let out = print_config(
        builder(d)
            .env("GUNICORN_CMD_ARGS", "-c my.conf.py")
            .arg("hello:app"),
    );
    assert_eq!(value_of(&out.stdout, "workers"), "3", "{}", show(&out));
}

/// One error line, exit 2, nothing started.
fn refused(b: ServerBuilder) -> String {
    let out = b.run_to_exit(T);
    assert_eq!(out.code, Some(2), "{}", show(&out));
    assert!(
        out.stderr.starts_with("ferricorn: error: "),
        "{}",
        show(&out)
    );
    assert!(!out.stderr.contains("panicked"), "{}", show(&out));
    out.stderr
}

#[test]
fn mistakes_name_the_file_the_line_and_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let f = d.join("gunicorn.conf.py");
    let cases = [
        (
            "import os\n\nworkers = 2.5\n",
            ":3: `workers`: invalid type: floating point",
        ),
        (
            "bind = '127.0.0.1:0'\nwokers = 4\n",
            ":2: `wokers`: not a setting (did you mean `workers`?)",
        ),
        (
            "timeout = {1, 2}\n",
            ":1: `timeout`: invalid type: set, expected an int",
        ),
        ("workers = 'many'\n", ":1: `workers`: "),
        ("workers = 0\n", ":1: setting `workers`: 0 is out of range"),
        (
            "def post_fork(server):\n    pass\n",
            ":1: `post_fork`: takes 1 positional arguments; it must take 2",
        ),
        (
            "when_ready = 42\n",
            ":1: `when_ready`: a server hook must be callable, not int",
        ),
        (
            "def ssl_context(config, factory):\n    pass\n",
            ":1: `ssl_context`: the server hook `ssl_context(config, default_ssl_context_factory)` is not supported by ferricorn",
        ),
    ];
    for (text, want) in cases {
        std::fs::write(&f, text).unwrap();
        let e = refused(builder(d).arg("hello:app"));
        let want = format!("{}{want}", f.display());
        assert!(e.contains(&want), "{text}\nwant {want}\ngot {e}");
    }
    // An exception while the file runs: its traceback, with the file's line.
    std::fs::write(&f, "workers = 2\nraise RuntimeError('no config today')\n").unwrap();
    let e = refused(builder(d).arg("hello:app"));
    assert!(e.contains("the config file raised an exception"), "{e}");
    assert!(
        e.contains(&format!("File \"{}\", line 2", f.display())),
        "{e}"
    );
    assert!(e.contains("RuntimeError: no config today"), "{e}");
    // Both default files: both are named.
    std::fs::write(&f, "workers = 2\n").unwrap();
    std::fs::write(d.join("ferricorn.toml"), "workers = 2\n").unwrap();
    let e = refused(builder(d).arg("hello:app"));
    assert!(
        e.contains("ferricorn.toml") && e.contains("gunicorn.conf.py"),
        "{e}"
    );
    // A missing file named with -c.
    let e = refused(builder(d).args(["-c", "nope.py", "hello:app"]));
    assert!(e.contains("nope.py"), "{e}");
}

/// The standalone binary starts its interpreter before the file runs, so a file cannot
/// choose the virtualenv; it says so instead of serving from another one.
#[test]
fn the_binary_refuses_a_virtualenv_set_by_the_python_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let venv = d.join("venv");
    std::fs::create_dir(&venv).unwrap();
    let version = ferricorn::PYTHON_VERSION;
    std::fs::write(
        venv.join("pyvenv.cfg"),
        format!("home = /usr\nversion = {version}.0\n"),
    )
    .unwrap();
    std::fs::write(
        d.join("gunicorn.conf.py"),
        format!(
            "virtualenv = {:?}\nbind = '127.0.0.1:0'\n",
            venv.display().to_string()
        ),
    )
    .unwrap();
    let out = builder(d).arg("hello:app").run_to_exit(T);
    assert_ne!(out.code, Some(0), "{}", show(&out));
    assert!(
        out.stderr
            .contains("the standalone binary's interpreter starts before the file runs"),
        "{}",
        show(&out)
    );
}

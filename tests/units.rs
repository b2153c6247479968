//! `ferricorn systemd generate` and `ferricorn systemd check` (issue 4). Every test runs the
//! real binary.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::client::{Addr, get};
use common::server::{Output, examples_dir, ferricorn};
use ferricorn::units::unitfile::{UnitFile, split_command};

const T: Duration = Duration::from_secs(60);

/// The command that made the bundled example's files (README "Deploying"); `--output .` is
/// replaced by a temporary directory.
const EXAMPLE: [&str; 9] = [
    "--name",
    "app",
    "--chdir",
    "/usr/share/ferricorn/examples",
    "--systemd-version",
    "252",
    "-w",
    "3",
    "hello:app",
];
const REGENERATE: &str = "cargo run -- systemd generate --name app --chdir \
                          /usr/share/ferricorn/examples --systemd-version 252 -w 3 hello:app \
                          --output .";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `ferricorn systemd ARGS` in a clean environment (no variable that feeds the config).
fn systemd(args: &[&str]) -> Output {
    let b = ferricorn().arg("systemd").args(args.iter().copied());
    let cwd = b.tmp_path().to_path_buf();
    b.cwd(cwd).run_to_exit(T)
}

fn generate_into(dir: &Path, args: &[&str]) -> Output {
    let mut a = vec!["generate"];
    a.extend_from_slice(args);
    a.extend(["--output", dir.to_str().unwrap()]);
    let out = systemd(&a);
    assert_eq!(out.code, Some(0), "{out:?}");
    out
}

fn files_under(root: &Path, rel: &str, out: &mut BTreeMap<String, (Vec<u8>, bool)>) {
    let dir = root.join(rel);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in rd {
        let e = e.unwrap();
        let rel = format!("{rel}/{}", e.file_name().to_string_lossy());
        if e.file_type().unwrap().is_dir() {
            files_under(root, &rel, out);
        } else {
            let exec = e.metadata().unwrap().permissions().mode() & 0o111 != 0;
            out.insert(rel, (std::fs::read(e.path()).unwrap(), exec));
        }
    }
}

fn tree(root: &Path) -> BTreeMap<String, (Vec<u8>, bool)> {
    let mut m = BTreeMap::new();
    for d in ["systemd", "tmpfiles.d", "packaging"] {
        files_under(root, d, &mut m);
    }
    m
}

#[test]
fn committed_deployment_files_are_the_generators_output() {
    let tmp = tempfile::tempdir().unwrap();
    generate_into(tmp.path(), &EXAMPLE);
    let want = tree(tmp.path());
    let have = tree(&repo());
    assert!(want.len() >= 11, "{:?}", want.keys());
    for (path, (bytes, exec)) in &want {
        match have.get(path) {
            None => panic!("{path} is not committed; regenerate with: {REGENERATE}"),
            Some((b, x)) => {
                assert!(
                    b == bytes,
                    "{path} differs from the generator's output; regenerate with: {REGENERATE}\n\
                     --- generated ---\n{}",
                    String::from_utf8_lossy(bytes)
                );
                assert_eq!(
                    x, exec,
                    "{path}: executable bit; regenerate with: {REGENERATE}"
                );
            }
        }
    }
    for path in have.keys() {
        assert!(
            want.contains_key(path),
            "{path} is committed but not generated: remove it, or regenerate with: {REGENERATE}"
        );
    }
}

#[test]
fn generation_is_deterministic_and_prints_every_file() {
    let a = systemd(&["generate", "--systemd-version", "252", "hello:app"]);
    let b = systemd(&["generate", "--systemd-version", "252", "hello:app"]);
    assert_eq!(a.code, Some(0), "{a:?}");
    assert_eq!(a.stdout, b.stdout);
    for f in [
        "systemd/app.socket",
        "systemd/app.service",
        "tmpfiles.d/app.conf",
        "packaging/nginx/app.conf",
        "packaging/Procfile",
        "packaging/upstart/app.conf",
    ] {
        assert!(a.stdout.contains(&format!("==> {f} <==")), "{}", a.stdout);
    }
    let only = systemd(&[
        "generate",
        "--systemd-version",
        "252",
        "--only",
        "tmpfiles",
        "x:y",
    ]);
    assert!(
        only.stdout
            .ends_with("d /run/app 0755 www-data www-data -\n"),
        "{}",
        only.stdout
    );
}

/// The installed systemd's version, or None when there is none.
fn installed_systemd() -> Option<String> {
    let out = Command::new("systemctl").arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let v = text.split_whitespace().nth(1)?.to_string();
    Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .ok()?;
    Some(v)
}

fn service_of(dir: &Path, name: &str) -> UnitFile {
    UnitFile::read(&dir.join(format!("systemd/{name}.service"))).unwrap()
}

/// Units generated for the installed systemd (and for 252, the committed variant) pass
/// `systemd-analyze verify`, and `systemd-analyze security` rates the service <= 2.0.
#[test]
fn generated_units_verify_and_rate_ok() {
    let installed = installed_systemd()
        .expect("systemctl and systemd-analyze are needed: apt-get install systemd (.ci/run does)");
    let exe = env!("CARGO_BIN_EXE_ferricorn");
    let chdir = examples_dir();
    for version in [installed.as_str(), "252"] {
        let tmp = tempfile::tempdir().unwrap();
        generate_into(
            tmp.path(),
            &[
                "--exe",
                exe,
                "--chdir",
                chdir.to_str().unwrap(),
                "--systemd-version",
                version,
                "--watchdog",
                "30",
                "-w",
                "2",
                "hello:app",
            ],
        );
        let sd = tmp.path().join("systemd");
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(sd.join("app.socket"))
            .arg(sd.join("app.service"))
            .current_dir(&sd)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "verify (systemd {version}): {stderr}");
        assert!(
            !stderr.contains("app.s"),
            "verify complains about our units (systemd {version}): {stderr}"
        );
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=yes"])
            .arg(sd.join("app.service"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_else(|| panic!("no rating: {text}"));
        let score: f64 = line
            .split(':')
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("cannot read {line}"));
        eprintln!("systemd {version}: {line}");
        assert!(score <= 2.0, "{line}\n{text}");
        let svc = service_of(tmp.path(), "app");
        let ty = &svc.get("Service", "Type").unwrap().value;
        if version.parse::<u32>().unwrap() >= 253 {
            assert_eq!(ty, "notify-reload");
            assert!(svc.get("Service", "ExecReload").is_none());
        } else {
            assert_eq!(ty, "notify");
            assert_eq!(
                svc.get("Service", "ExecReload").unwrap().value,
                "/bin/kill -s HUP $MAINPID"
            );
        }
        assert_eq!(svc.get("Service", "WatchdogSec").unwrap().value, "30");
        // And check agrees.
        let out = systemd(&["check", tmp.path().to_str().unwrap()]);
        assert_eq!(out.code, Some(0), "{out:?}");
    }
}

/// The service's ExecStart= words, with the socket swapped for a temporary one, really serve
/// the example app (the options are ones the server accepts, with the meaning intended).
#[test]
fn generated_exec_start_serves_the_app() {
    let tmp = tempfile::tempdir().unwrap();
    let chdir = examples_dir();
    generate_into(
        tmp.path(),
        &[
            "--chdir",
            chdir.to_str().unwrap(),
            "--systemd-version",
            "252",
            "-w",
            "2",
            "--graceful-timeout",
            "7",
            "-e",
            "GREETING=hello 100% \"quoted\" $HOME",
            "--access-log-format",
            "%(h)s \"%(r)s\" %(s)s",
            "hello:app",
        ],
    );
    let svc = service_of(tmp.path(), "app");
    let words = split_command(&svc.get("Service", "ExecStart").unwrap().value).unwrap();
    assert_eq!(words[0], "/usr/bin/ferricorn");
    assert!(
        words
            .windows(2)
            .any(|w| w[0] == "--env" && w[1] == "GREETING=hello 100% \"quoted\" $HOME"),
        "{words:?}"
    );
    assert!(words.windows(2).any(|w| w == ["--name", "app"]));
    assert!(!words.iter().any(|w| w == "--daemon" || w == "-D"));
    assert_eq!(svc.get("Service", "TimeoutStopSec").unwrap().value, "22");
    let sock = tmp.path().join("s.sock");
    let args: Vec<String> = words[1..]
        .iter()
        .map(|w| {
            if w == "unix:/run/app/socket" {
                format!("unix:{}", sock.display())
            } else {
                w.clone()
            }
        })
        .collect();
    let server = ferricorn().args(args).spawn();
    server.wait_ready(T);
    let addr = Addr::Unix(sock.clone());
    let r = get(&addr, "/").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "Hello, World!");
}

#[test]
fn generate_refuses_what_no_unit_can_express() {
    for (args, needle) in [
        (vec!["-b", "127.0.0.1:9000", "x:y"], "unix socket"),
        (vec!["-b", "unix:/tmp/a.sock", "x:y"], "PrivateTmp"),
        (vec!["--chdir", "rel/dir", "x:y"], "absolute"),
        (vec!["--name", "a/b", "x:y"], "--name"),
        (vec![], "no app"),
        (vec!["--exe", "ferricorn", "x:y"], "absolute"),
    ] {
        let mut a = vec!["generate", "--systemd-version", "252"];
        a.extend(args.iter().copied());
        let out = systemd(&a);
        assert_eq!(out.code, Some(2), "{args:?}: {out:?}");
        assert!(out.stderr.contains(needle), "{args:?}: {}", out.stderr);
        assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
        assert!(out.stdout.is_empty());
    }
    let out = systemd(&["frobnicate"]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
}

#[test]
fn generate_drops_daemon_and_moves_user_to_the_unit() {
    let out = systemd(&[
        "generate",
        "--systemd-version",
        "252",
        "--only",
        "service",
        "--daemon",
        "--user",
        "someone-not-here",
        "--group",
        "staff",
        "--pid",
        "/run/app/pid",
        "x:y",
    ]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("--daemon"), "{}", out.stderr);
    let u = UnitFile::parse(Path::new("app.service"), &out.stdout).unwrap();
    let exec = split_command(&u.get("Service", "ExecStart").unwrap().value).unwrap();
    assert!(
        !exec.iter().any(|w| w == "--daemon" || w == "--user"),
        "{exec:?}"
    );
    assert!(exec.windows(2).any(|w| w == ["--pid", "/run/app/pid"]));
    assert_eq!(u.get("Service", "User").unwrap().value, "someone-not-here");
    assert_eq!(u.get("Service", "Group").unwrap().value, "staff");
    assert_eq!(
        u.get("Service", "ReadWritePaths").unwrap().value,
        "/run/app"
    );
    assert!(u.get("Service", "RuntimeDirectory").is_none());
}

/// A config file feeds generate like the server; flags win over it.
#[test]
fn generate_reads_the_config_file() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("f.toml");
    std::fs::write(
        &conf,
        "app = \"hello:app\"\nworkers = 5\ngraceful-timeout = 60\nname = \"shop\"\n",
    )
    .unwrap();
    let out = systemd(&[
        "generate",
        "--systemd-version",
        "252",
        "-c",
        conf.to_str().unwrap(),
        "-w",
        "4",
        "--only",
        "service",
    ]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let u = UnitFile::parse(Path::new("shop.service"), &out.stdout).unwrap();
    let exec = split_command(&u.get("Service", "ExecStart").unwrap().value).unwrap();
    assert!(exec.windows(2).any(|w| w == ["--workers", "4"]), "{exec:?}");
    assert!(exec.windows(2).any(|w| w == ["--graceful-timeout", "60"]));
    assert!(
        exec.windows(2)
            .any(|w| w == ["--bind", "unix:/run/shop/socket"])
    );
    assert_eq!(u.get("Service", "TimeoutStopSec").unwrap().value, "75");
    assert_eq!(u.get("Unit", "Requires").unwrap().value, "shop.socket");
}

// ---- the other supervisors' files --------------------------------------------------------

/// upstart cannot run here: the job is checked against init(5)'s stanza grammar.
#[test]
fn upstart_job_follows_the_stanza_grammar() {
    let text = std::fs::read_to_string(repo().join("packaging/upstart/app.conf")).unwrap();
    // init(5): every stanza upstart 1.x knows (two-word stanzas first).
    const STANZAS: [&str; 36] = [
        "start on",
        "stop on",
        "respawn limit",
        "normal exit",
        "kill signal",
        "kill timeout",
        "reload signal",
        "oom score",
        "apparmor load",
        "apparmor switch",
        "pre-start",
        "post-start",
        "pre-stop",
        "post-stop",
        "end script",
        "expect",
        "exec",
        "script",
        "description",
        "author",
        "version",
        "emits",
        "usage",
        "env",
        "export",
        "respawn",
        "task",
        "instance",
        "manual",
        "console",
        "umask",
        "nice",
        "limit",
        "chroot",
        "chdir",
        "setuid",
    ];
    let mut mains = 0;
    let mut in_script = false;
    for (i, raw) in text.lines().enumerate() {
        let l = raw.trim();
        if in_script {
            in_script = l != "end script";
            continue;
        }
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let stanza = STANZAS
            .iter()
            .chain(["setgid"].iter())
            .find(|s| l == **s || l.starts_with(&format!("{s} ")))
            .unwrap_or_else(|| panic!("line {}: unknown stanza: {l}", i + 1));
        match *stanza {
            "exec" => mains += 1,
            "script" => {
                mains += 1;
                in_script = true;
            }
            "pre-start" | "post-start" | "pre-stop" | "post-stop" => {
                let rest = l[stanza.len()..].trim();
                assert!(
                    rest.starts_with("exec ") || rest == "script",
                    "line {}: {l}",
                    i + 1
                );
                in_script = rest == "script";
            }
            "expect" => panic!("ferricorn stays in the foreground: no expect stanza ({l})"),
            "kill timeout" | "respawn limit" => {
                assert!(
                    l[stanza.len()..]
                        .split_whitespace()
                        .all(|n| n.parse::<u32>().is_ok()),
                    "line {}: {l}",
                    i + 1
                );
            }
            "kill signal" | "reload signal" => {
                let sig = l[stanza.len()..].trim();
                assert!(["TERM", "HUP"].contains(&sig), "line {}: {l}", i + 1);
            }
            _ => {}
        }
    }
    assert!(!in_script, "unterminated script");
    assert_eq!(mains, 1, "exactly one main process (exec or script)");
    assert!(text.contains("reload signal HUP\n") && text.contains("kill signal TERM\n"));
    assert!(!text.contains("--daemon"));
}

#[test]
fn runit_scripts_are_valid_sh_and_supervisor_parses() {
    for f in ["packaging/runit/app/run", "packaging/runit/app/log/run"] {
        let out = Command::new("sh")
            .arg("-n")
            .arg(repo().join(f))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{f}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(repo().join(f)).unwrap();
        assert!(text.starts_with("#!/bin/sh\n"), "{f}");
    }
    let run = std::fs::read_to_string(repo().join("packaging/runit/app/run")).unwrap();
    assert!(run.contains("exec chpst -u www-data:www-data /usr/bin/ferricorn"));
    // supervisord reads its files with Python's configparser, %-interpolation included.
    let py = "import configparser,sys\n\
              c=configparser.ConfigParser()\n\
              c.read(sys.argv[1])\n\
              p=c['program:app']\n\
              print(p['command']); print(p['stopwaitsecs']); print(p['user'])\n";
    let out = Command::new("python3")
        .args(["-c", py])
        .arg(repo().join("packaging/supervisor/app.conf"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("--access-logfile /var/log/app/access.log"),
        "{text}"
    );
    assert!(text.contains("\n35\nwww-data\n"), "{text}");
    let procfile = std::fs::read_to_string(repo().join("packaging/Procfile")).unwrap();
    assert_eq!(
        procfile,
        "web: ferricorn --name app --workers 3 hello:app\n"
    );
    let lr = std::fs::read_to_string(repo().join("packaging/logrotate/app")).unwrap();
    assert!(
        lr.contains("pkill -USR1 -f '^ferricorn: master \\[app\\]'"),
        "{lr}"
    );
    assert!(lr.contains("/var/log/app/access.log /var/log/app/error.log {"));
    for f in [
        "packaging/nginx/app.conf",
        "packaging/nginx/app-streaming.conf",
    ] {
        let n = std::fs::read_to_string(repo().join(f)).unwrap();
        for h in [
            "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
            "proxy_set_header X-Forwarded-Proto $scheme;",
            "proxy_set_header Host $http_host;",
            "server unix:/run/app/socket fail_timeout=0;",
        ] {
            assert!(n.contains(h), "{f}: {h}");
        }
        assert_eq!(
            n.contains("proxy_buffering off;"),
            f.contains("streaming"),
            "{f}"
        );
    }
}

// ---- check ---------------------------------------------------------------------------------

fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures/check").join(name)
}

fn check_json(args: &[&str]) -> (Option<i32>, Vec<serde_json::Value>) {
    let mut a = vec!["check", "--format", "json"];
    a.extend_from_slice(args);
    let out = systemd(&a);
    let v: serde_json::Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {out:?}"));
    (out.code, v.as_array().unwrap().clone())
}

/// Each fixture holds exactly one mistake: check reports it, with file and line, and nothing
/// else.
#[test]
fn check_finds_each_mistake_in_its_fixture() {
    let cases: [(&str, &str, &str, usize); 18] = [
        (
            "socket-path-mismatch",
            "socket-path-mismatch",
            "etc/systemd/system/app.service",
            9,
        ),
        (
            "socket-path-mismatch-nginx",
            "socket-path-mismatch",
            "etc/nginx/sites-enabled/app",
            2,
        ),
        (
            "runtime-directory-deletes-socket",
            "runtime-directory-deletes-socket",
            "etc/systemd/system/app.service",
            15,
        ),
        (
            "pidfile-mismatch",
            "pidfile-mismatch",
            "etc/systemd/system/app.service",
            15,
        ),
        (
            "type-forking",
            "type-forking",
            "etc/systemd/system/app.service",
            7,
        ),
        (
            "daemon-flag",
            "daemon-flag",
            "etc/systemd/system/app.service",
            9,
        ),
        (
            "notify-without-reload",
            "notify-without-reload",
            "etc/systemd/system/app.service",
            7,
        ),
        (
            "reload-wrong-signal",
            "reload-wrong-signal",
            "etc/systemd/system/app.service",
            10,
        ),
        (
            "timeout-stop-too-short",
            "timeout-stop-too-short",
            "etc/systemd/system/app.service",
            12,
        ),
        (
            "socket-keeps-nginx-out",
            "socket-keeps-nginx-out",
            "etc/systemd/system/app.socket",
            5,
        ),
        (
            "socket-keeps-nginx-out-dir",
            "socket-keeps-nginx-out",
            "etc/tmpfiles.d/app.conf",
            1,
        ),
        (
            "tmpfiles-owner-mismatch",
            "tmpfiles-owner-mismatch",
            "etc/tmpfiles.d/app.conf",
            1,
        ),
        (
            "notify-access-drops-upgrade",
            "notify-access-drops-upgrade",
            "etc/systemd/system/app.service",
            8,
        ),
        (
            "private-tmp-hides-path",
            "private-tmp-hides-path",
            "etc/systemd/system/app.service",
            8,
        ),
        (
            "type-not-notify",
            "type-not-notify",
            "etc/systemd/system/app.service",
            7,
        ),
        (
            "socket-world-accessible",
            "socket-world-accessible",
            "etc/systemd/system/app.socket",
            5,
        ),
        // ExecStart= under /root with ProtectHome=yes: systemd cannot run it.
        (
            "exec-hidden",
            "exec-hidden",
            "etc/systemd/system/app.service",
            9,
        ),
        // A virtualenv's script whose interpreter (pyenv's, under /home) ProtectHome=yes hides.
        (
            "exec-hidden-interpreter",
            "exec-hidden",
            "etc/systemd/system/app.service",
            9,
        ),
    ];
    for (dir, id, file, line) in cases {
        let root = fixture(dir);
        let (code, findings) = check_json(&["--root", root.to_str().unwrap()]);
        assert_eq!(code, Some(1), "{dir}: {findings:?}");
        assert_eq!(findings.len(), 1, "{dir}: {findings:#?}");
        let f = &findings[0];
        assert_eq!(f["id"], id, "{dir}: {f:#?}");
        assert_eq!(
            f["file"].as_str().unwrap(),
            root.join(file).to_str().unwrap(),
            "{dir}"
        );
        assert_eq!(f["line"], line, "{dir}: {f:#?}");
        assert!(!f["fix"].as_str().unwrap().is_empty());
        // The text form says the same.
        let out = systemd(&["check", "--root", root.to_str().unwrap()]);
        assert_eq!(out.code, Some(1));
        assert!(
            out.stdout
                .starts_with(&format!("{}:{line}: [{id}] ", root.join(file).display())),
            "{dir}: {}",
            out.stdout
        );
        assert!(out.stdout.contains("\n    fix: "), "{}", out.stdout);
    }
    let (code, findings) = check_json(&["--root", fixture("clean").to_str().unwrap()]);
    assert_eq!((code, findings.len()), (Some(0), 0), "{findings:#?}");
}

#[test]
fn check_is_clean_on_the_bundled_files() {
    let r = repo();
    let files = [
        "systemd/app.service",
        "systemd/app.socket",
        "tmpfiles.d/app.conf",
        "packaging/nginx/app.conf",
    ];
    let paths: Vec<String> = files
        .iter()
        .map(|f| r.join(f).display().to_string())
        .collect();
    let mut args = vec!["check"];
    args.extend(paths.iter().map(String::as_str));
    let out = systemd(&args);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.starts_with("no findings"), "{}", out.stdout);
    // Installed as the .deb installs them.
    let root = tempfile::tempdir().unwrap();
    for (from, to) in [
        ("systemd/app.service", "lib/systemd/system/app.service"),
        ("systemd/app.socket", "lib/systemd/system/app.socket"),
        ("tmpfiles.d/app.conf", "usr/lib/tmpfiles.d/app.conf"),
        ("packaging/nginx/app.conf", "etc/nginx/sites-enabled/app"),
    ] {
        let dst = root.path().join(to);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(r.join(from), dst).unwrap();
    }
    let (code, findings) = check_json(&["--root", root.path().to_str().unwrap()]);
    assert_eq!((code, findings.len()), (Some(0), 0), "{findings:#?}");
}

/// The deployment guide's units, exactly as published: the RuntimeDirectory= trap is found.
#[test]
fn check_reports_the_guides_runtime_directory_trap() {
    let guide = repo().join("tests/fixtures/guide");
    let (code, findings) = check_json(&[guide.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    let trap = findings
        .iter()
        .find(|f| f["id"] == "runtime-directory-deletes-socket")
        .unwrap_or_else(|| panic!("{findings:#?}"));
    assert!(trap["file"].as_str().unwrap().ends_with("gunicorn.service"));
    assert_eq!(trap["line"], 10);
    assert!(
        trap["message"]
            .as_str()
            .unwrap()
            .contains("/run/gunicorn/socket")
    );
    let ids: Vec<&str> = findings.iter().map(|f| f["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"socket-world-accessible"), "{ids:?}");
    assert!(ids.contains(&"type-not-notify"), "{ids:?}");
    // Its PIDFile= and --pid agree, its tmpfiles owner is its User=, nginx points at the
    // socket: none of those is reported.
    for wrong in [
        "pidfile-mismatch",
        "tmpfiles-owner-mismatch",
        "socket-path-mismatch",
    ] {
        assert!(!ids.contains(&wrong), "{ids:?}");
    }
    // The shared reference copy, when present, gives the same answer.
    let shared = repo().join("../shared/reference/guide-layout");
    if shared.is_dir() {
        let (code, f2) = check_json(&[shared.to_str().unwrap()]);
        assert_eq!(code, Some(1));
        assert!(
            f2.iter()
                .any(|f| f["id"] == "runtime-directory-deletes-socket")
        );
    }
}

#[test]
fn check_errors_are_one_clear_line_and_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.service");
    std::fs::write(&bad, "[Service]\nExecStart /usr/bin/ferricorn\n").unwrap();
    let what = tmp.path().join("what.txt");
    std::fs::write(&what, "hello world\n").unwrap();
    let quotes = tmp.path().join("q.service");
    std::fs::write(&quotes, "[Service]\nExecStart=/usr/bin/ferricorn \"x:y\n").unwrap();
    let missing = tmp.path().join("missing.service");
    for (args, needle) in [
        (vec![bad.to_str().unwrap()], format!("{}:2:", bad.display())),
        (vec![what.to_str().unwrap()], "cannot tell".to_string()),
        (
            vec![quotes.to_str().unwrap()],
            format!("{}:2:", quotes.display()),
        ),
        (vec![missing.to_str().unwrap()], "cannot read".to_string()),
        (
            vec!["--root", "/nonexistent-root"],
            "not a directory".to_string(),
        ),
        (
            vec!["--root", tmp.path().to_str().unwrap()],
            "nothing to check".to_string(),
        ),
        (vec![], "required".to_string()),
    ] {
        let mut a = vec!["check"];
        a.extend(args.iter().copied());
        let out = systemd(&a);
        assert_eq!(out.code, Some(2), "{args:?}: {out:?}");
        assert!(out.stderr.contains(&needle), "{args:?}: {}", out.stderr);
        assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
        assert!(!out.stderr.contains("panicked"));
    }
}

/// `--nginx-user` (or nginx's own `user` directive) decides who must reach the socket.
#[test]
fn check_honours_the_proxy_user() {
    let root = fixture("clean");
    let (code, findings) = check_json(&["--root", root.to_str().unwrap(), "--nginx-user", "nginx"]);
    assert_eq!(code, Some(1));
    assert_eq!(findings[0]["id"], "socket-keeps-nginx-out", "{findings:#?}");
}

/// For systemd >= 253 the service is Type=notify-reload (systemd sends HUP itself and waits for
/// RELOADING=1/READY=1), and check accepts it.
#[test]
fn notify_reload_variant_for_newer_systemd() {
    let tmp = tempfile::tempdir().unwrap();
    generate_into(tmp.path(), &["--systemd-version", "256", "hello:app"]);
    let svc = service_of(tmp.path(), "app");
    assert_eq!(svc.get("Service", "Type").unwrap().value, "notify-reload");
    assert_eq!(svc.get("Service", "NotifyAccess").unwrap().value, "all");
    assert!(svc.get("Service", "ExecReload").is_none());
    let out = systemd(&["check", tmp.path().to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "{out:?}");
}

//! `--reload` (development): a worker watches the source files of every module it imported
//! (`sys.modules`, rescanned every second: apps import lazily) and `--reload-extra-file`, and
//! tells the master when one changes; the master then reloads as on HUP.
//!
//! The watcher runs in the worker, as Gunicorn's does, because only a worker imports the app
//! (the master imports it only with `--preload`, which `--reload` is refused with), so only a
//! worker knows which files the app is made of. Unlike Gunicorn's (the worker exits and its
//! replacement imports the new code), the change starts the master's reload transaction: a
//! new generation imports the new code and takes over only once it serves, so a syntax error
//! in the edited file leaves the old code serving, with the traceback in the log, until the
//! next save. Directories are watched rather than files, so editors that save by renaming a
//! new file over the old one are seen. `--reload-engine`: `auto` and `inotify` use inotify
//! (`notify`'s recommended watcher), `poll` polls every second.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::{EventKind, RecursiveMode, Watcher};

use crate::config::Config;

/// Events this soon after a reported change belong to the same save.
const SETTLE: Duration = Duration::from_millis(300);

/// How often the list of imported modules is read again.
const RESCAN: Duration = Duration::from_secs(1);

/// Starts the watcher thread; `changed` is called with a file that changed, once per save
/// (the events of [`SETTLE`] after it are taken as the same save).
pub fn start(cfg: &Config, changed: impl Fn(&Path) + Send + 'static) -> Result<(), String> {
    let (tx, rx) = mpsc::channel();
    let watcher: Box<dyn Watcher + Send> = if cfg.reload_engine == "poll" {
        let c = notify::Config::default().with_poll_interval(Duration::from_secs(1));
        Box::new(notify::PollWatcher::new(tx, c).map_err(|e| format!("--reload: {e}"))?)
    } else {
        Box::new(notify::recommended_watcher(tx).map_err(|e| format!("--reload: {e}"))?)
    };
    let extra: Vec<PathBuf> = cfg
        .reload_extra_files
        .iter()
        .map(|f| std::path::absolute(f).unwrap_or_else(|_| PathBuf::from(f)))
        .collect();
    std::thread::Builder::new()
        .name("reloader".into())
        .spawn(move || watch(watcher, rx, extra, changed))
        .map_err(|e| format!("--reload: cannot start the watcher: {e}"))?;
    Ok(())
}

fn watch(
    mut watcher: Box<dyn Watcher + Send>,
    rx: mpsc::Receiver<notify::Result<notify::Event>>,
    extra: Vec<PathBuf>,
    changed: impl Fn(&Path),
) {
    let mut files: HashSet<PathBuf> = HashSet::new();
    let mut dirs: HashSet<PathBuf> = HashSet::new();
    let mut next_scan = Instant::now();
    loop {
        if Instant::now() >= next_scan {
            for f in crate::python::module_files()
                .into_iter()
                .chain(extra.iter().cloned())
            {
                if let Some(d) = f.parent()
                    && !dirs.contains(d)
                    && d.is_dir()
                {
                    match watcher.watch(d, RecursiveMode::NonRecursive) {
                        Ok(()) => {
                            dirs.insert(d.to_path_buf());
                        }
                        Err(e) => tracing::debug!("--reload: cannot watch {}: {e}", d.display()),
                    }
                }
                files.insert(f);
            }
            next_scan = Instant::now() + RESCAN;
        }
        match rx.recv_timeout(RESCAN) {
            Ok(Ok(event)) => {
                if matches!(event.kind, EventKind::Access(_)) {
                    continue;
                }
                if let Some(p) = event.paths.iter().find(|p| files.contains(*p)) {
                    changed(p);
                    // One save is several events (write, rename, attributes): one report.
                    let settled = Instant::now() + SETTLE;
                    while let Some(left) = settled.checked_duration_since(Instant::now()) {
                        if rx.recv_timeout(left).is_err() {
                            break;
                        }
                    }
                }
            }
            Ok(Err(e)) => tracing::debug!("--reload: {e}"),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

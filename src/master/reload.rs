//! A reload (HUP) as a transaction: it prepares the next [`Generation`], records everything it
//! changed in the master on the way, and either commits (the new generation serves in full) or
//! rolls every change back (it was refused, or its workers could not boot).
//!
//! What a reload changes in the master, and how each is undone:
//! - the working directory (entered for the new `--chdir`, so that relative paths in the new
//!   configuration resolve there): the previous one is restored;
//! - the logs (the new configuration's files opened and made current): the previous
//!   configuration's are reopened;
//! - listeners opened for new binds: closed (and their socket files removed).
//!
//! What it does not change in the master at all: the environment (each generation's workers
//! apply their own `-e` values after the fork). What it changes only when it commits: the
//! listeners the current generation serves (closed if no longer configured), the identity, the
//! number of workers and the process title.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::generation::{self, Generation};
use super::listeners;
use crate::config::{Config, Sources};
use crate::sockets::Listener;

/// A reload whose generation is booting.
pub(super) struct Reload {
    pub generation: Generation,
    /// The generation is refused if it does not serve in full by then.
    pub deadline: Instant,
    undo: Undo,
}

/// What a reload changed in the master, to be put back if it fails.
#[derive(Default)]
struct Undo {
    /// The working directory before the new `--chdir`.
    cwd: Option<PathBuf>,
    /// The configuration whose logs were current before the new ones were opened.
    logging: Option<Config>,
    /// Listeners opened for the new generation.
    opened: Vec<Listener>,
}

impl Undo {
    /// Puts everything back. The order matters for relative paths: socket files the reload
    /// created are removed from the new directory, the previous logs reopened from the old one.
    fn roll_back(self) {
        for l in self.opened {
            tracing::info!("Closing listener {} (its reload did not complete)", l.local);
            l.close_and_unlink();
        }
        if let Some(dir) = &self.cwd
            && let Err(e) = std::env::set_current_dir(dir)
        {
            tracing::error!(
                "cannot return to the working directory {}: {e}",
                dir.display()
            );
        }
        if let Some(cfg) = &self.logging
            && let Err(e) = crate::logging::reconfigure(cfg)
        {
            tracing::error!("cannot reopen the previous logs: {e}");
        }
    }
}

/// What a reload starts from.
pub(super) struct Current<'a> {
    pub sources: &'a Sources,
    /// Where the master was started (`--chdir` is relative to it).
    pub start_cwd: &'a Path,
    pub generation: &'a Generation,
    pub listeners: &'a [Listener],
    /// The `-e` keys the command line set in the master's environment at startup.
    pub env_applied: &'a [String],
}

impl Reload {
    /// Reads the configuration again and prepares the next generation. On error every change
    /// made so far is rolled back and the error says why the reload is refused.
    pub fn begin(now: &Current<'_>) -> Result<Reload, String> {
        let cfg = now.sources.load()?;
        if cfg.app.is_none() {
            return Err("the new configuration names no app".into());
        }
        let mut undo = Undo::default();
        match Self::prepare(cfg, now, &mut undo) {
            Ok(generation) => Ok(Reload {
                deadline: Instant::now() + Duration::from_secs(generation.cfg.timeout.max(30) * 2),
                generation,
                undo,
            }),
            Err(e) => {
                undo.roll_back();
                Err(e)
            }
        }
    }

    fn prepare(cfg: Config, now: &Current<'_>, undo: &mut Undo) -> Result<Generation, String> {
        if let Some(dir) = &cfg.chdir {
            let before = std::env::current_dir()
                .map_err(|e| format!("cannot read the working directory: {e}"))?;
            let dir = now.start_cwd.join(dir);
            std::env::set_current_dir(&dir)
                .map_err(|e| format!("--chdir {}: {e}", dir.display()))?;
            undo.cwd = Some(before);
        }
        let cwd = std::env::current_dir()
            .map_err(|e| format!("cannot read the working directory: {e}"))?;
        crate::python::check_reload(&cfg)?;
        let identity = crate::privileges::identity(cfg.user.as_deref(), cfg.group.as_deref())?;
        undo.opened = listeners::open_missing(&cfg, identity.as_ref(), now.listeners)?;
        crate::logging::reconfigure(&cfg)?;
        undo.logging = Some(now.generation.cfg.clone());
        let serves = now
            .listeners
            .iter()
            .filter(|l| Generation::wants(&cfg, l))
            .chain(undo.opened.iter())
            .map(Listener::raw_fd)
            .collect();
        Ok(Generation {
            number: now.generation.number + 1,
            workers: cfg.workers,
            identity,
            cwd,
            serves,
            env: generation::env_changes(&cfg.env, now.env_applied),
            cfg,
        })
    }

    /// The listeners opened for this reload (its generation serves them; the master does not
    /// hold them in its list until the reload commits).
    pub fn opened(&self) -> &[Listener] {
        &self.undo.opened
    }

    /// The reload failed: puts back everything it changed.
    pub fn roll_back(self) {
        self.undo.roll_back();
    }

    /// The new generation serves in full: it becomes the current one, and the master's
    /// listeners those it serves (the others are closed).
    pub fn commit(self, listeners: &mut Vec<Listener>) -> Generation {
        let Reload {
            generation, undo, ..
        } = self;
        let (keep, drop): (Vec<Listener>, Vec<Listener>) = std::mem::take(listeners)
            .into_iter()
            .partition(|l| generation.serves.contains(&l.raw_fd()));
        for l in drop {
            tracing::info!("Closing listener {} (no longer configured)", l.local);
            l.close_and_unlink();
        }
        *listeners = keep;
        listeners.extend(undo.opened);
        generation
    }
}

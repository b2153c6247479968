//! A generation: the configuration a set of workers runs with, and what a worker of it is given
//! when it is forked.
//!
//! Two generations run side by side during a reload (HUP): the current one and the one booting.
//! A worker forked for either — including a replacement for a worker of the current generation
//! that dies while the next one boots — gets exactly its own generation's working directory,
//! environment, identity and listeners, and closes every other descriptor the master holds.

use std::os::fd::RawFd;
use std::path::PathBuf;

use crate::config::Config;
use crate::privileges::Identity;
use crate::sockets::Listener;

pub(super) struct Generation {
    pub number: u64,
    pub cfg: Config,
    /// `--user`/`--group` its workers switch to.
    pub identity: Option<Identity>,
    /// The directory its workers start in (and import the app from): the master's, after this
    /// generation's `--chdir`.
    pub cwd: PathBuf,
    /// How many workers it should have (`--workers`, then TTIN/TTOU).
    pub workers: u32,
    /// The listeners its workers serve, by descriptor (each one of the master's listeners).
    pub serves: Vec<RawFd>,
    /// What its workers change in the environment they inherit from the master: its `-e`
    /// values to set (`Some`), and those of the configuration the master started with that it
    /// no longer has, to remove (`None`). The master's own environment never changes after
    /// startup.
    pub env: Vec<(String, Option<String>)>,
}

impl Generation {
    /// The first generation: the master's own configuration and state (`env_applied`: the
    /// `-e` keys the command line already set in the master's environment).
    pub fn first(
        cfg: Config,
        identity: Option<Identity>,
        listeners: &[Listener],
        env_applied: &[String],
    ) -> Generation {
        Generation {
            number: 1,
            workers: cfg.workers,
            identity,
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
            serves: listeners.iter().map(Listener::raw_fd).collect(),
            env: env_changes(&cfg.env, env_applied),
            cfg,
        }
    }

    /// Whether a listener is one of this generation's (by its configuration, not yet by
    /// descriptor): inherited sockets are served by every generation.
    pub fn wants(cfg: &Config, l: &Listener) -> bool {
        l.inherited || cfg.bind.iter().any(|b| l.matches(b))
    }

    /// Splits the master's listeners into those a worker of this generation serves and the
    /// descriptors it must close.
    pub fn split<'a>(
        &self,
        listeners: impl Iterator<Item = &'a Listener>,
    ) -> (Vec<&'a Listener>, Vec<RawFd>) {
        let mut serve = Vec::new();
        let mut close = Vec::new();
        for l in listeners {
            if self.serves.contains(&l.raw_fd()) {
                serve.push(l);
            } else {
                close.push(l.raw_fd());
            }
        }
        (serve, close)
    }
}

/// The changes that turn the master's environment, where the command line set the `-e` keys
/// `applied`, into one for the `-e KEY=VALUE` list `env`.
pub(super) fn env_changes(env: &[String], applied: &[String]) -> Vec<(String, Option<String>)> {
    let mut out: Vec<(String, Option<String>)> = env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), Some(v.to_string())))
        .collect();
    for old in applied {
        if !out.iter().any(|(k, _)| k == old) {
            out.push((old.clone(), None));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_changes_set_the_new_values_and_remove_the_dropped_ones() {
        let env = ["A=1".to_string(), "B=x=y".to_string()];
        let got = env_changes(&env, &["B".into(), "C".into()]);
        assert_eq!(
            got,
            vec![
                ("A".to_string(), Some("1".to_string())),
                ("B".to_string(), Some("x=y".to_string())),
                ("C".to_string(), None),
            ]
        );
    }
}

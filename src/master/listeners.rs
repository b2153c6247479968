//! Which sockets the master listens on: at startup, those systemd (or the master this one
//! upgrades from) passed, else the configured binds; on reload, the configured binds that are
//! not open yet.

use crate::config::Config;
use crate::privileges::Identity;
use crate::sockets::{self, Listener, LocalAddr};

/// Inherited sockets when there are any; otherwise the configured binds. Also the metrics
/// listener a master this one upgrades from handed over, if any (it is not served by workers).
pub(super) fn open_at_start(
    cfg: &Config,
    id: Option<&Identity>,
) -> Result<(Vec<Listener>, Option<Listener>), String> {
    let (metrics, inherited): (Vec<Listener>, Vec<Listener>) = sockets::from_systemd(&cfg.bind)?
        .into_iter()
        .partition(|l| l.name.as_deref() == Some(crate::metrics::endpoint::FD_NAME));
    let metrics = metrics.into_iter().next();
    if !inherited.is_empty() {
        if cfg.bind_explicit {
            for b in &cfg.bind {
                if !inherited.iter().any(|l| l.matches(b)) {
                    tracing::warn!(
                        "--bind {b} matches none of the sockets systemd passed; serving those only"
                    );
                }
            }
        }
        announce(&inherited);
        return Ok((inherited, metrics));
    }
    let ls = sockets::bind_all(&cfg.bind, cfg.backlog as i32)?;
    give(&ls, id);
    announce(&ls);
    Ok((ls, metrics))
}

/// For a reload: opens the binds of `cfg` that none of `open` serves. Sockets passed by systemd
/// are the only ones served while there are any: then nothing is opened.
pub(super) fn open_missing(
    cfg: &Config,
    id: Option<&Identity>,
    open: &[Listener],
) -> Result<Vec<Listener>, String> {
    if open.iter().any(|l| l.inherited) {
        return Ok(Vec::new());
    }
    let missing: Vec<_> = cfg
        .bind
        .iter()
        .filter(|b| !open.iter().any(|l| l.matches(b)))
        .cloned()
        .collect();
    let ls = sockets::bind_all(&missing, cfg.backlog as i32)?;
    give(&ls, id);
    announce(&ls);
    Ok(ls)
}

/// Unix sockets ferricorn created belong to the workers' identity.
fn give(ls: &[Listener], id: Option<&Identity>) {
    let Some(id) = id else { return };
    for l in ls {
        if let LocalAddr::Unix(p) = &l.local {
            crate::privileges::give(p, id);
        }
    }
}

fn announce(ls: &[Listener]) {
    let pid = std::process::id();
    for l in ls {
        tracing::info!("Listening at: {} ({pid})", l.local);
        if l.inherited {
            let name = l.name.as_deref().unwrap_or("unnamed");
            tracing::info!("Inherited socket fd {} '{name}' ({})", l.raw_fd(), l.local);
        }
    }
}

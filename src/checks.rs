//! The checks of setting values that belong to other modules — the app's spelling and the
//! virtualenv (`python`), the access log format (`logging`), users and groups
//! (`privileges`) — given to [`crate::config::Sources`] by the commands that load a
//! configuration. They live here, above `config`, so that `config` imports none of those
//! modules; the messages name where the value came from, as config's own checks do.

use crate::config::{Checks, Config, Layer};

/// For the server on this machine: every check.
pub const HOST: Checks = Checks {
    layer: host_layer,
    config: host_config,
    python: Some(crate::python::conffile::read),
};

/// For deployment files of another machine (`ferricorn systemd generate`): what can be
/// checked here without asking this machine (no user lookups, no virtualenv).
pub const TARGET: Checks = Checks {
    layer: values,
    config: |_| Ok(()),
    python: None,
};

/// The spelling checks: `APP_MODULE` and the access log format.
fn values(l: &Layer) -> Result<(), (&'static str, String)> {
    if let Some(app) = &l.app {
        crate::python::AppSpec::parse(app).map_err(|e| ("app", e))?;
    }
    if let Some(f) = &l.access_log_format {
        crate::logging::access::AccessFormat::parse(f).map_err(|e| ("access_log_format", e))?;
    }
    Ok(())
}

/// The spelling checks, and that `--user` and `--group` exist here.
fn host_layer(l: &Layer) -> Result<(), (&'static str, String)> {
    values(l)?;
    if let Some(u) = &l.user {
        crate::privileges::lookup_user(u).map_err(|e| ("user", e))?;
    }
    if let Some(g) = &l.group {
        crate::privileges::lookup_group(g).map_err(|e| ("group", e))?;
    }
    Ok(())
}

/// The virtualenv exists and was made by the Python this binary embeds.
fn host_config(cfg: &Config) -> Result<(), String> {
    match &cfg.virtualenv {
        Some(v) => crate::python::check_virtualenv(v),
        None => Ok(()),
    }
}

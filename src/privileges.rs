//! `--user`, `--group`, `--umask`: the master keeps its privileges (to bind, write the pid file,
//! and re-bind on reload); each worker drops to the configured user and group right after
//! `fork()`, before Python starts.

use std::ffi::CString;
use std::os::unix::fs::chown;
use std::path::Path;

use nix::unistd::{Gid, Group, Uid, User, initgroups, setgid, setuid};

/// The identity workers run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub uid: Uid,
    pub gid: Gid,
}

/// A user by name or numeric uid: (name, uid, primary gid).
pub fn lookup_user(u: &str) -> Result<(String, Uid, Gid), String> {
    let found = match u.parse::<u32>() {
        Ok(n) => User::from_uid(Uid::from_raw(n)),
        Err(_) => User::from_name(u),
    };
    match found {
        Ok(Some(user)) => Ok((user.name, user.uid, user.gid)),
        Ok(None) => Err(format!("no such user: {u}")),
        Err(e) => Err(format!("cannot look up user {u}: {e}")),
    }
}

/// A group by name or numeric gid.
pub fn lookup_group(g: &str) -> Result<Gid, String> {
    if let Ok(n) = g.parse::<u32>() {
        return Ok(Gid::from_raw(n));
    }
    match Group::from_name(g) {
        Ok(Some(grp)) => Ok(grp.gid),
        Ok(None) => Err(format!("no such group: {g}")),
        Err(e) => Err(format!("cannot look up group {g}: {e}")),
    }
}

/// The identity from `--user`/`--group`, if one is configured and differs from ours.
pub fn identity(user: Option<&str>, group: Option<&str>) -> Result<Option<Identity>, String> {
    if user.is_none() && group.is_none() {
        return Ok(None);
    }
    let (user, uid, primary) = match user {
        Some(u) => lookup_user(u)?,
        None => {
            let uid = Uid::effective();
            let name = User::from_uid(uid)
                .ok()
                .flatten()
                .map(|u| u.name)
                .unwrap_or_default();
            (name, uid, Gid::effective())
        }
    };
    let gid = match group {
        Some(g) => lookup_group(g)?,
        None => primary,
    };
    if uid == Uid::effective() && gid == Gid::effective() {
        return Ok(None);
    }
    if !Uid::effective().is_root() {
        return Err(format!(
            "--user/--group need the master to start as root (it runs as uid {})",
            Uid::effective()
        ));
    }
    Ok(Some(Identity { user, uid, gid }))
}

/// Applies `--umask` (before anything is created).
pub fn apply_umask(umask: Option<u32>) {
    if let Some(m) = umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(m));
    }
}

/// Gives a file the master created (socket, log file) to the workers' identity.
pub fn give(path: &Path, id: &Identity) {
    if let Err(e) = chown(path, Some(id.uid.as_raw()), Some(id.gid.as_raw())) {
        tracing::warn!("cannot chown {} to {}: {e}", path.display(), id.user);
    }
}

/// In a worker: switch to the identity, for good (group first, then user).
pub fn drop_to(id: &Identity) -> Result<(), String> {
    if let Ok(name) = CString::new(id.user.as_str())
        && !id.user.is_empty()
    {
        initgroups(&name, id.gid).map_err(|e| format!("initgroups({}): {e}", id.user))?;
    } else {
        nix::unistd::setgroups(&[id.gid]).map_err(|e| format!("setgroups: {e}"))?;
    }
    setgid(id.gid).map_err(|e| format!("setgid({}): {e}", id.gid))?;
    setuid(id.uid).map_err(|e| format!("setuid({}): {e}", id.uid))?;
    if setuid(Uid::from_raw(0)).is_ok() && !id.uid.is_root() {
        return Err("could still regain root after setuid".into());
    }
    // Python and the app find HOME and USER of the user they run as.
    if let Ok(Some(u)) = User::from_uid(id.uid) {
        // SAFETY: a freshly forked worker is single-threaded.
        unsafe {
            std::env::set_var("HOME", &u.dir);
            std::env::set_var("USER", &u.name);
            std::env::set_var("LOGNAME", &u.name);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_root_and_refuses_unknown_names() {
        let (name, uid, gid) = lookup_user("root").unwrap();
        assert_eq!((name.as_str(), uid.as_raw(), gid.as_raw()), ("root", 0, 0));
        assert_eq!(lookup_user("0").unwrap().0, "root");
        assert!(
            lookup_user("no-such-user-ferricorn")
                .unwrap_err()
                .contains("no such user")
        );
        assert_eq!(lookup_group("0").unwrap().as_raw(), 0);
        assert!(lookup_group("no-such-group-ferricorn").is_err());
    }
}

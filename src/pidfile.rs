//! `--pid FILE`: the master's pid, written atomically (temp file + rename) and removed at exit.
//!
//! A file left by a dead master — or whose pid now belongs to some other program — does not
//! block the start; a live ferricorn master does.

use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    pid: u32,
}

/// Whether `pid` is a running ferricorn master (not a reused pid of another program).
fn is_live_ferricorn(pid: u32) -> bool {
    if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_err() {
        return false;
    }
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmd) => String::from_utf8_lossy(&cmd).contains("ferricorn"),
        Err(_) => false,
    }
}

impl PidFile {
    /// Writes our pid to `path`. `predecessor` is the master this one is taking over from
    /// (USR2), whose pid may still be in the file.
    pub fn create(path: &Path, predecessor: Option<u32>) -> Result<PidFile, String> {
        let pid = std::process::id();
        // Absolute: a reload may move the master to another working directory.
        let path = &std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(old) = text.trim().parse::<u32>()
            && old != pid
            && Some(old) != predecessor
            && is_live_ferricorn(old)
        {
            return Err(format!(
                "pid file {} names a running ferricorn master (pid {old}); is it already running?",
                path.display()
            ));
        }
        write_atomically(path, pid)
            .map_err(|e| format!("cannot write pid file {}: {e}", path.display()))?;
        Ok(PidFile {
            path: path.to_path_buf(),
            pid,
        })
    }

    /// Writes our pid again if the file names another process: a successor (USR2) that wrote
    /// its own and died, while this master still serves.
    pub fn reclaim(&self) {
        let ours = std::fs::read_to_string(&self.path)
            .is_ok_and(|t| t.trim().parse::<u32>() == Ok(self.pid));
        if !ours && let Err(e) = write_atomically(&self.path, self.pid) {
            tracing::warn!("cannot write pid file {}: {e}", self.path.display());
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the file if it still holds our pid (a successor may have replaced it).
    pub fn remove(self) {
        if let Ok(text) = std::fs::read_to_string(&self.path)
            && text.trim().parse::<u32>() == Ok(self.pid)
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Writes `pid` to a temporary file next to `path` and renames it over `path`.
fn write_atomically(path: &Path, pid: u32) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.{pid}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        writeln!(f, "{pid}")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_reclaims_and_removes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("app.pid");
        let f = PidFile::create(&p, None).unwrap();
        let ours = format!("{}\n", std::process::id());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), ours);
        // A successor (USR2) wrote its pid, then died: the file names us again.
        std::fs::write(&p, "12345\n").unwrap();
        f.reclaim();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), ours);
        f.remove();
        assert!(!p.exists());
    }

    #[test]
    fn stale_files_do_not_block() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("app.pid");
        // A dead pid (pid_max is far below this) and a live non-ferricorn pid (pid 1).
        for stale in ["999999999\n", "1\n", "garbage"] {
            std::fs::write(&p, stale).unwrap();
            PidFile::create(&p, None).unwrap().remove();
        }
    }

    #[test]
    fn a_successor_is_not_removed_by_us() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("app.pid");
        let f = PidFile::create(&p, None).unwrap();
        std::fs::write(&p, "12345\n").unwrap();
        f.remove();
        assert!(p.exists());
    }
}

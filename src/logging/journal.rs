//! Is a standard stream connected to the journal? systemd sets `JOURNAL_STREAM=DEV:INODE` for
//! the stream it connected to journald; it counts only if the descriptor is still that stream
//! (a shell redirect or a supervisor in between replaces it).

use std::os::fd::RawFd;

/// Whether `JOURNAL_STREAM` (as given) names the file with this device and inode.
pub fn stream_matches(journal_stream: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = journal_stream.trim().split_once(':') else {
        return false;
    };
    matches!((d.parse::<u64>(), i.parse::<u64>()), (Ok(d), Ok(i)) if d == dev && i == ino)
}

/// Device and inode of an open descriptor.
pub fn dev_ino(fd: RawFd) -> Option<(u64, u64)> {
    // SAFETY: fstat fills the struct for an open descriptor; failure is checked.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) != 0 {
            return None;
        }
        Some((st.st_dev, st.st_ino))
    }
}

/// Whether `fd` (1 or 2) is the journal stream systemd set up.
pub fn is_journal(fd: RawFd) -> bool {
    let Ok(var) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    dev_ino(fd).is_some_and(|(d, i)| stream_matches(&var, d, i))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn parses_dev_and_inode() {
        assert!(stream_matches("8:12345", 8, 12345));
        assert!(stream_matches(" 8:12345\n", 8, 12345));
        assert!(!stream_matches("8:12346", 8, 12345));
        assert!(!stream_matches("9:12345", 8, 12345));
        assert!(!stream_matches("garbage", 8, 12345));
        assert!(!stream_matches("", 8, 12345));
    }

    #[test]
    fn matches_the_real_descriptor_only() {
        let f = tempfile::tempfile().unwrap();
        let other = tempfile::tempfile().unwrap();
        let (d, i) = dev_ino(f.as_raw_fd()).unwrap();
        let var = format!("{d}:{i}");
        assert!(stream_matches(&var, d, i));
        let (d2, i2) = dev_ino(other.as_raw_fd()).unwrap();
        assert!(!stream_matches(&var, d2, i2));
        assert!(dev_ino(-1).is_none());
    }
}

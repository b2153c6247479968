//! The `Date` header (RFC 9110 §6.6.1), formatted once per second per thread.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

thread_local! {
    static CACHE: RefCell<(u64, Vec<u8>)> = const { RefCell::new((u64::MAX, Vec::new())) };
}

/// Appends `Date: <IMF-fixdate>\r\n`.
pub fn append(out: &mut Vec<u8>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    CACHE.with_borrow_mut(|(secs, line)| {
        if *secs != now {
            line.clear();
            let t = chrono::DateTime::from_timestamp(now as i64, 0).unwrap_or_default();
            line.extend_from_slice(
                format!("Date: {}\r\n", t.format("%a, %d %b %Y %H:%M:%S GMT")).as_bytes(),
            );
            *secs = now;
        }
        out.extend_from_slice(line);
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn imf_fixdate() {
        let mut out = Vec::new();
        super::append(&mut out);
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.starts_with("Date: ") && s.ends_with(" GMT\r\n") && s.len() == 37,
            "{s:?}"
        );
    }
}

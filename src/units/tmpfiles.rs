//! tmpfiles.d(5) lines: `Type Path Mode User Group Age Argument`, `-` meaning the default.

use std::path::{Path, PathBuf};

/// One tmpfiles.d line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TmpLine {
    /// The type letter with its modifiers (`d`, `D`, `d!`, ...).
    pub kind: String,
    pub path: String,
    /// Octal mode, if given (`None` for `-`).
    pub mode: Option<u32>,
    /// Owner; `None` for `-` (root).
    pub user: Option<String>,
    /// Group; `None` for `-` (root).
    pub group: Option<String>,
    pub line: usize,
}

impl TmpLine {
    /// Whether the line creates a directory (`d`, `D`, `v`, `q`, `Q`).
    pub fn is_dir(&self) -> bool {
        matches!(self.kind.chars().next(), Some('d' | 'D' | 'v' | 'q' | 'Q'))
    }
}

/// A tmpfiles.d file.
#[derive(Debug, Clone)]
pub struct TmpFile {
    pub path: PathBuf,
    pub lines: Vec<TmpLine>,
}

impl TmpFile {
    pub fn read(path: &Path) -> Result<TmpFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        TmpFile::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<TmpFile, String> {
        let mut lines = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let l = raw.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let fields = split_fields(l);
            if fields.len() < 2 {
                return Err(format!(
                    "{}:{n}: a tmpfiles.d line needs at least a type and a path: {l}",
                    path.display()
                ));
            }
            let kind = fields[0].clone();
            if !kind.starts_with(|c: char| c.is_ascii_alphabetic()) {
                return Err(format!(
                    "{}:{n}: unknown tmpfiles.d line type '{kind}'",
                    path.display()
                ));
            }
            let opt = |i: usize| {
                fields
                    .get(i)
                    .filter(|f| f.as_str() != "-")
                    .map(|f| f.to_string())
            };
            let mode =
                match opt(2) {
                    Some(m) => {
                        let digits = m.trim_start_matches(['~', ':']);
                        Some(u32::from_str_radix(digits, 8).map_err(|_| {
                            format!("{}:{n}: mode '{m}' is not octal", path.display())
                        })?)
                    }
                    None => None,
                };
            lines.push(TmpLine {
                kind,
                path: fields[1].clone(),
                mode,
                user: opt(3),
                group: opt(4),
                line: n,
            });
        }
        Ok(TmpFile {
            path: path.to_path_buf(),
            lines,
        })
    }
}

/// Whitespace-separated fields; a double-quoted field may hold spaces.
fn split_fields(l: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in l.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_guide_line() {
        let f = TmpFile::parse(
            Path::new("x.conf"),
            "# c\n\nd /run/gunicorn 0755 someuser somegroup -\nD! \"/run/a b\" - - -\n",
        )
        .unwrap();
        let l = &f.lines[0];
        assert_eq!(
            (l.path.as_str(), l.mode, l.user.as_deref(), l.line),
            ("/run/gunicorn", Some(0o755), Some("someuser"), 3)
        );
        assert!(l.is_dir());
        assert_eq!(f.lines[1].path, "/run/a b");
        assert_eq!(f.lines[1].user, None);
        assert!(TmpFile::parse(Path::new("x"), "d\n").is_err());
        assert!(TmpFile::parse(Path::new("x"), "d /x 9z9 - -\n").is_err());
    }
}

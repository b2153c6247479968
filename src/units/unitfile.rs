//! A small reader for systemd unit files: `[Section]` headers, `Key=value` assignments,
//! `#`/`;` comment lines and backslash line continuations, keeping the 1-based line number
//! where each assignment starts (for `FILE:LINE` messages).
//!
//! It also splits command lines (`ExecStart=`) into words the way systemd does, and writes
//! words so that systemd reads them back unchanged ([`quote_word`]).

use std::path::{Path, PathBuf};

/// One `Key=value` assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub section: String,
    pub key: String,
    /// The value, continuation lines joined with a space, surrounding whitespace removed.
    pub value: String,
    /// 1-based line of the key.
    pub line: usize,
}

/// A parsed unit file.
#[derive(Debug, Clone)]
pub struct UnitFile {
    pub path: PathBuf,
    /// Every assignment, in file order.
    pub entries: Vec<Entry>,
    /// Every section header: (name, 1-based line).
    pub sections: Vec<(String, usize)>,
}

impl UnitFile {
    /// Reads and parses a unit file; errors name the file (and line).
    pub fn read(path: &Path) -> Result<UnitFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        UnitFile::parse(path, &text)
    }

    /// Parses unit file text; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<UnitFile, String> {
        let name = path.display();
        let mut entries: Vec<Entry> = Vec::new();
        let mut sections = Vec::new();
        let mut section: Option<String> = None;
        // An assignment still being continued: (entry so far).
        let mut open: Option<Entry> = None;
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.trim();
            if let Some(mut e) = open.take() {
                // Comment lines inside a continuation are skipped, as systemd does.
                if line.starts_with('#') || line.starts_with(';') {
                    open = Some(e);
                    continue;
                }
                let (part, more) = strip_continuation(line);
                if !e.value.is_empty() && !part.is_empty() {
                    e.value.push(' ');
                }
                e.value.push_str(part);
                if more {
                    open = Some(e);
                } else {
                    e.value = e.value.trim().to_string();
                    entries.push(e);
                }
                continue;
            }
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(rest) = line.strip_prefix('[') {
                let Some(sec) = rest.strip_suffix(']') else {
                    return Err(format!("{name}:{n}: malformed section header: {line}"));
                };
                if sec.is_empty() || sec.contains(['[', ']']) {
                    return Err(format!("{name}:{n}: malformed section header: {line}"));
                }
                section = Some(sec.to_string());
                sections.push((sec.to_string(), n));
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(format!(
                    "{name}:{n}: expected Key=value, a [Section] or a comment, found: {line}"
                ));
            };
            let key = key.trim();
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(format!("{name}:{n}: malformed assignment: {line}"));
            }
            let Some(sec) = &section else {
                return Err(format!(
                    "{name}:{n}: assignment to {key} outside of any [Section]"
                ));
            };
            let (part, more) = strip_continuation(value.trim());
            let e = Entry {
                section: sec.clone(),
                key: key.to_string(),
                value: part.to_string(),
                line: n,
            };
            if more {
                open = Some(e);
            } else {
                entries.push(Entry {
                    value: e.value.trim().to_string(),
                    ..e
                });
            }
        }
        if let Some(mut e) = open {
            // A continuation at the end of the file: systemd takes what it has.
            e.value = e.value.trim().to_string();
            entries.push(e);
        }
        Ok(UnitFile {
            path: path.to_path_buf(),
            entries,
            sections,
        })
    }

    /// The file name (`app.service`).
    pub fn file_name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The name without its suffix (`app` for `app.service`).
    pub fn stem(&self) -> String {
        let n = self.file_name();
        match n.rsplit_once('.') {
            Some((s, _)) => s.to_string(),
            None => n,
        }
    }

    /// The last assignment of `key` in `section` (a later one overrides an earlier one).
    pub fn get(&self, section: &str, key: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.section == section && e.key == key)
    }

    /// The effective assignments of a list-valued key: an empty assignment resets the list.
    pub fn get_all(&self, section: &str, key: &str) -> Vec<&Entry> {
        let mut out = Vec::new();
        for e in self
            .entries
            .iter()
            .filter(|e| e.section == section && e.key == key)
        {
            if e.value.is_empty() {
                out.clear();
            } else {
                out.push(e);
            }
        }
        out
    }

    /// The line of a section header (the first one of that name).
    pub fn section_line(&self, section: &str) -> Option<usize> {
        self.sections
            .iter()
            .find(|(s, _)| s == section)
            .map(|(_, n)| *n)
    }
}

/// A line without its trailing continuation backslash, and whether it had one.
fn strip_continuation(line: &str) -> (&str, bool) {
    match line.strip_suffix('\\') {
        Some(rest) => (rest.trim_end(), true),
        None => (line, false),
    }
}

/// systemd's boolean spellings.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "yes" | "y" | "true" | "t" | "on" => Some(true),
        "0" | "no" | "n" | "false" | "f" | "off" => Some(false),
        _ => None,
    }
}

/// A systemd time span (`90`, `90s`, `1min 30s`, `500ms`, `2h`, `infinity`) in seconds
/// (`None` if it cannot be read; `f64::INFINITY` for `infinity`).
pub fn parse_timespan(v: &str) -> Option<f64> {
    let v = v.trim();
    if v == "infinity" {
        return Some(f64::INFINITY);
    }
    let mut total = 0.0;
    let mut rest = v;
    let mut any = false;
    while !rest.trim_start().is_empty() {
        rest = rest.trim_start();
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return None;
        }
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = rest[num_end..].trim_start();
        let unit_end = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let mult = match unit {
            "" | "s" | "sec" | "second" | "seconds" => 1.0,
            "us" | "usec" | "µs" => 1e-6,
            "ms" | "msec" => 1e-3,
            "m" | "min" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86400.0,
            "w" | "week" | "weeks" => 7.0 * 86400.0,
            _ => return None,
        };
        total += n * mult;
        any = true;
    }
    any.then_some(total)
}

/// Splits a command line the way systemd does for `ExecStart=`: whitespace separates words;
/// double and single quotes group; C escapes (`\"`, `\\`, `\n`, `\xNN`, ...) are decoded;
/// `%%` is a literal `%` and `$$` a literal `$` (other specifiers and variables are kept as
/// written). The leading prefixes (`-`, `@`, `:`, `+`, `!`) are removed from the first word.
pub fn split_command(value: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (_, '\\') => {
                in_word = true;
                let Some(e) = chars.next() else {
                    return Err("a command line ends with a lone backslash".into());
                };
                match e {
                    'n' => cur.push('\n'),
                    't' => cur.push('\t'),
                    'r' => cur.push('\r'),
                    'a' => cur.push('\u{7}'),
                    'b' => cur.push('\u{8}'),
                    'f' => cur.push('\u{c}'),
                    'v' => cur.push('\u{b}'),
                    's' => cur.push(' '),
                    'x' => {
                        let h: String = chars.by_ref().take(2).collect();
                        let b = u8::from_str_radix(&h, 16)
                            .map_err(|_| format!("bad escape \\x{h} in a command line"))?;
                        cur.push(b as char);
                    }
                    other => cur.push(other),
                }
            }
            (_, '%') if chars.peek() == Some(&'%') => {
                chars.next();
                cur.push('%');
                in_word = true;
            }
            (_, '$') if chars.peek() == Some(&'$') => {
                chars.next();
                cur.push('$');
                in_word = true;
            }
            (_, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err("unbalanced quotes in a command line".into());
    }
    if in_word {
        words.push(cur);
    }
    if let Some(first) = words.first_mut() {
        let trimmed = first
            .trim_start_matches(['-', '@', ':', '+', '!'])
            .to_string();
        *first = trimmed;
    }
    Ok(words)
}

/// Writes one word of a command line so that systemd reads it back as exactly `w`
/// (see [`split_command`]): `%` and `$` doubled, quoted when needed.
pub fn quote_word(w: &str) -> String {
    let escaped = w.replace('%', "%%").replace('$', "$$");
    let plain = !w.is_empty()
        && !w
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '\\' | ';'));
    if plain {
        return escaped;
    }
    let mut out = String::from("\"");
    for c in escaped.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<UnitFile, String> {
        UnitFile::parse(Path::new("t.service"), text)
    }

    #[test]
    fn sections_keys_comments_and_continuations_keep_lines() {
        let u = parse(
            "# c\n[Unit]\nDescription=x y \n\n[Service]\n; c\nExecStart=/bin/a --b \\\n   # skipped\n   c \\\n   d\nUser=u\nEnvironment=\nEnvironment=A=1\n",
        )
        .unwrap();
        assert_eq!(u.get("Unit", "Description").unwrap().value, "x y");
        let e = u.get("Service", "ExecStart").unwrap();
        assert_eq!((e.value.as_str(), e.line), ("/bin/a --b c d", 7));
        assert_eq!(u.get("Service", "User").unwrap().line, 11);
        assert_eq!(u.get_all("Service", "Environment").len(), 1);
        assert_eq!(u.section_line("Service"), Some(5));
        assert_eq!(u.stem(), "t");
    }

    #[test]
    fn malformed_lines_name_file_and_line() {
        let e = parse("[Unit]\nDescription x\n").unwrap_err();
        assert!(e.starts_with("t.service:2:"), "{e}");
        let e = parse("User=x\n").unwrap_err();
        assert!(
            e.starts_with("t.service:1:") && e.contains("outside"),
            "{e}"
        );
        let e = parse("[Unit\n").unwrap_err();
        assert!(e.starts_with("t.service:1:"), "{e}");
    }

    #[test]
    fn timespans() {
        assert_eq!(parse_timespan("90"), Some(90.0));
        assert_eq!(parse_timespan("1min 30s"), Some(90.0));
        assert_eq!(parse_timespan("2m"), Some(120.0));
        assert_eq!(parse_timespan("500ms"), Some(0.5));
        assert_eq!(parse_timespan("infinity"), Some(f64::INFINITY));
        assert_eq!(parse_timespan("soon"), None);
    }

    #[test]
    fn quoting_round_trips_through_splitting() {
        let words = [
            "/usr/bin/ferricorn",
            "--access-log-format",
            r#"%(h)s "%(r)s" \ $HOME"#,
            "",
            "a b",
            "it's",
            ";",
            "tab\there",
        ];
        let line: Vec<String> = words.iter().map(|w| quote_word(w)).collect();
        assert_eq!(split_command(&line.join(" ")).unwrap(), words);
        assert_eq!(quote_word("--workers"), "--workers");
        assert_eq!(quote_word("100%"), "100%%");
    }

    #[test]
    fn splitting_strips_prefixes_and_handles_quotes() {
        assert_eq!(
            split_command("-/usr/bin/gunicorn --bind 'unix:/run/a b' x").unwrap(),
            ["/usr/bin/gunicorn", "--bind", "unix:/run/a b", "x"]
        );
        assert!(split_command("a \"b").is_err());
    }
}

//! Just enough of nginx's configuration syntax to find where it sends requests: `user`,
//! `upstream NAME { server ADDRESS ...; }` and `proxy_pass URL;`, each with its line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// An address nginx proxies to, where it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `unix:/path` as a path, else the address as written (`127.0.0.1:8000`).
    pub unix: Option<String>,
    pub raw: String,
    pub line: usize,
}

/// What one nginx file says.
#[derive(Debug, Clone, Default)]
pub struct NginxFile {
    pub path: PathBuf,
    /// `user USER [GROUP];`: (user, group, line).
    pub user: Option<(String, Option<String>, usize)>,
    /// `upstream NAME { server ADDRESS; }`.
    pub upstreams: BTreeMap<String, Vec<Target>>,
    /// `proxy_pass URL;`: (URL, line).
    pub proxy_passes: Vec<(String, usize)>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Semi,
    Open,
    Close,
}

fn tokenize(path: &Path, text: &str) -> Result<Vec<(Tok, usize)>, String> {
    let mut out = Vec::new();
    let mut line = 1;
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            '\n' => {
                line += 1;
                chars.next();
            }
            c if c.is_whitespace() => {
                chars.next();
            }
            '#' => {
                while let Some(&c) = chars.peek() {
                    if c == '\n' {
                        break;
                    }
                    chars.next();
                }
            }
            ';' => {
                out.push((Tok::Semi, line));
                chars.next();
            }
            '{' => {
                out.push((Tok::Open, line));
                chars.next();
            }
            '}' => {
                out.push((Tok::Close, line));
                chars.next();
            }
            '"' | '\'' => {
                let q = c;
                let start = line;
                chars.next();
                let mut w = String::new();
                loop {
                    match chars.next() {
                        None => {
                            return Err(format!(
                                "{}:{start}: unterminated quoted string",
                                path.display()
                            ));
                        }
                        Some('\\') => {
                            if let Some(e) = chars.next() {
                                w.push(e);
                            }
                        }
                        Some(c) if c == q => break,
                        Some(c) => {
                            if c == '\n' {
                                line += 1;
                            }
                            w.push(c);
                        }
                    }
                }
                out.push((Tok::Word(w), start));
            }
            _ => {
                let mut w = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || matches!(c, ';' | '{' | '}' | '"' | '\'') {
                        break;
                    }
                    w.push(c);
                    chars.next();
                }
                out.push((Tok::Word(w), line));
            }
        }
    }
    Ok(out)
}

impl NginxFile {
    pub fn read(path: &Path) -> Result<NginxFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        NginxFile::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<NginxFile, String> {
        let toks = tokenize(path, text)?;
        let mut f = NginxFile {
            path: path.to_path_buf(),
            ..NginxFile::default()
        };
        // The block each `{` opened: Some(upstream name) or None.
        let mut blocks: Vec<Option<String>> = Vec::new();
        let mut words: Vec<(String, usize)> = Vec::new();
        for (tok, line) in toks {
            match tok {
                Tok::Word(w) => words.push((w, line)),
                Tok::Open => {
                    let upstream = match words.as_slice() {
                        [(d, _), (name, _)] if d == "upstream" => Some(name.clone()),
                        _ => None,
                    };
                    if words.is_empty() {
                        return Err(format!(
                            "{}:{line}: '{{' without a directive",
                            path.display()
                        ));
                    }
                    words.clear();
                    blocks.push(upstream);
                }
                Tok::Close => {
                    if !words.is_empty() {
                        return Err(format!(
                            "{}:{line}: directive '{}' is not terminated by ';'",
                            path.display(),
                            words[0].0
                        ));
                    }
                    if blocks.pop().is_none() {
                        return Err(format!("{}:{line}: unexpected '}}'", path.display()));
                    }
                }
                Tok::Semi => {
                    let Some((name, dline)) = words.first().cloned() else {
                        continue;
                    };
                    let args: Vec<&str> = words[1..].iter().map(|(w, _)| w.as_str()).collect();
                    match (name.as_str(), blocks.last()) {
                        ("user", _) if blocks.is_empty() && !args.is_empty() => {
                            f.user = Some((
                                args[0].to_string(),
                                args.get(1).map(|s| s.to_string()),
                                dline,
                            ));
                        }
                        ("server", Some(Some(up))) if !args.is_empty() => {
                            f.upstreams.entry(up.clone()).or_default().push(Target {
                                unix: args[0].strip_prefix("unix:").map(str::to_string),
                                raw: args[0].to_string(),
                                line: dline,
                            });
                        }
                        ("proxy_pass", _) if !args.is_empty() => {
                            f.proxy_passes.push((args[0].to_string(), dline));
                        }
                        _ => {}
                    }
                    words.clear();
                }
            }
        }
        if !words.is_empty() {
            return Err(format!(
                "{}: directive '{}' is not terminated by ';'",
                path.display(),
                words[0].0
            ));
        }
        if !blocks.is_empty() {
            return Err(format!(
                "{}: unbalanced '{{' (a block is never closed)",
                path.display()
            ));
        }
        Ok(f)
    }

    /// Every address the `proxy_pass` directives of this file lead to, resolved through the
    /// upstreams of `all` files (a `proxy_pass` may name an upstream defined elsewhere).
    pub fn targets(&self, all: &[NginxFile]) -> Vec<(PathBuf, Target)> {
        let mut out = Vec::new();
        for (url, line) in &self.proxy_passes {
            let rest = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"))
                .unwrap_or(url);
            if let Some(p) = rest.strip_prefix("unix:") {
                // `unix:/path:/uri`: the path ends at the colon before the URI.
                let path = p.split(':').next().unwrap_or(p).to_string();
                out.push((
                    self.path.clone(),
                    Target {
                        unix: Some(path),
                        raw: url.clone(),
                        line: *line,
                    },
                ));
                continue;
            }
            let host = rest.split(['/', ':']).next().unwrap_or(rest);
            let mut found = false;
            for f in all {
                if let Some(servers) = f.upstreams.get(host) {
                    found = true;
                    out.extend(servers.iter().map(|t| (f.path.clone(), t.clone())));
                }
            }
            if !found {
                out.push((
                    self.path.clone(),
                    Target {
                        unix: None,
                        raw: rest.to_string(),
                        line: *line,
                    },
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_user_upstreams_and_proxy_pass() {
        let text = "user www-data;\nhttp {\n  upstream app_app {\n    server unix:/run/app/socket fail_timeout=0;\n  }\n  server {\n    location / {\n      proxy_pass http://app_app;\n    }\n    location /x { proxy_pass http://unix:/run/x.sock:/y; }\n  }\n}\n";
        let f = NginxFile::parse(Path::new("n.conf"), text).unwrap();
        assert_eq!(f.user.as_ref().unwrap().0, "www-data");
        let t = f.targets(std::slice::from_ref(&f));
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].1.unix.as_deref(), Some("/run/app/socket"));
        assert_eq!(t[0].1.line, 4);
        assert_eq!(t[1].1.unix.as_deref(), Some("/run/x.sock"));
        assert_eq!(t[1].1.line, 10);
    }

    #[test]
    fn unbalanced_braces_are_errors() {
        assert!(NginxFile::parse(Path::new("n"), "http {\n").is_err());
        assert!(NginxFile::parse(Path::new("n"), "}\n").is_err());
        assert!(NginxFile::parse(Path::new("n"), "http { listen 80 }\n").is_err());
    }
}

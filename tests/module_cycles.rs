//! No module under `src/` imports one that imports it back, directly or through others.
//!
//! Reads every `src/**/*.rs`, takes the `crate::NAME` paths in its code (comments and string
//! literals skipped; `use crate::{a, b::c}` groups included), and maps each file to its
//! top-level module (`src/config/table.rs` is `config`). A cycle between top-level modules
//! fails the test with the imports that make it. `cargo test --test module_cycles --
//! --nocapture` prints the whole import map.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a Rust file with comments, string and char literals blanked out.
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == b'/' && next == Some(b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && next == Some(b'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == b'r' && (next == Some(b'"') || next == Some(b'#')) && !ident_byte(b, i) {
            // A raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push(c as char);
                i += 1;
                continue;
            }
            j += 1;
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            while j < b.len() && !b[j..].starts_with(&close) {
                j += 1;
            }
            i = j + close.len();
            out.push_str("\"\"");
        } else if c == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == b'\'' && is_char_literal(b, i) {
            i += 1;
            while i < b.len() && b[i] != b'\'' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c as char);
            i += 1;
        }
    }
    out
}

fn ident_byte(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

/// `'x'` or `'\n'`, as opposed to a lifetime (`'a`).
fn is_char_literal(b: &[u8], i: usize) -> bool {
    match b.get(i + 1) {
        Some(b'\\') => true,
        Some(_) => {
            // A char is one UTF-8 character then a quote.
            let mut j = i + 2;
            while j < b.len() && (b[j] & 0xC0) == 0x80 {
                j += 1;
            }
            b.get(j) == Some(&b'\'')
        }
        None => false,
    }
}

/// The top-level modules a file's code names through `crate::`.
fn imports(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = code.as_bytes();
    let mut from = 0;
    while let Some(pos) = code[from..].find("crate::") {
        let at = from + pos;
        from = at + "crate::".len();
        if at > 0 && (b[at - 1].is_ascii_alphanumeric() || b[at - 1] == b'_') {
            continue;
        }
        let rest = code[from..].trim_start();
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::c, d::{e, f}}`: the first segment of each top-level item.
            let mut depth = 0;
            let mut item_start = true;
            for (k, ch) in group.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_alphabetic() || c == '_') => {
                        let name: String = group[k..]
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        out.insert(name);
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

/// `src/config/table.rs` → `config`; `lib.rs` and `main.rs` (the crate root) → None.
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()?
        .as_os_str()
        .to_string_lossy()
        .to_string();
    match first.strip_suffix(".rs") {
        Some("lib" | "main") => None,
        Some(m) => Some(m.to_string()),
        None => Some(first),
    }
}

/// Module → (imported module → the files that import it).
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

/// The import graph of the sources under `src` (`FERRICORN_CYCLES_SRC` names another tree,
/// e.g. an older checkout's, to see what the checker says about it).
fn graph() -> Graph {
    let src = std::env::var_os("FERRICORN_CYCLES_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| top_module(&src, f)).collect();
    let mut g = Graph::new();
    for f in files {
        let Some(module) = top_module(&src, &f) else {
            continue;
        };
        let code = code_only(&std::fs::read_to_string(&f).unwrap());
        let entry = g.entry(module.clone()).or_default();
        // Items of the crate root (`crate::VERSION`) are not modules.
        for m in imports(&code).into_iter().filter(|m| modules.contains(m)) {
            if m != module {
                let rel = f.strip_prefix(&src).unwrap().display().to_string();
                entry.entry(m).or_default().insert(rel);
            }
        }
    }
    g
}

/// The strongly connected components with more than one module (each one holds a cycle).
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    let nodes: Vec<&String> = g.keys().collect();
    let reach = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(n) = todo.pop() {
            for m in g.get(&n).into_iter().flat_map(|e| e.keys()) {
                if seen.insert(m.clone()) {
                    todo.push(m.clone());
                }
            }
        }
        seen
    };
    let reach: BTreeMap<&String, BTreeSet<String>> = nodes.iter().map(|n| (*n, reach(n))).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for n in &nodes {
        if done.contains(*n) || !reach[n].contains(*n) {
            continue;
        }
        let scc: Vec<String> = nodes
            .iter()
            .filter(|m| reach[n].contains(**m) && reach[*m].contains(*n))
            .map(|m| m.to_string())
            .collect();
        done.extend(scc.iter().cloned());
        out.push(scc);
    }
    out
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let g = graph();
    println!("module -> modules it imports (files)");
    for (m, deps) in &g {
        let list: Vec<String> = deps
            .iter()
            .map(|(d, files)| {
                format!(
                    "{d} ({})",
                    files.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            })
            .collect();
        println!(
            "{m} -> {}",
            if list.is_empty() {
                "-".into()
            } else {
                list.join("; ")
            }
        );
    }
    let found = cycles(&g);
    let mut report = String::new();
    for scc in &found {
        report.push_str(&format!("cycle among {}:\n", scc.join(", ")));
        for a in scc {
            for (b, files) in &g[a] {
                if scc.contains(b) {
                    report.push_str(&format!(
                        "  {a} imports {b} in {}\n",
                        files.iter().cloned().collect::<Vec<_>>().join(", ")
                    ));
                }
            }
        }
    }
    assert!(found.is_empty(), "module cycles under src/:\n{report}");
}

#[test]
fn the_checker_sees_imports_and_cycles() {
    let code = code_only(
        "use crate::config::{self, Layer};\n\
         use crate::{exit::EXIT_USAGE, usage::{one_line, describe}};\n\
         // crate::commented\n\
         let s = \"crate::in_a_string\"; let r = r#\"crate::raw\"#; let c = '\"';\n\
         fn f<'a>(x: &'a str) { crate::units::main(x) }\n\
         mycrate::not_this();\n",
    );
    let found = imports(&code);
    let want: BTreeSet<String> = ["config", "exit", "usage", "units"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(found, want);
    let mut g = Graph::new();
    let edge = |g: &mut Graph, a: &str, b: &str| {
        g.entry(a.into())
            .or_default()
            .entry(b.into())
            .or_default()
            .insert("x.rs".into());
    };
    edge(&mut g, "cli", "units");
    edge(&mut g, "units", "config");
    assert!(cycles(&g).is_empty());
    edge(&mut g, "config", "cli");
    assert_eq!(cycles(&g), vec![vec!["cli", "config", "units"]]);
}

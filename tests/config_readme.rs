//! The README's options table and Gunicorn settings table are the settings table's
//! (`ferricorn::config::docs`): this test fails when they differ, and rewrites them with
//! `FERRICORN_UPDATE_README=1 cargo test --test config_readme`.

use std::path::Path;

/// The text between `<!-- BEGIN name...-->` and `<!-- END name -->`, and its byte range.
fn section(readme: &str, name: &str) -> (usize, usize) {
    let begin = format!("<!-- BEGIN {name}:");
    let end = format!("<!-- END {name} -->");
    let b = readme
        .find(&begin)
        .unwrap_or_else(|| panic!("README.md has no `{begin}` marker"));
    let from = b + readme[b..].find("-->\n").expect("the BEGIN marker closes") + 4;
    let to = readme[from..]
        .find(&end)
        .map(|i| from + i)
        .unwrap_or_else(|| panic!("README.md has no `{end}` marker"));
    (from, to)
}

#[test]
fn readme_tables_are_the_settings_table() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let mut readme = std::fs::read_to_string(&path).unwrap();
    let update = std::env::var_os("FERRICORN_UPDATE_README").is_some_and(|v| !v.is_empty());
    let mut stale = Vec::new();
    for (name, want) in [
        ("options", ferricorn::config::docs::options_table()),
        ("gunicorn", ferricorn::config::docs::gunicorn_table()),
    ] {
        let (from, to) = section(&readme, name);
        if readme[from..to] != want {
            stale.push(name);
            readme.replace_range(from..to, &want);
        }
    }
    if update {
        std::fs::write(&path, &readme).unwrap();
    } else {
        assert!(
            stale.is_empty(),
            "README.md's {stale:?} table(s) differ from src/config/table.rs; run \
             FERRICORN_UPDATE_README=1 cargo test --test config_readme"
        );
    }
}

//! Build script: link against the Python that pyo3 found (PYO3_PYTHON, else `python3` on PATH)
//! and make sure the binary loads *that* libpython at run time.
//!
//! Without the rpath, a binary built against pyenv's Python silently loads Debian's
//! /usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0 at run time (same soname, other build).

fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
    let cfg = pyo3_build_config::get();
    let version = format!("{}.{}", cfg.version().major, cfg.version().minor);
    println!("cargo:rustc-env=FERRICORN_PYTHON_VERSION={version}");
    println!(
        "cargo:rustc-env=FERRICORN_PYTHON_EXECUTABLE={}",
        cfg.executable().unwrap_or_default()
    );
    println!(
        "cargo:rustc-env=FERRICORN_PYTHON_LIBDIR={}",
        cfg.lib_dir().unwrap_or_default()
    );
    // Integration tests that switch user or group need root; built as another user they are
    // marked ignored (with the reason) instead of passing without testing anything.
    println!("cargo::rustc-check-cfg=cfg(ferricorn_tests_as_root)");
    if effective_uid() == Some(0) {
        println!("cargo:rustc-cfg=ferricorn_tests_as_root");
    }
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    println!("cargo:rerun-if-changed=build.rs");
}

/// The effective uid of the build, from /proc/self/status (`Uid: real effective saved fs`).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

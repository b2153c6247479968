//! Build script. For the standalone binary, pyo3 links the libpython of the Python it found
//! (PYO3_PYTHON, else `python3` on PATH) and this script records an rpath to it, so that the
//! binary loads *that* libpython at run time: without the rpath, a binary built against pyenv's
//! Python silently loads Debian's /usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0 (same soname,
//! other build). For the wheel, maturin sets PYO3_BUILD_EXTENSION_MODULE: nothing links a
//! libpython (the interpreter that imports the module provides it) and no rpath is written.

fn main() {
    pyo3_build_config::use_pyo3_cfgs();
    // A no-op when building the extension module (nothing links libpython then).
    pyo3_build_config::add_libpython_rpath_link_args();
    // `Py_3_N` cfgs (stream `http`: a private CPython symbol is used only where exported).
    pyo3_build_config::print_expected_cfgs();
    pyo3_build_config::use_pyo3_cfgs();
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
    println!("cargo:rerun-if-env-changed=PYO3_BUILD_EXTENSION_MODULE");
    println!("cargo:rerun-if-changed=build.rs");
}

/// The effective uid of the build, from /proc/self/status (`Uid: real effective saved fs`).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

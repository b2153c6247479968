//! Build script: link against the Python that pyo3 found (PYO3_PYTHON, else `python3` on PATH)
//! and make sure the binary loads *that* libpython at run time.
//!
//! Without the rpath, a binary built against pyenv's Python silently loads Debian's
//! /usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0 at run time (same soname, other build).

fn main() {
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
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    println!("cargo:rerun-if-changed=build.rs");
}

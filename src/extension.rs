//! The wheel's way in: the extension module `ferricorn._ferricorn`, which the user's
//! interpreter imports (`venv/bin/ferricorn`, `python -m ferricorn`; see `python/ferricorn/`).
//!
//! `main(argv)` runs exactly what the standalone binary runs (`cli::run`), with the GIL
//! released for as long as it runs: the master's loop never holds it, and workers fork from
//! this interpreter through CPython's fork protocol (`python::fork`). Nothing here links a
//! libpython, so a statically linked interpreter (Debian's `python3.11`) works too.

use pyo3::prelude::*;

/// Runs ferricorn with `argv` (`sys.argv`: the program name first); returns the exit status.
#[pyfunction]
fn main(py: Python<'_>, argv: Vec<String>) -> i32 {
    crate::python::enter_extension(argv.first().map_or("", String::as_str));
    py.detach(move || crate::cli::run(argv))
}

#[pymodule]
fn _ferricorn(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(main, m)?)?;
    m.add("__version__", crate::VERSION)?;
    Ok(())
}

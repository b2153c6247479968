//! `wsgi.errors`: text an app writes there goes to the error log.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyString;

/// `wsgi.errors`: text written here goes to the error log.
#[pyclass(module = "ferricorn", name = "ErrorStream")]
pub struct ErrorStream;

#[pymethods]
impl ErrorStream {
    fn write(&self, s: &Bound<'_, PyAny>) -> PyResult<usize> {
        let text = s
            .cast::<PyString>()
            .map_err(|_| PyTypeError::new_err("wsgi.errors.write() argument must be str"))?
            .to_str()?;
        crate::logging::error_sink().write(text.as_bytes());
        Ok(text.chars().count())
    }

    fn writelines(&self, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        for l in lines.try_iter()? {
            self.write(&l?)?;
        }
        Ok(())
    }

    fn flush(&self) {}
}

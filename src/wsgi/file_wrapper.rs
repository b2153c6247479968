//! `wsgi.file_wrapper` (PEP 3333's optional platform-specific file handling): a real, regular
//! file behind it is read by the server without Python in the loop.

use std::io::Seek;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// `wsgi.file_wrapper`: wraps a file-like object; the server sends a real file's bytes itself,
/// without Python in the loop.
#[pyclass(module = "ferricorn", name = "FileWrapper")]
pub struct FileWrapper {
    pub filelike: Py<PyAny>,
    pub blksize: usize,
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, blksize = 8192))]
    fn new(filelike: Py<PyAny>, blksize: i64) -> PyResult<Self> {
        if blksize <= 0 {
            return Err(PyValueError::new_err("blksize must be positive"));
        }
        Ok(FileWrapper {
            filelike,
            blksize: blksize as usize,
        })
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let data = self
            .filelike
            .bind(py)
            .call_method1("read", (self.blksize,))?;
        Ok(if data.is_truthy()? { Some(data) } else { None })
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let f = self.filelike.bind(py);
        if f.hasattr("close")? {
            f.call_method0("close")?;
        }
        Ok(())
    }
}

/// A regular file behind a `FileWrapper`, ready to be read without Python.
pub struct RealFile {
    pub file: std::fs::File,
    pub offset: u64,
    pub len: u64,
}

impl FileWrapper {
    /// If the wrapped object is a real, regular file: a duplicate of its descriptor, the current
    /// position, and how many bytes remain (capped by `limit`).
    pub fn real_file(&self, py: Python<'_>, limit: Option<u64>) -> Option<RealFile> {
        let f = self.filelike.bind(py);
        let fd: i32 = f.call_method0("fileno").ok()?.extract().ok()?;
        if fd < 0 {
            // Not a descriptor (a file-like object's way of saying "none"): read() it is.
            return None;
        }
        // Flush Python-side buffering so the descriptor's view is current.
        let pos: Option<u64> = f.call_method0("tell").ok().and_then(|p| p.extract().ok());
        // Duplicated with fcntl on the plain number, never borrowed: a descriptor the app closed
        // (or never had) is an error from the kernel, never a use of a dead fd.
        // SAFETY: fcntl(F_DUPFD_CLOEXEC) only reads the number; it fails with EBADF for one that
        // is not open.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return None;
        }
        // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
        let owned = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(dup) };
        // A write-only descriptor cannot be read: the head would go out, then nothing.
        // SAFETY: F_GETFL on the descriptor just duplicated.
        let mode = unsafe { libc::fcntl(dup, libc::F_GETFL) } & libc::O_ACCMODE;
        if mode == libc::O_WRONLY {
            return None;
        }
        let mut file = std::fs::File::from(owned);
        let meta = file.metadata().ok()?;
        if !meta.is_file() {
            return None;
        }
        let offset = match pos {
            Some(p) => p,
            None => file.stream_position().ok()?,
        };
        let mut len = meta.len().saturating_sub(offset);
        if let Some(l) = limit {
            len = len.min(l);
        }
        Some(RealFile { file, offset, len })
    }
}

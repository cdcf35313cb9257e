//! The library's one error type: a kind (which maps 1:1 to the C `cfs_status`) and a message that names
//! the input, the entry or line, and what was expected.

use std::fmt;
use std::io;

/// What went wrong, coarsely. Each kind has a fixed `cfs_status` number in the C ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An argument is out of range or inconsistent (a caller bug, not bad input data).
    InvalidArgument,
    /// A required pointer argument was NULL (only the C boundary produces this).
    NullArgument,
    /// A system call failed (the message names the path and the operation).
    Io,
    /// Input data is malformed: a config file, a dump, an image, a tar stream, a TOC.
    Format,
    /// The input or the request is valid but not supported (a format feature, a kernel feature).
    Unsupported,
    /// The caller cancelled the operation (progress callback or context).
    Cancelled,
    /// A bug in this library, including a caught panic.
    Internal,
    /// A file, key or object that was asked for does not exist.
    NotFound,
    /// The destination already exists and is never overwritten silently.
    AlreadyExists,
    /// A digest or checksum did not match what was expected.
    Verification,
    /// A limit that protects memory or time was exceeded (entry count, name or xattr size, ...).
    LimitExceeded,
    /// The operation needs privileges the process does not have.
    PermissionDenied,
}

impl ErrorKind {
    /// A short lowercase name, used as a prefix in CLI output and in Go sentinel errors.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::NullArgument => "NULL argument",
            ErrorKind::Io => "I/O error",
            ErrorKind::Format => "format error",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Internal => "internal error",
            ErrorKind::NotFound => "not found",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::Verification => "verification failed",
            ErrorKind::LimitExceeded => "limit exceeded",
            ErrorKind::PermissionDenied => "permission denied",
        }
    }

    /// The kind that best describes an OS error.
    pub fn from_io(err: &io::Error) -> ErrorKind {
        match err.raw_os_error() {
            Some(libc::ENOENT) => ErrorKind::NotFound,
            Some(libc::EEXIST) | Some(libc::ENOTEMPTY) => ErrorKind::AlreadyExists,
            Some(libc::EPERM) | Some(libc::EACCES) => ErrorKind::PermissionDenied,
            Some(libc::ENOTSUP) | Some(libc::ENOTTY) | Some(libc::ENOSYS) | Some(libc::ENODEV) => {
                ErrorKind::Unsupported
            }
            _ => match err.kind() {
                io::ErrorKind::NotFound => ErrorKind::NotFound,
                io::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
                io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
                io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => ErrorKind::Format,
                _ => ErrorKind::Io,
            },
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The library's error: a kind and a complete, human-readable message.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<io::Error>,
}

/// `Result` with this library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` with `message` (which should say what, where, and what was expected).
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error { kind, message: message.into(), source: None }
    }

    /// A malformed-input error.
    pub fn format(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Format, message)
    }

    /// An invalid-argument error.
    pub fn invalid_argument(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::InvalidArgument, message)
    }

    /// An unsupported-feature error.
    pub fn unsupported(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Unsupported, message)
    }

    /// A limit-exceeded error.
    pub fn limit(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::LimitExceeded, message)
    }

    /// An OS error, with `context` saying which operation on which path failed
    /// (e.g. `"open /etc/containers/storage.conf"`).
    pub fn io(context: impl fmt::Display, err: io::Error) -> Error {
        let kind = ErrorKind::from_io(&err);
        Error { kind, message: format!("{context}: {err}"), source: Some(err) }
    }

    /// The kind, which decides the C status code.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message without the kind prefix.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The OS error number, when this came from a system call.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.source.as_ref().and_then(|e| e.raw_os_error())
    }

    /// Prefix the message with more context (`"<context>: <message>"`), keeping the kind.
    pub fn context(mut self, context: impl fmt::Display) -> Error {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Adds context to any `Result` whose error converts into [`Error`].
pub trait ResultExt<T> {
    /// On error, prefix the message with `context()`.
    fn with_context<C: fmt::Display, F: FnOnce() -> C>(self, context: F) -> Result<T>;
}

impl<T> ResultExt<T> for std::result::Result<T, Error> {
    fn with_context<C: fmt::Display, F: FnOnce() -> C>(self, context: F) -> Result<T> {
        self.map_err(|e| e.context(context()))
    }
}

impl<T> ResultExt<T> for std::result::Result<T, io::Error> {
    fn with_context<C: fmt::Display, F: FnOnce() -> C>(self, context: F) -> Result<T> {
        self.map_err(|e| Error::io(context(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_map_to_kinds() {
        let e = Error::io("open /x", io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(e.to_string().starts_with("open /x: "), "{e}");
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        let e = Error::io("x", io::Error::from_raw_os_error(libc::EEXIST));
        assert_eq!(e.kind(), ErrorKind::AlreadyExists);
        let e = Error::io("x", io::Error::from_raw_os_error(libc::EIO));
        assert_eq!(e.kind(), ErrorKind::Io);
    }

    #[test]
    fn context_prefixes_and_keeps_kind() {
        let r: Result<()> = Err(Error::format("line 3: bad mode"));
        let e = r.with_context(|| "dump.txt").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Format);
        assert_eq!(e.to_string(), "dump.txt: line 3: bad mode");
    }
}

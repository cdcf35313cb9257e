//! `cfs_status` (fixed numbers, never reused) and the `cfs_error` object handed to callers.

use std::ffi::{c_char, CString};

use crate::{Error, ErrorKind, Result};

/// The result of every fallible call. The numbers are part of the ABI: never renumber or reuse
/// one; a retired code stays here as a comment.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum cfs_status {
    /// Success.
    CFS_OK = 0,
    /// An argument is out of range or inconsistent.
    CFS_STATUS_INVALID_ARGUMENT = 1,
    /// A required pointer argument was NULL.
    CFS_STATUS_NULL_ARGUMENT = 2,
    /// A system call failed.
    CFS_STATUS_IO = 3,
    /// Input data is malformed (config, dump, image, tar, TOC).
    CFS_STATUS_FORMAT = 4,
    /// Valid but not supported (format feature, kernel feature).
    CFS_STATUS_UNSUPPORTED = 5,
    /// Cancelled by the caller.
    CFS_STATUS_CANCELLED = 6,
    /// A bug in the library, including a caught panic.
    CFS_STATUS_INTERNAL = 7,
    /// A file, key or object does not exist.
    CFS_STATUS_NOT_FOUND = 8,
    /// The destination already exists.
    CFS_STATUS_ALREADY_EXISTS = 9,
    /// A digest or checksum did not match.
    CFS_STATUS_VERIFICATION = 10,
    /// A limit protecting memory or time was exceeded.
    CFS_STATUS_LIMIT_EXCEEDED = 11,
    /// Not permitted (privileges).
    CFS_STATUS_PERMISSION_DENIED = 12,
}

impl From<ErrorKind> for cfs_status {
    fn from(kind: ErrorKind) -> cfs_status {
        match kind {
            ErrorKind::InvalidArgument => cfs_status::CFS_STATUS_INVALID_ARGUMENT,
            ErrorKind::NullArgument => cfs_status::CFS_STATUS_NULL_ARGUMENT,
            ErrorKind::Io => cfs_status::CFS_STATUS_IO,
            ErrorKind::Format => cfs_status::CFS_STATUS_FORMAT,
            ErrorKind::Unsupported => cfs_status::CFS_STATUS_UNSUPPORTED,
            ErrorKind::Cancelled => cfs_status::CFS_STATUS_CANCELLED,
            ErrorKind::Internal => cfs_status::CFS_STATUS_INTERNAL,
            ErrorKind::NotFound => cfs_status::CFS_STATUS_NOT_FOUND,
            ErrorKind::AlreadyExists => cfs_status::CFS_STATUS_ALREADY_EXISTS,
            ErrorKind::Verification => cfs_status::CFS_STATUS_VERIFICATION,
            ErrorKind::LimitExceeded => cfs_status::CFS_STATUS_LIMIT_EXCEEDED,
            ErrorKind::PermissionDenied => cfs_status::CFS_STATUS_PERMISSION_DENIED,
        }
    }
}

/// An error returned through a `cfs_error **err` argument. Owned by the caller: free it with
/// `cfs_error_free`.
pub struct cfs_error {
    status: cfs_status,
    message: CString,
    os_error: i32,
}

impl cfs_error {
    fn from_error(e: &Error) -> cfs_error {
        cfs_error {
            status: e.kind().into(),
            message: c_string_lossy(e.to_string()),
            os_error: e.raw_os_error().unwrap_or(0),
        }
    }

    fn panic(payload: &(dyn std::any::Any + Send)) -> cfs_error {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        cfs_error {
            status: cfs_status::CFS_STATUS_INTERNAL,
            message: c_string_lossy(format!("internal error (panic in composefs-storage): {what}")),
            os_error: 0,
        }
    }
}

/// A CString from arbitrary text: interior NULs (which only hostile input can put there) become `\0`.
pub(crate) fn c_string_lossy(s: String) -> CString {
    CString::new(s).unwrap_or_else(|e| {
        let escaped = String::from_utf8_lossy(&e.into_vec()).replace('\0', "\\0");
        CString::new(escaped).unwrap_or_default()
    })
}

/// Sets `*err = NULL` when `err` is not NULL, so the caller sees no stale error on success.
///
/// # Safety
/// `err` is NULL or valid for writes.
pub(crate) unsafe fn clear_err(err: *mut *mut cfs_error) {
    if !err.is_null() {
        // SAFETY: non-NULL and valid by contract.
        unsafe { err.write(std::ptr::null_mut()) };
    }
}

/// Maps an export's outcome to its status, storing an error object in `*err` when asked for.
///
/// # Safety
/// `err` is NULL or valid for writes.
pub(crate) unsafe fn finish(result: std::thread::Result<Result<()>>, err: *mut *mut cfs_error) -> cfs_status {
    let e = match result {
        Ok(Ok(())) => return cfs_status::CFS_OK,
        Ok(Err(e)) => cfs_error::from_error(&e),
        Err(payload) => cfs_error::panic(payload.as_ref()),
    };
    let status = e.status;
    if !err.is_null() {
        // SAFETY: non-NULL and valid by contract; ownership of the box passes to the caller.
        unsafe { err.write(super::handles::register(Box::new(e))) };
    }
    status
}

/// The status code of an error; `CFS_STATUS_NULL_ARGUMENT` for NULL, `CFS_STATUS_INVALID_ARGUMENT`
/// for an error object already freed (detected on a best-effort basis).
#[no_mangle]
pub extern "C" fn cfs_error_status(err: *const cfs_error) -> cfs_status {
    ffi_infallible!(cfs_status::CFS_STATUS_INTERNAL, {
        if err.is_null() {
            return cfs_status::CFS_STATUS_NULL_ARGUMENT;
        }
        // SAFETY: the registry says it is a live error object.
        match unsafe { super::handles::try_handle(err, "err") } {
            Ok(e) => e.status,
            Err(_) => cfs_status::CFS_STATUS_INVALID_ARGUMENT, // freed or not an error object
        }
    })
}

/// The error's message, valid until `cfs_error_free(err)`. Never NULL: "" for a NULL error.
#[no_mangle]
pub extern "C" fn cfs_error_message(err: *const cfs_error) -> *const c_char {
    ffi_infallible!(c"".as_ptr(), {
        // SAFETY: the registry says it is a live error object.
        match unsafe { super::handles::try_handle(err, "err") } {
            Ok(e) => e.message.as_ptr(),
            Err(_) => c"".as_ptr(), // NULL, freed, or not an error object
        }
    })
}

/// The `errno` behind an I/O error, or 0.
#[no_mangle]
pub extern "C" fn cfs_error_os_error(err: *const cfs_error) -> i32 {
    ffi_infallible!(0, {
        // SAFETY: the registry says it is a live error object.
        unsafe { super::handles::try_handle(err, "err") }.map_or(0, |e| e.os_error)
    })
}

/// Frees an error object. Free of NULL is a no-op, and so is a second free of the same error
/// (detected on a best-effort basis: do not rely on it).
#[no_mangle]
pub extern "C" fn cfs_error_free(err: *mut cfs_error) {
    ffi_infallible!((), {
        if !err.is_null() {
            // SAFETY: a pointer this library returned from Box::into_raw, freed once by contract.
            unsafe { super::handles::release(err) };
        }
    })
}

/// A static, human-readable name for a status code (e.g. "CFS_STATUS_IO"). Never NULL.
#[no_mangle]
pub extern "C" fn cfs_status_name(status: std::ffi::c_int) -> *const c_char {
    // Taken as an int, not as `cfs_status`: C may pass any integer, and an out-of-range value in a
    // Rust enum is undefined behaviour (it crashed on 9999 in tests/c/test_core.c).
    let raw = status;
    let name: &'static std::ffi::CStr = match raw {
        0 => c"CFS_OK",
        1 => c"CFS_STATUS_INVALID_ARGUMENT",
        2 => c"CFS_STATUS_NULL_ARGUMENT",
        3 => c"CFS_STATUS_IO",
        4 => c"CFS_STATUS_FORMAT",
        5 => c"CFS_STATUS_UNSUPPORTED",
        6 => c"CFS_STATUS_CANCELLED",
        7 => c"CFS_STATUS_INTERNAL",
        8 => c"CFS_STATUS_NOT_FOUND",
        9 => c"CFS_STATUS_ALREADY_EXISTS",
        10 => c"CFS_STATUS_VERIFICATION",
        11 => c"CFS_STATUS_LIMIT_EXCEEDED",
        12 => c"CFS_STATUS_PERMISSION_DENIED",
        _ => c"CFS_STATUS_UNKNOWN",
    };
    name.as_ptr()
}

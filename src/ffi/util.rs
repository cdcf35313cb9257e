//! Pointer conversions shared by every export: one place for the NULL checks and casts.

use std::ffi::{c_char, CStr, OsStr};
use std::fs::File;
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::{Error, ErrorKind, Result};

/// A `&T` from a C pointer, or a NULL-argument error naming `what`.
///
/// # Safety
/// `ptr` must be NULL or point to a live `T` for the duration of `'a`.
#[allow(dead_code)] // handles go through handles::try_handle; kept for plain borrowed structs
pub(crate) unsafe fn try_ref<'a, T>(ptr: *const T, what: &str) -> Result<&'a T> {
    // SAFETY: by the caller's contract.
    unsafe { ptr.as_ref() }.ok_or_else(|| null_argument(what))
}

/// A `&mut T` from a C pointer, or a NULL-argument error naming `what`.
///
/// # Safety
/// `ptr` must be NULL or point to a live `T`, not aliased, for the duration of `'a`.
#[allow(dead_code)] // for handles with mutating calls (convert, mount)
pub(crate) unsafe fn try_mut<'a, T>(ptr: *mut T, what: &str) -> Result<&'a mut T> {
    // SAFETY: by the caller's contract.
    unsafe { ptr.as_mut() }.ok_or_else(|| null_argument(what))
}

/// Bytes of a NUL-terminated C string, or a NULL-argument error.
///
/// # Safety
/// `ptr` must be NULL or a valid NUL-terminated string alive for `'a`.
pub(crate) unsafe fn try_cstr<'a>(ptr: *const c_char, what: &str) -> Result<&'a [u8]> {
    if ptr.is_null() {
        return Err(null_argument(what));
    }
    // SAFETY: non-NULL and NUL-terminated by the caller's contract.
    Ok(unsafe { CStr::from_ptr(ptr) }.to_bytes())
}

/// A UTF-8 `&str` from a C string (for keys and option names), or an error naming `what`.
///
/// # Safety
/// As [`try_cstr`].
pub(crate) unsafe fn try_str<'a>(ptr: *const c_char, what: &str) -> Result<&'a str> {
    // SAFETY: forwarded contract.
    let bytes = unsafe { try_cstr(ptr, what) }?;
    std::str::from_utf8(bytes).map_err(|_| Error::invalid_argument(format!("{what} is not valid UTF-8")))
}

/// A path from a C string. Paths are bytes on Linux: any non-NUL bytes are accepted.
///
/// # Safety
/// As [`try_cstr`].
pub(crate) unsafe fn try_path<'a>(ptr: *const c_char, what: &str) -> Result<&'a Path> {
    // SAFETY: forwarded contract.
    let bytes = unsafe { try_cstr(ptr, what) }?;
    if bytes.is_empty() {
        return Err(Error::invalid_argument(format!("{what} is an empty path")));
    }
    Ok(Path::new(OsStr::from_bytes(bytes)))
}

/// Writes `value` to the output pointer `out`, or fails with a NULL-argument error.
/// Call only once the operation has succeeded: outputs are written only on success.
///
/// # Safety
/// `out` must be NULL or valid for a write of `T`.
pub(crate) unsafe fn write_out<T>(out: *mut T, value: T, what: &str) -> Result<()> {
    if out.is_null() {
        return Err(null_argument(what));
    }
    // SAFETY: non-NULL and valid by the caller's contract.
    unsafe { out.write(value) };
    Ok(())
}

/// Checks an output pointer up front, so that nothing is done when it is NULL.
pub(crate) fn check_out<T>(out: *mut T, what: &str) -> Result<()> {
    if out.is_null() {
        Err(null_argument(what))
    } else {
        Ok(())
    }
}

pub(crate) fn null_argument(what: &str) -> Error {
    Error::new(ErrorKind::NullArgument, format!("{what} is NULL"))
}

/// Hands a Rust string to C as a heap `char *` the caller frees with `cfs_string_free`.
pub(crate) fn into_c_string(s: String) -> *mut c_char {
    super::error::c_string_lossy(s).into_raw()
}

/// Frees a string this library returned (e.g. from `cfs_config_to_json`). Free of NULL is a no-op.
#[no_mangle]
pub extern "C" fn cfs_string_free(s: *mut c_char) {
    ffi_infallible!((), {
        if !s.is_null() {
            // SAFETY: a pointer from CString::into_raw in into_c_string, freed once by contract.
            drop(unsafe { std::ffi::CString::from_raw(s) });
        }
    })
}

/// A borrowed fd as a `File` that is never closed.
///
/// # Safety
/// `fd` must stay open for as long as the returned value is used.
pub(crate) unsafe fn borrow_fd(fd: i32, what: &str) -> Result<ManuallyDrop<File>> {
    if fd < 0 {
        return Err(Error::invalid_argument(format!("{what}: {fd} is not a file descriptor")));
    }
    // SAFETY: the caller keeps `fd` open; ManuallyDrop keeps us from closing it.
    Ok(ManuallyDrop::new(unsafe { File::from_raw_fd(fd) }))
}

//! The one panic boundary every export goes through.

/// Runs `$body` (an expression of type `Result<(), crate::Error>`) behind `catch_unwind`, stores any
/// error (or caught panic) in the caller's `cfs_error **err` and returns the matching `cfs_status`.
///
/// `$err` is the export's `*mut *mut cfs_error` argument; it may be NULL.
macro_rules! ffi_call {
    ($err:expr, $body:block) => {{
        let err_out: *mut *mut $crate::ffi::error::cfs_error = $err;
        // SAFETY: the caller passes NULL or a valid pointer to a `cfs_error *` slot.
        unsafe { $crate::ffi::error::clear_err(err_out) };
        let result: ::std::thread::Result<$crate::Result<()>> =
            ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(|| $body));
        // SAFETY: as above.
        unsafe { $crate::ffi::error::finish(result, err_out) }
    }};
}

/// Runs an infallible export body behind `catch_unwind`, returning `$default` if it panics.
macro_rules! ffi_infallible {
    ($default:expr, $body:block) => {{
        match ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(|| $body)) {
            Ok(v) => v,
            Err(_) => $default,
        }
    }};
}

//! Library and ABI versions. The ABI version changes only on an incompatible C ABI change (and
//! with it the SONAME `libcomposefs_storage.so.N`); the crate version follows releases.

use std::ffi::c_char;

/// The C ABI version. Bump together with the SONAME in build.rs and `CFS_ABI_VERSION` in the header.
pub const CFS_ABI_VERSION: u32 = 0;

static VERSION_C: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");

/// The library version (e.g. "0.1.0"), a static string.
#[no_mangle]
pub extern "C" fn cfs_version() -> *const c_char {
    VERSION_C.as_ptr().cast()
}

/// The C ABI version this library implements; compare with `CFS_ABI_VERSION` from the header.
#[no_mangle]
pub extern "C" fn cfs_abi_version() -> u32 {
    CFS_ABI_VERSION
}

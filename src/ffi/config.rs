//! C API for containers-storage.conf (SPEC §1): load, read values by key, JSON, check.

// Exports take raw pointers from C by design; their validity is the documented C contract.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

use std::ffi::c_char;

use super::error::{cfs_error, cfs_status};
use super::util::{check_out, into_c_string, try_path, try_str, write_out};
use crate::config::{self, LoadOptions, StorageConfig};

/// The effective containers-storage.conf settings. Opaque; free with `cfs_config_free`.
pub struct cfs_config {
    inner: StorageConfig,
}

fn into_handle(cfg: StorageConfig) -> *mut cfs_config {
    super::handles::register(Box::new(cfs_config { inner: cfg }))
}

/// Loads containers-storage.conf like containers/storage: `$CONTAINERS_STORAGE_CONF` alone, else the
/// first of `$XDG_CONFIG_HOME/containers/storage.conf` (or `$HOME/.config/...`),
/// `<root>/etc/containers/storage.conf`, `<root>/usr/share/containers/storage.conf`; then the
/// `storage.conf.d`, `storage.rootful.conf.d` / `storage.rootless.conf.d[/UID]` drop-ins; then
/// `$CONTAINERS_STORAGE_CONF_OVERRIDE`; then `$STORAGE_DRIVER` and `$STORAGE_OPTS`.
///
/// `root` prefixes the system paths (NULL = "/"); the process environment and UID are used.
/// On success `*out` receives a new handle (free it with `cfs_config_free`). Errors name the
/// file, the line and the key: e.g. CFS_STATUS_FORMAT for a native TOML bool or a syntax error,
/// CFS_STATUS_NOT_FOUND when `$CONTAINERS_STORAGE_CONF` names a missing file.
#[no_mangle]
pub extern "C" fn cfs_config_load(
    root: *const c_char,
    out: *mut *mut cfs_config,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        check_out(out, "out")?;
        let mut opts = LoadOptions::from_process();
        if !root.is_null() {
            // SAFETY: non-NULL, and a NUL-terminated string by the caller's contract.
            opts.root = unsafe { try_path(root, "root") }?.to_path_buf();
        }
        let cfg = config::load(&opts)?;
        // SAFETY: `out` was checked non-NULL and is valid for writes by contract.
        unsafe { write_out(out, into_handle(cfg), "out") }
    })
}

/// Loads exactly one file (no drop-ins, no environment). On success `*out` receives a new handle.
/// CFS_STATUS_NOT_FOUND when the file does not exist.
#[no_mangle]
pub extern "C" fn cfs_config_load_file(
    path: *const c_char,
    out: *mut *mut cfs_config,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        check_out(out, "out")?;
        // SAFETY: NULL or a NUL-terminated string by the caller's contract.
        let path = unsafe { try_path(path, "path") }?;
        let cfg = config::load_file(path)?;
        // SAFETY: `out` was checked non-NULL and is valid for writes by contract.
        unsafe { write_out(out, into_handle(cfg), "out") }
    })
}

/// Frees a configuration. Free of NULL is a no-op.
#[no_mangle]
pub extern "C" fn cfs_config_free(cfg: *mut cfs_config) {
    ffi_infallible!((), {
        if !cfg.is_null() {
            // SAFETY: a pointer from into_handle (Box::into_raw), freed once by contract.
            unsafe { super::handles::release(cfg) };
        }
    })
}

/// A value by key as a string: "driver", "graphroot", "runroot", "imagestore", "mountopt",
/// "force_mask", "ostree_repos" (colon-joined), or one of the boolean keys ("true"/"false").
/// An unset value is "". `*out` receives a string to free with `cfs_string_free`.
/// CFS_STATUS_INVALID_ARGUMENT for an unknown key.
#[no_mangle]
pub extern "C" fn cfs_config_get_string(
    cfg: *const cfs_config,
    key: *const c_char,
    out: *mut *mut c_char,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        // SAFETY: NULL or a live handle from this library.
        let cfg = unsafe { super::handles::try_handle(cfg, "cfg") }?;
        // SAFETY: NULL or a NUL-terminated string by the caller's contract.
        let key = unsafe { try_str(key, "key") }?;
        check_out(out, "out")?;
        let value = cfg.inner.get_string(key)?;
        // SAFETY: `out` was checked non-NULL and is valid for writes by contract.
        unsafe { write_out(out, into_c_string(value), "out") }
    })
}

/// A boolean value by key: "use_composefs", "enable_partial_images", "convert_images",
/// "use_hard_links", "insecure_allow_unpredictable_image_contents".
/// CFS_STATUS_INVALID_ARGUMENT for an unknown key or a string key.
#[no_mangle]
pub extern "C" fn cfs_config_get_bool(
    cfg: *const cfs_config,
    key: *const c_char,
    out: *mut bool,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        // SAFETY: NULL or a live handle from this library.
        let cfg = unsafe { super::handles::try_handle(cfg, "cfg") }?;
        // SAFETY: NULL or a NUL-terminated string by the caller's contract.
        let key = unsafe { try_str(key, "key") }?;
        check_out(out, "out")?;
        let value = cfg.inner.get_bool(key)?;
        // SAFETY: `out` was checked non-NULL and is valid for writes by contract.
        unsafe { write_out(out, value, "out") }
    })
}

/// The effective settings as a JSON object (every key above, `ostree_repos` as an array, plus
/// "pull_options", "uid", "files" in read order and "sources"). Free `*out` with `cfs_string_free`.
#[no_mangle]
pub extern "C" fn cfs_config_to_json(
    cfg: *const cfs_config,
    out: *mut *mut c_char,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        // SAFETY: NULL or a live handle from this library.
        let cfg = unsafe { super::handles::try_handle(cfg, "cfg") }?;
        check_out(out, "out")?;
        // SAFETY: `out` was checked non-NULL and is valid for writes by contract.
        unsafe { write_out(out, into_c_string(cfg.inner.to_json()), "out") }
    })
}

/// Why composefs would not take effect: a JSON array of findings, each
/// `{"severity": "error"|"warning"|"info", "code": "...", "message": "..."}`; "error" means
/// composefs will not take effect (or containers/storage will not start). Free `*out_json` with
/// `cfs_string_free`.
#[no_mangle]
pub extern "C" fn cfs_config_check(
    cfg: *const cfs_config,
    out_json: *mut *mut c_char,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        // SAFETY: NULL or a live handle from this library.
        let cfg = unsafe { super::handles::try_handle(cfg, "cfg") }?;
        check_out(out_json, "out_json")?;
        let json = config::findings_to_json(&cfg.inner.check());
        // SAFETY: `out_json` was checked non-NULL and is valid for writes by contract.
        unsafe { write_out(out_json, into_c_string(json), "out_json") }
    })
}

//! C API for mounting stacks: `cfs_mount_options_*`, `cfs_mount_stack`, `cfs_mount_unmount`,
//! `cfs_mount_cleanup`; and single blobs for callers that compose the overlay themselves:
//! `cfs_mount_blob_open`, `cfs_mount_blob`.

use std::ffi::c_char;
use std::path::PathBuf;

use super::error::{cfs_error, cfs_status};
use super::util::{check_out, into_c_string, try_path, try_str, write_out};
use crate::mount::{self, ErofsBacking, Layer, MountOptions, VerityPolicy};
use crate::{Error, Result};

/// Options for `cfs_mount_stack`. Create with `cfs_mount_options_new`, free with
/// `cfs_mount_options_free`.
pub struct cfs_mount_options {
    inner: MountOptions,
    upper: Option<PathBuf>,
    work: Option<PathBuf>,
}

/// Creates mount options with the defaults: read-only, verity policy "if-available", EROFS from
/// the file where the kernel can.
#[no_mangle]
pub extern "C" fn cfs_mount_options_new(out: *mut *mut cfs_mount_options, err: *mut *mut cfs_error) -> cfs_status {
    ffi_call!(err, {
        check_out(out, "out")?;
        let opts = Box::new(cfs_mount_options { inner: MountOptions::default(), upper: None, work: None });
        // SAFETY: `out` was checked non-NULL; the caller passes a writable slot.
        unsafe { write_out(out, super::handles::register(opts), "out") }
    })
}

/// Frees mount options. Free of NULL is a no-op.
#[no_mangle]
pub extern "C" fn cfs_mount_options_free(opts: *mut cfs_mount_options) {
    ffi_infallible!((), {
        if !opts.is_null() {
            // SAFETY: a pointer from cfs_mount_options_new; the registry ignores a freed one.
            unsafe { super::handles::release(opts) };
        }
    })
}

/// Sets one option by name (new options never change the ABI):
/// - `"upper"`, `"work"`: upper and work dirs; setting both makes the mount read-write.
/// - `"verity"`: `"off"`, `"if-available"` (default) or `"require"` (every composefs layer then
///   needs an expected blob digest, and the overlay gets `verity=require`).
/// - `"erofs_backing"`: `"auto"` (default) or `"loop"`.
/// - `"stub_cache_dir"`: where derived images (stub-less copies, flattened runs) are kept.
/// - `"flatten"`: `"true"` (default) merges adjacent composefs layers into one cached image;
///   `"false"` mounts one EROFS per layer.
/// - `"reuse_erofs"`: `"true"` (default) keeps the EROFS mounts of derived images in this process
///   for later mounts of the same image (file-backed EROFS only; released by
///   `cfs_mount_cleanup`); `"false"` mounts a new EROFS every time.
/// - `"cache_max_images"`, `"cache_max_bytes"`: bounds of the derived-image cache dir (decimal;
///   defaults 64 and 536870912), enforced least recently used first after each new image and by
///   `cfs_mount_cleanup`.
///
/// An unknown key or a bad value gives `CFS_STATUS_INVALID_ARGUMENT` and changes nothing.
#[no_mangle]
pub extern "C" fn cfs_mount_options_set(
    opts: *mut cfs_mount_options,
    key: *const c_char,
    value: *const c_char,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        // SAFETY: NULL or a live options handle from cfs_mount_options_new, not shared.
        let opts = unsafe { super::handles::try_handle_mut(opts, "opts") }?;
        // SAFETY: NULL or a NUL-terminated string by contract.
        let key = unsafe { try_str(key, "key") }?;
        // SAFETY: NULL or a NUL-terminated string by contract, alive for this call.
        let value_path = || unsafe { try_path(value, "value") }.map(|p| p.to_path_buf());
        // SAFETY: as above.
        let value_str = || unsafe { try_str(value, "value") };
        match key {
            "upper" => opts.upper = Some(value_path()?),
            "work" => opts.work = Some(value_path()?),
            "verity" => opts.inner.verity = VerityPolicy::parse(value_str()?)?,
            "erofs_backing" => {
                opts.inner.erofs_backing = match value_str()? {
                    "auto" => ErofsBacking::Auto,
                    "loop" => ErofsBacking::LoopDevice,
                    v => {
                        return Err(Error::invalid_argument(format!(
                            "erofs_backing {v:?}: expected \"auto\" or \"loop\""
                        )))
                    }
                }
            }
            "stub_cache_dir" => opts.inner.stub_cache_dir = Some(value_path()?),
            "flatten" => {
                opts.inner.flatten = match value_str()? {
                    "true" => true,
                    "false" => false,
                    v => return Err(Error::invalid_argument(format!("flatten {v:?}: expected \"true\" or \"false\""))),
                }
            }
            "reuse_erofs" => {
                opts.inner.reuse_erofs = match value_str()? {
                    "true" => true,
                    "false" => false,
                    v => {
                        return Err(Error::invalid_argument(format!(
                            "reuse_erofs {v:?}: expected \"true\" or \"false\""
                        )))
                    }
                }
            }
            "cache_max_images" => {
                let v = value_str()?;
                opts.inner.cache_limits.max_images = v
                    .parse()
                    .map_err(|_| Error::invalid_argument(format!("cache_max_images {v:?}: expected a decimal count")))?
            }
            "cache_max_bytes" => {
                let v = value_str()?;
                opts.inner.cache_limits.max_bytes = v.parse().map_err(|_| {
                    Error::invalid_argument(format!("cache_max_bytes {v:?}: expected a decimal byte count"))
                })?
            }
            _ => return Err(Error::invalid_argument(format!("unknown mount option {key:?}"))),
        }
        Ok(())
    })
}

/// Mounts layer dirs (`n_layers` paths, top first) as one overlay on `mountpoint`.
///
/// A layer dir with `composefs-data/` is a composefs layer (blob `composefs-data/composefs.blob`,
/// objects in `diff/`), any other a classic layer (tree in `diff/`). `blob_digests` is NULL or an
/// array of `n_layers` entries, each NULL or the expected fs-verity digest (64 hex digits) of that
/// layer's blob: a mismatch refuses the mount with `CFS_STATUS_VERIFICATION`. `opts` may be NULL
/// (defaults). On failure nothing stays mounted and no loop device stays attached.
#[no_mangle]
pub extern "C" fn cfs_mount_stack(
    opts: *const cfs_mount_options,
    layer_dirs: *const *const c_char,
    blob_digests: *const *const c_char,
    n_layers: usize,
    mountpoint: *const c_char,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        let opts = match opts.is_null() {
            true => None,
            // SAFETY: non-NULL: checked against the registry of live handles.
            false => Some(unsafe { super::handles::try_handle(opts, "opts") }?),
        };
        // SAFETY: NUL-terminated string by contract.
        let target = unsafe { try_path(mountpoint, "mountpoint") }?;
        if layer_dirs.is_null() {
            return Err(super::util::null_argument("layer_dirs"));
        }
        let mut layers = Vec::with_capacity(n_layers);
        for i in 0..n_layers {
            // SAFETY: `layer_dirs` has `n_layers` entries by contract.
            let dir = unsafe { try_path(*layer_dirs.add(i), "layer_dirs[i]") }?;
            let mut layer = Layer::from_layer_dir(dir)?;
            if !blob_digests.is_null() {
                // SAFETY: `blob_digests` has `n_layers` entries by contract.
                let d = unsafe { *blob_digests.add(i) };
                if !d.is_null() {
                    // SAFETY: non-NULL, NUL-terminated by contract.
                    let hex = unsafe { try_str(d, "blob_digests[i]") }?;
                    layer = layer.with_expected_digest(mount::parse_digest(hex)?);
                }
            }
            layers.push(layer);
        }
        let options = match opts {
            None => MountOptions::default(),
            Some(o) => build_options(o)?,
        };
        mount::mount(&layers, target, &options)
    })
}

fn build_options(o: &cfs_mount_options) -> Result<MountOptions> {
    let mut options = o.inner.clone();
    options.upper_work = match (&o.upper, &o.work) {
        (Some(u), Some(w)) => Some((u.clone(), w.clone())),
        (None, None) => None,
        _ => return Err(Error::invalid_argument("mount options: \"upper\" and \"work\" must be set together")),
    };
    Ok(options)
}

/// The expected digest argument of the blob calls: NULL, or 64 hex digits.
///
/// # Safety
/// `hex` is NULL or a C string.
unsafe fn expected_digest(hex: *const c_char) -> Result<Option<[u8; 32]>> {
    if hex.is_null() {
        return Ok(None);
    }
    // SAFETY: non-NULL, NUL-terminated by contract.
    let s = unsafe { try_str(hex, "expected_digest") }?;
    mount::parse_digest(s).map(Some)
}

/// Mounts one composefs blob as a detached read-only EROFS (from the file where the kernel can,
/// else through a loop device freed with the mount) and writes the mount's fd (close-on-exec,
/// owned by the caller) to `*fd_out`: attach it with `move_mount`, pass it to overlayfs, or read
/// through `/proc/self/fd/N/…`; closing it unmounts. `expected_digest` is NULL or the blob's
/// fs-verity digest (64 hex digits), checked on the open file before mounting
/// (`CFS_STATUS_VERIFICATION` on a mismatch). A file without the composefs header magic is
/// `CFS_STATUS_FORMAT`.
#[no_mangle]
pub extern "C" fn cfs_mount_blob_open(
    blob_path: *const c_char,
    expected_digest: *const c_char,
    fd_out: *mut i32,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        check_out(fd_out, "fd_out")?;
        // SAFETY: NULL or a C string, by contract.
        let blob = unsafe { try_path(blob_path, "blob_path") }?;
        // SAFETY: NULL or a C string, by contract.
        let expected = unsafe { self::expected_digest(expected_digest) }?;
        let fd = mount::open_blob_mount(blob, expected.as_ref(), ErofsBacking::Auto)?;
        // SAFETY: checked non-NULL above; the caller passes a writable int.
        unsafe { write_out(fd_out, std::os::fd::IntoRawFd::into_raw_fd(fd), "fd_out") }
    })
}

/// `cfs_mount_blob_open`, attached at `mountpoint` (an existing directory). Unmount it with
/// `umount2(mountpoint, MNT_DETACH)`; on failure nothing stays mounted.
#[no_mangle]
pub extern "C" fn cfs_mount_blob(
    blob_path: *const c_char,
    expected_digest: *const c_char,
    mountpoint: *const c_char,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        // SAFETY: NULL or a C string, by contract.
        let blob = unsafe { try_path(blob_path, "blob_path") }?;
        // SAFETY: NULL or a C string, by contract.
        let target = unsafe { try_path(mountpoint, "mountpoint") }?;
        // SAFETY: NULL or a C string, by contract.
        let expected = unsafe { self::expected_digest(expected_digest) }?;
        mount::mount_blob(blob, expected.as_ref(), ErofsBacking::Auto, target)
    })
}

/// Unmounts a stack mounted with `cfs_mount_stack`. Refuses (`CFS_STATUS_INVALID_ARGUMENT`) a
/// path that is not an overlay mountpoint.
#[no_mangle]
pub extern "C" fn cfs_mount_unmount(mountpoint: *const c_char, err: *mut *mut cfs_error) -> cfs_status {
    ffi_call!(err, {
        // SAFETY: NUL-terminated string by contract.
        let target = unsafe { try_path(mountpoint, "mountpoint") }?;
        mount::unmount(target)
    })
}

/// What `cfs_mount_cleanup` removed.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct cfs_mount_cleanup_report {
    /// EROFS mounts this process kept for reuse, released.
    pub kept_mounts_released: u64,
    /// Cached derived images evicted (beyond the limits, not in use).
    pub images_evicted: u64,
    /// Unfinished derived images and private temp dirs whose process is gone, removed.
    pub temporaries_removed: u64,
    /// Mounts a killed mount sequence left in those temp dirs, detached.
    pub stale_mounts_detached: u64,
}

/// Cleans up after mounting: releases the EROFS mounts this process keeps for reuse, removes what
/// killed mount sequences left behind (unfinished derived images, private temp dirs and mounts
/// attached in them), and evicts cached derived images beyond the limits of `opts`
/// (`"cache_max_images"`, `"cache_max_bytes"`; 0 and 0 remove every image not in use) from its
/// `"stub_cache_dir"`. `opts` is required (from `cfs_mount_options_new`; its defaults clean the
/// default cache dir); `out` may be NULL. Mounted stacks are not affected, and an image another
/// process is about to mount is never removed.
#[no_mangle]
pub extern "C" fn cfs_mount_cleanup(
    opts: *const cfs_mount_options,
    out: *mut cfs_mount_cleanup_report,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        // SAFETY: NULL or a live options handle from cfs_mount_options_new.
        let opts = unsafe { super::handles::try_handle(opts, "opts") }?;
        let r = mount::cleanup(opts.inner.stub_cache_dir.as_deref(), opts.inner.cache_limits)?;
        if !out.is_null() {
            let report = cfs_mount_cleanup_report {
                kept_mounts_released: r.kept_mounts_released as u64,
                images_evicted: r.images_evicted as u64,
                temporaries_removed: r.temporaries_removed as u64,
                stale_mounts_detached: r.stale_mounts_detached as u64,
            };
            // SAFETY: non-NULL, a writable report by contract.
            unsafe { write_out(out, report, "out") }?;
        }
        Ok(())
    })
}

/// The fs-verity digest (64 lowercase hex digits) of a blob, for the caller to keep as the
/// expected digest. Measured by the kernel when the file has fs-verity, else computed. Free the
/// string with `cfs_string_free`.
#[no_mangle]
pub extern "C" fn cfs_mount_blob_digest(
    blob_path: *const c_char,
    out_hex: *mut *mut c_char,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        check_out(out_hex, "out_hex")?;
        // SAFETY: NUL-terminated string by contract.
        let path = unsafe { try_path(blob_path, "blob_path") }?;
        let f = std::fs::File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        let digest = mount::blob_digest(&f, path)?;
        // SAFETY: checked non-NULL above; writable slot by contract.
        unsafe { write_out(out_hex, into_c_string(mount::hex(&digest)), "out_hex") }
    })
}

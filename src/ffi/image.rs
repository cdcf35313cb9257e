//! C API of the composefs image: dump -> EROFS image, image -> dump, fs-verity digests.
//!
//! File descriptors passed in are borrowed: they are read or written from their current
//! position and never closed.
// C exports take raw pointers by design; every dereference is in an `unsafe` block with its
// SAFETY reason.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

use std::ffi::c_char;
use std::fs::File;
use std::io::{BufReader, Read, Write};

use super::error::{cfs_error, cfs_status};
use super::util::{check_out, try_path};
use crate::image::{self, dump, WriteOptions};
use crate::{Error, Result};

/// Options for writing an image. Create with `cfs_image_options_new` (mkcomposefs defaults:
/// versions 0..1, root whiteout stubs, non-strict dump parsing), free with
/// `cfs_image_options_free`.
pub struct cfs_image_options {
    write: WriteOptions,
    strict: bool,
}

/// A new options handle with mkcomposefs defaults. Never NULL.
#[no_mangle]
pub extern "C" fn cfs_image_options_new() -> *mut cfs_image_options {
    ffi_infallible!(std::ptr::null_mut(), {
        super::handles::register(Box::new(cfs_image_options { write: WriteOptions::default(), strict: false }))
    })
}

/// Frees an options handle. Free of NULL is a no-op.
#[no_mangle]
pub extern "C" fn cfs_image_options_free(options: *mut cfs_image_options) {
    ffi_infallible!((), {
        if !options.is_null() {
            // SAFETY: a pointer from cfs_image_options_new, freed once by contract.
            unsafe { super::handles::release(options) };
        }
    })
}

/// Sets the lowest composefs format version (mkcomposefs `--min-version`, 0 or 1).
#[no_mangle]
pub extern "C" fn cfs_image_options_set_min_version(
    options: *mut cfs_image_options,
    version: u32,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        // SAFETY: NULL or a live handle from cfs_image_options_new.
        let o = unsafe { super::handles::try_handle_mut(options, "options") }?;
        let mut w = o.write.clone();
        w.min_version = version;
        w.check()?;
        o.write = w;
        Ok(())
    })
}

/// Sets the highest composefs format version (mkcomposefs `--max-version`, 0 or 1).
#[no_mangle]
pub extern "C" fn cfs_image_options_set_max_version(
    options: *mut cfs_image_options,
    version: u32,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        // SAFETY: NULL or a live handle from cfs_image_options_new.
        let o = unsafe { super::handles::try_handle_mut(options, "options") }?;
        let mut w = o.write.clone();
        w.max_version = version;
        w.check()?;
        o.write = w;
        Ok(())
    })
}

/// Whether to add the 256 root whiteout stubs `00`..`ff` as mkcomposefs does (default true).
#[no_mangle]
pub extern "C" fn cfs_image_options_set_root_whiteout_stubs(
    options: *mut cfs_image_options,
    enabled: bool,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        // SAFETY: NULL or a live handle from cfs_image_options_new.
        unsafe { super::handles::try_handle_mut(options, "options") }?.write.root_whiteout_stubs = enabled;
        Ok(())
    })
}

/// Whether to parse dumps strictly, as mkcomposefs with `CFS_PARSE_STRICT=1` (default false).
#[no_mangle]
pub extern "C" fn cfs_image_options_set_strict(
    options: *mut cfs_image_options,
    strict: bool,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        // SAFETY: NULL or a live handle from cfs_image_options_new.
        unsafe { super::handles::try_handle_mut(options, "options") }?.strict = strict;
        Ok(())
    })
}

/// `path` is set, or `fd` is a descriptor; otherwise the missing path is the NULL argument.
fn either_path_or_fd(path: *const c_char, fd: i32, what: &str) -> Result<()> {
    if path.is_null() && fd < 0 {
        return Err(crate::ffi::util::null_argument(&format!("{what} (and no file descriptor was given)")));
    }
    Ok(())
}

/// Writes the composefs EROFS image of a composefs dump, byte-identical to mkcomposefs 1.0.8.
///
/// The dump is read from `dump_path` when it is not NULL, else from `dump_fd`. The image is
/// written to `image_path` when it is not NULL (replaced atomically; nothing is left behind on
/// error), else to `image_fd`. `options` may be NULL for mkcomposefs defaults. When `digest_out`
/// is not NULL it receives the image's 32-byte fs-verity digest.
#[no_mangle]
pub extern "C" fn cfs_image_write_from_dump(
    dump_fd: i32,
    dump_path: *const c_char,
    image_fd: i32,
    image_path: *const c_char,
    options: *const cfs_image_options,
    digest_out: *mut u8,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        // Each side is a path, or (path NULL) an fd: a NULL path without an fd is a NULL argument.
        either_path_or_fd(dump_path, dump_fd, "dump_path")?;
        either_path_or_fd(image_path, image_fd, "image_path")?;
        let default = cfs_image_options { write: WriteOptions::default(), strict: false };
        let o = if options.is_null() {
            &default
        } else {
            // SAFETY: a live handle from cfs_image_options_new.
            unsafe { super::handles::try_handle(options, "options") }?
        };
        let tree = if dump_path.is_null() {
            // SAFETY: the caller keeps dump_fd open during the call.
            let f = unsafe { super::util::borrow_fd(dump_fd, "dump") }?;
            dump::parse(BufReader::with_capacity(256 << 10, &*f), o.strict)?
        } else {
            // SAFETY: a NUL-terminated string by contract.
            let p = unsafe { try_path(dump_path, "dump_path") }?;
            let f = File::open(p).map_err(|e| Error::io(format!("open {}", p.display()), e))?;
            dump::parse(BufReader::with_capacity(256 << 10, f), o.strict).map_err(|e| e.context(p.display()))?
        };
        let digest = if image_path.is_null() {
            // SAFETY: the caller keeps image_fd open during the call.
            let f = unsafe { super::util::borrow_fd(image_fd, "image") }?;
            let mut w = &*f;
            let d = image::write_image_with_digest(&tree, &o.write, &mut w)?;
            w.flush().map_err(|e| Error::io("write image", e))?;
            d
        } else {
            // SAFETY: a NUL-terminated string by contract.
            let p = unsafe { try_path(image_path, "image_path") }?;
            image::write_image_file(&tree, &o.write, p)?
        };
        if !digest_out.is_null() {
            // SAFETY: digest_out points to 32 writable bytes by contract.
            unsafe { std::ptr::copy_nonoverlapping(digest.as_ptr(), digest_out, 32) };
        }
        Ok(())
    })
}

/// Prints a composefs image as a composefs dump to `dump_fd`. The image is read from
/// `image_path` when it is not NULL, else from `image_fd`.
#[no_mangle]
pub extern "C" fn cfs_image_to_dump(
    image_fd: i32,
    image_path: *const c_char,
    dump_fd: i32,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        either_path_or_fd(image_path, image_fd, "image_path")?;
        let mut data = Vec::new();
        if image_path.is_null() {
            // SAFETY: the caller keeps image_fd open during the call.
            let f = unsafe { super::util::borrow_fd(image_fd, "image") }?;
            (&*f).read_to_end(&mut data).map_err(|e| Error::io("read image", e))?;
        } else {
            // SAFETY: a NUL-terminated string by contract.
            let p = unsafe { try_path(image_path, "image_path") }?;
            data = std::fs::read(p).map_err(|e| Error::io(format!("read {}", p.display()), e))?;
        }
        let tree = image::read_image(&data)?;
        // SAFETY: the caller keeps dump_fd open during the call.
        let out = unsafe { super::util::borrow_fd(dump_fd, "dump output") }?;
        dump::write(&tree, &mut &*out)
    })
}

/// The fs-verity digest (sha256, 4096-byte blocks, as `FS_IOC_MEASURE_VERITY` reports it) of
/// everything read from `fd` from its current position to the end, into `out` (32 bytes).
#[no_mangle]
pub extern "C" fn cfs_fsverity_digest_fd(fd: i32, out: *mut u8, err: *mut *mut cfs_error) -> cfs_status {
    ffi_call!(err, {
        check_out(out, "out")?;
        // SAFETY: the caller keeps fd open during the call.
        let f = unsafe { super::util::borrow_fd(fd, "fd") }?;
        let digest = image::digest_reader(&*f)?;
        // SAFETY: out is non-NULL (checked) and points to 32 writable bytes by contract.
        unsafe { std::ptr::copy_nonoverlapping(digest.as_ptr(), out, 32) };
        Ok(())
    })
}

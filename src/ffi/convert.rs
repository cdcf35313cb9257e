//! C API of layer conversion: an options handle with setters, a convert call (from an fd or a
//! path), and a result handle with getters.

use std::ffi::{c_char, c_int, c_void};
use std::os::fd::{BorrowedFd, RawFd};
use std::path::PathBuf;

use super::cfs_status;
use super::error::cfs_error;
use super::util::{check_out, into_c_string, try_path, try_str, write_out};
use crate::layer::{convert, ConvertOptions, ConvertResult, Progress, VerityPolicy};
use crate::source::hex;
use crate::Error;

/// Progress callback: `userdata` as given, uncompressed bytes and tar entries done so far.
/// Return 0 to continue, non-zero to cancel (the conversion then fails with
/// `CFS_STATUS_CANCELLED` and leaves nothing behind).
pub type cfs_progress_fn = Option<unsafe extern "C" fn(userdata: *mut c_void, bytes: u64, entries: u64) -> c_int>;

/// The C progress callback as the library's progress function (true = go on).
pub(crate) fn progress_adapter(cb: cfs_progress_fn, userdata: *mut c_void) -> impl FnMut(Progress) -> bool {
    move |p: Progress| match cb {
        // SAFETY: the caller registered this function with this userdata for the call's duration.
        Some(f) => unsafe { f(userdata, p.bytes, p.entries) == 0 },
        None => true,
    }
}

/// Options for `cfs_layer_convert_*` (opaque).
pub struct cfs_convert_options {
    options: ConvertOptions,
    progress: cfs_progress_fn,
    userdata: *mut c_void,
}

/// The result of a conversion (opaque).
pub struct cfs_convert_result {
    result: ConvertResult,
}

/// Creates conversion options with the defaults (no source layers, reflink/copy reuse,
/// fs-verity if available, OCI whiteouts converted, default limits). Free with
/// `cfs_convert_options_free`.
#[no_mangle]
pub extern "C" fn cfs_convert_options_new(out: *mut *mut cfs_convert_options, err: *mut *mut cfs_error) -> cfs_status {
    ffi_call!(err, {
        check_out(out, "out")?;
        let b = Box::new(cfs_convert_options {
            options: ConvertOptions::default(),
            progress: None,
            userdata: std::ptr::null_mut(),
        });
        // SAFETY: `out` was checked non-NULL; the caller owns the handle from here on.
        unsafe { write_out(out, super::handles::register(b), "out") }
    })
}

/// Frees options. Free of NULL is a no-op.
#[no_mangle]
pub extern "C" fn cfs_convert_options_free(options: *mut cfs_convert_options) {
    ffi_infallible!((), {
        if !options.is_null() {
            // SAFETY: a pointer from cfs_convert_options_new, freed once by contract.
            unsafe { super::handles::release(options) };
        }
    })
}

/// Adds a layer directory whose `diff/` objects may be reused (repeatable).
#[no_mangle]
pub extern "C" fn cfs_convert_options_add_source_layer(
    options: *mut cfs_convert_options,
    layer_dir: *const c_char,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        // SAFETY: NULL or a live handle / C string, by contract.
        let o = unsafe { super::handles::try_handle_mut(options, "options") }?;
        // SAFETY: as above.
        let p = unsafe { try_path(layer_dir, "layer_dir") }?;
        o.options.source_layers.push(PathBuf::from(p));
        Ok(())
    })
}

/// Keeps an index across the source layers' caches in `dir` (created and rebuilt as needed), so
/// that lookups cost the same with hundreds of source layers as with a few. NULL: none (default).
#[no_mangle]
pub extern "C" fn cfs_convert_options_set_index_dir(
    options: *mut cfs_convert_options,
    dir: *const c_char,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        // SAFETY: NULL or a live handle, by contract.
        let o = unsafe { super::handles::try_handle_mut(options, "options") }?;
        o.options.index_dir = if dir.is_null() {
            None
        } else {
            // SAFETY: a C string, by contract.
            Some(PathBuf::from(unsafe { try_path(dir, "dir") }?))
        };
        Ok(())
    })
}

/// Reuse source objects by hardlink (non-zero) or by reflink falling back to copy (0, default).
#[no_mangle]
pub extern "C" fn cfs_convert_options_set_hardlinks(
    options: *mut cfs_convert_options,
    hardlinks: bool,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        // SAFETY: NULL or a live handle, by contract.
        unsafe { super::handles::try_handle_mut(options, "options") }?.options.hardlinks = hardlinks;
        Ok(())
    })
}

/// fs-verity policy: "off", "if-available" (default) or "require".
#[no_mangle]
pub extern "C" fn cfs_convert_options_set_verity(
    options: *mut cfs_convert_options,
    policy: *const c_char,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        // SAFETY: NULL or a live handle / C string, by contract.
        let o = unsafe { super::handles::try_handle_mut(options, "options") }?;
        // SAFETY: as above.
        let p = VerityPolicy::parse(unsafe { try_str(policy, "policy") }?)?;
        o.options.verity = p;
        Ok(())
    })
}

/// Keep OCI whiteouts as plain empty files like containers/storage's flat path (non-zero), or
/// convert them into overlay whiteouts and opaque directories (0, default).
#[no_mangle]
pub extern "C" fn cfs_convert_options_set_keep_whiteout_files(
    options: *mut cfs_convert_options,
    keep: bool,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        // SAFETY: NULL or a live handle, by contract.
        unsafe { super::handles::try_handle_mut(options, "options") }?.options.oci_whiteouts = !keep;
        Ok(())
    })
}

/// The DiffID (`sha256:<hex>`) the layer must have: checked before the layer is published (a
/// mismatch is `CFS_STATUS_VERIFICATION` and leaves nothing). NULL clears it (default: not checked).
#[no_mangle]
pub extern "C" fn cfs_convert_options_set_expected_diff_id(
    options: *mut cfs_convert_options,
    diff_id: *const c_char,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        // SAFETY: NULL or a live handle, by contract.
        let o = unsafe { super::handles::try_handle_mut(options, "options") }?;
        o.options.expected_diff_id = optional_digest(diff_id, "diff_id")?;
        Ok(())
    })
}

/// The input is an eStargz blob whose TOC JSON has the sha256 `toc_digest` (`sha256:<hex>`, the
/// layer's `containerd.io/snapshot/stargz/toc.digest` annotation): the TOC in the stream must be
/// that one. Needed for an fd that is not a regular file (a pipe has no footer to find eStargz
/// by). NULL clears it (default: eStargz when a regular file's footer says so, the TOC checked
/// against the layer only).
#[no_mangle]
pub extern "C" fn cfs_convert_options_set_estargz_toc_digest(
    options: *mut cfs_convert_options,
    toc_digest: *const c_char,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        // SAFETY: NULL or a live handle, by contract.
        let o = unsafe { super::handles::try_handle_mut(options, "options") }?;
        o.options.estargz =
            optional_digest(toc_digest, "toc_digest")?.map(|d| crate::layer::EstargzCheck { toc_digest: Some(d) });
        Ok(())
    })
}

/// A `sha256:<hex>` C string, or NULL.
fn optional_digest(s: *const c_char, what: &str) -> crate::Result<Option<[u8; 32]>> {
    if s.is_null() {
        return Ok(None);
    }
    // SAFETY: non-NULL, a C string by contract.
    let text = unsafe { try_str(s, what) }?;
    crate::chunked::toc::sha256_bytes(text).map(Some).map_err(|e| Error::invalid_argument(format!("{what}: {e}")))
}

/// Keep the blob digest, TOC, tar-split and layers cache in the layer's `composefs-data/`
/// (`true`, default), or not (`false`: containers/storage keeps them in its layer store, and
/// takes them from the result: `cfs_convert_result_toc_json`, `cfs_convert_result_write_tar_split`).
#[no_mangle]
pub extern "C" fn cfs_convert_options_set_write_metadata(
    options: *mut cfs_convert_options,
    write_metadata: bool,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        // SAFETY: NULL or a live handle, by contract.
        unsafe { super::handles::try_handle_mut(options, "options") }?.options.write_metadata = write_metadata;
        Ok(())
    })
}

/// Most tar entries accepted in one layer (default 4 000 000); 0 is invalid.
#[no_mangle]
pub extern "C" fn cfs_convert_options_set_max_entries(
    options: *mut cfs_convert_options,
    max_entries: u64,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        // SAFETY: NULL or a live handle, by contract.
        let o = unsafe { super::handles::try_handle_mut(options, "options") }?;
        if max_entries == 0 {
            return Err(Error::invalid_argument("max_entries must be at least 1"));
        }
        o.options.limits.max_entries = max_entries;
        Ok(())
    })
}

/// Sets (or with NULL clears) the progress callback. It is called on the converting thread;
/// `userdata` is passed back untouched.
#[no_mangle]
pub extern "C" fn cfs_convert_options_set_progress(
    options: *mut cfs_convert_options,
    callback: cfs_progress_fn,
    userdata: *mut c_void,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        // SAFETY: NULL or a live handle, by contract.
        let o = unsafe { super::handles::try_handle_mut(options, "options") }?;
        o.progress = callback;
        o.userdata = userdata;
        Ok(())
    })
}

fn run(
    input: std::fs::File,
    layer_dir: *const c_char,
    options: *const cfs_convert_options,
    out: *mut *mut cfs_convert_result,
) -> crate::Result<()> {
    check_out(out, "out")?;
    // SAFETY: NULL or a C string, by contract.
    let dir = unsafe { try_path(layer_dir, "layer_dir") }?;
    let defaults =
        cfs_convert_options { options: ConvertOptions::default(), progress: None, userdata: std::ptr::null_mut() };
    let o = if options.is_null() {
        &defaults
    } else {
        // SAFETY: non-NULL, a live handle by contract.
        unsafe { super::handles::try_handle(options, "options") }?
    };
    let mut progress = progress_adapter(o.progress, o.userdata);
    // An eStargz blob is found by its footer when the input is a regular file.
    let estargz;
    let mut options = &o.options;
    if options.estargz.is_none() && crate::chunked::estargz::detect_file(&input)? {
        estargz = ConvertOptions { estargz: Some(Default::default()), ..o.options.clone() };
        options = &estargz;
    }
    let result = convert(Box::new(input), dir, options, Some(&mut progress))?;
    let b = Box::new(cfs_convert_result { result });
    // SAFETY: checked non-NULL above; ownership passes to the caller.
    unsafe { write_out(out, super::handles::register(b), "out") }
}

/// Converts the layer blob read from `fd` (tar, gzip or zstd; a pipe works; eStargz found by its
/// footer when `fd` is a regular file) into the new
/// directory `layer_dir`, which must not exist. `fd` is borrowed: it is duplicated, read to
/// its end, and not closed. `options` may be NULL for the defaults. On success `*out` receives
/// a result to free with `cfs_convert_result_free`.
#[no_mangle]
pub extern "C" fn cfs_layer_convert_fd(
    fd: c_int,
    layer_dir: *const c_char,
    options: *const cfs_convert_options,
    out: *mut *mut cfs_convert_result,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        // Pointer arguments first: a NULL is reported as such whatever the fd.
        check_out(out, "out")?;
        if layer_dir.is_null() {
            return Err(crate::ffi::util::null_argument("layer_dir"));
        }
        if fd < 0 {
            return Err(Error::invalid_argument(format!("fd {fd} is not a file descriptor")));
        }
        // SAFETY: the caller guarantees `fd` is open for the duration of this call.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd as RawFd) };
        let owned = borrowed.try_clone_to_owned().map_err(|e| Error::io(format_args!("dup fd {fd}"), e))?;
        run(std::fs::File::from(owned), layer_dir, options, out)
    })
}

/// Like `cfs_layer_convert_fd`, reading the blob from the file at `input`.
#[no_mangle]
pub extern "C" fn cfs_layer_convert_path(
    input: *const c_char,
    layer_dir: *const c_char,
    options: *const cfs_convert_options,
    out: *mut *mut cfs_convert_result,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        // SAFETY: NULL or a C string, by contract.
        let p = unsafe { try_path(input, "input") }?;
        let f = std::fs::File::open(p).map_err(|e| Error::io(format_args!("open {}", p.display()), e))?;
        run(f, layer_dir, options, out)
    })
}

/// Frees a result. Free of NULL is a no-op.
#[no_mangle]
pub extern "C" fn cfs_convert_result_free(result: *mut cfs_convert_result) {
    ffi_infallible!((), {
        if !result.is_null() {
            // SAFETY: a pointer from cfs_layer_convert_*, freed once by contract.
            unsafe { super::handles::release(result) };
        }
    })
}

fn digest_getter(
    result: *const cfs_convert_result,
    out: *mut *mut c_char,
    pick: impl Fn(&ConvertResult) -> [u8; 32],
) -> crate::Result<()> {
    check_out(out, "out")?;
    // SAFETY: NULL or a live handle, by contract.
    let r = unsafe { super::handles::try_handle(result, "result") }?;
    let s = format!("sha256:{}", hex(&pick(&r.result)));
    // SAFETY: checked non-NULL.
    unsafe { write_out(out, into_c_string(s), "out") }
}

/// The DiffID (`sha256:<hex>` of the uncompressed tar), as a string to free with `cfs_string_free`.
#[no_mangle]
pub extern "C" fn cfs_convert_result_diff_id(
    result: *const cfs_convert_result,
    out: *mut *mut c_char,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, { digest_getter(result, out, |r| r.diff_id) })
}

/// The compressed digest (`sha256:<hex>` of the blob as read), to free with `cfs_string_free`.
#[no_mangle]
pub extern "C" fn cfs_convert_result_compressed_digest(
    result: *const cfs_convert_result,
    out: *mut *mut c_char,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, { digest_getter(result, out, |r| r.compressed_digest) })
}

/// A numeric field of the result by name: "compressed_size", "uncompressed_size", "entries",
/// "objects", "objects_reused", "bytes_written", "bytes_reused", "dedup_hits". Unknown names
/// give `CFS_STATUS_INVALID_ARGUMENT` (so new fields never change the ABI).
#[no_mangle]
pub extern "C" fn cfs_convert_result_get_u64(
    result: *const cfs_convert_result,
    name: *const c_char,
    out: *mut u64,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        check_out(out, "out")?;
        // SAFETY: NULL or a live handle / C string, by contract.
        let r = &unsafe { super::handles::try_handle(result, "result") }?.result;
        // SAFETY: as above.
        let name = unsafe { try_str(name, "name") }?;
        let v = match name {
            "compressed_size" => r.compressed_size,
            "uncompressed_size" => r.uncompressed_size,
            "entries" => r.entries,
            "objects" => r.objects.objects,
            "objects_reused" => r.objects.objects_reused,
            "bytes_written" => r.objects.bytes_written,
            "bytes_reused" => r.objects.bytes_reused,
            "dedup_hits" => r.objects.dedup_hits,
            _ => return Err(Error::invalid_argument(format!("unknown result field {name:?}"))),
        };
        // SAFETY: checked non-NULL.
        unsafe { write_out(out, v, "out") }
    })
}

/// The whole result as JSON (digests, sizes, counts, UIDs/GIDs, fs-verity digests), a string
/// to free with `cfs_string_free`.
#[no_mangle]
pub extern "C" fn cfs_convert_result_to_json(
    result: *const cfs_convert_result,
    out: *mut *mut c_char,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        check_out(out, "out")?;
        // SAFETY: NULL or a live handle, by contract.
        let r = unsafe { super::handles::try_handle(result, "result") }?;
        let s = r.result.to_json().to_string();
        // SAFETY: checked non-NULL.
        unsafe { write_out(out, into_c_string(s), "out") }
    })
}

fn bytes_getter(
    result: *const cfs_convert_result,
    data: *mut *const u8,
    len: *mut usize,
    pick: impl Fn(&ConvertResult) -> crate::Result<&[u8]>,
) -> crate::Result<()> {
    check_out(data, "data")?;
    check_out(len, "len")?;
    // SAFETY: NULL or a live handle, by contract.
    let r = unsafe { super::handles::try_handle(result, "result") }?;
    let b = pick(&r.result)?;
    // SAFETY: both checked non-NULL.
    unsafe {
        write_out(data, b.as_ptr(), "data")?;
        write_out(len, b.len(), "len")
    }
}

/// The TOC JSON of the layer (containers/storage's `zstd-chunked-manifest` format). The bytes
/// are borrowed from the result and valid until it is freed.
#[no_mangle]
pub extern "C" fn cfs_convert_result_toc_json(
    result: *const cfs_convert_result,
    data: *mut *const u8,
    len: *mut usize,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, { bytes_getter(result, data, len, |r| Ok(&r.toc_json)) })
}

/// The tar-split of the layer, gzip-compressed NDJSON (containers/storage's `<id>.tar-split.gz`).
/// The bytes are borrowed from the result and valid until it is freed. (Made from the layer's
/// zstd record on the first call, which may fail like any fallible call.)
#[no_mangle]
pub extern "C" fn cfs_convert_result_tar_split(
    result: *const cfs_convert_result,
    data: *mut *const u8,
    len: *mut usize,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, { bytes_getter(result, data, len, |r| r.tar_split_gz()) })
}

/// Writes the layer's tar-split NDJSON, uncompressed, to `fd` (borrowed; written from its current
/// offset): what containers/storage keeps in an unnamed file until it stores the layer.
#[no_mangle]
pub extern "C" fn cfs_convert_result_write_tar_split(
    result: *const cfs_convert_result,
    fd: i32,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        // SAFETY: NULL or a live handle, by contract.
        let r = unsafe { super::handles::try_handle(result, "result") }?;
        // SAFETY: the caller keeps fd open for the call.
        let mut file = unsafe { super::util::borrow_fd(fd, "fd") }?;
        r.result.write_tar_split(&mut *file)?;
        Ok(())
    })
}

//! C API of the TOC-based pieces containers/storage calls today: the composefs dump of a TOC
//! (`dump.GenerateDump`), the composefs blob of a TOC (`generateComposeFsBlob` + mkcomposefs),
//! and reading the TOC of a zstd:chunked blob.

use std::collections::{BTreeMap, HashMap};
use std::ffi::c_char;
use std::io::Write;
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;

use super::cfs_status;
use super::error::cfs_error;
use super::util::{check_out, into_c_string, try_path, try_str, write_out};
use crate::chunked::dump::generate_dump;
use crate::chunked::{read_manifest, ReadOptions, Toc};
use crate::layer::toc_blob::{adopt_staged_blob, write_toc_blob, TocBlobOptions};
use crate::{Error, Result};

/// The TOC bytes and the optional verity map (JSON object: object path → hex digest).
///
/// # Safety
/// `toc` is NULL or valid for `toc_len` bytes; `verity_json` is NULL or a C string.
unsafe fn inputs(toc: *const u8, toc_len: usize, verity_json: *const c_char) -> Result<(Toc, HashMap<String, String>)> {
    // SAFETY: forwarded contract.
    let (bytes, verity) = unsafe { raw_inputs(toc, toc_len, verity_json) }?;
    Ok((Toc::parse(bytes)?, verity))
}

/// As [`inputs`], with the TOC not parsed yet.
///
/// # Safety
/// As [`inputs`]; the bytes live as long as the caller keeps `toc`.
unsafe fn raw_inputs<'a>(
    toc: *const u8,
    toc_len: usize,
    verity_json: *const c_char,
) -> Result<(&'a [u8], HashMap<String, String>)> {
    if toc.is_null() {
        return Err(super::util::null_argument("toc"));
    }
    // SAFETY: non-NULL and valid for toc_len bytes by contract.
    let bytes = unsafe { std::slice::from_raw_parts(toc, toc_len) };
    let verity = if verity_json.is_null() {
        HashMap::new()
    } else {
        // SAFETY: a C string by contract.
        let s = unsafe { try_str(verity_json, "verity_json") }?;
        serde_json::from_str(s)
            .map_err(|e| Error::invalid_argument(format!("verity_json: not a JSON object of strings: {e}")))?
    };
    Ok((bytes, verity))
}

/// Writes the composefs dump of a TOC (the decompressed TOC JSON, `toc_len` bytes) to `dump_fd`,
/// byte-identical to containers/storage's `dump.GenerateDump` with xattrs sorted. `verity_json`
/// (may be NULL) maps object paths (`ab/cdef…`) to fs-verity hex digests. `dump_fd` is borrowed.
#[no_mangle]
pub extern "C" fn cfs_toc_generate_dump(
    toc: *const u8,
    toc_len: usize,
    verity_json: *const c_char,
    dump_fd: i32,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        // SAFETY: forwarded contract.
        let (toc, verity) = unsafe { inputs(toc, toc_len, verity_json) }?;
        if dump_fd < 0 {
            return Err(Error::invalid_argument(format!("dump_fd {dump_fd} is not a file descriptor")));
        }
        // SAFETY: the caller keeps dump_fd open for the call; ManuallyDrop never closes it.
        let f = ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(dump_fd) });
        let mut w = std::io::BufWriter::new(&*f);
        generate_dump(&toc, &verity, &mut w)?;
        w.flush().map_err(|e| Error::io("write dump", e))
    })
}

/// Writes the composefs blob (EROFS image) of a TOC to `image_path`, which must not exist —
/// byte-identical to what containers/storage gets from `mkcomposefs --from-file -` on the dump
/// of the same TOC and verity map. `digest_out` (may be NULL) receives the image's 32-byte
/// fs-verity digest, computed while writing.
#[no_mangle]
pub extern "C" fn cfs_toc_write_image(
    toc: *const u8,
    toc_len: usize,
    verity_json: *const c_char,
    image_path: *const c_char,
    digest_out: *mut u8,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        // SAFETY: forwarded contract.
        unsafe {
            write_blob(toc, toc_len, verity_json, image_path, digest_out, TocBlobOptions::default(), std::ptr::null())
        }
    })
}

/// Writes the composefs blob a containers/storage layer needs, from its TOC, to `image_path`
/// (which must not exist): as `cfs_toc_write_image`, but with the layer's OCI whiteouts as real
/// overlay whiteouts and opaque directories (SPEC §10.1), and without the root whiteout stubs
/// when one of the `n_lowers` layer dirs in `lower_layers` (the layers below, top first; NULL when
/// `n_lowers` is 0) has a top-level entry with a two-hex-digit name (SPEC §10.2). A layer with
/// neither gets the same bytes as from `cfs_toc_write_image`. A lower layer dir with
/// `composefs-data/` is read through its blob, any other through its `diff/` tree.
/// `digest_out` (may be NULL) receives the blob's 32-byte fs-verity digest.
#[no_mangle]
pub extern "C" fn cfs_toc_write_layer_blob(
    toc: *const u8,
    toc_len: usize,
    verity_json: *const c_char,
    lower_layers: *const *const c_char,
    n_lowers: usize,
    image_path: *const c_char,
    digest_out: *mut u8,
    err: *mut *mut cfs_error,
) -> cfs_status {
    cfs_toc_write_layer_blob_staged(
        toc,
        toc_len,
        verity_json,
        lower_layers,
        n_lowers,
        std::ptr::null(),
        image_path,
        digest_out,
        err,
    )
}

/// As `cfs_toc_write_layer_blob`, for a layer whose pull (`cfs_layer_pull*`) wrote
/// `staged_blob` (its `composefs-data/composefs.blob`, moved where the caller keeps it until the
/// layer is committed): when that is the blob this call would write (no lower needs the root
/// stubs left out, and every object has in it the fs-verity digest `verity_json` gives), it is
/// renamed to `image_path` (same filesystem) and the TOC is not even parsed; otherwise it is
/// removed and the blob written from the TOC. `staged_blob` is gone after success either way; a
/// missing `staged_blob` is not an error. NULL `staged_blob`: `cfs_toc_write_layer_blob`.
#[no_mangle]
pub extern "C" fn cfs_toc_write_layer_blob_staged(
    toc: *const u8,
    toc_len: usize,
    verity_json: *const c_char,
    lower_layers: *const *const c_char,
    n_lowers: usize,
    staged_blob: *const c_char,
    image_path: *const c_char,
    digest_out: *mut u8,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        // SAFETY: forwarded contract.
        let options = TocBlobOptions::for_layer(unsafe { lower_layer_dirs(lower_layers, n_lowers) }?);
        // SAFETY: forwarded contract.
        unsafe { write_blob(toc, toc_len, verity_json, image_path, digest_out, options, staged_blob) }
    })
}

/// The `n` layer dirs of `lower_layers` (NULL when `n` is 0).
///
/// # Safety
/// `lower_layers` is NULL or holds `n` C strings.
unsafe fn lower_layer_dirs(lower_layers: *const *const c_char, n: usize) -> Result<Vec<std::path::PathBuf>> {
    if lower_layers.is_null() && n > 0 {
        return Err(super::util::null_argument("lower_layers"));
    }
    let mut lowers = Vec::with_capacity(n);
    for i in 0..n {
        // SAFETY: `lower_layers` has `n` entries by contract.
        lowers.push(unsafe { try_path(*lower_layers.add(i), "lower_layers[i]") }?.to_path_buf());
    }
    Ok(lowers)
}

/// The body of the blob writers: the TOC and verity map, the blob at `image_path` (the staged
/// blob taken where it is that blob, else written from the TOC), its digest to `digest_out` unless
/// that is NULL.
///
/// # Safety
/// As `cfs_toc_write_layer_blob_staged`: `toc` valid for `toc_len` bytes, the strings NULL or C
/// strings, `digest_out` NULL or valid for 32 bytes.
unsafe fn write_blob(
    toc: *const u8,
    toc_len: usize,
    verity_json: *const c_char,
    image_path: *const c_char,
    digest_out: *mut u8,
    options: TocBlobOptions,
    staged_blob: *const c_char,
) -> Result<()> {
    // SAFETY: forwarded contract.
    let (toc, verity) = unsafe { raw_inputs(toc, toc_len, verity_json) }?;
    // SAFETY: NULL or C strings, by contract.
    let path = unsafe { try_path(image_path, "image_path") }?;
    let staged = match staged_blob.is_null() {
        true => None,
        // SAFETY: a C string by contract.
        false => Some(unsafe { try_path(staged_blob, "staged_blob") }?),
    };
    let taken = match staged {
        Some(staged) => adopt_staged_blob(staged, &verity, &options, path)?,
        None => None,
    };
    let digest = match taken {
        Some(d) => d,
        None => write_toc_blob(&Toc::parse(toc)?, &verity, &options, path)?,
    };
    if !digest_out.is_null() {
        // SAFETY: non-NULL and valid for 32 bytes by contract.
        unsafe { std::ptr::copy_nonoverlapping(digest.as_ptr(), digest_out, 32) };
    }
    Ok(())
}

/// Reads, authenticates and decodes the TOC of the zstd:chunked blob at `blob_path`.
/// `annotations_json` is the layer's OCI annotations as a JSON object, or NULL to locate the TOC
/// through the blob's footer (then not authenticated). On success `*toc_json_out` receives the
/// decompressed TOC JSON and `*toc_digest_out` its digest (`sha256:<hex>`), both to free with
/// `cfs_string_free`.
#[no_mangle]
pub extern "C" fn cfs_toc_read(
    blob_path: *const c_char,
    annotations_json: *const c_char,
    toc_json_out: *mut *mut c_char,
    toc_digest_out: *mut *mut c_char,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        check_out(toc_json_out, "toc_json_out")?;
        check_out(toc_digest_out, "toc_digest_out")?;
        // SAFETY: NULL or a C string, by contract.
        let p = unsafe { try_path(blob_path, "blob_path") }?;
        let annotations: Option<BTreeMap<String, String>> =
            if annotations_json.is_null() {
                None
            } else {
                // SAFETY: a C string by contract.
                let s = unsafe { try_str(annotations_json, "annotations_json") }?;
                Some(serde_json::from_str(s).map_err(|e| {
                    Error::invalid_argument(format!("annotations_json: not a JSON object of strings: {e}"))
                })?)
            };
        let blob = std::fs::File::open(p).map_err(|e| Error::io(format_args!("open {}", p.display()), e))?;
        let m = read_manifest(&blob, annotations.as_ref(), &ReadOptions::default())?;
        let json = String::from_utf8(m.toc_json.to_vec()).map_err(|_| Error::format("the TOC is not UTF-8"))?;
        // SAFETY: both checked non-NULL.
        unsafe {
            write_out(toc_json_out, into_c_string(json), "toc_json_out")?;
            write_out(toc_digest_out, into_c_string(m.location.toc_digest), "toc_digest_out")
        }
    })
}

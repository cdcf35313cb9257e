//! C API of partial pulls of zstd:chunked layers: an options handle set by string keys, a
//! fetcher given as two callbacks (begin a ranged read, read its bytes), and a result handle.

use std::ffi::{c_char, c_void};
use std::io::Read;

use super::cfs_status;
use super::convert::cfs_progress_fn;
use super::error::cfs_error;
use super::util::{check_out, into_c_string, try_path, try_str, write_out};
use crate::chunked::ranges::ByteRange;
use crate::layer::pull::{pull, read_manifest_from, BlobFetcher, FileFetcher, PullManifest, PullOptions, PullResult};
use crate::layer::VerityPolicy;
use crate::{Error, ErrorKind, Result};

/// A byte range of a blob.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct cfs_byte_range {
    pub offset: u64,
    pub length: u64,
}

/// Starts fetching `n_ranges` ranges (sorted, disjoint) of the blob; their bytes are then read,
/// concatenated in order, with the read callback. Returns `CFS_OK`, `CFS_STATUS_LIMIT_EXCEEDED`
/// when the source refuses that many ranges at once (the puller asks again with fewer), or
/// another status to fail the pull.
pub type cfs_fetch_begin_fn =
    Option<unsafe extern "C" fn(userdata: *mut c_void, ranges: *const cfs_byte_range, n_ranges: usize) -> cfs_status>;

/// Reads up to `len` bytes of the current fetch into `buf`. Returns the number of bytes read,
/// 0 at the end of the fetched ranges, or -1 on error.
pub type cfs_fetch_read_fn = Option<unsafe extern "C" fn(userdata: *mut c_void, buf: *mut u8, len: usize) -> i64>;

/// Options for `cfs_layer_pull*` (opaque).
pub struct cfs_pull_options {
    options: PullOptions,
    progress: cfs_progress_fn,
    userdata: *mut c_void,
}

/// The result of a pull (opaque).
pub struct cfs_pull_result {
    result: PullResult,
}

/// The TOC and tar-split of a zstd:chunked blob, read and checked before a pull (opaque).
pub struct cfs_chunked_manifest {
    manifest: std::sync::Arc<PullManifest>,
}

/// Creates pull options with the defaults (annotations none: the TOC is found through the blob
/// footer; fs-verity if available; DiffID verified). Free with `cfs_pull_options_free`.
#[no_mangle]
pub extern "C" fn cfs_pull_options_new(out: *mut *mut cfs_pull_options, err: *mut *mut cfs_error) -> cfs_status {
    ffi_call!(err, {
        check_out(out, "out")?;
        let b = Box::new(cfs_pull_options {
            options: PullOptions::default(),
            progress: None,
            userdata: std::ptr::null_mut(),
        });
        // SAFETY: checked non-NULL; the caller owns the handle from here on.
        unsafe { write_out(out, super::handles::register(b), "out") }
    })
}

/// Frees options. Free of NULL is a no-op.
#[no_mangle]
pub extern "C" fn cfs_pull_options_free(options: *mut cfs_pull_options) {
    ffi_infallible!((), {
        if !options.is_null() {
            // SAFETY: a pointer from cfs_pull_options_new, freed once by contract.
            unsafe { super::handles::release(options) };
        }
    })
}

fn parse_bool(key: &str, v: &str) -> Result<bool> {
    match v {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(Error::invalid_argument(format!("{key}: expected \"true\" or \"false\", got {v:?}"))),
    }
}

/// Sets an option by name (new options never change the ABI):
/// - `annotations`: the layer's OCI annotations as a JSON object (the TOC digest there
///   authenticates the TOC);
/// - `source_layer`: a layer directory whose objects may be reused (repeatable: each call adds one);
/// - `index_dir`: a directory where an index across the source layers' caches is kept (created
///   and rebuilt as needed; lookups then cost the same with hundreds of source layers as with a few);
/// - `hardlinks`: `true`/`false` (reuse by hardlink instead of reflink/copy);
/// - `verity`: `off`, `if-available`, `require`;
/// - `keep_whiteout_files`: `true`/`false`;
/// - `insecure_skip_diff_id`: `true`/`false` (containers/storage's
///   insecure_allow_unpredictable_image_contents);
/// - `expected_diff_id`: `sha256:<hex>` (a mismatch fails the pull);
/// - `max_ranges`: most ranges per fetch (default 1024);
/// - `write_metadata`: `true`/`false` (keep TOC, tar-split, blob digest in `composefs-data/`).
#[no_mangle]
pub extern "C" fn cfs_pull_options_set(
    options: *mut cfs_pull_options,
    key: *const c_char,
    value: *const c_char,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        // SAFETY: NULL or a live handle / C strings, by contract.
        let o = unsafe { super::handles::try_handle_mut(options, "options") }?;
        // SAFETY: as above.
        let key = unsafe { try_str(key, "key") }?;
        // A path value is bytes (Linux paths need not be UTF-8); every other value is text.
        if key == "source_layer" {
            // SAFETY: as above.
            let p = unsafe { try_path(value, "value") }?;
            o.options.source_layers.push(p.to_path_buf());
            return Ok(());
        }
        if key == "index_dir" {
            // SAFETY: as above.
            o.options.index_dir = Some(unsafe { try_path(value, "value") }?.to_path_buf());
            return Ok(());
        }
        // SAFETY: as above.
        let v = unsafe { try_str(value, "value") }?;
        let opts = &mut o.options;
        match key {
            "annotations" => {
                opts.annotations =
                    Some(serde_json::from_str(v).map_err(|e| {
                        Error::invalid_argument(format!("annotations: not a JSON object of strings: {e}"))
                    })?)
            }
            "hardlinks" => opts.hardlinks = parse_bool(key, v)?,
            "verity" => opts.verity = VerityPolicy::parse(v)?,
            "keep_whiteout_files" => opts.oci_whiteouts = !parse_bool(key, v)?,
            "insecure_skip_diff_id" => opts.insecure_skip_diff_id = parse_bool(key, v)?,
            "write_metadata" => opts.write_metadata = parse_bool(key, v)?,
            "expected_diff_id" => {
                let d = crate::chunked::toc::sha256_bytes(v)
                    .map_err(|e| Error::invalid_argument(format!("expected_diff_id: {e}")))?;
                opts.expected_diff_id = Some(d);
            }
            "max_ranges" => {
                opts.max_ranges = v.parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(|| {
                    Error::invalid_argument(format!("max_ranges: expected a positive number, got {v:?}"))
                })?
            }
            _ => return Err(Error::invalid_argument(format!("unknown pull option {key:?}"))),
        }
        Ok(())
    })
}

/// Sets (or with NULL clears) the progress callback: `bytes` of file data fetched so far and
/// TOC entries; return non-zero to cancel (the pull fails with `CFS_STATUS_CANCELLED`).
#[no_mangle]
pub extern "C" fn cfs_pull_options_set_progress(
    options: *mut cfs_pull_options,
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

/// The C callbacks as a [`BlobFetcher`].
struct CallbackFetcher {
    size: u64,
    begin: unsafe extern "C" fn(*mut c_void, *const cfs_byte_range, usize) -> cfs_status,
    read: unsafe extern "C" fn(*mut c_void, *mut u8, usize) -> i64,
    userdata: *mut c_void,
}

struct CallbackReader<'a> {
    f: &'a CallbackFetcher,
}

impl Read for CallbackReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // SAFETY: the caller's read callback with its userdata; `buf` is valid for `len` bytes.
        let n = unsafe { (self.f.read)(self.f.userdata, buf.as_mut_ptr(), buf.len()) };
        if n < 0 || n as u64 > buf.len() as u64 {
            return Err(std::io::Error::other(format!("the fetch read callback failed (returned {n})")));
        }
        Ok(n as usize)
    }
}

impl BlobFetcher for CallbackFetcher {
    fn blob_size(&self) -> u64 {
        self.size
    }
    fn fetch<'a>(&'a mut self, ranges: &[ByteRange]) -> Result<Box<dyn Read + 'a>> {
        let c: Vec<cfs_byte_range> =
            ranges.iter().map(|r| cfs_byte_range { offset: r.offset, length: r.length }).collect();
        // SAFETY: the caller's begin callback with its userdata; `c` outlives the call.
        let st = unsafe { (self.begin)(self.userdata, c.as_ptr(), c.len()) };
        match st {
            cfs_status::CFS_OK => Ok(Box::new(CallbackReader { f: self })),
            cfs_status::CFS_STATUS_LIMIT_EXCEEDED => {
                Err(Error::limit(format!("the blob source refused {} ranges at once", c.len())))
            }
            other => Err(Error::new(ErrorKind::Io, format!("the fetch callback failed with {other:?}"))),
        }
    }
}

fn run(
    fetcher: &mut dyn BlobFetcher,
    layer_dir: *const c_char,
    options: *const cfs_pull_options,
    out: *mut *mut cfs_pull_result,
) -> Result<()> {
    check_out(out, "out")?;
    // SAFETY: NULL or a C string, by contract.
    let dir = unsafe { try_path(layer_dir, "layer_dir") }?;
    let defaults = cfs_pull_options { options: PullOptions::default(), progress: None, userdata: std::ptr::null_mut() };
    let o = if options.is_null() {
        &defaults
    } else {
        // SAFETY: non-NULL, a live handle by contract.
        unsafe { super::handles::try_handle(options, "options") }?
    };
    let mut progress = super::convert::progress_adapter(o.progress, o.userdata);
    let result = pull(fetcher, dir, &o.options, Some(&mut progress))?;
    // SAFETY: checked non-NULL above; ownership passes to the caller.
    unsafe { write_out(out, super::handles::register(Box::new(cfs_pull_result { result })), "out") }
}

/// Pulls a zstd:chunked layer of `blob_size` bytes into the new directory `layer_dir`, reading
/// only the ranges it needs through `begin`/`read` (called on this thread, with `userdata`).
/// `options` may be NULL for the defaults. On success `*out` receives a result to free with
/// `cfs_pull_result_free`. On any error nothing is left behind.
#[no_mangle]
pub extern "C" fn cfs_layer_pull(
    blob_size: u64,
    begin: cfs_fetch_begin_fn,
    read: cfs_fetch_read_fn,
    userdata: *mut c_void,
    layer_dir: *const c_char,
    options: *const cfs_pull_options,
    out: *mut *mut cfs_pull_result,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        let begin = begin.ok_or_else(|| super::util::null_argument("begin"))?;
        let read = read.ok_or_else(|| super::util::null_argument("read"))?;
        let mut f = CallbackFetcher { size: blob_size, begin, read, userdata };
        run(&mut f, layer_dir, options, out)
    })
}

/// Like `cfs_layer_pull` for a blob that is a file on disk.
#[no_mangle]
pub extern "C" fn cfs_layer_pull_path(
    blob_path: *const c_char,
    layer_dir: *const c_char,
    options: *const cfs_pull_options,
    out: *mut *mut cfs_pull_result,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        check_out(out, "out")?;
        // SAFETY: NULL or a C string, by contract.
        let p = unsafe { try_path(blob_path, "blob_path") }?;
        let file = std::fs::File::open(p).map_err(|e| Error::io(format_args!("open {}", p.display()), e))?;
        let mut f = FileFetcher::new(file)?;
        run(&mut f, layer_dir, options, out)
    })
}

/// Frees a pull result. Free of NULL is a no-op.
#[no_mangle]
pub extern "C" fn cfs_pull_result_free(result: *mut cfs_pull_result) {
    ffi_infallible!((), {
        if !result.is_null() {
            // SAFETY: a pointer from cfs_layer_pull*, freed once by contract.
            unsafe { super::handles::release(result) };
        }
    })
}

/// The result as JSON (layer dir, TOC digest, DiffID, blob bytes fetched, objects written and
/// reused, ...), to free with `cfs_string_free`.
#[no_mangle]
pub extern "C" fn cfs_pull_result_to_json(
    result: *const cfs_pull_result,
    out: *mut *mut c_char,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        check_out(out, "out")?;
        // SAFETY: NULL or a live handle, by contract.
        let r = unsafe { super::handles::try_handle(result, "result") }?;
        // SAFETY: checked non-NULL.
        unsafe { write_out(out, into_c_string(r.result.to_json().to_string()), "out") }
    })
}

/// The decompressed TOC JSON of the pulled layer (what containers/storage stores as
/// `zstd-chunked-manifest`), valid until the result is freed.
#[no_mangle]
pub extern "C" fn cfs_pull_result_toc_json(
    result: *const cfs_pull_result,
    data: *mut *const u8,
    len: *mut usize,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        check_out(data, "data")?;
        check_out(len, "len")?;
        // SAFETY: NULL or a live handle, by contract.
        let r = unsafe { super::handles::try_handle(result, "result") }?;
        // SAFETY: both checked non-NULL.
        unsafe {
            write_out(data, r.result.toc_json.as_ptr(), "data")?;
            write_out(len, r.result.toc_json.len(), "len")
        }
    })
}

/// Fetches (through `begin`/`read`, as `cfs_layer_pull`), authenticates and decodes the TOC and
/// tar-split of a zstd:chunked blob of `blob_size` bytes, and checks that they describe the same
/// entries with the same metadata: the first step of a pull, for a caller that needs the manifest
/// before it pulls (containers/storage's `NewDiffer`). `annotations_json` is the layer's OCI
/// annotations (a JSON object; NULL locates the TOC through the blob's footer, unauthenticated).
/// The decoded tar-split is kept in an unnamed file in `tmp_dir` (NULL: the system's temporary
/// directory). On success `*out` receives a handle to free with `cfs_chunked_manifest_free`; pass
/// it to the pull with `cfs_pull_options_set_manifest`.
#[no_mangle]
pub extern "C" fn cfs_chunked_manifest_read(
    blob_size: u64,
    begin: cfs_fetch_begin_fn,
    read: cfs_fetch_read_fn,
    userdata: *mut c_void,
    annotations_json: *const c_char,
    tmp_dir: *const c_char,
    out: *mut *mut cfs_chunked_manifest,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        check_out(out, "out")?;
        let begin = begin.ok_or_else(|| super::util::null_argument("begin"))?;
        let read = read.ok_or_else(|| super::util::null_argument("read"))?;
        let annotations: Option<std::collections::BTreeMap<String, String>> =
            if annotations_json.is_null() {
                None
            } else {
                // SAFETY: a C string, by contract.
                let v = unsafe { try_str(annotations_json, "annotations_json") }?;
                Some(serde_json::from_str(v).map_err(|e| {
                    Error::invalid_argument(format!("annotations_json: not a JSON object of strings: {e}"))
                })?)
            };
        // SAFETY: NULL or a C string, by contract.
        let tmp = if tmp_dir.is_null() { None } else { Some(unsafe { try_path(tmp_dir, "tmp_dir") }?) };
        let mut f = CallbackFetcher { size: blob_size, begin, read, userdata };
        let manifest = read_manifest_from(&mut f, annotations.as_ref(), tmp)?;
        let h = Box::new(cfs_chunked_manifest { manifest: std::sync::Arc::new(manifest) });
        // SAFETY: checked non-NULL; ownership passes to the caller.
        unsafe { write_out(out, super::handles::register(h), "out") }
    })
}

/// Frees a manifest (a pull it was given to keeps its own reference). Free of NULL is a no-op.
#[no_mangle]
pub extern "C" fn cfs_chunked_manifest_free(manifest: *mut cfs_chunked_manifest) {
    ffi_infallible!((), {
        if !manifest.is_null() {
            // SAFETY: a pointer from cfs_chunked_manifest_read, freed once by contract.
            unsafe { super::handles::release(manifest) };
        }
    })
}

/// The decompressed TOC JSON (what containers/storage stores as `zstd-chunked-manifest`), valid
/// until the manifest is freed.
#[no_mangle]
pub extern "C" fn cfs_chunked_manifest_toc_json(
    manifest: *const cfs_chunked_manifest,
    data: *mut *const u8,
    len: *mut usize,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        check_out(data, "data")?;
        check_out(len, "len")?;
        // SAFETY: NULL or a live handle, by contract.
        let m = unsafe { super::handles::try_handle(manifest, "manifest") }?;
        // SAFETY: both checked non-NULL.
        unsafe {
            write_out(data, m.manifest.toc_json.as_ptr(), "data")?;
            write_out(len, m.manifest.toc_json.len(), "len")
        }
    })
}

/// What was read, as JSON: `tocDigest` (`sha256:` of the compressed TOC), `tocAuthenticated`
/// (whether the annotations gave that digest), `tocOffset` (of the TOC frame in the blob),
/// `tarSize` (of the layer's tar, from the tar-split; null without one). Free with
/// `cfs_string_free`.
#[no_mangle]
pub extern "C" fn cfs_chunked_manifest_to_json(
    manifest: *const cfs_chunked_manifest,
    out: *mut *mut c_char,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        check_out(out, "out")?;
        // SAFETY: NULL or a live handle, by contract.
        let m = unsafe { super::handles::try_handle(manifest, "manifest") }?;
        let l = &m.manifest.location;
        let json = serde_json::json!({
            "tocDigest": l.toc_digest,
            "tocAuthenticated": l.authenticated,
            "tocOffset": l.toc.offset,
            "tarSize": m.manifest.tar_size,
        });
        // SAFETY: checked non-NULL.
        unsafe { write_out(out, into_c_string(json.to_string()), "out") }
    })
}

/// A new file descriptor (close-on-exec, owned by the caller) of the decoded tar-split NDJSON,
/// for the caller to keep (containers/storage stores it with the layer). The library reads its
/// copy with positional reads, so the caller may seek and read at any time. A blob without an
/// authenticated tar-split gives `CFS_STATUS_NOT_FOUND`.
#[no_mangle]
pub extern "C" fn cfs_chunked_manifest_tar_split_fd(
    manifest: *const cfs_chunked_manifest,
    fd_out: *mut i32,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        check_out(fd_out, "fd_out")?;
        // SAFETY: NULL or a live handle, by contract.
        let m = unsafe { super::handles::try_handle(manifest, "manifest") }?;
        let file = m
            .manifest
            .tar_split
            .as_ref()
            .ok_or_else(|| Error::new(ErrorKind::NotFound, "the layer has no (authenticated) tar-split"))?;
        let dup = file.try_clone().map_err(|e| Error::io("duplicate the tar-split fd", e))?;
        // SAFETY: checked non-NULL; the fd passes to the caller.
        unsafe { write_out(fd_out, std::os::fd::IntoRawFd::into_raw_fd(dup), "fd_out") }
    })
}

/// Makes the pull use `manifest` (read from the same blob with `cfs_chunked_manifest_read`)
/// instead of fetching and checking the TOC and tar-split again; the `annotations` option is then
/// not looked at. The options keep their own reference: the manifest may be freed afterwards.
/// NULL clears it.
#[no_mangle]
pub extern "C" fn cfs_pull_options_set_manifest(
    options: *mut cfs_pull_options,
    manifest: *const cfs_chunked_manifest,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        // SAFETY: NULL or a live handle, by contract.
        let o = unsafe { super::handles::try_handle_mut(options, "options") }?;
        o.options.manifest = if manifest.is_null() {
            None
        } else {
            // SAFETY: a live handle, by contract.
            Some(unsafe { super::handles::try_handle(manifest, "manifest") }?.manifest.clone())
        };
        Ok(())
    })
}

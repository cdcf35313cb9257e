//! C API of the zstd:chunked writer: a layer tar (any compression) into a zstd:chunked blob, as
//! containers/storage's `compressor.ZstdCompressor` writes it.

use std::ffi::c_char;
use std::io::Write;
use std::mem::ManuallyDrop;
use std::os::fd::{BorrowedFd, FromRawFd};

use super::cfs_status;
use super::error::cfs_error;
use super::util::{check_out, into_c_string, write_out};
use crate::chunked::writer::{compress, CompressOptions, DEFAULT_LEVEL};
use crate::Error;

/// Reads a layer (plain tar, gzip or zstd, by magic) from `input_fd` to its end and writes it as a
/// zstd:chunked blob to `output_fd`: each file's data in its own zstd frames, large files split
/// into rollsum chunks, runs of zeros as `zeros` chunks, then the TOC, the tar-split and the
/// footer; the TOC entries and tar-split are those containers/storage's compressor writes for the
/// same tar. `level` is the zstd level (1-22; 0 means containers/storage's 10). Both fds are
/// borrowed (not closed). On success `*result_json` receives a JSON object (free with
/// `cfs_string_free`) with `annotations` (the layer's OCI annotations: TOC digest and positions),
/// `tocDigest`, `blobDigest`, `blobSize`, `diffID` and `tarSize`. On error what was written to
/// `output_fd` is garbage.
#[no_mangle]
pub extern "C" fn cfs_chunked_compress(
    input_fd: i32,
    output_fd: i32,
    level: i32,
    result_json: *mut *mut c_char,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        check_out(result_json, "result_json")?;
        if input_fd < 0 || output_fd < 0 {
            return Err(Error::invalid_argument(format!(
                "input_fd {input_fd} / output_fd {output_fd}: not file descriptors"
            )));
        }
        // SAFETY: the caller keeps input_fd open for the call. The decompression thread gets a
        // duplicate it owns, so nothing reads the caller's fd after return.
        let input = rustix::io::fcntl_dupfd_cloexec(unsafe { BorrowedFd::borrow_raw(input_fd) }, 0)
            .map_err(|e| Error::io("dup input_fd", e.into()))?;
        // SAFETY: the caller keeps output_fd open for the call; ManuallyDrop never closes it.
        let out = ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(output_fd) });
        let mut w = std::io::BufWriter::with_capacity(1 << 20, &*out);
        let options = CompressOptions { level: if level == 0 { DEFAULT_LEVEL } else { level }, ..Default::default() };
        let result = compress(Box::new(std::fs::File::from(input)), &mut w, &options)?;
        w.flush().map_err(|e| Error::io("write output_fd", e))?;
        // SAFETY: checked non-NULL above; valid for a write by contract.
        unsafe { write_out(result_json, into_c_string(result.to_json().to_string()), "result_json") }
    })
}

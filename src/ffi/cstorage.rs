//! C API of publishing a layer into a containers/storage layer store (layer::cstorage, SPEC §2.3).

use std::ffi::c_char;

use super::cfs_status;
use super::error::cfs_error;
use super::util::{into_c_string, try_path, try_str, write_out};
use crate::layer::cstorage::{publish_layer_metadata, PublishOptions};

/// Writes the TOC, layer data, layers cache and tar-split of `layer_dir` (a layer directory made
/// by this library) into the containers/storage layer store `<graphroot>/overlay-layers/`, for the
/// layer `layer_id`: the big data `zstd-chunked-manifest`, `zstd-chunked-layer-data` and
/// `chunked-manifest-cache` in `<layer_id>/` (under containers/storage's file names) and
/// `<layer_id>.tar-split.gz`. Each file is written completely or not at all; one already there
/// with the same content is kept (publishing twice succeeds), one with other content fails with
/// `CFS_STATUS_ALREADY_EXISTS` and nothing is written.
///
/// With `lock_store` true the call holds containers/storage's layer store lock
/// (`overlay-layers/layers.lock`, an fcntl write lock) while writing. Pass false only when this
/// process already holds that lock (an fcntl lock belongs to the process: taking and releasing it
/// again here would release the caller's).
///
/// `layers.json` is never edited: record the layer through containers/storage with the fields in
/// the result's `layersJson` (`big-data-names`, `diff-size`). On success `*result_json_out`
/// (may be NULL when not wanted) receives the result as JSON, to free with `cfs_string_free`.
#[no_mangle]
pub extern "C" fn cfs_layer_publish_metadata(
    layer_dir: *const c_char,
    graphroot: *const c_char,
    layer_id: *const c_char,
    lock_store: bool,
    result_json_out: *mut *mut c_char,
    err: *mut *mut cfs_error,
) -> cfs_status {
    ffi_call!(err, {
        // SAFETY: each is NULL or a C string, by contract.
        let (layer_dir, graphroot, layer_id) = unsafe {
            (try_path(layer_dir, "layer_dir")?, try_path(graphroot, "graphroot")?, try_str(layer_id, "layer_id")?)
        };
        let options = PublishOptions { lock_layer_store: lock_store };
        let r = publish_layer_metadata(layer_dir, graphroot, layer_id, &options)?;
        if !result_json_out.is_null() {
            // SAFETY: checked non-NULL; valid for a write by contract.
            unsafe { write_out(result_json_out, into_c_string(r.to_json()), "result_json_out") }?;
        }
        Ok(())
    })
}

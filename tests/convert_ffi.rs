//! The C API of conversion, called as C would call it.

mod support;
use std::ffi::{c_void, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::ptr;

use composefs_storage::ffi::cfs_status;
use composefs_storage::ffi::convert::*;
use composefs_storage::ffi::error::{cfs_error, cfs_error_free, cfs_error_status};
use composefs_storage::ffi::util::cfs_string_free;

fn corpus() -> Option<PathBuf> {
    support::corpus().map(|p| p.join("cstorage"))
}

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

unsafe extern "C" fn cancel_after_10(userdata: *mut c_void, _bytes: u64, entries: u64) -> i32 {
    // SAFETY: the test passes a pointer to a live u64.
    let calls = unsafe { &mut *(userdata as *mut u64) };
    *calls += 1;
    (entries >= 10) as i32
}

#[test]
fn convert_through_the_c_api() {
    let _serial = support::hygiene::lock(); // one test at a time: the hygiene checks count fds
    let Some(dir) = corpus() else {
        eprintln!("skipping: corpus not found");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut opts: *mut cfs_convert_options = ptr::null_mut();
    let mut err: *mut cfs_error = ptr::null_mut();
    assert_eq!(cfs_convert_options_new(&mut opts, &mut err), cfs_status::CFS_OK);
    let off = CString::new("off").unwrap();
    assert_eq!(cfs_convert_options_set_verity(opts, off.as_ptr(), &mut err), cfs_status::CFS_OK);
    let bad = CString::new("sometimes").unwrap();
    assert_eq!(cfs_convert_options_set_verity(opts, bad.as_ptr(), &mut err), cfs_status::CFS_STATUS_INVALID_ARGUMENT);
    assert_eq!(cfs_error_status(err), cfs_status::CFS_STATUS_INVALID_ARGUMENT);
    cfs_error_free(err);
    err = ptr::null_mut();

    // Success from a path.
    let input = c(&dir.join("noparents-ustar/noparents-ustar.tar.zst"));
    let layer = c(&tmp.path().join("layer"));
    let mut res: *mut cfs_convert_result = ptr::null_mut();
    assert_eq!(cfs_layer_convert_path(input.as_ptr(), layer.as_ptr(), opts, &mut res, &mut err), cfs_status::CFS_OK);
    assert!(err.is_null() && !res.is_null());
    let mut s: *mut std::ffi::c_char = ptr::null_mut();
    assert_eq!(cfs_convert_result_diff_id(res, &mut s, &mut err), cfs_status::CFS_OK);
    // SAFETY: a string from the library.
    let diff_id = unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned();
    cfs_string_free(s);
    let compress = std::fs::read_to_string(dir.join("noparents-ustar/noparents-ustar.compress.json")).unwrap();
    assert!(compress.contains(&diff_id), "{diff_id}");
    let mut n = 0u64;
    let objects = CString::new("objects").unwrap();
    assert_eq!(cfs_convert_result_get_u64(res, objects.as_ptr(), &mut n, &mut err), cfs_status::CFS_OK);
    assert_eq!(n, 2);
    let nope = CString::new("nope").unwrap();
    assert_eq!(
        cfs_convert_result_get_u64(res, nope.as_ptr(), &mut n, ptr::null_mut()),
        cfs_status::CFS_STATUS_INVALID_ARGUMENT
    );
    let (mut data, mut len): (*const u8, usize) = (ptr::null(), 0);
    assert_eq!(cfs_convert_result_toc_json(res, &mut data, &mut len, &mut err), cfs_status::CFS_OK);
    // SAFETY: borrowed bytes valid until the result is freed.
    let toc = unsafe { std::slice::from_raw_parts(data, len) };
    assert!(toc.starts_with(b"{\"version\":1,\"entries\":["));
    cfs_convert_result_free(res);

    // Same directory again: already exists.
    res = ptr::null_mut();
    let h = support::hygiene::Hygiene::take(tmp.path());
    assert_eq!(
        cfs_layer_convert_path(input.as_ptr(), layer.as_ptr(), opts, &mut res, &mut err),
        cfs_status::CFS_STATUS_ALREADY_EXISTS
    );
    h.assert_clean("convert into an existing dir");
    assert!(res.is_null(), "no output on failure");
    cfs_error_free(err);
    err = ptr::null_mut();

    // Cancel from the progress callback (fd input); nothing is left behind.
    let mut calls = 0u64;
    assert_eq!(
        cfs_convert_options_set_progress(opts, Some(cancel_after_10), &mut calls as *mut u64 as *mut c_void, &mut err),
        cfs_status::CFS_OK
    );
    let f = std::fs::File::open(dir.join("etc-doc-gnu/etc-doc-gnu.tar.zst")).unwrap();
    let layer2 = c(&tmp.path().join("layer2"));
    use std::os::fd::AsRawFd;
    let h = support::hygiene::Hygiene::take(tmp.path());
    assert_eq!(
        cfs_layer_convert_fd(f.as_raw_fd(), layer2.as_ptr(), opts, &mut res, &mut err),
        cfs_status::CFS_STATUS_CANCELLED
    );
    h.assert_clean("cancelled convert from an fd");
    assert_eq!(calls, 10);
    assert!(!tmp.path().join("layer2").exists());
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1, "only the first layer");
    cfs_error_free(err);

    // NULL handling.
    assert_eq!(
        cfs_layer_convert_path(ptr::null(), layer2.as_ptr(), opts, &mut res, ptr::null_mut()),
        cfs_status::CFS_STATUS_NULL_ARGUMENT
    );
    cfs_convert_options_free(opts);
    cfs_convert_options_free(ptr::null_mut());
    cfs_convert_result_free(ptr::null_mut());
}

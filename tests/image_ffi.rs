//! The C API of the image module, called as C would call it.

mod support;
use std::ffi::CString;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;

use composefs_storage::ffi::error::{cfs_error, cfs_error_free, cfs_error_message, cfs_status};
use composefs_storage::ffi::image::*;
use sha2::{Digest, Sha256};

use support::corpus;

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn message(err: *mut cfs_error) -> String {
    let s = unsafe { std::ffi::CStr::from_ptr(cfs_error_message(err)) }.to_string_lossy().into_owned();
    cfs_error_free(err);
    s
}

#[test]
fn write_from_dump_path_to_fd_and_back_to_dump() {
    let Some(corpus) = corpus() else { return };
    let opts = cfs_image_options_new();
    let mut err: *mut cfs_error = std::ptr::null_mut();
    assert_eq!(cfs_image_options_set_max_version(opts, 2, &mut err), cfs_status::CFS_STATUS_INVALID_ARGUMENT);
    assert!(message(err).contains("version"));
    assert_eq!(cfs_image_options_set_min_version(opts, 1, &mut err), cfs_status::CFS_OK);
    assert_eq!(cfs_image_options_set_max_version(opts, 1, &mut err), cfs_status::CFS_OK);

    let dump = CString::new(corpus.join("composefs-assets/special_v1.dump").to_str().unwrap()).unwrap();
    let mut out = tempfile::tempfile().unwrap();
    let mut digest = [0u8; 32];
    let st = cfs_image_write_from_dump(
        -1,
        dump.as_ptr(),
        out.as_raw_fd(),
        std::ptr::null(),
        opts,
        digest.as_mut_ptr(),
        &mut err,
    );
    assert_eq!(st, cfs_status::CFS_OK);
    assert!(err.is_null());
    cfs_image_options_free(opts);
    cfs_image_options_free(std::ptr::null_mut());

    out.seek(SeekFrom::Start(0)).unwrap();
    let mut img = Vec::new();
    out.read_to_end(&mut img).unwrap();
    assert_eq!(hex(&Sha256::digest(&img)), "2b1dfb9ffe6938cb3134c339059572e38cbd8cc515d54758fdff55cad5a37427");

    // fs-verity of the fd equals the digest the writer reported.
    out.seek(SeekFrom::Start(0)).unwrap();
    let mut d2 = [0u8; 32];
    assert_eq!(cfs_fsverity_digest_fd(out.as_raw_fd(), d2.as_mut_ptr(), &mut err), cfs_status::CFS_OK);
    assert_eq!(d2, digest);
    assert_eq!(cfs_fsverity_digest_fd(-1, d2.as_mut_ptr(), &mut err), cfs_status::CFS_STATUS_INVALID_ARGUMENT);
    cfs_error_free(err);
    assert_eq!(cfs_fsverity_digest_fd(0, std::ptr::null_mut(), &mut err), cfs_status::CFS_STATUS_NULL_ARGUMENT);
    cfs_error_free(err);

    // Image (fd) -> dump (fd) -> image (path, default options of NULL would give v0; use v1).
    out.seek(SeekFrom::Start(0)).unwrap();
    let mut text = tempfile::tempfile().unwrap();
    assert_eq!(cfs_image_to_dump(out.as_raw_fd(), std::ptr::null(), text.as_raw_fd(), &mut err), cfs_status::CFS_OK);
    text.seek(SeekFrom::Start(0)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let img_path = CString::new(dir.path().join("again.cfs").to_str().unwrap()).unwrap();
    let opts = cfs_image_options_new();
    cfs_image_options_set_min_version(opts, 1, &mut err);
    let st = cfs_image_write_from_dump(
        text.as_raw_fd(),
        std::ptr::null(),
        -1,
        img_path.as_ptr(),
        opts,
        std::ptr::null_mut(),
        &mut err,
    );
    assert_eq!(st, cfs_status::CFS_OK);
    cfs_image_options_free(opts);
    assert!(std::fs::read(dir.path().join("again.cfs")).unwrap() == img);
}

#[test]
fn bad_dumps_report_errors_and_leave_nothing() {
    let Some(corpus) = corpus() else { return };
    let dir = tempfile::tempdir().unwrap();
    let dump = CString::new(corpus.join("composefs-assets/should-fail-empty-name.dump").to_str().unwrap()).unwrap();
    let img = CString::new(dir.path().join("x.cfs").to_str().unwrap()).unwrap();
    let mut err: *mut cfs_error = std::ptr::null_mut();
    let st = cfs_image_write_from_dump(
        -1,
        dump.as_ptr(),
        -1,
        img.as_ptr(),
        std::ptr::null(),
        std::ptr::null_mut(),
        &mut err,
    );
    assert_eq!(st, cfs_status::CFS_STATUS_FORMAT);
    assert!(message(err).contains("dump line 2"));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

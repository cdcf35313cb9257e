//! The C API of mounting, called as C would (NUL-terminated strings, out-pointers, error objects).

mod mount_support;

use std::ffi::{CStr, CString};
use std::fs;
use std::path::Path;
use std::ptr;

use composefs_storage::ffi::cfs_status;
use composefs_storage::ffi::error::{cfs_error_free, cfs_error_message};
use composefs_storage::ffi::mount::*;
use composefs_storage::ffi::util::cfs_string_free;
use mount_support::*;

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).unwrap()
}

#[test]
fn c_api_mounts_verifies_and_unmounts() {
    if !can_mount() || !corpus_available() {
        return;
    }
    let tmp = tempdir();
    let root = tmp.path();
    let (cfs, _, _) = noparents_layer_dir(root, "cfs");
    let (mnt, upper, work) = (root.join("mnt"), root.join("upper"), root.join("work"));
    for d in [&mnt, &upper, &work] {
        fs::create_dir(d).unwrap();
    }
    let mut err = ptr::null_mut();

    let mut hex = ptr::null_mut();
    let blob = c(&cfs.join("composefs-data/composefs.blob"));
    assert_eq!(cfs_mount_blob_digest(blob.as_ptr(), &mut hex, &mut err), cfs_status::CFS_OK);
    // SAFETY (test): a string this library returned.
    let digest = unsafe { CStr::from_ptr(hex) }.to_owned();
    cfs_string_free(hex);
    assert_eq!(digest.to_bytes().len(), 64);

    let mut opts = ptr::null_mut();
    assert_eq!(cfs_mount_options_new(&mut opts, &mut err), cfs_status::CFS_OK);
    for (k, v) in [
        ("upper", c(&upper)),
        ("work", c(&work)),
        ("verity", CString::new("off").unwrap()),
        ("flatten", CString::new("false").unwrap()),
        ("stub_cache_dir", c(&root.join("cache"))),
    ] {
        let k = CString::new(k).unwrap();
        assert_eq!(cfs_mount_options_set(opts, k.as_ptr(), v.as_ptr(), &mut err), cfs_status::CFS_OK);
    }
    let bad = CString::new("nope").unwrap();
    assert_eq!(
        cfs_mount_options_set(opts, bad.as_ptr(), bad.as_ptr(), &mut err),
        cfs_status::CFS_STATUS_INVALID_ARGUMENT
    );
    cfs_error_free(err);
    err = ptr::null_mut();

    let dirs = [c(&cfs)];
    let dir_ptrs = [dirs[0].as_ptr()];
    let digests = [digest.as_ptr()];
    let target = c(&mnt);
    let st = cfs_mount_stack(opts, dir_ptrs.as_ptr(), digests.as_ptr(), 1, target.as_ptr(), &mut err);
    assert_eq!(st, cfs_status::CFS_OK);
    let guard = MountGuard(mnt.clone());
    fs::write(mnt.join("via-c"), b"c").unwrap();
    assert_eq!(cfs_mount_unmount(target.as_ptr(), &mut err), cfs_status::CFS_OK);
    std::mem::forget(guard);
    assert_eq!(fs::read(upper.join("via-c")).unwrap(), b"c");
    Snapshot::assert_clean(root);

    // A wrong digest: CFS_STATUS_VERIFICATION with a message, nothing mounted.
    let wrong = CString::new("00".repeat(32)).unwrap();
    let digests = [wrong.as_ptr()];
    let st = assert_no_leak(root, "wrong digest", || {
        cfs_mount_stack(ptr::null(), dir_ptrs.as_ptr(), digests.as_ptr(), 1, target.as_ptr(), &mut err)
    });
    assert_eq!(st, cfs_status::CFS_STATUS_VERIFICATION);
    // SAFETY (test): the error's message is valid until it is freed.
    let msg = unsafe { CStr::from_ptr(cfs_error_message(err)) }.to_string_lossy().into_owned();
    assert!(msg.contains("refusing to mount"), "{msg}");
    cfs_error_free(err);
    err = ptr::null_mut();
    Snapshot::assert_clean(root);

    // NULL arguments.
    let st = cfs_mount_stack(ptr::null(), ptr::null(), ptr::null(), 1, target.as_ptr(), &mut err);
    assert_eq!(st, cfs_status::CFS_STATUS_NULL_ARGUMENT);
    cfs_error_free(err);
    assert_eq!(cfs_mount_unmount(ptr::null(), ptr::null_mut()), cfs_status::CFS_STATUS_NULL_ARGUMENT);
    cfs_mount_options_free(opts);
    cfs_mount_options_free(ptr::null_mut());
}

fn set(opts: *mut cfs_mount_options, k: &str, v: &str) -> cfs_status {
    let (k, v) = (CString::new(k).unwrap(), CString::new(v).unwrap());
    let mut err = ptr::null_mut();
    let st = cfs_mount_options_set(opts, k.as_ptr(), v.as_ptr(), &mut err);
    cfs_error_free(err);
    st
}

#[test]
fn c_api_cleanup_evicts_the_derived_image_cache() {
    if !can_mount() || !corpus_available() {
        return;
    }
    let tmp = tempdir();
    let root = tmp.path();
    let (cfs, _, _) = noparents_layer_dir(root, "cfs");
    let mnt = root.join("mnt");
    fs::create_dir(&mnt).unwrap();
    let cache = root.join("cache");
    let mut err = ptr::null_mut();
    let mut opts = ptr::null_mut();
    assert_eq!(cfs_mount_options_new(&mut opts, &mut err), cfs_status::CFS_OK);
    assert_eq!(set(opts, "stub_cache_dir", cache.to_str().unwrap()), cfs_status::CFS_OK);
    assert_eq!(set(opts, "reuse_erofs", "maybe"), cfs_status::CFS_STATUS_INVALID_ARGUMENT);
    assert_eq!(set(opts, "cache_max_images", "-1"), cfs_status::CFS_STATUS_INVALID_ARGUMENT);
    assert_eq!(set(opts, "cache_max_bytes", "lots"), cfs_status::CFS_STATUS_INVALID_ARGUMENT);
    let dirs = [c(&cfs)];
    let dir_ptrs = [dirs[0].as_ptr()];
    let target = c(&mnt);
    // The lone bottom layer is mounted from a derived image, which stays cached.
    let st = cfs_mount_stack(opts, dir_ptrs.as_ptr(), ptr::null(), 1, target.as_ptr(), &mut err);
    assert_eq!(st, cfs_status::CFS_OK);
    let guard = MountGuard(mnt.clone());
    assert_eq!(cfs_mount_unmount(target.as_ptr(), &mut err), cfs_status::CFS_OK);
    std::mem::forget(guard);
    assert_eq!(fs::read_dir(&cache).unwrap().count(), 1);

    // Default limits keep it; zero limits remove it.
    let mut report = cfs_mount_cleanup_report::default();
    assert_eq!(cfs_mount_cleanup(opts, &mut report, &mut err), cfs_status::CFS_OK);
    assert_eq!(report.images_evicted, 0);
    assert_eq!(fs::read_dir(&cache).unwrap().count(), 1);
    assert_eq!(set(opts, "cache_max_images", "0"), cfs_status::CFS_OK);
    assert_eq!(set(opts, "cache_max_bytes", "0"), cfs_status::CFS_OK);
    assert_eq!(cfs_mount_cleanup(opts, ptr::null_mut(), &mut err), cfs_status::CFS_OK);
    assert_eq!(fs::read_dir(&cache).unwrap().count(), 0);
    assert_eq!(cfs_mount_cleanup(ptr::null(), &mut report, ptr::null_mut()), cfs_status::CFS_STATUS_NULL_ARGUMENT);
    cfs_mount_options_free(opts);
    Snapshot::assert_clean(root);
}

//! The derived-image cache and the per-process memory of mounts (src/mount/cache.rs, reuse.rs):
//! bounded LRU eviction that never removes an image a mount is about to use, cleanup of what
//! killed processes left, reuse that survives eviction, and remembered blob checks that a
//! changed blob cannot pass.

mod mount_support;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use composefs_storage::mount::{self, CacheLimits, Layer, MountOptions};
use composefs_storage::ErrorKind;
use mount_support::*;

/// A composefs layer dir converted from a tar of `files`.
fn layer(root: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let tree = root.join(format!("{name}-tree"));
    for (p, c) in files {
        let p = tree.join(p);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, c).unwrap();
    }
    let tar = root.join(format!("{name}.tar"));
    let ok = Command::new("tar").arg("-cf").arg(&tar).arg("-C").arg(&tree).arg(".").status().unwrap().success();
    assert!(ok);
    let dir = root.join(name);
    let opts = composefs_storage::layer::ConvertOptions::default();
    composefs_storage::layer::convert(Box::new(fs::File::open(&tar).unwrap()), &dir, &opts, None).unwrap();
    dir
}

fn images(cache: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(cache)
        .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "blob")).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn mount_read(stack: &[Layer], mnt: &Path, opts: &MountOptions, path: &str) -> Vec<u8> {
    mount::mount(stack, mnt, opts).unwrap();
    let guard = MountGuard(mnt.to_path_buf());
    let data = fs::read(mnt.join(path)).unwrap();
    mount::unmount(mnt).unwrap();
    std::mem::forget(guard);
    data
}

#[test]
fn eviction_keeps_the_cache_bounded_and_spares_images_about_to_be_mounted() {
    if !can_mount() {
        return;
    }
    let tmp = tempdir();
    let root = tmp.path();
    let cache = root.join("cache");
    let mnt = root.join("mnt");
    fs::create_dir(&mnt).unwrap();
    let limits = CacheLimits { max_images: 2, max_bytes: u64::MAX };
    let opts = MountOptions { stub_cache_dir: Some(cache.clone()), cache_limits: limits, ..MountOptions::read_only() };
    // Four stacks, four derived images (each bottom layer is rewritten); at most two stay.
    let mut dirs = Vec::new();
    for i in 0..4 {
        let content = format!("content {i}");
        let d = layer(root, &format!("l{i}"), &[("f", content.as_str())]);
        let stack = [Layer::from_layer_dir(&d).unwrap()];
        assert_eq!(mount_read(&stack, &mnt, &opts, "f"), content.as_bytes());
        assert!(images(&cache).len() <= 2, "after stack {i}: {:?}", images(&cache));
        dirs.push(d);
    }
    // The most recently used images are the ones kept, and mounting them again reuses them.
    let kept = images(&cache);
    assert_eq!(kept.len(), 2);
    let stack = [Layer::from_layer_dir(&dirs[3]).unwrap()];
    assert_eq!(mount_read(&stack, &mnt, &opts, "f"), b"content 3");
    assert_eq!(images(&cache), kept);

    // An image another process is about to mount holds a shared lock: never evicted.
    let locked = fs::File::open(&kept[0]).unwrap();
    rustix::fs::flock(&locked, rustix::fs::FlockOperation::LockShared).unwrap();
    let report = mount::cleanup(Some(&cache), CacheLimits { max_images: 0, max_bytes: 0 }).unwrap();
    assert_eq!(images(&cache), vec![kept[0].clone()], "{report:?}");
    assert_eq!(report.images_evicted, 1);
    drop(locked);
    let report = mount::cleanup(Some(&cache), CacheLimits { max_images: 0, max_bytes: 0 }).unwrap();
    assert_eq!(report.images_evicted, 1);
    assert!(images(&cache).is_empty());

    // Evicted images (and the mounts kept of them) come back on the next mount.
    assert_eq!(mount_read(&stack, &mnt, &opts, "f"), b"content 3");
    assert_eq!(images(&cache).len(), 1);
    Snapshot::assert_clean(root);
}

#[test]
fn byte_limit_evicts_least_recently_used_first() {
    if !can_mount() {
        return;
    }
    let tmp = tempdir();
    let root = tmp.path();
    let cache = root.join("cache");
    let mnt = root.join("mnt");
    fs::create_dir(&mnt).unwrap();
    let opts = MountOptions { stub_cache_dir: Some(cache.clone()), ..MountOptions::read_only() };
    let a = [Layer::from_layer_dir(&layer(root, "a", &[("f", "a")])).unwrap()];
    let b = [Layer::from_layer_dir(&layer(root, "b", &[("f", "b")])).unwrap()];
    mount_read(&a, &mnt, &opts, "f");
    let image_a = images(&cache);
    // atime is the last use; make a's clearly older than b's.
    let old = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec { tv_sec: 1_000_000, tv_nsec: 0 },
        last_modification: rustix::fs::Timespec { tv_sec: 0, tv_nsec: rustix::fs::UTIME_OMIT },
    };
    rustix::fs::utimensat(rustix::fs::CWD, &image_a[0], &old, rustix::fs::AtFlags::empty()).unwrap();
    mount_read(&b, &mnt, &opts, "f");
    let both = images(&cache);
    assert_eq!(both.len(), 2);
    let size_b = both.iter().filter(|p| **p != image_a[0]).map(|p| fs::metadata(p).unwrap().len()).sum::<u64>();
    let r = mount::cleanup(Some(&cache), CacheLimits { max_images: 10, max_bytes: size_b }).unwrap();
    assert_eq!(r.images_evicted, 1);
    let left = images(&cache);
    assert_eq!(left.len(), 1);
    assert_ne!(left[0], image_a[0], "the least recently used image goes first");
}

#[test]
fn cleanup_removes_what_dead_processes_left_and_spares_the_living() {
    let tmp = tempdir();
    let cache = tmp.path().join("cache");
    fs::create_dir(&cache).unwrap();
    // A dead process: spawn and reap one, its pid is gone (reuse within the test is unlikely,
    // and would only make the cleanup leave the entry alone).
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let unfinished = cache.join(format!(".tmp-{dead}-0"));
    fs::write(&unfinished, b"half an image").unwrap();
    let ours = cache.join(format!(".tmp-{}-999", std::process::id()));
    fs::write(&ours, b"being written").unwrap();
    let image = cache.join("flat-0000.blob");
    fs::write(&image, b"an image").unwrap();
    let unrelated = cache.join("notes.txt");
    fs::write(&unrelated, b"not ours").unwrap();
    let r = mount::cleanup(Some(&cache), CacheLimits::default()).unwrap();
    assert!(!unfinished.exists(), "{r:?}");
    assert!(ours.exists(), "a temporary of a live process is left alone");
    assert!(image.exists() && unrelated.exists());
    assert!(r.temporaries_removed >= 1);
}

#[test]
fn a_changed_blob_fails_its_check_even_after_a_remembered_success() {
    if !can_mount() {
        return;
    }
    let tmp = tempdir();
    let root = tmp.path();
    let dir = layer(root, "l", &[("f", "original")]);
    let mnt = root.join("mnt");
    fs::create_dir(&mnt).unwrap();
    let opts = MountOptions { stub_cache_dir: Some(root.join("cache")), ..MountOptions::read_only() };
    // A success is remembered only for a blob that has not changed for 2 seconds.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let stack = [Layer::from_layer_dir(&dir).unwrap().read_digest_file(&dir).unwrap()];
    assert_eq!(mount_read(&stack, &mnt, &opts, "f"), b"original");
    assert_eq!(mount_read(&stack, &mnt, &opts, "f"), b"original");
    // Same size, one byte different, in place (same inode).
    let blob = dir.join(mount::BLOB_PATH);
    let f = fs::OpenOptions::new().read(true).write(true).open(&blob).unwrap();
    let len = f.metadata().unwrap().len();
    let mut byte = [0u8];
    f.read_exact_at(&mut byte, len - 1).unwrap();
    f.write_all_at(&[byte[0] ^ 0xff], len - 1).unwrap();
    drop(f);
    let err = assert_no_leak(root, "changed blob", || mount::mount(&stack, &mnt, &opts)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Verification, "{err}");
    Snapshot::assert_clean(root);
}

#[test]
fn records_of_checks_serve_later_processes_and_a_changed_blob_still_fails() {
    if !can_mount() {
        return;
    }
    let tmp = tempdir();
    let root = tmp.path();
    let dir = layer(root, "l", &[("f", "original")]);
    let mnt = root.join("mnt");
    fs::create_dir(&mnt).unwrap();
    let cache = root.join("cache");
    let cli = |args: &[&Path]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_composefs-storage"));
        c.env(mount::CACHE_DIR_ENV, &cache);
        for a in args {
            c.arg(a);
        }
        c.output().unwrap()
    };
    std::thread::sleep(std::time::Duration::from_millis(2100));
    for _ in 0..2 {
        let out = cli(&[Path::new("mount"), &dir, &mnt]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(fs::read(mnt.join("f")).unwrap(), b"original");
        assert!(cli(&[Path::new("umount"), &mnt]).status.success());
    }
    // The kernel probes' results are recorded for this boot: later processes skip the probes.
    let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let features = fs::read_to_string(cache.join("kernel-features")).unwrap();
    assert!(features.starts_with(boot.trim()), "{features}");
    if mount::kernel_features().overlay_append {
        assert!(features.contains("overlay_append=1"), "{features}");
    }
    let records: Vec<_> = fs::read_dir(cache.join("verified")).unwrap().collect();
    assert_eq!(records.len(), 1, "one blob checked, one record");
    // A different blob of the same size in place: the record is for another identity.
    let blob = dir.join(mount::BLOB_PATH);
    let f = fs::OpenOptions::new().read(true).write(true).open(&blob).unwrap();
    let mut byte = [0u8];
    f.read_exact_at(&mut byte, 100).unwrap();
    f.write_all_at(&[byte[0] ^ 1], 100).unwrap();
    drop(f);
    let out = cli(&[Path::new("mount"), &dir, &mnt]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refusing to mount"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Zero limits clear the records too.
    mount::cleanup(Some(&cache), CacheLimits { max_images: 0, max_bytes: 0 }).unwrap();
    assert_eq!(fs::read_dir(cache.join("verified")).unwrap().count(), 0);
    Snapshot::assert_clean(root);
}

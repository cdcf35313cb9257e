//! Real mounts of composefs layers and stacks (root + EROFS + overlayfs; skipped otherwise).

mod mount_support;

use std::fs;
use std::path::Path;

use composefs_storage::mount::{self, ErofsBacking, Layer, MountOptions};
use composefs_storage::ErrorKind;
use mount_support::*;

fn noparents_layer(root: &Path) -> Layer {
    Layer::from_layer_dir(&noparents_layer_dir(root, "layer").0).unwrap()
}

#[test]
fn one_composefs_layer_read_only_from_file_and_from_loop() {
    if !can_mount() || !corpus_available() {
        return;
    }
    let tmp = tempdir();
    let root = tmp.path();
    let layer = noparents_layer(root);
    assert!(layer.is_composefs());
    let mnt = root.join("mnt");
    fs::create_dir(&mnt).unwrap();
    for backing in [ErofsBacking::Auto, ErofsBacking::LoopDevice] {
        let opts = MountOptions {
            erofs_backing: backing,
            stub_cache_dir: Some(root.join("cache")),
            ..MountOptions::read_only()
        };
        mount::mount(std::slice::from_ref(&layer), &mnt, &opts).unwrap();
        let guard = MountGuard(mnt.clone());
        assert_eq!(fs::read(mnt.join("usr/lib/x/y/f1")).unwrap().len(), 2);
        assert_eq!(fs::read_link(mnt.join("usr/lib/x/y/s1")).unwrap(), Path::new("f1"));
        assert_eq!(fs::read(mnt.join("opt/z/f2")).unwrap(), fs::read(root.join("tree/opt/z/f2")).unwrap());
        // Read-only.
        assert!(fs::write(mnt.join("new"), b"x").is_err());
        // Only the overlay is mounted: no EROFS mount anywhere in the table.
        let mi = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let ours: Vec<&str> = mi.lines().filter(|l| l.contains(root.to_str().unwrap())).collect();
        assert_eq!(ours.len(), 1, "{ours:#?}");
        assert!(ours[0].contains(" - overlay "), "{}", ours[0]);
        if backing == ErofsBacking::LoopDevice {
            assert_eq!(Snapshot::take(root).loops.len(), 1, "a loop device backs the EROFS while mounted");
        }
        mount::unmount(&mnt).unwrap();
        std::mem::forget(guard);
        Snapshot::assert_clean(root);
    }
}

#[test]
fn errors_leave_nothing_behind() {
    if !can_mount() || !corpus_available() {
        return;
    }
    let tmp = tempdir();
    let root = tmp.path();
    let good = noparents_layer(root);
    let mnt = root.join("mnt");
    fs::create_dir(&mnt).unwrap();
    let Layer::Composefs { blob, objects, .. } = good.clone() else { unreachable!() };
    let cache = root.join("cache");
    let ro = MountOptions { stub_cache_dir: Some(cache.clone()), ..MountOptions::read_only() };

    // A garbage blob under a good one: the good EROFS was already mounted when this fails.
    let bad_blob = root.join("bad.blob");
    fs::write(&bad_blob, vec![0u8; 8192]).unwrap();
    let bad = Layer::Composefs { blob: bad_blob.clone(), objects: objects.clone(), expected_digest: None };
    for backing in [ErofsBacking::Auto, ErofsBacking::LoopDevice] {
        let opts =
            MountOptions { erofs_backing: backing, stub_cache_dir: Some(cache.clone()), ..MountOptions::read_only() };
        let e = assert_no_leak(root, "garbage blob", || mount::mount(&[good.clone(), bad.clone()], &mnt, &opts))
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Format, "{e}");
        assert!(e.to_string().contains("bad.blob"), "{e}");
        Snapshot::assert_clean(root);
    }
    // A blob with a valid header but a corrupt EROFS superblock: the kernel refuses it.
    let mut corrupt = fs::read(&blob).unwrap();
    corrupt[1024..1028].copy_from_slice(b"nope");
    fs::write(&bad_blob, &corrupt).unwrap();
    for backing in [ErofsBacking::Auto, ErofsBacking::LoopDevice] {
        let opts =
            MountOptions { erofs_backing: backing, stub_cache_dir: Some(cache.clone()), ..MountOptions::read_only() };
        let e = assert_no_leak(root, "corrupt superblock", || mount::mount(&[good.clone(), bad.clone()], &mnt, &opts))
            .unwrap_err();
        assert!(e.to_string().contains("bad.blob"), "{e}");
        Snapshot::assert_clean(root);
    }
    // Missing object dir, missing classic tree, missing mountpoint, upper without work dir.
    let no_objects = Layer::Composefs { blob: blob.clone(), objects: root.join("nope"), expected_digest: None };
    let e = assert_no_leak(root, "missing object dir", || mount::mount(&[good.clone(), no_objects], &mnt, &ro))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let no_tree = Layer::Classic { tree: root.join("nope") };
    let e = assert_no_leak(root, "missing tree", || mount::mount(&[good.clone(), no_tree], &mnt, &ro)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let e = assert_no_leak(root, "missing mountpoint", || {
        mount::mount(std::slice::from_ref(&good), &root.join("nope"), &MountOptions::read_only())
    })
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let rw = MountOptions::read_write(root.join("up"), root.join("nowork"));
    fs::create_dir(root.join("up")).unwrap();
    assert!(assert_no_leak(root, "missing work dir", || mount::mount(std::slice::from_ref(&good), &mnt, &rw)).is_err());
    let e = assert_no_leak(root, "no layers", || mount::mount(&[], &mnt, &MountOptions::read_only())).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    // The overlay itself fails (work dir on another filesystem than upper): EROFS already mounted.
    let rw = MountOptions::read_write(root.join("up"), "/dev/shm");
    assert!(assert_no_leak(root, "overlay fails", || mount::mount(std::slice::from_ref(&good), &mnt, &rw)).is_err());
    Snapshot::assert_clean(root);
    // umount refuses what is not an overlay mount.
    let e = assert_no_leak(root, "unmount of a non-mount", || mount::unmount(&mnt)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    let e = assert_no_leak(root, "unmount of /", || mount::unmount(Path::new("/"))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    Snapshot::assert_clean(root);
}

#[test]
fn a_lone_classic_layer_mounts_read_only() {
    if !can_mount() {
        return;
    }
    let tmp = tempdir();
    let root = tmp.path();
    fs::create_dir_all(root.join("layer/diff/d")).unwrap();
    fs::write(root.join("layer/diff/d/f"), b"classic").unwrap();
    let mnt = root.join("mnt");
    fs::create_dir(&mnt).unwrap();
    let layer = Layer::from_layer_dir(&root.join("layer")).unwrap();
    assert!(!layer.is_composefs());
    mount::mount(&[layer], &mnt, &MountOptions::read_only()).unwrap();
    let guard = MountGuard(mnt.clone());
    assert_eq!(fs::read(mnt.join("d/f")).unwrap(), b"classic");
    let names: Vec<_> = fs::read_dir(&mnt).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("d")]);
    assert!(fs::write(mnt.join("x"), b"").is_err());
    mount::unmount(&mnt).unwrap();
    std::mem::forget(guard);
    Snapshot::assert_clean(root);
}

//! The merged view of mounted corpus layers equals `tar -x` of the same layers.

mod mount_support;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use composefs_storage::mount::{self, Layer, MountOptions};
use mount_support::*;

struct Case {
    tar: PathBuf,
    image: &'static str,
}

fn case(name: &'static str, image: &'static str) -> Case {
    Case { tar: corpus_path().join(format!("cstorage/{name}/{name}.tar.zst")), image }
}

/// Builds a composefs layer dir and a classic layer dir for the case; returns (composefs, classic).
fn layers(root: &Path, c: &Case, n: usize) -> (PathBuf, PathBuf) {
    let tree = root.join(format!("tree{n}"));
    extract(&c.tar, &tree);
    let image = corpus_image(c.image, root);
    let cfs = composefs_layer_dir(&root.join(format!("cfs{n}")), &image, &tree);
    let classic = root.join(format!("classic{n}"));
    fs::create_dir(&classic).unwrap();
    extract(&c.tar, &classic.join("diff"));
    (cfs, classic)
}

fn mount_and_compare(root: &Path, dirs: &[&Path], expected: &Path, opts: &MountOptions) -> usize {
    let mnt = root.join("mnt");
    let _ = fs::create_dir(&mnt);
    let stack: Vec<Layer> = dirs.iter().map(|d| Layer::from_layer_dir(d).unwrap()).collect();
    mount::mount(&stack, &mnt, opts).unwrap();
    let guard = MountGuard(mnt.clone());
    let n = compare_trees(expected, &mnt);
    drop(guard);
    Snapshot::assert_clean(root);
    n
}

#[test]
fn single_composefs_layers_match_tar_x() {
    if !can_mount() || !corpus_available() {
        return;
    }
    for (name, image) in [("handmade-pax", "handmade-pax.cfs"), ("handmade-archive", "handmade-archive.cfs")] {
        let tmp = tempdir();
        let root = tmp.path();
        let (cfs, _classic) = layers(root, &case(name, image), 0);
        let n = mount_and_compare(root, &[&cfs], &root.join("tree0"), &MountOptions::read_only());
        assert!(n > 50, "{name}: only {n} paths compared");
    }
}

#[test]
fn a_real_etc_tree_matches_tar_x() {
    // etc-doc-gnu: /etc and /usr/share/doc of a Debian system (1702 entries). Its image is not
    // shipped, so it is written from the c/storage dump by this library's image writer.
    if !can_mount() || !corpus_available() {
        return;
    }
    let tmp = tempdir();
    let root = tmp.path();
    let dir = corpus_path().join("cstorage/etc-doc-gnu");
    let dump = fs::File::open(dir.join("etc-doc-gnu.dump")).unwrap();
    let tree = composefs_storage::image::dump::parse(std::io::BufReader::new(dump), false).unwrap();
    let image = root.join("etc-doc-gnu.cfs");
    let mut out = fs::File::create(&image).unwrap();
    composefs_storage::image::write_image(&tree, &Default::default(), &mut out).unwrap();
    drop(out);
    let extracted = root.join("tree");
    extract(&dir.join("etc-doc-gnu.tar.zst"), &extracted);
    let layer = composefs_layer_dir(&root.join("cfs"), &image, &extracted);
    // Parents the tar does not list: containers/storage synthesises them with mtime 0 (SPEC §4),
    // tar -x with the extraction time.
    for p in ["usr", "usr/share", "usr/share/doc"] {
        set_mtime(&extracted.join(p), 0, 0);
    }
    let n = mount_and_compare(root, &[&layer], &extracted, &MountOptions::read_only());
    assert!(n > 1500, "only {n} paths compared");
}

#[test]
fn mixed_stacks_match_tar_x_of_both_layers() {
    if !can_mount() || !corpus_available() {
        return;
    }
    let tmp = tempdir();
    let root = tmp.path();
    let (cfs_pax, classic_pax) = layers(root, &case("handmade-pax", "handmade-pax.cfs"), 0);
    let (cfs_arc, classic_arc) = layers(root, &case("handmade-archive", "handmade-archive.cfs"), 1);
    // Expected: the lower layer extracted, then the upper over it (overlay and tar agree on
    // replacement when there are no whiteouts).
    let expected = root.join("expected");
    extract(&case("handmade-pax", "").tar, &expected);
    extract(&case("handmade-archive", "").tar, &expected);
    for stack in [[&cfs_arc, &cfs_pax], [&classic_arc, &cfs_pax], [&cfs_arc, &classic_pax]] {
        let dirs: Vec<&Path> = stack.iter().map(|p| p.as_path()).collect();
        for flatten in [true, false] {
            let opts = MountOptions { flatten, stub_cache_dir: Some(root.join("cache")), ..MountOptions::read_only() };
            mount_and_compare(root, &dirs, &expected, &opts);
        }
    }
}

#[test]
fn writes_to_a_read_write_stack_land_in_upper() {
    if !can_mount() || !corpus_available() {
        return;
    }
    let tmp = tempdir();
    let root = tmp.path();
    let (cfs, classic) = layers(root, &case("handmade-archive", "handmade-archive.cfs"), 0);
    let (upper, work, mnt) = (root.join("upper"), root.join("work"), root.join("mnt"));
    for d in [&upper, &work, &mnt] {
        fs::create_dir(d).unwrap();
    }
    let stack = [Layer::from_layer_dir(&cfs).unwrap(), Layer::from_layer_dir(&classic).unwrap()];
    mount::mount(&stack, &mnt, &MountOptions::read_write(&upper, &work)).unwrap();
    let guard = MountGuard(mnt.clone());
    fs::write(mnt.join("new-file"), b"hello").unwrap();
    fs::create_dir(mnt.join("new-dir")).unwrap();
    // Modify a file that lives in the composefs layer: copy-up brings its data from the object.
    let victim = walk(&mnt)
        .into_iter()
        .find(|p| fs::symlink_metadata(p).map(|m| m.is_file() && m.len() > 100 && m.nlink() == 1).unwrap_or(false))
        .unwrap();
    let rel = victim.strip_prefix(&mnt).unwrap().to_path_buf();
    let mut data = fs::read(&victim).unwrap();
    data.extend_from_slice(b"appended");
    fs::write(&victim, &data).unwrap();
    mount::unmount(&mnt).unwrap();
    std::mem::forget(guard);
    Snapshot::assert_clean(root);
    assert_eq!(fs::read(upper.join("new-file")).unwrap(), b"hello");
    assert!(upper.join("new-dir").is_dir());
    assert_eq!(fs::read(upper.join(&rel)).unwrap(), data, "{}", rel.display());
    // The lower layers are untouched.
    assert!(!classic.join("diff/new-file").exists());
    assert_ne!(fs::read(root.join("tree0").join(&rel)).unwrap(), data);
}

fn set_mtime(p: &Path, sec: i64, nsec: i64) {
    let t = rustix::fs::Timespec { tv_sec: sec, tv_nsec: nsec as _ };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        p,
        &rustix::fs::Timestamps { last_access: t, last_modification: t },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

#[test]
fn whiteouts_and_opaque_dirs_of_an_upper_layer_hide_composefs_content() {
    if !can_mount() || !corpus_available() {
        return;
    }
    let tmp = tempdir();
    let root = tmp.path();
    let (cfs, _classic) = layers(root, &case("handmade-pax", "handmade-pax.cfs"), 0);
    let pristine = root.join("tree0");
    // An upper classic layer (overlay's own whiteout format): chr 0:0 `awkward/-`, opaque
    // `opaque-dir/` holding only `new`.
    let upper = root.join("upper-layer");
    let diff = upper.join("diff");
    fs::create_dir_all(diff.join("awkward")).unwrap();
    fs::create_dir_all(diff.join("opaque-dir")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        diff.join("awkward/-"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    rustix::fs::setxattr(diff.join("opaque-dir"), "trusted.overlay.opaque", b"y", rustix::fs::XattrFlags::empty())
        .unwrap();
    fs::write(diff.join("opaque-dir/new"), b"new").unwrap();
    // Expected: the lower tree with the same changes applied.
    let expected = root.join("expected");
    extract(&case("handmade-pax", "").tar, &expected);
    fs::remove_file(expected.join("awkward/-")).unwrap();
    fs::remove_dir_all(expected.join("opaque-dir")).unwrap();
    fs::create_dir(expected.join("opaque-dir")).unwrap();
    fs::write(expected.join("opaque-dir/new"), b"new").unwrap();
    // Directory attributes: the upper's win in a merged dir, so make them agree.
    let aw = fs::symlink_metadata(pristine.join("awkward")).unwrap();
    for p in [expected.join("awkward"), diff.join("awkward")] {
        set_mtime(&p, aw.mtime(), aw.mtime_nsec());
    }
    for p in [
        expected.join("opaque-dir/new"),
        diff.join("opaque-dir/new"),
        expected.join("opaque-dir"),
        diff.join("opaque-dir"),
    ] {
        set_mtime(&p, 1_700_000_000, 5);
    }
    assert!(pristine.join("awkward/-").exists() && pristine.join("opaque-dir/kept").exists());
    mount_and_compare(root, &[&upper, &cfs], &expected, &MountOptions::read_only());
}

#[test]
fn root_whiteout_stubs_of_an_upper_image_hide_nothing() {
    // SPEC §10.2: every mkcomposefs image root has chr 0:0 stubs `00`..`ff`; in a stack they
    // must not hide a lower layer's top-level two-hex-digit names.
    if !can_mount() || !corpus_available() {
        return;
    }
    let tmp = tempdir();
    let root = tmp.path();
    let (upper, _, _) = noparents_layer_dir(root, "cfs");
    let lower = root.join("classic");
    fs::create_dir_all(lower.join("diff/db")).unwrap();
    fs::write(lower.join("diff/db/data"), b"db").unwrap();
    fs::write(lower.join("diff/0a"), b"0a").unwrap();
    let mnt = root.join("mnt");
    fs::create_dir(&mnt).unwrap();
    let stack = [Layer::from_layer_dir(&upper).unwrap(), Layer::from_layer_dir(&lower).unwrap()];
    let opts = MountOptions { stub_cache_dir: Some(root.join("cache")), ..MountOptions::read_only() };
    mount::mount(&stack, &mnt, &opts).unwrap();
    let guard = MountGuard(mnt.clone());
    assert_eq!(fs::read(mnt.join("db/data")).unwrap(), b"db");
    assert_eq!(fs::read(mnt.join("0a")).unwrap(), b"0a");
    assert!(mnt.join("usr/lib/x/y/f1").is_file());
    assert!(!mnt.join("00").exists(), "stubs never show as entries");
    drop(guard);
    Snapshot::assert_clean(root);
}

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
    Case {
        tar: Path::new(CORPUS).join(format!("cstorage/{name}/{name}.tar.zst")),
        image,
    }
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
    let stack: Vec<Layer> = dirs
        .iter()
        .map(|d| Layer::from_layer_dir(d).unwrap())
        .collect();
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
    for (name, image) in [
        ("handmade-pax", "handmade-pax.cfs"),
        ("handmade-archive", "handmade-archive.cfs"),
    ] {
        let tmp = tempdir();
        let root = tmp.path();
        let (cfs, _classic) = layers(root, &case(name, image), 0);
        let n = mount_and_compare(
            root,
            &[&cfs],
            &root.join("tree0"),
            &MountOptions::read_only(),
        );
        assert!(n > 50, "{name}: only {n} paths compared");
    }
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
    for stack in [
        [&cfs_arc, &cfs_pax],
        [&classic_arc, &cfs_pax],
        [&cfs_arc, &classic_pax],
    ] {
        let dirs: Vec<&Path> = stack.iter().map(|p| p.as_path()).collect();
        mount_and_compare(root, &dirs, &expected, &MountOptions::read_only());
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
    let stack = [
        Layer::from_layer_dir(&cfs).unwrap(),
        Layer::from_layer_dir(&classic).unwrap(),
    ];
    mount::mount(&stack, &mnt, &MountOptions::read_write(&upper, &work)).unwrap();
    let guard = MountGuard(mnt.clone());
    fs::write(mnt.join("new-file"), b"hello").unwrap();
    fs::create_dir(mnt.join("new-dir")).unwrap();
    // Modify a file that lives in the composefs layer: copy-up brings its data from the object.
    let victim = walk(&mnt)
        .into_iter()
        .find(|p| {
            fs::symlink_metadata(p)
                .map(|m| m.is_file() && m.len() > 100 && m.nlink() == 1)
                .unwrap_or(false)
        })
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
    assert_eq!(
        fs::read(upper.join(&rel)).unwrap(),
        data,
        "{}",
        rel.display()
    );
    // The lower layers are untouched.
    assert!(!classic.join("diff/new-file").exists());
    assert_ne!(fs::read(root.join("tree0").join(&rel)).unwrap(), data);
}

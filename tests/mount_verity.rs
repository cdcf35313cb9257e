//! Verified mounts: the blob's fs-verity digest is checked before mounting; verity policies.

mod mount_support;

use std::fs;
use std::path::{Path, PathBuf};

use composefs_storage::mount::{self, parse_digest, Layer, MountOptions, VerityPolicy};
use composefs_storage::ErrorKind;
use mount_support::*;

/// The `image_fsverity` column of the corpus for `image` (composefs-info measure-file).
fn expected_digest(image: &str) -> [u8; 32] {
    let tsv = fs::read_to_string(corpus_path().join("cstorage-images/EXPECTED.tsv")).unwrap();
    let dump = image.replace(".cfs", ".dump");
    let line = tsv.lines().find(|l| l.split('\t').next().unwrap().ends_with(&format!("/{dump}"))).unwrap();
    parse_digest(line.split('\t').nth(5).unwrap()).unwrap()
}

fn setup(root: &Path) -> (PathBuf, Layer) {
    let tree = root.join("tree");
    extract(&corpus_path().join("cstorage/handmade-archive/handmade-archive.tar.zst"), &tree);
    let image = corpus_image("handmade-archive.with-verity.cfs", root);
    let dir = composefs_layer_dir(&root.join("layer"), &image, &tree);
    let mnt = root.join("mnt");
    fs::create_dir(&mnt).unwrap();
    let layer = Layer::from_layer_dir(&dir).unwrap();
    (mnt, layer)
}

fn some_external_file(tree: &Path) -> PathBuf {
    walk(tree)
        .into_iter()
        .find(|p| fs::symlink_metadata(p).map(|m| m.is_file() && m.len() > 0).unwrap_or(false))
        .unwrap()
        .strip_prefix(tree)
        .unwrap()
        .to_path_buf()
}

#[test]
fn blob_digest_is_checked_before_mounting() {
    if !can_mount() || !corpus_available() {
        return;
    }
    let tmp = tempdir();
    let root = tmp.path();
    let (mnt, layer) = setup(root);
    let good = expected_digest("handmade-archive.with-verity.cfs");
    let rel = some_external_file(&root.join("tree"));

    // Right digest: mounts, and reads (no fs-verity on this filesystem: if-available adds nothing).
    mount::mount(&[layer.clone().with_expected_digest(good)], &mnt, &MountOptions::read_only()).unwrap();
    let guard = MountGuard(mnt.clone());
    assert_eq!(fs::read(mnt.join(&rel)).unwrap(), fs::read(root.join("tree").join(&rel)).unwrap());
    drop(guard);
    Snapshot::assert_clean(root);

    // Wrong digest: refused with a clear error, nothing mounted.
    let mut bad = good;
    bad[0] ^= 1;
    let e = assert_no_leak(root, "wrong digest", || {
        mount::mount(&[layer.clone().with_expected_digest(bad)], &mnt, &MountOptions::read_only())
    })
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Verification);
    let msg = e.to_string();
    assert!(
        msg.contains("composefs.blob") && msg.contains(&mount::hex(&bad)) && msg.contains(&mount::hex(&good)),
        "{msg}"
    );
    Snapshot::assert_clean(root);

    // A blob changed by one byte no longer matches.
    let Layer::Composefs { blob, .. } = &layer else { unreachable!() };
    let mut data = fs::read(blob).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    fs::write(blob, &data).unwrap();
    let e = assert_no_leak(root, "changed blob", || {
        mount::mount(&[layer.clone().with_expected_digest(good)], &mnt, &MountOptions::read_only())
    })
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Verification, "{e}");
    Snapshot::assert_clean(root);
}

#[test]
fn require_policy_needs_digests_and_sets_verity_require() {
    if !can_mount() || !corpus_available() {
        return;
    }
    let tmp = tempdir();
    let root = tmp.path();
    let (mnt, layer) = setup(root);
    let good = expected_digest("handmade-archive.with-verity.cfs");
    let require = MountOptions { verity: VerityPolicy::Require, ..MountOptions::read_only() };
    let e =
        assert_no_leak(root, "require without digest", || mount::mount(std::slice::from_ref(&layer), &mnt, &require))
            .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Verification);
    assert!(e.to_string().contains("require"), "{e}");
    Snapshot::assert_clean(root);

    mount::mount(&[layer.clone().with_expected_digest(good)], &mnt, &require).unwrap();
    let guard = MountGuard(mnt.clone());
    let mi = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = mi.lines().find(|l| l.contains(mnt.to_str().unwrap())).unwrap();
    assert!(line.contains("verity=require"), "{line}");
    // The objects here have no fs-verity: the kernel refuses their content (SPEC §6.4).
    let rel = some_external_file(&root.join("tree"));
    let err = fs::read(mnt.join(&rel)).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{}", rel.display());
    drop(guard);
    Snapshot::assert_clean(root);

    // Off: no verity option at all.
    let off = MountOptions { verity: VerityPolicy::Off, ..MountOptions::read_only() };
    mount::mount(&[layer], &mnt, &off).unwrap();
    let guard = MountGuard(mnt.clone());
    let mi = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mi.lines().find(|l| l.contains(mnt.to_str().unwrap())).unwrap().contains("verity="));
    drop(guard);
    Snapshot::assert_clean(root);
}

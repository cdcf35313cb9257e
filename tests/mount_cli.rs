//! `composefs-storage mount` / `umount` end to end, with the digest file beside the blob.

mod mount_support;

use std::fs;
use std::process::Command;

use mount_support::*;

fn cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_composefs-storage"))
}

#[test]
fn cli_mounts_checks_digest_file_and_unmounts() {
    if !can_mount() || !corpus_available() {
        return;
    }
    let tmp = tempdir();
    let root = tmp.path();
    let (cfs, _, image) = noparents_layer_dir(root, "cfs");
    let classic = root.join("classic");
    fs::create_dir_all(classic.join("diff/etc")).unwrap();
    fs::write(classic.join("diff/etc/hostname"), b"box\n").unwrap();
    let (mnt, upper, work) = (root.join("mnt"), root.join("upper"), root.join("work"));
    for d in [&mnt, &upper, &work] {
        fs::create_dir(d).unwrap();
    }
    let digest = composefs_storage::mount::blob_digest(&fs::File::open(&image).unwrap(), &image).unwrap();
    let digest_file = cfs.join(composefs_storage::mount::BLOB_DIGEST_PATH);
    fs::write(&digest_file, format!("{}\n", composefs_storage::mount::hex(&digest))).unwrap();

    let out = cli()
        .args(["mount", "--rw", "--upper"])
        .arg(&upper)
        .arg("--work")
        .arg(&work)
        .arg(&classic)
        .arg(&cfs)
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let guard = MountGuard(mnt.clone());
    assert_eq!(fs::read(mnt.join("etc/hostname")).unwrap(), b"box\n");
    assert!(mnt.join("usr/lib/x/y/f1").is_file());
    fs::write(mnt.join("written"), b"w").unwrap();
    let out = cli().arg("umount").arg(&mnt).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::mem::forget(guard);
    assert_eq!(fs::read(upper.join("written")).unwrap(), b"w");
    Snapshot::assert_clean(root);

    // A wrong digest beside the blob: refused (exit 1) unless --no-blob-check.
    fs::write(&digest_file, "00".repeat(32)).unwrap();
    let out = cli().arg("mount").arg(&cfs).arg(&mnt).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("fs-verity digest") && err.contains("refusing"), "{err}");
    Snapshot::assert_clean(root);
    let out = cli().args(["mount", "--no-blob-check"]).arg(&cfs).arg(&mnt).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let guard = MountGuard(mnt.clone());
    assert!(cli().arg("umount").arg(&mnt).status().unwrap().success());
    std::mem::forget(guard);
    Snapshot::assert_clean(root);

    // Usage errors: exit 2.
    let out = cli().args(["mount", "--rw"]).arg(&cfs).arg(&mnt).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = cli().args(["mount", "--verity", "sometimes"]).arg(&cfs).arg(&mnt).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    // umount of something that is not our overlay: refused.
    let out = cli().arg("umount").arg(root).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

//! `composefs-storage demo` end to end: it converts its three layers, reports dedup, mounts the
//! stack as root (checking the whiteout and the opaque dir in the merged view), and cleans up.

use std::process::Command;

fn demo(args: &[&str], workdir: &std::path::Path) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_composefs-storage"))
        .arg("demo")
        .args(args)
        .arg("--workdir")
        .arg(workdir)
        .env("COMPOSEFS_STORAGE_CACHE_DIR", workdir.join("cache"))
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn can_mount() -> bool {
    let has = |n: &str| rustix::mount::fsopen(n, rustix::mount::FsOpenFlags::FSOPEN_CLOEXEC).is_ok();
    rustix::process::geteuid().is_root() && has("erofs") && has("overlay")
}

#[test]
fn demo_runs_converts_dedups_mounts_and_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, out, err) = demo(&[], tmp.path());
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    // Layer 2 reuses layer 1's 48 KiB binary, layer 3 its 12 KiB README.
    assert!(out.contains("layer 2 (zstd"), "{out}");
    assert!(out.contains("1 reused from lower layers (48.0 KiB)"), "{out}");
    assert!(out.contains("1 reused from lower layers (12.0 KiB)"), "{out}");
    assert!(out.contains("60.0 KiB of file content reused"), "{out}");
    assert_eq!(out.matches("composefs.blob ").count(), 3, "{out}");
    if can_mount() {
        assert!(out.contains("/var/cache/app   fresh.bin\n"), "{out}");
        assert!(out.contains("/tmp             (empty)"), "{out}");
        assert!(out.contains("ok: the whiteout hid tmp/build.log"), "{out}");
        assert!(out.contains("unmounted"), "{out}");
    } else {
        eprintln!("SKIP mount part: not root or no EROFS/overlayfs");
        assert!(out.contains("skipped:"), "{out}");
    }
    // Nothing is left behind: no store, and no mount under the work dir.
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("composefs-storage-demo."))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(tmp.path().to_str().unwrap()), "{mounts}");
}

#[test]
fn demo_keep_leaves_inspectable_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, out, err) = demo(&["--keep", "--no-mount"], tmp.path());
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("skipped: --no-mount"), "{out}");
    let store = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().starts_with("composefs-storage-demo."))
        .expect("kept store")
        .path();
    for layer in ["layer1", "layer2", "layer3"] {
        let o = Command::new(env!("CARGO_BIN_EXE_composefs-storage"))
            .args(["inspect", "--verify", "--deep"])
            .arg(store.join(layer))
            .output()
            .unwrap();
        assert!(o.status.success(), "{layer}: {}", String::from_utf8_lossy(&o.stdout));
    }
}

#[test]
fn demo_as_an_unprivileged_user_converts_and_says_why_it_skips() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIP: needs root to switch to an unprivileged user");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let bin = tmp.path().join("composefs-storage");
    std::fs::copy(env!("CARGO_BIN_EXE_composefs-storage"), &bin).unwrap();
    let Ok(o) = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args(["demo", "--workdir"])
        .arg(tmp.path())
        .output()
    else {
        eprintln!("SKIP: no setpriv(1)");
        return;
    };
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("skipped: mounting needs root"), "{out}");
    assert_eq!(out.matches("composefs.blob ").count(), 3, "{out}");
    let left = std::fs::read_dir(tmp.path()).unwrap().filter_map(|e| e.ok()).count();
    assert_eq!(left, 1, "only the copied binary is left");
}

//! Crash consistency of mounting (issue 9): the CLI is killed (SIGKILL) at random points of mount
//! sequences, many times, with the kernel's modern paths and with the fallbacks of older kernels
//! (loop devices, EROFS attached under a private temp dir, mount(2) with an option string).
//! After each kill, a stack the killed process finished mounting is unmounted as a user would,
//! then `composefs-storage mount-cleanup` runs; nothing may be left: no mount under the test dir,
//! no loop device backed by a file in it, no private temp dir, no unfinished derived image.
//! Derived images are rebuilt often (a fresh cache dir every few rounds), so kills also land
//! while they are written.

mod mount_support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mount_support::*;

fn cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_composefs-storage"))
}

fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// A layer tar with `files` (path, content) and the dirs they need.
fn layer_tar(root: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let tree = root.join(format!("{name}-tree"));
    for (p, c) in files {
        let p = tree.join(p);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, c).unwrap();
    }
    let tar = root.join(format!("{name}.tar"));
    let ok = Command::new("tar")
        .args(["--numeric-owner", "--sort=name", "-cf"])
        .arg(&tar)
        .arg("-C")
        .arg(&tree)
        .arg(".")
        .status()
        .unwrap()
        .success();
    assert!(ok);
    tar
}

fn convert(tar: &Path, dir: &Path) {
    let out = cli().arg("convert").arg(tar).arg(dir).output().unwrap();
    assert!(out.status.success(), "convert: {}", String::from_utf8_lossy(&out.stderr));
}

/// Whether `mnt` is an overlay mount root (a mount the killed process completed).
fn mounted(mnt: &Path) -> bool {
    let mnt = mnt.to_str().unwrap();
    fs::read_to_string("/proc/self/mountinfo").unwrap().lines().any(|l| l.split(' ').nth(4) == Some(mnt))
}

/// What a killed mount sequence could leave that is not a mount or loop device.
fn leftover_files(tmp: &Path, cache: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for dir in [tmp, cache] {
        if let Ok(rd) = fs::read_dir(dir) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with("composefs-storage-") || n.starts_with(".tmp-") {
                    out.push(format!("{}/{n}", dir.display()));
                }
            }
        }
    }
    out
}

#[test]
fn killed_mount_sequences_leave_nothing_after_cleanup() {
    if !can_mount() {
        return;
    }
    let scratch = tempdir();
    let root = scratch.path();
    // Three composefs layers and a classic one between them. The classic layer's top-level `db`
    // collides with a root whiteout stub of the composefs layer above it, so that layer is
    // mounted from a stub-less copy: two derived images per stack.
    let mut cfs = Vec::new();
    for (i, files) in [
        vec![("usr/lib/a", "a0"), ("etc/os-release", "v0")],
        vec![("usr/lib/b", "b1"), ("etc/os-release", "v1")],
        vec![("usr/lib/c", "c2"), ("srv/x", "x2")],
    ]
    .iter()
    .enumerate()
    {
        let dir = root.join(format!("cfs{i}"));
        convert(&layer_tar(root, &format!("l{i}"), files), &dir);
        cfs.push(dir);
    }
    let classic = root.join("classic");
    fs::create_dir_all(classic.join("diff/db")).unwrap();
    fs::write(classic.join("diff/db/data"), b"classic").unwrap();
    let stack = [&cfs[2], &classic, &cfs[1], &cfs[0]];
    let mnt = root.join("mnt");
    fs::create_dir(&mnt).unwrap();
    let tmp = root.join("tmp"); // TMPDIR of the mounting and the cleaning processes
    fs::create_dir(&tmp).unwrap();

    let mount_cmd = |cache: &Path, extra: &[&str]| {
        let mut c = cli();
        c.env("TMPDIR", &tmp).env(composefs_storage::mount::CACHE_DIR_ENV, cache).arg("mount").args(extra);
        c.args(stack).arg(&mnt).stdout(Stdio::null()).stderr(Stdio::piped());
        c
    };
    let cleanup = |cache: &Path| {
        let out = cli()
            .env("TMPDIR", &tmp)
            .args(["mount-cleanup", "--max-images", "4", "--cache-dir"])
            .arg(cache)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount-cleanup: {}", String::from_utf8_lossy(&out.stderr));
    };
    let check = |what: &str| {
        let out = cli().arg("umount").arg(&mnt).output().unwrap();
        let _ = out; // only a completed mount is there to unmount
        assert!(!mounted(&mnt), "{what}: still mounted");
    };

    let modes: [(&str, &[&str]); 3] = [
        ("modern kernel", &[]),
        ("loop device", &["--erofs-backing", "loop"]),
        ("old kernel", &["--pretend-old-kernel"]),
    ];
    let mut seed = 0x2545f4914f6cdd1du64;
    let (mut kills, mut completed, mut cleaned, mut stale) = (0, 0, 0, 0);
    let rounds: u64 = std::env::var("CFS_CRASH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    for (mode, extra) in modes {
        // One full sequence first: it must work, and its duration bounds the kill points.
        let cache0 = root.join(format!("cache-{}", mode.replace(' ', "-")));
        let start = Instant::now();
        let out = mount_cmd(&cache0, extra).output().unwrap();
        let full = start.elapsed();
        assert!(out.status.success(), "{mode}: mount: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(fs::read(mnt.join("db/data")).unwrap(), b"classic", "{mode}: the stub-less copy shows db/");
        assert_eq!(fs::read(mnt.join("etc/os-release")).unwrap(), b"v1");
        let st = cli().arg("umount").arg(&mnt).status().unwrap();
        assert!(st.success());
        // Kill points spread over a warm sequence (derived images cached), the common case.
        let _ = full;
        let start = Instant::now();
        assert!(mount_cmd(&cache0, extra).status().unwrap().success());
        let warm = start.elapsed();
        assert!(cli().arg("umount").arg(&mnt).status().unwrap().success());
        let span = (warm.as_micros() as u64).max(1000);
        for round in 0..rounds {
            // A fresh cache every 3rd round: the derived images are built again.
            let cache = if round % 3 == 0 { root.join(format!("cache-{mode}-{round}")) } else { cache0.clone() };
            let mut child = mount_cmd(&cache, extra).spawn().unwrap();
            std::thread::sleep(Duration::from_micros(next(&mut seed) % span));
            let finished = child.try_wait().unwrap().is_some();
            let _ = child.kill();
            child.wait().unwrap();
            if !finished {
                kills += 1;
            }
            if mounted(&mnt) {
                completed += 1;
                check(&format!("{mode} round {round}"));
            }
            if extra.is_empty() || extra[0] == "--erofs-backing" {
                // With detached layers a kill leaves no mount and no loop device even before the
                // cleanup: the process's fds were all that held them.
                Snapshot::assert_clean(root);
            }
            let snap = Snapshot::take(root);
            stale += snap.mounts.len() + snap.loops.len();
            let before = leftover_files(&tmp, &cache).len();
            cleanup(&cache);
            cleaned += before;
            let left = leftover_files(&tmp, &cache);
            assert!(left.is_empty(), "{mode} round {round}: left after cleanup: {left:?}");
            Snapshot::assert_clean(root);
        }
        // The stack still mounts, and shows what it must.
        let out = mount_cmd(&cache0, extra).output().unwrap();
        assert!(out.status.success(), "{mode}: mount after the kills: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(fs::read(mnt.join("usr/lib/c")).unwrap(), b"c2");
        assert_eq!(fs::read(mnt.join("usr/lib/a")).unwrap(), b"a0");
        check(mode);
        Snapshot::assert_clean(root);
    }
    println!(
        "killed {kills} mount sequences ({completed} mounts had completed before the kill); before cleanup: \
         {stale} stale mounts or loop devices, {cleaned} temp dirs or unfinished images"
    );
    assert!(kills >= rounds as usize, "too few kills landed mid-sequence: {kills}");
}

/// What a process killed while its EROFS layers were attached under its private temp dir leaves
/// (kernels without detached layers), made by hand so that it is there every time: the cleanup
/// detaches the mounts and removes the dir. A dir whose process is alive is left alone.
#[test]
fn cleanup_detaches_mounts_left_in_a_dead_process_temp_dir() {
    if !can_mount() {
        return;
    }
    let scratch = tempdir();
    let tmp = scratch.path().join("tmp");
    fs::create_dir(&tmp).unwrap();
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let abandoned = tmp.join(format!("composefs-storage-layers-{dead}-0-1f"));
    let alive = tmp.join(format!("composefs-storage-layers-{}-0-2f", std::process::id()));
    for dir in [&abandoned, &alive] {
        fs::create_dir_all(dir.join("0")).unwrap();
        rustix::mount::mount("tmpfs", dir.join("0"), "tmpfs", rustix::mount::MountFlags::empty(), c"size=4k").unwrap();
    }
    let _guard = MountGuard(alive.join("0"));
    let out = cli()
        .env("TMPDIR", &tmp)
        .args(["mount-cleanup", "--cache-dir"])
        .arg(scratch.path().join("cache"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("detached 1 stale mounts"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!abandoned.exists());
    assert!(alive.join("0").exists());
    let mi = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mi.contains(abandoned.to_str().unwrap()));
    assert!(mi.contains(alive.to_str().unwrap()));
}

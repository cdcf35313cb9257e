//! Shared helpers for the mount tests: skip checks, leak snapshots, object dirs from tars, and a
//! merged-view comparison against `tar -x`.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

#[path = "../support/mod.rs"]
mod corpus_support;

/// The corpus (see tests/support); a path that does not exist when there is none, so that the
/// corpus check below skips.
pub fn corpus_path() -> PathBuf {
    corpus_support::corpus().unwrap_or_else(|| PathBuf::from("/nonexistent/corpus"))
}

static CACHE_ENV: std::sync::Once = std::sync::Once::new();

/// Whether this process can run mount tests; prints why not. Also points the derived-image
/// cache of the library (and of CLI children) into the target dir, away from /run.
pub fn can_mount() -> bool {
    CACHE_ENV.call_once(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mount-image-cache");
        std::env::set_var(composefs_storage::mount::CACHE_DIR_ENV, dir);
    });
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIP: mount tests need root");
        return false;
    }
    for fs in ["erofs", "overlay"] {
        if let Err(e) = rustix::mount::fsopen(fs, rustix::mount::FsOpenFlags::FSOPEN_CLOEXEC) {
            eprintln!("SKIP: kernel cannot fsopen({fs:?}): {e}");
            return false;
        }
    }
    true
}

pub fn corpus_available() -> bool {
    let ok = corpus_path().join("cstorage-images").is_dir();
    if !ok {
        eprintln!("SKIP: corpus not found");
    }
    ok
}

/// Mounts and loop devices that mention `root`: compare before/after to catch leaks.
#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub mounts: Vec<String>,
    pub loops: Vec<String>,
}

impl Snapshot {
    pub fn take(root: &Path) -> Snapshot {
        let root = root.to_string_lossy().into_owned();
        let mounts = fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&root) || l.contains("composefs-storage-layers"))
            .map(str::to_string)
            .collect();
        let mut loops = Vec::new();
        if let Ok(rd) = fs::read_dir("/sys/block") {
            for e in rd.flatten() {
                if let Ok(b) = fs::read_to_string(e.path().join("loop/backing_file")) {
                    if b.contains(&root) {
                        loops.push(format!("{}: {}", e.file_name().to_string_lossy(), b.trim()));
                    }
                }
            }
        }
        loops.sort();
        Snapshot { mounts, loops }
    }

    /// Loop autoclear may finish just after the last user lets go: wait (bounded) for it.
    pub fn assert_clean(root: &Path) {
        let mut s = Snapshot::take(root);
        for _ in 0..50 {
            if s.mounts.is_empty() && s.loops.is_empty() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
            s = Snapshot::take(root);
        }
        panic!("left behind under {}: {s:?}", root.display());
    }
}

/// The fds of this process an operation on `root` could leak: anything under `root`, loop
/// devices, fs contexts and detached mounts (which read as `/`), by target (numbers differ).
pub fn fd_targets(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(t) = fs::read_link(e.path()) else { continue };
        let t = t.to_string_lossy().into_owned();
        if t.starts_with(root.to_str().unwrap()) || t == "/" || t.contains("fscontext") || t.starts_with("/dev/loop") {
            out.push(t);
        }
    }
    out.sort();
    out
}

/// Runs `op`, an operation expected to fail, and asserts that it left nothing behind: the same
/// mounts and loop devices under `root`, and the same fds (see [`fd_targets`]) as before. EROFS
/// mounts the library keeps for reuse are released first (a cache, not a leak). Other tests of
/// the same binary run in parallel threads, so only something new that persists counts.
pub fn assert_no_leak<T>(root: &Path, what: &str, op: impl FnOnce() -> T) -> T {
    composefs_storage::mount::release_kept_mounts();
    let (mounts, fds) = (Snapshot::take(root), fd_targets(root));
    let r = op();
    for i in 0.. {
        composefs_storage::mount::release_kept_mounts();
        let (m, f) = (Snapshot::take(root), fd_targets(root));
        // Nothing new (something of another test present before may be gone by now).
        let new = |after: &[String], before: &[String]| {
            let mut before = before.to_vec();
            after.iter().any(|x| match before.iter().position(|y| y == x) {
                Some(i) => {
                    before.swap_remove(i);
                    false
                }
                None => true,
            })
        };
        if !new(&m.mounts, &mounts.mounts) && !new(&m.loops, &mounts.loops) && !new(&f, &fds) {
            break;
        }
        assert!(i < 50, "{what}: left behind\n  mounts/loops {m:?}\n  was {mounts:?}\n  fds {f:?}\n  was {fds:?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    r
}

/// Unmounts on drop, so a failing test leaves nothing mounted.
pub struct MountGuard(pub PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

/// A fresh temp dir for one test.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("cfs-mount-test-").tempdir().unwrap()
}

/// `tar -x` of `tar` (plain or .zst) into `dest`, as root with ownership, modes and xattrs.
pub fn extract(tar: &Path, dest: &Path) {
    fs::create_dir_all(dest).unwrap();
    let mut cmd = Command::new("tar");
    cmd.args(["-x", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-p", "--same-owner"]);
    if tar.extension() == Some(OsStr::new("zst")) {
        cmd.arg("--zstd");
    }
    let out = cmd.arg("-f").arg(tar).arg("-C").arg(dest).output().unwrap();
    assert!(out.status.success(), "tar -x {}: {}", tar.display(), String::from_utf8_lossy(&out.stderr));
}

/// The flat object dir of a tree: each regular file's content at `ab/cdef…` (its sha256).
pub fn build_objects(tree: &Path, objects: &Path) {
    fs::create_dir_all(objects).unwrap();
    for path in walk(tree) {
        let m = fs::symlink_metadata(&path).unwrap();
        if !m.is_file() {
            continue;
        }
        let mut h = Sha256::new();
        let mut f = fs::File::open(&path).unwrap();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = f.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        let dir = objects.join(&hex[..2]);
        fs::create_dir_all(&dir).unwrap();
        let obj = dir.join(&hex[2..]);
        if !obj.exists() {
            fs::copy(&path, &obj).unwrap();
        }
    }
}

/// Every path under `root` (not `root` itself), depth first.
pub fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut names: Vec<_> = fs::read_dir(&d).unwrap().map(|e| e.unwrap().path()).collect();
        names.sort();
        for p in names {
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

fn xattrs(path: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut names = vec![0u8; 65536];
    let n = rustix::fs::llistxattr(path, &mut names).unwrap();
    let mut out = BTreeMap::new();
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        // overlayfs's own xattrs are not part of the image's content.
        if name.starts_with(b"trusted.overlay.") {
            continue;
        }
        let mut val = vec![0u8; 65536];
        let cname = std::ffi::CString::new(name).unwrap();
        let m = rustix::fs::lgetxattr(path, cname.as_c_str(), &mut val).unwrap();
        out.insert(name.to_vec(), val[..m].to_vec());
    }
    out
}

fn same_content(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (fs::File::open(a).unwrap(), fs::File::open(b).unwrap());
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let na = read_full(&mut fa, &mut ba);
        let nb = read_full(&mut fb, &mut bb);
        if na != nb || ba[..na] != bb[..nb] {
            return false;
        }
        if na == 0 {
            return true;
        }
    }
}

fn read_full(f: &mut fs::File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]).unwrap() {
            0 => break,
            k => n += k,
        }
    }
    n
}

/// Compares every path of `expected` (a `tar -x` tree) with `actual` (a mounted view): type,
/// mode, uid/gid, mtime, xattrs (outside `trusted.overlay.*`), symlink target, rdev, nlink,
/// content, and that both have the same set of names. Returns the number of paths compared.
pub fn compare_trees(expected: &Path, actual: &Path) -> usize {
    let rel = |root: &Path, p: &Path| p.strip_prefix(root).unwrap().to_path_buf();
    let exp: BTreeSet<PathBuf> = walk(expected).iter().map(|p| rel(expected, p)).collect();
    let act: BTreeSet<PathBuf> = walk(actual).iter().map(|p| rel(actual, p)).collect();
    let missing: Vec<_> = exp.difference(&act).collect();
    let extra: Vec<_> = act.difference(&exp).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing from mount: {missing:?}\nextra in mount: {extra:?}");
    let mut errors = Vec::new();
    for r in std::iter::once(PathBuf::new()).chain(exp.iter().cloned()) {
        let (e, a) = (expected.join(&r), actual.join(&r));
        let (me, ma) = (fs::symlink_metadata(&e).unwrap(), fs::symlink_metadata(&a).unwrap());
        // `tar -x -C dest` does not apply the archive's `./` attributes to dest's mtime, so the
        // root's mtime is not comparable; directory nlink is the filesystem's own business.
        let is_root = r.as_os_str().is_empty();
        let fields = |m: &fs::Metadata| {
            let nlink = if m.is_dir() { 0 } else { m.nlink() };
            let mtime = if is_root { (0, 0) } else { (m.mtime(), m.mtime_nsec()) };
            (m.mode(), m.uid(), m.gid(), mtime, m.rdev(), nlink)
        };
        if fields(&me) != fields(&ma) {
            errors.push(format!(
                "{}: (mode uid gid mtime rdev nlink) {:?} != {:?}",
                r.display(),
                fields(&me),
                fields(&ma)
            ));
        }
        if me.is_dir() && r.as_os_str().is_empty() {
            continue; // the root's xattrs: overlay adds none visible, tar sets none
        }
        if xattrs(&e) != xattrs(&a) {
            errors.push(format!("{}: xattrs {:?} != {:?}", r.display(), xattrs(&e), xattrs(&a)));
        }
        if me.file_type().is_symlink() && fs::read_link(&e).unwrap() != fs::read_link(&a).unwrap() {
            errors.push(format!("{}: symlink target differs", r.display()));
        }
        if me.is_file() && (me.len() != ma.len() || !same_content(&e, &a)) {
            errors.push(format!("{}: content differs", r.display()));
        }
    }
    assert!(errors.is_empty(), "{} differences:\n{}", errors.len(), errors.join("\n"));
    exp.len()
}

/// Copies a corpus image into `dir` (so loop backing files name the test's own dir).
pub fn corpus_image(name: &str, dir: &Path) -> PathBuf {
    let src = corpus_path().join("cstorage-images").join(name);
    let dst = dir.join(name);
    fs::copy(&src, &dst).unwrap();
    dst
}

/// A containers/storage-style composefs layer dir: `composefs-data/composefs.blob` and `diff/`.
pub fn composefs_layer_dir(dir: &Path, image: &Path, objects_from: &Path) -> PathBuf {
    fs::create_dir_all(dir.join("composefs-data")).unwrap();
    fs::copy(image, dir.join("composefs-data/composefs.blob")).unwrap();
    build_objects(objects_from, &dir.join("diff"));
    dir.to_path_buf()
}

/// The corpus layer `noparents-ustar` as a composefs layer dir `root/name`, with its files
/// extracted at `root/tree` (what a mount of it must show) and its image copied into `root`.
/// Returns (layer dir, tree, image).
pub fn noparents_layer_dir(root: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let tree = root.join("tree");
    extract(&corpus_path().join("cstorage/noparents-ustar/noparents-ustar.tar"), &tree);
    let image = corpus_image("noparents-ustar.cfs", root);
    let dir = composefs_layer_dir(&root.join(name), &image, &tree);
    (dir, tree, image)
}

pub fn name_bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

/// The fallbacks for older kernels, forced on this one (see tests/mount_legacy*.rs).
pub fn legacy_run(data_only: bool) {
    if !can_mount() || !corpus_available() {
        return;
    }
    let features = composefs_storage::mount::KernelFeatures {
        erofs_from_file: false,
        overlay_append: false,
        detached_layers: false,
        data_only_layers: data_only,
    };
    assert!(composefs_storage::mount::restrict_features_for_tests(features));
    let tmp = tempdir();
    let root = tmp.path();
    let (cfs, tree, _) = noparents_layer_dir(root, "cfs");
    let classic = root.join("classic");
    fs::create_dir_all(classic.join("diff/etc")).unwrap();
    fs::write(classic.join("diff/etc/motd"), b"hi").unwrap();
    let mnt = root.join("mnt");
    fs::create_dir(&mnt).unwrap();
    let stack = [
        composefs_storage::mount::Layer::from_layer_dir(&classic).unwrap(),
        composefs_storage::mount::Layer::from_layer_dir(&cfs).unwrap(),
    ];
    composefs_storage::mount::mount(
        &stack,
        &mnt,
        &composefs_storage::mount::MountOptions {
            stub_cache_dir: Some(root.join("cache")),
            ..composefs_storage::mount::MountOptions::read_only()
        },
    )
    .unwrap();
    let guard = MountGuard(mnt.clone());
    let mi = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = mi.lines().find(|l| l.contains(mnt.to_str().unwrap())).unwrap().to_string();
    assert!(line.contains(if data_only { "::" } else { "lowerdir=" }), "{line}");
    // The attached EROFS mounts were detached once the overlay held them.
    let attached: Vec<_> =
        mi.lines().filter(|l| l.split(' ').nth(4).is_some_and(|m| m.contains("composefs-storage-layers"))).collect();
    assert!(attached.is_empty(), "{attached:?}");
    assert_eq!(Snapshot::take(root).loops.len(), 1, "the EROFS is on a loop device");
    let mut names: Vec<_> =
        fs::read_dir(&mnt).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    // With `:` the object dirs are ordinary lowers: the image's root stubs hide their `xx/`.
    assert_eq!(names, ["etc", "opt", "usr"]);
    assert_eq!(fs::read(mnt.join("opt/z/f2")).unwrap(), fs::read(tree.join("opt/z/f2")).unwrap());
    assert_eq!(fs::read(mnt.join("etc/motd")).unwrap(), b"hi");
    composefs_storage::mount::unmount(&mnt).unwrap();
    std::mem::forget(guard);
    Snapshot::assert_clean(root);
    let leftovers: Vec<_> = fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name().to_string_lossy().contains(&format!("composefs-storage-layers-{}-", std::process::id()))
        })
        .collect();
    assert!(leftovers.is_empty(), "temp mountpoints left: {leftovers:?}");
}

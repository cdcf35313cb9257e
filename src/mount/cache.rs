//! The cache dir of derived images (flattened runs and stub-less copies, see `stubs.rs` and
//! `flatten.rs`): how an image gets in, how it is mounted, and how the dir stays bounded.
//!
//! - An image appears complete or not at all: it is written to an unnamed `O_TMPFILE` and linked
//!   under its name when done, so a writer killed midway leaves nothing. (Filesystems without
//!   `O_TMPFILE` get a named `.tmp-<pid>-<n>` file, locked while written and renamed when done;
//!   [`cleanup`] removes those whose writer is gone.)
//! - A mount takes a shared `flock` on the image from opening it until the EROFS holds it; the
//!   eviction takes an exclusive one without waiting and skips what it cannot lock, so it never
//!   removes an image a mount is about to use. Once mounted, an image can be unlinked safely: the
//!   EROFS superblock holds the file.
//! - Last use is the file's atime (set when an image is opened for a mount). After each new image,
//!   the least recently used ones beyond [`CacheLimits`] are evicted.

use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{flock, AtFlags, FlockOperation};

use super::{erofs, probe, reuse, ErofsBacking, MountOptions};
use crate::{Error, ErrorKind, Result};

/// The environment variable that overrides the default cache dir for derived images.
pub const CACHE_DIR_ENV: &str = "COMPOSEFS_STORAGE_CACHE_DIR";

/// Suffix of cached images; anything else in the dir is left alone (except our temporaries).
const IMAGE_SUFFIX: &str = ".blob";
const TMP_PREFIX: &str = ".tmp-";

/// Bounds of the derived-image cache dir, enforced least recently used first. (The dir also keeps
/// up to 4096 records of successful blob checks, empty files; `max_images: 0` removes those too.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    pub max_images: usize,
    pub max_bytes: u64,
}

impl Default for CacheLimits {
    /// 64 images, 512 MiB: derived images are metadata-sized (a few MiB for large images).
    fn default() -> Self {
        CacheLimits { max_images: 64, max_bytes: 512 << 20 }
    }
}

/// The default cache dir for derived images: `$COMPOSEFS_STORAGE_CACHE_DIR` if set, else under
/// /run when root (cleared at boot; the images are derived data), else under the temp dir.
pub(crate) fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(CACHE_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if rustix::process::geteuid().is_root() {
        PathBuf::from("/run/composefs-storage/stubless")
    } else {
        std::env::temp_dir().join(format!("composefs-storage-stubless-{}", rustix::process::geteuid().as_raw()))
    }
}

/// Creates (if needed) and checks the cache dir: a real directory owned by us and writable by
/// no one else, since what it holds gets mounted.
pub(crate) fn prepare_cache_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let good = |m: &std::fs::Metadata| {
        m.is_dir() && m.uid() == rustix::process::geteuid().as_raw() && m.permissions().mode() & 0o022 == 0
    };
    // The common case, an existing good dir, costs one lstat.
    let m = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir) {
                Ok(()) => {}
                Err(e) => return Err(Error::io(format!("create stub cache dir {}", dir.display()), e)),
            }
            std::fs::symlink_metadata(dir).map_err(|e| Error::io(format!("stat {}", dir.display()), e))?
        }
        Err(e) => return Err(Error::io(format!("stat {}", dir.display()), e)),
    };
    if !good(&m) {
        return Err(Error::new(
            ErrorKind::PermissionDenied,
            format!(
                "stub cache dir {} must be a directory owned by this user and not writable by others",
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// Whether EROFS mounts of derived images may be kept for reuse in this process: only
/// file-backed ones used as detached layers, so no loop device and no attached mount is kept.
fn may_keep(opts: &MountOptions) -> bool {
    opts.reuse_erofs && opts.erofs_backing == ErofsBacking::Auto && probe::erofs_from_file() && probe::detached_layers()
}

/// The detached EROFS mount of the derived image `name` in `cache`, building the image with
/// `build` when it is not there.
pub(crate) fn mount_image(
    cache: &Path,
    name: &str,
    opts: &MountOptions,
    build: &mut dyn FnMut() -> Result<Vec<u8>>,
) -> Result<Arc<OwnedFd>> {
    prepare_cache_dir(cache)?;
    let path = cache.join(name);
    let keep = may_keep(opts);
    let mut built = false;
    // A concurrent eviction can remove the image between our stat and open: build it again.
    for _ in 0..3 {
        match reuse::identity_of_path(&path) {
            Ok(id) => {
                if keep {
                    if let Some((m, touch)) = reuse::kept_mount(&path, &id) {
                        if touch {
                            let _ = rustix::fs::utimensat(rustix::fs::CWD, &path, &used_now(), AtFlags::empty());
                        }
                        return Ok(m);
                    }
                }
                let f = match File::open(&path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(Error::io(format!("open {}", path.display()), e)),
                };
                flock(&f, FlockOperation::LockShared)
                    .map_err(|e| Error::io(format!("lock {}", path.display()), e.into()))?;
                let id = reuse::identity_of_fd(&f).map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
                let _ = rustix::fs::futimens(&f, &used_now());
                let m = Arc::new(erofs::mount_detached(&f, &path, opts.erofs_backing)?);
                drop(f);
                if keep {
                    reuse::keep_mount(&path, &id, m.clone());
                }
                if built {
                    let _ = evict(cache, opts.cache_limits);
                }
                return Ok(m);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                publish(cache, &path, &build()?)?;
                built = true;
            }
            Err(e) => return Err(Error::io(format!("stat {}", path.display()), e)),
        }
    }
    Err(Error::io(
        format!("open cached image {} (removed again and again while being mounted)", path.display()),
        std::io::Error::from_raw_os_error(libc::ENOENT),
    ))
}

/// Timestamps that set the atime (an image's last use, for the eviction order) and keep mtime.
fn used_now() -> rustix::fs::Timestamps {
    rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec { tv_sec: 0, tv_nsec: rustix::fs::UTIME_NOW },
        last_modification: rustix::fs::Timespec { tv_sec: 0, tv_nsec: rustix::fs::UTIME_OMIT },
    }
}

static TMP_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Puts `image` at `path` (in `cache`) complete or not at all. An image already there (a
/// concurrent builder of the same image) is kept: the contents are identical.
fn publish(cache: &Path, path: &Path, image: &[u8]) -> Result<()> {
    let what = || format!("write cached image {}", path.display());
    let tmp = rustix::fs::open(
        cache,
        rustix::fs::OFlags::TMPFILE | rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::from_raw_mode(0o600),
    );
    match tmp {
        Ok(fd) => {
            let mut f = File::from(fd);
            f.write_all(image).and_then(|()| f.sync_all()).map_err(|e| Error::io(what(), e))?;
            let proc_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&f));
            match rustix::fs::linkat(
                rustix::fs::CWD,
                &proc_path,
                rustix::fs::CWD,
                path,
                rustix::fs::AtFlags::SYMLINK_FOLLOW,
            ) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
                Err(e) => Err(Error::io(what(), e.into())),
            }
        }
        Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::ISDIR | rustix::io::Errno::INVAL) => {
            publish_named(cache, path, image).map_err(|e| Error::io(what(), e))
        }
        Err(e) => Err(Error::io(what(), e.into())),
    }
}

/// [`publish`] for filesystems without `O_TMPFILE`: a named temporary, locked while written.
fn publish_named(cache: &Path, path: &Path, image: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let n = TMP_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = cache.join(format!("{TMP_PREFIX}{}-{n}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        flock(&f, FlockOperation::NonBlockingLockExclusive)?;
        f.write_all(image)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    let r = write();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// Removes the least recently used images of `cache` beyond `limits`, skipping any that a mount
/// is about to use (locked). Returns how many were removed.
pub(crate) fn evict(cache: &Path, limits: CacheLimits) -> Result<usize> {
    let entries = match std::fs::read_dir(cache) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io(format!("read {}", cache.display()), e)),
    };
    let mut images = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || !name.ends_with(IMAGE_SUFFIX) {
            continue;
        }
        if let Ok(m) = e.metadata() {
            if m.is_file() {
                images.push(((m.atime(), m.atime_nsec()), m.len(), m.ino(), e.path()));
            }
        }
    }
    let records_max = if limits.max_images == 0 { 0 } else { RECORDS_MAX };
    trim_records(cache, records_max);
    images.sort_by_key(|a| std::cmp::Reverse(a.0)); // most recently used first
    let (mut count, mut bytes, mut removed) = (0usize, 0u64, 0usize);
    for (_, len, ino, path) in images {
        if count < limits.max_images && bytes.saturating_add(len) <= limits.max_bytes {
            count += 1;
            bytes += len;
            continue;
        }
        if remove_unused(&path, ino) {
            removed += 1;
        } else {
            count += 1;
            bytes = bytes.saturating_add(len);
        }
    }
    Ok(removed)
}

/// Most records of successful blob checks (`reuse::RECORDS_DIR`, empty files) kept.
const RECORDS_MAX: usize = 4096;

/// Removes the oldest records of blob checks beyond `max`: a removed record only costs one
/// check of that blob later.
fn trim_records(cache: &Path, max: usize) -> usize {
    let dir = cache.join(super::reuse::RECORDS_DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else { return 0 };
    let mut records: Vec<_> =
        entries.flatten().filter_map(|e| e.metadata().ok().map(|m| ((m.mtime(), m.mtime_nsec()), e.path()))).collect();
    if records.len() <= max {
        return 0;
    }
    records.sort();
    let excess = records.len() - max;
    records.into_iter().take(excess).filter(|(_, p)| std::fs::remove_file(p).is_ok()).count()
}

/// Unlinks `path` (inode `ino`) unless a mount holds its lock or it was replaced meanwhile.
fn remove_unused(path: &Path, ino: u64) -> bool {
    let Ok(f) = File::open(path) else { return false };
    if flock(&f, FlockOperation::NonBlockingLockExclusive).is_err() {
        return false;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.ino() == ino && f.metadata().is_ok_and(|fm| fm.ino() == ino) => std::fs::remove_file(path).is_ok(),
        _ => false,
    }
}

/// Whether process `pid` (in our PID namespace) is gone.
pub(crate) fn process_gone(pid: u32) -> bool {
    match rustix::process::Pid::from_raw(pid as i32) {
        Some(p) => rustix::process::test_kill_process(p) == Err(rustix::io::Errno::SRCH),
        None => false,
    }
}

/// Seconds since `m` was last modified (0 if in the future).
pub(crate) fn age_secs(m: &std::fs::Metadata) -> u64 {
    m.modified().ok().and_then(|t| t.elapsed().ok()).map_or(0, |d| d.as_secs())
}

/// Removes named temporaries (see [`publish_named`]) whose writer is gone.
fn remove_abandoned_temporaries(cache: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(cache) else { return 0 };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let Some(rest) = name.strip_prefix(TMP_PREFIX) else { continue };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        let Ok(m) = e.metadata() else { continue };
        // The writer locks right after creating: young and its process alive means maybe not yet.
        if !(pid.is_some_and(process_gone) || age_secs(&m) > 60) {
            continue;
        }
        if remove_unused(&e.path(), m.ino()) {
            removed += 1;
        }
    }
    removed
}

/// What [`cleanup`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// EROFS mounts this process kept for reuse, released.
    pub kept_mounts_released: usize,
    /// Cached derived images evicted (beyond the limits, unused).
    pub images_evicted: usize,
    /// Unfinished derived images and private temp dirs whose process is gone.
    pub temporaries_removed: usize,
    /// Mounts left attached in those temp dirs (by a process killed mid-mount), detached.
    pub stale_mounts_detached: usize,
}

/// Cleans up after mounting: releases the EROFS mounts this process keeps for reuse, removes
/// what killed mount sequences left behind (unfinished derived images, private temp dirs and the
/// mounts attached in them on kernels that need that), and evicts cached derived images beyond
/// `limits`, least recently used first (`CacheLimits { max_images: 0, max_bytes: 0 }` removes
/// every image not in use). `cache_dir` is `None` for the default dir. The private temp dirs are
/// looked for in `$TMPDIR` (else /tmp), where the mounting processes made them. Mounted stacks
/// are not affected.
pub fn cleanup(cache_dir: Option<&Path>, limits: CacheLimits) -> Result<CleanupReport> {
    let cache = cache_dir.map(Path::to_path_buf).unwrap_or_else(default_cache_dir);
    let kept_mounts_released = reuse::release_kept_mounts();
    let (dirs, stale_mounts_detached) = super::tempdir::cleanup_abandoned()?;
    let temporaries_removed = remove_abandoned_temporaries(&cache) + dirs;
    let images_evicted = evict(&cache, limits)?;
    Ok(CleanupReport { kept_mounts_released, images_evicted, temporaries_removed, stale_mounts_detached })
}

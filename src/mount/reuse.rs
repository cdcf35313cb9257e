//! Per-process memory of work that every mount would otherwise repeat (SPEC §11, issue 6 speed):
//!
//! - which blobs were already checked against which expected fs-verity digest, so a blob without
//!   kernel fs-verity is not hashed in userspace on every mount;
//! - the detached EROFS mounts of derived images (flattened runs, stub-less copies), so mounting
//!   the same image again skips creating and tearing down an EROFS superblock, which costs more
//!   than everything else in a mount (backing-dev registration, an RCU grace period on release).
//!
//! Both are keyed by file identities taken with `statx`, so a changed or replaced file misses.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustix::fs::{statx, AtFlags, StatxAttributes, StatxFlags, CWD};

/// A file's identity as `statx` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Identity {
    pub dev: (u32, u32),
    pub ino: u64,
    pub size: u64,
    pub mtime: (i64, u32),
    pub ctime: (i64, u32),
    /// The kernel says the file has fs-verity (its contents can then never change).
    pub verity: bool,
    /// The filesystem reported every field above (else nothing is remembered by this identity).
    pub complete: bool,
}

fn from_statx(s: &rustix::fs::Statx) -> Identity {
    Identity {
        dev: (s.stx_dev_major, s.stx_dev_minor),
        ino: s.stx_ino,
        size: s.stx_size,
        mtime: (s.stx_mtime.tv_sec, s.stx_mtime.tv_nsec),
        ctime: (s.stx_ctime.tv_sec, s.stx_ctime.tv_nsec),
        verity: s.stx_attributes_mask.contains(StatxAttributes::VERITY)
            && s.stx_attributes.contains(StatxAttributes::VERITY),
        complete: StatxFlags::from_bits_retain(s.stx_mask).contains(NEEDED),
    }
}

const STATX_WANT: StatxFlags = StatxFlags::BASIC_STATS;
const NEEDED: StatxFlags = StatxFlags::INO.union(StatxFlags::SIZE).union(StatxFlags::MTIME).union(StatxFlags::CTIME);

/// The identity of the file at `path` (symlinks followed, as `open` would).
pub(crate) fn identity_of_path(path: &Path) -> std::io::Result<Identity> {
    Ok(from_statx(&statx(CWD, path, AtFlags::empty(), STATX_WANT)?))
}

/// The identity of an open file.
pub(crate) fn identity_of_fd(fd: impl AsFd) -> std::io::Result<Identity> {
    Ok(from_statx(&statx(fd, "", AtFlags::EMPTY_PATH, STATX_WANT)?))
}

/// A checked (identity, expected digest) pair.
///
/// Why this is safe: the entry is only found again for the same device and inode with the same
/// size, mtime and ctime. Writing or truncating a file updates its mtime and ctime, and ctime
/// cannot be set from userspace; replacing the file (rename, or a new file at the path) changes
/// the inode. Timestamps have a clock-tick granularity on some filesystems, so a write within
/// the same tick as an earlier change could keep them: a pair is therefore only remembered once
/// the file's ctime is [`SETTLED_SECS`] old. A blob with kernel fs-verity is measured by one
/// ioctl anyway and cannot change. What no identity can exclude, a writer racing the check
/// itself (or writing through a shared mapping), the uncached check cannot exclude either;
/// only fs-verity does, and then the kernel measurement is used.
static VERIFIED: Mutex<Option<HashMap<Identity, [u8; 32]>>> = Mutex::new(None);
const SETTLED_SECS: i64 = 2;
/// Entries are small; a long-running process still should not grow without bound.
const VERIFIED_MAX: usize = 4096;

pub(crate) fn is_verified(id: &Identity, expected: &[u8; 32]) -> bool {
    let cache = VERIFIED.lock().unwrap_or_else(|p| p.into_inner());
    cache.as_ref().and_then(|c| c.get(id)) == Some(expected)
}

/// Remembers a successful check (see [`VERIFIED`]); returns false if the file is too recently
/// changed to be remembered.
pub(crate) fn mark_verified(id: &Identity, digest: &[u8; 32]) -> bool {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    if !id.complete || (!id.verity && id.ctime.0 + SETTLED_SECS > now) {
        return false;
    }
    let mut cache = VERIFIED.lock().unwrap_or_else(|p| p.into_inner());
    let map = cache.get_or_insert_with(HashMap::new);
    if map.len() >= VERIFIED_MAX {
        map.clear();
    }
    map.insert(*id, *digest);
    true
}

/// Successful checks are also recorded as empty files in `<cache dir>/verified/`, for processes
/// that mount once (the CLI, an engine run per command): the file's name is a hash of the same
/// (identity, expected digest) pair, so the record says exactly what [`VERIFIED`] would. The
/// cache dir is checked to be ours and not writable by others, as for the derived images kept
/// there, which are mounted as they are: a record trusts that dir no more than they do.
pub(crate) const RECORDS_DIR: &str = "verified";

fn record_name(id: &Identity, expected: &[u8; 32]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(format!("composefs-storage verified v1 {id:?} {}\n", super::verity::hex(expected)));
    super::verity::hex(&h.finalize())
}

/// Whether a record of (id, expected) exists in `records`; remembered in memory if so.
pub(crate) fn is_recorded(records: &Path, id: &Identity, expected: &[u8; 32]) -> bool {
    let found = rustix::fs::accessat(
        CWD,
        records.join(record_name(id, expected)),
        rustix::fs::Access::EXISTS,
        AtFlags::empty(),
    )
    .is_ok();
    if found {
        mark_verified(id, expected);
    }
    found
}

/// Records a successful check (best effort: a missing record only costs a check later).
pub(crate) fn record(records: &Path, id: &Identity, expected: &[u8; 32]) {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let _ = std::fs::DirBuilder::new().mode(0o700).create(records);
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(records.join(record_name(id, expected)));
}

/// A reusable EROFS mount of a derived image: kept while the image at its path is the same file.
struct Kept {
    /// dev, ino, size, mtime of the image. Not ctime: recording the last use (atime) changes it.
    /// Derived images are never written once in place (linked complete, see `cache.rs`).
    key: ((u32, u32), u64, u64, (i64, u32)),
    mount: Arc<OwnedFd>,
    last_use: u64,
    /// When the image's atime (its last use for the cache's eviction order) was last set.
    touched: std::time::Instant,
}

fn kept_key(id: &Identity) -> ((u32, u32), u64, u64, (i64, u32)) {
    (id.dev, id.ino, id.size, id.mtime)
}

static KEPT: Mutex<Option<HashMap<PathBuf, Kept>>> = Mutex::new(None);
static USE_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Detached EROFS mounts kept per process (least recently used dropped first). Each holds an
/// image file open and a small superblock.
pub(crate) const KEPT_MAX: usize = 16;

/// How often a kept image's atime is refreshed, so other processes' evictions see it in use.
const TOUCH_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// The kept mount of the image at `path`, if it is still the same file, and whether the image's
/// atime is due to be refreshed.
pub(crate) fn kept_mount(path: &Path, id: &Identity) -> Option<(Arc<OwnedFd>, bool)> {
    let mut kept = KEPT.lock().unwrap_or_else(|p| p.into_inner());
    let k = kept.as_mut()?.get_mut(path)?;
    if k.key != kept_key(id) {
        return None;
    }
    k.last_use = USE_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let touch = k.touched.elapsed() >= TOUCH_EVERY;
    if touch {
        k.touched = std::time::Instant::now();
    }
    Some((k.mount.clone(), touch))
}

/// Keeps `mount` (of the image at `path` with identity `id`) for later mounts.
pub(crate) fn keep_mount(path: &Path, id: &Identity, mount: Arc<OwnedFd>) {
    if !id.complete {
        return;
    }
    let last_use = USE_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dropped;
    {
        let mut kept = KEPT.lock().unwrap_or_else(|p| p.into_inner());
        let map = kept.get_or_insert_with(HashMap::new);
        let old = map.insert(
            path.to_path_buf(),
            Kept { key: kept_key(id), mount, last_use, touched: std::time::Instant::now() },
        );
        let lru = if map.len() > KEPT_MAX {
            map.iter().min_by_key(|(_, k)| k.last_use).map(|(p, _)| p.clone())
        } else {
            None
        };
        dropped = (old, lru.and_then(|p| map.remove(&p)));
    }
    // Closing a mount fd waits for an RCU grace period: not under the lock.
    drop(dropped);
}

/// Drops every kept mount (an overlay still using one keeps its own reference). Returns how many.
pub fn release_kept_mounts() -> usize {
    let taken = KEPT.lock().unwrap_or_else(|p| p.into_inner()).take();
    taken.map_or(0, |m| m.len())
}

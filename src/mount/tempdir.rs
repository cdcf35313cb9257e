//! Private temporary directories for probes and for attaching EROFS mounts on kernels that cannot
//! use detached mounts as layers. Removal is `rmdir` only, never recursive: a directory that
//! still has a mount or content on it is left alone rather than emptied.
//!
//! Each directory is locked (`flock` on the directory itself) by its creator for as long as it
//! lives, so [`cleanup_abandoned`] can tell one whose process was killed (lock free, process gone)
//! and detach what that process left mounted in it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{flock, FlockOperation};

use crate::{Error, Result};

static COUNTER: AtomicU64 = AtomicU64::new(0);

const PREFIX: &str = "composefs-storage-";
/// The kinds of temp dirs made here (the `<what>` in their names).
const KINDS: [&str; 2] = ["layers", "probe"];

pub(crate) struct TempDir {
    path: PathBuf,
    _lock: File,
}

impl TempDir {
    /// Creates `$TMPDIR/composefs-storage-<what>-<pid>-<n>-<nanos>` with mode 0700, locked.
    pub(crate) fn new(what: &str) -> Result<TempDir> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::temp_dir();
        for _ in 0..100 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let nanos =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
            let path = base.join(format!("{PREFIX}{what}-{}-{n}-{nanos:x}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(format!("create temporary directory {}", path.display()), e)),
            }
            // Between mkdir and flock the dir is unlocked, but its process is alive and the
            // cleanup leaves dirs of live processes alone.
            let lock = File::open(&path)
                .and_then(|f| flock(&f, FlockOperation::NonBlockingLockExclusive).map(|()| f).map_err(Into::into));
            return match lock {
                Ok(lock) => Ok(TempDir { path, _lock: lock }),
                Err(e) => {
                    let _ = std::fs::remove_dir(&path);
                    Err(Error::io(format!("lock temporary directory {}", path.display()), e))
                }
            };
        }
        Err(Error::io(
            format!("create a temporary directory in {}", base.display()),
            std::io::Error::from_raw_os_error(libc::EEXIST),
        ))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        remove_empty_tree(&self.path);
    }
}

fn remove_empty_tree(path: &Path) {
    if let Ok(entries) = std::fs::read_dir(path) {
        for e in entries.flatten() {
            let _ = std::fs::remove_dir(e.path());
        }
    }
    let _ = std::fs::remove_dir(path);
}

/// The mountpoints at or under `dir`, deepest first, from /proc/self/mountinfo.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return Vec::new() };
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|p| p.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(out))
}

/// Removes the temp dirs made here by processes that are gone, after detaching any mount left in
/// them. Returns (dirs removed, mounts detached).
pub(crate) fn cleanup_abandoned() -> Result<(usize, usize)> {
    let base = std::env::temp_dir();
    let entries = match std::fs::read_dir(&base) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(Error::io(format!("read {}", base.display()), e)),
    };
    let (mut dirs, mut mounts) = (0, 0);
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let Some(rest) = name.strip_prefix(PREFIX) else { continue };
        let Some((kind, rest)) = rest.split_once('-') else { continue };
        if !KINDS.contains(&kind) {
            continue;
        }
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        let path = e.path();
        let Ok(m) = std::fs::symlink_metadata(&path) else { continue };
        if !m.is_dir() || !(super::cache::process_gone(pid) || super::cache::age_secs(&m) > 60) {
            continue;
        }
        let Ok(lock) = File::open(&path) else { continue };
        if flock(&lock, FlockOperation::NonBlockingLockExclusive).is_err() {
            continue; // its process is alive (another PID namespace)
        }
        for mnt in mounts_under(&path) {
            if rustix::mount::unmount(&mnt, rustix::mount::UnmountFlags::DETACH | rustix::mount::UnmountFlags::NOFOLLOW)
                .is_ok()
            {
                mounts += 1;
            }
        }
        remove_empty_tree(&path);
        if std::fs::symlink_metadata(&path).is_err() {
            dirs += 1;
        }
    }
    Ok((dirs, mounts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo(r"/a\040b\134c"), PathBuf::from("/a b\\c"));
        assert_eq!(unescape_mountinfo(r"/x\04"), PathBuf::from(r"/x\04"));
    }
}

//! The staging directory a layer is built in: a hidden sibling of the final layer directory (same
//! filesystem), renamed into place only when complete, and removed on any error, cancellation
//! or panic (SPEC §2.1, issue 4's atomicity rule).

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::{Error, ErrorKind, Result};

/// Prefix of staging directory names: `.<layer name>.staging-<pid>-<nanos>`.
pub const STAGING_MARKER: &str = ".staging-";

/// The lock file inside a staging directory: held (flock) by the process building the layer for
/// as long as it lives, so that a later process can tell an abandoned staging directory (lock
/// free: its owner died, e.g. by SIGKILL) from one in use, across PID namespaces too.
const LOCK_NAME: &str = ".staging.lock";

/// A staging directory that removes itself unless committed.
pub struct Staging {
    pub path: PathBuf,
    armed: bool,
    lock: Option<std::fs::File>,
}

/// Removes the staging directories in `parent` that their builder abandoned (it died before
/// finishing or cleaning up). Directories whose lock is held are in use and left alone, and so
/// is anything that does not look like a staging directory. Returns how many were removed.
/// Every conversion and pull calls this for its target's parent first.
pub fn cleanup_abandoned(parent: &Path) -> Result<usize> {
    let entries = match std::fs::read_dir(parent) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io(format_args!("read {}", parent.display()), e)),
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with('.') || !name.contains(STAGING_MARKER) {
            continue;
        }
        let dir = entry.path();
        let Ok(lock) = std::fs::File::open(dir.join(LOCK_NAME)) else { continue };
        if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            continue; // its builder is alive
        }
        let _ = std::fs::set_permissions(dir.join("diff"), std::fs::Permissions::from_mode(0o755));
        if std::fs::remove_dir_all(&dir).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

impl Staging {
    /// Creates the staging directory for `layer_dir`, which must not exist yet.
    pub fn create(layer_dir: &Path) -> Result<Staging> {
        if std::fs::symlink_metadata(layer_dir).is_ok() {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("layer directory {} already exists; it is never overwritten", layer_dir.display()),
            ));
        }
        let file_name = layer_dir
            .file_name()
            .ok_or_else(|| Error::invalid_argument(format!("layer directory {} has no name", layer_dir.display())))?;
        let parent = match layer_dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        cleanup_abandoned(&parent)?;
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let path =
            parent.join(format!(".{}{STAGING_MARKER}{}-{nanos:x}", file_name.to_string_lossy(), std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| Error::io(format_args!("create staging directory {}", path.display()), e))?;
        let mut staging = Staging { path, armed: true, lock: None };
        // The lock file appears under its name only once locked (create, lock, rename), so a
        // concurrent cleaner never finds it unlocked while this builder is alive.
        let lock_path = staging.path.join(LOCK_NAME);
        let tmp_path = staging.path.join(format!("{LOCK_NAME}.new"));
        let lock = std::fs::File::create_new(&tmp_path)
            .map_err(|e| Error::io(format_args!("create {}", tmp_path.display()), e))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)
            .map_err(|e| Error::io(format_args!("lock {}", tmp_path.display()), e.into()))?;
        std::fs::rename(&tmp_path, &lock_path)
            .map_err(|e| Error::io(format_args!("rename {} into place", tmp_path.display()), e))?;
        staging.lock = Some(lock);
        Ok(staging)
    }

    /// Makes `diff/` read-only like containers/storage's (0555, SPEC §2.1) and renames the staging
    /// directory to `layer_dir`, never replacing an existing one.
    pub fn commit(mut self, layer_dir: &Path) -> Result<()> {
        let diff = self.path.join("diff");
        std::fs::set_permissions(&diff, std::fs::Permissions::from_mode(0o555))
            .map_err(|e| Error::io(format_args!("chmod {}", diff.display()), e))?;
        // The lock file does not belong in the layer; the lock itself stays held until we return.
        let lock_path = self.path.join(LOCK_NAME);
        std::fs::remove_file(&lock_path).map_err(|e| Error::io(format_args!("remove {}", lock_path.display()), e))?;
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            &self.path,
            rustix::fs::CWD,
            layer_dir,
            rustix::fs::RenameFlags::NOREPLACE,
        )
        .map_err(|e| Error::io(format_args!("rename {} to {}", self.path.display(), layer_dir.display()), e.into()))?;
        self.armed = false;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.armed {
            // diff/ may have been made read-only just before a failed rename.
            let _ = std::fs::set_permissions(self.path.join("diff"), std::fs::Permissions::from_mode(0o755));
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

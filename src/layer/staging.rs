//! The staging directory a layer is built in: a hidden sibling of the final layer directory (same
//! filesystem), renamed into place only when complete, and removed on any error, cancellation
//! or panic (SPEC §2.1, issue 4's atomicity rule).

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::{Error, ErrorKind, Result};

/// Prefix of staging directory names: `.<layer name>.staging-<pid>-<nanos>`.
pub const STAGING_MARKER: &str = ".staging-";

/// A staging directory that removes itself unless committed.
pub struct Staging {
    pub path: PathBuf,
    armed: bool,
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
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let path =
            parent.join(format!(".{}{STAGING_MARKER}{}-{nanos:x}", file_name.to_string_lossy(), std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| Error::io(format_args!("create staging directory {}", path.display()), e))?;
        Ok(Staging { path, armed: true })
    }

    /// Makes `diff/` read-only like containers/storage's (0555, SPEC §2.1) and renames the staging
    /// directory to `layer_dir`, never replacing an existing one.
    pub fn commit(mut self, layer_dir: &Path) -> Result<()> {
        let diff = self.path.join("diff");
        std::fs::set_permissions(&diff, std::fs::Permissions::from_mode(0o555))
            .map_err(|e| Error::io(format_args!("chmod {}", diff.display()), e))?;
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

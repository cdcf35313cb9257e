//! One composefs blob as a read-only EROFS mount, for callers that compose the overlay
//! themselves: containers/storage's overlay driver mounts each composefs lower this way
//! (`mountComposefsBlob`, SPEC §9.1) and reads redirects through a detached one (its
//! `DiffGetter`, §9.8). What this adds to c/storage's own code: the header magic is checked
//! (c/storage mounts any file), and an expected fs-verity digest, when given, is checked on the
//! very file that is mounted (§10.8).

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::mount::{move_mount, MoveMountFlags};

use super::{erofs, verity, ErofsBacking};
use crate::{Error, Result};

/// Mounts the composefs blob at `blob` as a detached read-only EROFS (from the file on kernels
/// ≥ 6.12, else through a loop device that is freed with the mount) and returns the mount's fd:
/// attach it with `move_mount`, give it to overlayfs as a layer, or read through
/// `/proc/self/fd/N/…`. Closing the fd of an unattached mount unmounts it.
pub fn open_blob_mount(blob: &Path, expected_digest: Option<&[u8; 32]>, backing: ErofsBacking) -> Result<OwnedFd> {
    let file = File::open(blob).map_err(|e| Error::io(format!("open composefs blob {}", blob.display()), e))?;
    if let Some(expected) = expected_digest {
        verity::check_blob(&file, blob, expected)?;
    }
    erofs::mount_detached(&file, blob, backing)
}

/// [`open_blob_mount`], attached at `target` (an existing directory).
pub fn mount_blob(blob: &Path, expected_digest: Option<&[u8; 32]>, backing: ErofsBacking, target: &Path) -> Result<()> {
    let mnt = open_blob_mount(blob, expected_digest, backing)?;
    move_mount(&mnt, "", rustix::fs::CWD, target, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
        .map_err(|e| Error::io(format!("attach the EROFS of {} at {}", blob.display(), target.display()), e.into()))
}

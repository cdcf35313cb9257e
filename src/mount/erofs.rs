//! Mounting one composefs blob as a detached EROFS mount (SPEC §9.1).
//!
//! The result is an fd from `fsmount` that is never attached anywhere: the overlay takes it as a
//! layer, and closing the fd (after the overlay holds the layer, or on any error) leaves nothing.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;

use rustix::mount::{fsconfig_create, fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen};
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags};

use super::{loopdev, probe};
use crate::{Error, ErrorKind, Result};

/// composefs header magic (SPEC §5.5).
const COMPOSEFS_MAGIC: u32 = 0xd078_629a;
const LCFS_EROFS_FLAGS_HAS_ACL: u32 = 1;

/// How the EROFS gets its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErofsBacking {
    /// From the file where the kernel can (≥ 6.12), else a loop device (decided once per process).
    #[default]
    Auto,
    /// Always through a loop device.
    LoopDevice,
}

/// Reads the composefs header and says whether the image has ACLs (then `noacl` is not set).
pub(crate) fn read_has_acl(blob: &File, path: &Path) -> Result<bool> {
    let mut header = [0u8; 12];
    blob.read_exact_at(&mut header, 0).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::format(format!("composefs blob {}: shorter than its 32-byte header", path.display()))
        } else {
            Error::io(format!("read {}", path.display()), e)
        }
    })?;
    let magic = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    if magic != COMPOSEFS_MAGIC {
        return Err(Error::format(format!(
            "composefs blob {}: header magic is {magic:#010x}, expected {COMPOSEFS_MAGIC:#010x}",
            path.display()
        )));
    }
    let flags = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    Ok(flags & LCFS_EROFS_FLAGS_HAS_ACL != 0)
}

/// Mounts `blob` (open read-only, already checked) as a detached read-only EROFS.
pub(crate) fn mount_detached(blob: &File, path: &Path, backing: ErofsBacking) -> Result<OwnedFd> {
    let has_acl = read_has_acl(blob, path)?;
    if backing == ErofsBacking::Auto && probe::erofs_from_file() {
        let source = format!("/proc/self/fd/{}", blob.as_raw_fd());
        match create(&source, has_acl, path) {
            Err(e) if e.raw_os_error() == Some(libc::ENOTBLK) => probe::set_erofs_from_file(false),
            other => return other,
        }
    }
    let dev = loopdev::attach(blob, path)?;
    let source = dev.path.to_string_lossy().into_owned();
    // The device fd (`dev`) is closed when this returns: autoclear frees the device with the
    // superblock, or right away if the mount failed.
    create(&source, has_acl, path)
}

fn create(source: &str, has_acl: bool, path: &Path) -> Result<OwnedFd> {
    let what = || format!("mount EROFS from composefs blob {}", path.display());
    let fs = fsopen("erofs", FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| {
        let e = Error::io(format!("{}: fsopen(\"erofs\")", what()), e.into());
        if e.kind() == ErrorKind::Unsupported || e.raw_os_error() == Some(libc::ENODEV) {
            Error::unsupported(format!("{e} (the kernel has no EROFS or no new mount API)"))
        } else {
            e
        }
    })?;
    let step = |name: &str, r: rustix::io::Result<()>| -> Result<()> {
        r.map_err(|e| Error::io(format!("{}: {name}{}", what(), kernel_messages(fs.as_fd())), e.into()))
    };
    step("fsconfig source", fsconfig_set_string(&fs, "source", source))?;
    step("fsconfig ro", fsconfig_set_flag(&fs, "ro"))?;
    if !has_acl {
        step("fsconfig noacl", fsconfig_set_flag(&fs, "noacl"))?;
    }
    step("fsconfig create", fsconfig_create(&fs))?;
    fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::MOUNT_ATTR_RDONLY)
        .map_err(|e| Error::io(format!("{}: fsmount", what()), e.into()))
}

/// The kernel's messages queued on an fs context (`e erofs: ...` lines), as `" (…)"` or "".
pub(crate) fn kernel_messages(fs: std::os::fd::BorrowedFd<'_>) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // Each read returns one message; the queue holds a few. Stop at the first error (ENODATA).
    for _ in 0..16 {
        match rustix::io::read(fs, &mut buf) {
            Ok(n) if n > 0 => out.push(String::from_utf8_lossy(&buf[..n]).trim_end().to_string()),
            _ => break,
        }
    }
    if out.is_empty() {
        String::new()
    } else {
        format!(" (kernel: {})", out.join("; "))
    }
}

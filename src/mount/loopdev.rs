//! Loop devices for kernels that cannot mount EROFS from a regular file (< 6.12, SPEC §9.1).
//!
//! The device is configured read-only with autoclear, so the kernel frees it when its last user
//! goes away: the EROFS superblock once mounted, or our own fd if anything fails before that.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::error::ResultExt;
use crate::{Error, Result};

const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_SET_STATUS64: libc::c_ulong = 0x4C04;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
/// Tries before giving up when other processes keep taking the free device (c/storage uses 1000).
const MAX_TRIES: usize = 1000;

/// `struct loop_info64` (linux/loop.h).
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` (linux/loop.h).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// An attached loop device, held open; dropping it lets autoclear detach the device once no one
/// else (an EROFS superblock) holds it.
pub(crate) struct LoopDevice {
    pub(crate) path: PathBuf,
    _dev: OwnedFd,
}

/// Attaches `backing` (open read-only) to a free loop device, read-only with autoclear.
pub(crate) fn attach(backing: &File, name: &Path) -> Result<LoopDevice> {
    let ctl = File::open("/dev/loop-control").with_context(|| "open /dev/loop-control")?;
    let mut last_err = None;
    for _ in 0..MAX_TRIES {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number or -1.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
        if n < 0 {
            return Err(Error::io("LOOP_CTL_GET_FREE on /dev/loop-control", std::io::Error::last_os_error()));
        }
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let dev = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENXIO)) => {
                last_err = Some(Error::io(format!("open {}", path.display()), e));
                continue;
            }
            Err(e) => return Err(Error::io(format!("open {}", path.display()), e)),
        };
        match configure(&dev, backing, name) {
            Ok(()) => return Ok(LoopDevice { path, _dev: dev.into() }),
            // Someone else took this device between GET_FREE and our configure: take the next.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last_err = Some(e),
            Err(e) => return Err(e.context(format!("attach {} to {}", name.display(), path.display()))),
        }
    }
    Err(last_err
        .unwrap_or_else(|| Error::io("find a free loop device", std::io::Error::from_raw_os_error(libc::EBUSY))))
}

fn info(name: &Path) -> LoopInfo64 {
    let mut info = LoopInfo64 {
        lo_device: 0,
        lo_inode: 0,
        lo_rdevice: 0,
        lo_offset: 0,
        lo_sizelimit: 0,
        lo_number: 0,
        lo_encrypt_type: 0,
        lo_encrypt_key_size: 0,
        lo_flags: LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR,
        lo_file_name: [0; 64],
        lo_crypt_name: [0; 64],
        lo_encrypt_key: [0; 32],
        lo_init: [0; 2],
    };
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(name.as_os_str());
    let n = bytes.len().min(63);
    info.lo_file_name[..n].copy_from_slice(&bytes[..n]);
    info
}

/// `LOOP_CONFIGURE` (Linux ≥ 5.8), else `LOOP_SET_FD` + `LOOP_SET_STATUS64`.
fn configure(dev: &File, backing: &File, name: &Path) -> Result<()> {
    let config = LoopConfig { fd: backing.as_raw_fd() as u32, block_size: 0, info: info(name), reserved: [0; 8] };
    // SAFETY: LOOP_CONFIGURE reads a `struct loop_config`, which `config` is and which outlives the call.
    let rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE as _, &config as *const LoopConfig) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if !matches!(err.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOTTY)) {
        return Err(Error::io("LOOP_CONFIGURE", err));
    }
    // SAFETY: LOOP_SET_FD takes the backing file descriptor by value.
    let rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_FD as _, backing.as_raw_fd() as libc::c_ulong) };
    if rc != 0 {
        return Err(Error::io("LOOP_SET_FD", std::io::Error::last_os_error()));
    }
    let info = info(name);
    // SAFETY: LOOP_SET_STATUS64 reads a `struct loop_info64`, which `info` is and which outlives the call.
    let rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_STATUS64 as _, &info as *const LoopInfo64) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        // Without autoclear the device would stay bound: detach it now.
        // SAFETY: LOOP_CLR_FD takes no argument.
        unsafe { libc::ioctl(dev.as_raw_fd(), 0x4C01 as _) };
        return Err(Error::io("LOOP_SET_STATUS64", err));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_sizes_match_the_kernel_abi() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }
}

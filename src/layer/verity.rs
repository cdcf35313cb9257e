//! fs-verity on objects and the blob (SPEC §6): a policy and the two ioctls (syscall wrapper:
//! the only `unsafe` in this module, each block says why it is sound).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::{openat, Mode, OFlags};

use crate::{Error, ErrorKind, Result};

/// Whether to enable fs-verity on what a conversion writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VerityPolicy {
    /// Never.
    Off,
    /// Where the filesystem supports it; silently skipped elsewhere (containers/storage's behaviour).
    #[default]
    IfAvailable,
    /// Always; a filesystem without fs-verity fails the conversion.
    Require,
}

impl VerityPolicy {
    pub fn parse(s: &str) -> Result<VerityPolicy> {
        match s {
            "off" => Ok(VerityPolicy::Off),
            "if-available" => Ok(VerityPolicy::IfAvailable),
            "require" => Ok(VerityPolicy::Require),
            _ => Err(Error::invalid_argument(format!(
                "unknown fs-verity policy {s:?} (expected off, if-available or require)"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            VerityPolicy::Off => "off",
            VerityPolicy::IfAvailable => "if-available",
            VerityPolicy::Require => "require",
        }
    }
}

const FS_IOC_ENABLE_VERITY: libc::c_ulong = 0x4080_6685;
const FS_IOC_MEASURE_VERITY: libc::c_ulong = 0xc004_6686;

#[repr(C)]
struct EnableArg {
    version: u32,
    hash_algorithm: u32,
    block_size: u32,
    salt_size: u32,
    salt_ptr: u64,
    sig_size: u32,
    reserved1: u32,
    sig_ptr: u64,
    reserved2: [u64; 11],
}

#[repr(C)]
struct MeasureArg {
    digest_algorithm: u16,
    digest_size: u16,
    digest: [u8; 64],
}

fn enable(fd: BorrowedFd<'_>) -> std::io::Result<()> {
    let arg = EnableArg {
        version: 1,
        hash_algorithm: 1,
        block_size: 4096,
        salt_size: 0,
        salt_ptr: 0,
        sig_size: 0,
        reserved1: 0,
        sig_ptr: 0,
        reserved2: [0; 11],
    };
    // SAFETY: FS_IOC_ENABLE_VERITY reads one `struct fsverity_enable_arg` (128 bytes, the layout
    // above) from the pointer, which lives for the call; salt and signature pointers are NULL
    // with zero sizes.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_ENABLE_VERITY as _, &arg as *const EnableArg) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn measure(fd: BorrowedFd<'_>) -> std::io::Result<[u8; 32]> {
    let mut arg = MeasureArg { digest_algorithm: 0, digest_size: 64, digest: [0; 64] };
    // SAFETY: FS_IOC_MEASURE_VERITY writes at most `digest_size` (64) digest bytes after the
    // two u16 fields of the struct we pass, which is exactly that size and outlives the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_MEASURE_VERITY as _, &mut arg as *mut MeasureArg) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if arg.digest_algorithm != 1 || arg.digest_size != 32 {
        return Err(std::io::Error::other(format!(
            "unexpected fs-verity digest (algorithm {}, {} bytes)",
            arg.digest_algorithm, arg.digest_size
        )));
    }
    let mut d = [0u8; 32];
    d.copy_from_slice(&arg.digest[..32]);
    Ok(d)
}

/// Applies a policy across many files: after the first "not supported", `IfAvailable` stops trying.
#[derive(Debug)]
pub struct Verity {
    policy: VerityPolicy,
    unsupported: bool,
}

impl Verity {
    pub fn new(policy: VerityPolicy) -> Verity {
        Verity { policy, unsupported: false }
    }

    /// Enables fs-verity on `dir/name` (which must have no open writers) and measures it.
    /// `None` when the policy is off or the filesystem has no fs-verity (under `IfAvailable`).
    pub fn apply(&mut self, dir: BorrowedFd<'_>, name: &str, what: &dyn std::fmt::Display) -> Result<Option<[u8; 32]>> {
        if self.policy == VerityPolicy::Off || (self.unsupported && self.policy == VerityPolicy::IfAvailable) {
            return Ok(None);
        }
        let fd: OwnedFd = openat(dir, name, OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW, Mode::empty())
            .map_err(|e| Error::io(format_args!("open {what} for fs-verity"), e.into()))?;
        match enable(fd.as_fd()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => {
                let kind = ErrorKind::from_io(&e);
                if self.policy == VerityPolicy::Require {
                    return Err(Error::new(
                        if kind == ErrorKind::Unsupported { ErrorKind::Unsupported } else { kind },
                        format!("enable fs-verity on {what} (policy require): {e}"),
                    ));
                }
                // Not supported here (ENOTSUP, ENOTTY, EINVAL on a filesystem without the
                // feature...): best effort means no digest, as containers/storage does.
                self.unsupported = true;
                return Ok(None);
            }
        }
        let d = measure(fd.as_fd()).map_err(|e| Error::io(format_args!("measure fs-verity of {what}"), e))?;
        Ok(Some(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_sizes_match_the_uapi() {
        assert_eq!(std::mem::size_of::<EnableArg>(), 128);
        assert_eq!(std::mem::size_of::<MeasureArg>(), 68);
        assert_eq!(VerityPolicy::parse("require").unwrap(), VerityPolicy::Require);
        assert!(VerityPolicy::parse("maybe").is_err());
    }

    #[test]
    fn if_available_never_fails_and_require_fails_without_support() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"data").unwrap();
        let d = std::fs::File::open(dir.path()).unwrap();
        let mut v = Verity::new(VerityPolicy::IfAvailable);
        let got = v.apply(d.as_fd(), "f", &"f").unwrap();
        let mut r = Verity::new(VerityPolicy::Require);
        match r.apply(d.as_fd(), "f", &"f") {
            Ok(digest) => {
                // fs-verity works here: both policies measured the same digest.
                assert_eq!(digest, got);
                assert!(digest.is_some());
            }
            Err(e) => {
                eprintln!("fs-verity unsupported on the temp dir's filesystem: {e}");
                assert_eq!(got, None);
            }
        }
        assert_eq!(Verity::new(VerityPolicy::Off).apply(d.as_fd(), "f", &"f").unwrap(), None);
    }
}

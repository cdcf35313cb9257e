//! Checking a composefs blob's fs-verity digest before it is mounted (SPEC §6.1, §10.8).
//!
//! The kernel's measurement is used when the blob has fs-verity enabled; otherwise the blob (which
//! is metadata-sized) is hashed in userspace. Either way the digest describes the very file
//! descriptor that is then mounted, so a swapped path cannot slip in between check and mount.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::ResultExt;
use crate::image::digest_reader;
use crate::{Error, ErrorKind, Result};

/// `FS_IOC_MEASURE_VERITY` = `_IOWR('f', 134, struct fsverity_digest)`.
const FS_IOC_MEASURE_VERITY: libc::c_ulong = 0xc004_6686;
const FS_VERITY_HASH_ALG_SHA256: u16 = 1;

/// What an fs-verity policy asks for (SPEC §10.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VerityPolicy {
    /// No `verity=` on the overlay.
    Off,
    /// `verity=on` on the overlay when every composefs layer's blob has fs-verity enabled (the
    /// converter enables it on a layer's blob and objects together): digests that are present
    /// are enforced, files without one read normally.
    #[default]
    IfAvailable,
    /// `verity=require` on the overlay, and every composefs layer must come with an expected
    /// blob digest. Objects without fs-verity then fail to open with EIO (SPEC §6.4).
    Require,
}

impl VerityPolicy {
    /// Parses `off`, `if-available` or `require`.
    pub fn parse(s: &str) -> Result<VerityPolicy> {
        match s {
            "off" => Ok(VerityPolicy::Off),
            "if-available" => Ok(VerityPolicy::IfAvailable),
            "require" => Ok(VerityPolicy::Require),
            _ => Err(Error::invalid_argument(format!(
                "verity policy {s:?}: expected \"off\", \"if-available\" or \"require\""
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

/// The kernel's SHA-256 fs-verity digest of `file`, or `None` when the file has no fs-verity
/// (or the filesystem has none, or it uses another hash).
pub(crate) fn measure(file: &File) -> Option<[u8; 32]> {
    #[repr(C)]
    struct FsverityDigest {
        algorithm: u16,
        size: u16,
        digest: [u8; 64],
    }
    let mut d = FsverityDigest { algorithm: 0, size: 64, digest: [0; 64] };
    // SAFETY: FS_IOC_MEASURE_VERITY writes at most `size` digest bytes after the 4-byte header
    // into `d`, which is large enough and outlives the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_MEASURE_VERITY as _, &mut d as *mut FsverityDigest) };
    if rc != 0 || d.algorithm != FS_VERITY_HASH_ALG_SHA256 || d.size != 32 {
        return None;
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(&d.digest[..32]);
    Some(out)
}

/// The fs-verity digest of `file`: measured by the kernel if enabled, else computed.
pub fn file_digest(file: &File, path: &Path) -> Result<[u8; 32]> {
    if let Some(d) = measure(file) {
        return Ok(d);
    }
    let mut f = file;
    f.seek(SeekFrom::Start(0)).with_context(|| format!("seek {}", path.display()))?;
    digest_reader(f).with_context(|| format!("read {} to compute its fs-verity digest", path.display()))
}

/// Refuses `file` unless its fs-verity digest is `expected`.
pub(crate) fn check_blob(file: &File, path: &Path, expected: &[u8; 32]) -> Result<()> {
    let actual = file_digest(file, path)?;
    if &actual != expected {
        return Err(Error::new(
            ErrorKind::Verification,
            format!(
                "composefs blob {}: fs-verity digest is {}, expected {}; refusing to mount it",
                path.display(),
                hex(&actual),
                hex(expected)
            ),
        ));
    }
    Ok(())
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses a 64-character hex SHA-256 fs-verity digest (surrounding whitespace allowed).
pub fn parse_digest(s: &str) -> Result<[u8; 32]> {
    let s = s.trim();
    let bad = || Error::invalid_argument(format!("fs-verity digest {s:?}: expected 64 hex digits"));
    if s.len() != 64 || !s.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::FsVerityHasher;

    #[test]
    fn userspace_digest_matches_known_values() {
        // Empty file and the corpus images' `image_fsverity` (composefs-info measure-file).
        let empty = FsVerityHasher::new().finish();
        assert_eq!(hex(&empty), "3d248ca542a24fc62d1c43b916eae5016878e2533c88238480b26128a1f1af95");
        let corpus = Path::new("/work/shared/corpus/cstorage-images");
        let Ok(tsv) = std::fs::read_to_string(corpus.join("EXPECTED.tsv")) else {
            eprintln!("skipping corpus digests: no corpus");
            return;
        };
        let mut checked = 0;
        for line in tsv.lines().skip(1) {
            let cols: Vec<&str> = line.split('\t').collect();
            let dump = Path::new(cols[0]).file_name().unwrap().to_str().unwrap();
            let image = corpus.join(dump.replace(".dump", ".cfs"));
            if let Ok(f) = File::open(&image) {
                assert_eq!(hex(&file_digest(&f, &image).unwrap()), cols[5], "{}", image.display());
                checked += 1;
            }
        }
        assert!(checked >= 8, "only {checked} corpus images checked");
    }

    #[test]
    fn multi_level_tree_matches_incremental_feeding() {
        // 129 data blocks need a two-level tree; feeding in odd pieces must not change the result.
        let data: Vec<u8> = (0..129 * 4096 + 17).map(|i| (i * 7 % 251) as u8).collect();
        let a = digest_reader(&data[..]).unwrap();
        let mut h = FsVerityHasher::new();
        for c in data.chunks(1000) {
            h.update(c);
        }
        assert_eq!(a, h.finish());
        assert_ne!(a, digest_reader(&data[..data.len() - 1]).unwrap());
    }

    #[test]
    fn digests_parse_and_policies_parse() {
        let d = parse_digest(&"ab".repeat(32)).unwrap();
        assert_eq!(d, [0xab; 32]);
        assert!(parse_digest("abc").is_err());
        assert!(parse_digest(&"zz".repeat(32)).is_err());
        assert_eq!(VerityPolicy::parse("require").unwrap(), VerityPolicy::Require);
        assert!(VerityPolicy::parse("yes").is_err());
    }
}

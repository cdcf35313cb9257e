//! Checking a composefs blob's fs-verity digest before it is mounted (SPEC §6.1, §10.8).
//!
//! The kernel's measurement is used when the blob has fs-verity enabled; otherwise the blob (which
//! is metadata-sized) is hashed in userspace. Either way the digest describes the very file
//! descriptor that is then mounted, so a swapped path cannot slip in between check and mount.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::Path;

use crate::error::ResultExt;
use crate::image::digest_reader;
use crate::{Error, ErrorKind, Result};

pub use crate::layer::verity::VerityPolicy;

/// The kernel's digest of `file`, or `None` when it has no fs-verity.
pub(crate) fn measure(file: &File) -> Option<[u8; 32]> {
    crate::layer::verity::measure(std::os::fd::AsFd::as_fd(file)).ok()
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

pub use crate::source::hex;

/// Parses a 64-character hex SHA-256 fs-verity digest (surrounding whitespace allowed).
pub fn parse_digest(s: &str) -> Result<[u8; 32]> {
    let s = s.trim();
    crate::source::unhex32(s.as_bytes())
        .ok_or_else(|| Error::invalid_argument(format!("fs-verity digest {s:?}: expected 64 hex digits")))
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
        let Some(corpus) = crate::test_corpus() else { return };
        let corpus = corpus.join("cstorage-images");
        let tsv = std::fs::read_to_string(corpus.join("EXPECTED.tsv")).unwrap();
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

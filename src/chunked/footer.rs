//! The zstd:chunked footer at the end of a blob (SPEC §3.4, §3.5): where the TOC and the tar-split
//! are when no annotations are given. A footer-derived TOC digest is unauthenticated.

use crate::{Error, Result};

/// Magic of the current 64-byte footer.
pub const MAGIC_CURRENT: &[u8; 8] = b"GNUlInUx";
/// Magic of the legacy 40-byte footer (podman 4.3 / skopeo 1.9 era) and the 56-byte one.
pub const MAGIC_LEGACY: &[u8; 8] = b"GnUlInUx";
/// The skippable-frame magic zstd:chunked uses (`50 2a 4d 18`).
pub const SKIPPABLE_MAGIC: [u8; 4] = [0x50, 0x2a, 0x4d, 0x18];
/// The only manifest type (`ManifestTypeCRFS`).
pub const MANIFEST_TYPE_CRFS: u64 = 1;

/// Size of the current footer payload.
pub const FOOTER_SIZE: usize = 64;
/// Size of the legacy footer payload.
pub const LEGACY_FOOTER_SIZE: usize = 40;
/// Bytes to read from the end of a blob to find any footer, with its skippable-frame header.
pub const TAIL_SIZE: usize = FOOTER_SIZE + 8;

/// A byte range in the blob: offset of a skippable frame's payload and its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub offset: u64,
    pub length: u64,
    pub uncompressed_length: u64,
}

/// Which format a footer (or annotation set) describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// 64-byte footer, `io.github.containers.*` annotations, with a tar-split.
    Current,
    /// 40-byte footer, `io.containers.*` annotations, no tar-split (SPEC §3.5).
    Legacy,
    /// An eStargz blob (gzip; SPEC §3.8): no tar-split.
    Estargz,
}

/// What a footer says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    pub format: Format,
    pub toc: Position,
    pub tar_split: Option<Position>,
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

/// Parses the footer from the last bytes of a blob (`tail` = up to [`TAIL_SIZE`] final bytes).
pub fn parse(tail: &[u8]) -> Result<Footer> {
    let ends_with = |magic: &[u8; 8]| tail.len() >= 8 && &tail[tail.len() - 8..] == magic;
    if ends_with(MAGIC_CURRENT) {
        let f = framed(tail, FOOTER_SIZE)?;
        check_type(u64_at(f, 24))?;
        let tar_split = Position { offset: u64_at(f, 32), length: u64_at(f, 40), uncompressed_length: u64_at(f, 48) };
        return Ok(Footer {
            format: Format::Current,
            toc: Position { offset: u64_at(f, 0), length: u64_at(f, 8), uncompressed_length: u64_at(f, 16) },
            tar_split: (tar_split.offset > 0).then_some(tar_split),
        });
    }
    if ends_with(MAGIC_LEGACY) {
        let f = framed(tail, LEGACY_FOOTER_SIZE)?;
        check_type(u64_at(f, 24))?;
        return Ok(Footer {
            format: Format::Legacy,
            toc: Position { offset: u64_at(f, 0), length: u64_at(f, 8), uncompressed_length: u64_at(f, 16) },
            tar_split: None,
        });
    }
    if is_estargz_footer(tail) {
        return Err(Error::unsupported("the blob is an estargz layer, which this library does not read"));
    }
    Err(Error::format(
        "no zstd:chunked footer at the end of the blob (expected magic \"GNUlInUx\" or \"GnUlInUx\"); \
         pass the layer's annotations, or convert it as a plain layer",
    ))
}

/// The footer payload of `size` bytes, checking the skippable-frame header right before it.
fn framed(tail: &[u8], size: usize) -> Result<&[u8]> {
    if tail.len() < size + 8 {
        return Err(Error::format(format!("blob too short for a {size}-byte zstd:chunked footer")));
    }
    let start = tail.len() - size;
    let header = &tail[start - 8..start];
    let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if header[..4] != SKIPPABLE_MAGIC || len != size {
        return Err(Error::format(format!(
            "zstd:chunked footer is not in a {size}-byte skippable frame (header {:02x?})",
            header
        )));
    }
    Ok(&tail[start..])
}

fn check_type(t: u64) -> Result<()> {
    if t != MANIFEST_TYPE_CRFS {
        return Err(Error::format(format!("invalid zstd:chunked manifest type {t} (expected 1)")));
    }
    Ok(())
}

/// estargz ends with a 51-byte gzip member whose extra field holds `%016xSTARGZ` (SPEC §3.8).
fn is_estargz_footer(tail: &[u8]) -> bool {
    tail.len() >= 51 && tail[tail.len() - 51..].windows(6).any(|w| w == b"STARGZ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current(toc: (u64, u64, u64), ts: (u64, u64, u64)) -> Vec<u8> {
        let mut v = SKIPPABLE_MAGIC.to_vec();
        v.extend_from_slice(&64u32.to_le_bytes());
        for x in [toc.0, toc.1, toc.2, 1, ts.0, ts.1, ts.2] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        v.extend_from_slice(MAGIC_CURRENT);
        v
    }

    #[test]
    fn parses_current_footer() {
        let f = parse(&current((269, 332, 620), (609, 362, 14062))).unwrap();
        assert_eq!(f.format, Format::Current);
        assert_eq!(f.toc, Position { offset: 269, length: 332, uncompressed_length: 620 });
        assert_eq!(f.tar_split, Some(Position { offset: 609, length: 362, uncompressed_length: 14062 }));
    }

    #[test]
    fn rejects_bad_type_frame_and_missing_magic() {
        let mut v = current((1, 2, 3), (0, 0, 0));
        v[8 + 24] = 2;
        assert!(parse(&v).unwrap_err().to_string().contains("manifest type 2"));
        let mut v = current((1, 2, 3), (0, 0, 0));
        v[4] = 63;
        assert!(parse(&v).unwrap_err().to_string().contains("skippable frame"));
        assert!(parse(b"just some bytes").unwrap_err().to_string().contains("no zstd:chunked footer"));
        assert!(parse(&[]).is_err());
    }
}

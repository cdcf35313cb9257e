//! On-disk constants and small encoders of the composefs EROFS image (SPEC §5.5–5.7).
//! All integers are little-endian.

/// Block size and its log2; composefs images always use 4096.
pub const BLOCK_SIZE: u64 = 4096;
pub const BLOCK_BITS: u8 = 12;
/// Inodes start on 32-byte slots; a nid is a byte offset / 32.
pub const SLOT_SIZE: u64 = 32;

/// The composefs header at offset 0.
pub const COMPOSEFS_MAGIC: u32 = 0xd078_629a;
pub const COMPOSEFS_HEADER_VERSION: u32 = 1;
pub const COMPOSEFS_FLAGS_HAS_ACL: u32 = 1;
/// The highest composefs format version (`LCFS_VERSION_MAX`).
pub const COMPOSEFS_VERSION_MAX: u32 = 1;

/// The EROFS superblock at offset 1024, 128 bytes long.
pub const SUPERBLOCK_OFFSET: u64 = 1024;
pub const SUPERBLOCK_SIZE: u64 = 128;
pub const EROFS_MAGIC: u32 = 0xE0F5_E1E2;
pub const FEATURE_COMPAT_MTIME: u32 = 0x2;
pub const FEATURE_COMPAT_XATTR_FILTER: u32 = 0x4;
/// Where the first inode goes: right after the superblock.
pub const INODES_START: u64 = SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE;

pub const COMPACT_INODE_SIZE: u64 = 32;
pub const EXTENDED_INODE_SIZE: u64 = 64;

/// `i_format` data layouts (shifted left by 1; bit 0 is "extended").
pub const LAYOUT_FLAT_PLAIN: u16 = 0;
pub const LAYOUT_FLAT_INLINE: u16 = 2;
pub const LAYOUT_CHUNK_BASED: u16 = 4;

/// Dirent file types.
pub const FT_UNKNOWN: u8 = 0;
pub const FT_REG: u8 = 1;
pub const FT_DIR: u8 = 2;
pub const FT_CHR: u8 = 3;
pub const FT_BLK: u8 = 4;
pub const FT_FIFO: u8 = 5;
pub const FT_SOCK: u8 = 6;
pub const FT_SYMLINK: u8 = 7;
pub const DIRENT_SIZE: u64 = 12;

/// Xattr body header and entry header sizes.
pub const XATTR_IBODY_HEADER_SIZE: u64 = 12;
pub const XATTR_ENTRY_HEADER_SIZE: u64 = 4;
pub const XATTR_FILTER_SEED: u32 = 0x25BB_E08F;
/// At most this many shared xattr references per inode (`EROFS_XATTR_LONG_PREFIX`).
pub const MAX_SHARED_PER_INODE: usize = 128;

/// The chunk format bits field mask; chunkbits is capped at 12 + this.
pub const CHUNK_FORMAT_BLKBITS_MASK: u32 = 0x1f;
/// Files needing more chunk index entries than fit in one block are rejected (`EFBIG`).
pub const MAX_CHUNKS: u64 = 1024;

/// Xattr name prefixes by index; the first match wins (SPEC §5.6). Index 0 is "no prefix".
pub const XATTR_PREFIXES: [(&[u8], u8); 5] = [
    (b"user.", 1),
    (b"system.posix_acl_access", 2),
    (b"system.posix_acl_default", 3),
    (b"trusted.", 4),
    (b"security.", 6),
];

/// The prefix index and the remaining suffix of an xattr key.
pub fn split_xattr_key(key: &[u8]) -> (u8, &[u8]) {
    for (prefix, index) in XATTR_PREFIXES {
        // The first byte rules out most prefixes without a comparison call (the image writer
        // splits every distinct pair's key: hundreds of thousands for a rootfs).
        if key.first() == prefix.first() {
            if let Some(rest) = key.strip_prefix(prefix) {
                return (index, rest);
            }
        }
    }
    (0, key)
}

/// The prefix for an index, as the reader needs it.
pub fn xattr_prefix(index: u8) -> Option<&'static [u8]> {
    match index {
        0 => Some(b""),
        _ => XATTR_PREFIXES.iter().find(|(_, i)| *i == index).map(|(p, _)| *p),
    }
}

/// Bytes an xattr entry takes: header, suffix and value, padded to 4.
pub fn xattr_entry_size(suffix_len: usize, value_len: usize) -> u64 {
    round_up(XATTR_ENTRY_HEADER_SIZE + suffix_len as u64 + value_len as u64, 4)
}

pub fn round_up(x: u64, to: u64) -> u64 {
    x.div_ceil(to) * to
}

/// The chunk size bits for an external file of `size` bytes (`compute_erofs_chunk_bitsize`).
pub fn chunk_bits(size: u64) -> u32 {
    let bits = if size > 1 { 64 - (size - 1).leading_zeros() } else { 0 };
    bits.clamp(BLOCK_BITS as u32, CHUNK_FORMAT_BLKBITS_MASK + BLOCK_BITS as u32)
}

/// The number of chunk index entries for an external file of `size` bytes.
pub fn chunk_count(size: u64) -> u64 {
    size.div_ceil(1u64 << chunk_bits(size))
}

/// XXH32 as the kernel's EROFS xattr name filter uses it.
pub fn xxh32(input: &[u8], seed: u32) -> u32 {
    const P1: u32 = 2_654_435_761;
    const P2: u32 = 2_246_822_519;
    const P3: u32 = 3_266_489_917;
    const P4: u32 = 668_265_263;
    const P5: u32 = 374_761_393;
    fn round(acc: u32, lane: u32) -> u32 {
        acc.wrapping_add(lane.wrapping_mul(P2)).rotate_left(13).wrapping_mul(P1)
    }
    let le32 = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let mut p = input;
    let mut h = if p.len() >= 16 {
        let mut v = [seed.wrapping_add(P1).wrapping_add(P2), seed.wrapping_add(P2), seed, seed.wrapping_sub(P1)];
        while p.len() >= 16 {
            for (i, lane) in v.iter_mut().enumerate() {
                *lane = round(*lane, le32(&p[i * 4..]));
            }
            p = &p[16..];
        }
        v[0].rotate_left(1)
            .wrapping_add(v[1].rotate_left(7))
            .wrapping_add(v[2].rotate_left(12))
            .wrapping_add(v[3].rotate_left(18))
    } else {
        seed.wrapping_add(P5)
    };
    h = h.wrapping_add(input.len() as u32);
    while p.len() >= 4 {
        h = h.wrapping_add(le32(p).wrapping_mul(P3)).rotate_left(17).wrapping_mul(P4);
        p = &p[4..];
    }
    for &b in p {
        h = h.wrapping_add((b as u32).wrapping_mul(P5)).rotate_left(11).wrapping_mul(P1);
    }
    h ^= h >> 15;
    h = h.wrapping_mul(P2);
    h ^= h >> 13;
    h = h.wrapping_mul(P3);
    h ^ (h >> 16)
}

/// The name-filter bit of one xattr.
pub fn xattr_filter_bit(index: u8, suffix: &[u8]) -> u32 {
    1u32 << (xxh32(suffix, XATTR_FILTER_SEED.wrapping_add(index as u32)) & 31)
}

/// Little-endian field writers into a fixed buffer.
pub fn put_u16(buf: &mut [u8], off: usize, v: u16) {
    buf[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
pub fn put_u32(buf: &mut [u8], off: usize, v: u32) {
    buf[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
pub fn put_u64(buf: &mut [u8], off: usize, v: u64) {
    buf[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xxh32_matches_reference_vectors() {
        // Reference values of the standard XXH32.
        assert_eq!(xxh32(b"", 0), 0x02CC_5D05);
        assert_eq!(xxh32(b"a", 0), 0x550D_7456);
        assert_eq!(xxh32(b"abc", 0), 0x32D1_53FF);
        assert_eq!(xxh32(b"Nobody inspects the spammish repetition", 0), 0xE229_3B2F);
    }

    #[test]
    fn chunk_bits_follow_mkcomposefs() {
        assert_eq!(chunk_bits(1), 12);
        assert_eq!(chunk_bits(4096), 12);
        assert_eq!(chunk_bits(4097), 13);
        assert_eq!(chunk_count(4097), 1);
        assert_eq!(chunk_bits(u64::MAX), 43);
        assert_eq!(chunk_count(9_000_000_000_000_000), 1024);
    }
}

//! Userspace fs-verity digests (sha256, 4096-byte blocks, no salt; SPEC §6.1), equal to what
//! `FS_IOC_MEASURE_VERITY` reports, so a digest is known even where the filesystem has no
//! fs-verity.
//!
//! [`FsVerityHasher`] streams: it keeps one partial data block and one partial block of hashes
//! per Merkle tree level (a few KiB for any file size), never the whole tree.

use std::io::Read;

use sha2::{Digest, Sha256};

use crate::{Error, Result};

const BLOCK: usize = 4096;
const HASH: usize = 32;

/// One level of the Merkle tree being built: the hashes of the level below, a block at a time.
struct Level {
    block: Box<[u8; BLOCK]>,
    filled: usize,
    /// Hashes this level has received in total.
    received: u64,
}

/// A streaming fs-verity (sha256, 4 KiB) digest.
pub struct FsVerityHasher {
    data: Box<[u8; BLOCK]>,
    data_filled: usize,
    size: u64,
    levels: Vec<Level>,
}

impl Default for FsVerityHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl FsVerityHasher {
    pub fn new() -> FsVerityHasher {
        FsVerityHasher { data: Box::new([0; BLOCK]), data_filled: 0, size: 0, levels: Vec::new() }
    }

    /// Feeds more file content.
    pub fn update(&mut self, mut bytes: &[u8]) {
        self.size += bytes.len() as u64;
        while !bytes.is_empty() {
            if self.data_filled == 0 && bytes.len() >= BLOCK {
                // Whole blocks straight from the input.
                let hash: [u8; HASH] = Sha256::digest(&bytes[..BLOCK]).into();
                self.push_hash(0, &hash);
                bytes = &bytes[BLOCK..];
                continue;
            }
            let n = (BLOCK - self.data_filled).min(bytes.len());
            self.data[self.data_filled..self.data_filled + n].copy_from_slice(&bytes[..n]);
            self.data_filled += n;
            bytes = &bytes[n..];
            if self.data_filled == BLOCK {
                let hash: [u8; HASH] = Sha256::digest(&self.data[..]).into();
                self.push_hash(0, &hash);
                self.data_filled = 0;
            }
        }
    }

    /// Adds a hash to `level`, hashing the level's block into the next level when it fills.
    fn push_hash(&mut self, level: usize, hash: &[u8; HASH]) {
        if self.levels.len() == level {
            self.levels.push(Level { block: Box::new([0; BLOCK]), filled: 0, received: 0 });
        }
        let l = &mut self.levels[level];
        l.block[l.filled..l.filled + HASH].copy_from_slice(hash);
        l.filled += HASH;
        l.received += 1;
        if l.filled == BLOCK {
            let up: [u8; HASH] = Sha256::digest(&l.block[..]).into();
            l.filled = 0;
            self.push_hash(level + 1, &up);
        }
    }

    /// The file digest: sha256 of the fs-verity descriptor.
    pub fn finish(mut self) -> [u8; 32] {
        let mut root = [0u8; HASH];
        if self.size > 0 {
            if self.data_filled > 0 {
                self.data[self.data_filled..].fill(0);
                let hash: [u8; HASH] = Sha256::digest(&self.data[..]).into();
                self.data_filled = 0;
                self.push_hash(0, &hash);
            }
            // Walk up: the first level that received exactly one hash holds the root hash;
            // below it, flush each partial block (zero-padded) into the level above.
            let mut level = 0;
            loop {
                let l = &mut self.levels[level];
                if l.received == 1 && l.filled == HASH {
                    root.copy_from_slice(&l.block[..HASH]);
                    break;
                }
                if l.filled > 0 {
                    l.block[l.filled..].fill(0);
                    let up: [u8; HASH] = Sha256::digest(&l.block[..]).into();
                    l.filled = 0;
                    self.push_hash(level + 1, &up);
                }
                level += 1;
            }
        }
        let mut desc = [0u8; 256];
        desc[0] = 1; // version
        desc[1] = 1; // FS_VERITY_HASH_ALG_SHA256
        desc[2] = 12; // log2(block size)
        desc[8..16].copy_from_slice(&self.size.to_le_bytes());
        desc[16..16 + HASH].copy_from_slice(&root);
        Sha256::digest(desc).into()
    }
}

/// The fs-verity digest of everything `reader` yields.
pub fn digest_reader(mut reader: impl Read) -> Result<[u8; 32]> {
    let mut h = FsVerityHasher::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(h.finish()),
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("reading data for its fs-verity digest", e)),
        }
    }
}

/// The fs-verity digest of a byte slice.
pub fn digest_bytes(bytes: &[u8]) -> [u8; 32] {
    let mut h = FsVerityHasher::new();
    h.update(bytes);
    h.finish()
}

/// Lowercase hex of a digest.
pub fn to_hex(digest: &[u8; 32]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A straightforward, whole-tree-in-memory Merkle tree, as the kernel documentation
    /// describes it, to check the streaming one against.
    fn reference(data: &[u8]) -> [u8; 32] {
        let mut root = [0u8; 32];
        if !data.is_empty() {
            let mut level: Vec<u8> = data.to_vec();
            let mut first = true;
            loop {
                let n_blocks = level.len().div_ceil(BLOCK);
                if !first && n_blocks == 1 && level.len() == HASH {
                    root.copy_from_slice(&level);
                    break;
                }
                first = false;
                level.resize(n_blocks * BLOCK, 0);
                let mut next = Vec::new();
                for b in level.chunks(BLOCK) {
                    next.extend_from_slice(&Sha256::digest(b));
                }
                level = next;
            }
        }
        let mut desc = [0u8; 256];
        desc[0] = 1;
        desc[1] = 1;
        desc[2] = 12;
        desc[8..16].copy_from_slice(&(data.len() as u64).to_le_bytes());
        desc[16..48].copy_from_slice(&root);
        Sha256::digest(desc).into()
    }

    #[test]
    fn known_digests() {
        // The empty file: the descriptor with a zero root hash and size 0. (Whole images are
        // checked against `composefs-info measure-file` results in tests/image_fsverity.rs.)
        assert_eq!(to_hex(&digest_bytes(b"")), "3d248ca542a24fc62d1c43b916eae5016878e2533c88238480b26128a1f1af95");
    }

    #[test]
    fn streaming_matches_reference_at_level_boundaries() {
        let sizes = [1usize, 4095, 4096, 4097, 128 * 4096, 128 * 4096 + 1, 129 * 4096, 3 * 128 * 4096 + 5];
        for size in sizes {
            let data: Vec<u8> = (0..size).map(|i| (i * 7 + i / 4096) as u8).collect();
            let want = reference(&data);
            assert_eq!(digest_bytes(&data), want, "size {size}");
            // Odd-sized updates.
            let mut h = FsVerityHasher::new();
            for chunk in data.chunks(1000) {
                h.update(chunk);
            }
            assert_eq!(h.finish(), want, "size {size} chunked");
            assert_eq!(digest_reader(&data[..]).unwrap(), want);
        }
    }
}

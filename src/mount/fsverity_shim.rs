//! Userspace fs-verity digest (SHA-256, 4096-byte blocks, no salt: SPEC §6.1).
//!
//! TEMPORARY: the image module will provide `image::fsverity::{FsVerityHasher, digest_reader}`;
//! this copy has the same shape so that switching is a one-line change once it lands on `main`.

use std::io::{self, Read};

use sha2::{Digest, Sha256};

const BLOCK: usize = 4096;

/// Streaming fs-verity hasher: memory is one block per Merkle tree level.
pub struct FsVerityHasher {
    data: Vec<u8>,
    /// Partial block of hashes per tree level (level 0 holds the data blocks' hashes).
    levels: Vec<Vec<u8>>,
    /// Blocks completed per level.
    blocks: Vec<u64>,
    size: u64,
}

impl Default for FsVerityHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl FsVerityHasher {
    pub fn new() -> FsVerityHasher {
        FsVerityHasher { data: Vec::with_capacity(BLOCK), levels: Vec::new(), blocks: Vec::new(), size: 0 }
    }

    pub fn update(&mut self, mut buf: &[u8]) {
        self.size += buf.len() as u64;
        while !buf.is_empty() {
            let n = (BLOCK - self.data.len()).min(buf.len());
            self.data.extend_from_slice(&buf[..n]);
            buf = &buf[n..];
            if self.data.len() == BLOCK {
                let h = Sha256::digest(&self.data);
                self.data.clear();
                self.push(0, &h);
            }
        }
    }

    fn push(&mut self, level: usize, hash: &[u8]) {
        if self.levels.len() <= level {
            self.levels.push(Vec::with_capacity(BLOCK));
            self.blocks.push(0);
        }
        self.levels[level].extend_from_slice(hash);
        if self.levels[level].len() == BLOCK {
            let h = Sha256::digest(&self.levels[level]);
            self.levels[level].clear();
            self.blocks[level] += 1;
            self.push(level + 1, &h);
        }
    }

    /// The file digest: SHA-256 of the fs-verity descriptor.
    pub fn finish(mut self) -> [u8; 32] {
        let mut root = [0u8; 32];
        if self.size > 0 {
            if !self.data.is_empty() {
                self.data.resize(BLOCK, 0);
                let h = Sha256::digest(&self.data);
                self.push(0, &h);
            }
            let mut level = 0;
            loop {
                if !self.levels[level].is_empty() {
                    self.levels[level].resize(BLOCK, 0);
                    let h = Sha256::digest(&self.levels[level]);
                    self.levels[level].clear();
                    self.blocks[level] += 1;
                    self.push(level + 1, &h);
                }
                if self.blocks[level] == 1 {
                    root.copy_from_slice(&self.levels[level + 1][..32]);
                    break;
                }
                level += 1;
            }
        }
        let mut desc = [0u8; 256];
        desc[0] = 1; // version
        desc[1] = 1; // FS_VERITY_HASH_ALG_SHA256
        desc[2] = 12; // log2(block size)
        desc[8..16].copy_from_slice(&self.size.to_le_bytes());
        desc[16..48].copy_from_slice(&root);
        Sha256::digest(desc).into()
    }
}

/// The fs-verity digest of everything `r` yields.
pub fn digest_reader(mut r: impl Read) -> io::Result<[u8; 32]> {
    let mut h = FsVerityHasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(h.finish()),
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

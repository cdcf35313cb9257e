//! CRC-64 with the ISO polynomial, as Go's `hash/crc64` computes it (tar-split stores it as the
//! big-endian `payload` of each file entry: SPEC §3.6.6). Every file byte of a conversion passes
//! through it, so it uses `crc-fast` (carry-less multiplication folding, ~25 GB/s here, against
//! ~2 GB/s for a slicing-by-16 table: the table version cost as much as the files' sha256).

use crc_fast::{CrcAlgorithm, Digest};

/// A running CRC-64/ISO (Go `crc64.New(crc64.MakeTable(crc64.ISO))`).
#[derive(Clone)]
pub struct Crc64 {
    digest: Digest,
}

impl std::fmt::Debug for Crc64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crc64").field("sum", &self.sum()).finish()
    }
}

impl Default for Crc64 {
    fn default() -> Self {
        Crc64::new()
    }
}

impl Crc64 {
    pub fn new() -> Crc64 {
        Crc64 { digest: Digest::new(CrcAlgorithm::Crc64GoIso) }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.digest.update(data);
    }

    /// The checksum as Go's `Sum(nil)` returns it: 8 bytes, big-endian.
    pub fn sum(&self) -> [u8; 8] {
        self.digest.finalize().to_be_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bit-at-a-time CRC-64/ISO (reflected polynomial 0xD800000000000000), as Go's table
    /// builder derives it: the reference the fast version must match.
    fn reference(data: &[u8]) -> u64 {
        let mut crc = !0u64;
        for &b in data {
            crc ^= b as u64;
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0xD800_0000_0000_0000 } else { crc >> 1 };
            }
        }
        !crc
    }

    #[test]
    fn matches_go_crc64_iso() {
        // Go: crc64.Checksum([]byte("123456789"), crc64.MakeTable(crc64.ISO)) == 0xb90956c775a41001
        let mut c = Crc64::new();
        c.update(b"123456789");
        assert_eq!(c.sum(), 0xb90956c775a41001u64.to_be_bytes());
        assert_eq!(Crc64::new().sum(), [0; 8]);
    }

    #[test]
    fn matches_reference_for_every_length_and_split() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        for len in (0..300).chain([1023, 1024, 1025, 4096, 5000]) {
            let mut c = Crc64::new();
            c.update(&data[..len]);
            assert_eq!(c.sum(), reference(&data[..len]).to_be_bytes(), "length {len}");
        }
        let mut split = Crc64::new();
        for part in data.chunks(13) {
            split.update(part);
        }
        assert_eq!(split.sum(), reference(&data).to_be_bytes());
    }
}

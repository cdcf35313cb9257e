//! CRC-64 with the ISO polynomial, as Go's `hash/crc64` computes it (tar-split stores it as the
//! big-endian `payload` of each file entry: SPEC §3.6.6). Slicing-by-16, since every file byte
//! passes through it.

const POLY: u64 = 0xD800_0000_0000_0000; // ISO 3309, reflected

const fn make_tables() -> [[u64; 256]; 16] {
    let mut t = [[0u64; 256]; 16];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u64;
        let mut j = 0;
        while j < 8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ POLY } else { crc >> 1 };
            j += 1;
        }
        t[0][i] = crc;
        i += 1;
    }
    let mut i = 0;
    while i < 256 {
        let mut crc = t[0][i];
        let mut k = 1;
        while k < 16 {
            crc = t[0][(crc & 0xff) as usize] ^ (crc >> 8);
            t[k][i] = crc;
            k += 1;
        }
        i += 1;
    }
    t
}

static TABLES: [[u64; 256]; 16] = make_tables();

/// A running CRC-64/ISO (Go `crc64.New(crc64.MakeTable(crc64.ISO))`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Crc64 {
    state: u64,
}

impl Crc64 {
    pub fn new() -> Crc64 {
        Crc64 { state: 0 }
    }

    pub fn update(&mut self, data: &[u8]) {
        let t = &TABLES;
        let mut crc = !self.state;
        let mut chunks = data.chunks_exact(16);
        for c in &mut chunks {
            let lo = crc ^ u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            let hi = u64::from_le_bytes([c[8], c[9], c[10], c[11], c[12], c[13], c[14], c[15]]);
            crc = t[15][(lo & 0xff) as usize]
                ^ t[14][((lo >> 8) & 0xff) as usize]
                ^ t[13][((lo >> 16) & 0xff) as usize]
                ^ t[12][((lo >> 24) & 0xff) as usize]
                ^ t[11][((lo >> 32) & 0xff) as usize]
                ^ t[10][((lo >> 40) & 0xff) as usize]
                ^ t[9][((lo >> 48) & 0xff) as usize]
                ^ t[8][(lo >> 56) as usize]
                ^ t[7][(hi & 0xff) as usize]
                ^ t[6][((hi >> 8) & 0xff) as usize]
                ^ t[5][((hi >> 16) & 0xff) as usize]
                ^ t[4][((hi >> 24) & 0xff) as usize]
                ^ t[3][((hi >> 32) & 0xff) as usize]
                ^ t[2][((hi >> 40) & 0xff) as usize]
                ^ t[1][((hi >> 48) & 0xff) as usize]
                ^ t[0][(hi >> 56) as usize];
        }
        for &b in chunks.remainder() {
            crc = t[0][((crc ^ b as u64) & 0xff) as usize] ^ (crc >> 8);
        }
        self.state = !crc;
    }

    /// The checksum as Go's `Sum(nil)` returns it: 8 bytes, big-endian.
    pub fn sum(&self) -> [u8; 8] {
        self.state.to_be_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_go_crc64_iso() {
        // Go: crc64.Checksum([]byte("123456789"), crc64.MakeTable(crc64.ISO)) == 0xb90956c775a41001
        let mut c = Crc64::new();
        c.update(b"123456789");
        assert_eq!(c.sum(), 0xb90956c775a41001u64.to_be_bytes());
        // Split updates equal one update (slicing path and byte path agree).
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut a = Crc64::new();
        a.update(&data);
        let mut b = Crc64::new();
        for part in data.chunks(13) {
            b.update(part);
        }
        assert_eq!(a.sum(), b.sum());
        assert_eq!(Crc64::new().sum(), [0; 8]);
    }
}

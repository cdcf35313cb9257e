//! A minimal ustar writer for tests that need layers of a chosen shape (no tar crate here).

/// A tar archive being built in memory.
#[derive(Default)]
pub struct TarBuilder {
    out: Vec<u8>,
}

impl TarBuilder {
    pub fn new() -> TarBuilder {
        TarBuilder::default()
    }

    /// A regular file `name` (at most 100 bytes), mode 0644.
    pub fn file(&mut self, name: &str, content: &[u8]) -> &mut Self {
        self.entry(name, b'0', 0o644, content, "")
    }

    /// A directory `name` (without a trailing slash), mode 0755.
    pub fn dir(&mut self, name: &str) -> &mut Self {
        self.entry(&format!("{name}/"), b'5', 0o755, &[], "")
    }

    /// Any entry: `kind` is the ustar type flag ('0' file, '1' hardlink, '2' symlink, '3' char
    /// device, '4' block device, '5' directory, '6' fifo).
    pub fn entry(&mut self, name: &str, kind: u8, mode: u32, content: &[u8], link: &str) -> &mut Self {
        assert!(name.len() <= 100 && link.len() <= 100, "ustar names are at most 100 bytes");
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        octal(&mut h[100..108], u64::from(mode));
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], content.len() as u64);
        octal(&mut h[136..148], 1_700_000_000);
        h[156] = kind;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        self.out.extend_from_slice(&h);
        self.out.extend_from_slice(content);
        self.out.resize(self.out.len().div_ceil(512) * 512, 0);
        self
    }

    /// A PAX extended header ('x') for the next entry: records such as `("path", name)` or
    /// `("SCHILY.xattr.user.k", value)`.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut body = Vec::new();
        for (k, v) in records {
            // "<len> <key>=<value>\n", where len counts itself.
            let rest = k.len() + v.len() + 3;
            let mut len = rest + 1;
            while len.to_string().len() + rest != len {
                len = len.to_string().len() + rest;
            }
            body.extend_from_slice(format!("{len} {k}=").as_bytes());
            body.extend_from_slice(v);
            body.push(b'\n');
        }
        self.entry("PaxHeaders/x", b'x', 0o644, &body, "")
    }

    /// Appends raw bytes (for truncated or corrupt archives).
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.out.extend_from_slice(bytes);
        self
    }

    /// The archive so far, without end blocks.
    pub fn unfinished(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// The archive with its two end blocks.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.out);
        out.resize(out.len() + 1024, 0);
        out
    }
}

/// `value` as zero-padded octal filling the field but its last byte (NUL).
fn octal(field: &mut [u8], value: u64) {
    let s = format!("{value:0width$o}", width = field.len() - 1);
    field[..s.len()].copy_from_slice(s.as_bytes());
}

/// Deterministic content of `len` bytes for `seed` (distinct seeds give distinct contents).
pub fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    v.extend_from_slice(&seed.to_le_bytes());
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len.max(8));
    v
}

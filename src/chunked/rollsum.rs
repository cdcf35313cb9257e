//! The rolling checksum that places zstd:chunked chunk boundaries (SPEC §3.6.3): the bup/Perkeep
//! rollsum containers/storage uses (64-byte window, character offset 31, u32 arithmetic), split
//! where the low [`ROLLSUM_BITS`] bits of `s2` are all ones. The same bytes must split at the
//! same places as upstream, or chunks never match across tools.

const WINDOW: usize = 64;
const CHAR_OFFSET: u32 = 31;
/// `RollsumBits`: about one split every 64 KiB.
pub const ROLLSUM_BITS: u32 = 16;
const SPLIT_MASK: u32 = (1 << ROLLSUM_BITS) - 1;

#[derive(Clone)]
pub struct RollSum {
    s1: u32,
    s2: u32,
    window: [u8; WINDOW],
    wofs: usize,
}

impl Default for RollSum {
    fn default() -> Self {
        Self::new()
    }
}

impl RollSum {
    pub fn new() -> RollSum {
        RollSum {
            s1: WINDOW as u32 * CHAR_OFFSET,
            s2: WINDOW as u32 * (WINDOW as u32 - 1) * CHAR_OFFSET,
            window: [0; WINDOW],
            wofs: 0,
        }
    }

    #[inline]
    pub fn roll(&mut self, ch: u8) {
        let drop = u32::from(self.window[self.wofs]);
        self.s1 = self.s1.wrapping_add(u32::from(ch)).wrapping_sub(drop);
        self.s2 = self.s2.wrapping_add(self.s1).wrapping_sub((WINDOW as u32).wrapping_mul(drop + CHAR_OFFSET));
        self.window[self.wofs] = ch;
        self.wofs = (self.wofs + 1) & (WINDOW - 1);
    }

    /// Rolls `n` zero bytes. Once the window holds only zeros, more zeros change nothing but the
    /// window position, so long runs cost at most one window of work.
    pub fn roll_zeros(&mut self, n: u64) {
        let direct = n.min(WINDOW as u64);
        for _ in 0..direct {
            self.roll(0);
        }
        self.wofs = (self.wofs + ((n - direct) % WINDOW as u64) as usize) & (WINDOW - 1);
    }

    /// Whether the bytes rolled so far end a chunk (`OnSplitWithBits(RollsumBits)`).
    #[inline]
    pub fn on_split(&self) -> bool {
        self.s2 & SPLIT_MASK == SPLIT_MASK
    }

    /// `(s1 << 16) | (s2 & 0xffff)`, as upstream's `Digest`.
    pub fn digest(&self) -> u32 {
        (self.s1 << 16) | (self.s2 & 0xffff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(data: &[u8]) -> u32 {
        let mut r = RollSum::new();
        data.iter().for_each(|&b| r.roll(b));
        r.digest()
    }

    #[test]
    fn depends_only_on_the_last_window() {
        // The property upstream's TestSum checks: the sum of a stream equals the sum of its tail.
        let mut x: u32 = 4;
        let buf: Vec<u8> = (0..100_000)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        assert_eq!(sum(&buf), sum(&buf[1..]));
        assert_eq!(sum(&buf[..buf.len() - WINDOW]), sum(&buf[buf.len() - WINDOW * 5 / 2..buf.len() - WINDOW]));
        assert_eq!(sum(&buf[..WINDOW + 3]), sum(&buf[3..WINDOW + 3]));
        let mut r = RollSum::new();
        buf[..WINDOW].iter().for_each(|&b| r.roll(b));
        for i in 0..500 {
            assert_eq!(r.digest(), sum(&buf[i..i + WINDOW]), "at {i}");
            r.roll(buf[i + WINDOW]);
        }
    }

    #[test]
    fn zero_runs_roll_like_single_zeros() {
        for n in [0u64, 1, 63, 64, 65, 200, 4097] {
            let mut a = RollSum::new();
            let mut b = RollSum::new();
            for &c in b"some leading bytes" {
                a.roll(c);
                b.roll(c);
            }
            a.roll_zeros(n);
            (0..n).for_each(|_| b.roll(0));
            for &c in b"and some trailing bytes after the run, longer than a window? no, but enough" {
                a.roll(c);
                b.roll(c);
                assert_eq!(a.digest(), b.digest(), "n={n}");
            }
        }
    }
}

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

    /// Rolls the bytes of `data` up to its first zero byte (not rolled) or its first split (rolled);
    /// how many bytes were rolled, and whether they end at a split.
    #[inline]
    pub fn roll_to_split_or_zero(&mut self, data: &[u8]) -> (usize, bool) {
        self.roll_slice::<true>(data)
    }

    /// Rolls the bytes of `data` up to its first split (rolled); how many bytes were rolled, and
    /// whether they end at a split.
    #[inline]
    pub fn roll_to_split(&mut self, data: &[u8]) -> (usize, bool) {
        self.roll_slice::<false>(data)
    }

    /// The same sums as [`Self::roll`] byte by byte, kept in registers: this loop is the writer's
    /// own largest cost.
    #[inline(always)]
    fn roll_slice<const STOP_AT_ZERO: bool>(&mut self, data: &[u8]) -> (usize, bool) {
        let (mut s1, mut s2, mut wofs) = (self.s1, self.s2, self.wofs);
        let mut rolled = data.len();
        let mut split = false;
        for (i, &ch) in data.iter().enumerate() {
            if STOP_AT_ZERO && ch == 0 {
                rolled = i;
                break;
            }
            // (`wofs` is below WINDOW: the mask only spares a bounds check.)
            let drop = u32::from(self.window[wofs & (WINDOW - 1)]);
            s1 = s1.wrapping_add(u32::from(ch)).wrapping_sub(drop);
            s2 = s2.wrapping_add(s1).wrapping_sub((WINDOW as u32).wrapping_mul(drop + CHAR_OFFSET));
            self.window[wofs & (WINDOW - 1)] = ch;
            wofs = (wofs + 1) & (WINDOW - 1);
            if s2 & SPLIT_MASK == SPLIT_MASK {
                rolled = i + 1;
                split = true;
                break;
            }
        }
        (self.s1, self.s2, self.wofs) = (s1, s2, wofs);
        (rolled, split)
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

    /// `n` pseudo-random bytes from `seed`; with `zeros`, about a tenth of them zero.
    fn bytes(seed: u32, n: usize, zeros: bool) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                match zeros && (x >> 8).is_multiple_of(10) {
                    true => 0,
                    false => (x >> 16) as u8,
                }
            })
            .collect()
    }

    fn sum(data: &[u8]) -> u32 {
        let mut r = RollSum::new();
        data.iter().for_each(|&b| r.roll(b));
        r.digest()
    }

    #[test]
    fn depends_only_on_the_last_window() {
        // The property upstream's TestSum checks: the sum of a stream equals the sum of its tail.
        let buf = bytes(4, 100_000, false);
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

    #[test]
    fn rolling_a_slice_stops_where_rolling_byte_by_byte_splits_or_meets_a_zero() {
        // Pseudo-random bytes, a tenth of them zero, long enough for many splits.
        let data = bytes(7, 1_500_000, true);
        for stop_at_zero in [true, false] {
            let (mut bytewise, mut sliced) = (RollSum::new(), RollSum::new());
            let (mut ends_bytewise, mut ends_sliced) = (Vec::new(), Vec::new());
            for (i, &c) in data.iter().enumerate() {
                if stop_at_zero && c == 0 {
                    ends_bytewise.push((i, false));
                    bytewise.roll_zeros(1);
                    continue;
                }
                bytewise.roll(c);
                if bytewise.on_split() {
                    ends_bytewise.push((i + 1, true));
                }
            }
            let mut i = 0;
            while i < data.len() {
                let (n, split) = match stop_at_zero {
                    true => sliced.roll_to_split_or_zero(&data[i..]),
                    false => sliced.roll_to_split(&data[i..]),
                };
                i += n;
                if split {
                    ends_sliced.push((i, true));
                } else if i < data.len() {
                    ends_sliced.push((i, false));
                    sliced.roll_zeros(1);
                    i += 1;
                }
            }
            assert!(ends_bytewise.iter().filter(|e| e.1).count() > 10, "too few splits to compare");
            assert_eq!(ends_sliced, ends_bytewise, "stop_at_zero={stop_at_zero}");
            assert_eq!(sliced.digest(), bytewise.digest());
        }
    }
}

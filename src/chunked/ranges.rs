//! Planning the byte ranges of a blob to fetch in a partial pull (SPEC §8, `mergeMissingChunks`):
//! parts that touch are merged, gaps of at most [`AUTO_MERGE_GAP`] bytes are fetched and thrown
//! away, and when more than the target count of ranges remain the smallest gaps are merged first.
//! A server that refuses the request (HTTP 400) gets half the count next time.

/// Gaps up to this many bytes are cheaper to download than to skip (`autoMergePartsThreshold`).
pub const AUTO_MERGE_GAP: u64 = 1024;
/// The most ranges one request asks for (`maxNumberMissingChunks`).
pub const MAX_RANGES: usize = 1024;

/// A byte range of the blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteRange {
    pub offset: u64,
    pub length: u64,
}

impl ByteRange {
    pub fn end(&self) -> u64 {
        self.offset + self.length
    }
}

/// One range to fetch and the parts (indexes into the planner's input) it carries, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    pub range: ByteRange,
    pub parts: Vec<usize>,
}

/// Groups `parts` (sorted by offset, not overlapping) into at most `max_ranges` ranges (at least 1).
/// Returns an empty plan for no parts. Panics never; overlapping input is merged as touching.
pub fn plan(parts: &[ByteRange], max_ranges: usize) -> Vec<Fetch> {
    let max_ranges = max_ranges.max(1);
    let mut out: Vec<Fetch> = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        match out.last_mut() {
            Some(last) if p.offset.saturating_sub(last.range.end()) <= AUTO_MERGE_GAP => {
                let end = last.range.end().max(p.end());
                last.range.length = end - last.range.offset;
                last.parts.push(i);
            }
            _ => out.push(Fetch { range: *p, parts: vec![i] }),
        }
    }
    if out.len() <= max_ranges {
        return out;
    }
    // Merge across the smallest gaps until the count fits: every gap up to the k-th smallest,
    // where k is the number of merges needed (ties may merge a few more, which is harmless).
    let mut gaps: Vec<u64> = out.windows(2).map(|w| w[1].range.offset - w[0].range.end()).collect();
    gaps.sort_unstable();
    let threshold = gaps[out.len() - max_ranges - 1];
    let mut merged: Vec<Fetch> = Vec::with_capacity(max_ranges);
    for f in out {
        match merged.last_mut() {
            Some(last) if f.range.offset - last.range.end() <= threshold => {
                last.range.length = f.range.end() - last.range.offset;
                last.parts.extend(f.parts);
            }
            _ => merged.push(f),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(offset: u64, length: u64) -> ByteRange {
        ByteRange { offset, length }
    }

    #[test]
    fn touching_and_small_gaps_merge_large_gaps_do_not() {
        let parts = [r(0, 10), r(10, 5), r(1039, 1), r(3000, 10)];
        let p = plan(&parts, MAX_RANGES);
        assert_eq!(
            p,
            vec![Fetch { range: r(0, 1040), parts: vec![0, 1, 2] }, Fetch { range: r(3000, 10), parts: vec![3] }]
        );
        assert!(plan(&[], 10).is_empty());
    }

    #[test]
    fn count_is_reduced_by_merging_smallest_gaps_first() {
        // Gaps: 2000, 5000, 3000, 9000.
        let parts = [r(0, 1), r(2001, 1), r(7002, 1), r(10003, 1), r(19004, 1)];
        let p = plan(&parts, 3);
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].parts, vec![0, 1]);
        assert_eq!(p[1].parts, vec![2, 3]);
        assert_eq!(p[2].parts, vec![4]);
        let halved = plan(&parts, 1);
        assert_eq!(halved, vec![Fetch { range: r(0, 19005), parts: vec![0, 1, 2, 3, 4] }]);
        // Every part stays covered by its range.
        for f in plan(&parts, 2) {
            for i in f.parts {
                assert!(parts[i].offset >= f.range.offset && parts[i].end() <= f.range.end());
            }
        }
    }
}

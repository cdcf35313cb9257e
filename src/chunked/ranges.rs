//! Planning the byte ranges of a blob to fetch in a partial pull (SPEC §8, `mergeMissingChunks`):
//! parts that touch are merged, gaps of at most [`AUTO_MERGE_GAP`] bytes are fetched and thrown
//! away, the whole span is one range when its gaps are a small part of it (a cold pull), and when
//! more than the target count of ranges remain the smallest gaps are merged first.
//! A server that refuses the request (HTTP 400) gets half the count next time.

/// Gaps up to this many bytes are cheaper to download than to skip (`autoMergePartsThreshold`).
pub const AUTO_MERGE_GAP: u64 = 1024;
/// The most ranges one request asks for (`maxNumberMissingChunks`).
pub const MAX_RANGES: usize = 1024;
/// When the gaps between the ranges add up to at most 1/this of the bytes wanted, the whole span
/// is one range: one plain response instead of a multipart one of hundreds of parts, which the
/// registry writes and c/image parses part by part. A cold pull of the rootfs image through podman
/// and Debian's registry: 1.2% more bytes, the response 654 -> 358 ms, the pull 0.66 -> 0.59 s.
const WHOLE_SPAN_WASTE: u64 = 16;

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
    // Nearly all of the span wanted (a cold pull): one range, its gaps fetched and skipped.
    let span = match (out.first(), out.last()) {
        (Some(first), Some(last)) => last.range.end() - first.range.offset,
        _ => 0,
    };
    let wanted: u64 = out.iter().map(|f| f.range.length).sum();
    if out.len() > 1 && span.saturating_sub(wanted) <= wanted / WHOLE_SPAN_WASTE {
        let offset = out[0].range.offset;
        let parts = out.into_iter().flat_map(|f| f.parts).collect();
        return vec![Fetch { range: ByteRange { offset, length: span }, parts }];
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
    fn a_span_wanted_nearly_whole_is_one_range() {
        // 16 parts of 1000 bytes with gaps of 1100 (over the auto-merge gap): 16.5 KB of gaps
        // for 16 KB wanted stay apart.
        let apart: Vec<ByteRange> = (0..16).map(|i| r(i * 2100, 1000)).collect();
        assert_eq!(plan(&apart, MAX_RANGES).len(), 16);
        // 31 KB wanted in [100, 31100) (gaps of 62 bytes, merged), then 10 bytes after a gap:
        // of 1100 bytes (under 1/16 of what is wanted) one range, of 2000 two.
        let mut near: Vec<ByteRange> = (0..16).map(|i| r(100 + i * 2000, 1000)).collect();
        near.extend((0..15).map(|i| r(1100 + i * 2000, 938)));
        near.sort();
        near.push(r(31_100 + 1100, 10));
        let parts: Vec<usize> = (0..near.len()).collect();
        assert_eq!(plan(&near, MAX_RANGES), vec![Fetch { range: r(100, 32_210 - 100), parts }]);
        *near.last_mut().unwrap() = r(31_100 + 2000, 10);
        let p = plan(&near, MAX_RANGES);
        assert_eq!(p.iter().map(|f| f.range).collect::<Vec<_>>(), vec![r(100, 31_000), r(33_100, 10)]);
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

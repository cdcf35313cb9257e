//! The userspace fs-verity digest of every corpus image equals what `composefs-info
//! measure-file` reported for mkcomposefs's image (cstorage-images/EXPECTED.tsv, image_fsverity),
//! and equals composefs-rs's `compute_verity` (the tests' independent oracle) for those images,
//! at the block and Merkle tree level edges, and for random sizes, contents and update pieces.
//! (The images themselves are read by composefs-rs in image_corpus.)

mod support;

use composefs::fsverity::{compute_verity, FsVerityHashValue, Sha256HashValue};
use composefs_storage::image::fsverity::{digest_bytes, to_hex};
use composefs_storage::image::{digest_reader, dump, write_image, FsVerityHasher, WriteOptions};
use proptest::prelude::*;

use support::corpus;

/// composefs-rs's digest, in hex.
fn oracle(data: &[u8]) -> String {
    compute_verity::<Sha256HashValue>(data).to_hex()
}

/// This library's digest of `data` fed in pieces of the given sizes (cycled).
fn streamed(data: &[u8], pieces: &[usize]) -> String {
    let mut h = FsVerityHasher::new();
    let (mut rest, mut i) = (data, 0);
    while !rest.is_empty() {
        let n = pieces[i % pieces.len()].min(rest.len());
        h.update(&rest[..n]);
        rest = &rest[n..];
        i += 1;
    }
    to_hex(&h.finish())
}

#[test]
fn image_digests_match_composefs_info_measure_file() {
    let Some(corpus) = corpus() else { return };
    let tsv = std::fs::read_to_string(corpus.join("cstorage-images/EXPECTED.tsv")).unwrap();
    let mut n = 0;
    for line in tsv.lines().skip(1) {
        let c: Vec<&str> = line.split('\t').collect();
        let (dump_path, expected, shipped) = (c[0], c[5], c[6]);
        let tree = dump::parse(&std::fs::read(corpus.join(dump_path)).unwrap()[..], false).unwrap();
        let mut img = Vec::new();
        write_image(&tree, &WriteOptions::default(), &mut img).unwrap();
        assert_eq!(to_hex(&digest_bytes(&img)), expected, "{dump_path}");
        assert_eq!(oracle(&img), expected, "{dump_path}: composefs-rs");
        if shipped != "-" {
            let f = std::fs::File::open(corpus.join("cstorage-images").join(shipped)).unwrap();
            assert_eq!(to_hex(&digest_reader(f).unwrap()), expected, "{shipped}");
        }
        n += 1;
    }
    assert_eq!(n, 11);
}

/// Sizes around a data block (4096), a full block of first-level hashes (128 blocks) and 2 MiB + 1
/// (five blocks of them), in zeros and in random bytes; then a third tree level (past 128 * 128
/// blocks).
#[test]
fn digest_equals_composefs_rs_at_block_and_tree_edges() {
    const B: usize = 4096;
    let sizes =
        [0, 1, 31, 32, 4095, B, B + 1, 2 * B, 127 * B + 1, 128 * B - 1, 128 * B, 128 * B + 1, 2 * 1024 * 1024 + 1];
    for size in sizes {
        for (fill, data) in [("zeros", vec![0; size]), ("random", support::noise(size, size as u64))] {
            let want = oracle(&data);
            assert_eq!(to_hex(&digest_bytes(&data)), want, "{size} bytes of {fill}");
            assert_eq!(streamed(&data, &[4093, 1, 8192]), want, "{size} bytes of {fill}, streamed");
            assert_eq!(to_hex(&digest_reader(&data[..]).unwrap()), want, "{size} bytes of {fill}, read");
        }
    }
    // 64 MiB + 1: once, in zeros (hashing is most of this test's time).
    let data = vec![0; 128 * 128 * B + 1];
    assert_eq!(to_hex(&digest_bytes(&data)), oracle(&data), "three levels");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn digest_equals_composefs_rs_for_random_data(
        seed in any::<u64>(),
        size in prop_oneof![0usize..9000, 0usize..1_100_000],
        pieces in proptest::collection::vec(1usize..70_000, 1..6),
    ) {
        let data = support::noise(size, seed);
        let want = oracle(&data);
        prop_assert_eq!(to_hex(&digest_bytes(&data)), want.clone());
        prop_assert_eq!(streamed(&data, &pieces), want);
    }
}

//! The userspace fs-verity digest of every corpus image equals what `composefs-info
//! measure-file` reported for mkcomposefs's image (cstorage-images/EXPECTED.tsv, image_fsverity).

mod support;

use composefs_storage::image::fsverity::{digest_bytes, to_hex};
use composefs_storage::image::{digest_reader, dump, write_image, WriteOptions};

use support::corpus;

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
        if shipped != "-" {
            let f = std::fs::File::open(corpus.join("cstorage-images").join(shipped)).unwrap();
            assert_eq!(to_hex(&digest_reader(f).unwrap()), expected, "{shipped}");
        }
        n += 1;
    }
    assert_eq!(n, 11);
}

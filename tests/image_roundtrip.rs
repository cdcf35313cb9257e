//! Round trips over the corpus: dump -> image -> tree -> image is byte-stable, dump -> image ->
//! dump -> image is byte-stable, shipped mkcomposefs images read back and rewrite to the same
//! bytes, and corrupt images are rejected with an error. composefs-rs (tests/support/oracle.rs)
//! reads each image as this library's image -> dump -> tree does, and reads mkcomposefs's own
//! images as this library's reader does.

mod support;
use std::path::{Path, PathBuf};

use composefs_storage::image::{dump, read_image, write_image, WriteOptions};

use support::corpus;

fn read_dump(path: &Path) -> Vec<u8> {
    if path.extension().is_some_and(|e| e == "gz") {
        let out = std::process::Command::new("gzip").arg("-dc").arg(path).output().expect("run gzip");
        assert!(out.status.success());
        out.stdout
    } else {
        std::fs::read(path).unwrap()
    }
}

/// Every dump of the corpus that mkcomposefs accepts, with its parse mode and write options.
fn valid_dumps(corpus: &Path) -> Vec<(PathBuf, bool, WriteOptions)> {
    let mut out = Vec::new();
    let dir = corpus.join("composefs-assets");
    for line in std::fs::read_to_string(dir.join("EXPECTED.tsv")).unwrap().lines().skip(1) {
        let c: Vec<&str> = line.split('\t').collect();
        let path = dir.join(c[0]);
        if c[4] == "must-fail" || !path.exists() {
            continue;
        }
        let mut o = WriteOptions::default();
        if c[1] != "default" {
            o.min_version = c[1].parse().unwrap();
        }
        if c[2] != "default" {
            o.max_version = c[2].parse().unwrap();
        }
        out.push((path, c[3] == "1", o));
    }
    for line in std::fs::read_to_string(corpus.join("cstorage-images/EXPECTED.tsv")).unwrap().lines().skip(1) {
        let c: Vec<&str> = line.split('\t').collect();
        out.push((corpus.join(c[0]), false, WriteOptions::default()));
    }
    out
}

fn image(tree: &composefs_storage::image::Tree, o: &WriteOptions) -> Vec<u8> {
    let mut v = Vec::new();
    write_image(tree, o, &mut v).unwrap();
    v
}

#[test]
fn dump_image_dump_image_is_stable() {
    let Some(corpus) = corpus() else { return };
    let cases = valid_dumps(&corpus);
    assert!(cases.len() >= 25);
    for (path, strict, o) in cases {
        let name = path.display().to_string();
        let tree = dump::parse(&read_dump(&path)[..], strict).unwrap();
        let img1 = image(&tree, &o);

        // image -> tree -> image
        let back = read_image(&img1).unwrap_or_else(|e| panic!("{name}: {e}"));
        let img2 = image(&back, &o);
        assert!(img1 == img2, "{name}: image -> tree -> image differs");

        // image -> dump -> image -> dump
        let mut text = Vec::new();
        dump::write(&back, &mut text).unwrap();
        let tree3 = dump::parse(&text[..], false).unwrap_or_else(|e| panic!("{name}: reparse: {e}"));
        if let Err(e) = support::oracle::compare(&img1, &tree3) {
            panic!("{name}: composefs-rs reads the image otherwise than its dump says:\n{e}");
        }
        let img3 = image(&tree3, &o);
        assert!(img1 == img3, "{name}: image -> dump -> image differs");
        let mut text2 = Vec::new();
        dump::write(&tree3, &mut text2).unwrap();
        assert!(text == text2, "{name}: dump -> image -> dump is not stable");
    }
}

#[test]
fn shipped_mkcomposefs_images_read_back_and_rewrite_identically() {
    let Some(corpus) = corpus() else { return };
    let dir = corpus.join("cstorage-images");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "cfs") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let tree = read_image(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        support::oracle::check_image(&bytes, &path.display().to_string());
        assert!(image(&tree, &WriteOptions::default()) == bytes, "{}", path.display());
        n += 1;
    }
    assert_eq!(n, 9);
}

#[test]
fn with_verity_images_keep_payload_and_digest_apart() {
    let Some(corpus) = corpus() else { return };
    let bytes = std::fs::read(corpus.join("cstorage-images/handmade-pax.with-verity.cfs")).unwrap();
    let tree = read_image(&bytes).unwrap();
    let mut n = 0;
    for inode in &tree.inodes {
        if let composefs_storage::image::InodeKind::File(composefs_storage::image::File {
            content: composefs_storage::image::FileContent::External { payload: Some(p), digest: Some(d) },
            ..
        }) = &inode.kind
        {
            let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
            assert_ne!(p.as_slice(), format!("{}/{}", &hex[..2], &hex[2..]).as_bytes());
            n += 1;
        }
    }
    assert!(n > 5, "{n}");
}

#[test]
fn corrupt_images_are_errors_not_panics() {
    let Some(corpus) = corpus() else { return };
    let special = dump::parse(&read_dump(&corpus.join("composefs-assets/special.dump"))[..], true).unwrap();
    corrupt_one(image(&special, &WriteOptions::default()));
    corrupt_one(std::fs::read(corpus.join("cstorage-images/handmade-pax.cfs")).unwrap());
}

fn corrupt_one(good: Vec<u8>) {
    assert!(read_image(&good[..100]).is_err());
    assert!(read_image(&[]).is_err());
    // Flip bytes anywhere past the header, and cut at random points: every result must be Ok or
    // Err, never a panic (nor a hang or a huge allocation).
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for round in 0..4000 {
        let mut img = good.clone();
        let span = if round % 2 == 0 { good.len().min(16384) } else { good.len() };
        for _ in 0..1 + round % 6 {
            let pos = 1024 + (next() as usize % (span - 1024));
            img[pos] = next() as u8;
        }
        if round % 7 == 0 {
            img.truncate(next() as usize % good.len());
        }
        let _ = read_image(&img);
    }
    let mut truncated = good.clone();
    truncated.truncate(5000);
    assert!(read_image(&truncated).is_err());
}

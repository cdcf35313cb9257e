//! Every corpus case through the dump parser and the EROFS writer, compared with the sha256 of
//! the image mkcomposefs 1.0.8 wrote (corpus `composefs-assets/EXPECTED.tsv` and
//! `cstorage-images/EXPECTED.tsv`).

mod support;
use std::path::Path;

use composefs_storage::image::{dump, write_image, WriteOptions};
use sha2::{Digest, Sha256};

use support::corpus;

fn read_dump(path: &Path) -> Vec<u8> {
    if path.extension().is_some_and(|e| e == "gz") {
        let out = std::process::Command::new("gzip").arg("-dc").arg(path).output().expect("run gzip");
        assert!(out.status.success(), "gzip -dc {}", path.display());
        out.stdout
    } else {
        std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn image_of(dump_bytes: &[u8], strict: bool, options: &WriteOptions) -> composefs_storage::Result<Vec<u8>> {
    let tree = dump::parse(dump_bytes, strict)?;
    let mut out = Vec::new();
    write_image(&tree, options, &mut out)?;
    Ok(out)
}

#[test]
fn composefs_assets_match_mkcomposefs() {
    let Some(corpus) = corpus() else { return };
    let dir = corpus.join("composefs-assets");
    let tsv = std::fs::read_to_string(dir.join("EXPECTED.tsv")).unwrap();
    let (mut matched, mut failed_as_expected) = (0, 0);
    let mut failures = Vec::new();
    for line in tsv.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        let (asset, min, max, strict, expected) = (cols[0], cols[1], cols[2], cols[3] == "1", cols[4]);
        let path = dir.join(asset);
        if !path.exists() {
            continue; // dump-absent-upstream rows
        }
        let mut options = WriteOptions::default();
        if min != "default" {
            options.min_version = min.parse().unwrap();
        }
        if max != "default" {
            options.max_version = max.parse().unwrap();
        }
        let result = image_of(&read_dump(&path), strict, &options);
        if expected == "must-fail" {
            match result {
                Err(e) => {
                    assert!(!e.to_string().is_empty());
                    eprintln!("{asset}: rejected: {e}");
                    failed_as_expected += 1;
                }
                Ok(_) => failures.push(format!("{asset}: accepted, must fail")),
            }
            continue;
        }
        match result {
            Ok(img) => {
                support::oracle::check_image(&img, asset);
                let got = hex(&Sha256::digest(&img));
                if got == expected {
                    matched += 1;
                } else {
                    failures.push(format!("{asset}: sha256 {got}, expected {expected} ({} bytes)", img.len()));
                }
            }
            Err(e) => failures.push(format!("{asset}: error {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!((matched, failed_as_expected), (14, 14));
}

#[test]
fn cstorage_images_match_mkcomposefs() {
    let Some(corpus) = corpus() else { return };
    let tsv = std::fs::read_to_string(corpus.join("cstorage-images/EXPECTED.tsv")).unwrap();
    let mut failures = Vec::new();
    let mut n = 0;
    for line in tsv.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        let (dump_path, expected, size, shipped) = (cols[0], cols[3], cols[4], cols[6]);
        let img = match image_of(&read_dump(&corpus.join(dump_path)), false, &WriteOptions::default()) {
            Ok(img) => img,
            Err(e) => {
                failures.push(format!("{dump_path}: {e}"));
                continue;
            }
        };
        support::oracle::check_image(&img, dump_path);
        let got = hex(&Sha256::digest(&img));
        if got != expected || img.len().to_string() != size {
            failures.push(format!("{dump_path}: sha256 {got} ({} bytes), expected {expected} ({size})", img.len()));
        }
        if shipped != "-" {
            let shipped_img = std::fs::read(corpus.join("cstorage-images").join(shipped)).unwrap();
            assert_eq!(hex(&Sha256::digest(&shipped_img)), expected, "{shipped} is not what EXPECTED.tsv says");
        }
        n += 1;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(n, 11);
}

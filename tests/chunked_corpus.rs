//! zstd:chunked manifests of the corpus blobs, read from annotations and from the footer, compared
//! with what containers/storage's reader decoded (toc.raw.json, tarsplit.ndjson).

mod support;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use composefs_storage::chunked::{read_manifest, tarsplit, Format, ReadOptions};
use composefs_storage::ErrorKind;

fn corpus() -> PathBuf {
    support::cstorage()
}

fn annotations(path: &Path) -> BTreeMap<String, String> {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn maybe_zst(path: &Path) -> Vec<u8> {
    if path.exists() {
        return std::fs::read(path).unwrap();
    }
    let mut zst = path.as_os_str().to_owned();
    zst.push(".zst");
    zstd::decode_all(std::fs::File::open(zst).unwrap()).unwrap()
}

const CASES: &[&str] = &["empty", "noparents-ustar", "handmade-archive", "handmade-pax", "etc-doc-gnu"];

#[test]
fn corpus_manifests_match_containers_storage() {
    for case in CASES {
        let dir = corpus().join(case);
        let blob = std::fs::File::open(dir.join(format!("{case}.zstd-chunked"))).unwrap();
        let ann = annotations(&dir.join(format!("{case}.annotations.json")));
        let expected_toc = std::fs::read(dir.join(format!("{case}.toc.raw.json"))).unwrap();
        let expected_split = maybe_zst(&dir.join(format!("{case}.tarsplit.ndjson")));
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(format!("{case}.compress.json"))).unwrap()).unwrap();

        for from_footer in [false, true] {
            let m = read_manifest(&blob, (!from_footer).then_some(&ann), &ReadOptions::default())
                .unwrap_or_else(|e| panic!("{case} (footer: {from_footer}): {e}"));
            assert_eq!(m.location.format, Format::Current);
            assert_eq!(m.location.authenticated, !from_footer);
            assert_eq!(m.location.toc_digest, summary["tocDigest"].as_str().unwrap(), "{case}");
            assert_eq!(&m.toc_json[..], &expected_toc[..], "{case}: TOC bytes");
            let mut split = Vec::new();
            m.tar_split.as_ref().unwrap().read_to_end(&mut split).unwrap();
            assert_eq!(split, expected_split, "{case}: tar-split bytes");
            assert_eq!(tarsplit::tar_size(&split[..]).unwrap(), summary["tarSize"].as_u64().unwrap(), "{case}");
        }
    }
}

#[test]
fn nonutf8_names_make_toc_and_tar_split_inconsistent() {
    let dir = corpus().join("nonutf8-pax");
    let blob = std::fs::File::open(dir.join("nonutf8-pax.zstd-chunked")).unwrap();
    let ann = annotations(&dir.join("nonutf8-pax.annotations.json"));
    let e = read_manifest(&blob, Some(&ann), &ReadOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Format);
    assert!(e.to_string().contains("tar-split and TOC data is inconsistent"), "{e}");
    assert!(e.to_string().contains("missing in TOC"), "{e}");
}

#[test]
fn legacy_blobs_read_from_old_annotations_and_40_byte_footer() {
    for oci in ["podman-4.3.1-oci", "skopeo-1.9.3-oci"] {
        let root = corpus().join("legacy").join(oci);
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(root.join("index.json")).unwrap()).unwrap();
        let blob_path = |d: &str| root.join("blobs/sha256").join(d.strip_prefix("sha256:").unwrap());
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(blob_path(index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
        )
        .unwrap();
        let layer = &manifest["layers"][0];
        let ann: BTreeMap<String, String> = serde_json::from_value(layer["annotations"].clone()).unwrap();
        let path = blob_path(layer["digest"].as_str().unwrap());
        let sibling = |ext: &str| {
            let mut p = path.as_os_str().to_owned();
            p.push(ext);
            PathBuf::from(p)
        };
        let expected_toc = std::fs::read(sibling(".toc.raw.json")).unwrap();
        let blob = std::fs::File::open(&path).unwrap();
        for from_footer in [false, true] {
            let m = read_manifest(&blob, (!from_footer).then_some(&ann), &ReadOptions::default())
                .unwrap_or_else(|e| panic!("{oci} (footer: {from_footer}): {e}"));
            assert_eq!(m.location.format, Format::Legacy, "{oci}");
            assert_eq!(&m.toc_json[..], &expected_toc[..], "{oci}");
            assert!(m.tar_split.is_none());
            assert!(m.toc.tar_split_digest.is_none());
        }
        // Its dump is what containers/storage generates for it (the legacy zero atime/ctime
        // "0001-01-01T00:00:00Z" does not show in a dump).
        let m = read_manifest(&blob, Some(&ann), &ReadOptions::default()).unwrap();
        let mut dump = Vec::new();
        composefs_storage::chunked::dump::generate_dump(&m.toc, &Default::default(), &mut dump).unwrap();
        assert_eq!(dump, std::fs::read(sibling(".dump")).unwrap(), "{oci}");
        // The renamed (current-prefix) annotations are accepted too, as current c/storage does.
        let renamed = annotations(&sibling(".renamed-annotations.json"));
        assert_eq!(
            read_manifest(&blob, Some(&renamed), &ReadOptions::default()).unwrap().toc_json[..],
            expected_toc[..]
        );
    }
}

fn noparents() -> (Vec<u8>, BTreeMap<String, String>) {
    let dir = corpus().join("noparents-ustar");
    (
        std::fs::read(dir.join("noparents-ustar.zstd-chunked")).unwrap(),
        annotations(&dir.join("noparents-ustar.annotations.json")),
    )
}

#[test]
fn tampered_toc_fails_verification() {
    let (mut blob, ann) = noparents();
    let off: usize =
        ann["io.github.containers.zstd-chunked.manifest-position"].split(':').next().unwrap().parse().unwrap();
    blob[off + 10] ^= 0x55;
    let e = read_manifest(&blob[..], Some(&ann), &ReadOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Verification, "{e}");
    assert!(e.to_string().contains("TOC checksum mismatch"), "{e}");
}

/// The tar-split is decompressed and parsed while the TOC is (before its digest from the TOC is
/// known): a damaged one must still fail as a checksum mismatch, not as what parsing it found.
#[test]
fn tampered_tar_split_fails_verification_first() {
    let (blob, ann) = noparents();
    let pos = &ann["io.github.containers.zstd-chunked.tarsplit-position"];
    let (off, len) = {
        let f: Vec<usize> = pos.split(':').map(|n| n.parse().unwrap()).collect();
        (f[0], f[1])
    };
    for at in [4, len / 2, len - 1] {
        let mut bad = blob.clone();
        bad[off + at] ^= 0x55;
        let e = read_manifest(&bad[..], Some(&ann), &ReadOptions::default()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Verification, "byte {at}: {e}");
        assert!(e.to_string().contains("tar-split checksum mismatch"), "byte {at}: {e}");
    }
}

#[test]
fn lying_positions_and_truncation_are_clear_errors() {
    let (blob, ann) = noparents();
    let key = "io.github.containers.zstd-chunked.manifest-position";
    for (pos, needle) in [
        ("269:332:620:2", "manifest type"),
        ("269:332", "colon-separated"),
        ("999999:332:620:1", "outside the blob"),
        ("18446744073709551615:10:620:1", "outside the blob"),
        ("270:332:620:1", "not a skippable frame"),
        ("269:332:999999999999:1", "too big"),
        ("269:332:600:1", "decompresses to more than that"),
        ("269:332:700:1", "decompresses to 620"),
    ] {
        let mut a = ann.clone();
        a.insert(key.into(), pos.into());
        let e = read_manifest(&blob[..], Some(&a), &ReadOptions::default()).unwrap_err();
        assert!(e.to_string().contains(needle), "{pos}: {e}");
    }
    // A truncated blob has no footer and its annotated ranges run past the end.
    let short = &blob[..blob.len() - 100];
    assert!(read_manifest(short, None, &ReadOptions::default()).is_err());
    assert!(read_manifest(short, Some(&ann), &ReadOptions::default()).is_err());
    // A lying tar-split position.
    let mut a = ann.clone();
    a.insert("io.github.containers.zstd-chunked.tarsplit-position".into(), "609:362:14000".into());
    let e = read_manifest(&blob[..], Some(&a), &ReadOptions::default()).unwrap_err();
    assert!(e.to_string().contains("tar-split decompresses to more than that"), "{e}");
}

#[test]
fn non_chunked_and_estargz_layers_are_refused_clearly() {
    let (blob, _) = noparents();
    let mut a = BTreeMap::new();
    let e = read_manifest(&blob[..], Some(&a), &ReadOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    // An eStargz annotation makes it read as eStargz (tests/estargz.rs): this blob has no such footer.
    a.insert("containerd.io/snapshot/stargz/toc.digest".to_string(), "sha256:00".to_string());
    let e = read_manifest(&blob[..], Some(&a), &ReadOptions::default()).unwrap_err();
    assert!(e.to_string().contains("no eStargz footer"), "{e}");
    let tar = std::fs::read(corpus().join("noparents-ustar/noparents-ustar.tar.zst")).unwrap();
    let e = read_manifest(&tar[..], None, &ReadOptions::default()).unwrap_err();
    assert!(e.to_string().contains("no zstd:chunked footer"), "{e}");
}

/// Re-assembling each corpus layer from its tar-split and file contents (taken from the blob's own
/// frames at each TOC entry's [offset, endOffset)) gives back the original tar: same DiffID, size.
#[test]
fn tar_split_reassembles_the_original_tar() {
    use composefs_storage::chunked::toc::TYPE_REG;
    use sha2::{Digest, Sha256};
    for case in CASES {
        let dir = corpus().join(case);
        let blob = std::fs::read(dir.join(format!("{case}.zstd-chunked"))).unwrap();
        let ann = annotations(&dir.join(format!("{case}.annotations.json")));
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(format!("{case}.compress.json"))).unwrap()).unwrap();
        let m = read_manifest(&blob[..], Some(&ann), &ReadOptions::default()).unwrap();
        let ranges: std::collections::HashMap<String, (usize, usize, String)> = m
            .toc
            .entries
            .iter()
            .filter(|e| e.entry_type == TYPE_REG && e.size > 0)
            .map(|e| (e.name.clone(), (e.offset as usize, e.end_offset as usize, e.digest.clone())))
            .collect();
        let split = std::io::BufReader::new(m.tar_split.unwrap());
        let mut sink = Sha256::new();
        struct W<'a>(&'a mut Sha256);
        impl std::io::Write for W<'_> {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.update(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (diff_id, size) = tarsplit::reassemble(
            split,
            |name, size| {
                let name = std::str::from_utf8(name).unwrap();
                let (start, end, digest) = &ranges[name];
                let content = zstd::decode_all(&blob[*start..*end]).unwrap();
                assert_eq!(content.len() as u64, size, "{case}: {name}");
                assert_eq!(format!("sha256:{}", hex(&Sha256::digest(&content))), *digest, "{case}: {name}");
                Ok(std::io::Cursor::new(content))
            },
            &mut W(&mut sink),
        )
        .unwrap();
        assert_eq!(format!("sha256:{}", hex(&diff_id)), summary["diffID"].as_str().unwrap(), "{case}");
        assert_eq!(format!("sha256:{}", hex(&sink.finalize())), summary["diffID"].as_str().unwrap(), "{case}");
        assert_eq!(size, summary["tarSize"].as_u64().unwrap(), "{case}");
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `generate_dump` of each corpus TOC equals containers/storage's `GenerateDump` output (xattrs
/// sorted), without and with the fs-verity digest map.
#[test]
fn generate_dump_matches_containers_storage() {
    use composefs_storage::chunked::dump::generate_dump;
    use composefs_storage::chunked::Toc;
    use std::collections::HashMap;
    let images = corpus().join("../cstorage-images");
    for case in CASES {
        let dir = corpus().join(case);
        let toc = Toc::parse(&std::fs::read(dir.join(format!("{case}.toc.raw.json"))).unwrap()).unwrap();
        let mut out = Vec::new();
        generate_dump(&toc, &HashMap::new(), &mut out).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&std::fs::read(dir.join(format!("{case}.dump"))).unwrap()),
            "{case}"
        );
        let verity: HashMap<String, String> =
            serde_json::from_slice(&std::fs::read(dir.join(format!("{case}.verity.json"))).unwrap()).unwrap();
        let mut out = Vec::new();
        generate_dump(&toc, &verity, &mut out).unwrap();
        let expected = std::fs::read(images.join(format!("{case}.with-verity.dump"))).unwrap();
        assert!(out == expected, "{case}: with-verity dump differs");
    }
    let synthetic = corpus().join("synthetic");
    let toc = Toc::parse(&std::fs::read(synthetic.join("quirks.toc.json")).unwrap()).unwrap();
    let mut out = Vec::new();
    generate_dump(&toc, &HashMap::new(), &mut out).unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), std::fs::read_to_string(synthetic.join("quirks.dump")).unwrap());
}

/// The seam containers/storage fills with `mkcomposefs --from-file - -`: TOC → dump → image gives
/// the expected image bytes for every corpus row (SPEC §0, seam 1).
#[test]
fn toc_to_image_matches_mkcomposefs() {
    use composefs_storage::chunked::dump::generate_dump;
    use composefs_storage::chunked::Toc;
    use composefs_storage::image::{dump, write_image, WriteOptions};
    use sha2::{Digest, Sha256};
    use std::collections::HashMap;
    let expected = std::fs::read_to_string(corpus().join("../cstorage-images/EXPECTED.tsv")).unwrap();
    let mut checked = 0;
    for row in expected.lines().skip(1) {
        let cols: Vec<&str> = row.split('\t').collect();
        let case = cols[0].rsplit('/').next().unwrap().split('.').next().unwrap();
        if case == "quirks" {
            continue;
        }
        let dir = corpus().join(case);
        let toc = Toc::parse(&std::fs::read(dir.join(format!("{case}.toc.raw.json"))).unwrap()).unwrap();
        let verity: HashMap<String, String> = if cols[1] == "with-verity" {
            serde_json::from_slice(&std::fs::read(dir.join(format!("{case}.verity.json"))).unwrap()).unwrap()
        } else {
            HashMap::new()
        };
        let mut text = Vec::new();
        generate_dump(&toc, &verity, &mut text).unwrap();
        let tree = dump::parse(&text[..], false).unwrap();
        let mut image = Vec::new();
        write_image(&tree, &WriteOptions::default(), &mut image).unwrap();
        assert_eq!(hex(&Sha256::digest(&image)), cols[3], "{case} {}", cols[1]);
        checked += 1;
    }
    assert!(checked >= 10, "{checked} rows checked");
}

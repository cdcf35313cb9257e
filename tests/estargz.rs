//! eStargz blobs made by the real encoder (stargz-snapshotter's `estargz` package as vendored in
//! containers/storage; `scripts/gen-estargz.sh` writes them from the corpus tars at several chunk
//! sizes, with and without prefetch landmarks, and with small files packed together): each
//! converts to the same layer as its own tar (the decompressed blob) without the format's files,
//! with the encoder's DiffID, exports to that exact tar, and pulls (whole, or partially in
//! insecure mode) to the same layer; lies and damage are refused with nothing left behind.

mod support;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use composefs_storage::chunked::estargz::{self, ANNOTATION_TOC_DIGEST};
use composefs_storage::layer::pull::{pull, FileFetcher, PullOptions};
use composefs_storage::layer::{convert, ConvertOptions, EstargzCheck, VerityPolicy};
use composefs_storage::ErrorKind;
use sha2::{Digest, Sha256};

/// The generated blobs: `$CFS_ESTARGZ_DIR`, else `build/estargz`. Missing under CI is a failure
/// (the test command generates them first); elsewhere the test says why it does nothing.
fn blobs_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("CFS_ESTARGZ_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("build/estargz"));
    if dir.join("handmade-pax-default.estargz").exists() {
        return Some(dir);
    }
    assert!(std::env::var_os("CI").is_none(), "no eStargz test blobs in {}: run scripts/gen-estargz.sh", dir.display());
    eprintln!("skipping: no eStargz test blobs in {} (run scripts/gen-estargz.sh)", dir.display());
    None
}

struct Blob {
    path: PathBuf,
    name: String,
    toc_digest: String,
    diff_id: String,
}

fn blobs(dir: &Path) -> Vec<Blob> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_none_or(|x| x != "estargz") {
            continue;
        }
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path.with_extension("estargz.json")).unwrap()).unwrap();
        out.push(Blob {
            name: path.file_stem().unwrap().to_string_lossy().into_owned(),
            toc_digest: meta["tocDigest"].as_str().unwrap().to_string(),
            diff_id: meta["diffID"].as_str().unwrap().to_string(),
            path,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(out.len() >= 20, "expected the generated variants of every corpus case, found {}", out.len());
    out
}

fn digest32(s: &str) -> [u8; 32] {
    composefs_storage::chunked::toc::sha256_bytes(s).unwrap()
}

fn hex(d: &[u8]) -> String {
    composefs_storage::source::hex(d)
}

fn annotations(b: &Blob) -> BTreeMap<String, String> {
    BTreeMap::from([(ANNOTATION_TOC_DIGEST.to_string(), b.toc_digest.clone())])
}

fn open(p: &Path) -> Box<dyn Read + Send> {
    Box::new(File::open(p).unwrap())
}

fn no_verity() -> ConvertOptions {
    ConvertOptions { verity: VerityPolicy::Off, ..Default::default() }
}

/// The layer's image as a dump, one line per inode.
fn dump(layer: &Path) -> Vec<String> {
    let image = std::fs::read(layer.join("composefs-data/composefs.blob")).unwrap();
    let tree = composefs_storage::image::read_image(&image).unwrap();
    let mut out = Vec::new();
    composefs_storage::image::dump::write(&tree, &mut out).unwrap();
    String::from_utf8_lossy(&out).lines().map(str::to_string).collect()
}

fn objects(layer: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for prefix in std::fs::read_dir(layer.join("diff")).unwrap() {
        let prefix = prefix.unwrap();
        for obj in std::fs::read_dir(prefix.path()).unwrap() {
            out.insert(format!(
                "{}/{}",
                prefix.file_name().to_string_lossy(),
                obj.unwrap().file_name().to_string_lossy()
            ));
        }
    }
    out
}

/// The sha256 of the layer's composefs image.
fn blob_bytes(layer: &Path) -> String {
    hex(&Sha256::digest(std::fs::read(layer.join("composefs-data/composefs.blob")).unwrap()))
}

/// A dump with each modification time rounded to the second, as an eStargz TOC has it.
fn to_seconds(lines: Vec<String>) -> Vec<String> {
    lines
        .into_iter()
        .map(|l| {
            let mut f: Vec<String> = l.split(' ').map(str::to_string).collect();
            let (sec, nsec) = f[7].split_once('.').unwrap();
            let (sec, nsec): (i64, u64) = (sec.parse().unwrap(), nsec.parse().unwrap());
            f[7] = format!("{}.0", sec + i64::from(nsec >= 500_000_000));
            f.join(" ")
        })
        .collect()
}

/// The paths of the format's own files in a dump of the plain conversion.
fn is_format_line(line: &str) -> bool {
    let path = line.split(' ').next().unwrap_or("");
    estargz::is_format_file(path.as_bytes())
}

#[test]
fn every_generated_blob_converts_like_its_own_tar_and_exports_it_exactly() {
    let Some(dir) = blobs_dir() else { return };
    // Holds the fd checks of the error tests off while this one has files open.
    let _lock = support::hygiene::lock();
    let tmp = tempfile::tempdir().unwrap();
    for (i, b) in blobs(&dir).iter().enumerate() {
        let what = &b.name;
        // The layer's tar is the decompressed blob (the encoder re-encodes headers: it is not the
        // corpus tar byte for byte).
        let mut tar = Vec::new();
        flate2::read::MultiGzDecoder::new(File::open(&b.path).unwrap()).read_to_end(&mut tar).unwrap();
        assert_eq!(format!("sha256:{}", hex(&Sha256::digest(&tar))), b.diff_id, "{what}: the encoder's DiffID");
        let plain = tmp.path().join(format!("plain{i}"));
        convert(Box::new(std::io::Cursor::new(tar.clone())), &plain, &no_verity(), None).unwrap();

        let layer = tmp.path().join(format!("estargz{i}"));
        let options = ConvertOptions {
            estargz: Some(EstargzCheck { toc_digest: Some(digest32(&b.toc_digest)) }),
            expected_diff_id: Some(digest32(&b.diff_id)),
            ..no_verity()
        };
        let r = convert(open(&b.path), &layer, &options, None).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(format!("sha256:{}", hex(&r.diff_id)), b.diff_id, "{what}");

        // The same tree as the plain tar's, without the TOC and landmark files (which the plain
        // conversion has: a gzip stream is only taken for eStargz when said so).
        let expected: Vec<String> = dump(&plain).into_iter().filter(|l| !is_format_line(l)).collect();
        assert!(dump(&plain).iter().any(|l| is_format_line(l)), "{what}: the plain conversion keeps the TOC file");
        assert_eq!(dump(&layer), expected, "{what}: tree");
        let theirs = objects(&plain);
        let ours = objects(&layer);
        assert!(ours.is_subset(&theirs), "{what}: objects");
        assert!(theirs.len() - ours.len() <= 2, "{what}: only the TOC and a landmark differ");

        let mut exported = Vec::new();
        composefs_storage::layer::export::export(&layer, &mut exported).unwrap();
        assert!(exported == tar, "{what}: export gives the exact tar");

        // Found by its footer alone (no digest to check the TOC against).
        let by_footer = tmp.path().join(format!("footer{i}"));
        let options = ConvertOptions { estargz: Some(EstargzCheck::default()), ..no_verity() };
        convert(open(&b.path), &by_footer, &options, None).unwrap();
        assert_eq!(blob_bytes(&by_footer), blob_bytes(&layer), "{what}");
        for d in [plain, by_footer] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }
}

#[test]
fn pulls_whole_by_default_and_partially_in_insecure_mode() {
    let Some(dir) = blobs_dir() else { return };
    let _lock = support::hygiene::lock();
    let tmp = tempfile::tempdir().unwrap();
    for (i, b) in blobs(&dir).iter().enumerate() {
        let what = &b.name;
        let reference = tmp.path().join(format!("ref{i}"));
        let options = ConvertOptions { estargz: Some(EstargzCheck::default()), ..no_verity() };
        convert(open(&b.path), &reference, &options, None).unwrap();
        let size = std::fs::metadata(&b.path).unwrap().len();

        // The DiffID needs every byte: fetched whole, converted, checked.
        let whole = tmp.path().join(format!("whole{i}"));
        let mut fetcher = FileFetcher::new(File::open(&b.path).unwrap()).unwrap();
        let options = PullOptions {
            annotations: Some(annotations(b)),
            expected_diff_id: Some(digest32(&b.diff_id)),
            verity: VerityPolicy::Off,
            ..Default::default()
        };
        let r = pull(&mut fetcher, &whole, &options, None).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(r.diff_id.map(|d| format!("sha256:{}", hex(&d))), Some(b.diff_id.clone()), "{what}");
        assert!(r.toc_authenticated);
        assert!(r.blob_bytes_fetched >= size, "{what}: whole blob");
        assert_eq!(blob_bytes(&whole), blob_bytes(&reference), "{what}");
        assert_eq!(objects(&whole), objects(&reference), "{what}");

        // Insecure mode: only the TOC and the files' members.
        let partial = tmp.path().join(format!("partial{i}"));
        let insecure = PullOptions { insecure_skip_diff_id: true, expected_diff_id: None, ..options.clone() };
        let mut fetcher = FileFetcher::new(File::open(&b.path).unwrap()).unwrap();
        let toc = estargz::read_manifest(&File::open(&b.path).unwrap(), Some(&b.toc_digest)).unwrap();
        // Refused: members shared by several files, and names the TOC cannot hold (JSON has
        // no non-UTF-8 strings); the whole pull above took both.
        let refusal = match () {
            _ if estargz::has_shared_members(&toc.toc) => Some("innerOffset"),
            _ if b.name.starts_with("nonutf8") => Some("not UTF-8"),
            _ => None,
        };
        if let Some(why) = refusal {
            let e = support::hygiene::check_err(tmp.path(), what, || pull(&mut fetcher, &partial, &insecure, None));
            assert_eq!(e.kind(), ErrorKind::Unsupported, "{what}: {e}");
            assert!(e.to_string().contains(why), "{e}");
            continue;
        }
        let r = pull(&mut fetcher, &partial, &insecure, None).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(r.diff_id, None);
        // The TOC has modification times to the second only (the tar keeps nanoseconds).
        assert_eq!(dump(&partial), to_seconds(dump(&reference)), "{what}: partial pull");
        assert_eq!(objects(&partial), objects(&reference), "{what}: partial pull");

        // Again with that layer as a source: nothing but the TOC is fetched.
        let again = tmp.path().join(format!("again{i}"));
        let mut fetcher = FileFetcher::new(File::open(&b.path).unwrap()).unwrap();
        let reuse = PullOptions { source_layers: vec![partial.clone()], ..insecure.clone() };
        let r = pull(&mut fetcher, &again, &reuse, None).unwrap();
        let toc_bytes = size - toc.location.toc.offset;
        assert!(r.blob_bytes_fetched <= toc_bytes, "{what}: fetched {} > TOC {toc_bytes}", r.blob_bytes_fetched);
        assert_eq!(blob_bytes(&again), blob_bytes(&partial), "{what}: reuse");
        for d in [whole, partial, again, reference] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }
}

/// `blob` with its TOC JSON replaced by `edit(json)`: the TOC member re-made and the footer kept
/// (the TOC's offset does not move).
fn with_toc(blob: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let footer = estargz::parse_footer(&blob[blob.len() - 51..]).unwrap().unwrap();
    let off = footer.toc_offset as usize;
    let json = toc_json(blob);
    let mut v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    edit(&mut v);
    let json = serde_json::to_vec(&v).unwrap();
    let tar = support::tar::TarBuilder::new().file(estargz::TOC_TAR_NAME, &json).finish();
    let mut member = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    member.write_all(&tar).unwrap();
    let mut out = blob[..off].to_vec();
    out.extend_from_slice(&member.finish().unwrap());
    out.extend_from_slice(&blob[blob.len() - 51..]);
    out
}

fn first_reg(v: &mut serde_json::Value, min_size: u64) -> &mut serde_json::Value {
    v["entries"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|e| {
            e["type"] == "reg"
                && e["size"].as_u64().unwrap_or(0) >= min_size
                && !estargz::is_format_file(e["name"].as_str().unwrap().as_bytes())
        })
        .unwrap()
}

fn sha256_prefixed(data: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(data)))
}

/// The TOC JSON of a blob as it is (not checked: it may be a lie made here).
fn toc_json(blob: &[u8]) -> Vec<u8> {
    let footer = estargz::parse_footer(&blob[blob.len() - 51..]).unwrap().unwrap();
    let mut tar = Vec::new();
    let member = &blob[footer.toc_offset as usize..blob.len() - 51];
    flate2::read::GzDecoder::new(member).read_to_end(&mut tar).unwrap();
    let size = u64::from_str_radix(std::str::from_utf8(&tar[124..135]).unwrap().trim_matches('\0').trim(), 8).unwrap();
    tar[512..512 + size as usize].to_vec()
}

#[test]
fn lies_and_damage_are_refused_and_leave_nothing() {
    let Some(dir) = blobs_dir() else { return };
    let _lock = support::hygiene::lock();
    let tmp = tempfile::tempdir().unwrap();
    let good = std::fs::read(dir.join("handmade-pax-c4k.estargz")).unwrap();
    let write = |name: &str, data: &[u8]| {
        let p = tmp.path().join(name);
        File::create(&p).unwrap().write_all(data).unwrap();
        p
    };
    let insecure = |toc: &[u8]| PullOptions {
        annotations: Some(BTreeMap::from([(ANNOTATION_TOC_DIGEST.to_string(), sha256_prefixed(toc))])),
        insecure_skip_diff_id: true,
        verity: VerityPolicy::Off,
        ..Default::default()
    };
    let convert_checked = |p: &Path, layer: &Path| {
        let options = ConvertOptions { estargz: Some(EstargzCheck::default()), ..no_verity() };
        convert(open(p), layer, &options, None)
    };
    let layer = tmp.path().join("layer");

    // A TOC whose digest is not the annotation's.
    let p = write("good.estargz", &good);
    let mut options = insecure(b"not the TOC");
    options.insecure_skip_diff_id = false;
    let e = support::hygiene::check_err(tmp.path(), "digest", || {
        pull(&mut FileFetcher::new(File::open(&p).unwrap()).unwrap(), &layer, &options, None)
    });
    assert_eq!(e.kind(), ErrorKind::Verification, "{e}");
    assert!(e.to_string().contains("eStargz TOC checksum mismatch"), "{e}");

    // A TOC that lies about a file's content: conversion names the entry, a partial pull the file.
    let lying = with_toc(&good, |v| {
        first_reg(v, 1)["digest"] = serde_json::json!(format!("sha256:{}", "0".repeat(64)));
    });
    let p = write("lying.estargz", &lying);
    let e = support::hygiene::check_err(tmp.path(), "convert lying TOC", || convert_checked(&p, &layer));
    assert_eq!(e.kind(), ErrorKind::Verification, "{e}");
    assert!(e.to_string().contains("does not match the layer") && e.to_string().contains("content"), "{e}");
    let toc = toc_json(&lying);
    let e = support::hygiene::check_err(tmp.path(), "pull lying TOC", || {
        pull(&mut FileFetcher::new(File::open(&p).unwrap()).unwrap(), &layer, &insecure(&toc), None)
    });
    assert_eq!(e.kind(), ErrorKind::Verification, "{e}");
    assert!(e.to_string().contains("checksum mismatch"), "{e}");

    // A missing digest, and an absurd size: refused by conversion and by a partial pull.
    for (what, edit) in [
        (
            "missing digest",
            Box::new(|e: &mut serde_json::Value| e["digest"] = serde_json::json!(""))
                as Box<dyn Fn(&mut serde_json::Value)>,
        ),
        ("absurd size", Box::new(|e: &mut serde_json::Value| e["size"] = serde_json::json!(1u64 << 50))),
    ] {
        let lying = with_toc(&good, |v| edit(first_reg(v, 1)));
        let p = write("edited.estargz", &lying);
        let e = support::hygiene::check_err(tmp.path(), what, || convert_checked(&p, &layer));
        assert_eq!(e.kind(), ErrorKind::Verification, "{what}: {e}");
        let toc = toc_json(&lying);
        let e = support::hygiene::check_err(tmp.path(), what, || {
            pull(&mut FileFetcher::new(File::open(&p).unwrap()).unwrap(), &layer, &insecure(&toc), None)
        });
        assert!(matches!(e.kind(), ErrorKind::Verification | ErrorKind::Format), "{what}: {e}");
    }

    // A lying chunk digest (files of this blob are cut every 4 KiB).
    let lying = with_toc(&good, |v| {
        let entries = v["entries"].as_array_mut().unwrap();
        let chunk = entries.iter_mut().find(|e| e["type"] == "chunk").unwrap();
        chunk["chunkDigest"] = serde_json::json!(format!("sha256:{}", "1".repeat(64)));
    });
    let p = write("lying-chunk.estargz", &lying);
    let e = support::hygiene::check_err(tmp.path(), "convert lying chunk", || convert_checked(&p, &layer));
    assert!(e.to_string().contains("chunk") && e.to_string().contains("checksum mismatch"), "{e}");

    // A data offset past the TOC.
    let lying = with_toc(&good, |v| {
        let blob_len = good.len();
        first_reg(v, 1)["offset"] = serde_json::json!(blob_len);
    });
    let p = write("offset.estargz", &lying);
    let toc = toc_json(&lying);
    let e = support::hygiene::check_err(tmp.path(), "offset", || {
        pull(&mut FileFetcher::new(File::open(&p).unwrap()).unwrap(), &layer, &insecure(&toc), None)
    });
    assert_eq!(e.kind(), ErrorKind::Format, "{e}");

    // A footer pointing outside the blob.
    let mut bad = good.clone();
    let n = bad.len();
    let pos = n - 51 + 16;
    bad[pos..pos + 16].copy_from_slice(b"7fffffffffffffff");
    let p = write("footer.estargz", &bad);
    let e = support::hygiene::check_err(tmp.path(), "footer", || {
        pull(&mut FileFetcher::new(File::open(&p).unwrap()).unwrap(), &layer, &PullOptions::default(), None)
    });
    assert!(e.to_string().contains("outside the blob"), "{e}");

    // Damaged file data (a byte in the middle of the blob): the whole-blob conversion fails in
    // gzip or on a digest, the partial pull on the file's checksum or its gzip data.
    let mut bad = good.clone();
    let mid = bad.len() / 3;
    bad[mid] ^= 0x55;
    let p = write("damaged.estargz", &bad);
    support::hygiene::check_err(tmp.path(), "convert damaged", || convert_checked(&p, &layer));
    let toc = toc_json(&bad);
    let e = support::hygiene::check_err(tmp.path(), "pull damaged", || {
        pull(&mut FileFetcher::new(File::open(&p).unwrap()).unwrap(), &layer, &insecure(&toc), None)
    });
    assert!(matches!(e.kind(), ErrorKind::Verification | ErrorKind::Format), "{e}");

    // A truncated blob.
    let p = write("truncated.estargz", &good[..good.len() / 2]);
    support::hygiene::check_err(tmp.path(), "convert truncated", || convert_checked(&p, &layer));

    // The wrong DiffID.
    let p = write("good2.estargz", &good);
    let options = PullOptions {
        annotations: Some(BTreeMap::from([(ANNOTATION_TOC_DIGEST.to_string(), sha256_prefixed(&toc_json(&good)))])),
        expected_diff_id: Some([7; 32]),
        verity: VerityPolicy::Off,
        ..Default::default()
    };
    let e = support::hygiene::check_err(tmp.path(), "diff id", || {
        pull(&mut FileFetcher::new(File::open(&p).unwrap()).unwrap(), &layer, &options, None)
    });
    assert_eq!(e.kind(), ErrorKind::Verification, "{e}");
    assert!(e.to_string().contains("DiffID mismatch"), "{e}");
    assert!(!layer.exists());
}

#[test]
fn the_legacy_47_byte_footer_reads_the_same() {
    let Some(dir) = blobs_dir() else { return };
    let good = std::fs::read(dir.join("etc-doc-gnu-default.estargz")).unwrap();
    let footer = estargz::parse_footer(&good[good.len() - 51..]).unwrap().unwrap();
    // The original stargz footer: the offset field alone as the extra field.
    let mut legacy = good[..good.len() - 51].to_vec();
    let mut member = vec![0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff, 22, 0];
    member.extend_from_slice(format!("{:016x}STARGZ", footer.toc_offset).as_bytes());
    member.extend_from_slice(&[0x01, 0x00, 0x00, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(member.len(), 47);
    legacy.extend_from_slice(&member);
    let f = estargz::parse_footer(&legacy[legacy.len() - 51..]).unwrap().unwrap();
    assert_eq!((f.toc_offset, f.size), (footer.toc_offset, 47));
    let a = estargz::read_manifest(&good[..], None).unwrap();
    let b = estargz::read_manifest(&legacy[..], None).unwrap();
    assert_eq!(a.toc, b.toc);
    assert_eq!(a.toc_json, b.toc_json);
    // Not eStargz: nothing; a damaged footer: an error naming it.
    assert_eq!(estargz::parse_footer(&[0u8; 51]).unwrap(), None);
    let mut bad = good[good.len() - 51..].to_vec();
    bad[20] = b'z';
    assert!(estargz::parse_footer(&bad).unwrap_err().to_string().contains("invalid TOC offset"));
}

/// The CLI takes eStargz where it takes zstd:chunked: `toc` prints the blob's own TOC, `convert`
/// finds the format by the footer, and `convert --annotations` pulls it (whole, with the DiffID).
#[test]
fn the_cli_takes_estargz() {
    let Some(dir) = blobs_dir() else { return };
    let _lock = support::hygiene::lock();
    let tmp = tempfile::tempdir().unwrap();
    let b = blobs(&dir).into_iter().find(|b| b.name == "etc-doc-gnu-c4k").unwrap();
    let cli = || std::process::Command::new(env!("CARGO_BIN_EXE_composefs-storage"));
    let out = cli().args(["toc", &b.path.to_string_lossy()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(sha256_prefixed(out.stdout.strip_suffix(b"\n").unwrap()), b.toc_digest);
    let ann = tmp.path().join("ann.json");
    std::fs::write(&ann, serde_json::to_vec(&annotations(&b)).unwrap()).unwrap();
    let converted = tmp.path().join("converted");
    let pulled = tmp.path().join("pulled");
    for (args, dir) in [
        (vec!["convert", "-q", "--json", "--verity", "off", "--diff-id", &b.diff_id], &converted),
        (vec!["convert", "-q", "--json", "--verity", "off", "--annotations", &ann.to_string_lossy()], &pulled),
    ] {
        let out = cli().args(&args).arg(&b.path).arg(dir).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains(&b.diff_id), "{args:?}");
    }
    assert_eq!(blob_bytes(&converted), blob_bytes(&pulled));
    assert!(!dump(&converted).iter().any(|l| is_format_line(l)), "no format files in the tree");
}

//! The zstd:chunked writer against the corpus blobs made by containers/storage's compressor: the
//! same TOC entries (chunk boundaries, digests, holes; only blob offsets differ, as they depend on
//! the zstd encoder) and the same tar-split; the blob is a plain zstd stream of the exact tar; and
//! a partial pull of it makes the same layer as converting the tar.

mod support;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use composefs_storage::chunked::writer::{compress, CompressOptions};
use composefs_storage::chunked::{read_manifest, ReadOptions, Toc};
use composefs_storage::layer::pull::{pull, FileFetcher, PullOptions};
use composefs_storage::layer::{convert, ConvertOptions, VerityPolicy};

const CASES: &[&str] = &["empty", "noparents-ustar", "handmade-archive", "handmade-pax", "etc-doc-gnu"];

fn case_dir(case: &str) -> PathBuf {
    support::cstorage().join(case)
}

/// The case's input tar, compressed or not, as stored.
fn input(case: &str) -> PathBuf {
    let plain = case_dir(case).join(format!("{case}.tar"));
    if plain.exists() {
        plain
    } else {
        case_dir(case).join(format!("{case}.tar.zst"))
    }
}

fn tar_bytes(case: &str) -> Vec<u8> {
    let p = input(case);
    let raw = std::fs::read(&p).unwrap();
    if p.extension().is_some_and(|e| e == "zst") {
        zstd::stream::decode_all(&raw[..]).unwrap()
    } else {
        raw
    }
}

fn read_maybe_zst(base: &Path) -> Vec<u8> {
    if base.exists() {
        return std::fs::read(base).unwrap();
    }
    let mut z = base.as_os_str().to_owned();
    z.push(".zst");
    zstd::stream::decode_all(&std::fs::read(PathBuf::from(z)).unwrap()[..]).unwrap()
}

fn write_blob(case: &str, out: &Path) -> composefs_storage::chunked::writer::CompressResult {
    let mut f = File::create(out).unwrap();
    compress(Box::new(File::open(input(case)).unwrap()), &mut f, &CompressOptions { level: 3, ..Default::default() })
        .unwrap_or_else(|e| panic!("{case}: {e}"))
}

/// TOC entries with the encoder-dependent blob offsets cleared.
fn entries_without_offsets(toc: &Toc) -> Vec<composefs_storage::chunked::TocEntry> {
    toc.entries
        .iter()
        .cloned()
        .map(|mut e| {
            e.offset = 0;
            e.end_offset = 0;
            e
        })
        .collect()
}

#[test]
fn toc_and_tar_split_match_containers_storage_and_the_blob_is_the_tar() {
    for case in CASES {
        let tmp = tempfile::tempdir().unwrap();
        let blob_path = tmp.path().join("blob");
        let r = write_blob(case, &blob_path);
        let blob = std::fs::read(&blob_path).unwrap();
        let tar = tar_bytes(case);

        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(case_dir(case).join(format!("{case}.compress.json"))).unwrap())
                .unwrap();
        assert_eq!(format!("sha256:{}", hex(&r.diff_id)), summary["diffID"].as_str().unwrap(), "{case}");
        assert_eq!(r.blob_size, blob.len() as u64);

        // Our reader accepts it, located by the annotations and by the footer.
        let by_ann = read_manifest(&blob[..], Some(&r.annotations), &ReadOptions::default())
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        let by_footer = read_manifest(&blob[..], None, &ReadOptions::default()).unwrap();
        assert_eq!(by_ann.location.toc_digest, r.toc_digest);
        assert_eq!(by_footer.location.toc_digest, r.toc_digest);
        assert_eq!(by_ann.toc_json, by_footer.toc_json);

        // The same entries as containers/storage's compressor wrote for the same tar.
        let theirs = Toc::parse(&std::fs::read(case_dir(case).join(format!("{case}.toc.raw.json"))).unwrap()).unwrap();
        let ours = entries_without_offsets(&by_ann.toc);
        let expected = entries_without_offsets(&theirs);
        assert_eq!(ours.len(), expected.len(), "{case}: entry count");
        for (a, b) in ours.iter().zip(&expected) {
            assert_eq!(a, b, "{case}: TOC entry differs");
        }
        // Byte for byte, apart from the offsets and the tar-split digest (a zstd frame digest).
        let strip = |json: &[u8]| -> String {
            let s = String::from_utf8_lossy(json).into_owned();
            let re_off = |s: &str, key: &str| -> String {
                let mut out = String::new();
                let mut rest = s;
                let pat = format!("\"{key}\":");
                while let Some(i) = rest.find(&pat) {
                    out.push_str(&rest[..i + pat.len()]);
                    rest = &rest[i + pat.len()..];
                    let n = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
                    out.push('N');
                    rest = &rest[n..];
                }
                out.push_str(rest);
                out
            };
            let s = re_off(&re_off(&s, "offset"), "endOffset");
            s[..s.find(",\"tarSplitDigest\"").unwrap_or(s.len())].to_string()
        };
        assert_eq!(
            strip(&by_ann.toc_json),
            strip(&std::fs::read(case_dir(case).join(format!("{case}.toc.raw.json"))).unwrap()),
            "{case}: TOC JSON"
        );

        // The same tar-split, byte for byte.
        let mut split = Vec::new();
        by_ann.tar_split.as_ref().unwrap().read_to_end(&mut split).unwrap();
        let expected_split = read_maybe_zst(&case_dir(case).join(format!("{case}.tarsplit.ndjson")));
        assert!(split == expected_split, "{case}: tar-split differs");

        // A plain zstd stream of the exact tar: `zstd -dc` when installed, else the library.
        let decoded = match Command::new("zstd").arg("-dc").arg(&blob_path).output() {
            Ok(o) if o.status.success() => o.stdout,
            _ => {
                eprintln!("zstd CLI not available; decoding with the library");
                zstd::stream::decode_all(&blob[..]).unwrap()
            }
        };
        assert!(decoded == tar, "{case}: zstd -dc of the blob is not the tar");
    }
}

fn listing(layer: &Path) -> (Vec<(String, u64)>, Vec<u8>) {
    let mut out = Vec::new();
    for prefix in std::fs::read_dir(layer.join("diff")).unwrap() {
        let prefix = prefix.unwrap();
        for obj in std::fs::read_dir(prefix.path()).unwrap() {
            let obj = obj.unwrap();
            let data = std::fs::read(obj.path()).unwrap();
            out.push((
                format!("{}/{}", prefix.file_name().to_string_lossy(), obj.file_name().to_string_lossy()),
                data.len() as u64,
            ));
            assert_eq!(hex(&sha2::Sha256::digest(&data)), out.last().unwrap().0.replace('/', ""), "object content");
        }
    }
    out.sort();
    (out, std::fs::read(layer.join("composefs-data/composefs.blob")).unwrap())
}

use sha2::Digest;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn partial_pull_of_our_blob_equals_converting_the_tar() {
    for case in CASES {
        let tmp = tempfile::tempdir().unwrap();
        let blob_path = tmp.path().join("blob");
        let r = write_blob(case, &blob_path);
        let mut fetcher = FileFetcher::new(File::open(&blob_path).unwrap()).unwrap();
        let opts =
            PullOptions { annotations: Some(r.annotations.clone()), verity: VerityPolicy::Off, ..Default::default() };
        let pulled =
            pull(&mut fetcher, &tmp.path().join("pulled"), &opts, None).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(pulled.diff_id, Some(r.diff_id), "{case}: DiffID re-assembled from tar-split");
        let conv = ConvertOptions { verity: VerityPolicy::Off, ..Default::default() };
        convert(Box::new(File::open(input(case)).unwrap()), &tmp.path().join("converted"), &conv, None).unwrap();
        assert!(
            listing(&tmp.path().join("pulled")) == listing(&tmp.path().join("converted")),
            "{case}: pulled and converted layers differ"
        );
    }
}

#[test]
fn compress_cli_writes_blob_and_annotations_and_leaves_nothing_on_error() {
    let bin = env!("CARGO_BIN_EXE_composefs-storage");
    let tmp = tempfile::tempdir().unwrap();
    let case = "noparents-ustar";
    let out = tmp.path().join("blob.zst");
    let ann = tmp.path().join("ann.json");
    let st = Command::new(bin)
        .args(["compress", "--annotations-out"])
        .arg(&ann)
        .arg(input(case))
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    let layer = tmp.path().join("layer");
    let st = Command::new(bin)
        .args(["convert", "--verity", "off", "--annotations"])
        .arg(&ann)
        .arg(&out)
        .arg(&layer)
        .status()
        .unwrap();
    assert!(st.success(), "convert --annotations accepts the annotations file");
    assert!(layer.join("composefs-data/composefs.blob").exists());

    // A truncated input fails and leaves no output file.
    let bad = tmp.path().join("bad.tar");
    let tar = tar_bytes("handmade-archive");
    std::fs::write(&bad, &tar[..tar.len() / 2]).unwrap();
    let out2 = tmp.path().join("bad.zst");
    let o = Command::new(bin).arg("compress").arg(&bad).arg(&out2).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("truncated"), "{}", String::from_utf8_lossy(&o.stderr));
    let names: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 4, "only blob.zst, ann.json, layer, bad.tar: {names:?}");
}

#[test]
fn duplicate_paths_fail_as_containers_storage_fails() {
    let dir = case_dir("dup-entry");
    let expected = std::fs::read_to_string(dir.join("dup-entry.compress.err")).unwrap();
    assert!(expected.contains("duplicates of file paths not supported"), "{expected}");
    let e = compress(
        Box::new(File::open(dir.join("dup-entry.tar")).unwrap()),
        &mut std::io::sink(),
        &CompressOptions::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("duplicates of file paths not supported"), "{e}");
}

/// Frames are compressed on several threads and written in order: the blob is the same bytes
/// whatever the number of threads, including a frame too large to hold for a worker (a 4.5 MiB
/// file the rollsum never splits, compressed as it comes after the frames before it), and a
/// truncated input fails the same way with every thread count.
#[test]
fn the_blob_is_the_same_whatever_the_number_of_threads() {
    // (Debug builds hash and roll a few MB/s: the inputs are small but for the one large frame.)
    let mut inputs: Vec<(String, Vec<u8>)> =
        ["handmade-pax", "noparents-ustar"].iter().map(|c| (c.to_string(), tar_bytes(c))).collect();
    let mut b = support::tar::TarBuilder::new();
    b.dir("d/");
    b.file("d/unsplit", &vec![0u8; 9 << 19]);
    for i in 0..200 {
        b.file(&format!("d/f{i}"), &support::noise(1 + (i * 7919) % 5_000, i as u64));
    }
    b.file("d/noise", &support::noise(300 << 10, 99));
    b.file("d/after", b"the last file");
    inputs.push(("synthetic".to_string(), b.finish()));
    let blob_of = |tar: &[u8], threads: usize| {
        let mut out = Vec::new();
        let options = CompressOptions { level: 3, threads, ..Default::default() };
        compress(Box::new(std::io::Cursor::new(tar.to_vec())), &mut out, &options).map(|r| (out, r))
    };
    for (name, tar) in &inputs {
        let (one, r1) = blob_of(tar, 1).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(zstd::stream::decode_all(&one[..]).unwrap(), *tar, "{name}: the blob is not the tar");
        for threads in [2, 7] {
            let (many, r) = blob_of(tar, threads).unwrap_or_else(|e| panic!("{name}, {threads} threads: {e}"));
            assert!(many == one, "{name}: {threads} threads wrote another blob");
            assert_eq!((r.blob_digest, r.annotations.clone()), (r1.blob_digest, r1.annotations.clone()), "{name}");
        }
    }
    // The synthetic layer's TOC offsets point at its frames: a pull checks every file.
    let (name, tar) = inputs.last().unwrap();
    let (blob, r) = blob_of(tar, 8).unwrap();
    let unsplit = {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("blob");
        std::fs::write(&path, &blob).unwrap();
        let m = read_manifest(&File::open(&path).unwrap(), Some(&r.annotations), &ReadOptions::default()).unwrap();
        let mut fetcher = FileFetcher::new(File::open(&path).unwrap()).unwrap();
        let options =
            PullOptions { annotations: Some(r.annotations.clone()), verity: VerityPolicy::Off, ..Default::default() };
        let p = pull(&mut fetcher, &tmp.path().join("l"), &options, None).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(p.diff_id, Some(r.diff_id));
        m.toc.entries.into_iter().find(|e| e.name == "d/unsplit").unwrap()
    };
    assert!(unsplit.chunk_size == 0 && unsplit.end_offset - unsplit.offset > 0, "d/unsplit is one frame");

    let truncated = &tar[..tar.len() / 2];
    let errors: Vec<String> = [1, 7].iter().map(|&t| blob_of(truncated, t).unwrap_err().to_string()).collect();
    assert!(errors.iter().all(|e| *e == errors[0]), "{errors:?}");
}

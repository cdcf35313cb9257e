//! Partial pulls of the corpus zstd:chunked blobs: the layer equals the one converted from the
//! full stream; reuse fetches nothing but the TOC; lies and tampering are refused cleanly.

mod support;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use composefs_storage::chunked::ranges::ByteRange;
use composefs_storage::layer::pull::{pull, BlobFetcher, FileFetcher, PullOptions};
use composefs_storage::layer::{convert, ConvertOptions, VerityPolicy};
use composefs_storage::{ErrorKind, Result};
use support::hygiene::Hygiene;

fn corpus() -> PathBuf {
    support::cstorage()
}

fn annotations(case: &str) -> BTreeMap<String, String> {
    let p = corpus().join(case).join(format!("{case}.annotations.json"));
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn blob(case: &str) -> PathBuf {
    corpus().join(case).join(format!("{case}.zstd-chunked"))
}

fn options(case: &str) -> PullOptions {
    PullOptions { annotations: Some(annotations(case)), verity: VerityPolicy::Off, ..Default::default() }
}

/// Every file under `dir`, relative, with its size (objects) — and the blob bytes.
fn listing(layer: &Path) -> (Vec<(String, u64)>, Vec<u8>) {
    let mut out = Vec::new();
    let diff = layer.join("diff");
    for prefix in std::fs::read_dir(&diff).unwrap() {
        let prefix = prefix.unwrap();
        for obj in std::fs::read_dir(prefix.path()).unwrap() {
            let obj = obj.unwrap();
            out.push((
                format!("{}/{}", prefix.file_name().to_string_lossy(), obj.file_name().to_string_lossy()),
                obj.metadata().unwrap().len(),
            ));
        }
    }
    out.sort();
    (out, std::fs::read(layer.join("composefs-data/composefs.blob")).unwrap())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Nothing but `keep` in `dir`: no staging directory or half-written layer.
fn assert_clean(dir: &Path, keep: &[&str]) {
    let names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !keep.contains(&n.as_str()))
        .collect();
    assert!(names.is_empty(), "left behind: {names:?}");
}

const CASES: &[&str] = &["empty", "noparents-ustar", "handmade-archive", "handmade-pax", "etc-doc-gnu"];

#[test]
fn pull_equals_full_conversion_and_verifies_diff_id() {
    let _serial = support::hygiene::lock(); // one test at a time: the hygiene checks count fds
    for case in CASES {
        let tmp = tempfile::tempdir().unwrap();
        let mut fetcher = FileFetcher::new(File::open(blob(case)).unwrap()).unwrap();
        let pulled = pull(&mut fetcher, &tmp.path().join("pulled"), &options(case), None)
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(corpus().join(case).join(format!("{case}.compress.json"))).unwrap())
                .unwrap();
        assert_eq!(format!("sha256:{}", hex(&pulled.diff_id.unwrap())), summary["diffID"].as_str().unwrap());
        assert_eq!(pulled.toc_digest, summary["tocDigest"].as_str().unwrap());
        assert!(pulled.toc_authenticated);

        // The same layer converted from the full stream (the blob is also a plain zstd stream).
        let conv_opts = ConvertOptions { verity: VerityPolicy::Off, ..Default::default() };
        convert(Box::new(File::open(blob(case)).unwrap()), &tmp.path().join("converted"), &conv_opts, None).unwrap();
        assert!(
            listing(&tmp.path().join("pulled")) == listing(&tmp.path().join("converted")),
            "{case}: pulled and converted layers differ"
        );
        // Every expected object is there (objects.txt lists `ab/<62 hex> size`).
        let expected = std::fs::read_to_string(corpus().join(case).join(format!("{case}.objects.txt"))).unwrap();
        let expected: Vec<(String, u64)> = expected
            .lines()
            .map(|l| {
                let (p, s) = l.split_once(' ').unwrap();
                (p.to_string(), s.parse().unwrap())
            })
            .collect();
        assert_eq!(listing(&tmp.path().join("pulled")).0, expected, "{case}");
        assert_clean(tmp.path(), &["pulled", "converted"]);
    }
}

#[test]
fn pull_with_the_same_content_present_fetches_no_file_data() {
    let _serial = support::hygiene::lock(); // one test at a time: the hygiene checks count fds
    let case = "handmade-archive";
    let tmp = tempfile::tempdir().unwrap();
    let conv_opts = ConvertOptions { verity: VerityPolicy::Off, ..Default::default() };
    let source = tmp.path().join("l1");
    convert(Box::new(File::open(blob(case)).unwrap()), &source, &conv_opts, None).unwrap();
    for hardlinks in [false, true] {
        let dest = tmp.path().join(format!("l2-{hardlinks}"));
        let mut fetcher = FileFetcher::new(File::open(blob(case)).unwrap()).unwrap();
        let opts = PullOptions { source_layers: vec![source.clone()], hardlinks, ..options(case) };
        let r = pull(&mut fetcher, &dest, &opts, None).unwrap();
        let ann = annotations(case);
        let pos = |k: &str| -> u64 {
            ann[&format!("io.github.containers.zstd-chunked.{k}")].split(':').nth(1).unwrap().parse().unwrap()
        };
        // Only the TOC and tar-split frames, and the 8-byte skippable-frame header of each.
        assert_eq!(r.blob_bytes_fetched, pos("manifest-position") + pos("tarsplit-position") + 16);
        // Both frames and their headers in one request (one round trip to a registry, not four).
        assert_eq!(r.requests, 1);
        assert_eq!(r.objects.bytes_written, 0);
        assert!(r.objects.objects_reused > 0);
        assert_eq!(listing(&dest), listing(&source));
        if hardlinks {
            use std::os::unix::fs::MetadataExt;
            let (objs, _) = listing(&dest);
            let (name, _) = objs.iter().find(|(_, s)| *s > 0).unwrap();
            let a = std::fs::metadata(dest.join("diff").join(name)).unwrap();
            let b = std::fs::metadata(source.join("diff").join(name)).unwrap();
            assert_eq!(a.ino(), b.ino(), "hardlinked");
        }
    }
}

#[test]
fn a_manifest_found_by_the_footer_reads_the_toc_once() {
    let case = "handmade-archive";
    let mut f = Hostile::new(case, None, usize::MAX);
    let m = composefs_storage::layer::pull::read_manifest_from(&mut f, None, None).unwrap();
    assert!(!m.location.authenticated);
    let ann = annotations(case);
    let len = |k: &str| -> u64 {
        ann[&format!("io.github.containers.zstd-chunked.{k}")].split(':').nth(1).unwrap().parse().unwrap()
    };
    // The blob's tail (the footer), then the TOC and the tar-split with their 8-byte headers: the
    // TOC read to find its digest is the one parsed, not read again.
    assert_eq!(f.requests, 3);
    let frames = len("manifest-position") + len("tarsplit-position") + 16;
    assert!(f.bytes > frames && f.bytes - frames < 128, "{} bytes fetched, {frames} in the frames", f.bytes);
}

/// A manifest read ahead (as containers/storage's NewDiffer reads it) carries the pull's plan of
/// its TOC, made in the default whiteout mode: a pull in either mode gives the layer that the same
/// pull reading the manifest itself gives (the modes give different blobs for this layer, which
/// has an opaque directory and whiteouts).
#[test]
fn a_manifest_read_ahead_gives_the_same_layer_in_either_whiteout_mode() {
    let _serial = support::hygiene::lock();
    let case = "handmade-archive";
    let tmp = tempfile::tempdir().unwrap();
    let mut blobs = Vec::new();
    for oci_whiteouts in [true, false] {
        let opts = PullOptions { oci_whiteouts, ..options(case) };
        let mut f = FileFetcher::new(File::open(blob(case)).unwrap()).unwrap();
        let alone = tmp.path().join(format!("alone-{oci_whiteouts}"));
        pull(&mut f, &alone, &opts, None).unwrap();
        let mut f = FileFetcher::new(File::open(blob(case)).unwrap()).unwrap();
        let manifest =
            composefs_storage::layer::pull::read_manifest_from(&mut f, Some(&annotations(case)), None).unwrap();
        let ahead = tmp.path().join(format!("ahead-{oci_whiteouts}"));
        let opts = PullOptions { manifest: Some(std::sync::Arc::new(manifest)), ..opts };
        pull(&mut f, &ahead, &opts, None).unwrap();
        assert!(listing(&alone) == listing(&ahead), "whiteouts converted: {oci_whiteouts}: the layers differ");
        blobs.push(listing(&ahead).1);
    }
    assert_ne!(blobs[0], blobs[1], "the whiteout modes gave the same blob");
}

/// Serves a blob with one byte of one range flipped, or refuses more than `max` ranges; counts
/// the requests it serves and their bytes.
struct Hostile {
    inner: FileFetcher,
    flip_at: Option<u64>,
    max: usize,
    refused: usize,
    largest: usize,
    requests: u64,
    bytes: u64,
}

impl Hostile {
    fn new(case: &str, flip_at: Option<u64>, max: usize) -> Hostile {
        let inner = FileFetcher::new(File::open(blob(case)).unwrap()).unwrap();
        Hostile { inner, flip_at, max, refused: 0, largest: 0, requests: 0, bytes: 0 }
    }
}

impl BlobFetcher for Hostile {
    fn blob_size(&self) -> u64 {
        self.inner.blob_size()
    }
    fn fetch<'a>(&'a mut self, ranges: &[ByteRange]) -> Result<Box<dyn Read + 'a>> {
        if ranges.len() > self.max {
            self.refused += 1;
            return Err(composefs_storage::Error::limit("too many ranges"));
        }
        self.largest = self.largest.max(ranges.len());
        self.requests += 1;
        self.bytes += ranges.iter().map(|r| r.length).sum::<u64>();
        let mut data = Vec::new();
        self.inner.fetch(ranges)?.read_to_end(&mut data).unwrap();
        if let Some(at) = self.flip_at {
            let mut pos = 0u64;
            for r in ranges {
                if at >= r.offset && at < r.end() {
                    data[(pos + at - r.offset) as usize] ^= 0x01;
                }
                pos += r.length;
            }
        }
        Ok(Box::new(std::io::Cursor::new(data)))
    }
}

fn toc_entry_offset(case: &str, name: &str) -> u64 {
    let toc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(corpus().join(case).join(format!("{case}.toc.raw.json"))).unwrap())
            .unwrap();
    toc["entries"].as_array().unwrap().iter().find(|e| e["name"] == name).unwrap()["offset"].as_u64().unwrap()
}

#[test]
fn tampered_file_data_is_refused_and_nothing_is_left() {
    let _serial = support::hygiene::lock(); // one test at a time: the hygiene checks count fds
    let case = "noparents-ustar";
    let tmp = tempfile::tempdir().unwrap();
    let at = toc_entry_offset(case, "usr/lib/x/y/f1") + 4;
    let mut f = Hostile::new(case, Some(at), 1024);
    let h = Hygiene::take(tmp.path());
    let e = pull(&mut f, &tmp.path().join("l"), &options(case), None).unwrap_err();
    h.assert_clean("tampered file data");
    assert!(matches!(e.kind(), ErrorKind::Verification | ErrorKind::Format), "{e}");
    assert!(e.to_string().contains("usr/lib/x/y/f1"), "{e}");
    assert_clean(tmp.path(), &[]);
}

#[test]
fn refused_range_counts_are_halved() {
    let _serial = support::hygiene::lock(); // one test at a time: the hygiene checks count fds
    let case = "etc-doc-gnu";
    let tmp = tempfile::tempdir().unwrap();
    let mut f = Hostile::new(case, None, 7);
    let opts = PullOptions { max_ranges: 64, ..options(case) };
    let r = pull(&mut f, &tmp.path().join("l"), &opts, None).unwrap();
    assert!(f.refused >= 1, "the first request had more than 7 ranges");
    assert!(f.largest <= 7);
    assert!(r.diff_id.is_some());
}

#[test]
fn wrong_expected_diff_id_lying_toc_and_cancel_leave_nothing() {
    let _serial = support::hygiene::lock(); // one test at a time: the hygiene checks count fds
    let case = "handmade-archive";
    let tmp = tempfile::tempdir().unwrap();
    let mut f = FileFetcher::new(File::open(blob(case)).unwrap()).unwrap();
    let opts = PullOptions { expected_diff_id: Some([7; 32]), ..options(case) };
    let h = Hygiene::take(tmp.path());
    let e = pull(&mut f, &tmp.path().join("l"), &opts, None).unwrap_err();
    h.assert_clean("wrong expected DiffID");
    assert_eq!(e.kind(), ErrorKind::Verification);
    assert!(e.to_string().contains("DiffID mismatch"), "{e}");
    assert_clean(tmp.path(), &[]);

    let mut cancel = |_: composefs_storage::layer::Progress| false;
    let mut f = FileFetcher::new(File::open(blob(case)).unwrap()).unwrap();
    let h = Hygiene::take(tmp.path());
    let e = pull(&mut f, &tmp.path().join("l"), &options(case), Some(&mut cancel)).unwrap_err();
    h.assert_clean("cancelled pull");
    assert_eq!(e.kind(), ErrorKind::Cancelled);
    assert_clean(tmp.path(), &[]);

    // An annotation that points the TOC elsewhere fails authentication.
    let mut opts = options(case);
    opts.annotations
        .as_mut()
        .unwrap()
        .insert("io.github.containers.zstd-chunked.manifest-checksum".into(), format!("sha256:{}", "0".repeat(64)));
    let mut f = FileFetcher::new(File::open(blob(case)).unwrap()).unwrap();
    let h = Hygiene::take(tmp.path());
    assert_eq!(pull(&mut f, &tmp.path().join("l"), &opts, None).unwrap_err().kind(), ErrorKind::Verification);
    h.assert_clean("lying TOC checksum");
    assert_clean(tmp.path(), &[]);

    // An existing layer directory is never replaced.
    std::fs::create_dir(tmp.path().join("exists")).unwrap();
    let mut f = FileFetcher::new(File::open(blob(case)).unwrap()).unwrap();
    let h = Hygiene::take(tmp.path());
    assert_eq!(
        pull(&mut f, &tmp.path().join("exists"), &options(case), None).unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    h.assert_clean("existing layer dir");
    assert_clean(tmp.path(), &["exists"]);
}

#[test]
fn legacy_layers_need_the_insecure_option() {
    let _serial = support::hygiene::lock(); // one test at a time: the hygiene checks count fds
    let root = corpus().join("legacy/podman-4.3.1-oci/blobs/sha256");
    let path = root.join("3f05f612288c61901907804eb8e14fcb1c61419fcba94d0a8e5fb5869fa5cebd");
    let tmp = tempfile::tempdir().unwrap();
    let mut f = FileFetcher::new(File::open(&path).unwrap()).unwrap();
    let opts = PullOptions { verity: VerityPolicy::Off, ..Default::default() };
    let e = pull(&mut f, &tmp.path().join("l"), &opts, None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert_clean(tmp.path(), &[]);
    let opts = PullOptions { insecure_skip_diff_id: true, ..opts };
    let mut f = FileFetcher::new(File::open(&path).unwrap()).unwrap();
    let r = pull(&mut f, &tmp.path().join("l"), &opts, None).unwrap();
    assert!(r.diff_id.is_none());
    assert!(!r.toc_authenticated, "located by the legacy footer");
    // Same objects as the current-format blob of the same tar.
    let mut f = FileFetcher::new(File::open(blob("noparents-ustar")).unwrap()).unwrap();
    pull(&mut f, &tmp.path().join("current"), &options("noparents-ustar"), None).unwrap();
    assert_eq!(listing(&tmp.path().join("l")).0, listing(&tmp.path().join("current")).0);
}

/// A converted and a pulled layer both export back to the original tar, byte for byte.
#[test]
fn converted_and_pulled_layers_export_their_original_tar() {
    let _serial = support::hygiene::lock(); // one test at a time: the hygiene checks count fds
    use composefs_storage::layer::export::export;
    use sha2::{Digest, Sha256};
    for case in ["noparents-ustar", "handmade-pax", "etc-doc-gnu"] {
        let tmp = tempfile::tempdir().unwrap();
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(corpus().join(case).join(format!("{case}.compress.json"))).unwrap())
                .unwrap();
        let conv_opts = ConvertOptions { verity: VerityPolicy::Off, ..Default::default() };
        let converted = tmp.path().join("c");
        let r = convert(Box::new(File::open(blob(case)).unwrap()), &converted, &conv_opts, None).unwrap();
        let mut fetcher = FileFetcher::new(File::open(blob(case)).unwrap()).unwrap();
        let pulled = tmp.path().join("p");
        pull(&mut fetcher, &pulled, &options(case), None).unwrap();
        // The blob's digest is kept beside it for verified mounts.
        let kept = std::fs::read_to_string(converted.join("composefs-data/composefs.blob.verity")).unwrap();
        assert_eq!(kept.trim(), hex(&r.blob_verity.unwrap()));
        for layer in [&converted, &pulled] {
            let mut tar = Vec::new();
            let (diff_id, size) = export(layer, &mut tar).unwrap();
            assert_eq!(format!("sha256:{}", hex(&diff_id)), summary["diffID"].as_str().unwrap(), "{case}");
            assert_eq!(format!("sha256:{}", hex(&Sha256::digest(&tar))), summary["diffID"].as_str().unwrap());
            assert_eq!(size, tar.len() as u64);
        }
        // Both keep the tar-split as zstd; the pull keeps the blob's own frame.
        use composefs_storage::layer::metadata::{TAR_SPLIT, TAR_SPLIT_GZ};
        let ndjson = zstd::decode_all(&std::fs::read(converted.join(TAR_SPLIT)).unwrap()[..]).unwrap();
        assert_eq!(zstd::decode_all(&std::fs::read(pulled.join(TAR_SPLIT)).unwrap()[..]).unwrap(), ndjson);

        // A layer made by an earlier version keeps it gzip-compressed under another name: still read.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &ndjson).unwrap();
        std::fs::write(converted.join(TAR_SPLIT_GZ), gz.finish().unwrap()).unwrap();
        std::fs::remove_file(converted.join(TAR_SPLIT)).unwrap();
        let (diff_id, _) = export(&converted, &mut std::io::sink()).unwrap();
        assert_eq!(format!("sha256:{}", hex(&diff_id)), summary["diffID"].as_str().unwrap(), "{case} (gzip record)");

        // A damaged record is an error that names it; a missing one says what is missing.
        std::fs::write(converted.join(TAR_SPLIT), b"not a tar-split").unwrap();
        let e = export(&converted, &mut std::io::sink()).unwrap_err().to_string();
        assert!(e.contains("tar-split.json.zst") && e.contains("neither zstd nor gzip"), "{e}");
        std::fs::remove_file(converted.join(TAR_SPLIT)).unwrap();
        std::fs::remove_file(converted.join(TAR_SPLIT_GZ)).unwrap();
        let e = export(&converted, &mut std::io::sink()).unwrap_err().to_string();
        assert!(e.contains("tar-split.json.zst is missing"), "{e}");
    }
}

/// The 50 MiB sparse file of the corpus (five 64 KiB islands) is stored with holes, whether
/// converted from the stream or pulled: zero blocks take no space.
#[test]
fn zero_runs_become_holes() {
    let _serial = support::hygiene::lock(); // one test at a time: the hygiene checks count fds
    use std::os::unix::fs::MetadataExt;
    let case = "handmade-pax";
    let objects = std::fs::read_to_string(corpus().join(case).join(format!("{case}.objects.txt"))).unwrap();
    let sparse = objects.lines().find(|l| l.ends_with(" 52428800")).unwrap().split(' ').next().unwrap().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let conv_opts = ConvertOptions { verity: VerityPolicy::Off, ..Default::default() };
    convert(Box::new(File::open(blob(case)).unwrap()), &tmp.path().join("c"), &conv_opts, None).unwrap();
    let mut fetcher = FileFetcher::new(File::open(blob(case)).unwrap()).unwrap();
    pull(&mut fetcher, &tmp.path().join("p"), &options(case), None).unwrap();
    for layer in ["c", "p"] {
        let m = std::fs::metadata(tmp.path().join(layer).join("diff").join(&sparse)).unwrap();
        assert_eq!(m.len(), 52428800);
        assert!(m.blocks() * 512 < 2 << 20, "{layer}: {} bytes allocated", m.blocks() * 512);
    }
}

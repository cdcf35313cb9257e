//! End-to-end conversion: atomicity, cancellation, inputs (path, pipe), reuse, and the blob
//! against containers/storage + mkcomposefs (corpus cstorage-images/EXPECTED.tsv).

mod support;
use std::io::Read;
use std::path::Path;

use composefs_storage::layer::{convert, ConvertOptions, Progress, VerityPolicy};
use composefs_storage::ErrorKind;

use support::corpus;
use support::hygiene::check_err;

fn open(p: &Path) -> Box<dyn Read + Send> {
    Box::new(std::fs::File::open(p).unwrap())
}

/// Names in `dir` (to prove nothing was left behind).
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

fn opts() -> ConvertOptions {
    ConvertOptions { verity: VerityPolicy::IfAvailable, ..Default::default() }
}

#[test]
fn existing_dir_is_never_overwritten() {
    let _serial = support::hygiene::lock(); // one test at a time: the hygiene checks count fds
    let Some(c) = corpus() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("layer");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("keep"), b"mine").unwrap();
    let e = check_err(tmp.path(), "existing dir", || {
        convert(open(&c.join("cstorage/noparents-ustar/noparents-ustar.tar")), &dir, &opts(), None)
    });
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    assert_eq!(std::fs::read(dir.join("keep")).unwrap(), b"mine");
    assert_eq!(listing(tmp.path()), vec!["layer"]);
}

#[test]
fn corrupt_and_truncated_streams_leave_nothing_behind() {
    let _serial = support::hygiene::lock(); // one test at a time: the hygiene checks count fds
    let Some(c) = corpus() else { return };
    let tar = std::fs::read(c.join("cstorage/noparents-ustar/noparents-ustar.tar")).unwrap();
    let zst = std::fs::read(c.join("cstorage/etc-doc-gnu/etc-doc-gnu.tar.zst")).unwrap();
    let mut bad_sum = tar.clone();
    bad_sum[0] ^= 1;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated tar", tar[..512 + 100].to_vec(), "truncated"),
        ("bad checksum", bad_sum, "checksum"),
        ("truncated zstd", zst[..zst.len() / 2].to_vec(), "zstd"),
        ("not a tar", vec![b'x'; 4096], "checksum"),
    ];
    for (what, blob, needle) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("layer");
        let e = check_err(tmp.path(), what, || convert(Box::new(std::io::Cursor::new(blob)), &dir, &opts(), None));
        assert!(e.to_string().contains(needle), "{what}: {e}");
        assert!(listing(tmp.path()).is_empty(), "{what}: left {:?}", listing(tmp.path()));
    }
}

#[test]
fn cancelling_from_progress_cleans_up() {
    let _serial = support::hygiene::lock(); // one test at a time: the hygiene checks count fds
    let Some(c) = corpus() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("layer");
    let mut calls = 0u64;
    let mut last = Progress::default();
    let mut cb = |p: Progress| {
        calls += 1;
        assert!(p.entries >= last.entries && p.bytes >= last.bytes);
        last = p;
        p.entries < 100
    };
    let e = check_err(tmp.path(), "cancelled", || {
        convert(open(&c.join("cstorage/etc-doc-gnu/etc-doc-gnu.tar.zst")), &dir, &opts(), Some(&mut cb))
    });
    assert_eq!(e.kind(), ErrorKind::Cancelled, "{e}");
    assert_eq!(last.entries, 100);
    assert!(calls >= 100);
    assert!(listing(tmp.path()).is_empty(), "left {:?}", listing(tmp.path()));
}

fn sha256_file(p: &Path) -> String {
    use sha2::Digest;
    let data = std::fs::read(p).unwrap();
    composefs_storage::source::hex(&sha2::Sha256::digest(&data))
}

/// Expected plain-variant image sha256 by case name (cstorage-images/EXPECTED.tsv).
fn expected_image(c: &Path, case: &str) -> String {
    let tsv = std::fs::read_to_string(c.join("cstorage-images/EXPECTED.tsv")).unwrap();
    for line in tsv.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        if f[0] == format!("cstorage/{case}/{case}.dump") && f[1] == "plain" {
            return f[3].to_string();
        }
    }
    panic!("no EXPECTED.tsv row for {case}");
}

fn objects_listing(diff: &Path) -> String {
    let mut out = Vec::new();
    for d in std::fs::read_dir(diff).unwrap() {
        let d = d.unwrap();
        for f in std::fs::read_dir(d.path()).unwrap() {
            let f = f.unwrap();
            out.push(format!(
                "{}/{} {}",
                d.file_name().to_string_lossy(),
                f.file_name().to_string_lossy(),
                f.metadata().unwrap().len()
            ));
        }
    }
    out.sort();
    out.iter().map(|l| format!("{l}\n")).collect()
}

#[test]
fn blobs_are_byte_identical_to_cstorage_mkcomposefs() {
    let _serial = support::hygiene::lock(); // one test at a time: the hygiene checks count fds
    let Some(c) = corpus() else { return };
    // (case, input file, keep whiteout files): layers without whiteouts in every compression,
    // and the handmade layers (which have whiteouts) in c/storage's keep-as-files mode.
    let cases = [
        ("noparents-ustar", "noparents-ustar.tar", false),
        ("noparents-ustar", "noparents-ustar.tar.gz", false),
        ("noparents-ustar", "noparents-ustar.tar.zst", false),
        ("noparents-ustar", "noparents-ustar.zstd-chunked", false),
        ("empty", "empty.tar", false),
        ("empty", "empty.tar.gz", false),
        ("etc-doc-gnu", "etc-doc-gnu.tar.zst", false),
        ("etc-doc-gnu", "etc-doc-gnu.zstd-chunked", false),
        ("handmade-archive", "handmade-archive.tar.zst", true),
        ("handmade-pax", "handmade-pax.tar.zst", true),
    ];
    for (case, input, keep) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("layer");
        let o = ConvertOptions { oci_whiteouts: !keep, ..opts() };
        let r = convert(open(&c.join("cstorage").join(case).join(input)), &dir, &o, None).unwrap();
        assert_eq!(sha256_file(&dir.join("composefs-data/composefs.blob")), expected_image(&c, case), "{input}");
        let want = std::fs::read_to_string(c.join("cstorage").join(case).join(format!("{case}.objects.txt"))).unwrap();
        assert_eq!(objects_listing(&dir.join("diff")), want, "{input}");
        assert_eq!(r.layer_dir, dir);
        let compress: serde_json::Value = serde_json::from_slice(
            &std::fs::read(c.join("cstorage").join(case).join(format!("{case}.compress.json"))).unwrap(),
        )
        .unwrap();
        assert!(compress.to_string().contains(&composefs_storage::source::hex(&r.diff_id)), "{input}: DiffID");
        assert_eq!(listing(tmp.path()), vec!["layer"], "{input}: staging left behind");
    }
}

#[test]
fn whiteouts_are_real_overlay_whiteouts_in_the_blob() {
    let _serial = support::hygiene::lock(); // one test at a time: the hygiene checks count fds
    let Some(c) = corpus() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("layer");
    convert(open(&c.join("cstorage/handmade-pax/handmade-pax.tar.zst")), &dir, &opts(), None).unwrap();
    let blob = std::fs::read(dir.join("composefs-data/composefs.blob")).unwrap();
    // Not mkcomposefs's image (that one is checked in image_corpus), so read by the oracle here.
    let report = support::oracle::check_image(&blob, "handmade-pax with OCI whiteouts");
    assert!(report.exemptions.contains_key(&support::oracle::Exemption::FsckNativeWhiteout));
    let tree = composefs_storage::image::read_image(&blob[..]).unwrap();
    let wh = tree.resolve(b"/wh-parent/foo").expect("whiteout");
    assert_eq!(tree.inode(wh).kind, composefs_storage::image::InodeKind::OverlayWhiteout);
    let opq = tree.resolve(b"/opaque-dir").unwrap();
    assert!(tree.inode(opq).as_dir().unwrap().overlay_opaque);
    let mut dump = Vec::new();
    composefs_storage::image::dump::write(&tree, &mut dump).unwrap();
    assert!(!String::from_utf8_lossy(&dump).contains(".wh."), "no .wh.* name in the blob");
    // Layer xattrs under trusted.overlay. stay escaped: none in this layer, so none at all
    // besides the writer's own markers.
    assert_ne!(sha256_file(&dir.join("composefs-data/composefs.blob")), expected_image(&c, "handmade-pax"));
}

#[test]
fn reads_from_a_pipe() {
    let _serial = support::hygiene::lock(); // one test at a time: the hygiene checks count fds
    let Some(c) = corpus() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("layer");
    let mut child = std::process::Command::new("cat")
        .arg(c.join("cstorage/etc-doc-gnu/etc-doc-gnu.tar.zst"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let r = convert(Box::new(stdout), &dir, &opts(), None).unwrap();
    child.wait().unwrap();
    assert_eq!(sha256_file(&dir.join("composefs-data/composefs.blob")), expected_image(&c, "etc-doc-gnu"));
    assert_eq!(r.compressed_size, std::fs::metadata(c.join("cstorage/etc-doc-gnu/etc-doc-gnu.tar.zst")).unwrap().len());
}

#[test]
fn reuses_objects_from_source_layers() {
    let _serial = support::hygiene::lock(); // one test at a time: the hygiene checks count fds
    let Some(c) = corpus() else { return };
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    let input = c.join("cstorage/etc-doc-gnu/etc-doc-gnu.tar.zst");
    let first = tmp.path().join("first");
    let r1 = convert(open(&input), &first, &opts(), None).unwrap();
    assert_eq!(r1.objects.objects_reused, 0);
    assert!(r1.objects.bytes_written > 0);

    for hardlinks in [true, false] {
        let second = tmp.path().join(format!("second-{hardlinks}"));
        let o = ConvertOptions { source_layers: vec![first.clone()], hardlinks, ..opts() };
        let r2 = convert(open(&input), &second, &o, None).unwrap();
        assert_eq!(r2.objects.bytes_written, 0, "hardlinks={hardlinks}");
        assert_eq!(r2.objects.objects_reused, r2.objects.objects);
        assert_eq!(r2.objects.bytes_reused, r1.objects.bytes_written);
        assert_eq!(objects_listing(&second.join("diff")), objects_listing(&first.join("diff")));
        assert_eq!(
            sha256_file(&second.join("composefs-data/composefs.blob")),
            sha256_file(&first.join("composefs-data/composefs.blob"))
        );
        // Spot-check one object: same content, and shared inode exactly when hardlinking.
        let listing_txt = std::fs::read_to_string(c.join("cstorage/etc-doc-gnu/etc-doc-gnu.objects.txt")).unwrap();
        let obj = listing_txt.lines().find(|l| !l.ends_with(" 0")).unwrap().split(' ').next().unwrap();
        let (a, b) = (
            std::fs::metadata(first.join("diff").join(obj)).unwrap(),
            std::fs::metadata(second.join("diff").join(obj)).unwrap(),
        );
        assert_eq!(a.ino() == b.ino(), hardlinks, "{obj}");
        assert_eq!(b.mode() & 0o7777, 0);
        assert_eq!(
            std::fs::read(first.join("diff").join(obj)).unwrap(),
            std::fs::read(second.join("diff").join(obj)).unwrap()
        );
    }
}

#[test]
fn verity_policies_on_this_filesystem() {
    let _serial = support::hygiene::lock(); // one test at a time: the hygiene checks count fds
    let Some(c) = corpus() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let input = c.join("cstorage/noparents-ustar/noparents-ustar.tar");
    let off =
        convert(open(&input), &tmp.path().join("off"), &ConvertOptions { verity: VerityPolicy::Off, ..opts() }, None)
            .unwrap();
    assert!(off.verity_digests.is_empty(), "policy off: no object is measured");
    // The blob's fs-verity digest is computed while writing it, whatever the policy, and is the
    // digest of the file as written (EXPECTED.tsv's image_fsverity for this layer).
    let blob = std::fs::File::open(tmp.path().join("off/composefs-data/composefs.blob")).unwrap();
    assert_eq!(off.blob_verity, Some(composefs_storage::image::digest_reader(blob).unwrap()));
    let tsv = std::fs::read_to_string(c.join("cstorage-images/EXPECTED.tsv")).unwrap();
    let row = tsv.lines().find(|l| l.starts_with("cstorage/noparents-ustar/noparents-ustar.dump\tplain")).unwrap();
    assert_eq!(composefs_storage::source::hex(&off.blob_verity.unwrap()), row.split('\t').nth(5).unwrap());
    let dflt = convert(open(&input), &tmp.path().join("default"), &ConvertOptions::default(), None).unwrap();
    match convert(
        open(&input),
        &tmp.path().join("require"),
        &ConvertOptions { verity: VerityPolicy::Require, ..opts() },
        None,
    ) {
        Ok(r) => {
            // fs-verity works here: digests for both non-empty objects, as in verity.json.
            let want: serde_json::Value = serde_json::from_slice(
                &std::fs::read(c.join("cstorage/noparents-ustar/noparents-ustar.verity.json")).unwrap(),
            )
            .unwrap();
            for (path, d) in &r.verity_digests {
                assert_eq!(want[path], composefs_storage::source::hex(d));
            }
            assert_eq!(r.verity_digests.len(), 2);
            assert!(r.blob_verity.is_some());
            assert_eq!(dflt.verity_digests, r.verity_digests);
        }
        Err(e) => {
            eprintln!("fs-verity not available here: {e}");
            assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
            assert!(!tmp.path().join("require").exists());
            assert!(dflt.verity_digests.is_empty(), "default policy degrades silently");
            assert_eq!(listing(tmp.path()), vec!["default", "off"]);
        }
    }
}

#[test]
fn cli_converts_stdin_and_prints_json() {
    let _serial = support::hygiene::lock(); // one test at a time: the hygiene checks count fds
    let Some(c) = corpus() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("layer");
    let input = std::fs::File::open(c.join("cstorage/noparents-ustar/noparents-ustar.tar.gz")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_composefs-storage"))
        .args(["convert", "--json", "--verity", "off", "--toc"])
        .arg(tmp.path().join("toc.json"))
        .arg("-")
        .arg(&dir)
        .stdin(input)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let compress: serde_json::Value = serde_json::from_slice(
        &std::fs::read(c.join("cstorage/noparents-ustar/noparents-ustar.compress.json")).unwrap(),
    )
    .unwrap();
    assert!(compress.to_string().contains(v["diffID"].as_str().unwrap()));
    assert_eq!(v["compression"], "gzip");
    assert_eq!(v["objects"], 2);
    assert!(tmp.path().join("toc.json").exists());
    // Existing directory: refused, exit code 1.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_composefs-storage"))
        .args(["convert", "--verity", "off"])
        .arg(c.join("cstorage/noparents-ustar/noparents-ustar.tar"))
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
}

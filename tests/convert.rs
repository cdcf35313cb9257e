//! End-to-end conversion: atomicity, cancellation, inputs (path, pipe), reuse, and the blob
//! against containers/storage + mkcomposefs (corpus cstorage-images/EXPECTED.tsv).

use std::io::Read;
use std::path::{Path, PathBuf};

use composefs_storage::layer::{convert, ConvertOptions, Progress, VerityPolicy};
use composefs_storage::ErrorKind;

fn corpus() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus");
    let p = if p.exists() { p } else { PathBuf::from("/work/shared/corpus") };
    if p.exists() {
        Some(p)
    } else {
        eprintln!("skipping: corpus not found");
        None
    }
}

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
    let Some(c) = corpus() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("layer");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("keep"), b"mine").unwrap();
    let e = convert(open(&c.join("cstorage/noparents-ustar/noparents-ustar.tar")), &dir, &opts(), None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    assert_eq!(std::fs::read(dir.join("keep")).unwrap(), b"mine");
    assert_eq!(listing(tmp.path()), vec!["layer"]);
}

#[test]
fn corrupt_and_truncated_streams_leave_nothing_behind() {
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
        let e = convert(Box::new(std::io::Cursor::new(blob)), &dir, &opts(), None).unwrap_err();
        assert!(e.to_string().contains(needle), "{what}: {e}");
        assert!(listing(tmp.path()).is_empty(), "{what}: left {:?}", listing(tmp.path()));
    }
}

#[test]
fn cancelling_from_progress_cleans_up() {
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
    let e =
        convert(open(&c.join("cstorage/etc-doc-gnu/etc-doc-gnu.tar.zst")), &dir, &opts(), Some(&mut cb)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled, "{e}");
    assert_eq!(last.entries, 100);
    assert!(calls >= 100);
    assert!(listing(tmp.path()).is_empty(), "left {:?}", listing(tmp.path()));
}

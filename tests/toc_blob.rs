//! The composefs blob of a layer made from its TOC (`layer::toc_blob`), as containers/storage's
//! adapter writes it: the stock bytes where stock is right, the SPEC §10.1 and §10.2 fixes where
//! it is not.

mod support;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use composefs_storage::chunked::Toc;
use composefs_storage::image::{read_image, read_root_names, InodeKind};
use composefs_storage::layer::toc_blob::{adopt_staged_blob, write_toc_blob, TocBlobOptions};
use composefs_storage::layer::{convert, ConvertOptions, VerityPolicy};
use composefs_storage::ErrorKind;

use support::cstorage;

fn toc(case: &str) -> Toc {
    let raw = std::fs::read(cstorage().join(case).join(format!("{case}.toc.raw.json"))).unwrap();
    Toc::parse(&raw).unwrap()
}

fn verity(case: &str) -> HashMap<String, String> {
    let p = cstorage().join(case).join(format!("{case}.verity.json"));
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn sha256(p: &Path) -> String {
    use sha2::Digest;
    composefs_storage::source::hex(&sha2::Sha256::digest(std::fs::read(p).unwrap()))
}

/// The sha256 of mkcomposefs's image of the case's dump (corpus cstorage-images/EXPECTED.tsv).
fn stock_image(case: &str) -> String {
    let tsv = std::fs::read_to_string(cstorage().join("../cstorage-images/EXPECTED.tsv")).unwrap();
    tsv.lines()
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .find(|f| f[0] == format!("cstorage/{case}/{case}.dump") && f[1] == "plain")
        .map(|f| f[3].to_string())
        .unwrap_or_else(|| panic!("no EXPECTED.tsv row for {case}"))
}

/// A converted layer dir of a corpus case (a composefs lower for other layers).
fn converted(case: &str, input: &str, at: &Path) -> PathBuf {
    let f = std::fs::File::open(cstorage().join(case).join(input)).unwrap();
    let opts = ConvertOptions { verity: VerityPolicy::Off, ..Default::default() };
    convert(Box::new(f), at, &opts, None).unwrap();
    at.to_path_buf()
}

#[test]
fn whiteout_free_layers_give_the_stock_blob_either_way() {
    let tmp = tempfile::tempdir().unwrap();
    for case in ["noparents-ustar", "etc-doc-gnu", "empty"] {
        for (k, options) in [TocBlobOptions::default(), TocBlobOptions::for_layer(vec![])].iter().enumerate() {
            let out = tmp.path().join(format!("{case}-{k}.blob"));
            write_toc_blob(&toc(case), &HashMap::new(), options, &out).unwrap();
            assert_eq!(sha256(&out), stock_image(case), "{case} {options:?}");
        }
    }
}

#[test]
fn stock_mode_keeps_whiteouts_as_files_and_layer_mode_matches_the_tar_conversion() {
    let tmp = tempfile::tempdir().unwrap();
    for case in ["handmade-pax", "handmade-archive"] {
        let stock = tmp.path().join(format!("{case}-stock.blob"));
        write_toc_blob(&toc(case), &HashMap::new(), &TocBlobOptions::default(), &stock).unwrap();
        assert_eq!(sha256(&stock), stock_image(case), "{case}: stock mode is mkcomposefs's image");

        // The fixed blob equals what converting the same layer's tar writes (whiteouts converted
        // there while reading the tar): two independent routes to the same bytes.
        let fixed = tmp.path().join(format!("{case}-layer.blob"));
        write_toc_blob(&toc(case), &HashMap::new(), &TocBlobOptions::for_layer(vec![]), &fixed).unwrap();
        let layer = converted(case, &format!("{case}.tar.zst"), &tmp.path().join(case));
        assert_eq!(sha256(&fixed), sha256(&layer.join("composefs-data/composefs.blob")), "{case}");
        assert_ne!(sha256(&fixed), stock_image(case), "{case} has whiteouts");

        let tree = read_image(&std::fs::read(&fixed).unwrap()).unwrap();
        if case == "handmade-pax" {
            let wh = tree.resolve(b"/wh-parent/foo").expect("whiteout of foo");
            assert_eq!(tree.inode(wh).kind, InodeKind::OverlayWhiteout);
            assert!(tree.resolve(b"/wh-parent/.wh.foo").is_none());
            assert!(tree.inode(tree.resolve(b"/opaque-dir").unwrap()).as_dir().unwrap().overlay_opaque);
            assert!(tree.resolve(b"/opaque-dir/.wh..wh..opq").is_none());
        }
    }
}

#[test]
fn verity_digests_are_kept_in_layer_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let case = "etc-doc-gnu";
    let (a, b) = (tmp.path().join("stock"), tmp.path().join("layer"));
    write_toc_blob(&toc(case), &verity(case), &TocBlobOptions::default(), &a).unwrap();
    write_toc_blob(&toc(case), &verity(case), &TocBlobOptions::for_layer(vec![]), &b).unwrap();
    assert_eq!(sha256(&a), sha256(&b));
    assert_ne!(sha256(&a), stock_image(case), "the verity digests are in the blob");
}

#[test]
fn stubs_are_left_out_only_over_a_lower_with_a_two_hex_top_level_name() {
    let tmp = tempfile::tempdir().unwrap();
    // Lowers: a classic layer with /db, a classic one without, a composefs one without.
    let classic_db = tmp.path().join("classic-db");
    std::fs::create_dir_all(classic_db.join("diff/db")).unwrap();
    let classic = tmp.path().join("classic");
    std::fs::create_dir_all(classic.join("diff/etc")).unwrap();
    std::fs::create_dir_all(classic.join("diff/DB")).unwrap(); // not a stub name: uppercase
    std::fs::create_dir_all(classic.join("diff/abc")).unwrap(); // nor three digits
    let cfs = converted("etc-doc-gnu", "etc-doc-gnu.tar.zst", &tmp.path().join("cfs"));
    let names = read_root_names(&std::fs::read(cfs.join("composefs-data/composefs.blob")).unwrap()).unwrap();
    assert!(names.iter().any(|n| n == b"etc") && !names.iter().any(|n| n.len() == 2), "{names:?}");

    let case = "noparents-ustar";
    let write = |name: &str, lowers: Vec<PathBuf>| {
        let out = tmp.path().join(name);
        write_toc_blob(&toc(case), &HashMap::new(), &TocBlobOptions::for_layer(lowers), &out).unwrap();
        out
    };
    let kept = write("kept", vec![cfs.clone(), classic.clone()]);
    assert_eq!(sha256(&kept), stock_image(case), "no collision: the stock blob");
    let dropped = write("dropped", vec![cfs.clone(), classic_db.clone()]);
    assert_ne!(sha256(&dropped), stock_image(case));
    let blob = std::fs::read(&dropped).unwrap();
    // The same tree, only without stubs (the reader drops stubs; a whole-image read agrees).
    assert_eq!(read_image(&blob).unwrap(), read_image(&std::fs::read(&kept).unwrap()).unwrap());
    assert!(blob.len() < std::fs::read(&kept).unwrap().len(), "256 stub inodes fewer");

    // A composefs lower whose blob has /db (written from a tree with that dir) is seen too.
    let cfs_db = tmp.path().join("cfs-db");
    std::fs::create_dir_all(cfs_db.join("composefs-data")).unwrap();
    let mut tree = composefs_storage::image::Tree::new(Default::default());
    let d = tree.push(composefs_storage::image::Inode {
        meta: Default::default(),
        kind: InodeKind::Directory(Default::default()),
        nlink: 2,
    });
    tree.link(
        composefs_storage::image::ROOT,
        b"db".to_vec(),
        composefs_storage::image::DirEntry { inode: d, hardlink: false },
    );
    composefs_storage::image::write_image_file(
        &tree,
        &Default::default(),
        &cfs_db.join("composefs-data/composefs.blob"),
    )
    .unwrap();
    assert_eq!(sha256(&write("over-cfs-db", vec![cfs_db])), sha256(&dropped));
}

#[test]
fn bad_inputs_are_errors_that_name_what_was_wrong_and_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("blob");
    // A lower that is neither a composefs layer nor has diff/.
    let e = write_toc_blob(
        &toc("noparents-ustar"),
        &HashMap::new(),
        &TocBlobOptions::for_layer(vec![tmp.path().join("nope")]),
        &out,
    )
    .unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
    assert!(!out.exists());
    // A corrupt lower blob.
    let bad = tmp.path().join("bad");
    std::fs::create_dir_all(bad.join("composefs-data")).unwrap();
    std::fs::write(bad.join("composefs-data/composefs.blob"), b"not an image").unwrap();
    let e = write_toc_blob(&toc("noparents-ustar"), &HashMap::new(), &TocBlobOptions::for_layer(vec![bad]), &out)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Format, "{e}");
    assert!(e.to_string().contains("lower layer blob"), "{e}");
    assert!(!out.exists());
    // An existing output is never overwritten.
    std::fs::write(&out, b"keep").unwrap();
    let e = write_toc_blob(&toc("noparents-ustar"), &HashMap::new(), &TocBlobOptions::default(), &out).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    assert_eq!(std::fs::read(&out).unwrap(), b"keep");
    // A whiteout with no name, and a whiteout that is a directory.
    for (entries, want) in [
        (r#"[{"type":"reg","name":"a/.wh.","mode":420,"size":0}]"#, "without a name"),
        (r#"[{"type":"dir","name":".wh.x","mode":493}]"#, "not a regular file"),
    ] {
        let toc = Toc::parse(format!(r#"{{"version":1,"entries":{entries}}}"#).as_bytes()).unwrap();
        let e = write_toc_blob(&toc, &HashMap::new(), &TocBlobOptions::for_layer(vec![]), &tmp.path().join("w"))
            .unwrap_err();
        assert!(e.to_string().contains(want), "{e}");
        assert!(!tmp.path().join("w").exists());
    }
}

fn pulled(case: &str, at: &Path) -> PathBuf {
    use composefs_storage::layer::pull::{pull, FileFetcher, PullOptions};
    let dir = cstorage().join(case);
    let annotations =
        serde_json::from_slice(&std::fs::read(dir.join(format!("{case}.annotations.json"))).unwrap()).unwrap();
    let options = PullOptions { annotations: Some(annotations), verity: VerityPolicy::Off, ..Default::default() };
    let mut fetcher = FileFetcher::new(std::fs::File::open(dir.join(format!("{case}.zstd-chunked"))).unwrap()).unwrap();
    pull(&mut fetcher, at, &options, None).unwrap();
    at.join("composefs-data/composefs.blob")
}

/// A zstd:chunked layer's pull writes the blob that [`write_toc_blob`] writes for its TOC in layer
/// mode over lowers without two-hex names, so containers/storage's adapter takes the pull's blob
/// ([`adopt_staged_blob`]) instead of writing it again at commit.
#[test]
fn a_pulled_layers_blob_is_its_toc_blob_and_is_taken_as_it() {
    let tmp = tempfile::tempdir().unwrap();
    for case in ["empty", "noparents-ustar", "handmade-archive", "handmade-pax", "etc-doc-gnu"] {
        let staged = pulled(case, &tmp.path().join(case));
        let written = tmp.path().join(format!("{case}.blob"));
        let digest = write_toc_blob(&toc(case), &HashMap::new(), &TocBlobOptions::for_layer(vec![]), &written).unwrap();
        assert_eq!(sha256(&staged), sha256(&written), "{case}");

        let taken = tmp.path().join(format!("{case}.taken"));
        let got = adopt_staged_blob(&staged, &HashMap::new(), &TocBlobOptions::for_layer(vec![]), &taken).unwrap();
        assert_eq!(got, Some(digest), "{case}: taken, with the blob's fs-verity digest");
        assert_eq!(sha256(&taken), sha256(&written));
        assert!(!staged.exists(), "{case}: renamed");
    }
}

/// The pull records on its blob what the blob is (composefs_storage::layer::toc_blob::
/// PulledBlobRecord), so adoption does not read it again: a blob whose bytes were replaced but
/// whose record still matches is taken (the record is what is trusted, as the bytes were before:
/// only whoever may write the staged blob may set either), with the recorded digest; with a verity
/// map other than the recorded one the blob is read, and those bytes are not taken. The layer's
/// blob does not keep the record.
#[test]
fn the_pulls_record_spares_reading_the_blob_and_is_trusted_only_for_its_verity_map() {
    use composefs_storage::layer::toc_blob::{verity_map_digest, PulledBlobRecord};
    let tmp = tempfile::tempdir().unwrap();
    let case = "handmade-archive";
    let staged = pulled(case, &tmp.path().join("l"));
    let Some(record) = PulledBlobRecord::read(&staged) else {
        eprintln!("skipped: {} takes no user extended attributes", tmp.path().display());
        return;
    };
    let written = tmp.path().join("written.blob");
    let digest = write_toc_blob(&toc(case), &HashMap::new(), &TocBlobOptions::for_layer(vec![]), &written).unwrap();
    let none: [(&str, [u8; 32]); 0] = [];
    // The record's verity digest is the map's, whatever its order; any change changes it.
    let (a, b) = (("ab/01", [1u8; 32]), ("cd/02", [2u8; 32]));
    assert_eq!(verity_map_digest([a, b]), verity_map_digest([b, a]));
    assert_ne!(verity_map_digest([a, b]), verity_map_digest([a, ("cd/02", [3u8; 32])]));
    assert_ne!(verity_map_digest([a, b]), verity_map_digest([a]));
    assert_ne!(verity_map_digest([a]), verity_map_digest(none));
    assert_eq!(
        record,
        PulledBlobRecord { oci_whiteouts: true, root_stubs: true, verity: verity_map_digest(none), digest },
        "the record says what the blob is"
    );
    let replace = |p: &Path| {
        let f = std::fs::OpenOptions::new().write(true).truncate(true).open(p).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"not read", 0).unwrap();
    };
    replace(&staged);
    let taken = tmp.path().join("taken.blob");
    let options = TocBlobOptions::for_layer(vec![]);
    assert_eq!(adopt_staged_blob(&staged, &HashMap::new(), &options, &taken).unwrap(), Some(digest));
    assert_eq!(std::fs::read(&taken).unwrap(), b"not read", "taken without being read");
    assert_eq!(PulledBlobRecord::read(&taken), None, "the layer's blob keeps no record");

    let staged = pulled(case, &tmp.path().join("l2"));
    replace(&staged);
    let objects = std::fs::read_to_string(cstorage().join(case).join(format!("{case}.objects.txt"))).unwrap();
    let verity = HashMap::from([(objects.split(' ').next().unwrap().to_string(), "cd".repeat(32))]);
    let out = tmp.path().join("not-taken.blob");
    assert_eq!(adopt_staged_blob(&staged, &verity, &options, &out).unwrap(), None, "another verity map: read, refused");
    assert!(!staged.exists() && !out.exists());
}

#[test]
fn a_staged_blob_is_not_taken_where_the_blob_must_differ() {
    let tmp = tempfile::tempdir().unwrap();
    let case = "etc-doc-gnu";
    let classic_db = tmp.path().join("classic-db");
    std::fs::create_dir_all(classic_db.join("diff/db")).unwrap();
    let object = composefs_storage::source::hex(&[0xab; 32]);
    let objects = std::fs::read_to_string(cstorage().join(case).join(format!("{case}.objects.txt"))).unwrap();
    let some_object = objects.split(' ').next().unwrap().to_string(); // "ab/cdef…"
    let cases: Vec<(&str, HashMap<String, String>, TocBlobOptions)> = vec![
        ("stock mode", HashMap::new(), TocBlobOptions::default()),
        ("a lower with /db", HashMap::new(), TocBlobOptions::for_layer(vec![classic_db])),
        ("verity digests", HashMap::from([(some_object, object)]), TocBlobOptions::for_layer(vec![])),
    ];
    for (k, (what, verity, options)) in cases.into_iter().enumerate() {
        let staged = pulled(case, &tmp.path().join(format!("l{k}")));
        let out = tmp.path().join(format!("{k}.blob"));
        assert_eq!(adopt_staged_blob(&staged, &verity, &options, &out).unwrap(), None, "{what}");
        assert!(!staged.exists() && !out.exists(), "{what}: the staged blob is removed, nothing written");
        write_toc_blob(&toc(case), &verity, &options, &out).unwrap();
    }
    // Nothing staged, or not an image: not taken, not an error.
    let out = tmp.path().join("none.blob");
    let options = TocBlobOptions::for_layer(vec![]);
    assert_eq!(adopt_staged_blob(&tmp.path().join("missing"), &HashMap::new(), &options, &out).unwrap(), None);
    let junk = tmp.path().join("junk");
    std::fs::write(&junk, b"not an image").unwrap();
    assert_eq!(adopt_staged_blob(&junk, &HashMap::new(), &options, &out).unwrap(), None);
    assert!(!junk.exists() && !out.exists());
    // An existing destination is refused and kept, as by write_toc_blob.
    let staged = pulled(case, &tmp.path().join("again"));
    std::fs::write(&out, b"keep").unwrap();
    let e = adopt_staged_blob(&staged, &HashMap::new(), &options, &out).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    assert_eq!(std::fs::read(&out).unwrap(), b"keep");
}

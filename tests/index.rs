//! Source layers are found through their lookaside caches, including those of a containers/storage
//! store (`overlay-layers/<id>/=Y2h1bmtlZC1tYW5pZmVzdC1jYWNoZQ==`), so a shared store dedups both ways.

mod support;
use std::fs::File;
use std::path::PathBuf;

use composefs_storage::chunked::cache::LayerCache;
use composefs_storage::chunked::Toc;
use composefs_storage::layer::metadata::{CACHE, CSTORAGE_CACHE_KEY_FILE};
use composefs_storage::layer::{convert, ConvertOptions, VerityPolicy};

fn corpus() -> PathBuf {
    support::cstorage()
}

fn opts(sources: Vec<PathBuf>) -> ConvertOptions {
    ConvertOptions { source_layers: sources, verity: VerityPolicy::Off, ..Default::default() }
}

fn input() -> Box<File> {
    Box::new(File::open(corpus().join("etc-doc-gnu/etc-doc-gnu.tar.zst")).unwrap())
}

#[test]
fn a_containers_storage_layer_is_a_dedup_source_through_its_cache() {
    let tmp = tempfile::tempdir().unwrap();
    // A containers/storage store: the layer's objects in overlay/<id>/diff, its cache as big data.
    let built = tmp.path().join("built");
    convert(input(), &built, &opts(vec![]), None).unwrap();
    let graphroot = tmp.path().join("graphroot");
    let id = "0123abcd";
    std::fs::create_dir_all(graphroot.join("overlay")).unwrap();
    std::fs::create_dir_all(graphroot.join("overlay-layers").join(id)).unwrap();
    std::fs::rename(&built, graphroot.join("overlay").join(id)).unwrap();
    let layer = graphroot.join("overlay").join(id);
    let cache = std::fs::read(layer.join(CACHE)).unwrap();
    std::fs::remove_file(layer.join(CACHE)).unwrap();
    std::fs::write(graphroot.join("overlay-layers").join(id).join(CSTORAGE_CACHE_KEY_FILE), &cache).unwrap();

    let r = convert(input(), &tmp.path().join("l2"), &opts(vec![layer.clone()]), None).unwrap();
    assert_eq!(r.objects.bytes_written, 0, "every object came from the store's layer");
    assert!(r.objects.objects_reused > 0);

    // A cache that does not list the objects makes the layer be skipped without a probe: proof that
    // the cache (not a stat) decided.
    let other = Toc::parse(br#"{"version":1,"entries":[{"type":"reg","name":"x","size":1,"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"}]}"#).unwrap();
    std::fs::write(
        graphroot.join("overlay-layers").join(id).join(CSTORAGE_CACHE_KEY_FILE),
        LayerCache::build(&other, true).unwrap().to_bytes(),
    )
    .unwrap();
    let r = convert(input(), &tmp.path().join("l3"), &opts(vec![layer.clone()]), None).unwrap();
    assert_eq!(r.objects.objects_reused, 0);
    assert!(r.objects.bytes_written > 0);

    // A corrupt cache is ignored: the layer is probed directly.
    std::fs::write(graphroot.join("overlay-layers").join(id).join(CSTORAGE_CACHE_KEY_FILE), b"garbage").unwrap();
    let r = convert(input(), &tmp.path().join("l4"), &opts(vec![layer]), None).unwrap();
    assert_eq!(r.objects.bytes_written, 0);
}

/// A layer dir whose cache names `n` objects it does not have (they are never asked for).
fn decoy_layer(dir: &std::path::Path, seed: usize, n: usize) {
    std::fs::create_dir_all(dir.join("diff")).unwrap();
    std::fs::create_dir_all(dir.join("composefs-data")).unwrap();
    let entries: Vec<_> = (0..n)
        .map(|i| {
            use sha2::Digest;
            let d: String = sha2::Sha256::digest(format!("{seed}/{i}")).iter().map(|b| format!("{b:02x}")).collect();
            serde_json::json!({"type": "reg", "name": format!("f{i}"), "size": 1, "digest": format!("sha256:{d}")})
        })
        .collect();
    let toc = Toc::parse(serde_json::json!({"version": 1, "entries": entries}).to_string().as_bytes()).unwrap();
    std::fs::write(dir.join(CACHE), LayerCache::build(&toc, true).unwrap().to_bytes()).unwrap();
}

/// In `dir`: 11 decoy layers and `real` (the corpus layer converted); the sources in that order.
fn real_after_decoys(dir: &std::path::Path) -> (PathBuf, Vec<PathBuf>) {
    let real = dir.join("real");
    convert(input(), &real, &opts(vec![]), None).unwrap();
    let mut sources: Vec<PathBuf> = (0..11)
        .map(|i| {
            let d = dir.join(format!("decoy{i}"));
            decoy_layer(&d, i, 50);
            d
        })
        .collect();
    sources.push(real.clone());
    (real, sources)
}

fn index_layers(ix: &std::path::Path) -> u32 {
    let data = std::fs::read(ix.join(composefs_storage::layer::index::FILE_NAME)).unwrap();
    assert_eq!(&data[..8], b"CFSIDX02");
    u32::from_le_bytes(data[8..12].try_into().unwrap())
}

#[test]
fn an_index_dir_finds_the_same_objects_and_never_outranks_a_layers_own_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let (real, mut sources) = real_after_decoys(tmp.path());
    let ix = tmp.path().join("index");
    let with_index = |name: &str, sources: &[PathBuf]| {
        let o = ConvertOptions { index_dir: Some(ix.clone()), ..opts(sources.to_vec()) };
        convert(input(), &tmp.path().join(name), &o, None).unwrap()
    };
    let plain = convert(input(), &tmp.path().join("plain"), &opts(sources.clone()), None).unwrap();
    let r = with_index("a", &sources);
    assert_eq!(r.objects.bytes_written, 0, "every object found through the index");
    assert_eq!(r.objects, plain.objects, "the index finds what probing every cache finds");
    assert_eq!(index_layers(&ix), 12, "built over every source with a cache");

    // An index dir that cannot be made: no index (it would be rebuilt by every pull), probing.
    let not_a_dir = tmp.path().join("file");
    std::fs::write(&not_a_dir, b"").unwrap();
    let o = ConvertOptions { index_dir: Some(not_a_dir.join("index")), ..opts(sources.clone()) };
    let r = convert(input(), &tmp.path().join("no-index"), &o, None).unwrap();
    assert_eq!(r.objects, plain.objects);

    // More than 8 new layers are not covered: the index is rebuilt to cover them.
    for i in 11..20 {
        let d = tmp.path().join(format!("decoy{i}"));
        decoy_layer(&d, i, 50);
        sources.insert(0, d);
    }
    assert_eq!(with_index("b", &sources).objects.bytes_written, 0);
    assert_eq!(index_layers(&ix), 21);

    // A damaged index is rebuilt, never followed.
    std::fs::write(ix.join(composefs_storage::layer::index::FILE_NAME), b"CFSIDX02 garbage").unwrap();
    assert_eq!(with_index("c", &sources).objects.bytes_written, 0);
    assert_eq!(index_layers(&ix), 21);

    // The real layer's cache changes (now names nothing it has): the index still lists the old
    // one, but a changed cache is a layer the index does not cover, asked through its own cache.
    let other = Toc::parse(br#"{"version":1,"entries":[{"type":"reg","name":"x","size":1,"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"}]}"#).unwrap();
    std::fs::write(real.join(CACHE), LayerCache::build(&other, true).unwrap().to_bytes()).unwrap();
    let r = with_index("d", &sources);
    assert_eq!(r.objects.objects_reused, 0, "the stale index entry was not trusted");
    // Found stale (when it first named that layer), the index is removed: the next run rebuilds it
    // from the cache as it is now.
    let index_file = ix.join(composefs_storage::layer::index::FILE_NAME);
    assert!(!index_file.exists(), "a stale index is removed");
    let r = with_index("e", &sources);
    assert_eq!(r.objects.objects_reused, 0);
    assert_eq!(index_layers(&ix), 21, "rebuilt");

    // The real layer gets a cache naming objects the index does not know (a new file). The index
    // never names the layer for them, so a run writes them; but each run stats the caches of 16 of
    // the layers it mapped by path and did not ask (a varying window of the 21), so one soon finds
    // the change and removes the index: the next run rebuilds it and reuses them.
    std::fs::remove_file(real.join(CACHE)).unwrap();
    std::fs::copy(tmp.path().join("a").join(CACHE), real.join(CACHE)).unwrap();
    let mut runs = 0;
    while index_file.exists() && runs < 40 {
        let r = with_index(&format!("f{runs}"), &sources);
        assert!(r.objects.bytes_written > 0, "the index does not name the layer for its new objects");
        runs += 1;
    }
    assert!(!index_file.exists(), "a changed cache is noticed within a few runs");
    assert_eq!(with_index("g", &sources).objects.bytes_written, 0);
    assert_eq!(index_layers(&ix), 21, "rebuilt once more");
}

/// Layers that moved (a store renamed) are matched to the index by their caches' identity, without
/// a rebuild; layers under the paths the index names are mapped without a stat.
#[test]
fn moved_layers_keep_their_index_entries() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("store")).unwrap();
    let (_, sources) = real_after_decoys(&tmp.path().join("store"));
    let ix = tmp.path().join("index");
    let o = |sources: &[PathBuf]| ConvertOptions { index_dir: Some(ix.clone()), ..opts(sources.to_vec()) };
    assert_eq!(convert(input(), &tmp.path().join("a"), &o(&sources), None).unwrap().objects.bytes_written, 0);
    let index_file = ix.join(composefs_storage::layer::index::FILE_NAME);
    let built = std::fs::metadata(&index_file).unwrap().ino();

    std::fs::rename(tmp.path().join("store"), tmp.path().join("moved")).unwrap();
    let moved: Vec<PathBuf> = sources.iter().map(|p| tmp.path().join("moved").join(p.file_name().unwrap())).collect();
    let r = convert(input(), &tmp.path().join("b"), &o(&moved), None).unwrap();
    assert_eq!(r.objects.bytes_written, 0);
    assert_eq!(std::fs::metadata(&index_file).unwrap().ino(), built, "kept: every moved layer matched");
}

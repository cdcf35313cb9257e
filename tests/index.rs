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

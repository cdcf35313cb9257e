//! Benchmark (ignored by default; `scripts/bench-index.sh` runs it in release): the cost of
//! looking objects up across 5 vs 500 source layers, with and without their lookaside caches.
//! Prints figures; asserts nothing about time.

use std::path::Path;
use std::time::Instant;

use composefs_storage::chunked::cache::LayerCache;
use composefs_storage::chunked::Toc;
use composefs_storage::layer::metadata::CACHE;
use composefs_storage::layer::objects::ObjectStore;
use composefs_storage::layer::verity::{Verity, VerityPolicy};
use sha2::{Digest, Sha256};

const OBJECTS_PER_LAYER: usize = 2000;
const LOOKUPS: usize = 4000;

fn digest(layer: usize, i: usize) -> [u8; 32] {
    Sha256::digest(format!("{layer}/{i}")).into()
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// A layer dir with an empty `diff/` and a cache naming OBJECTS_PER_LAYER objects; the layer
/// `with_files` also has them on disk (1 byte each).
fn make_layer(dir: &Path, layer: usize, with_cache: bool, with_files: bool) {
    std::fs::create_dir_all(dir.join("diff")).unwrap();
    std::fs::create_dir_all(dir.join("composefs-data")).unwrap();
    let mut entries = Vec::new();
    for i in 0..OBJECTS_PER_LAYER {
        let d = hex(&digest(layer, i));
        entries.push(
            serde_json::json!({"type": "reg", "name": format!("f{i}"), "size": 1, "digest": format!("sha256:{d}")}),
        );
        if with_files {
            std::fs::create_dir_all(dir.join("diff").join(&d[..2])).unwrap();
            std::fs::write(dir.join("diff").join(&d[..2]).join(&d[2..]), b"x").unwrap();
        }
    }
    if with_cache {
        let toc = Toc::parse(serde_json::json!({"version": 1, "entries": entries}).to_string().as_bytes()).unwrap();
        std::fs::write(dir.join(CACHE), LayerCache::build(&toc, true).unwrap().to_bytes()).unwrap();
    }
}

fn run(n_layers: usize, with_cache: bool) -> f64 {
    let tmp = tempfile::tempdir().unwrap();
    let mut sources = Vec::new();
    for l in 0..n_layers {
        let d = tmp.path().join(format!("l{l}"));
        make_layer(&d, l, with_cache, l == n_layers - 1);
        sources.push(d);
    }
    let dest = tmp.path().join("dest/diff");
    std::fs::create_dir_all(&dest).unwrap();
    let mut store = ObjectStore::new(&dest, &sources, false, Verity::new(VerityPolicy::Off)).unwrap();
    let start = Instant::now();
    // Half the lookups miss everywhere (every layer is asked), half hit the last layer.
    for i in 0..LOOKUPS {
        let d = if i % 2 == 0 { Sha256::digest(format!("absent/{i}")).into() } else { digest(n_layers - 1, i / 2) };
        let found = store.reuse(&d, 1).unwrap();
        assert_eq!(found.is_some(), i % 2 == 1);
    }
    start.elapsed().as_secs_f64()
}

#[test]
#[ignore]
fn bench_index_lookups_5_vs_500_layers() {
    println!("lookups: {LOOKUPS} (half absent, half in the last layer), {OBJECTS_PER_LAYER} objects per layer");
    let mut rows = Vec::new();
    for with_cache in [true, false] {
        let t5 = run(5, with_cache);
        let t500 = run(500, with_cache);
        println!(
            "caches {:>5}: 5 layers {:.3}s, 500 layers {:.3}s, ratio 500/5 = {:.2}",
            with_cache,
            t5,
            t500,
            t500 / t5
        );
        rows.push((with_cache, t5, t500));
    }
}

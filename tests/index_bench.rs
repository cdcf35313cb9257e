//! Benchmark (ignored by default; `scripts/bench-index.sh` runs it in release): the cost of
//! looking objects up across 5 vs 500 source layers, with and without their lookaside caches.
//! Timed: opening the sources (loading their caches) and the lookups, as a pull pays them.
//! Both stores are built first; rounds alternate between them and the best round counts, so
//! that page-cache and filesystem noise hit both alike. Prints figures; asserts nothing about time.
//! Env: BENCH_DIR (where the layer dirs go; default: a tmpfs when writable, so that the 1-byte
//! copies of the hits cost little next to the lookups being measured).

use std::path::{Path, PathBuf};
use std::time::Instant;

use composefs_storage::chunked::cache::LayerCache;
use composefs_storage::chunked::Toc;
use composefs_storage::layer::metadata::CACHE;
use composefs_storage::layer::objects::ObjectStore;
use composefs_storage::layer::sources::SourceLayers;
use composefs_storage::layer::verity::{Verity, VerityPolicy};
use sha2::{Digest, Sha256};

const OBJECTS_PER_LAYER: usize = 2000;
const LOOKUPS: usize = 4000;
const ROUNDS: usize = 7;

/// CPU time of this thread: the lookups run on it alone, and unlike wall time it does not count
/// the time other processes of a shared machine take the core.
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid out-pointer for clock_gettime.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

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

fn make_store(root: &Path, n_layers: usize, with_cache: bool) -> Vec<PathBuf> {
    (0..n_layers)
        .map(|l| {
            let d = root.join(format!("l{l}"));
            make_layer(&d, l, with_cache, l == n_layers - 1);
            d
        })
        .collect()
}

/// One round: open the sources and look up LOOKUPS digests, half absent everywhere (every layer
/// is asked), half in the last layer (copied, 1 byte).
/// Returns the seconds spent opening and in total (wall), and the CPU seconds in total.
fn round(sources: &[PathBuf], index: Option<&Path>, dest: &Path) -> (f64, f64, f64) {
    std::fs::create_dir_all(dest).unwrap();
    let n_layers = sources.len();
    let cpu = thread_cpu();
    let start = Instant::now();
    let layers = SourceLayers::open(sources, index).unwrap();
    let mut store = ObjectStore::new(dest, layers, false, Verity::new(VerityPolicy::Off)).unwrap();
    let opened = start.elapsed().as_secs_f64();
    for i in 0..LOOKUPS {
        let d = if i % 2 == 0 { Sha256::digest(format!("absent/{i}")).into() } else { digest(n_layers - 1, i / 2) };
        let found = store.reuse(&d, 1).unwrap();
        assert_eq!(found.is_some(), i % 2 == 1);
    }
    (opened, start.elapsed().as_secs_f64(), thread_cpu() - cpu)
}

#[test]
#[ignore]
fn bench_index_lookups_5_vs_500_layers() {
    let base = std::env::var_os("BENCH_DIR").map(PathBuf::from).unwrap_or_else(|| {
        let shm = Path::new("/dev/shm");
        if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        }
    });
    let tmp = tempfile::tempdir_in(&base).unwrap();
    println!(
        "lookups: {LOOKUPS} (half absent, half in the last layer), {OBJECTS_PER_LAYER} objects per layer, \
         best of {ROUNDS} alternating rounds, in {}",
        base.display()
    );
    for (with_cache, with_index) in [(true, true), (true, false), (false, false)] {
        let label = match (with_cache, with_index) {
            (true, true) => "caches + index",
            (true, false) => "caches only",
            _ => "no caches",
        };
        let root = tmp.path().join(label.replace(' ', ""));
        let small = make_store(&root.join("s5"), 5, with_cache);
        let large = make_store(&root.join("s500"), 500, with_cache);
        let (ix5, ix500) = (root.join("ix5"), root.join("ix500"));
        let (ix5, ix500) = if with_index { (Some(ix5.as_path()), Some(ix500.as_path())) } else { (None, None) };
        let best = |a: (f64, f64, f64), b: (f64, f64, f64)| if b.1 < a.1 { b } else { a };
        let (mut t5, mut t500) = ((f64::MAX, f64::MAX, 0.0), (f64::MAX, f64::MAX, 0.0));
        let (mut c5, mut c500) = (f64::MAX, f64::MAX);
        let mut first500 = 0.0;
        for r in 0..ROUNDS {
            let t = round(&small, ix5, &root.join(format!("d5-{r}")));
            c5 = c5.min(t.2);
            t5 = best(t5, t);
            let t = round(&large, ix500, &root.join(format!("d500-{r}")));
            c500 = c500.min(t.2);
            if r == 0 {
                first500 = t.0;
            }
            t500 = best(t500, t);
        }
        println!(
            "{label:>14}: 5 layers {:.4}s (open {:.4}s), 500 layers {:.4}s (open {:.4}s; first open {:.4}s), \
             ratio 500/5 = {:.2}; cpu {:.4}s vs {:.4}s, ratio {:.2}",
            t5.1,
            t5.0,
            t500.1,
            t500.0,
            first500,
            t500.1 / t5.1,
            c500,
            c5,
            c500 / c5
        );
    }
}

//! Mount + unmount timing: 1- and 20-layer composefs stacks against 1- and 20-layer classic
//! stacks, in one run. Ignored by default (it measures, it does not check); run it with
//! `scripts/bench-mount.sh` (SPEC §11; goal: composefs within 1.5x of classic at 20 layers).

mod mount_support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use composefs_storage::mount::{self, Layer, MountOptions};
use mount_support::*;

fn iterations() -> usize {
    std::env::var("CFS_BENCH_ITERATIONS").ok().and_then(|s| s.parse().ok()).unwrap_or(50)
}

/// Median and mean of `n` mount+unmount rounds of `stack`.
fn time_stack(stack: &[Layer], mnt: &Path, opts: &MountOptions) -> (Duration, Duration) {
    // One warm-up round: probes and page cache.
    mount::mount(stack, mnt, opts).unwrap();
    mount::unmount(mnt).unwrap();
    let mut times = Vec::new();
    for _ in 0..iterations() {
        let t = Instant::now();
        mount::mount(stack, mnt, opts).unwrap();
        let guard = MountGuard(mnt.to_path_buf());
        mount::unmount(mnt).unwrap();
        std::mem::forget(guard);
        times.push(t.elapsed());
    }
    times.sort();
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    (times[times.len() / 2], mean)
}

#[test]
#[ignore = "benchmark: run with scripts/bench-mount.sh"]
fn bench_mount_unmount() {
    if !can_mount() || !corpus_available() {
        return;
    }
    let tmp = tempdir();
    let root = tmp.path();
    let tree = root.join("tree");
    extract(&Path::new(CORPUS).join("cstorage/handmade-archive/handmade-archive.tar.zst"), &tree);
    let image = corpus_image("handmade-archive.cfs", root);
    let mut cfs: Vec<PathBuf> = Vec::new();
    let mut classic: Vec<PathBuf> = Vec::new();
    for i in 0..20 {
        cfs.push(composefs_layer_dir(&root.join(format!("cfs{i}")), &image, &tree));
        let c = root.join(format!("classic{i}"));
        fs::create_dir(&c).unwrap();
        let ok = Command::new("cp").arg("-a").arg(&tree).arg(c.join("diff")).status().unwrap().success();
        assert!(ok);
        classic.push(c);
    }
    let mnt = root.join("mnt");
    fs::create_dir(&mnt).unwrap();
    let layers = |dirs: &[PathBuf]| -> Vec<Layer> { dirs.iter().map(|d| Layer::from_layer_dir(d).unwrap()).collect() };
    println!("kernel features: {:?}", mount::kernel_features());
    println!("{} rounds each, mount + unmount, median (mean):", iterations());
    let opts = MountOptions { stub_cache_dir: Some(root.join("cache")), ..MountOptions::read_only() };
    let unflattened = MountOptions { flatten: false, ..opts.clone() };
    let mut results = Vec::new();
    for (name, stack, opts) in [
        ("composefs  1 layer ", layers(&cfs[..1]), &opts),
        ("classic    1 layer ", layers(&classic[..1]), &opts),
        ("composefs 20 layers", layers(&cfs), &opts),
        ("classic   20 layers", layers(&classic), &opts),
        ("composefs 20 layers, one EROFS per layer (flatten off)", layers(&cfs), &unflattened),
    ] {
        let (median, mean) = time_stack(&stack, &mnt, opts);
        println!("  {name}: {:8.3} ms ({:.3} ms)", median.as_secs_f64() * 1e3, mean.as_secs_f64() * 1e3);
        results.push(median);
    }
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!("ratio composefs/classic,  1 layer : {:.2}x", ratio(results[0], results[1]));
    println!("ratio composefs/classic, 20 layers: {:.2}x (goal <= 1.5x)", ratio(results[2], results[3]));
    println!("ratio composefs/classic, 20 layers, flatten off: {:.2}x", ratio(results[4], results[3]));
    Snapshot::assert_clean(root);
}

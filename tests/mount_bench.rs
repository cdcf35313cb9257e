//! Mount + unmount timing: 1- and 20-layer composefs stacks against 1- and 20-layer classic
//! stacks, in one run. Ignored by default (it measures, it does not check); run it with
//! `scripts/bench-mount.sh` (SPEC §11; goal: composefs within 1.5x of classic at 20 layers).
//! The data is generated here, so it runs on any machine with root, EROFS and overlayfs.

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

/// How a case mounts: through the library in this process, or one CLI process to mount and one
/// to unmount (as a container engine run per command would: no per-process memory survives).
enum How {
    Lib(Vec<Layer>, MountOptions),
    Cli(Vec<PathBuf>, PathBuf),
}

fn round(how: &How, mnt: &Path) {
    match how {
        How::Lib(stack, opts) => {
            mount::mount(stack, mnt, opts).unwrap();
            let guard = MountGuard(mnt.to_path_buf());
            mount::unmount(mnt).unwrap();
            std::mem::forget(guard);
        }
        How::Cli(dirs, cache) => {
            let cli = || {
                let mut c = Command::new(env!("CARGO_BIN_EXE_composefs-storage"));
                c.env(mount::CACHE_DIR_ENV, cache);
                c
            };
            let out = cli().arg("mount").args(dirs).arg(mnt).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let guard = MountGuard(mnt.to_path_buf());
            assert!(cli().arg("umount").arg(mnt).status().unwrap().success());
            std::mem::forget(guard);
        }
    }
}

/// Mount + unmount rounds of every case, interleaved (one round of each case in turn), so that
/// the noise of a shared machine falls on all cases alike. Returns each case's median and mean.
fn time_cases(cases: &[(&str, How)], mnt: &Path) -> Vec<(Duration, Duration)> {
    // One warm-up round each: probes, page cache, derived images.
    for (_, how) in cases {
        round(how, mnt);
    }
    let mut times = vec![Vec::new(); cases.len()];
    for _ in 0..iterations() {
        for ((_, how), t) in cases.iter().zip(&mut times) {
            let start = Instant::now();
            round(how, mnt);
            t.push(start.elapsed());
        }
    }
    times
        .into_iter()
        .map(|mut t| {
            t.sort();
            let mean = t.iter().sum::<Duration>() / t.len() as u32;
            (t[t.len() / 2], mean)
        })
        .collect()
}

#[test]
#[ignore = "benchmark: run with scripts/bench-mount.sh"]
fn bench_mount_unmount() {
    if !can_mount() {
        return;
    }
    // Data made here (a fresh machine needs nothing else): a generated tree, its tar converted
    // once into a composefs layer and reused (hardlinked objects) for the other 19.
    let tmp = tempdir();
    let root = tmp.path();
    let tree = root.join("tree");
    generate_tree(&tree);
    let tar = root.join("layer.tar");
    let ok = Command::new("tar")
        .args(["--numeric-owner", "--sort=name", "-cf"])
        .arg(&tar)
        .arg("-C")
        .arg(&tree)
        .arg(".")
        .status()
        .unwrap()
        .success();
    assert!(ok, "tar -c of the generated tree");
    let mut cfs: Vec<PathBuf> = Vec::new();
    let mut classic: Vec<PathBuf> = Vec::new();
    for i in 0..20 {
        let dir = root.join(format!("cfs{i}"));
        let options = composefs_storage::layer::ConvertOptions {
            source_layers: cfs.first().cloned().into_iter().collect(),
            hardlinks: true,
            ..Default::default()
        };
        composefs_storage::layer::convert(Box::new(fs::File::open(&tar).unwrap()), &dir, &options, None).unwrap();
        cfs.push(dir);
        let c = root.join(format!("classic{i}"));
        fs::create_dir(&c).unwrap();
        let ok = Command::new("cp").arg("-a").arg(&tree).arg(c.join("diff")).status().unwrap().success();
        assert!(ok);
        classic.push(c);
    }
    let mnt = root.join("mnt");
    fs::create_dir(&mnt).unwrap();
    // A blob's successful check is remembered only once the file has not changed for 2 seconds
    // (src/mount/reuse.rs); layers are converted long before they are mounted again and again.
    std::thread::sleep(Duration::from_secs(3));
    let layers = |dirs: &[PathBuf]| -> Vec<Layer> { dirs.iter().map(|d| Layer::from_layer_dir(d).unwrap()).collect() };
    // As the CLI mounts them: each blob checked against the digest kept beside it.
    let verified = |dirs: &[PathBuf]| -> Vec<Layer> {
        dirs.iter().map(|d| Layer::from_layer_dir(d).unwrap().read_digest_file(d).unwrap()).collect()
    };
    println!("kernel features: {:?}", mount::kernel_features());
    println!("{} rounds each (cases interleaved), mount + unmount, median (mean):", iterations());
    let opts = MountOptions { stub_cache_dir: Some(root.join("cache")), ..MountOptions::read_only() };
    let unflattened = MountOptions { flatten: false, ..opts.clone() };
    let fresh = MountOptions { reuse_erofs: false, ..opts.clone() };
    let cache = root.join("cache");
    let cases = [
        ("composefs  1 layer ", How::Lib(layers(&cfs[..1]), opts.clone())),
        ("classic    1 layer ", How::Lib(layers(&classic[..1]), opts.clone())),
        ("composefs 20 layers", How::Lib(layers(&cfs), opts.clone())),
        ("classic   20 layers", How::Lib(layers(&classic), opts.clone())),
        ("composefs 20 layers, blobs verified", How::Lib(verified(&cfs), opts.clone())),
        ("composefs 20 layers, new EROFS superblock each mount (reuse_erofs off)", How::Lib(layers(&cfs), fresh)),
        ("composefs 20 layers, one EROFS per layer (flatten off)", How::Lib(layers(&cfs), unflattened)),
        ("CLI composefs 20 layers (verified)", How::Cli(cfs.clone(), cache.clone())),
        ("CLI classic   20 layers", How::Cli(classic.clone(), cache.clone())),
    ];
    let timed = time_cases(&cases, &mnt);
    for ((name, _), (median, mean)) in cases.iter().zip(&timed) {
        println!("  {name}: {:8.3} ms ({:.3} ms)", median.as_secs_f64() * 1e3, mean.as_secs_f64() * 1e3);
    }
    let results: Vec<Duration> = timed.iter().map(|r| r.0).collect();
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!("ratio composefs/classic,  1 layer : {:.2}x", ratio(results[0], results[1]));
    println!("ratio composefs/classic, 20 layers: {:.2}x (goal <= 1.5x)", ratio(results[2], results[3]));
    println!("ratio composefs/classic, 20 layers, verified: {:.2}x", ratio(results[4], results[3]));
    println!("ratio composefs/classic, 20 layers, reuse_erofs off: {:.2}x", ratio(results[5], results[3]));
    println!("ratio composefs/classic, 20 layers, flatten off: {:.2}x", ratio(results[6], results[3]));
    println!("ratio composefs/classic, 20 layers, CLI processes: {:.2}x", ratio(results[7], results[8]));
    Snapshot::assert_clean(root);
}

/// A tree like a small package: 20 dirs of 25 files (0 to 40 KiB, a few identical), symlinks.
fn generate_tree(tree: &Path) {
    for d in 0..20 {
        let dir = tree.join(format!("usr/lib/pkg{d:02}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..25 {
            let len = (d * 25 + f) * 331 % (40 << 10);
            let seed = if f % 10 == 0 { 0 } else { d * 25 + f };
            let data: Vec<u8> = format!("file {seed}\n").bytes().cycle().take(len).collect();
            fs::write(dir.join(format!("f{f:02}.so")), data).unwrap();
        }
        std::os::unix::fs::symlink(format!("pkg{d:02}/f00.so"), tree.join(format!("usr/lib/link{d:02}"))).unwrap();
    }
    fs::create_dir_all(tree.join("etc")).unwrap();
    fs::write(tree.join("etc/hostname"), b"bench\n").unwrap();
}

//! Concurrency (issue #9): several CLI processes convert, at the same time, different layers that
//! share many objects into one store, reusing each other's objects by hardlink; and threads of
//! one process convert and mount in parallel. Every layer must equal a sequential conversion of
//! the same input (object names, object contents, blob bytes), no object may be lost or corrupted
//! (every object in the store hashes to its name), and nothing may deadlock (a timeout fails).

mod support;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use support::tar::{content, TarBuilder};

const LAYERS: usize = 4;
const ROUNDS: usize = 3;
/// Per round of processes; generous (debug build, busy 2-core machine), only a deadlock hits it.
const TIMEOUT: Duration = Duration::from_secs(300);

fn cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_composefs-storage"))
}

/// The shared pool (in the base layer and in every layer), contents shared by the layers but not
/// the base, and contents of one layer only.
fn layer_tars() -> (Vec<u8>, Vec<Vec<u8>>) {
    let size = |seed: u64| (seed.wrapping_mul(7919) % 24_000) as usize + 1;
    let mut base = TarBuilder::new();
    base.dir("base");
    for k in 0..120u64 {
        base.file(&format!("base/f{k}"), &content(k, size(k)));
    }
    let layers = (0..LAYERS as u64)
        .map(|i| {
            let mut t = TarBuilder::new();
            t.dir("l");
            // Most of the base pool, a different subset per layer.
            for k in (0..120u64).filter(|k| k % (i + 3) != 0) {
                t.file(&format!("l/base{k}"), &content(k, size(k)));
            }
            // Shared by the layers, not by the base: reused from sibling layers.
            for k in 0..60u64 {
                t.file(&format!("l/sib{k}"), &content(5000 + k, size(5000 + k)));
            }
            for k in 0..20u64 {
                let seed = 10_000 + i * 100 + k;
                t.file(&format!("l/own{k}"), &content(seed, size(seed)));
            }
            // The same content twice in one layer, and an empty file.
            t.file("l/dup-a", &content(77, 3000)).file("l/dup-b", &content(77, 3000)).file("l/empty", b"");
            t.finish()
        })
        .collect();
    (base.finish(), layers)
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// A layer as compared: object name → inode-independent check done, and the blob bytes.
#[derive(Debug, PartialEq, Eq)]
struct LayerState {
    objects: Vec<String>,
    blob_sha256: String,
}

/// Reads a layer back, checking that every object hashes to its name (not lost, not corrupted).
fn layer_state(layer: &Path) -> LayerState {
    let diff = layer.join("diff");
    let mut objects = Vec::new();
    for prefix in std::fs::read_dir(&diff).unwrap_or_else(|e| panic!("{}: {e}", diff.display())) {
        let prefix = prefix.unwrap();
        for obj in std::fs::read_dir(prefix.path()).unwrap() {
            let obj = obj.unwrap();
            let name = format!("{}{}", prefix.file_name().to_string_lossy(), obj.file_name().to_string_lossy());
            let mut data = Vec::new();
            std::fs::File::open(obj.path()).unwrap().read_to_end(&mut data).unwrap();
            assert_eq!(sha256_hex(&data), name, "object {} is corrupted", obj.path().display());
            objects.push(name);
        }
    }
    objects.sort();
    let blob = std::fs::read(layer.join("composefs-data/composefs.blob")).unwrap();
    LayerState { objects, blob_sha256: sha256_hex(&blob) }
}

fn convert_cmd(input: &Path, layer: &Path, sources: &[PathBuf]) -> Command {
    let mut c = cli();
    c.args(["convert", "--quiet", "--verity", "off", "--hardlinks"]);
    for s in sources {
        c.arg("--source-layer").arg(s);
    }
    c.arg(input).arg(layer).stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

fn run_ok(mut c: Command) {
    let out = c.output().unwrap();
    assert!(out.status.success(), "{c:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Waits for every child; kills them all and fails on the timeout.
fn wait_all(children: Vec<(String, Child)>) {
    let start = Instant::now();
    let mut pending = children;
    while !pending.is_empty() {
        let mut still = Vec::new();
        for (what, mut child) in pending {
            match child.try_wait().unwrap() {
                Some(status) => {
                    let mut err = String::new();
                    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
                    assert!(status.success(), "{what}: {status}: {err}");
                }
                None => still.push((what, child)),
            }
        }
        pending = still;
        if start.elapsed() > TIMEOUT {
            let names: Vec<_> = pending.iter().map(|(w, _)| w.clone()).collect();
            for (_, mut c) in pending {
                let _ = c.kill();
                let _ = c.wait();
            }
            panic!("deadlock? still running after {TIMEOUT:?}: {names:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn processes_converting_layers_that_share_objects_into_one_store() {
    let tmp = tempfile::tempdir().unwrap();
    let (base_tar, tars) = layer_tars();
    let inputs = tmp.path().join("inputs");
    std::fs::create_dir(&inputs).unwrap();
    std::fs::write(inputs.join("base.tar"), &base_tar).unwrap();
    for (i, t) in tars.iter().enumerate() {
        std::fs::write(inputs.join(format!("l{i}.tar")), t).unwrap();
    }

    // The reference: each input converted alone, with no source layer.
    let reference = tmp.path().join("reference");
    std::fs::create_dir(&reference).unwrap();
    let mut expected = BTreeMap::new();
    for name in std::iter::once("base".to_string()).chain((0..LAYERS).map(|i| format!("l{i}"))) {
        let layer = reference.join(&name);
        run_ok(convert_cmd(&inputs.join(format!("{name}.tar")), &layer, &[]));
        expected.insert(name, layer_state(&layer));
    }

    let store = tmp.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let base = store.join("base");
    run_ok(convert_cmd(&inputs.join("base.tar"), &base, &[]));
    // Every round converts all layers at once; each reuses from the base and every layer of the
    // earlier rounds (all sharing inodes through hardlinks), and rounds rotate the inputs.
    let mut done: Vec<(PathBuf, String)> = vec![(base.clone(), "base".into())];
    for round in 0..ROUNDS {
        let sources: Vec<PathBuf> = done.iter().map(|(p, _)| p.clone()).collect();
        let mut children = Vec::new();
        let mut this_round = Vec::new();
        for i in 0..LAYERS {
            let input = format!("l{}", (i + round) % LAYERS);
            let layer = store.join(format!("r{round}-{i}"));
            let child = convert_cmd(&inputs.join(format!("{input}.tar")), &layer, &sources).spawn().unwrap();
            children.push((format!("round {round} layer {i} ({input})"), child));
            this_round.push((layer, input));
        }
        wait_all(children);
        done.extend(this_round);
        // Every layer so far, the earlier ones included (a shared inode written to by a later
        // conversion would show here), equals its sequential conversion.
        for (layer, input) in &done {
            assert_eq!(&layer_state(layer), &expected[input], "after round {round}: {}", layer.display());
        }
        let leftovers: Vec<_> = std::fs::read_dir(&store)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".staging-"))
            .collect();
        assert!(leftovers.is_empty(), "round {round}: staging left: {leftovers:?}");
    }
    // Hardlinks really were used: the later layers share inodes with the base.
    use std::os::unix::fs::MetadataExt;
    let shared = std::fs::read_dir(base.join("diff"))
        .unwrap()
        .flat_map(|p| std::fs::read_dir(p.unwrap().path()).unwrap())
        .filter(|o| o.as_ref().unwrap().metadata().unwrap().nlink() > 1)
        .count();
    assert!(shared > 0, "no base object was reused by hardlink");
}

/// Threads of one process: some convert layers into one store (reusing the base layer), others
/// mount the base layer and read through the mount, at the same time. The mounting part needs root
/// and kernel EROFS + overlayfs; without them only the conversions run (the reason is printed).
#[test]
fn threads_converting_and_mounting_in_one_process() {
    use composefs_storage::layer::{convert, ConvertOptions, VerityPolicy};
    let tmp = tempfile::tempdir().unwrap();
    let (base_tar, tars) = layer_tars();
    let store = tmp.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let base = store.join("base");
    let opts = ConvertOptions { verity: VerityPolicy::Off, ..Default::default() };
    convert(Box::new(std::io::Cursor::new(base_tar.clone())), &base, &opts, None).unwrap();

    // Reference states, converted alone.
    let reference = tmp.path().join("reference");
    std::fs::create_dir(&reference).unwrap();
    let expected: Vec<LayerState> = tars
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let dir = reference.join(format!("l{i}"));
            convert(Box::new(std::io::Cursor::new(t.clone())), &dir, &opts, None).unwrap();
            layer_state(&dir)
        })
        .collect();

    let mounting = can_mount();
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for (i, t) in tars.iter().enumerate() {
            let (store, base) = (&store, &base);
            handles.push(s.spawn(move || {
                for round in 0..2 {
                    let opts = ConvertOptions {
                        verity: VerityPolicy::Off,
                        source_layers: vec![base.clone()],
                        hardlinks: round == 0,
                        ..Default::default()
                    };
                    let dir = store.join(format!("t{i}-{round}"));
                    convert(Box::new(std::io::Cursor::new(t.clone())), &dir, &opts, None).unwrap();
                }
            }));
        }
        if mounting {
            for m in 0..2 {
                let (tmp, base) = (tmp.path(), &base);
                handles.push(s.spawn(move || mount_and_read(tmp, base, m)));
            }
        }
        for h in handles {
            h.join().unwrap();
        }
    });
    for (i, exp) in expected.iter().enumerate() {
        for round in 0..2 {
            assert_eq!(&layer_state(&store.join(format!("t{i}-{round}"))), exp, "layer {i} round {round}");
        }
    }
    assert_eq!(layer_state(&base).objects.len(), 120, "the base layer lost objects");
}

fn can_mount() -> bool {
    // Derived images go to the target dir, not /run (as tests/mount_support does).
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mount-image-cache");
    std::env::set_var(composefs_storage::mount::CACHE_DIR_ENV, cache);
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIP mounting part: needs root");
        return false;
    }
    for fs in ["erofs", "overlay"] {
        if let Err(e) = rustix::mount::fsopen(fs, rustix::mount::FsOpenFlags::FSOPEN_CLOEXEC) {
            eprintln!("SKIP mounting part: kernel cannot fsopen({fs:?}): {e}");
            return false;
        }
    }
    true
}

/// Mounts the base layer (read-only) a few times and checks file contents through the mount.
fn mount_and_read(tmp: &Path, base: &Path, m: usize) {
    use composefs_storage::mount::{self, Layer, MountOptions};
    let target = tmp.join(format!("mnt{m}"));
    std::fs::create_dir(&target).unwrap();
    let opts = MountOptions { stub_cache_dir: Some(tmp.join(format!("cache{m}"))), ..MountOptions::read_only() };
    let size = |seed: u64| (seed.wrapping_mul(7919) % 24_000) as usize + 1;
    for r in 0..4u64 {
        let layers = [Layer::from_layer_dir(base).unwrap()];
        mount::mount(&layers, &target, &opts).unwrap();
        let k = (m as u64 * 31 + r * 17) % 120;
        let got = std::fs::read(target.join(format!("base/f{k}")));
        mount::unmount(&target).unwrap();
        assert_eq!(got.unwrap(), content(k, size(k)), "mount {m} round {r}: base/f{k}");
    }
}

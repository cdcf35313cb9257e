//! Crash consistency: the converting process is killed (SIGKILL) at many points of a conversion
//! and of a partial pull. Afterwards the layer directory is either complete or absent, and the
//! next operation in the same store removes what the killed one left in staging.

mod support;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn corpus() -> PathBuf {
    support::cstorage()
}

fn cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_composefs-storage"))
}

/// The names in `dir` that are staging leftovers.
fn staging_leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".staging-"))
        .collect()
}

/// A layer dir is complete: its blob reads back and `export` re-creates a tar with the DiffID.
fn assert_complete(layer: &Path, diff_id: &str) {
    let out = cli().arg("export").arg("--print-diff-id").arg(layer).stdout(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "export of {}: {}", layer.display(), String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with(diff_id), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Simple deterministic pseudo-random numbers for the kill points.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn killed_conversions_leave_a_complete_layer_or_nothing() {
    let tar = zstd::decode_all(std::fs::File::open(corpus().join("etc-doc-gnu/etc-doc-gnu.tar.zst")).unwrap()).unwrap();
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(corpus().join("etc-doc-gnu/etc-doc-gnu.compress.json")).unwrap())
            .unwrap();
    let diff_id = summary["diffID"].as_str().unwrap();
    let store = tempfile::tempdir().unwrap();
    let mut seed = 0x9e3779b97f4a7c15u64;
    let (mut kills, mut leftovers) = (0, 0);
    for round in 0..12 {
        let layer = store.path().join(format!("layer{round}"));
        let mut child = cli()
            .args(["convert", "--verity", "off", "-"])
            .arg(&layer)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Feed a random part of the stream, then kill without warning.
        let cut = (next(&mut seed) % tar.len() as u64) as usize;
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(&tar[..cut]);
        std::thread::sleep(Duration::from_millis(next(&mut seed) % 30));
        child.kill().unwrap();
        child.wait().unwrap();
        drop(stdin);
        kills += 1;
        assert!(!layer.exists(), "round {round}: a killed conversion left {}", layer.display());
        leftovers += staging_leftovers(store.path()).len();

        // The next conversion in the store cleans up whatever the killed one left in staging.
        let next_layer = store.path().join(format!("ok{round}"));
        let st = cli()
            .args(["convert", "--verity", "off"])
            .arg(corpus().join("etc-doc-gnu/etc-doc-gnu.tar.zst"))
            .arg(&next_layer)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        assert!(staging_leftovers(store.path()).is_empty(), "round {round}: {:?}", staging_leftovers(store.path()));
        assert_complete(&next_layer, diff_id);
    }
    println!("killed {kills} conversions; {leftovers} abandoned staging dirs cleaned up by the next one");
    assert!(leftovers > 0, "no kill left a staging directory: the cleanup was not exercised");
}

#[test]
fn killed_pulls_leave_a_complete_layer_or_nothing() {
    let dir = corpus().join("handmade-pax");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("handmade-pax.compress.json")).unwrap()).unwrap();
    let diff_id = summary["diffID"].as_str().unwrap();
    let store = tempfile::tempdir().unwrap();
    let mut seed = 0x2545f4914f6cdd1du64;
    let (mut completed, mut killed, mut leftovers) = (0, 0, 0);
    for round in 0..10 {
        let layer = store.path().join(format!("layer{round}"));
        let mut child = cli()
            .args(["convert", "--verity", "off", "--annotations"])
            .arg(dir.join("handmade-pax.annotations.json"))
            .arg(dir.join("handmade-pax.zstd-chunked"))
            .arg(&layer)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(next(&mut seed) % 400));
        let _ = child.kill();
        let status = child.wait().unwrap();
        if status.success() {
            completed += 1;
            assert_complete(&layer, diff_id);
        } else {
            killed += 1;
            assert!(!layer.exists(), "round {round}: a killed pull left {}", layer.display());
        }
        // Any leftover is gone after the next operation's cleanup.
        leftovers += staging_leftovers(store.path()).len();
        composefs_storage::layer::staging::cleanup_abandoned(store.path()).unwrap();
        assert!(staging_leftovers(store.path()).is_empty());
    }
    println!("pulls: {killed} killed, {completed} completed before the kill, {leftovers} staging dirs cleaned");
    assert!(killed > 0, "no pull was killed mid-way");
}

#[test]
fn a_staging_directory_in_use_is_never_removed() {
    let store = tempfile::tempdir().unwrap();
    // A conversion blocked on its input holds its staging lock.
    let layer = store.path().join("slow");
    let mut child = cli()
        .args(["convert", "--verity", "off", "-"])
        .arg(&layer)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&[0u8; 100]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while staging_leftovers(store.path()).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(staging_leftovers(store.path()).len(), 1);
    assert_eq!(composefs_storage::layer::staging::cleanup_abandoned(store.path()).unwrap(), 0);
    assert_eq!(staging_leftovers(store.path()).len(), 1, "the live conversion's staging stays");
    drop(stdin);
    let _ = child.wait();
    assert!(staging_leftovers(store.path()).is_empty());
}

/// Conversions into one directory at the same time never clean up each other's staging.
#[test]
fn concurrent_conversions_in_one_directory_do_not_interfere() {
    use composefs_storage::layer::{convert, ConvertOptions, VerityPolicy};
    let store = tempfile::tempdir().unwrap();
    let path = corpus().join("noparents-ustar/noparents-ustar.tar");
    std::thread::scope(|s| {
        for t in 0..8 {
            let (store, path) = (store.path(), &path);
            s.spawn(move || {
                for round in 0..10 {
                    let opts = ConvertOptions { verity: VerityPolicy::Off, ..Default::default() };
                    let input = Box::new(std::fs::File::open(path).unwrap());
                    convert(input, &store.join(format!("l{t}-{round}")), &opts, None)
                        .unwrap_or_else(|e| panic!("thread {t} round {round}: {e}"));
                }
            });
        }
    });
    assert_eq!(std::fs::read_dir(store.path()).unwrap().count(), 80);
    assert!(staging_leftovers(store.path()).is_empty());
}

//! `composefs-storage mkimage` / `dump` end to end.

mod support;
use std::process::Command;

use sha2::{Digest, Sha256};

use support::corpus;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_composefs-storage"))
}

#[test]
fn mkimage_matches_mkcomposefs_and_dump_round_trips() {
    let Some(corpus) = corpus() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("quirks.cfs");
    let o = bin()
        .args(["mkimage", "--print-digest"])
        .arg(corpus.join("cstorage/synthetic/quirks.dump"))
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let img = std::fs::read(&out).unwrap();
    let hex = |d: &[u8]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(hex(&Sha256::digest(&img)), "b5aac50ede59f18450dae33241bbc5253172e9d06c679e22a0f5ce76c4478749");
    assert_eq!(
        String::from_utf8(o.stdout).unwrap().trim(),
        "64432dd7023f81697269e945facc035ce0c4fb5ab1f42695e8b769e1d757858a"
    );

    // dump, then mkimage from stdin to stdout gives the same image.
    let d = bin().arg("dump").arg(&out).output().unwrap();
    assert!(d.status.success());
    assert!(String::from_utf8_lossy(&d.stdout).contains("1704067200.5000000"));
    let mut child = bin()
        .args(["mkimage", "-", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&d.stdout).unwrap();
    let again = child.wait_with_output().unwrap();
    assert!(again.status.success());
    assert!(again.stdout == img);
}

#[test]
fn mkimage_failure_leaves_nothing_behind() {
    let Some(corpus) = corpus() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let o = bin()
        .arg("mkimage")
        .arg(corpus.join("composefs-assets/should-fail-too-big.dump"))
        .arg(tmp.path().join("x.cfs"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("too large"));
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    let o = bin().args(["mkimage", "--max-version", "2", "-", "-"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
}

//! `composefs-storage inspect`: summaries of converted corpus layers checked against the corpus's
//! independent object lists, and `--verify`/`--deep` catching damaged objects.

mod support;
use std::path::Path;
use std::process::{Command, Output};

use support::corpus;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_composefs-storage"))
}

fn run(args: &[&str], dir: &Path) -> Output {
    bin().args(args).arg(dir).output().unwrap()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
}

/// Converts corpus case `case` into `dir` (no fs-verity, so objects can be damaged later).
fn convert_case(corpus: &Path, case: &str, dir: &Path) {
    let o = bin()
        .args(["convert", "--verity", "off"])
        .arg(corpus.join(format!("cstorage/{case}/{case}.tar.zst")))
        .arg(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// The corpus's expected objects: (`ab/cdef…`, size).
fn expected_objects(corpus: &Path, case: &str) -> Vec<(String, u64)> {
    let text = std::fs::read_to_string(corpus.join(format!("cstorage/{case}/{case}.objects.txt"))).unwrap();
    text.lines()
        .map(|l| {
            let (name, size) = l.split_once(' ').unwrap();
            (name.to_string(), size.parse().unwrap())
        })
        .collect()
}

#[test]
fn converted_corpus_layer_verifies_deeply() {
    let Some(corpus) = corpus() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("layer");
    convert_case(&corpus, "etc-doc-gnu", &dir);
    let o = run(&["inspect", "--verify", "--deep", "--json"], &dir);
    assert!(o.status.success(), "{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let v = json(&o);
    assert_eq!(v["ok"], true);
    assert_eq!(v["format"], "composefs");
    let expected = expected_objects(&corpus, "etc-doc-gnu");
    // Every object c/storage writes (the empty one included), but empty files carry no redirect.
    let nonempty = expected.iter().filter(|(_, s)| *s > 0).count() as u64;
    assert_eq!(v["objects"]["count"], expected.len() as u64);
    assert_eq!(v["objects"]["bytes"], expected.iter().map(|(_, s)| s).sum::<u64>());
    assert_eq!(v["objects"]["redirects"], nonempty);
    assert_eq!(v["verified"]["objectsHashed"], expected.len() as u64);
    assert_eq!(v["notes"], serde_json::json!([]));
    // The digest kept beside the blob is the blob's, and every metadata file is there.
    let blob = std::fs::read(dir.join("composefs-data/composefs.blob")).unwrap();
    assert_eq!(v["blob"]["size"], blob.len() as u64);
    assert_eq!(v["blob"]["keptDigestMatches"], true);
    let kept = std::fs::read_to_string(dir.join("composefs-data/composefs.blob.verity")).unwrap();
    assert_eq!(v["blob"]["fsVerity"], kept.trim());
    for m in ["composefs.blob.verity", "toc.json", "tar-split.json.zst", "chunked-manifest-cache"] {
        assert_eq!(v["metadata"][m], true, "{m}");
    }
    // Entries by type agree with the corpus dump (one line per path, root included).
    let dump = std::fs::read_to_string(corpus.join("cstorage/etc-doc-gnu/etc-doc-gnu.dump")).unwrap();
    let dirs = dump.lines().filter(|l| l.split(' ').nth(2).is_some_and(|m| m.starts_with("4"))).count() as u64;
    assert_eq!(v["entries"]["directories"], dirs - 1);

    // The text form says the same, in words.
    let o = run(&["inspect", "--verify"], &dir);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("matches composefs.blob.verity"), "{text}");
    assert!(text.contains("ok: no problems found"), "{text}");
}

#[test]
fn damaged_objects_are_reported() {
    let Some(corpus) = corpus() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("layer");
    convert_case(&corpus, "handmade-archive", &dir);
    let mut objects: Vec<_> =
        expected_objects(&corpus, "handmade-archive").into_iter().filter(|(_, s)| *s > 1).collect();
    objects.sort_by_key(|(_, s)| *s);
    let [(corrupt, _), (truncate, _), (delete, _), ..] = &objects[..] else { panic!("too few objects") };
    assert!(run(&["inspect", "--verify", "--deep"], &dir).status.success());

    // Same-size corruption: sizes still match, only --deep sees it.
    let p = dir.join("diff").join(corrupt);
    let mut data = std::fs::read(&p).unwrap();
    data[0] ^= 0xff;
    std::fs::write(&p, &data).unwrap();
    let o = run(&["inspect", "--verify"], &dir);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let o = run(&["inspect", "--verify", "--deep", "--json"], &dir);
    assert_eq!(o.status.code(), Some(1));
    let problems = json(&o)["problems"].as_array().unwrap().clone();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].as_str().unwrap().contains(corrupt.as_str()), "{problems:?}");
    assert!(problems[0].as_str().unwrap().contains("content sha256"), "{problems:?}");

    // Truncated and deleted objects: --verify names both (and the paths using them).
    let p = dir.join("diff").join(truncate);
    let len = std::fs::metadata(&p).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(len - 1).unwrap();
    std::fs::remove_file(dir.join("diff").join(delete)).unwrap();
    let o = run(&["inspect", "--verify"], &dir);
    assert_eq!(o.status.code(), Some(1));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("2 problem(s):"), "{text}");
    assert!(text.contains(&format!("object diff/{truncate} is {} bytes, the image says {len}", len - 1)), "{text}");
    assert!(text.contains(&format!("object diff/{delete} is missing")), "{text}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("2 problem(s) found"));
    // Without --verify the summary still works and does not fail on objects.
    assert!(run(&["inspect"], &dir).status.success());
}

#[test]
fn changed_blob_is_reported_against_its_kept_digest() {
    let Some(corpus) = corpus() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("layer");
    convert_case(&corpus, "handmade-archive", &dir);
    std::fs::write(dir.join("composefs-data/composefs.blob.verity"), format!("{}\n", "0".repeat(64))).unwrap();
    let o = run(&["inspect", "--json"], &dir);
    assert_eq!(o.status.code(), Some(1));
    let v = json(&o);
    assert_eq!(v["blob"]["keptDigestMatches"], false);
    assert!(v["problems"][0].as_str().unwrap().contains("fs-verity digest is"), "{v}");
}

#[test]
fn classic_layer_is_counted_and_usage_errors_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let diff = tmp.path().join("classic/diff");
    std::fs::create_dir_all(diff.join("a/b")).unwrap();
    std::fs::write(diff.join("a/f"), b"12345").unwrap();
    std::fs::hard_link(diff.join("a/f"), diff.join("a/b/g")).unwrap();
    std::os::unix::fs::symlink("f", diff.join("a/l")).unwrap();
    let o = run(&["inspect", "--json"], &tmp.path().join("classic"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = json(&o);
    assert_eq!(v["format"], "classic");
    assert_eq!(v["entries"]["directories"], 2);
    assert_eq!(v["entries"]["files"], 1);
    assert_eq!(v["entries"]["hardlinks"], 1);
    assert_eq!(v["entries"]["symlinks"], 1);
    assert_eq!(v["entries"]["fileBytes"], 5);

    // --deep needs --verify: a usage error.
    assert_eq!(run(&["inspect", "--deep"], tmp.path()).status.code(), Some(2));
    // A missing layer dir is a failure, not a usage error.
    assert_eq!(run(&["inspect"], &tmp.path().join("nope")).status.code(), Some(1));
}

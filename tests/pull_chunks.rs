//! Chunk-level reuse in a partial pull (SPEC §8): a file missing by full digest is assembled from
//! chunks found (and verified) in a source layer, `zeros` chunks become holes, and only the other
//! chunks are fetched. Both blobs come from our zstd:chunked writer.

mod support;
use support::noise;

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use composefs_storage::chunked::writer::{compress, CompressOptions, CompressResult};
use composefs_storage::layer::pull::{pull, read_manifest_from, FileFetcher, PullOptions, PullResult};
use composefs_storage::layer::{convert, ConvertOptions, VerityPolicy};
use sha2::{Digest, Sha256};

/// A minimal ustar archive: regular files with mode 0644, then the end blocks.
fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in files {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        h[108..115].copy_from_slice(b"0000000");
        h[116..123].copy_from_slice(b"0000000");
        h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
        h[136..147].copy_from_slice(b"14000000000");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

fn write_blob(tar: &[u8], path: &Path) -> CompressResult {
    let mut f = File::create(path).unwrap();
    compress(Box::new(std::io::Cursor::new(tar.to_vec())), &mut f, &CompressOptions { level: 3, ..Default::default() })
        .unwrap()
}

fn pull_blob(blob: &Path, r: &CompressResult, dest: &Path, sources: &[&Path]) -> PullResult {
    let mut fetcher = FileFetcher::new(File::open(blob).unwrap()).unwrap();
    let opts = PullOptions {
        annotations: Some(r.annotations.clone()),
        source_layers: sources.iter().map(|p| p.to_path_buf()).collect(),
        verity: VerityPolicy::Off,
        ..Default::default()
    };
    pull(&mut fetcher, dest, &opts, None).unwrap()
}

fn object(layer: &Path, content: &[u8]) -> std::path::PathBuf {
    let hex: String = Sha256::digest(content).iter().map(|b| format!("{b:02x}")).collect();
    layer.join("diff").join(&hex[..2]).join(&hex[2..])
}

fn listing(layer: &Path) -> (Vec<(String, Vec<u8>)>, Vec<u8>) {
    let mut out = Vec::new();
    for prefix in std::fs::read_dir(layer.join("diff")).unwrap() {
        for obj in std::fs::read_dir(prefix.unwrap().path()).unwrap() {
            let p = obj.unwrap().path();
            out.push((p.strip_prefix(layer).unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()));
        }
    }
    out.sort();
    (out, std::fs::read(layer.join("composefs-data/composefs.blob")).unwrap())
}

#[test]
fn shared_chunks_are_copied_from_the_source_layer_and_zero_runs_are_holes() {
    let _serial = support::hygiene::lock(); // one test at a time: the hygiene checks count fds
    let tmp = tempfile::tempdir().unwrap();
    // X: 2 MiB of noise with 256 KiB of zeros in the middle; Y: a new prefix, then X.
    let mut x = noise(1 << 20, 1);
    x.extend_from_slice(&vec![0u8; 256 << 10]);
    x.extend_from_slice(&noise(1 << 20, 2));
    let mut y = noise(5000, 3);
    y.extend_from_slice(&x);
    let tar1 = tar(&[("a/x", &x), ("a/small", b"small")]);
    let tar2 = tar(&[("b/y", &y), ("b/small2", b"other small")]);
    let (b1, b2) = (tmp.path().join("l1.zst"), tmp.path().join("l2.zst"));
    let r1 = write_blob(&tar1, &b1);
    let r2 = write_blob(&tar2, &b2);

    let l1 = tmp.path().join("l1");
    let p1 = pull_blob(&b1, &r1, &l1, &[]);
    assert_eq!(p1.chunk_bytes_reused, 0);
    // Without any source, the zeros chunk is not even fetched.
    assert!(p1.blob_bytes_fetched < r1.blob_size, "{} of {}", p1.blob_bytes_fetched, r1.blob_size);

    let l2 = tmp.path().join("l2");
    let p2 = pull_blob(&b2, &r2, &l2, &[&l1]);
    // Y is missing by digest, but all of X's chunks after its first are found in L1.
    assert_eq!(p2.objects.objects_reused, 0);
    assert!(p2.chunk_bytes_reused > 1_500_000, "reused {} chunk bytes", p2.chunk_bytes_reused);
    assert!(
        p2.blob_bytes_fetched < r2.blob_size / 4,
        "fetched {} of a {}-byte blob",
        p2.blob_bytes_fetched,
        r2.blob_size
    );
    // The same layer as converting the tar, and Y's zero run is a hole.
    let conv = tmp.path().join("converted");
    convert(
        Box::new(std::io::Cursor::new(tar2.clone())),
        &conv,
        &ConvertOptions { verity: VerityPolicy::Off, ..Default::default() },
        None,
    )
    .unwrap();
    assert!(listing(&l2) == listing(&conv), "pulled and converted layers differ");
    let meta = std::fs::metadata(object(&l2, &y)).unwrap();
    assert!(meta.blocks() * 512 <= meta.len() - (192 << 10), "{} blocks for {} bytes", meta.blocks(), meta.len());

    // A local chunk that does not match its digest is fetched instead: same layer, less reuse.
    let x_obj = object(&l1, &x);
    let f = std::fs::OpenOptions::new().write(true).open(&x_obj).unwrap();
    f.write_all_at(b"corrupted!", 1_500_000).unwrap();
    drop(f);
    let l3 = tmp.path().join("l3");
    let p3 = pull_blob(&b2, &r2, &l3, &[&l1]);
    assert!(p3.chunk_bytes_reused < p2.chunk_bytes_reused);
    assert!(p3.blob_bytes_fetched > p2.blob_bytes_fetched);
    assert!(listing(&l3) == listing(&conv), "a bad local chunk must not end up in the layer");
}

/// A cold pull's files are decompressed and verified by a pool of threads (small files gathered
/// into jobs, large ones streamed to one thread, zero runs written as holes): whatever the number
/// of threads, the layer is the one converting the tar gives, and a damaged frame of a small or a
/// large file is refused, naming the file, with nothing left behind.
#[test]
fn cold_pulls_on_several_threads_equal_conversion_and_refuse_damaged_frames() {
    let _serial = support::hygiene::lock();
    let tmp = tempfile::tempdir().unwrap();
    // A large file with a zero run (streamed, with a hole), a large one without, and 600 small
    // ones of varied sizes (several jobs), some identical.
    let mut big = noise(700 << 10, 11);
    big.extend_from_slice(&vec![0u8; 256 << 10]);
    big.extend_from_slice(&noise(600 << 10, 12));
    let plain = noise(300 << 10, 13);
    let small: Vec<(String, Vec<u8>)> =
        (0..600).map(|i| (format!("s/f{i:03}"), noise(1 + (i * 397) % 9000, 100 + (i % 500) as u64))).collect();
    let mut files: Vec<(&str, &[u8])> = vec![("big", &big), ("plain", &plain)];
    files.extend(small.iter().map(|(n, d)| (n.as_str(), d.as_slice())));
    let tar = tar(&files);
    let blob = tmp.path().join("blob.zst");
    let r = write_blob(&tar, &blob);
    let conv = tmp.path().join("converted");
    let conv_opts = ConvertOptions { verity: VerityPolicy::Off, ..Default::default() };
    convert(Box::new(std::io::Cursor::new(tar.clone())), &conv, &conv_opts, None).unwrap();

    let opts = |threads| PullOptions {
        annotations: Some(r.annotations.clone()),
        verity: VerityPolicy::Off,
        decompress_threads: threads,
        ..Default::default()
    };
    for threads in [1, 2, 5] {
        let dest = tmp.path().join(format!("t{threads}"));
        let mut fetcher = FileFetcher::new(File::open(&blob).unwrap()).unwrap();
        let p = pull(&mut fetcher, &dest, &opts(threads), None).unwrap_or_else(|e| panic!("{threads} threads: {e}"));
        assert_eq!(p.diff_id, Some(r.diff_id), "{threads} threads");
        assert!(listing(&dest) == listing(&conv), "{threads} threads: pulled and converted layers differ");
        let meta = std::fs::metadata(object(&dest, &big)).unwrap();
        assert!(meta.blocks() * 512 <= meta.len() - (192 << 10), "{} blocks for {} bytes", meta.blocks(), meta.len());
        std::fs::remove_dir_all(&dest).unwrap();
    }

    // Where each file's frames start.
    let mut fetcher = FileFetcher::new(File::open(&blob).unwrap()).unwrap();
    let manifest = read_manifest_from(&mut fetcher, Some(&r.annotations), None).unwrap();
    let offset = |name: &str| manifest.toc.entries.iter().find(|e| e.name == name).unwrap().offset as u64;
    for (name, threads) in [("big", 2), ("plain", 1), ("s/f321", 2), ("s/f007", 5)] {
        let damaged = tmp.path().join("damaged.zst");
        std::fs::copy(&blob, &damaged).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&damaged).unwrap();
        // Past the frame header, in the compressed data.
        let at = offset(name) + 12;
        let mut b = [0u8];
        File::open(&blob).unwrap().read_exact_at(&mut b, at).unwrap();
        f.write_all_at(&[b[0] ^ 0x5a], at).unwrap();
        drop(f);
        let work = tmp.path().join("work");
        std::fs::create_dir(&work).unwrap();
        let e = support::hygiene::check_err(&work, name, || {
            let mut fetcher = FileFetcher::new(File::open(&damaged).unwrap())?;
            pull(&mut fetcher, &work.join("l"), &opts(threads), None)
        });
        assert!(e.to_string().contains(&format!("{name:?}")), "{name}: {e}");
        assert!(
            matches!(e.kind(), composefs_storage::ErrorKind::Verification | composefs_storage::ErrorKind::Format),
            "{name}: {e}"
        );
        assert_eq!(std::fs::read_dir(&work).unwrap().count(), 0, "{name}: something left in the work dir");
        std::fs::remove_dir(&work).unwrap();
    }
}

/// A TOC (authenticated, as c/storage reads it in NewDiffer and hands it to the pull) that gives a
/// file a sha256 its data does not have, though the data decompresses: the file is refused, named,
/// with nothing left, whether its sha256 is checked by the DiffID thread (small and large files)
/// or, with no DiffID computed, by the decompressing threads. Stored, that object would be taken
/// by the next layer that wants the content it claims to be.
#[test]
fn a_toc_that_lies_about_a_files_sha256_is_refused_naming_the_file() {
    let _serial = support::hygiene::lock();
    let tmp = tempfile::tempdir().unwrap();
    let big = noise(700 << 10, 21);
    let small: Vec<(String, Vec<u8>)> =
        (0..50).map(|i| (format!("s/f{i:02}"), noise(100 + i * 37, 200 + i as u64))).collect();
    let mut files: Vec<(&str, &[u8])> = vec![("big", &big)];
    files.extend(small.iter().map(|(n, d)| (n.as_str(), d.as_slice())));
    let blob = tmp.path().join("blob.zst");
    let r = write_blob(&tar(&files), &blob);
    for (name, threads, insecure) in [("s/f07", 1, false), ("big", 2, false), ("s/f33", 1, true), ("big", 1, true)] {
        let case = format!("{name} ({threads} threads, DiffID {})", if insecure { "skipped" } else { "computed" });
        let mut fetcher = FileFetcher::new(File::open(&blob).unwrap()).unwrap();
        let mut manifest = read_manifest_from(&mut fetcher, Some(&r.annotations), None).unwrap();
        manifest.toc.entries.iter_mut().find(|e| e.name == name).unwrap().digest =
            format!("sha256:{}", "ab".repeat(32));
        let opts = PullOptions {
            manifest: Some(std::sync::Arc::new(manifest)),
            annotations: Some(r.annotations.clone()),
            verity: VerityPolicy::Off,
            decompress_threads: threads,
            insecure_skip_diff_id: insecure,
            ..Default::default()
        };
        let work = tmp.path().join("work");
        std::fs::create_dir(&work).unwrap();
        let e = support::hygiene::check_err(&work, &case, || {
            let mut fetcher = FileFetcher::new(File::open(&blob).unwrap())?;
            pull(&mut fetcher, &work.join("l"), &opts, None)
        });
        assert_eq!(e.kind(), composefs_storage::ErrorKind::Verification, "{case}: {e}");
        let msg = e.to_string();
        assert!(msg.contains(&format!("{name:?}")) && msg.contains("checksum mismatch"), "{case}: {e}");
        assert_eq!(std::fs::read_dir(&work).unwrap().count(), 0, "{case}: something left in the work dir");
        std::fs::remove_dir(&work).unwrap();
    }
}

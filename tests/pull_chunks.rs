//! Chunk-level reuse in a partial pull (SPEC §8): a file missing by full digest is assembled from
//! chunks found (and verified) in a source layer, `zeros` chunks become holes, and only the other
//! chunks are fetched. Both blobs come from our zstd:chunked writer.

mod support;
use support::noise;

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use composefs_storage::chunked::writer::{compress, CompressOptions, CompressResult};
use composefs_storage::layer::pull::{pull, FileFetcher, PullOptions, PullResult};
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

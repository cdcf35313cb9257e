//! Input formats: a layer blob (plain tar, gzip or zstd, detected by magic bytes: SPEC §3.2) turned
//! into one uncompressed tar stream, and a streaming tar reader over it.
//!
//! [`LayerStream`] decompresses on a helper thread that also hashes the compressed bytes (the
//! compressed digest). The uncompressed bytes (the DiffID) are hashed either there too
//! ([`LayerStream::with_worker_diff_id`], for a consumer whose own thread is the busy one), or on
//! the consumer's thread as it consumes them ([`LayerStream::new`]), where a file's content can be
//! hashed in the same pass ([`LayerStream::hash_ahead`], `chunked::sha256x2`): the content's
//! sha256 and the DiffID take the same blocks, so the two cost 1.37x one hash instead of 2x, and
//! the decompressing thread (the longer of the two for gzip) does not hash them at all. A plain
//! tar's compressed digest is its DiffID: it is hashed once.

mod channel;
pub mod crc64;
pub mod tar;

pub use channel::ChannelReader;

use std::io::{self, BufRead, BufReader, Read};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::chunked::sha256x2;
use crate::{Error, ErrorKind, Result};

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar stream.
    None,
    Gzip,
    /// zstd, including zstd:chunked read as a plain stream (its skippable frames are ignored).
    Zstd,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

/// Detects the compression from the first bytes of a blob (at least 6 when the blob has them).
/// bzip2 and xz are recognised and refused; anything else is taken as a plain tar and left to
/// the tar reader to validate.
pub fn detect(prefix: &[u8]) -> Result<Compression> {
    if prefix.starts_with(&[0x1f, 0x8b, 0x08]) {
        Ok(Compression::Gzip)
    } else if prefix.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || (prefix.len() >= 4 && prefix[0] & 0xf0 == 0x50 && prefix[1..4] == [0x2a, 0x4d, 0x18])
    {
        Ok(Compression::Zstd)
    } else if prefix.starts_with(b"BZh") {
        Err(Error::unsupported("layer blob is bzip2-compressed; only plain tar, gzip and zstd are supported"))
    } else if prefix.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Err(Error::unsupported("layer blob is xz-compressed; only plain tar, gzip and zstd are supported"))
    } else {
        Ok(Compression::None)
    }
}

/// Digests and sizes of a fully read layer blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamDigests {
    pub compression: Compression,
    /// sha256 of the blob as given.
    pub compressed_digest: [u8; 32],
    pub compressed_size: u64,
    /// sha256 of the uncompressed tar stream (the DiffID).
    pub diff_id: [u8; 32],
    pub uncompressed_size: u64,
}

const CHUNK: usize = 256 * 1024;
/// Chunks in flight between the threads: bounds memory to about `(QUEUE + 2) * CHUNK`.
const QUEUE: usize = 16;
/// How long dropping a stream waits for its worker to stop (see `Drop`).
const WORKER_EXIT_WAIT: Duration = Duration::from_secs(2);

/// The uncompressed tar stream of a layer blob, read from any `Read` (a pipe works: nothing seeks).
pub struct LayerStream {
    rx: Receiver<io::Result<Vec<u8>>>,
    recycle: SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    /// The DiffID, when this thread computes it: of the bytes consumed, and of `cur` up to
    /// `hashed` (never behind `pos`; ahead of it after [`Self::hash_ahead`]).
    diff: Option<sha256x2::Sha256>,
    hashed: usize,
    eof: bool,
    worker: Option<JoinHandle<Result<StreamDigests>>>,
    /// Disconnects when the worker's function has returned (its input is closed by then).
    worker_done: Receiver<()>,
    result: Option<Result<StreamDigests>>,
}

impl LayerStream {
    /// Starts decompressing `input` on a helper thread; the DiffID is computed on the reading
    /// thread, with file contents' sha256 in the same pass where [`Self::hash_ahead`] is used.
    /// Reading the compression magic happens on the helper; a detection error surfaces from the
    /// first `read`.
    pub fn new(input: Box<dyn Read + Send>) -> Result<LayerStream> {
        Self::start(input, false)
    }

    /// As [`Self::new`], with the DiffID computed on the helper thread.
    pub fn with_worker_diff_id(input: Box<dyn Read + Send>) -> Result<LayerStream> {
        Self::start(input, true)
    }

    fn start(input: Box<dyn Read + Send>, worker_diff_id: bool) -> Result<LayerStream> {
        let (tx, rx) = sync_channel::<io::Result<Vec<u8>>>(QUEUE);
        let (recycle, recycled) = sync_channel::<Vec<u8>>(QUEUE + 2);
        let (done, worker_done) = sync_channel::<()>(0);
        let worker = std::thread::Builder::new()
            .name("cfs-decompress".into())
            .spawn(move || {
                let _done = done;
                decompress_worker(input, tx, recycled, worker_diff_id)
            })
            .map_err(|e| Error::io("spawn decompression thread", e))?;
        Ok(LayerStream {
            rx,
            recycle,
            cur: Vec::new(),
            pos: 0,
            diff: (!worker_diff_id).then(sha256x2::Sha256::new),
            hashed: 0,
            eof: false,
            worker: Some(worker),
            worker_done,
            result: None,
        })
    }

    /// Waits for the helper thread and returns the digests. Call after reading to EOF; the
    /// helper's own error (bad compression, read failure) is returned here too.
    pub fn finish(mut self) -> Result<StreamDigests> {
        if !self.eof {
            return Err(Error::new(ErrorKind::Internal, "LayerStream::finish before end of stream"));
        }
        self.join();
        let mut digests = self
            .result
            .take()
            .unwrap_or_else(|| Err(Error::new(ErrorKind::Internal, "decompression result taken twice")))?;
        let plain = digests.compression == Compression::None;
        match self.diff.take() {
            Some(diff) => {
                digests.diff_id = diff.finalize();
                // The same bytes, hashed here only.
                if plain {
                    digests.compressed_digest = digests.diff_id;
                }
            }
            // The same bytes, hashed by the worker once.
            None if plain => digests.diff_id = digests.compressed_digest,
            None => {}
        }
        Ok(digests)
    }

    /// Hashes the next `n` bytes (at most what [`BufRead::fill_buf`] gives) into `other` and into
    /// the DiffID in one pass, before they are consumed (consuming them then does not hash them
    /// again). `other` takes the same blocks as the DiffID where both hold partial blocks of the
    /// same length: a tar member's content, with `other` fresh, as members start on 512 bytes.
    pub fn hash_ahead(&mut self, n: usize, other: &mut sha256x2::Sha256) {
        let end = (self.pos + n).min(self.cur.len());
        match &mut self.diff {
            Some(diff) if self.hashed == self.pos => {
                sha256x2::update_both(diff, other, &self.cur[self.pos..end]);
            }
            Some(diff) => {
                // Some of it was hashed ahead already: `other` takes all of it, the DiffID the rest.
                other.update(&self.cur[self.pos..end]);
                diff.update(&self.cur[self.hashed.min(end)..end]);
            }
            None => other.update(&self.cur[self.pos..end]),
        }
        self.hashed = self.hashed.max(end);
    }

    fn join(&mut self) {
        if let Some(w) = self.worker.take() {
            self.result = Some(
                w.join().unwrap_or_else(|_| Err(Error::new(ErrorKind::Internal, "decompression thread panicked"))),
            );
        }
    }
}

impl Drop for LayerStream {
    fn drop(&mut self) {
        // Closing the receiver makes the worker's next send fail, so it stops on its own within
        // one chunk of work, and it is joined then: an error path must not leave a thread that
        // still holds the input (an fd the caller thinks closed). It is waited for a bounded
        // time only: it may be blocked reading a pipe whose writer stalls, and an error or a
        // cancellation must return promptly; such a worker ends at the pipe's next write or close.
        let (_, dead) = sync_channel(0);
        drop(std::mem::replace(&mut self.rx, dead));
        if let Some(w) = self.worker.take() {
            match self.worker_done.recv_timeout(WORKER_EXIT_WAIT) {
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = w.join();
                }
                _ => drop(w), // detached
            }
        }
    }
}

impl Read for LayerStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = buf.len().min(avail.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for LayerStream {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos == self.cur.len() {
            if self.eof {
                return Ok(&[]);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    let old = std::mem::replace(&mut self.cur, chunk);
                    self.pos = 0;
                    self.hashed = 0;
                    let _ = self.recycle.try_send(old);
                }
                Ok(Err(e)) => {
                    // The worker's last message: let it finish, so that its thread and the input
                    // are gone when the error surfaces (fuzzing saw the thread outlive the error).
                    // A later read finds the channel closed and returns the error again.
                    self.join();
                    return Err(e);
                }
                Err(_) => {
                    // The worker finished: either cleanly (end of stream) or with an error that
                    // `finish` reports; surface the error right away when there is one.
                    self.eof = true;
                    self.join();
                    if let Some(Err(e)) = &self.result {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string()));
                    }
                    return Ok(&[]);
                }
            }
        }
        Ok(&self.cur[self.pos..])
    }

    fn consume(&mut self, amt: usize) {
        let end = (self.pos + amt).min(self.cur.len());
        if end > self.hashed {
            if let Some(diff) = &mut self.diff {
                diff.update(&self.cur[self.hashed..end]);
            }
            self.hashed = end;
        }
        self.pos = end;
    }
}

/// Hashes (while `hashing`) and counts every byte read through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    hashing: bool,
    count: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.hashing {
            self.hasher.update(&buf[..n]);
        }
        self.count += n as u64;
        Ok(n)
    }
}

fn decompress_worker(
    input: Box<dyn Read + Send>,
    tx: SyncSender<io::Result<Vec<u8>>>,
    recycled: Receiver<Vec<u8>>,
    diff_id_here: bool,
) -> Result<StreamDigests> {
    let mut raw =
        BufReader::with_capacity(CHUNK, HashingReader { inner: input, hasher: Sha256::new(), hashing: true, count: 0 });
    let prefix = raw.fill_buf().map_err(|e| Error::io("read layer blob", e))?;
    let compression = detect(&prefix[..prefix.len().min(6)])?;
    // A plain tar's digest is its DiffID: hashed here when the DiffID is, else by the reader (see
    // `LayerStream::finish`).
    raw.get_mut().hashing = compression != Compression::None || diff_id_here;
    let mut diff = (diff_id_here && compression != Compression::None).then(Sha256::new);
    let mut usize_total = 0u64;
    let what = compression.as_str();
    {
        let mut decoder: Box<dyn Read + '_> = match compression {
            Compression::None => Box::new(&mut raw),
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(&mut raw)),
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::with_buffer(&mut raw).map_err(|e| Error::io("start zstd decoder", e))?,
            ),
        };
        loop {
            let mut buf = recycled.try_recv().unwrap_or_default();
            buf.resize(CHUNK, 0);
            let mut filled = 0;
            // Fill whole chunks: fewer channel hand-offs.
            while filled < CHUNK {
                match decoder.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        let msg = format!(
                            "decompressing {what} layer blob at uncompressed offset {}: {e}",
                            usize_total + filled as u64
                        );
                        let _ = tx.send(Err(io::Error::new(io::ErrorKind::InvalidData, msg.clone())));
                        return Err(Error::format(msg));
                    }
                }
            }
            if filled == 0 {
                break;
            }
            buf.truncate(filled);
            if let Some(diff) = &mut diff {
                diff.update(&buf);
            }
            usize_total += filled as u64;
            if tx.send(Ok(buf)).is_err() {
                return Err(Error::new(ErrorKind::Cancelled, "layer stream reader went away"));
            }
        }
    }
    // The compressed digest covers the whole blob, including anything after the last frame.
    let mut sink = [0u8; 8192];
    loop {
        match raw.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("read layer blob", e)),
        }
    }
    let inner = raw.into_inner();
    let compressed_digest: [u8; 32] = inner.hasher.finalize().into();
    Ok(StreamDigests {
        compression,
        compressed_digest,
        compressed_size: inner.count,
        // Else the reader's, or the compressed digest: see `LayerStream::finish`.
        diff_id: diff.map_or([0; 32], |d| d.finalize().into()),
        uncompressed_size: usize_total,
    })
}

/// sha256 of `len` bytes of `file` at `offset` (read with `pread`, 256 KiB at a time); a file
/// shorter than that is an `UnexpectedEof` error.
pub fn sha256_at(file: &std::fs::File, offset: u64, len: u64) -> io::Result<[u8; 32]> {
    use std::os::unix::fs::FileExt;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; (256 << 10).min(len as usize).max(1)];
    let mut done = 0u64;
    while done < len {
        let want = buf.len().min((len - done) as usize);
        match file.read_at(&mut buf[..want], offset + done)? {
            0 => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shorter than the range hashed")),
            n => {
                hasher.update(&buf[..n]);
                done += n as u64;
            }
        }
    }
    Ok(hasher.finalize().into())
}

/// The 32 bytes that 64 hex digits (either case) stand for; `None` for anything else. One table
/// lookup per digit: a rootfs's TOC and dump carry hundreds of thousands of digests.
pub fn unhex32(digits: &[u8]) -> Option<[u8; 32]> {
    const INVALID: u8 = 0xff;
    const TABLE: [u8; 256] = {
        let mut t = [INVALID; 256];
        let mut i = 0;
        while i < 10 {
            t[b'0' as usize + i] = i as u8;
            i += 1;
        }
        let mut i = 0;
        while i < 6 {
            t[b'a' as usize + i] = 10 + i as u8;
            t[b'A' as usize + i] = 10 + i as u8;
            i += 1;
        }
        t
    };
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let (hi, lo) = (TABLE[pair[0] as usize], TABLE[pair[1] as usize]);
        bad |= hi | lo;
        *o = (hi << 4) | (lo & 15);
    }
    // Valid digits are below 16; INVALID sets the high bits.
    (bad < 16).then_some(out)
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unhex32_is_the_inverse_of_hex_and_refuses_anything_else() {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i * 37 + 5) as u8);
        let h = hex(&bytes);
        assert_eq!(unhex32(h.as_bytes()), Some(bytes));
        assert_eq!(unhex32(h.to_uppercase().as_bytes()), Some(bytes));
        for bad in [b'g', b'/', b':', b'@', b'G', b' ', 0x80, 0xff] {
            for at in [0, 1, 63] {
                let mut d = h.clone().into_bytes();
                d[at] = bad;
                assert_eq!(unhex32(&d), None, "{:?} at {at}", bad as char);
            }
        }
        assert_eq!(unhex32(&h.as_bytes()[..62]), None);
        assert_eq!(unhex32(format!("{h}0").as_bytes()), None);
    }

    /// A reader that records when it is dropped (the input closed).
    struct Tracked(io::Cursor<Vec<u8>>, std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl Read for Tracked {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.0.read(buf)
        }
    }
    impl Drop for Tracked {
        fn drop(&mut self) {
            self.1.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn dropping_a_stream_midway_closes_its_input() {
        // Found by fuzzing (layer_convert): an error returned while the worker thread still
        // ran left the thread, and the input it owns, behind the call.
        let closed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let data = vec![7u8; 64 * CHUNK]; // more than the queue holds: the worker is mid-stream
        let mut s = LayerStream::new(Box::new(Tracked(io::Cursor::new(data), closed.clone()))).unwrap();
        let mut first = [0u8; 512];
        s.read_exact(&mut first).unwrap();
        drop(s);
        assert!(closed.load(std::sync::atomic::Ordering::SeqCst), "input still open after the stream was dropped");
    }

    fn run(blob: Vec<u8>) -> (Vec<u8>, Result<StreamDigests>) {
        run_with(blob, false)
    }

    fn run_with(blob: Vec<u8>, worker_diff_id: bool) -> (Vec<u8>, Result<StreamDigests>) {
        let input = Box::new(io::Cursor::new(blob));
        let mut s = match worker_diff_id {
            true => LayerStream::with_worker_diff_id(input),
            false => LayerStream::new(input),
        }
        .unwrap();
        let mut out = Vec::new();
        let r = s.read_to_end(&mut out);
        match r {
            Ok(_) => (out, s.finish()),
            Err(e) => (out, Err(Error::io("read", e))),
        }
    }

    #[test]
    fn detects_by_magic() {
        assert_eq!(detect(&[0x1f, 0x8b, 0x08, 0, 0, 0]).unwrap(), Compression::Gzip);
        assert_eq!(detect(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0]).unwrap(), Compression::Zstd);
        assert_eq!(detect(&[0x50, 0x2a, 0x4d, 0x18, 8, 0]).unwrap(), Compression::Zstd);
        assert_eq!(detect(b"usr/li").unwrap(), Compression::None);
        assert_eq!(detect(b"BZh91A").unwrap_err().kind(), ErrorKind::Unsupported);
        assert_eq!(detect(&[0xfd, b'7', b'z', b'X', b'Z', 0]).unwrap_err().kind(), ErrorKind::Unsupported);
    }

    #[test]
    fn all_three_give_the_same_tar_and_digests() {
        let Some(corpus) = crate::test_corpus() else { return };
        let dir = corpus.join("cstorage/noparents-ustar");
        let dir = dir.display();
        let tar = std::fs::read(format!("{dir}/noparents-ustar.tar")).unwrap();
        let want: [u8; 32] = Sha256::digest(&tar).into();
        for (ext, worker) in ["tar", "tar.gz", "tar.zst", "zstd-chunked"].iter().flat_map(|e| [(e, false), (e, true)]) {
            let blob = std::fs::read(format!("{dir}/noparents-ustar.{ext}")).unwrap();
            let (out, d) = run_with(blob.clone(), worker);
            let d = d.unwrap();
            assert_eq!(out, tar, "{ext}");
            assert_eq!(d.diff_id, want, "{ext}");
            assert_eq!(d.uncompressed_size, tar.len() as u64);
            assert_eq!(d.compressed_size, blob.len() as u64);
            assert_eq!(d.compressed_digest, <[u8; 32]>::from(Sha256::digest(&blob)));
        }
    }

    /// Bytes hashed ahead into a second state, consumed in pieces that cut across what was
    /// hashed ahead, or read without it: the DiffID, the compressed digest and the second
    /// state's sha256 are right with the DiffID on either thread, for each compression.
    #[test]
    fn bytes_hashed_ahead_count_once_for_the_diff_id() {
        let data: Vec<u8> = (0..3 * CHUNK + 777).map(|i| (i * 31 % 251) as u8 ^ (i >> 12) as u8).collect();
        let want: [u8; 32] = Sha256::digest(&data).into();
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            io::Write::write_all(&mut e, &data).unwrap();
            e.finish().unwrap()
        };
        let zst = zstd::encode_all(&data[..], 1).unwrap();
        for (what, blob) in [("none", data.clone()), ("gzip", gz), ("zstd", zst)] {
            for worker in [false, true] {
                let input = Box::new(io::Cursor::new(blob.clone()));
                let mut s =
                    if worker { LayerStream::with_worker_diff_id(input) } else { LayerStream::new(input) }.unwrap();
                let mut other = sha256x2::Sha256::new();
                let mut other_bytes = Vec::new();
                let mut read = Vec::new();
                let mut step = 0usize;
                loop {
                    let avail = s.fill_buf().unwrap().len();
                    if avail == 0 {
                        break;
                    }
                    step += 1;
                    let n = [512, 100_000, 1, 4096 * 3 + 5, avail][step % 5].min(avail);
                    match step % 3 {
                        0 => {
                            // Hashed ahead, then consumed in two parts.
                            s.hash_ahead(n, &mut other);
                            other_bytes.extend_from_slice(&s.fill_buf().unwrap()[..n]);
                            read.extend_from_slice(&s.fill_buf().unwrap()[..n]);
                            s.consume(n / 3);
                            s.consume(n - n / 3);
                        }
                        1 => {
                            // Hashed ahead twice over (the second time partly consumed already).
                            s.hash_ahead(n, &mut other);
                            other_bytes.extend_from_slice(&s.fill_buf().unwrap()[..n]);
                            read.extend_from_slice(&s.fill_buf().unwrap()[..n / 2]);
                            s.consume(n / 2);
                            let rest = s.fill_buf().unwrap().len().min(n);
                            s.hash_ahead(rest, &mut other);
                            other_bytes.extend_from_slice(&s.fill_buf().unwrap()[..rest]);
                            read.extend_from_slice(&s.fill_buf().unwrap()[..rest]);
                            s.consume(rest);
                        }
                        _ => {
                            let mut buf = vec![0u8; n];
                            s.read_exact(&mut buf).unwrap();
                            read.extend_from_slice(&buf);
                        }
                    }
                }
                assert_eq!(read, data, "{what}, DiffID on the worker: {worker}");
                assert_eq!(other.finalize(), <[u8; 32]>::from(Sha256::digest(&other_bytes)), "{what} {worker}");
                let d = s.finish().unwrap();
                assert_eq!(d.diff_id, want, "{what}, DiffID on the worker: {worker}");
                assert_eq!(d.compressed_digest, <[u8; 32]>::from(Sha256::digest(&blob)), "{what} {worker}");
                assert_eq!((d.uncompressed_size, d.compressed_size), (data.len() as u64, blob.len() as u64));
            }
        }
    }

    #[test]
    fn corrupt_compression_is_an_error() {
        let mut blob = vec![0x28, 0xb5, 0x2f, 0xfd];
        blob.extend_from_slice(&[0xff; 64]);
        let (_, r) = run(blob);
        let e = r.unwrap_err();
        assert!(e.to_string().contains("zstd"), "{e}");
        let mut gz = vec![0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 3];
        gz.extend_from_slice(&[0xff; 16]);
        assert!(run(gz).1.is_err());
    }
}

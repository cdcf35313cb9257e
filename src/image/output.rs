//! Writing an image to a file: atomically (temp file + rename, nothing left behind on error)
//! and with its fs-verity digest computed on the way.

use std::io::Write;
use std::path::Path;

use super::fsverity::FsVerityHasher;
use super::{Tree, WriteOptions};
use crate::{Error, Result};

/// A writer that also computes the fs-verity digest of everything written through it.
pub struct VerityWriter<W: Write> {
    inner: W,
    hasher: FsVerityHasher,
}

impl<W: Write> VerityWriter<W> {
    pub fn new(inner: W) -> Self {
        VerityWriter { inner, hasher: FsVerityHasher::new() }
    }

    /// The digest of what was written, and the inner writer.
    pub fn finish(self) -> ([u8; 32], W) {
        (self.hasher.finish(), self.inner)
    }
}

impl<W: Write> Write for VerityWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Bytes handed to the hashing and writing thread at a time, and how many may wait for it.
const CHUNK: usize = 256 << 10;
const CHUNKS_IN_FLIGHT: usize = 2;

/// Writes the image of `tree` to `out` and returns the image's fs-verity digest.
///
/// The digest and the writes to `out` are done on a second thread, fed a chunk at a time (at
/// most `CHUNKS_IN_FLIGHT + 3` chunks exist), so that they overlap the encoding: they were a fifth
/// of the time of a large image. An error of `out` is the one returned.
pub fn write_image_with_digest(tree: &Tree, options: &WriteOptions, out: &mut (impl Write + Send)) -> Result<[u8; 32]> {
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(CHUNKS_IN_FLIGHT);
    let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::scope(|s| {
        let worker = s.spawn(move || -> std::io::Result<[u8; 32]> {
            let mut w = VerityWriter::new(out);
            // On an error this returns, and the encoder's next send fails.
            for mut chunk in full_rx {
                w.write_all(&chunk)?;
                chunk.clear();
                let _ = empty_tx.send(chunk);
            }
            w.flush()?;
            Ok(w.finish().0)
        });
        let mut chunks = ChunkSender { buf: Vec::with_capacity(CHUNK), full: full_tx, empty: empty_rx };
        // The chunks are the buffer: no BufWriter in front of them.
        let encoded = super::erofs::write_image_unbuffered(tree, options, &mut chunks);
        drop(chunks); // ends the worker's loop
        match (encoded, worker.join()) {
            (_, Err(panic)) => std::panic::resume_unwind(panic),
            (_, Ok(Err(e))) => Err(Error::io("writing composefs image", e)),
            (Err(e), Ok(Ok(_))) => Err(e),
            (Ok(()), Ok(Ok(digest))) => Ok(digest),
        }
    })
}

/// The encoder's side of [`write_image_with_digest`]: fills chunks and sends them, reusing the
/// ones the worker is done with.
struct ChunkSender {
    buf: Vec<u8>,
    full: std::sync::mpsc::SyncSender<Vec<u8>>,
    empty: std::sync::mpsc::Receiver<Vec<u8>>,
}

impl ChunkSender {
    fn send(&mut self) -> std::io::Result<()> {
        let next = self.empty.try_recv().unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        let full = std::mem::replace(&mut self.buf, next);
        self.full
            .send(full)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the image writing thread stopped"))
    }
}

impl Write for ChunkSender {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = bytes.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&bytes[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.send()
    }
}

/// Writes the image of `tree` to `path`, replacing it atomically: the image goes to a temporary
/// file in the same directory, which is renamed over `path` only once complete (and removed on
/// any error). Returns the image's fs-verity digest.
pub fn write_image_file(tree: &Tree, options: &WriteOptions, path: &Path) -> Result<[u8; 32]> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name =
        path.file_name().ok_or_else(|| Error::invalid_argument(format!("{}: not a file path", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    // Unique per process and per call, so concurrent writers of one path never collide.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tmp_name.push(format!(".tmp-{}-{seq}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| Error::io(format!("create {}", tmp.display()), e))?;
    let result = (|| {
        let mut file = &file;
        let digest = write_image_with_digest(tree, options, &mut file)
            .map_err(|e| e.context(format!("writing {}", path.display())))?;
        std::fs::rename(&tmp, path)
            .map_err(|e| Error::io(format!("rename {} to {}", tmp.display(), path.display()), e))?;
        Ok(digest)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

//! Writing an image to a file: atomically (temp file + rename, nothing left behind on error)
//! and with its fs-verity digest computed on the way.

use std::io::Write;
use std::path::Path;

use super::fsverity::FsVerityHasher;
use super::{write_image, Tree, WriteOptions};
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

/// Writes the image of `tree` to `out` and returns the image's fs-verity digest.
pub fn write_image_with_digest(tree: &Tree, options: &WriteOptions, out: &mut impl Write) -> Result<[u8; 32]> {
    let mut w = VerityWriter::new(out);
    write_image(tree, options, &mut w)?;
    Ok(w.finish().0)
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

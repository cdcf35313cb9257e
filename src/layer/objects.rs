//! The flat object store of one layer being built (`diff/ab/cdef…`, SPEC §2.2): each distinct
//! content once, mode 0000, no xattrs, named only by its sha256 (never by a tar name).
//! Objects come from this layer's stream, or are reused from caller-given source layers by
//! hardlink, or reflink falling back to copy (§7.3).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{linkat, mkdirat, openat, renameat, statat, unlinkat, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::sources::SourceLayers;
use super::tree_builder::object_path;
use super::verity::Verity;
use crate::chunked::cache::{digest_key, CacheKey};
use crate::error::ResultExt;
use crate::{Error, ErrorKind, Result};

/// sha256 of empty content: every layer with an empty regular file has this object.
pub const EMPTY_SHA256: [u8; 32] = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24, 0x27, 0xae, 0x41,
    0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// Counters of what the store did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ObjectStats {
    /// Distinct objects in `diff/`.
    pub objects: u64,
    /// Objects taken from source layers.
    pub objects_reused: u64,
    /// Content bytes written into new objects.
    pub bytes_written: u64,
    /// Content bytes of objects taken from source layers.
    pub bytes_reused: u64,
    /// Regular files whose content was already in this layer.
    pub dedup_hits: u64,
}

/// Takes objects from source layers into a staging `diff/`, by hardlink or by reflink/copy. Owns
/// its handles, so a pull can link on one thread while it fetches on another.
pub struct Linker {
    diff: OwnedFd,
    sources: Arc<SourceLayers>,
    hardlinks: bool,
}

impl Linker {
    fn try_clone(&self) -> Result<Linker> {
        let diff = self.diff.try_clone().map_err(|e| Error::io("duplicate the objects dir fd", e))?;
        Ok(Linker { diff, sources: self.sources.clone(), hardlinks: self.hardlinks })
    }

    /// Makes the `xx/` directory of `digest` (an existing one is fine).
    pub fn ensure_prefix(&self, digest: &[u8; 32]) -> Result<()> {
        let name = format!("{:02x}", digest[0]);
        match mkdirat(&self.diff, name.as_str(), Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => Ok(()),
            Err(e) => Err(Error::io(format_args!("mkdir objects dir {name}"), e.into())),
        }
    }

    /// Takes an object from where [`ObjectStore::locate`] found it into `diff/` (its prefix
    /// directory made first). False when it has gone from there meanwhile.
    pub fn take_located(&self, at: &Located, size: u64) -> Result<bool> {
        self.take(at.source, &at.object, size)
    }

    /// Takes `path` from source `i` (where [`ObjectStore::locate`] found it) into `diff/`.
    /// False when it has gone from there meanwhile.
    fn take(&self, i: usize, path: &str, size: u64) -> Result<bool> {
        let src = self.sources.get(i);
        let src_diff = src.diff()?;
        if self.hardlinks {
            match linkat(src_diff, path, &self.diff, path, AtFlags::empty()) {
                Ok(()) => return Ok(true),
                Err(Errno::NOENT) => return Ok(false),
                // Another filesystem, link limits, protected hardlinks: copy instead.
                Err(Errno::XDEV) | Err(Errno::MLINK) | Err(Errno::PERM) | Err(Errno::ACCESS) => {}
                Err(e) => {
                    return Err(Error::io(format_args!("hardlink object {path} from {}", src.path.display()), e.into()))
                }
            }
        }
        let src_fd = match openat(src_diff, path, OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(false),
            Err(e) => return Err(Error::io(format_args!("open {}/{path}", src.path.display()), e.into())),
        };
        let dst_fd = create_object(&self.diff, path)?;
        if rustix::fs::ioctl_ficlone(&dst_fd, &src_fd).is_err() {
            let mut from = File::from(src_fd);
            let mut to = File::from(dst_fd);
            // std::io::copy uses copy_file_range between files, then read/write.
            let n = std::io::copy(&mut from, &mut to)
                .map_err(|e| Error::io(format_args!("copy object {path} from {}", src.path.display()), e))?;
            if n != size {
                return Err(Error::new(
                    ErrorKind::Io,
                    format!("copy object {path}: source changed size while copying ({n} of {size} bytes)"),
                ));
            }
        }
        Ok(true)
    }
}

/// Creates object `name` in `diff`: mode 0000 and O_EXCL, as containers/storage creates flat
/// objects (§2.2).
fn create_object(diff: &OwnedFd, name: &str) -> Result<OwnedFd> {
    openat(
        diff,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::TRUNC | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )
    .map_err(|e| Error::io(format_args!("create object {name}"), e.into()))
}

/// Names an object in errors; formatted only when one is reported (a conversion stores thousands).
struct ObjectName<'a> {
    diff: &'a Path,
    path: &'a str,
}

impl std::fmt::Display for ObjectName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "object {}/{}", self.diff.display(), self.path)
    }
}

/// Where [`ObjectStore::locate`] found an object.
#[derive(Debug, Clone)]
pub struct Located {
    source: usize,
    /// The object path (`ab/cdef…`).
    object: String,
}

impl Located {
    /// The position of the source layer that holds it (in [`SourceLayers`]).
    pub fn source(&self) -> usize {
        self.source
    }
}

/// Writes objects into a staging `diff/` directory.
pub struct ObjectStore {
    diff: OwnedFd,
    diff_path: PathBuf,
    /// Takes objects from the source layers (which it holds).
    linker: Linker,
    verity: Verity,
    prefixes: [bool; 256],
    /// Content sha256 → fs-verity digest (if any) of every object in this layer.
    objects: HashMap<[u8; 32], Option<[u8; 32]>>,
    pub stats: ObjectStats,
}

/// An object being streamed to a temporary file (for contents too large to buffer).
pub struct TempObject {
    file: File,
    name: String,
    /// Logical size written so far (holes included).
    pos: u64,
    /// Where the last write ended: the file holds the content up to here (a hole after it is
    /// only made at [`TempObject::finish`]).
    written: u64,
}

/// Block size for holes: whole aligned blocks of zeros are skipped, not written (SPEC §8: zeros
/// chunks become holes), so sparse content stays sparse on disk. The content is the same.
const HOLE_BLOCK: u64 = 4096;

/// Creates temporary objects in `diff/` from another thread than the store's.
pub struct TempFactory {
    diff: OwnedFd,
    diff_path: PathBuf,
    /// Names are `{prefix}{seq}`: one prefix per factory that shares the directory.
    prefix: String,
    seq: u64,
}

impl TempFactory {
    pub fn new(diff_path: &Path) -> Result<TempFactory> {
        TempFactory::with_prefix(diff_path, ".tmp-")
    }

    /// A factory whose names cannot collide with those of others with other prefixes (each
    /// starting with `.tmp-`).
    pub fn with_prefix(diff_path: &Path, prefix: &str) -> Result<TempFactory> {
        let diff =
            openat(rustix::fs::CWD, diff_path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
                .map_err(|e| Error::io(format_args!("open {}", diff_path.display()), e.into()))?;
        Ok(TempFactory { diff, diff_path: diff_path.to_path_buf(), prefix: prefix.to_string(), seq: 0 })
    }

    /// A new, empty temporary object file (mode 0000), open for reading too (see
    /// [`TempObject::reader`]).
    pub fn begin(&mut self) -> Result<TempObject> {
        self.seq += 1;
        let name = format!("{}{}", self.prefix, self.seq);
        let fd = openat(
            &self.diff,
            name.as_str(),
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::TRUNC | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|e| Error::io(format_args!("create {}/{name}", self.diff_path.display()), e.into()))?;
        Ok(TempObject { file: File::from(fd), name, pos: 0, written: 0 })
    }

    /// Removes a temporary object (on error paths).
    pub fn abort(&self, tmp: TempObject) {
        let TempObject { file, name, .. } = tmp;
        drop(file);
        let _ = unlinkat(&self.diff, name.as_str(), AtFlags::empty());
    }
}

impl TempObject {
    /// Another handle on the file, for another thread to read what is written so far with
    /// `pread` (the file offset it shares is this one's to move).
    pub fn reader(&self) -> Result<File> {
        self.file.try_clone().map_err(|e| Error::io(format_args!("reopen object temp file {}", self.name), e))
    }

    /// How much of the content the file holds so far (a trailing hole is not made yet).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends `data`, leaving a hole for each whole, aligned block of zeros.
    pub fn write_all(&mut self, mut data: &[u8]) -> Result<()> {
        use std::io::{Seek, SeekFrom};
        let err = |e| Error::io(format_args!("write object temp file {}", self.name), e);
        while !data.is_empty() {
            let to_boundary = (HOLE_BLOCK - self.pos % HOLE_BLOCK) as usize;
            if to_boundary == HOLE_BLOCK as usize
                && data.len() >= to_boundary
                && data[..to_boundary].iter().all(|&b| b == 0)
            {
                self.file.seek(SeekFrom::Current(HOLE_BLOCK as i64)).map_err(err)?;
                data = &data[to_boundary..];
                self.pos += HOLE_BLOCK;
                continue;
            }
            // Write up to the next block boundary at least, and on through non-zero blocks.
            let mut n = to_boundary.min(data.len());
            while n < data.len() {
                let end = (n + HOLE_BLOCK as usize).min(data.len());
                if end - n == HOLE_BLOCK as usize && data[n..end].iter().all(|&b| b == 0) {
                    break;
                }
                n = end;
            }
            self.file.write_all(&data[..n]).map_err(err)?;
            data = &data[n..];
            self.pos += n as u64;
            self.written = self.pos;
        }
        Ok(())
    }

    /// Gives the file its full size when it ends in a hole.
    fn finish(&mut self) -> Result<()> {
        self.file
            .set_len(self.pos)
            .map_err(|e| Error::io(format_args!("set size of object temp file {}", self.name), e))
    }
}

impl ObjectStore {
    /// `diff` is the (empty) staging object directory; `sources` are other layers whose `diff/`
    /// objects may be reused.
    pub fn new(diff_path: &Path, sources: SourceLayers, hardlinks: bool, verity: Verity) -> Result<ObjectStore> {
        let diff =
            openat(rustix::fs::CWD, diff_path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
                .map_err(|e| Error::io(format_args!("open {}", diff_path.display()), e.into()))?;
        let linker = Linker {
            diff: diff.try_clone().map_err(|e| Error::io("duplicate the objects dir fd", e))?,
            sources: Arc::new(sources),
            hardlinks,
        };
        Ok(ObjectStore {
            diff,
            diff_path: diff_path.to_path_buf(),
            linker,
            verity,
            prefixes: [false; 256],
            objects: HashMap::new(),
            stats: ObjectStats::default(),
        })
    }

    /// Whether this layer already has the object; its fs-verity digest if so.
    pub fn get(&self, digest: &[u8; 32]) -> Option<Option<[u8; 32]>> {
        self.objects.get(digest).copied()
    }

    /// fs-verity digests by object path, for the result.
    pub fn verity_digests(&self) -> BTreeMap<String, [u8; 32]> {
        self.objects.iter().filter_map(|(d, v)| v.map(|v| (object_path(d), v))).collect()
    }

    fn ensure_prefix(&mut self, digest: &[u8; 32]) -> Result<()> {
        let p = digest[0] as usize;
        if !self.prefixes[p] {
            let name = format!("{:02x}", digest[0]);
            match mkdirat(&self.diff, name.as_str(), Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(Error::io(format_args!("mkdir {}/{name}", self.diff_path.display()), e.into())),
            }
            self.prefixes[p] = true;
        }
        Ok(())
    }

    /// Stores content held in memory (already hashed to `digest`). Returns its fs-verity digest.
    pub fn put_bytes(&mut self, digest: &[u8; 32], data: &[u8]) -> Result<Option<[u8; 32]>> {
        if let Some(v) = self.get(digest) {
            self.stats.dedup_hits += 1;
            return Ok(v);
        }
        self.ensure_prefix(digest)?;
        let path = object_path(digest);
        if !self.try_reuse(digest, &path, data.len() as u64)? {
            let fd = self.create(&path)?;
            let mut f = File::from(fd);
            f.write_all(data).map_err(|e| Error::io(format_args!("write object {path}"), e))?;
            drop(f);
            self.stats.bytes_written += data.len() as u64;
        }
        self.finish_object(digest, &path, data.len() as u64)
    }

    /// Takes the object with content `digest` (of `size` bytes) from this layer or a source layer,
    /// without any content at hand. `None` when nobody has it: the caller must fetch it.
    pub fn reuse(&mut self, digest: &[u8; 32], size: u64) -> Result<Option<Option<[u8; 32]>>> {
        if let Some(v) = self.get(digest) {
            self.stats.dedup_hits += 1;
            return Ok(Some(v));
        }
        self.ensure_prefix(digest)?;
        let path = object_path(digest);
        if !self.try_reuse(digest, &path, size)? {
            return Ok(None);
        }
        self.finish_object(digest, &path, size).map(Some)
    }

    /// Completes a temporary object as `digest` (or drops it when the layer or a source layer
    /// already has that content).
    pub fn commit_temp(&mut self, mut tmp: TempObject, digest: &[u8; 32], size: u64) -> Result<Option<[u8; 32]>> {
        tmp.finish()?;
        let TempObject { file, name, .. } = tmp;
        drop(file);
        if let Some(v) = self.get(digest) {
            self.unlink(&name)?;
            self.stats.dedup_hits += 1;
            return Ok(v);
        }
        self.ensure_prefix(digest)?;
        let path = object_path(digest);
        if self.try_reuse(digest, &path, size)? {
            self.unlink(&name)?;
        } else {
            renameat(&self.diff, name.as_str(), &self.diff, path.as_str())
                .map_err(|e| Error::io(format_args!("rename object into place as {path}"), e.into()))?;
            self.stats.bytes_written += size;
        }
        self.finish_object(digest, &path, size)
    }

    fn unlink(&self, name: &str) -> Result<()> {
        unlinkat(&self.diff, name, AtFlags::empty())
            .map_err(|e| Error::io(format_args!("unlink {}/{name}", self.diff_path.display()), e.into()))
    }

    fn create(&self, name: &str) -> Result<OwnedFd> {
        create_object(&self.diff, name).with_context(|| self.diff_path.display().to_string())
    }

    fn finish_object(&mut self, digest: &[u8; 32], path: &str, size: u64) -> Result<Option<[u8; 32]>> {
        // No digest for empty objects (as c/storage: §6.3); they are never redirected anyway.
        let v = if size == 0 {
            None
        } else {
            let what = ObjectName { diff: &self.diff_path, path };
            self.verity.apply(self.diff.as_fd(), path, &what)?
        };
        self.objects.insert(*digest, v);
        self.stats.objects += 1;
        Ok(v)
    }

    /// Takes `path` from a source layer, by hardlink or by reflink/copy. False when none has it.
    fn try_reuse(&mut self, digest: &[u8; 32], path: &str, size: u64) -> Result<bool> {
        let key = CacheKey::new(digest_key(digest));
        for i in self.linker.sources.candidates(&key) {
            if self.source_holds(i, &key, digest, path, size)? && self.take_from(i, path, size)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether source `i` has the object `path` (content `digest`, `key`) of `size` bytes (its
    /// cache or listing, then a stat).
    fn source_holds(&self, i: usize, key: &CacheKey, digest: &[u8; 32], path: &str, size: u64) -> Result<bool> {
        let src = self.linker.sources.get(i);
        if !src.may_hold(key, digest) {
            return Ok(false); // The stat below confirms a hit.
        }
        let st = match statat(src.diff()?, path, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) | Err(Errno::NOTDIR) => return Ok(false),
            Err(e) => return Err(Error::io(format_args!("stat {}/{path}", src.path.display()), e.into())),
        };
        Ok(FileType::from_raw_mode(st.st_mode) == FileType::RegularFile && st.st_size as u64 == size)
    }

    /// Takes `path` (checked by [`Self::source_holds`]) from source `i`. False when it has gone
    /// meanwhile.
    fn take_from(&mut self, i: usize, path: &str, size: u64) -> Result<bool> {
        let took = self.linker.take(i, path, size)?;
        if took {
            self.count_reuse(size);
        }
        Ok(took)
    }

    /// The source layers, for another thread (to read located objects where they are).
    pub fn sources(&self) -> Arc<SourceLayers> {
        self.linker.sources.clone()
    }

    /// A [`Linker`] into this store's `diff/`, for another thread.
    pub fn linker(&self) -> Result<Linker> {
        self.linker.try_clone()
    }

    /// Records an object a [`Linker`] took into `diff/` (`path` = its object path).
    pub fn adopt(&mut self, digest: &[u8; 32], size: u64) -> Result<Option<[u8; 32]>> {
        self.count_reuse(size);
        let p = self.ensure_prefix(digest).map(|_| object_path(digest))?;
        self.finish_object(digest, &p, size)
    }

    /// A source layer holding the object with content `digest` of `size` bytes, if one has it
    /// (what [`Self::reuse`] would take, without taking it yet): [`Self::reuse_located`] takes it.
    pub fn locate(&self, digest: &[u8; 32], size: u64) -> Option<Located> {
        let key = CacheKey::new(digest_key(digest));
        let path = object_path(digest);
        let source = self.linker.sources.candidates(&key).into_iter().find(|&i| {
            // An error here (a source dir that cannot be read) only means "not there".
            self.source_holds(i, &key, digest, &path, size).unwrap_or(false)
        })?;
        Some(Located { source, object: path })
    }

    /// [`Self::reuse`] of an object [`Self::locate`] found, without looking for it again; if it
    /// has gone from that layer meanwhile, the other layers are asked as by [`Self::reuse`].
    pub fn reuse_located(&mut self, digest: &[u8; 32], size: u64, at: &Located) -> Result<Option<Option<[u8; 32]>>> {
        if let Some(v) = self.get(digest) {
            self.stats.dedup_hits += 1;
            return Ok(Some(v));
        }
        self.ensure_prefix(digest)?;
        let path = object_path(digest);
        if !self.take_from(at.source, &path, size)? && !self.try_reuse(digest, &path, size)? {
            return Ok(None);
        }
        self.finish_object(digest, &path, size).map(Some)
    }

    /// A source layer file that its layers cache says holds a chunk with `chunk_digest` of `size`
    /// bytes, and the chunk's offset in it (SPEC §8). Unverified: the caller checks the data.
    pub fn find_chunk(&self, chunk_digest: &[u8; 32], size: u64) -> Option<(File, u64)> {
        let key = CacheKey::new(digest_key(chunk_digest));
        self.linker.sources.candidates(&key).into_iter().map(|i| self.linker.sources.get(i)).find_map(|src| {
            let hit = src.cache()?.lookup(&key).ok()??;
            if hit.length != size {
                return None;
            }
            let path = std::str::from_utf8(&hit.path).ok()?;
            let fd = openat(src.diff().ok()?, path, OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW, Mode::empty())
                .ok()?;
            Some((File::from(fd), hit.offset))
        })
    }

    fn count_reuse(&mut self, size: u64) {
        self.stats.objects_reused += 1;
        self.stats.bytes_reused += size;
    }
}

#[cfg(test)]
mod located_tests {
    use super::*;
    use crate::layer::verity::VerityPolicy;
    use sha2::{Digest, Sha256};

    fn layer_with(dir: &Path, content: &[u8]) -> [u8; 32] {
        let d: [u8; 32] = Sha256::digest(content).into();
        let p = dir.join("diff").join(object_path(&d));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
        d
    }

    #[test]
    fn a_located_object_that_goes_away_is_asked_for_again_or_reported_missing() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        let d = layer_with(&a, b"content");
        layer_with(&b, b"content");
        let dest = tmp.path().join("dest");
        std::fs::create_dir_all(&dest).unwrap();
        let sources = SourceLayers::open(&[a.clone(), b.clone()], None).unwrap();
        let mut store = ObjectStore::new(&dest, sources, true, Verity::new(VerityPolicy::Off)).unwrap();
        let at = store.locate(&d, 7).expect("in layer a");
        assert_eq!(at.source(), 0);
        let located_path = a.join("diff").join(object_path(&d));
        assert!(store.locate(&d, 8).is_none(), "a size mismatch is no hit");

        // Gone from a after it was located: the linker says so, and reuse finds b's copy.
        std::fs::remove_file(located_path).unwrap();
        let linker = store.linker().unwrap();
        linker.ensure_prefix(&d).unwrap();
        assert!(!linker.take_located(&at, 7).unwrap());
        assert!(store.reuse_located(&d, 7, &at).unwrap().is_some());
        assert_eq!(std::fs::read(dest.join(object_path(&d))).unwrap(), b"content");
        assert_eq!((store.stats.objects, store.stats.objects_reused), (1, 1));

        // Gone everywhere: nothing to reuse, the caller fetches it.
        let e = layer_with(&a, b"other");
        let at = store.locate(&e, 5).unwrap();
        std::fs::remove_file(a.join("diff").join(object_path(&e))).unwrap();
        assert!(store.reuse_located(&e, 5, &at).unwrap().is_none());
    }
}

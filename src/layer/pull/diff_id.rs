//! The DiffID of a pulled layer: sha256 of the tar its tar-split describes, each member's content
//! read as soon as it is in the layer. It runs on its own thread, trailing the fetch.
//!
//! A member's content is read from where it is at that moment: from memory when the thread that
//! verified it offered it (small files, up to [`HELD_MAX`] bytes held at once: no object is opened
//! and read back), else from its object in the staging `diff/`, or from the source layer it is
//! about to be taken from.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Cursor, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

use rustix::fs::{Mode, OFlags};

use crate::chunked::tarsplit::reassemble;
use crate::layer::sources::SourceLayers;
use crate::layer::tree_builder::object_path;
use crate::{Error, ErrorKind, Result};

/// Bytes of offered contents held for the DiffID thread at most; beyond, it reads objects back.
const HELD_MAX: usize = 2 << 20;

/// Where the DiffID thread, which trails the pull, can read each content so far.
#[derive(Default)]
pub struct Ready {
    state: Mutex<State>,
    cv: Condvar,
}

#[derive(Default)]
struct State {
    /// In the staging `diff/` (`None`), or for now in the source layer (by position) it will be
    /// taken from (`Some`).
    at: HashMap<[u8; 32], Option<usize>>,
    /// Contents held in memory, with the number of tar members still to read them.
    held: HashMap<[u8; 32], (Arc<[u8]>, u32)>,
    held_bytes: usize,
    /// How many tar members have each content (set once, before anything is offered).
    uses: HashMap<[u8; 32], u32>,
    /// Nothing more will arrive (all objects are in, or the pull failed).
    closed: bool,
}

/// Where one member's content is to be read.
enum Source {
    Held(Arc<[u8]>),
    Staged,
    Layer(usize),
}

impl Ready {
    /// How many tar members have each content: what is offered is held until they are all read.
    pub fn set_uses(&self, uses: HashMap<[u8; 32], u32>) {
        if let Ok(mut s) = self.state.lock() {
            s.uses = uses;
        }
    }

    /// The content `digest` (verified) in memory, before its object is written: held for the
    /// DiffID thread if there is room.
    pub fn offer(&self, digest: &[u8; 32], data: &[u8]) {
        if let Ok(mut s) = self.state.lock() {
            let uses = s.uses.get(digest).copied().unwrap_or(0);
            if uses == 0 || s.held_bytes + data.len() > HELD_MAX || s.held.contains_key(digest) {
                return;
            }
            s.held_bytes += data.len();
            s.held.insert(*digest, (Arc::from(data), uses));
        }
        self.cv.notify_all();
    }

    /// These contents are in the staging `diff/`.
    pub fn add_all(&self, digests: impl Iterator<Item = [u8; 32]>) {
        if let Ok(mut s) = self.state.lock() {
            for d in digests {
                s.at.insert(d, None);
            }
        }
        self.cv.notify_all();
    }

    /// The content is in the staging `diff/`.
    pub fn add(&self, digest: [u8; 32]) {
        self.add_all(std::iter::once(digest));
    }

    /// These contents are in these source layers until they are taken.
    pub fn add_sources(&self, found: impl Iterator<Item = ([u8; 32], usize)>) {
        if let Ok(mut s) = self.state.lock() {
            for (digest, source) in found {
                s.at.entry(digest).or_insert(Some(source));
            }
        }
        self.cv.notify_all();
    }

    /// Nothing more will arrive (all objects are in, or the pull failed).
    pub fn close(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.closed = true;
        }
        self.cv.notify_all();
    }

    /// Waits until `digest` can be read (in the staging `diff/` only, if `staged`).
    fn wait(&self, digest: &[u8; 32], staged: bool) -> Result<Source> {
        let poisoned = || Error::new(ErrorKind::Internal, "DiffID thread: lock poisoned");
        let mut s = self.state.lock().map_err(|_| poisoned())?;
        loop {
            if let Some((data, uses)) = s.held.get_mut(digest) {
                let data = data.clone();
                *uses -= 1;
                if *uses == 0 {
                    s.held.remove(digest);
                    s.held_bytes -= data.len();
                }
                return Ok(Source::Held(data));
            }
            match s.at.get(digest) {
                Some(None) => return Ok(Source::Staged),
                Some(Some(source)) if !staged => return Ok(Source::Layer(*source)),
                _ => {}
            }
            if s.closed {
                return Err(Error::format(format!(
                    "content sha256:{} that the tar-split needs is not in the layer (the TOC and the \
                     tar-split disagree, or the pull stopped)",
                    crate::source::hex(digest)
                )));
            }
            s = self.cv.wait(s).map_err(|_| poisoned())?;
        }
    }
}

/// The DiffID computation; dropping the job (on an error path) stops it.
pub struct DiffIdJob {
    ready: Arc<Ready>,
    handle: Option<std::thread::JoinHandle<Result<[u8; 32]>>>,
}

/// A member's content, from memory or from a file.
enum Content {
    Held(Cursor<Arc<[u8]>>),
    File(File),
}

impl Read for Content {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Content::Held(c) => c.read(buf),
            Content::File(f) => f.read(buf),
        }
    }
}

impl DiffIdJob {
    /// Starts computing the DiffID from `split` (the decoded tar-split), with the objects of
    /// `diff` (the staging `diff/`) and `sources`; `content_of_name` maps each regular file of
    /// the TOC to its content.
    pub fn spawn(
        split: &File,
        diff: &Path,
        sources: Arc<SourceLayers>,
        content_of_name: HashMap<String, [u8; 32]>,
        ready: Arc<Ready>,
    ) -> Result<DiffIdJob> {
        // A dup shares the file offset with the main thread's reads: read at our own offset.
        let split = PositionalReader { file: split.try_clone().map_err(|e| Error::io("reopen tar-split", e))?, pos: 0 };
        // Objects are opened relative to `diff/` (a path walk of two names, not of the whole path).
        let diff_fd = File::open(diff).map_err(|e| Error::io(format_args!("open {}", diff.display()), e))?;
        let diff = diff.to_path_buf();
        let r = ready.clone();
        let handle = std::thread::Builder::new()
            .name("cfs-diffid".into())
            .spawn(move || {
                let (id, _) = reassemble(
                    BufReader::with_capacity(256 << 10, split),
                    |name, _size| {
                        let name =
                            std::str::from_utf8(name).map_err(|_| Error::format("tar-split name is not UTF-8"))?;
                        let digest = content_of_name.get(name).ok_or_else(|| {
                            Error::format(format!(
                                "tar-split has content for {name:?}, which is no regular file in the TOC"
                            ))
                        })?;
                        let p = object_path(digest);
                        match r.wait(digest, false)? {
                            Source::Held(data) => return Ok(Content::Held(Cursor::new(data))),
                            Source::Layer(source) => {
                                // Relative to the source's open `diff/`: two names to walk, not a path.
                                if let Ok(Some(f)) = sources.get(source).open_object(&p) {
                                    return Ok(Content::File(f));
                                }
                                // Gone from the source layer: the pull fetches it instead.
                                if let Source::Held(data) = r.wait(digest, true)? {
                                    return Ok(Content::Held(Cursor::new(data)));
                                }
                            }
                            Source::Staged => {}
                        }
                        rustix::fs::openat(&diff_fd, p.as_str(), OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
                            .map(|fd| Content::File(File::from(fd)))
                            .map_err(|e| Error::io(format_args!("open {}/{p}", diff.display()), e.into()))
                    },
                    &mut std::io::sink(),
                )?;
                Ok(id)
            })
            .map_err(|e| Error::io("spawn DiffID thread", e))?;
        Ok(DiffIdJob { ready, handle: Some(handle) })
    }

    /// Waits for the DiffID, once every object is in.
    pub fn finish(mut self) -> Result<[u8; 32]> {
        self.ready.close();
        let handle = self.handle.take().ok_or_else(|| Error::new(ErrorKind::Internal, "DiffID joined twice"))?;
        handle.join().map_err(|_| Error::new(ErrorKind::Internal, "DiffID thread panicked"))?
    }
}

impl Drop for DiffIdJob {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            self.ready.close();
            let _ = h.join();
        }
    }
}

/// Reads a file from the start with `pread`, leaving the shared file offset alone.
struct PositionalReader {
    file: File,
    pos: u64,
}

impl Read for PositionalReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

//! The DiffID of a pulled layer: sha256 of the tar its tar-split describes, each member's content
//! read as soon as it is in the layer. It runs on its own thread, trailing the fetch.
//!
//! A member's content is read from where it is at that moment: from memory when the thread that
//! decompressed it offered it (small files, up to [`HELD_MAX`] bytes held at once: no object is
//! opened and read back), from the temporary file of a large one as it is written (following its
//! writer, so that a layer's last large files are hashed beside their decompression, not read
//! back after it), else from its object in the staging `diff/`, or from the source layer it is
//! about to be taken from.
//!
//! The contents that the decompression pool stored without checking their sha256 (all it
//! decompresses when this thread runs) are checked here, the first time each is read, hashed
//! beside the tar in one pass (`chunked::sha256x2`) instead of once more on the pool's threads.
//! A mismatch fails the pull, naming the file, and the staging dir with the object goes with it:
//! nothing is published before this thread has read every member.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, Cursor, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

use rustix::fs::{Mode, OFlags};

use crate::chunked::tarsplit::reassemble_checked;
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
    /// Large contents being written to a temporary file: a handle on it, and how much of it is
    /// written so far. Gone once the object is in the staging `diff/`.
    growing: HashMap<[u8; 32], (Arc<File>, u64)>,
    /// How many tar members have each content (set once, before anything is offered).
    uses: HashMap<[u8; 32], u32>,
    /// Nothing more will arrive (all objects are in, or the pull failed).
    closed: bool,
    /// The content the DiffID thread is blocked on, and how much of it must be written if it is
    /// growing: only that wakes it (a wake is a syscall and a switch; waking it for each of
    /// thousands of small files, or each piece of a large one, cost more than the contents).
    waiting: Option<([u8; 32], u64)>,
}

/// How much more of a growing content the DiffID thread waits for before it reads on.
const GROWTH_STEP: u64 = 1 << 20;

impl State {
    fn awaited(&self, digest: &[u8; 32]) -> bool {
        self.waiting.as_ref().is_some_and(|(d, _)| d == digest)
    }
}

/// Where one member's content is to be read.
enum Source {
    Held(Arc<[u8]>),
    Growing(Arc<File>),
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
    /// DiffID thread if there is room. It is told of offers in batches: see [`Ready::publish`].
    pub fn offer(&self, digest: &[u8; 32], data: &[u8]) {
        if let Ok(mut s) = self.state.lock() {
            let uses = s.uses.get(digest).copied().unwrap_or(0);
            if uses == 0 || s.held_bytes + data.len() > HELD_MAX || s.held.contains_key(digest) {
                return;
            }
            s.held_bytes += data.len();
            s.held.insert(*digest, (Arc::from(data), uses));
        }
    }

    /// Wakes the DiffID thread if what it waits for was offered.
    pub fn publish(&self) {
        let wake = self.state.lock().is_ok_and(|s| s.waiting.is_some_and(|(d, _)| s.held.contains_key(&d)));
        if wake {
            self.cv.notify_all();
        }
    }

    /// The content `digest` is being written into `file` (a temporary object): the DiffID
    /// thread may read it as it grows (see [`Ready::grew`]). Without a handle on the file (out of
    /// descriptors), it reads the object once it is stored, as it did before.
    pub fn growing(&self, digest: &[u8; 32], file: impl FnOnce() -> Result<File>) {
        if let Ok(mut s) = self.state.lock() {
            if s.uses.get(digest).copied().unwrap_or(0) == 0 || s.growing.contains_key(digest) {
                return;
            }
            let Ok(file) = file() else { return };
            s.growing.insert(*digest, (Arc::new(file), 0));
            if !s.awaited(digest) {
                return;
            }
        }
        self.cv.notify_all();
    }

    /// The first `written` bytes of the growing content `digest` are in its file.
    pub fn grew(&self, digest: &[u8; 32], written: u64) {
        if let Ok(mut s) = self.state.lock() {
            match s.growing.get_mut(digest) {
                Some((_, w)) => *w = written,
                None => return,
            }
            if !s.waiting.is_some_and(|(d, need)| d == *digest && written >= need) {
                return;
            }
        }
        self.cv.notify_all();
    }

    /// These contents are in the staging `diff/`.
    pub fn add_all(&self, digests: impl Iterator<Item = [u8; 32]>) {
        let mut wake = false;
        if let Ok(mut s) = self.state.lock() {
            for d in digests {
                s.at.insert(d, None);
                // Its file is complete now: whoever reads it as it grew reads on to its end.
                s.growing.remove(&d);
                wake |= s.awaited(&d);
            }
        }
        if wake {
            self.cv.notify_all();
        }
    }

    /// The content is in the staging `diff/`.
    pub fn add(&self, digest: [u8; 32]) {
        self.add_all(std::iter::once(digest));
    }

    /// These contents are in these source layers until they are taken.
    pub fn add_sources(&self, found: impl Iterator<Item = ([u8; 32], usize)>) {
        let mut wake = false;
        if let Ok(mut s) = self.state.lock() {
            for (digest, source) in found {
                s.at.entry(digest).or_insert(Some(source));
                wake |= s.awaited(&digest);
            }
        }
        if wake {
            self.cv.notify_all();
        }
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
            if let Some((file, _)) = s.growing.get(digest) {
                return Ok(Source::Growing(file.clone()));
            }
            if s.closed {
                return Err(Error::format(format!(
                    "content sha256:{} that the tar-split needs is not in the layer (the TOC and the \
                     tar-split disagree, or the pull stopped)",
                    crate::source::hex(digest)
                )));
            }
            s.waiting = Some((*digest, 0));
            s = self.cv.wait(s).map_err(|_| poisoned())?;
            s.waiting = None;
        }
    }

    /// Waits until the growing content `digest` holds more than `pos` bytes; how many it holds
    /// (`u64::MAX` once it is complete). Blocked, it waits for [`GROWTH_STEP`] more bytes, or
    /// for the end of `size`.
    fn wait_growth(&self, digest: &[u8; 32], pos: u64, size: u64) -> std::io::Result<u64> {
        let stopped = || std::io::Error::other("the pull stopped while the file was written");
        let mut s = self.state.lock().map_err(|_| stopped())?;
        loop {
            match s.growing.get(digest) {
                Some((_, written)) if *written > pos => return Ok(*written),
                Some(_) if s.closed => return Err(stopped()),
                Some(_) => {}
                None => return Ok(u64::MAX),
            }
            s.waiting = Some((*digest, size.min(pos + GROWTH_STEP)));
            s = self.cv.wait(s).map_err(|_| stopped())?;
            s.waiting = None;
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
    /// A temporary object as it is written; `pos` is where to read next.
    Growing {
        ready: Arc<Ready>,
        digest: [u8; 32],
        file: Arc<File>,
        pos: u64,
        size: u64,
    },
}

impl Read for Content {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Content::Held(c) => c.read(buf),
            Content::File(f) => f.read(buf),
            Content::Growing { ready, digest, file, pos, size } => {
                let written = ready.wait_growth(digest, *pos, *size)?;
                let n = buf.len().min(usize::try_from(written - *pos).unwrap_or(usize::MAX));
                let n = file.read_at(&mut buf[..n], *pos)?;
                *pos += n as u64;
                Ok(n)
            }
        }
    }
}

impl DiffIdJob {
    /// Starts computing the DiffID from `split` (the decoded tar-split), with the objects of
    /// `diff` (the staging `diff/`) and `sources`; `content_of_name` maps each regular file of
    /// the TOC to its content. The contents in `unchecked` were stored without their sha256
    /// checked: this thread checks each the first time it reads it, beside the DiffID.
    pub fn spawn(
        split: &File,
        diff: &Path,
        sources: Arc<SourceLayers>,
        content_of_name: HashMap<String, [u8; 32]>,
        mut unchecked: HashSet<[u8; 32]>,
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
                let (id, _) = reassemble_checked(
                    BufReader::with_capacity(256 << 10, split),
                    |name, size| {
                        let name =
                            std::str::from_utf8(name).map_err(|_| Error::format("tar-split name is not UTF-8"))?;
                        let digest = content_of_name.get(name).ok_or_else(|| {
                            Error::format(format!(
                                "tar-split has content for {name:?}, which is no regular file in the TOC"
                            ))
                        })?;
                        let p = object_path(digest);
                        let check = unchecked.remove(digest).then_some(*digest);
                        let mut source = r.wait(digest, false)?;
                        if let Source::Layer(layer) = source {
                            // Relative to the source's open `diff/`: two names to walk, not a path.
                            if let Ok(Some(f)) = sources.get(layer).open_object(&p) {
                                return Ok((Content::File(f), check));
                            }
                            // Gone from the source layer: the pull fetches it instead.
                            source = r.wait(digest, true)?;
                        }
                        let content = match source {
                            Source::Held(data) => Content::Held(Cursor::new(data)),
                            Source::Growing(file) => {
                                Content::Growing { ready: r.clone(), digest: *digest, file, pos: 0, size }
                            }
                            Source::Staged | Source::Layer(_) => rustix::fs::openat(
                                &diff_fd,
                                p.as_str(),
                                OFlags::RDONLY | OFlags::CLOEXEC,
                                Mode::empty(),
                            )
                            .map(|fd| Content::File(File::from(fd)))
                            .map_err(|e| Error::io(format_args!("open {}/{p}", diff.display()), e.into()))?,
                        };
                        Ok((content, check))
                    },
                    &mut std::io::sink(),
                )?;
                // Every content fetched is some member's (the manifest's check): one that no
                // member read would be an object nobody checked.
                if let Some(d) = unchecked.iter().next() {
                    return Err(Error::format(format!(
                        "content sha256:{} is in the TOC but no member of the tar-split has it",
                        crate::source::hex(d)
                    )));
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::mpsc;
    use std::time::Duration;

    const D: [u8; 32] = [7; 32];

    fn ready_for(uses: u32) -> Arc<Ready> {
        let ready = Arc::new(Ready::default());
        ready.set_uses(HashMap::from([(D, uses)]));
        ready
    }

    /// A temporary file holding `first`, registered as the growing content `D`.
    fn growing_file(ready: &Ready, first: &[u8]) -> File {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(first).unwrap();
        ready.growing(&D, || Ok(file.try_clone().unwrap()));
        ready.grew(&D, first.len() as u64);
        file
    }

    /// A growing content as the DiffID thread reads it: `size` bytes of `file`.
    fn growing(ready: &Arc<Ready>, size: u64) -> Content {
        match ready.wait(&D, false).unwrap() {
            Source::Growing(file) => Content::Growing { ready: ready.clone(), digest: D, file, pos: 0, size },
            _ => panic!("not growing"),
        }
    }

    #[test]
    fn a_growing_content_is_read_while_it_is_written() {
        let ready = ready_for(1);
        let mut file = growing_file(&ready, b"first");
        let (read, got) = mpsc::channel();
        {
            let ready = ready.clone();
            std::thread::spawn(move || {
                let mut content = growing(&ready, 12);
                let mut buf = [0u8; 64];
                let n = content.read(&mut buf).unwrap();
                read.send(buf[..n].to_vec()).unwrap();
                let mut rest = Vec::new();
                content.take(7).read_to_end(&mut rest).unwrap();
                read.send(rest).unwrap();
            });
        }
        // What was written when it looked, not more: it does not wait for the whole file.
        assert_eq!(got.recv_timeout(Duration::from_secs(10)).unwrap(), b"first");
        // It is waiting for more by now.
        std::thread::sleep(Duration::from_millis(50));
        file.write_all(b", then").unwrap();
        ready.grew(&D, 11);
        file.write_all(b"!").unwrap();
        ready.grew(&D, 12);
        // Woken once what it waits for is written (not at each write).
        assert_eq!(got.recv_timeout(Duration::from_secs(10)).unwrap(), b", then!");
    }

    #[test]
    fn a_growing_content_ending_in_a_hole_is_read_to_its_end_once_stored() {
        let ready = ready_for(1);
        let file = growing_file(&ready, b"abc");
        let mut content = growing(&ready, 8192);
        // The writer leaves the trailing hole to the end (the file's length is set when stored).
        file.set_len(8192).unwrap();
        ready.add(D);
        let mut all = Vec::new();
        (&mut content).take(8192).read_to_end(&mut all).unwrap();
        assert_eq!(&all[..3], b"abc");
        assert_eq!(all.len(), 8192);
        assert!(all[3..].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_growing_content_whose_pull_stops_is_an_error_not_a_wait() {
        let ready = ready_for(1);
        let _file = growing_file(&ready, b"ab");
        let (done, got) = mpsc::channel();
        {
            let ready = ready.clone();
            std::thread::spawn(move || {
                let mut content = growing(&ready, 10);
                let mut buf = [0u8; 10];
                assert_eq!(content.read(&mut buf).unwrap(), 2);
                done.send(content.read(&mut buf)).unwrap();
            });
        }
        std::thread::sleep(Duration::from_millis(50));
        ready.close();
        let err = got.recv_timeout(Duration::from_secs(10)).unwrap().unwrap_err();
        assert!(err.to_string().contains("pull stopped"), "{err}");
    }

    #[test]
    fn an_offer_wakes_the_diffid_thread_once_published() {
        let ready = ready_for(1);
        let (done, got) = mpsc::channel();
        {
            let ready = ready.clone();
            std::thread::spawn(move || {
                let held = matches!(ready.wait(&D, false), Ok(Source::Held(d)) if &d[..] == b"data");
                done.send(held).unwrap();
            });
        }
        std::thread::sleep(Duration::from_millis(50));
        ready.offer(&D, b"data");
        ready.publish();
        assert!(got.recv_timeout(Duration::from_secs(10)).unwrap());
    }

    #[test]
    fn a_growing_content_without_a_handle_is_read_once_stored() {
        let ready = ready_for(1);
        ready.growing(&D, || Err(Error::io("reopen", std::io::Error::from_raw_os_error(libc::EMFILE))));
        ready.add(D);
        assert!(matches!(ready.wait(&D, false), Ok(Source::Staged)));
    }

    #[test]
    fn contents_no_member_reads_are_not_held_or_followed() {
        let ready = ready_for(0);
        ready.offer(&D, b"data");
        ready.growing(&D, || panic!("no handle is made for a content nobody reads"));
        let s = ready.state.lock().unwrap();
        assert!(s.held.is_empty() && s.growing.is_empty());
    }
}

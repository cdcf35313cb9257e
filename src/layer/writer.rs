//! Object writes on their own thread: creating, writing and renaming thousands of small files
//! is system-call time that then overlaps with hashing and parsing on the converting thread.
//!
//! Small contents travel in batches: one reused buffer holds many files, so the converting
//! thread neither allocates (fresh pages fault and get zeroed) nor wakes the writer per file.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::objects::{ObjectStore, TempObject};
use crate::{Error, ErrorKind, Result};

/// Bytes of content in one batch; a content at most this large is batched (see `Batch::fits`).
pub const BATCH_BYTES: usize = 256 << 10;
/// Files in one batch at most, so that many empty or tiny files still reach the writer soon.
const BATCH_FILES: usize = 256;
/// Jobs in flight; each batch holds at most `BATCH_BYTES`, which bounds the memory to 4 MiB
/// (1 MiB batches: peak RSS of a 195 MB layer's conversion ~10 MiB higher, and no faster).
const QUEUE: usize = 16;

/// Contents of several files, already hashed, back to back in one buffer.
#[derive(Default)]
pub struct Batch {
    data: Vec<u8>,
    /// Digest, end offset in `data`, and the entry it came from (for error messages).
    items: Vec<([u8; 32], usize, String)>,
}

impl Batch {
    /// Whether `len` more bytes fit without going over the batch limits.
    pub fn fits(&self, len: usize) -> bool {
        self.items.len() < BATCH_FILES && self.data.len() + len <= BATCH_BYTES.max(len)
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Appends one file's content; `entry` names it in errors.
    pub fn push(&mut self, digest: [u8; 32], data: &[u8], entry: String) {
        self.data.extend_from_slice(data);
        self.items.push((digest, self.data.len(), entry));
    }

    fn clear(&mut self) {
        self.data.clear();
        self.items.clear();
    }
}

/// Work for the writer thread.
pub enum Job {
    /// Contents held in memory, already hashed.
    Batch(Batch),
    /// A finished temporary object file, already hashed.
    Temp { tmp: TempObject, digest: [u8; 32], size: u64, entry: String },
}

/// The object store running on a writer thread.
pub struct ObjectWriter {
    /// This thread's way in.
    sink: ObjectSink,
    handle: Option<JoinHandle<Result<ObjectStore>>>,
    abort: Arc<AtomicBool>,
}

/// A way to queue objects for the writer thread, with a batch of its own: one per producing
/// thread (the pull's decompressing threads each have one).
pub struct ObjectSink {
    tx: Option<SyncSender<Job>>,
    /// Emptied batches coming back from the writer, to be filled again (shared by all sinks).
    recycled: Arc<Mutex<Receiver<Batch>>>,
    /// The batch being filled.
    batch: Batch,
}

/// Told, on the writer thread, the digests of objects just stored (a pull's DiffID thread may
/// read them from then on).
pub type StoredHook = Box<dyn FnMut(&mut dyn Iterator<Item = [u8; 32]>) + Send>;

impl ObjectWriter {
    pub fn spawn(store: ObjectStore) -> Result<ObjectWriter> {
        ObjectWriter::spawn_with_hook(store, None)
    }

    /// [`Self::spawn`], with `stored` called after each job's objects are in place.
    pub fn spawn_with_hook(mut store: ObjectStore, mut stored: Option<StoredHook>) -> Result<ObjectWriter> {
        let (tx, rx) = sync_channel::<Job>(QUEUE);
        // Room for every batch in circulation, a few sinks' included (see `ObjectWriter::sink`).
        let (recycle, recycled) = sync_channel::<Batch>(QUEUE + 8);
        let abort = Arc::new(AtomicBool::new(false));
        let stop = abort.clone();
        let handle = std::thread::Builder::new()
            .name("cfs-objects".into())
            .spawn(move || {
                for job in rx {
                    if stop.load(Ordering::Relaxed) {
                        break; // The conversion failed: the staging dir is about to go.
                    }
                    match job {
                        Job::Batch(mut batch) => {
                            let mut start = 0;
                            for (digest, end, entry) in &batch.items {
                                store.put_bytes(digest, &batch.data[start..*end]).map_err(|e| e.context(entry))?;
                                start = *end;
                            }
                            if let Some(hook) = stored.as_mut() {
                                hook(&mut batch.items.iter().map(|(d, _, _)| *d));
                            }
                            batch.clear();
                            let _ = recycle.try_send(batch);
                        }
                        Job::Temp { tmp, digest, size, entry } => {
                            store.commit_temp(tmp, &digest, size).map_err(|e| e.context(&entry))?;
                            if let Some(hook) = stored.as_mut() {
                                hook(&mut std::iter::once(digest));
                            }
                        }
                    }
                }
                Ok(store)
            })
            .map_err(|e| Error::io("spawn object writer thread", e))?;
        let sink = ObjectSink { tx: Some(tx), recycled: Arc::new(Mutex::new(recycled)), batch: Batch::default() };
        Ok(ObjectWriter { sink, handle: Some(handle), abort })
    }

    /// Another sink into this writer, for another producing thread. Every sink must be flushed
    /// and dropped before [`Self::finish`].
    pub fn sink(&self) -> ObjectSink {
        ObjectSink { tx: self.sink.tx.clone(), recycled: self.sink.recycled.clone(), batch: Batch::default() }
    }

    /// Queues a small content (at most [`BATCH_BYTES`]) already hashed as `digest`.
    pub fn put_bytes(&mut self, digest: [u8; 32], data: &[u8], entry: String) -> Result<()> {
        let sent = self.sink.put_bytes(digest, data, entry);
        self.sent(sent)
    }

    /// Queues a finished temporary object.
    pub fn commit_temp(&mut self, tmp: TempObject, digest: [u8; 32], size: u64, entry: String) -> Result<()> {
        let sent = self.sink.commit_temp(tmp, digest, size, entry);
        self.sent(sent)
    }

    /// Sends the batch being filled.
    pub fn flush(&mut self) -> Result<()> {
        let sent = self.sink.flush();
        self.sent(sent)
    }

    /// A failed send means the writer has stopped: its own error says why.
    fn sent(&mut self, sent: Result<()>) -> Result<()> {
        if sent.is_ok() {
            return Ok(());
        }
        self.sink.tx = None;
        match self.join() {
            Err(e) => Err(e),
            Ok(_) => Err(Error::new(ErrorKind::Internal, "object writer stopped early")),
        }
    }

    /// Waits for every queued write and returns the store.
    pub fn finish(mut self) -> Result<ObjectStore> {
        self.flush()?;
        self.sink.tx = None;
        self.join()
    }

    fn join(&mut self) -> Result<ObjectStore> {
        match self.handle.take() {
            Some(h) => {
                h.join().unwrap_or_else(|_| Err(Error::new(ErrorKind::Internal, "object writer thread panicked")))
            }
            None => Err(Error::new(ErrorKind::Internal, "object writer already joined")),
        }
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        // On error paths: stop early, and wait so nothing writes into a directory being removed.
        self.abort.store(true, Ordering::Relaxed);
        self.sink.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl ObjectSink {
    /// Queues a small content (at most [`BATCH_BYTES`], or more when the batch is empty) already
    /// hashed as `digest`.
    pub fn put_bytes(&mut self, digest: [u8; 32], data: &[u8], entry: String) -> Result<()> {
        if !self.batch.fits(data.len()) {
            self.flush()?;
        }
        self.batch.push(digest, data, entry);
        Ok(())
    }

    /// Queues a small content of `len` bytes that `make` appends to the buffer it is given (and
    /// checks against `digest`): made in place in the batch, not copied there. If `make` fails,
    /// whatever it appended is dropped and nothing is queued.
    pub fn put_with(
        &mut self,
        digest: [u8; 32],
        len: usize,
        entry: String,
        make: impl FnOnce(&mut Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        if !self.batch.fits(len) {
            self.flush()?;
        }
        let start = self.batch.data.len();
        self.batch.data.reserve(len);
        if let Err(e) = make(&mut self.batch.data) {
            self.batch.data.truncate(start);
            return Err(e);
        }
        self.batch.items.push((digest, self.batch.data.len(), entry));
        Ok(())
    }

    /// Queues a finished temporary object.
    pub fn commit_temp(&mut self, tmp: TempObject, digest: [u8; 32], size: u64, entry: String) -> Result<()> {
        self.send(Job::Temp { tmp, digest, size, entry })
    }

    /// Sends the batch being filled, and takes an emptied one (or a new one) to fill next.
    pub fn flush(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let next = self.recycled.lock().ok().and_then(|r| r.try_recv().ok()).unwrap_or_default();
        let full = std::mem::replace(&mut self.batch, next);
        self.send(Job::Batch(full))
    }

    /// Queues a job; fails if the writer has stopped (its owner learns why from the writer).
    fn send(&mut self, job: Job) -> Result<()> {
        match self.tx.as_ref().map(|tx| tx.send(job)) {
            Some(Ok(())) => Ok(()),
            _ => {
                self.tx = None;
                Err(Error::new(ErrorKind::Internal, "object writer stopped"))
            }
        }
    }
}

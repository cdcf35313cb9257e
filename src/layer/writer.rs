//! Object writes on their own thread: creating, writing and renaming thousands of small files
//! is system-call time that then overlaps with hashing and parsing on the converting thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::objects::{ObjectStore, TempObject};
use crate::{Error, ErrorKind, Result};

/// Work for the writer thread.
pub enum Job {
    /// Content held in memory, already hashed.
    Bytes { digest: [u8; 32], data: Vec<u8>, entry: String },
    /// A finished temporary object file, already hashed.
    Temp { tmp: TempObject, digest: [u8; 32], size: u64, entry: String },
}

/// Jobs in flight; with in-memory contents of at most 1 MiB this bounds the memory to 16 MiB.
const QUEUE: usize = 16;

/// The object store running on a writer thread.
pub struct ObjectWriter {
    tx: Option<SyncSender<Job>>,
    handle: Option<JoinHandle<Result<ObjectStore>>>,
    abort: Arc<AtomicBool>,
}

impl ObjectWriter {
    pub fn spawn(mut store: ObjectStore) -> Result<ObjectWriter> {
        let (tx, rx) = sync_channel::<Job>(QUEUE);
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
                        Job::Bytes { digest, data, entry } => {
                            store.put_bytes(&digest, &data).map_err(|e| e.context(&entry))?;
                        }
                        Job::Temp { tmp, digest, size, entry } => {
                            store.commit_temp(tmp, &digest, size).map_err(|e| e.context(&entry))?;
                        }
                    }
                }
                Ok(store)
            })
            .map_err(|e| Error::io("spawn object writer thread", e))?;
        Ok(ObjectWriter { tx: Some(tx), handle: Some(handle), abort })
    }

    /// Queues a job; fails with the writer's own error if it has stopped.
    pub fn send(&mut self, job: Job) -> Result<()> {
        let sent = match &self.tx {
            Some(tx) => tx.send(job).is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            self.tx = None;
            match self.join() {
                Err(e) => Err(e),
                Ok(_) => Err(Error::new(ErrorKind::Internal, "object writer stopped early")),
            }
        }
    }

    /// Waits for every queued write and returns the store.
    pub fn finish(mut self) -> Result<ObjectStore> {
        self.tx = None;
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
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

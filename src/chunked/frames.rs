//! The zstd frames of a zstd:chunked blob being written, compressed on several threads.
//!
//! Every chunk of every file is a zstd frame of its own (and so is each run of tar headers), so
//! frames can be compressed independently and written in order: the blob is the same bytes
//! whatever the number of threads. Each frame is compressed with the same calls whether a worker
//! or this thread does it (the streaming API, content size unknown, `ZSTD_e_end` on empty input),
//! and zstd's output does not depend on how the input was cut into calls.
//!
//! Frame offsets are not known until the frames before them are compressed, so a frame is named
//! by its index ([`Frames::next_frame`]) and [`Frames::offset`] resolves it once everything is
//! written. A frame is held uncompressed until it is closed, up to [`HOLD_MAX`]; a larger one
//! (a chunk the rollsum never split) waits for the frames before it, then is compressed here as it
//! comes, so memory stays bounded by the queues whatever the file sizes.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};
use zstd::stream::raw::{Encoder, InBuffer, Operation, OutBuffer};

use super::footer::SKIPPABLE_MAGIC;
use crate::{Error, ErrorKind, Result};

/// A frame held for a worker up to this many bytes; a larger one is compressed as it comes.
const HOLD_MAX: usize = 4 << 20;
/// Frames are sent to workers in jobs of about this many uncompressed bytes (or [`JOB_FRAMES`]).
const JOB_BYTES: usize = 1 << 20;
const JOB_FRAMES: usize = 128;
/// Jobs given to the workers and not yet written, per worker.
const JOBS_PER_WORKER: usize = 2;
const OUT_BUF: usize = 1 << 20;
const MIN_SPARE: usize = 64 << 10;

/// Frames, each with its index.
type Job = Vec<(u64, Vec<u8>)>;

pub struct Frames<'w> {
    pub out: &'w mut dyn Write,
    /// Bytes written so far, and their sha256.
    pub written: u64,
    pub hasher: Sha256,
    /// This thread's encoder, for frames compressed here.
    enc: Encoder<'static>,
    buf: Vec<u8>,
    /// The open frame's bytes, held until it is closed (unless `streaming`).
    current: Vec<u8>,
    /// A frame has been started (bytes fed since the last close).
    open: bool,
    /// The open frame outgrew [`HOLD_MAX`]: compressed here as it comes.
    streaming: bool,
    /// Frames closed so far: the index of the next one.
    closed: u64,
    /// Blob offset of every frame written, by index.
    starts: Vec<u64>,
    pool: Option<Pool>,
}

/// The workers, and the frames between them and the blob.
struct Pool {
    tx: Option<SyncSender<Job>>,
    done: Receiver<Result<Job>>,
    workers: Vec<JoinHandle<()>>,
    job: Job,
    job_bytes: usize,
    max_jobs: usize,
    in_flight: usize,
    /// Compressed frames that came back before the ones ahead of them.
    pending: BTreeMap<u64, Vec<u8>>,
}

impl<'w> Frames<'w> {
    /// `threads` compressing threads beside this one (0 or 1: everything compressed here).
    pub fn new(out: &'w mut dyn Write, level: i32, threads: usize) -> Result<Frames<'w>> {
        let pool = match threads {
            0 | 1 => None,
            n => Some(Pool::spawn(n, level)?),
        };
        Ok(Frames {
            out,
            written: 0,
            hasher: Sha256::new(),
            enc: new_encoder(level)?,
            buf: Vec::with_capacity(OUT_BUF),
            current: Vec::new(),
            open: false,
            streaming: false,
            closed: 0,
            starts: Vec::new(),
            pool,
        })
    }

    /// The index of the next frame to open: where the next byte will be, once resolved with
    /// [`Self::offset`] (exact only between frames, as offsets in a blob are).
    pub fn next_frame(&self) -> u64 {
        self.closed
    }

    /// The blob offset of frame `index` (the end of the frames for the index after the last);
    /// once [`Self::finish_frames`] has returned.
    pub fn offset(&self, index: u64) -> u64 {
        self.starts.get(index as usize).copied().unwrap_or(self.written)
    }

    /// Adds `data` to the current frame (starting one if needed).
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.open = true;
        if self.streaming {
            return self.compress_here(data);
        }
        self.current.extend_from_slice(data);
        if self.current.len() > HOLD_MAX {
            // Too large to hold: the frames before it go out first, then it streams.
            self.finish_frames()?;
            self.starts.push(self.tail());
            self.streaming = true;
            let held = std::mem::take(&mut self.current);
            self.compress_here(&held)?;
        }
        Ok(())
    }

    /// Ends the current frame, if one is open.
    pub fn close(&mut self) -> Result<()> {
        if !self.open {
            return Ok(());
        }
        let index = self.closed;
        self.closed += 1;
        self.open = false;
        if std::mem::take(&mut self.streaming) {
            return self.end_here();
        }
        let data = std::mem::take(&mut self.current);
        match self.pool.as_mut() {
            Some(pool) => {
                pool.submit(index, data)?;
                self.write_ready()
            }
            None => {
                self.starts.push(self.tail());
                self.compress_here(&data)?;
                self.current = data;
                self.current.clear();
                self.end_here()
            }
        }
    }

    /// Waits for every closed frame and writes it.
    pub fn finish_frames(&mut self) -> Result<()> {
        if let Some(pool) = self.pool.as_mut() {
            pool.drain()?;
            self.write_ready()?;
        }
        self.emit()?;
        if self.starts.len() as u64 != self.closed {
            return Err(Error::new(ErrorKind::Internal, "a zstd frame went missing"));
        }
        Ok(())
    }

    /// Appends a skippable frame holding `payload` (after every frame); returns the payload's
    /// offset.
    pub fn skippable(&mut self, payload: &[u8]) -> Result<u64> {
        if self.open {
            return Err(Error::new(ErrorKind::Internal, "skippable frame inside an open frame"));
        }
        self.finish_frames()?;
        let len = u32::try_from(payload.len())
            .map_err(|_| Error::limit(format!("skippable frame of {} bytes is over 4 GiB", payload.len())))?;
        self.buf.extend_from_slice(&SKIPPABLE_MAGIC);
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.emit()?;
        let offset = self.written;
        self.put(payload)?;
        Ok(offset)
    }

    /// Writes the frames back from the workers that are next in line.
    fn write_ready(&mut self) -> Result<()> {
        loop {
            let next = self.starts.len() as u64;
            let Some(frame) = self.pool.as_mut().and_then(|p| p.pending.remove(&next)) else { return Ok(()) };
            // Whatever this thread compressed before goes first.
            self.emit()?;
            self.starts.push(self.written);
            self.put(&frame)?;
        }
    }

    /// Where the next byte written will be: what is out, and what this thread's encoder holds.
    fn tail(&self) -> u64 {
        self.written + self.buf.len() as u64
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes).map_err(|e| Error::io("write zstd:chunked blob", e))?;
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Writes out what this thread's encoder produced.
    fn emit(&mut self) -> Result<()> {
        let buf = std::mem::take(&mut self.buf);
        let r = self.put(&buf);
        self.buf = buf;
        self.buf.clear();
        r
    }

    fn compress_here(&mut self, data: &[u8]) -> Result<()> {
        let mut input = InBuffer::around(data);
        while input.pos() < data.len() {
            if self.buf.capacity() - self.buf.len() < MIN_SPARE {
                self.emit()?;
            }
            let len = self.buf.len();
            let mut output = OutBuffer::around_pos(&mut self.buf, len);
            self.enc.run(&mut input, &mut output).map_err(|e| Error::io("zstd compression", e))?;
        }
        Ok(())
    }

    fn end_here(&mut self) -> Result<()> {
        loop {
            if self.buf.capacity() - self.buf.len() < MIN_SPARE {
                self.emit()?;
            }
            let len = self.buf.len();
            let mut output = OutBuffer::around_pos(&mut self.buf, len);
            let left = self.enc.finish(&mut output, true).map_err(|e| Error::io("zstd compression", e))?;
            if left == 0 {
                break;
            }
        }
        self.enc.reinit().map_err(|e| Error::io("zstd compression", e))
    }
}

fn new_encoder(level: i32) -> Result<Encoder<'static>> {
    Encoder::new(level).map_err(|e| Error::io("create zstd encoder", e))
}

/// Compresses one whole frame into `out` with the same calls as [`Frames`] makes.
fn compress_frame(enc: &mut Encoder<'static>, data: &[u8], out: &mut Vec<u8>) -> Result<()> {
    let err = |e| Error::io("zstd compression", e);
    out.reserve(zstd::zstd_safe::compress_bound(data.len()));
    let mut input = InBuffer::around(data);
    while input.pos() < data.len() {
        out.reserve(MIN_SPARE);
        let len = out.len();
        let mut output = OutBuffer::around_pos(out, len);
        enc.run(&mut input, &mut output).map_err(err)?;
    }
    loop {
        out.reserve(MIN_SPARE);
        let len = out.len();
        let mut output = OutBuffer::around_pos(out, len);
        if enc.finish(&mut output, true).map_err(err)? == 0 {
            break;
        }
    }
    enc.reinit().map_err(err)
}

impl Pool {
    fn spawn(threads: usize, level: i32) -> Result<Pool> {
        let max_jobs = JOBS_PER_WORKER * threads;
        let (tx, rx) = sync_channel::<Job>(max_jobs);
        let rx = Arc::new(Mutex::new(rx));
        let (done_tx, done) = channel::<Result<Job>>();
        let mut pool = Pool {
            tx: Some(tx),
            done,
            workers: Vec::new(),
            job: Vec::new(),
            job_bytes: 0,
            max_jobs,
            in_flight: 0,
            pending: BTreeMap::new(),
        };
        for i in 0..threads {
            let (rx, done_tx) = (rx.clone(), done_tx.clone());
            let mut enc = new_encoder(level)?;
            let handle = std::thread::Builder::new()
                .name(format!("cfs-zstd-{i}"))
                .spawn(move || work(&rx, &done_tx, &mut enc))
                .map_err(|e| Error::io("spawn compression thread", e))?;
            pool.workers.push(handle);
        }
        Ok(pool)
    }

    /// Queues frame `index` (compressed frames that came back meanwhile go to `pending`).
    fn submit(&mut self, index: u64, data: Vec<u8>) -> Result<()> {
        self.job_bytes += data.len();
        self.job.push((index, data));
        if self.job_bytes < JOB_BYTES && self.job.len() < JOB_FRAMES {
            return Ok(());
        }
        while self.in_flight >= self.max_jobs {
            self.receive()?;
        }
        self.send()
    }

    /// Sends the job being gathered.
    fn send(&mut self) -> Result<()> {
        if self.job.is_empty() {
            return Ok(());
        }
        let job = std::mem::take(&mut self.job);
        self.job_bytes = 0;
        match self.tx.as_ref().map(|tx| tx.send(job)) {
            Some(Ok(())) => {
                self.in_flight += 1;
                Ok(())
            }
            _ => Err(Error::new(ErrorKind::Internal, "zstd compression threads stopped")),
        }
    }

    /// Waits for one job's frames.
    fn receive(&mut self) -> Result<()> {
        let job =
            self.done.recv().map_err(|_| Error::new(ErrorKind::Internal, "zstd compression threads stopped"))??;
        self.in_flight -= 1;
        self.pending.extend(job);
        Ok(())
    }

    /// Sends what is gathered and waits for everything.
    fn drain(&mut self) -> Result<()> {
        self.send()?;
        while self.in_flight > 0 {
            self.receive()?;
        }
        Ok(())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.tx = None;
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

/// A worker: compresses the frames of each job until there are no more jobs.
fn work(rx: &Mutex<Receiver<Job>>, done: &Sender<Result<Job>>, enc: &mut Encoder<'static>) {
    loop {
        let next = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = next else { return };
        let compressed = job
            .into_iter()
            .map(|(index, data)| {
                let mut out = Vec::new();
                compress_frame(enc, &data, &mut out).map(|()| (index, out))
            })
            .collect::<Result<Job>>();
        if done.send(compressed).is_err() {
            return;
        }
    }
}

//! Fetched files decompressed and verified on worker threads.
//!
//! A cold pull is bounded by its per-byte work: zstd decompression and the sha256 of every
//! object, then the writes. On one thread that was the critical path (0.47 of 0.53 s on a 210 MB
//! rootfs) while the writer and DiffID threads waited. The fetching thread now only reads the
//! compressed frames: those of files up to [`POOL_MAX`] gathered into jobs (decompressed in
//! memory), those of larger files streamed in segments to one worker (decompressed into a
//! temporary object). Memory stays bounded by the queues, not by file sizes.
//!
//! Where the pull computes a DiffID, the workers check sizes only: the DiffID thread reads every
//! content anyway and checks its sha256 there, beside the tar's (see `diff_id`).

use std::io::{BufRead, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, ScopedJoinHandle};

use sha2::{Digest, Sha256};

use super::{checksum_mismatch, Missing, Piece, Ready, ZEROS};
use crate::layer::objects::{TempFactory, TempObject};
use crate::layer::writer::{ObjectSink, ObjectWriter};
use crate::{Error, ErrorKind, Result};

/// Files up to this size (content) are decompressed by the pool in memory.
const POOL_MAX: u64 = 256 << 10;
/// Compressed bytes gathered into one job before it is sent (files are not split).
const JOB_BYTES: usize = 256 << 10;
/// Files in one job at most, so that runs of tiny files still reach a worker soon.
const JOB_FILES: usize = 256;
/// Jobs queued per worker: with [`JOB_BYTES`] and [`POOL_MAX`] this bounds the pool's memory to
/// a few MiB per worker.
const QUEUE_PER_WORKER: usize = 1;
/// A large file's frames travel in segments of this size, at most [`SEGMENTS_QUEUED`] at a time.
const SEGMENT: usize = 256 << 10;
const SEGMENTS_QUEUED: usize = 2;
/// The capacity of the pool's buffers: any job (a file of at most [`POOL_MAX`] compressed twice
/// over that, after less than [`JOB_BYTES`] of others) fits without growing it.
const BUFFER: usize = JOB_BYTES + 2 * POOL_MAX as usize;

/// One part of a file's content, in order: the next `n` compressed bytes, or `n` zeros.
#[derive(Clone, Copy)]
enum Step {
    Frames(u64),
    Zeros(u64),
}

/// A file for a worker: what it must be, and how its content is made.
struct PoolFile {
    digest: [u8; 32],
    size: u64,
    name: String,
    steps: Vec<Step>,
}

/// Small files' frames, back to back (each file's ending at its `usize`).
#[derive(Default)]
struct Files {
    data: Vec<u8>,
    files: Vec<(PoolFile, usize)>,
}

enum Job {
    Files(Files),
    /// A large file whose frames arrive in segments; the sender going away ends them.
    Stream(PoolFile, Receiver<Vec<u8>>),
}

/// The file whose fetched parts are arriving.
enum Open {
    None,
    /// Its frames gathered into the job.
    InJob(usize),
    /// Its frames sent to a worker as they are read.
    Streamed(usize, SyncSender<Vec<u8>>),
}

pub struct DecompressPool {
    tx: Option<SyncSender<Job>>,
    job: Files,
    open: Open,
    /// Emptied buffers coming back from the workers, to be filled again.
    spare: Receiver<Vec<u8>>,
    failed: Arc<AtomicBool>,
    workers: Vec<JoinHandle<Result<()>>>,
}

impl DecompressPool {
    /// Whether the pool takes `m`: its content made of fetched frames and zeros only (files
    /// assembled with local chunks stay on the fetching thread).
    pub fn takes(m: &Missing) -> bool {
        m.pieces.iter().all(|p| matches!(p, Piece::Fetch(..) | Piece::Zeros(_)))
            && m.pieces.iter().any(|p| matches!(p, Piece::Fetch(..)))
    }

    /// `threads` workers, each writing through its own sink into `writer`, and creating
    /// temporary objects in `diff`. Small files are offered to `ready` (the DiffID thread) once
    /// decompressed. Each file's sha256 is checked against the TOC if `check`; else the DiffID
    /// thread checks it (the size is always checked here).
    pub fn spawn(
        threads: usize,
        writer: &ObjectWriter,
        diff: &std::path::Path,
        ready: &Arc<Ready>,
        check: bool,
    ) -> Result<DecompressPool> {
        let threads = threads.max(1);
        let (tx, rx) = sync_channel::<Job>(QUEUE_PER_WORKER * threads);
        let rx = Arc::new(Mutex::new(rx));
        // Room for every buffer in circulation (queued, in a worker, being filled), so that they
        // are all reused: fresh ones each time made glibc's arenas grow by several MiB.
        let buffers = QUEUE_PER_WORKER * threads + 2 * threads + 1 + SEGMENTS_QUEUED;
        let (give_back, spare) = sync_channel::<Vec<u8>>(buffers);
        let failed = Arc::new(AtomicBool::new(false));
        let mut pool = DecompressPool {
            tx: Some(tx),
            job: Files { data: Vec::with_capacity(BUFFER), files: Vec::new() },
            open: Open::None,
            spare,
            failed,
            workers: Vec::new(),
        };
        pool.job.data = pool.spare();
        for i in 0..threads {
            let (rx, give_back, sink, failed) = (rx.clone(), give_back.clone(), writer.sink(), pool.failed.clone());
            let ready = ready.clone();
            let temps = TempFactory::with_prefix(diff, &format!(".tmp-w{i}-"))?;
            let handle = std::thread::Builder::new()
                .name(format!("cfs-unzstd-{i}"))
                .spawn(move || {
                    let r = work(&rx, &give_back, sink, temps, &ready, &failed, check);
                    if r.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    r
                })
                .map_err(|e| Error::io("spawn decompression thread", e))?;
            pool.workers.push(handle);
        }
        Ok(pool)
    }

    /// Reads one fetched part of `m` (number `mi`; the pool [takes](Self::takes) it), `len`
    /// compressed bytes of `reader`; `last`: whether it is the file's last part. Parts of one
    /// file come in order, and no other file's come in between.
    pub fn add(&mut self, reader: &mut dyn Read, mi: usize, m: &Missing, len: u64, last: bool) -> Result<()> {
        let open_now = match &self.open {
            Open::InJob(i) | Open::Streamed(i, _) => *i == mi,
            Open::None => false,
        };
        if !open_now {
            self.begin(mi, m)?;
        }
        match &self.open {
            Open::InJob(_) => {
                let start = self.job.data.len();
                self.job.data.resize(start + len as usize, 0);
                read_fetched(reader, &mut self.job.data[start..])?;
            }
            Open::Streamed(_, segments) => {
                let mut left = len;
                while left > 0 {
                    let mut segment = self.spare();
                    segment.resize(left.min(SEGMENT as u64) as usize, 0);
                    read_fetched(reader, &mut segment)?;
                    left -= segment.len() as u64;
                    if segments.send(segment).is_err() {
                        // The worker stopped: it failed, and says why.
                        return Err(self.stopped());
                    }
                }
            }
            Open::None => return Err(Error::new(ErrorKind::Internal, "no pooled file open")),
        }
        if last {
            if let Open::InJob(_) = std::mem::replace(&mut self.open, Open::None) {
                let file = pool_file(m);
                let end = self.job.data.len();
                self.job.files.push((file, end));
                if end >= JOB_BYTES || self.job.files.len() >= JOB_FILES {
                    self.flush()?;
                }
            }
        }
        Ok(())
    }

    /// Starts a file: into the job when small (content and frames), else streamed to a worker.
    fn begin(&mut self, mi: usize, m: &Missing) -> Result<()> {
        if !matches!(self.open, Open::None) {
            return Err(Error::new(ErrorKind::Internal, "a pooled file's parts were interleaved"));
        }
        let compressed: u64 = m.pieces.iter().map(|p| if let Piece::Fetch(r, _) = p { r.length } else { 0 }).sum();
        if m.size <= POOL_MAX && compressed <= 2 * POOL_MAX {
            self.open = Open::InJob(mi);
            return Ok(());
        }
        // The small files gathered so far go first: the DiffID thread reads files in tar order,
        // and would wait for them until this one is written.
        self.flush()?;
        let (segments, rx) = sync_channel::<Vec<u8>>(SEGMENTS_QUEUED);
        self.send(Job::Stream(pool_file(m), rx))?;
        self.open = Open::Streamed(mi, segments);
        Ok(())
    }

    /// An emptied buffer, or a new one, large enough for any job (grown here, not by doubling as
    /// it fills: that made four allocations of it, each faulted in afresh).
    fn spare(&self) -> Vec<u8> {
        let mut buf = self.spare.try_recv().unwrap_or_default();
        buf.reserve_exact(BUFFER);
        buf
    }

    /// Sends the job being gathered.
    pub fn flush(&mut self) -> Result<()> {
        if self.job.files.is_empty() {
            return Ok(());
        }
        let data = self.spare();
        let job = std::mem::replace(&mut self.job, Files { data, files: Vec::new() });
        self.send(Job::Files(job))
    }

    /// Waits until every file given is verified and queued for writing.
    pub fn finish(mut self) -> Result<()> {
        if !matches!(self.open, Open::None) {
            return Err(Error::new(ErrorKind::Internal, "a pooled file was left unfinished"));
        }
        self.flush()?;
        self.join()
    }

    fn send(&mut self, job: Job) -> Result<()> {
        match self.tx.as_ref().map(|tx| tx.send(job)) {
            Some(Ok(())) => Ok(()),
            // Every worker has stopped: one failed, and says why.
            _ => Err(self.stopped()),
        }
    }

    /// The error of a worker that stopped.
    fn stopped(&mut self) -> Error {
        self.failed.store(true, Ordering::Relaxed);
        self.join().err().unwrap_or_else(|| Error::new(ErrorKind::Internal, "decompression pool stopped"))
    }

    /// Stops taking jobs, waits for the workers; the first error of any.
    fn join(&mut self) -> Result<()> {
        self.tx = None;
        self.open = Open::None;
        let mut first = Ok(());
        for h in self.workers.drain(..) {
            let r = h.join().unwrap_or_else(|_| Err(Error::new(ErrorKind::Internal, "decompression thread panicked")));
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

impl Drop for DecompressPool {
    fn drop(&mut self) {
        // On error paths: stop the workers early, and wait, so that no sink outlives the pull.
        self.failed.store(true, Ordering::Relaxed);
        let _ = self.join();
    }
}

fn pool_file(m: &Missing) -> PoolFile {
    let steps = m
        .pieces
        .iter()
        .filter_map(|p| match p {
            Piece::Fetch(r, _) => Some(Step::Frames(r.length)),
            Piece::Zeros(n) => Some(Step::Zeros(*n)),
            Piece::Local { .. } => None,
        })
        .collect();
    PoolFile { digest: m.digest, size: m.size, name: m.name.clone(), steps }
}

/// A worker: takes jobs until there are none (or one failed), each file decompressed, verified
/// against the TOC and queued for writing.
fn work(
    rx: &Mutex<Receiver<Job>>,
    give_back: &SyncSender<Vec<u8>>,
    mut sink: ObjectSink,
    mut temps: TempFactory,
    ready: &Ready,
    failed: &AtomicBool,
    check: bool,
) -> Result<()> {
    let mut dctx = zstd::zstd_safe::DCtx::create();
    let mut content = Vec::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let next = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => break,
        };
        let Ok(job) = next else { break };
        if failed.load(Ordering::Relaxed) {
            break;
        }
        match job {
            Job::Files(mut job) => {
                let mut start = 0;
                for (f, end) in &job.files {
                    let frames = &job.data[start..*end];
                    start = *end;
                    if let [Step::Frames(_)] = f.steps.as_slice() {
                        // Decompressed in place in the writer's batch, checked there.
                        sink.put_with(f.digest, f.size as usize, f.name.clone(), |batch| {
                            let content = decompress_whole(&mut dctx, frames, f, batch, check)?;
                            ready.offer(&f.digest, content);
                            Ok(())
                        })?;
                        continue;
                    }
                    content.clear();
                    let mut out =
                        Assembly { content: Content::Memory(&mut content), hasher: Hasher::here(check), total: 0 };
                    out.make(&mut &frames[..], f, &mut dctx, &mut buf)?;
                    out.verify(f)?;
                    ready.offer(&f.digest, &content);
                    sink.put_bytes(f.digest, &content, f.name.clone())?;
                }
                job.data.clear();
                let _ = give_back.try_send(job.data);
            }
            Job::Stream(f, segments) => {
                let mut segments = Segments { rx: segments, current: Vec::new(), pos: 0, give_back };
                let tmp = temps.begin()?;
                // The DiffID thread may read it as it is written (it trails the pull, and is
                // waiting for this file when it is among the layer's last).
                ready.growing(&f.digest, || tmp.reader());
                // A large file's sha256 runs on a thread of its own, beside its decompression and
                // writing here: this worker is the pull's longest task, and the last large files
                // of a layer (a 50 MB package list) leave the other core idle.
                let (tmp, made) = std::thread::scope(|scope| {
                    let hasher = if check { Hasher::beside(scope) } else { Hasher::None };
                    let mut out = Assembly { content: Content::Temp(tmp, ready), hasher, total: 0 };
                    let made = out.make(&mut segments, &f, &mut dctx, &mut buf).and_then(|()| out.verify(&f));
                    let Content::Temp(tmp, _) = out.content else {
                        unreachable!("a streamed file is assembled in a temp")
                    };
                    (tmp, made)
                });
                if let Err(e) = made {
                    temps.abort(tmp);
                    return Err(e);
                }
                sink.commit_temp(tmp, f.digest, f.size, f.name)?;
            }
        }
        // The writer announces objects per batch, and the DiffID thread may be waiting for these
        // (or for one offered here).
        sink.flush()?;
        ready.publish();
    }
    Ok(())
}

/// Decompresses a small file's frames in one call, straight onto the end of `out` (no window
/// buffer, no copy), and checks it against the TOC as a streamed file is checked (its sha256 if
/// `check`); returns it.
fn decompress_whole<'o>(
    dctx: &mut zstd::zstd_safe::DCtx<'static>,
    frames: &[u8],
    f: &PoolFile,
    out: &'o mut Vec<u8>,
    check: bool,
) -> Result<&'o [u8]> {
    use zstd::zstd_safe::zstd_sys::{ZSTD_ErrorCode, ZSTD_getErrorCode};
    let start = out.len();
    out.reserve_exact(f.size as usize);
    let mut end = std::io::Cursor::new(&mut *out);
    end.set_position(start as u64);
    if let Err(code) = dctx.decompress(&mut end, frames) {
        // SAFETY: ZSTD_getErrorCode only classifies the number it is given.
        let too_long = unsafe { ZSTD_getErrorCode(code) } == ZSTD_ErrorCode::ZSTD_error_dstSize_tooSmall;
        return Err(match too_long {
            true => longer(f),
            false => {
                Error::format(format!("file {:?}: bad zstd data: {}", f.name, zstd::zstd_safe::get_error_name(code)))
            }
        });
    }
    let content = &out[start..];
    if content.len() as u64 > f.size {
        return Err(longer(f));
    }
    let digest: [u8; 32] = if check { Sha256::digest(content).into() } else { f.digest };
    if content.len() as u64 != f.size || digest != f.digest {
        return Err(checksum_mismatch(&f.name, &f.digest, f.size, &digest, content.len() as u64));
    }
    Ok(content)
}

fn longer(f: &PoolFile) -> Error {
    Error::format(format!("file {:?}: its data is longer than its {} bytes", f.name, f.size))
}

/// Reads fetched bytes, a short read being the blob's fault.
fn read_fetched(reader: &mut dyn Read, buf: &mut [u8]) -> Result<()> {
    reader.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => Error::format("fetched data ended early"),
        _ => Error::io("read fetched data", e),
    })
}

/// Where a worker assembles a file: in memory, or in a temporary object whose growth is told to
/// the DiffID thread.
enum Content<'a> {
    Memory(&'a mut Vec<u8>),
    Temp(TempObject, &'a Ready),
}

impl Content<'_> {
    fn store(&mut self, data: &[u8], f: &PoolFile) -> Result<()> {
        match self {
            Content::Memory(v) => v.extend_from_slice(data),
            Content::Temp(tmp, ready) => {
                tmp.write_all(data)?;
                ready.grew(&f.digest, tmp.written());
            }
        }
        Ok(())
    }
}

/// A file being assembled, hashed as it grows.
struct Assembly<'a, 's> {
    content: Content<'a>,
    hasher: Hasher<'s>,
    total: u64,
}

/// The sha256 of a file being assembled: on this thread, on one beside it that takes copies of
/// the data (a few in flight, their buffers reused), or not here (the DiffID thread checks it;
/// then a large file has no thread of its own, as in every pull that computes a DiffID).
enum Hasher<'s> {
    None,
    Here(Sha256),
    Beside { data: SyncSender<Vec<u8>>, spare: Receiver<Vec<u8>>, digest: ScopedJoinHandle<'s, [u8; 32]> },
}

impl<'s> Hasher<'s> {
    const IN_FLIGHT: usize = 4;

    /// Hashing on this thread, if `check`.
    fn here(check: bool) -> Hasher<'s> {
        if check {
            Hasher::Here(Sha256::new())
        } else {
            Hasher::None
        }
    }

    /// A hashing thread in `scope`; if none can be started, the data is hashed here.
    fn beside<'e>(scope: &'s std::thread::Scope<'s, 'e>) -> Hasher<'s> {
        let (data, rx) = sync_channel::<Vec<u8>>(Self::IN_FLIGHT);
        let (give_back, spare) = sync_channel::<Vec<u8>>(Self::IN_FLIGHT + 2);
        let spawned = std::thread::Builder::new().name("cfs-sha256".into()).spawn_scoped(scope, move || {
            let mut hasher = Sha256::new();
            for piece in rx {
                hasher.update(&piece);
                let _ = give_back.try_send(piece);
            }
            hasher.finalize().into()
        });
        match spawned {
            Ok(digest) => Hasher::Beside { data, spare, digest },
            Err(_) => Hasher::Here(Sha256::new()),
        }
    }

    fn update(&mut self, bytes: &[u8]) -> Result<()> {
        match self {
            Hasher::None => {}
            Hasher::Here(h) => h.update(bytes),
            Hasher::Beside { data, spare, .. } => {
                let mut piece = spare.try_recv().unwrap_or_default();
                piece.clear();
                piece.extend_from_slice(bytes);
                if data.send(piece).is_err() {
                    return Err(Error::new(ErrorKind::Internal, "the hashing thread stopped"));
                }
            }
        }
        Ok(())
    }

    /// The digest, if hashed.
    fn finish(&mut self) -> Result<Option<[u8; 32]>> {
        match std::mem::replace(self, Hasher::None) {
            Hasher::None => Ok(None),
            Hasher::Here(h) => Ok(Some(h.finalize().into())),
            Hasher::Beside { data, digest, .. } => {
                drop(data);
                digest.join().map(Some).map_err(|_| Error::new(ErrorKind::Internal, "the hashing thread panicked"))
            }
        }
    }
}

impl Assembly<'_, '_> {
    fn append(&mut self, data: &[u8], f: &PoolFile) -> Result<()> {
        self.total += data.len() as u64;
        if self.total > f.size {
            return Err(longer(f));
        }
        self.hasher.update(data)?;
        self.content.store(data, f)
    }

    /// Decompresses each step's frames from `frames` (and writes its zeros), in order.
    fn make(
        &mut self,
        frames: &mut dyn BufRead,
        f: &PoolFile,
        dctx: &mut zstd::zstd_safe::DCtx<'static>,
        buf: &mut [u8],
    ) -> Result<()> {
        for step in &f.steps {
            match *step {
                Step::Zeros(mut left) => {
                    while left > 0 {
                        let k = left.min(ZEROS.len() as u64) as usize;
                        self.append(&ZEROS[..k], f)?;
                        left -= k as u64;
                    }
                }
                Step::Frames(len) => {
                    let mut piece = (&mut *frames).take(len);
                    let mut decoder = zstd::stream::read::Decoder::with_context(&mut piece, dctx);
                    loop {
                        let n = decoder
                            .read(buf)
                            .map_err(|e| Error::format(format!("file {:?}: bad zstd data: {e}", f.name)))?;
                        if n == 0 {
                            break;
                        }
                        self.append(&buf[..n], f)?;
                    }
                    drop(decoder);
                    // Whatever the decoder did not consume of this piece (padding) is skipped.
                    std::io::copy(&mut piece, &mut std::io::sink()).map_err(|e| Error::io("read fetched data", e))?;
                }
            }
        }
        Ok(())
    }

    /// Checks size and sha256 (if hashed) against the TOC.
    fn verify(&mut self, f: &PoolFile) -> Result<()> {
        let digest = self.hasher.finish()?.unwrap_or(f.digest);
        if self.total != f.size || digest != f.digest {
            return Err(checksum_mismatch(&f.name, &f.digest, f.size, &digest, self.total));
        }
        Ok(())
    }
}

/// A large file's frames as they arrive; the end of the stream is the sender going away.
struct Segments<'a> {
    rx: Receiver<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
    give_back: &'a SyncSender<Vec<u8>>,
}

impl Segments<'_> {
    /// Hands a read segment back to the pool (an empty `Vec` would only grow by doubling there).
    fn recycle(&self, mut done: Vec<u8>) {
        if done.capacity() > 0 {
            done.clear();
            let _ = self.give_back.try_send(done);
        }
    }
}

impl Drop for Segments<'_> {
    /// The last segment goes back too (one buffer a large file, each unmapped otherwise).
    fn drop(&mut self) {
        let last = std::mem::take(&mut self.current);
        self.recycle(last);
    }
}

impl Read for Segments<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Segments<'_> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.pos == self.current.len() {
            let Ok(next) = self.rx.recv() else { return Ok(&[]) };
            let done = std::mem::replace(&mut self.current, next);
            self.recycle(done);
            self.pos = 0;
        }
        Ok(&self.current[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
    }
}

//! A persistent sending queue: batches appended to segment files, acknowledged upstream only
//! once a successful `fdatasync` covers them (and the directory entry of a new segment),
//! delivered in order, and replayed after a restart or a crash from the oldest batch not yet
//! delivered. A batch may be delivered twice around a crash; none that was acknowledged is
//! lost.
//!
//! One thread owns the files and does all the I/O, so the async runtime never blocks on the
//! disk: it writes every append that is waiting, syncs once for all of them (group commit),
//! then answers each. A write or sync that fails is an error for the batches it carried (their
//! senders retry); the segment is cut back to what was synced before, or sealed there and
//! replaced by a new one, so nothing unsynced is ever read back in this process.
//!
//! Record layout: `magic: u32`, `len: u32` (of what follows the checksum), `crc32: u32` (of
//! what follows), `seq: u64`, `signal: u8`, `items: u32`, then the encoded request. A record
//! torn by a crash or damaged on disk fails its checksum; reading skips ahead to the next
//! record that passes (counted), and a torn tail is cut off on open.

mod fs;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use odigos_proto::Signal;
use tokio::sync::oneshot;

pub(crate) use fs::{Fs, RealFs};

use crate::Batch;
use crate::telemetry::{Counter, Gauge};

const MAGIC: u32 = 0x4f44_5131; // "ODQ1"
/// magic, len, crc.
const HEADER: usize = 12;
/// seq, signal, items.
const META: usize = 13;
/// No record is larger: a length beyond it is damage, not data.
const MAX_RECORD: u64 = 1 << 30;
/// How often the delivered position is written down when it moves.
const SAVE_EVERY: Duration = Duration::from_millis(200);
/// How soon a failed read is tried again, at first.
const READ_RETRY_FIRST: Duration = Duration::from_millis(5);

/// What a full queue does with a new batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenFull {
    /// Refuse it: the sender retries later.
    Refuse,
    /// Make room by dropping the oldest segments not yet delivered (counted).
    DropOldest,
}

/// Why a batch could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("persistent queue {dir} is full ({max_mib} MiB)")]
    Full { dir: String, max_mib: u64 },
    #[error("persistent queue {dir}: {error}")]
    Io { dir: String, error: std::io::Error },
    #[error("persistent queue {dir} is closed")]
    Closed { dir: String },
}

/// The counters a disk queue keeps up to date.
#[derive(Clone, Default)]
pub struct DiskMetrics {
    /// Batches on disk not yet delivered.
    pub batches: Gauge,
    /// Items dropped to make room, by signal.
    pub dropped: [Counter; 3],
    /// Records that failed their checksum and were skipped.
    pub corrupt: Counter,
}

/// A handle on one queue directory. The directory's thread stops when the last handle goes.
pub struct DiskQueue {
    dir: PathBuf,
    commands: mpsc::Sender<Command>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// A batch handed out for delivery. Settle it with [`Taken::done`]; dropped unsettled (the
/// delivery was stopped), it goes back to the front of the queue.
pub struct Taken {
    seq: u64,
    batch: Option<Batch>,
    commands: mpsc::Sender<Command>,
}

impl Taken {
    pub fn batch(&self) -> &Batch {
        self.batch.as_ref().expect("a taken batch until settled")
    }

    /// Delivered, or given up on: it will not be handed out again.
    pub fn done(mut self) {
        self.batch = None;
        let _ = self.commands.send(Command::Done(self.seq));
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        if let Some(batch) = self.batch.take() {
            // After the queue closed, the batch stays on disk for the next start.
            let _ = self.commands.send(Command::GiveBack(self.seq, batch));
        }
    }
}

/// An append, answered once it is durable.
struct Push {
    batch: Batch,
    when_full: WhenFull,
    reply: oneshot::Sender<Result<(), DiskError>>,
}

enum Command {
    Push(Push),
    /// The next batch to deliver; parked until there is one, answered `None` once closed.
    Next(oneshot::Sender<Option<Taken>>),
    Done(u64),
    GiveBack(u64, Batch),
    Resize(u64),
    /// No more pushes are coming: answer waiting takers `None` once nothing is left.
    Close,
    Reopen,
    Stop,
}

impl DiskQueue {
    /// Opens (or creates) the queue in `dir`, replaying what was not delivered.
    pub fn open(
        fs: Arc<dyn Fs>,
        dir: &Path,
        max_bytes: u64,
        metrics: DiskMetrics,
    ) -> std::io::Result<DiskQueue> {
        let (commands, inbox) = mpsc::channel();
        let actor = Actor::open(fs, dir, max_bytes, metrics, commands.clone())?;
        let thread = std::thread::Builder::new()
            .name("odigos-queue".into())
            .spawn(move || actor.run(inbox))?;
        Ok(DiskQueue {
            dir: dir.to_path_buf(),
            commands,
            thread: Mutex::new(Some(thread)),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends a batch and returns once it is durable.
    pub async fn push(&self, batch: Batch, when_full: WhenFull) -> Result<(), DiskError> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Push(Push {
            batch,
            when_full,
            reply,
        });
        let closed = || DiskError::Closed {
            dir: self.dir.display().to_string(),
        };
        self.commands.send(command).map_err(|_| closed())?;
        answer.await.unwrap_or_else(|_| Err(closed()))
    }

    /// The next batch to deliver, waiting for one; `None` once the queue is closed and nothing
    /// is left to hand out. Cancel-safe: a batch taken by a cancelled call goes back.
    pub async fn next(&self) -> Option<Taken> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Next(reply)).ok()?;
        answer.await.ok().flatten()
    }

    pub fn resize(&self, max_bytes: u64) {
        let _ = self.commands.send(Command::Resize(max_bytes));
    }

    pub fn close(&self) {
        let _ = self.commands.send(Command::Close);
    }

    pub fn reopen(&self) {
        let _ = self.commands.send(Command::Reopen);
    }
}

impl Drop for DiskQueue {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Stop);
        // Joined so that a queue reopened on the same directory never runs beside this one.
        if let Some(thread) = self.thread.lock().unwrap().take() {
            let _ = thread.join();
        }
    }
}

/// One segment file.
struct Segment {
    /// The first sequence number written to it (its file name).
    start: u64,
    /// Bytes that are synced and may be read.
    len: u64,
    /// Bytes in the file, synced or not.
    size: u64,
    /// Items not yet read, by signal.
    unread: [u64; 3],
    /// A write or sync failed: nothing more is appended to it.
    sealed: bool,
}

impl Segment {
    fn name(start: u64) -> String {
        format!("{start:020}.seg")
    }
}

/// An append written but not yet synced.
struct Written {
    signal: Signal,
    items: u64,
    segment: u64,
    end: u64,
    reply: oneshot::Sender<Result<(), DiskError>>,
}

struct Actor {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    max_bytes: u64,
    metrics: DiskMetrics,
    /// Oldest first; appends go to the last.
    segments: VecDeque<Segment>,
    /// Bytes of all segments on disk, synced or not.
    total_bytes: u64,
    next_seq: u64,
    /// Where reading is: a segment (by start) and an offset in it.
    read_segment: u64,
    read_offset: u64,
    /// Records below this were delivered before the queue was opened.
    replay_from: u64,
    /// The next sequence number reading may hand out.
    read_seq: u64,
    /// Given back by a stopped delivery: handed out first.
    returned: VecDeque<(u64, Batch)>,
    in_flight: BTreeSet<u64>,
    takers: VecDeque<oneshot::Sender<Option<Taken>>>,
    /// A segment was created since the directory was last synced.
    dir_dirty: bool,
    /// After a read failed: how soon to try again (doubling while it keeps failing).
    read_retry: Option<Duration>,
    closed: bool,
    saved_floor: u64,
    saved_at: std::time::Instant,
    commands: mpsc::Sender<Command>,
}

impl Actor {
    fn open(
        fs: Arc<dyn Fs>,
        dir: &Path,
        max_bytes: u64,
        metrics: DiskMetrics,
        commands: mpsc::Sender<Command>,
    ) -> std::io::Result<Actor> {
        fs.create_dir_all(dir)?;
        fs.lock(dir)?;
        let floor: u64 = fs
            .read(&dir.join("cursor"))
            .ok()
            .and_then(|text| String::from_utf8(text).ok()?.trim().parse().ok())
            .unwrap_or(0);
        let mut starts: Vec<u64> = fs
            .list(dir)?
            .iter()
            .filter_map(|name| name.strip_suffix(".seg")?.parse().ok())
            .collect();
        starts.sort_unstable();
        let mut actor = Actor {
            fs,
            dir: dir.to_path_buf(),
            max_bytes,
            metrics,
            segments: VecDeque::new(),
            total_bytes: 0,
            next_seq: floor,
            read_segment: 0,
            read_offset: 0,
            replay_from: floor,
            read_seq: floor,
            returned: VecDeque::new(),
            in_flight: BTreeSet::new(),
            takers: VecDeque::new(),
            dir_dirty: false,
            read_retry: None,
            closed: false,
            saved_floor: floor,
            saved_at: std::time::Instant::now(),
            commands,
        };
        let last = starts.last().copied();
        for start in starts {
            let segment = actor.recover(start, Some(start) == last)?;
            actor.total_bytes += segment.size;
            actor.segments.push_back(segment);
        }
        // Segments wholly delivered before: the next one starts at or below the floor.
        while actor.segments.len() > 1 && actor.segments[1].start <= floor {
            let gone = actor.segments.pop_front().expect("two segments");
            actor.total_bytes -= gone.size;
            let _ = actor.fs.remove(&actor.path(gone.start));
        }
        if let Some(first) = actor.segments.front() {
            actor.read_segment = first.start;
        }
        let waiting = actor.unread_batches();
        if waiting > 0 {
            tracing::info!(dir = %dir.display(), batches = waiting, "persistent queue: replaying batches not yet delivered");
        }
        actor.metrics.batches.set(waiting as i64);
        Ok(actor)
    }

    fn path(&self, start: u64) -> PathBuf {
        self.dir.join(Segment::name(start))
    }

    /// Reads a segment through, counting what is left to deliver; a torn tail on the last
    /// segment is cut off.
    fn recover(&mut self, start: u64, last: bool) -> std::io::Result<Segment> {
        let path = self.path(start);
        let size = self.fs.len(&path)?;
        let mut segment = Segment {
            start,
            len: size,
            size,
            unread: [0; 3],
            sealed: !last,
        };
        let mut offset = 0;
        let mut valid_end = 0;
        while offset < size {
            match read_record(&*self.fs, &path, offset, size) {
                Ok(record) => {
                    offset = record.end;
                    valid_end = record.end;
                    self.next_seq = self.next_seq.max(record.seq + 1);
                    if record.seq >= self.replay_from {
                        segment.unread[record.batch.signal() as usize] +=
                            record.batch.items() as u64;
                    }
                }
                // Counted when reading gets there.
                Err(Damage::Corrupt) => offset = resync(&*self.fs, &path, offset + 1, size),
                Err(Damage::Io(e)) => return Err(e),
            }
        }
        if last && valid_end < size {
            tracing::warn!(path = %path.display(), offset = valid_end, "persistent queue: cutting a record torn by a crash");
            self.metrics.corrupt.add(1);
            self.fs.truncate(&path, valid_end)?;
            self.fs.sync(&path)?;
            (segment.len, segment.size) = (valid_end, valid_end);
        }
        Ok(segment)
    }

    fn run(mut self, inbox: mpsc::Receiver<Command>) {
        loop {
            let wake = self.read_retry.unwrap_or(SAVE_EVERY);
            let first = match inbox.recv_timeout(wake) {
                Ok(command) => Some(command),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let mut pushes = Vec::new();
            let mut stop = false;
            for command in first.into_iter().chain(inbox.try_iter()) {
                match command {
                    Command::Push(push) => pushes.push(push),
                    Command::Next(reply) => self.takers.push_back(reply),
                    Command::Done(seq) => {
                        self.in_flight.remove(&seq);
                    }
                    Command::GiveBack(seq, batch) => {
                        self.in_flight.remove(&seq);
                        self.returned.push_back((seq, batch));
                    }
                    Command::Resize(max_bytes) => self.max_bytes = max_bytes,
                    Command::Close => self.closed = true,
                    Command::Reopen => self.closed = false,
                    Command::Stop => stop = true,
                }
            }
            if !pushes.is_empty() {
                self.append(pushes);
            }
            if stop {
                break;
            }
            self.hand_out();
            self.forget_delivered();
            self.metrics.batches.set(self.unread_batches() as i64);
        }
        self.save_floor();
    }

    /// Writes every waiting append, syncs once, then answers each.
    fn append(&mut self, pushes: Vec<Push>) {
        let mut written: Vec<Written> = Vec::new();
        for Push {
            batch,
            when_full,
            reply,
        } in pushes
        {
            let (signal, items) = (batch.signal(), batch.items() as u64);
            let body = batch.to_bytes();
            batch.discard();
            let size = (HEADER + META + body.len()) as u64;
            if let Err(e) = self.make_room(size, when_full) {
                let _ = reply.send(Err(e));
                continue;
            }
            self.start_segment_if_needed(size);
            let seq = self.next_seq;
            self.next_seq += 1;
            let record = encode_record(seq, signal, items as u32, &body);
            let tail = self.segments.back_mut().expect("a segment to write to");
            let (segment, at) = (tail.start, tail.size);
            let path = self.path(segment);
            match self.fs.append(&path, &record) {
                Ok(()) => {
                    self.segments.back_mut().expect("written to").size += size;
                    self.total_bytes += size;
                    written.push(Written {
                        signal,
                        items,
                        segment,
                        end: at + size,
                        reply,
                    });
                }
                Err(error) => {
                    // Cut the partial record back off; if even that fails, write no more here.
                    if self.fs.truncate(&path, at).is_err() {
                        self.seal_tail();
                    }
                    let _ = reply.send(Err(self.io(error)));
                }
            }
        }
        if written.is_empty() {
            return;
        }
        let touched: BTreeSet<u64> = written.iter().map(|w| w.segment).collect();
        let mut failed: Option<std::io::Error> = None;
        for &segment in &touched {
            if let Err(e) = self.fs.sync(&self.path(segment)) {
                failed.get_or_insert(e);
            }
        }
        if self.dir_dirty && failed.is_none() {
            // A new segment's entry in the directory must be durable too.
            match self.fs.sync_dir(&self.dir) {
                Ok(()) => self.dir_dirty = false,
                Err(e) => failed = Some(e),
            }
        }
        if let Some(error) = failed {
            // What the failed syncs covered may or may not be on disk: refuse it all, and cut
            // each segment back to what was synced before; one that cannot be cut is sealed
            // there, and nothing past it is ever read in this process.
            for start in &touched {
                let path = self.path(*start);
                let Some(segment) = self.segments.iter_mut().find(|s| s.start == *start) else {
                    continue;
                };
                let cut = self
                    .fs
                    .truncate(&path, segment.len)
                    .and_then(|()| self.fs.sync(&path));
                if cut.is_ok() {
                    self.total_bytes -= segment.size - segment.len;
                    segment.size = segment.len;
                } else {
                    segment.sealed = true;
                }
            }
            let message = error.to_string();
            for w in written {
                let error = std::io::Error::new(error.kind(), message.clone());
                let _ = w.reply.send(Err(self.io(error)));
            }
            return;
        }
        for w in written {
            if let Some(segment) = self.segments.iter_mut().find(|s| s.start == w.segment) {
                segment.len = segment.len.max(w.end);
                segment.unread[w.signal as usize] += w.items;
            }
            let _ = w.reply.send(Ok(()));
        }
    }

    fn io(&self, error: std::io::Error) -> DiskError {
        DiskError::Io {
            dir: self.dir.display().to_string(),
            error,
        }
    }

    /// Starts a segment when the last one is sealed or has no room for `size` more bytes.
    fn start_segment_if_needed(&mut self, size: u64) {
        let needed = match self.segments.back() {
            None => true,
            Some(tail) => tail.sealed || (tail.size > 0 && tail.size + size > self.segment_bytes()),
        };
        if needed {
            self.segments.push_back(Segment {
                start: self.next_seq,
                len: 0,
                size: 0,
                unread: [0; 3],
                sealed: false,
            });
            self.dir_dirty = true;
        }
    }

    /// Segments are a fraction of the queue, so dropping the oldest frees little at a time.
    fn segment_bytes(&self) -> u64 {
        (self.max_bytes / 8).clamp(64 << 10, 16 << 20)
    }

    /// Stops appending to the last segment; the next append starts a new one.
    fn seal_tail(&mut self) {
        if let Some(tail) = self.segments.back_mut() {
            tail.sealed = true;
        }
    }

    /// Makes room for `size` more bytes, dropping the oldest segments when that is the policy.
    fn make_room(&mut self, size: u64, when_full: WhenFull) -> Result<(), DiskError> {
        let full = |actor: &Actor| DiskError::Full {
            dir: actor.dir.display().to_string(),
            max_mib: actor.max_bytes >> 20,
        };
        if size > self.max_bytes {
            return Err(full(self));
        }
        while self.total_bytes + size > self.max_bytes {
            if when_full == WhenFull::Refuse {
                return Err(full(self));
            }
            if self.segments.len() == 1 {
                // Only the segment being written: start another so that this one can go.
                self.seal_tail();
                self.start_segment_if_needed(size);
            }
            self.drop_oldest();
        }
        Ok(())
    }

    /// Deletes the oldest segment, counting what in it was never read as dropped. Batches
    /// already handed out are delivered from memory.
    fn drop_oldest(&mut self) {
        let Some(gone) = self.segments.pop_front() else {
            return;
        };
        for (signal, items) in Signal::ALL.iter().zip(gone.unread) {
            self.metrics.dropped[*signal as usize].add(items as usize);
        }
        let dropped: u64 = gone.unread.iter().sum();
        tracing::warn!(dir = %self.dir.display(), items = dropped, "persistent queue full: dropped the oldest data to make room");
        self.total_bytes -= gone.size;
        if self.read_segment == gone.start {
            let next = self.segments.front().expect("a newer segment");
            self.read_segment = next.start;
            self.read_offset = 0;
            self.read_seq = self.read_seq.max(next.start);
        }
        let _ = self.fs.remove(&self.path(gone.start));
    }

    /// Answers waiting takers with what can be read.
    fn hand_out(&mut self) {
        while let Some(taker) = self.takers.pop_front() {
            if taker.is_closed() {
                continue;
            }
            let next = match self.returned.pop_front() {
                Some(found) => Some(found),
                None => self.read_next(),
            };
            let Some((seq, batch)) = next else {
                if self.closed && self.in_flight.is_empty() {
                    let _ = taker.send(None);
                    continue;
                }
                self.takers.push_front(taker);
                return;
            };
            self.in_flight.insert(seq);
            let taken = Taken {
                seq,
                batch: Some(batch),
                commands: self.commands.clone(),
            };
            // A taker gone meanwhile drops the batch, which comes back as a give-back.
            let _ = taker.send(Some(taken));
        }
    }

    /// The next record not yet read, if one is synced.
    fn read_next(&mut self) -> Option<(u64, Batch)> {
        loop {
            let index = self
                .segments
                .iter()
                .position(|s| s.start == self.read_segment)?;
            let segment = &self.segments[index];
            if self.read_offset >= segment.len {
                let next = self.segments.get(index + 1)?;
                // The last segment may still grow: stay at its end.
                (self.read_segment, self.read_offset) = (next.start, 0);
                continue;
            }
            let path = self.path(segment.start);
            let limit = segment.len;
            match read_record(&*self.fs, &path, self.read_offset, limit) {
                Ok(record) => {
                    self.read_retry = None;
                    self.read_offset = record.end;
                    let signal = record.batch.signal() as usize;
                    if record.seq < self.read_seq.max(self.replay_from) {
                        continue;
                    }
                    let segment = &mut self.segments[index];
                    segment.unread[signal] =
                        segment.unread[signal].saturating_sub(record.batch.items() as u64);
                    self.read_seq = record.seq + 1;
                    return Some((record.seq, record.batch));
                }
                Err(Damage::Corrupt) => {
                    self.metrics.corrupt.add(1);
                    tracing::error!(path = %path.display(), offset = self.read_offset, "persistent queue: a damaged record was skipped");
                    self.read_offset = resync(&*self.fs, &path, self.read_offset + 1, limit);
                }
                Err(Damage::Io(e)) => {
                    // Left where it is: reading is tried again soon, then less and less often.
                    let retry = self
                        .read_retry
                        .map_or(READ_RETRY_FIRST, |r| (r * 2).min(SAVE_EVERY * 5));
                    tracing::error!(path = %path.display(), error = %e, retry_in = ?retry, "persistent queue: cannot read; will retry");
                    self.read_retry = Some(retry);
                    return None;
                }
            }
        }
    }

    /// The oldest sequence number not yet delivered.
    fn floor(&self) -> u64 {
        let returned = self.returned.iter().map(|(seq, _)| *seq).min();
        [
            self.in_flight.first().copied(),
            returned,
            Some(self.read_seq),
        ]
        .into_iter()
        .flatten()
        .min()
        .expect("read_seq is always there")
    }

    /// Deletes segments wholly delivered and writes down how far delivery got.
    fn forget_delivered(&mut self) {
        let floor = self.floor();
        while self.segments.len() > 1
            && self.segments[1].start <= floor
            && self.read_segment != self.segments[0].start
        {
            let gone = self.segments.pop_front().expect("two segments");
            self.total_bytes -= gone.size;
            let _ = self.fs.remove(&self.path(gone.start));
        }
        if floor != self.saved_floor && self.saved_at.elapsed() >= SAVE_EVERY {
            self.save_floor();
        }
    }

    /// Records how far delivery got, so a restart replays from there. Losing this write only
    /// means replaying more.
    fn save_floor(&mut self) {
        let floor = self.floor();
        let (staged, cursor) = (self.dir.join("cursor.tmp"), self.dir.join("cursor"));
        self.saved_at = std::time::Instant::now();
        let saved = self
            .fs
            .write(&staged, floor.to_string().as_bytes())
            .and_then(|()| self.fs.sync(&staged))
            .and_then(|()| self.fs.rename(&staged, &cursor))
            .and_then(|()| self.fs.sync_dir(&self.dir));
        match saved {
            Ok(()) => self.saved_floor = floor,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "persistent queue: cannot save the delivered position")
            }
        }
    }

    fn unread_batches(&self) -> u64 {
        (self.next_seq.saturating_sub(self.floor())).max(self.returned.len() as u64)
    }
}

fn encode_record(seq: u64, signal: Signal, items: u32, body: &[u8]) -> Vec<u8> {
    let len = META + body.len();
    let mut record = Vec::with_capacity(HEADER + len);
    record.extend_from_slice(&MAGIC.to_le_bytes());
    record.extend_from_slice(&(len as u32).to_le_bytes());
    record.extend_from_slice(&[0; 4]);
    record.extend_from_slice(&seq.to_le_bytes());
    record.push(signal as u8);
    record.extend_from_slice(&items.to_le_bytes());
    record.extend_from_slice(body);
    let crc = crc32fast::hash(&record[HEADER..]);
    record[8..12].copy_from_slice(&crc.to_le_bytes());
    record
}

struct Record {
    seq: u64,
    batch: Batch,
    /// Where the next record starts.
    end: u64,
}

enum Damage {
    /// Not a whole, intact record.
    Corrupt,
    Io(std::io::Error),
}

/// Reads the record at `offset`, which must end by `limit`.
fn read_record(fs: &dyn Fs, path: &Path, offset: u64, limit: u64) -> Result<Record, Damage> {
    if limit.saturating_sub(offset) < (HEADER + META) as u64 {
        return Err(Damage::Corrupt);
    }
    let mut header = [0u8; HEADER];
    fs.read_at(path, offset, &mut header).map_err(Damage::Io)?;
    let word = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    let (magic, len, crc) = (word(0), u64::from(word(4)), word(8));
    let end = offset + HEADER as u64 + len;
    if magic != MAGIC || len < META as u64 || len > MAX_RECORD || end > limit {
        return Err(Damage::Corrupt);
    }
    let mut payload = vec![0u8; len as usize];
    fs.read_at(path, offset + HEADER as u64, &mut payload)
        .map_err(Damage::Io)?;
    if crc32fast::hash(&payload) != crc {
        return Err(Damage::Corrupt);
    }
    let seq = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
    let signal = match payload[8] {
        0 => Signal::Traces,
        1 => Signal::Metrics,
        2 => Signal::Logs,
        _ => return Err(Damage::Corrupt),
    };
    let items = u32::from_le_bytes(payload[9..13].try_into().expect("4 bytes")) as usize;
    let body = Bytes::from(payload).slice(META..);
    Ok(Record {
        seq,
        batch: Batch::trusted(signal, body, items),
        end,
    })
}

/// The offset of the first intact record at or after `from`, or `limit` when there is none.
fn resync(fs: &dyn Fs, path: &Path, from: u64, limit: u64) -> u64 {
    const CHUNK: u64 = 64 << 10;
    let magic = MAGIC.to_le_bytes();
    let mut at = from;
    while at + 4 <= limit {
        let n = CHUNK.min(limit - at) as usize;
        let mut window = vec![0u8; n];
        if fs.read_at(path, at, &mut window).is_err() {
            return limit;
        }
        for i in 0..n.saturating_sub(3) {
            if window[i..i + 4] == magic && read_record(fs, path, at + i as u64, limit).is_ok() {
                return at + i as u64;
            }
        }
        // Overlap by three bytes so a magic across the window's edge is seen.
        at += (n as u64).saturating_sub(3).max(1);
    }
    limit
}

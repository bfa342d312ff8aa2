//! A persistent sending queue: batches appended to segment files and acknowledged upstream only
//! once on disk (`fdatasync`, shared by concurrent writers), delivered in order by workers, and
//! replayed after a restart, including after `kill -9`, from the oldest batch not yet
//! delivered. A batch may be delivered twice around a crash; none is lost.
//!
//! Record layout: `len: u32` (of what follows the checksum), `crc32: u32`, `seq: u64`,
//! `signal: u8`, `items: u32`, then the encoded request. A torn record at the end of the last
//! segment (a crash mid-write, never acknowledged) is cut off on open.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use odigos_proto::Signal;
use tokio::sync::{Notify, watch};

use crate::Batch;

const SEGMENT_BYTES: u64 = 16 << 20;
const HEADER: usize = 8;

/// One queue directory, shared by every exporter instance that names it, so a rebuilt exporter
/// takes over its predecessor's backlog.
pub struct DiskQueue {
    dir: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
    /// Highest sequence number known to be on disk.
    synced: watch::Sender<u64>,
    written: Arc<Notify>,
    available: Notify,
}

struct State {
    /// Start sequence of each segment, oldest first.
    segments: Vec<u64>,
    writer: File,
    writer_bytes: u64,
    total_bytes: u64,
    next_seq: u64,
    /// Where the reader is: segment index into `segments`, byte offset, next expected seq.
    read_segment: usize,
    read_offset: u64,
    read_seq: u64,
    /// Batches handed to workers and not yet done.
    in_flight: BTreeSet<u64>,
    /// Batches given back by stopping workers, delivered first.
    returned: VecDeque<(u64, Batch)>,
    /// Oldest sequence not yet delivered, as last written to the cursor file.
    saved_floor: u64,
}

/// Why a batch could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("persistent queue {dir} is full ({max_mib} MiB)")]
    Full { dir: String, max_mib: u64 },
    #[error("persistent queue {dir}: {error}")]
    Io { dir: String, error: std::io::Error },
}

fn registry() -> &'static Mutex<HashMap<PathBuf, Weak<DiskQueue>>> {
    static OPEN: std::sync::OnceLock<Mutex<HashMap<PathBuf, Weak<DiskQueue>>>> =
        std::sync::OnceLock::new();
    OPEN.get_or_init(Default::default)
}

impl DiskQueue {
    /// Opens (or creates) the queue in `dir`, replaying what was not delivered.
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<Arc<DiskQueue>> {
        let mut open = registry().lock().unwrap();
        if let Some(queue) = open.get(dir).and_then(Weak::upgrade) {
            return Ok(queue);
        }
        std::fs::create_dir_all(dir)?;
        let floor: u64 = std::fs::read_to_string(dir.join("cursor"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let mut segments: Vec<u64> = std::fs::read_dir(dir)?
            .filter_map(|e| {
                e.ok()?
                    .file_name()
                    .to_str()?
                    .strip_suffix(".seg")?
                    .parse()
                    .ok()
            })
            .collect();
        segments.sort_unstable();
        // Segments wholly below the floor were delivered.
        while segments.len() > 1 && segments[1] <= floor {
            std::fs::remove_file(segment_path(dir, segments[0]))?;
            segments.remove(0);
        }
        let next_seq = match segments.last() {
            Some(&last) => repair(&segment_path(dir, last), last)?,
            None => floor,
        };
        if segments.is_empty() {
            segments.push(next_seq);
        }
        let last = *segments.last().unwrap();
        let writer = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(dir, last))?;
        let writer_bytes = writer.metadata()?.len();
        let mut total_bytes = 0;
        for start in &segments {
            total_bytes += std::fs::metadata(segment_path(dir, *start)).map_or(0, |m| m.len());
        }
        let start_seq = floor.max(segments[0]);
        let queue = Arc::new(DiskQueue {
            dir: dir.to_path_buf(),
            max_bytes,
            state: Mutex::new(State {
                segments,
                writer,
                writer_bytes,
                total_bytes,
                next_seq,
                read_segment: 0,
                read_offset: 0,
                read_seq: start_seq,
                in_flight: BTreeSet::new(),
                returned: VecDeque::new(),
                saved_floor: floor,
            }),
            synced: watch::channel(next_seq.saturating_sub(1)).0,
            written: Arc::new(Notify::new()),
            available: Notify::new(),
        });
        if next_seq > start_seq {
            tracing::info!(dir = %dir.display(), batches = next_seq - start_seq, "persistent queue: replaying batches not yet delivered");
        }
        open.insert(dir.to_path_buf(), Arc::downgrade(&queue));
        Ok(queue)
    }

    /// Batches on disk and not yet delivered.
    pub fn len(&self) -> u64 {
        let state = self.state.lock().unwrap();
        state.next_seq - state.floor()
    }

    /// Appends a batch and returns once it is on disk.
    pub async fn push(&self, batch: Batch) -> Result<(), DiskError> {
        let io = |error| DiskError::Io {
            dir: self.dir.display().to_string(),
            error,
        };
        let (signal, items) = (batch.signal(), batch.items());
        let body = batch.into_bytes();
        let seq = {
            let mut state = self.state.lock().unwrap();
            let record = 8 + 8 + 1 + 4 + body.len() as u64;
            if state.total_bytes + record > self.max_bytes {
                return Err(DiskError::Full {
                    dir: self.dir.display().to_string(),
                    max_mib: self.max_bytes >> 20,
                });
            }
            if state.writer_bytes > 0 && state.writer_bytes + record > SEGMENT_BYTES {
                let start = state.next_seq;
                state.writer = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(segment_path(&self.dir, start))
                    .map_err(io)?;
                state.segments.push(start);
                state.writer_bytes = 0;
            }
            let seq = state.next_seq;
            let mut payload = Vec::with_capacity(13 + body.len());
            payload.extend_from_slice(&seq.to_le_bytes());
            payload.push(signal as u8);
            payload.extend_from_slice(&(items as u32).to_le_bytes());
            payload.extend_from_slice(&body);
            let mut record = Vec::with_capacity(HEADER + payload.len());
            record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            record.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            record.extend_from_slice(&payload);
            state.writer.write_all(&record).map_err(io)?;
            state.writer_bytes += record.len() as u64;
            state.total_bytes += record.len() as u64;
            state.next_seq += 1;
            seq
        };
        self.written.notify_one();
        let mut synced = self.synced.subscribe();
        // The syncer runs while any queue handle lives, which this call holds.
        let _ = synced.wait_for(|&s| s >= seq).await;
        Ok(())
    }

    /// Makes appended records durable, sharing one `fdatasync` among all writers waiting.
    pub async fn sync_forever(self: Arc<Self>) {
        let queue = Arc::downgrade(&self);
        let written = self.written.clone();
        drop(self);
        loop {
            let Some(this) = queue.upgrade() else { return };
            let (file, upto) = {
                let state = this.state.lock().unwrap();
                (state.writer.try_clone(), state.next_seq.wrapping_sub(1))
            };
            if *this.synced.borrow() != upto {
                if let Ok(file) = file {
                    let _ = tokio::task::spawn_blocking(move || file.sync_data()).await;
                }
                this.synced.send_replace(upto);
                this.available.notify_waiters();
            }
            this.save_floor();
            drop(this);
            // `notify_one` keeps a permit when nobody waits, so no append is missed here.
            tokio::select! {
                _ = written.notified() => {}
                _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
            }
        }
    }

    /// The next batch to deliver, waiting for one. Cancel-safe: a batch is taken only when
    /// returned.
    pub async fn next(&self) -> (u64, Batch) {
        loop {
            let notified = self.available.notified();
            if let Some(found) = self.take() {
                return found;
            }
            // The timeout is a backstop; appends and give-backs wake workers directly.
            let _ = tokio::time::timeout(std::time::Duration::from_millis(100), notified).await;
        }
    }

    fn take(&self) -> Option<(u64, Batch)> {
        let mut state = self.state.lock().unwrap();
        if let Some((seq, batch)) = state.returned.pop_front() {
            state.in_flight.insert(seq);
            return Some((seq, batch));
        }
        let synced = *self.synced.borrow();
        while state.read_seq <= synced && state.read_seq < state.next_seq {
            let path = segment_path(&self.dir, state.segments[state.read_segment]);
            match read_record(&path, state.read_offset) {
                Ok(Some((record, len))) => {
                    state.read_offset += len;
                    if record.seq < state.read_seq {
                        continue;
                    }
                    state.read_seq = record.seq + 1;
                    state.in_flight.insert(record.seq);
                    return Some((record.seq, record.batch));
                }
                // The end of this segment: move to the next one.
                Ok(None) if state.read_segment + 1 < state.segments.len() => {
                    state.read_segment += 1;
                    state.read_offset = 0;
                }
                Ok(None) => return None,
                Err(e) => {
                    tracing::error!(dir = %self.dir.display(), error = %e, "persistent queue: unreadable record skipped");
                    state.read_seq += 1;
                }
            }
        }
        None
    }

    /// Marks a batch delivered (or given up on).
    pub fn done(&self, seq: u64) {
        let mut state = self.state.lock().unwrap();
        state.in_flight.remove(&seq);
        let floor = state.floor();
        // Delete segments whose every record is below the floor and that the reader has left.
        while state.segments.len() > 1 && state.segments[1] <= floor && state.read_segment > 0 {
            let start = state.segments.remove(0);
            let path = segment_path(&self.dir, start);
            state.total_bytes -= std::fs::metadata(&path).map_or(0, |m| m.len());
            let _ = std::fs::remove_file(path);
            state.read_segment -= 1;
        }
    }

    /// Gives a batch back for another worker to deliver.
    pub fn give_back(&self, seq: u64, batch: Batch) {
        let mut state = self.state.lock().unwrap();
        state.in_flight.remove(&seq);
        state.returned.push_back((seq, batch));
        drop(state);
        self.available.notify_one();
    }

    /// Records how far delivery got, so a restart replays from there.
    fn save_floor(&self) {
        let floor = {
            let mut state = self.state.lock().unwrap();
            let floor = state.floor();
            if floor == state.saved_floor {
                return;
            }
            state.saved_floor = floor;
            floor
        };
        let staged = self.dir.join("cursor.tmp");
        if std::fs::write(&staged, floor.to_string()).is_ok() {
            let _ = std::fs::rename(staged, self.dir.join("cursor"));
        }
    }
}

impl State {
    /// The oldest sequence not yet delivered.
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
        .unwrap()
    }
}

fn segment_path(dir: &Path, start: u64) -> PathBuf {
    dir.join(format!("{start:020}.seg"))
}

struct Record {
    seq: u64,
    batch: Batch,
}

/// Reads the record at `offset`; `None` at a clean end of file.
fn read_record(path: &Path, offset: u64) -> std::io::Result<Option<(Record, u64)>> {
    let mut file = BufReader::new(File::open(path)?);
    file.seek(SeekFrom::Start(offset))?;
    let mut header = [0u8; HEADER];
    match file.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(header[..4].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().unwrap());
    let mut payload = vec![0u8; len];
    file.read_exact(&mut payload)?;
    if len < 13 || crc32fast::hash(&payload) != crc {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "checksum mismatch",
        ));
    }
    let seq = u64::from_le_bytes(payload[..8].try_into().unwrap());
    let signal = match payload[8] {
        0 => Signal::Traces,
        1 => Signal::Metrics,
        _ => Signal::Logs,
    };
    let items = u32::from_le_bytes(payload[9..13].try_into().unwrap()) as usize;
    let bytes = Bytes::from(payload).slice(13..);
    Ok(Some((
        Record {
            seq,
            batch: Batch::Encoded {
                signal,
                bytes,
                items,
            },
        },
        (HEADER + len) as u64,
    )))
}

/// Cuts a torn record off the end of a segment; returns the sequence after its last record.
fn repair(path: &Path, start: u64) -> std::io::Result<u64> {
    let mut offset = 0;
    let mut next = start;
    loop {
        match read_record(path, offset) {
            Ok(Some((record, len))) => {
                offset += len;
                next = record.seq + 1;
            }
            Ok(None) => return Ok(next),
            Err(_) => {
                tracing::warn!(path = %path.display(), offset, "persistent queue: cutting a record torn by a crash");
                OpenOptions::new().write(true).open(path)?.set_len(offset)?;
                return Ok(next);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: u8) -> Batch {
        Batch::Encoded {
            signal: Signal::Logs,
            bytes: Bytes::from(vec![n; 10]),
            items: n as usize,
        }
    }

    async fn open(dir: &Path) -> Arc<DiskQueue> {
        let queue = DiskQueue::open(dir, 1 << 20).unwrap();
        tokio::spawn(queue.clone().sync_forever());
        queue
    }

    #[tokio::test]
    async fn replays_what_was_not_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let queue = open(dir.path()).await;
        for n in 1..=5 {
            queue.push(batch(n)).await.unwrap();
        }
        let (first, b1) = queue.next().await;
        let (second, b2) = queue.next().await;
        assert_eq!((b1.items(), b2.items()), (1, 2));
        queue.done(second);
        queue.save_floor();
        assert_eq!(queue.len(), 5, "the first batch is still in flight");
        queue.done(first);
        queue.save_floor();
        assert_eq!(queue.len(), 3);
        let (third, _) = queue.next().await;
        drop(queue);
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;

        // A crash now: the third was taken but not delivered, so it comes back with the rest.
        let queue = open(dir.path()).await;
        let mut replayed = Vec::new();
        for _ in 0..3 {
            let (seq, batch) = queue.next().await;
            replayed.push((seq, batch.items()));
        }
        assert_eq!(replayed, [(third, 3), (third + 1, 4), (third + 2, 5)]);
    }

    #[tokio::test]
    async fn cuts_a_torn_record_and_refuses_when_full() {
        let dir = tempfile::tempdir().unwrap();
        let queue = open(dir.path()).await;
        queue.push(batch(1)).await.unwrap();
        queue.push(batch(2)).await.unwrap();
        drop(queue);
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        let segment = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "seg"))
            .unwrap();
        let len = std::fs::metadata(&segment).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&segment)
            .unwrap()
            .set_len(len - 3)
            .unwrap();

        let queue = open(dir.path()).await;
        assert_eq!(queue.len(), 1, "the torn second record is gone");
        assert_eq!(queue.next().await.1.items(), 1);
        let big = Batch::Encoded {
            signal: Signal::Logs,
            bytes: Bytes::from(vec![0u8; 2 << 20]),
            items: 1,
        };
        assert!(matches!(queue.push(big).await, Err(DiskError::Full { .. })));
        queue.push(batch(3)).await.unwrap();
        assert_eq!(queue.next().await.1.items(), 3);
    }
}

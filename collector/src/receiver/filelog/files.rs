//! The files a `filelog` receiver reads, known by their fingerprint (their first bytes) and
//! not by their name. A file renamed is the same file under its new name, or read on to its
//! end through the handle kept open when the globs no longer match its name; the copy that
//! copytruncate leaves is the file it was copied from, and what is written to the truncated
//! original from its start is a new file.

use std::collections::{BTreeSet, HashSet};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::framing::{Framing, Progress, Split};

/// Polls a file is kept after the globs stop finding it, so that a file renamed away is
/// read to its end.
const KEPT_UNSEEN: u32 = 2;

/// A file being read.
pub struct Tracked {
    pub fingerprint: Vec<u8>,
    pub path: PathBuf,
    file: File,
    /// Device and inode of `file`.
    identity: (u64, u64),
    /// Where the next record starts: what is before it was acknowledged.
    pub offset: u64,
    /// Polls since the globs last found it.
    unseen: u32,
    /// Since when data past `offset` has waited to make a whole record.
    pub waiting_since: Option<Instant>,
    /// The rest of a line cut at `max_log_size` is to be skipped.
    skipping: bool,
}

/// Where reading resumes: offsets by fingerprint, kept in a storage directory.
#[derive(Default, Serialize, Deserialize)]
pub struct Checkpoints {
    pub files: Vec<Checkpoint>,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The file's first bytes, hex.
    pub fingerprint: String,
    pub offset: u64,
    /// Its path when it was saved, for people reading the file.
    pub path: PathBuf,
}

impl Checkpoints {
    /// The offset saved for a file with this fingerprint.
    fn offset(&self, fingerprint: &[u8]) -> Option<u64> {
        self.files.iter().find_map(|c| {
            let saved = unhex(&c.fingerprint)?;
            same_start(&saved, fingerprint).then_some(c.offset)
        })
    }
}

/// What a poll found: the settings it needs.
pub struct Scan<'a> {
    pub include: &'a [glob::Pattern],
    pub exclude: &'a [glob::Pattern],
    pub fingerprint_size: usize,
    /// New files found at the first poll start at their end (`start_at: end`).
    pub start_at_end: bool,
}

#[derive(Default)]
pub struct Files {
    pub tracked: Vec<Tracked>,
    /// Paths that could not be read, said once each.
    unreadable: HashSet<PathBuf>,
}

impl Files {
    /// Finds the files the globs match and takes each to be the tracked file whose
    /// fingerprint it shares, or a new one: read from its checkpoint, from its end when this
    /// is the `first` poll and `start_at` is `end`, or from its start.
    pub fn poll(&mut self, scan: &Scan<'_>, first: bool, checkpoints: &Checkpoints) {
        for tracked in &mut self.tracked {
            tracked.unseen = tracked.unseen.saturating_add(1);
        }
        let mut claimed = BTreeSet::new();
        let mut seen: Vec<Vec<u8>> = Vec::new();
        let (found, unreadable) = matching(scan.include, scan.exclude);
        for (path, e) in unreadable {
            self.cannot_read(path, &e);
        }
        for path in found {
            let (file, identity, fingerprint) = match open(&path, scan.fingerprint_size) {
                Ok(opened) => {
                    self.unreadable.remove(&path);
                    opened
                }
                Err(e) => {
                    self.cannot_read(path, &e);
                    continue;
                }
            };
            // Empty, or the same start as a file found already in this poll (a copy being
            // made): nothing to tell it by yet.
            if fingerprint.is_empty() || seen.iter().any(|f| same_start(f, &fingerprint)) {
                continue;
            }
            seen.push(fingerprint.clone());
            let unclaimed = |i: &usize| !claimed.contains(i);
            let known = (0..self.tracked.len())
                .filter(unclaimed)
                .find(|&i| {
                    let t = &self.tracked[i];
                    t.identity == identity && same_start(&t.fingerprint, &fingerprint)
                })
                .or_else(|| {
                    (0..self.tracked.len())
                        .filter(unclaimed)
                        .find(|&i| same_start(&self.tracked[i].fingerprint, &fingerprint))
                });
            match known {
                Some(i) => {
                    let tracked = &mut self.tracked[i];
                    if tracked.identity != identity {
                        // A copy of it (copytruncate), or itself renamed and found again.
                        tracked.file = file;
                        tracked.identity = identity;
                    }
                    if fingerprint.len() > tracked.fingerprint.len() {
                        tracked.fingerprint = fingerprint;
                    }
                    tracked.path = path;
                    tracked.unseen = 0;
                    claimed.insert(i);
                }
                None => {
                    let offset = match checkpoints.offset(&fingerprint) {
                        Some(offset) => offset,
                        None if first && scan.start_at_end => {
                            file.metadata().map(|m| m.len()).unwrap_or(0)
                        }
                        None => 0,
                    };
                    tracing::debug!(path = %path.display(), offset, "filelog: reading a new file");
                    claimed.insert(self.tracked.len());
                    self.tracked.push(Tracked {
                        fingerprint,
                        path,
                        file,
                        identity,
                        offset,
                        unseen: 0,
                        waiting_since: None,
                        skipping: false,
                    });
                }
            }
        }
    }

    /// Says once why `path` cannot be read; it is tried again at each poll.
    fn cannot_read(&mut self, path: PathBuf, error: &std::io::Error) {
        if self.unreadable.insert(path.clone()) {
            tracing::warn!(path = %path.display(), %error, "filelog: cannot read; trying again at each poll");
        }
    }

    /// Forgets the files the globs no longer find that have nothing more to read, and those
    /// whose content is no longer theirs (truncated and written anew).
    pub fn forget_finished(&mut self) {
        self.tracked.retain(|t| {
            let gone = t.unseen >= KEPT_UNSEEN;
            let finished = !t.still_there() || t.file.metadata().is_ok_and(|m| m.len() <= t.offset);
            !(gone && finished)
        });
    }

    /// The checkpoints of the files tracked now.
    pub fn checkpoints(&self) -> Checkpoints {
        Checkpoints {
            files: self
                .tracked
                .iter()
                .map(|t| Checkpoint {
                    fingerprint: hex(&t.fingerprint),
                    offset: t.offset,
                    path: t.path.clone(),
                })
                .collect(),
        }
    }
}

impl Tracked {
    /// Whether its handle still holds the content it was known by (copytruncate and
    /// applications that truncate their log make it start over with other bytes).
    fn still_there(&self) -> bool {
        let mut start = vec![0; self.fingerprint.len()];
        read_up_to(&self.file, &mut start, 0).is_ok_and(|n| start[..n] == self.fingerprint[..])
    }

    /// Reads the records that follow its offset, at most `limit` bytes of them, into
    /// `buffer` (kept from read to read); where they end becomes the offset once they are
    /// acknowledged ([`Split::progress`]).
    pub fn read<'a>(
        &mut self,
        framing: &Framing,
        limit: usize,
        now: Instant,
        buffer: &'a mut Vec<u8>,
    ) -> std::io::Result<Split<'a>> {
        let idle = Split {
            progress: self.progress(),
            ..Split::default()
        };
        if !self.still_there() {
            return Ok(idle);
        }
        let mut start = self.offset;
        let length = self.file.metadata()?.len();
        let wanted = length.saturating_sub(start).min(limit as u64) as usize;
        if wanted == 0 {
            return Ok(idle);
        }
        if buffer.len() < wanted {
            buffer.resize(wanted, 0);
        }
        let n = read_up_to(&self.file, &mut buffer[..wanted], start)?;
        let mut read = &buffer[..n];
        if self.skipping {
            // The rest of a line that was cut: up to its newline.
            match memchr::memchr(b'\n', read) {
                Some(end) => {
                    self.skipping = false;
                    read = &read[end + 1..];
                    start += (end + 1) as u64;
                }
                None => {
                    self.offset += n as u64;
                    return Ok(Split {
                        progress: self.progress(),
                        ..Split::default()
                    });
                }
            }
            self.offset = start;
        }
        let flush = self
            .waiting_since
            .is_some_and(|since| now.duration_since(since) >= framing.flush_after);
        let split = framing.split(read, start, flush, wanted == limit);
        self.waiting_since = match (split.waiting, self.waiting_since) {
            (false, _) => None,
            (true, Some(since)) if split.records.is_empty() => Some(since),
            (true, _) => Some(now),
        };
        Ok(split)
    }

    fn progress(&self) -> Progress {
        Progress {
            next: self.offset,
            skip_rest_of_line: self.skipping,
        }
    }

    /// The records of a read were acknowledged: the file continues after them.
    pub fn acknowledged(&mut self, progress: Progress) {
        self.offset = progress.next;
        self.skipping = progress.skip_rest_of_line;
    }
}

/// The files the `include` globs match, less those `exclude` matches, in order, and the
/// paths the globs could not look into (a directory with no permission) with the reason.
fn matching(
    include: &[glob::Pattern],
    exclude: &[glob::Pattern],
) -> (BTreeSet<PathBuf>, Vec<(PathBuf, std::io::Error)>) {
    let mut found = BTreeSet::new();
    let mut unreadable = Vec::new();
    for entry in include
        .iter()
        .filter_map(|pattern| glob::glob(pattern.as_str()).ok())
        .flatten()
    {
        match entry {
            Ok(path) if path.is_file() && !exclude.iter().any(|e| e.matches_path(&path)) => {
                found.insert(path);
            }
            Ok(_) => {}
            Err(e) => unreadable.push((e.path().to_path_buf(), e.into())),
        }
    }
    (found, unreadable)
}

/// Opens a file: its handle, device and inode, and its first `size` bytes.
fn open(path: &Path, size: usize) -> std::io::Result<(File, (u64, u64), Vec<u8>)> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    let mut fingerprint = vec![0; size];
    let n = read_up_to(&file, &mut fingerprint, 0)?;
    fingerprint.truncate(n);
    Ok((file, (meta.dev(), meta.ino()), fingerprint))
}

/// Reads into `buffer` from `offset` until it is full or the file ends; how much it read.
fn read_up_to(file: &File, buffer: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buffer.len() {
        match file.read_at(&mut buffer[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(read) => n += read,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Whether one fingerprint begins the other: a file read while short has grown since.
fn same_start(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().min(b.len());
    n > 0 && a[..n] == b[..n]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

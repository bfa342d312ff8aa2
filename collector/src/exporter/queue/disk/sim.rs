//! A file system for tests that loses, on a crash, every write no successful sync covered, and
//! fails on demand: torn appends, a full disk, failing syncs and reads.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rand::Rng;

use super::Fs;

#[derive(Default)]
pub struct SimFs {
    state: Mutex<State>,
}

#[derive(Clone, Default)]
struct State {
    /// The namespace as the running process sees it: path to inode.
    names: BTreeMap<PathBuf, usize>,
    /// The namespace as of the last directory sync: what a crash leaves.
    durable_names: BTreeMap<PathBuf, usize>,
    inodes: Vec<Inode>,
    faults: Faults,
}

#[derive(Clone, Default)]
struct Inode {
    data: Vec<u8>,
    /// The contents as of the last successful sync.
    durable: Vec<u8>,
}

/// Failures to inject; each count is used up as it fires.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// The next appends write only part of their data, then fail.
    pub torn_appends: usize,
    /// The next syncs fail (and make nothing durable).
    pub failed_syncs: usize,
    /// The next reads fail.
    pub failed_reads: usize,
    /// Bytes all files may hold; an append past it writes what fits and fails (disk full).
    pub capacity: Option<usize>,
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, path.display().to_string())
}

impl State {
    fn inode(&mut self, path: &Path) -> io::Result<&mut Inode> {
        let ino = *self.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(&mut self.inodes[ino])
    }

    /// A failed sync, if one is due.
    fn sync_fault(&mut self) -> io::Result<()> {
        if self.faults.failed_syncs == 0 {
            return Ok(());
        }
        self.faults.failed_syncs -= 1;
        Err(io::Error::other("injected sync error"))
    }

    fn used(&self) -> usize {
        self.names
            .values()
            .map(|&i| self.inodes[i].data.len())
            .sum()
    }

    fn create(&mut self, path: &Path) -> usize {
        self.inodes.push(Inode::default());
        let ino = self.inodes.len() - 1;
        self.names.insert(path.to_path_buf(), ino);
        ino
    }
}

impl SimFs {
    pub fn inject(&self, faults: Faults) {
        self.state.lock().unwrap().faults = faults;
    }

    /// What a machine that lost power now would find on restart: the synced namespace, each
    /// file as of its last sync, and with `torn`, some of the unsynced bytes after that.
    pub fn crash(&self, rng: &mut impl Rng, torn: bool) -> SimFs {
        let state = self.state.lock().unwrap();
        let mut after = State::default();
        for (path, &ino) in &state.durable_names {
            let inode = &state.inodes[ino];
            let mut data = inode.durable.clone();
            let extends = inode.data.len() > data.len() && inode.data.starts_with(&data);
            if torn && extends && rng.random_bool(0.5) {
                let extra = rng.random_range(0..=inode.data.len() - data.len());
                data.extend_from_slice(&inode.data[data.len()..data.len() + extra]);
            }
            after.inodes.push(Inode {
                durable: data.clone(),
                data,
            });
            let new = after.inodes.len() - 1;
            after.names.insert(path.clone(), new);
            after.durable_names.insert(path.clone(), new);
        }
        SimFs {
            state: Mutex::new(after),
        }
    }

    /// Flips a byte of a file, as damage on disk would.
    pub fn damage(&self, path: &Path, offset: usize) {
        let mut state = self.state.lock().unwrap();
        let inode = state.inode(path).unwrap();
        inode.data[offset] ^= 0xff;
        inode.durable = inode.data.clone();
    }

    pub fn names(&self) -> Vec<PathBuf> {
        self.state.lock().unwrap().names.keys().cloned().collect()
    }

    pub fn size(&self, path: &Path) -> usize {
        let mut state = self.state.lock().unwrap();
        state.inode(path).map_or(0, |inode| inode.data.len())
    }
}

impl Fs for SimFs {
    fn create_dir_all(&self, _: &Path) -> io::Result<()> {
        Ok(())
    }

    fn lock(&self, _: &Path) -> io::Result<()> {
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.state.lock().unwrap();
        Ok(state
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| Some(p.file_name()?.to_str()?.to_string()))
            .collect())
    }

    fn len(&self, path: &Path) -> io::Result<u64> {
        let mut state = self.state.lock().unwrap();
        Ok(state.inode(path)?.data.len() as u64)
    }

    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        if state.faults.failed_reads > 0 {
            state.faults.failed_reads -= 1;
            return Err(io::Error::other("injected read error"));
        }
        let data = &state.inode(path)?.data;
        let start = offset as usize;
        let end = start + buf.len();
        if end > data.len() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.copy_from_slice(&data[start..end]);
        Ok(())
    }

    fn append(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        let room = state
            .faults
            .capacity
            .map_or(usize::MAX, |cap| cap.saturating_sub(state.used()));
        let torn = state.faults.torn_appends > 0;
        if torn {
            state.faults.torn_appends -= 1;
        }
        let ino = match state.names.get(path) {
            Some(&ino) => ino,
            None => state.create(path),
        };
        let inode = &mut state.inodes[ino];
        if torn || data.len() > room {
            let written = if torn { data.len() / 2 } else { room };
            inode.data.extend_from_slice(&data[..written.min(room)]);
            let kind = if torn {
                io::ErrorKind::Other
            } else {
                io::ErrorKind::StorageFull
            };
            return Err(io::Error::new(kind, "injected write error"));
        }
        inode.data.extend_from_slice(data);
        Ok(())
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        state.inode(path)?.data.truncate(len as usize);
        Ok(())
    }

    fn sync(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        state.sync_fault()?;
        let inode = state.inode(path)?;
        inode.durable = inode.data.clone();
        Ok(())
    }

    fn sync_dir(&self, _: &Path) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        state.sync_fault()?;
        state.durable_names = state.names.clone();
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        state.names.remove(path).ok_or_else(|| not_found(path))?;
        Ok(())
    }

    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        let ino = state.create(path);
        state.inodes[ino].data = data.to_vec();
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        let ino = state.names.remove(from).ok_or_else(|| not_found(from))?;
        state.names.insert(to.to_path_buf(), ino);
        Ok(())
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut state = self.state.lock().unwrap();
        Ok(state.inode(path)?.data.clone())
    }
}

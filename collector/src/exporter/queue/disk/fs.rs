//! The file operations a disk queue needs, behind a trait so that tests can run the queue on
//! a file system that crashes, tears writes, fills up and fails.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub trait Fs: Send + Sync + 'static {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Claims `dir` for this queue; fails while another process holds it.
    fn lock(&self, dir: &Path) -> io::Result<()>;
    /// File names in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    fn len(&self, path: &Path) -> io::Result<u64>;
    /// Fills `buf` from `offset`.
    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Appends to the file, creating it; on error part of `data` may have been written.
    fn append(&self, path: &Path, data: &[u8]) -> io::Result<()>;
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()>;
    /// Makes the file's contents durable.
    fn sync(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (created, removed, renamed files) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Creates or replaces the file with `data`.
    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
}

/// The real file system. Open files are kept, so appends and reads do not reopen them.
#[derive(Default)]
pub struct RealFs {
    open: Mutex<HashMap<PathBuf, File>>,
    /// Held for the life of the queue: the lock goes with it.
    locks: Mutex<Vec<File>>,
}

impl RealFs {
    /// Runs `f` on the open file, opening it first (creating it only for an append).
    fn with<T>(
        &self,
        path: &Path,
        create: bool,
        f: impl FnOnce(&File) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut open = self.open.lock().unwrap();
        if !open.contains_key(path) {
            let file = OpenOptions::new()
                .read(true)
                .append(true)
                .create(create)
                .open(path)?;
            open.insert(path.to_path_buf(), file);
        }
        f(&open[path])
    }

    fn forget(&self, path: &Path) {
        self.open.lock().unwrap().remove(path);
    }
}

impl Fs for RealFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn lock(&self, dir: &Path) -> io::Result<()> {
        let file = File::create(dir.join("lock"))?;
        file.try_lock().map_err(|_| {
            io::Error::new(
                io::ErrorKind::WouldBlock,
                "another process uses this queue directory",
            )
        })?;
        self.locks.lock().unwrap().push(file);
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            if let Some(name) = entry?.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }

    fn len(&self, path: &Path) -> io::Result<u64> {
        Ok(std::fs::metadata(path)?.len())
    }

    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.with(path, false, |file| file.read_exact_at(buf, offset))
    }

    fn append(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        self.with(path, true, |mut file| file.write_all(data))
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        self.with(path, false, |file| file.set_len(len))
    }

    fn sync(&self, path: &Path) -> io::Result<()> {
        self.with(path, false, File::sync_data)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.forget(path);
        std::fs::remove_file(path)
    }

    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        self.forget(path);
        std::fs::write(path, data)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.forget(from);
        self.forget(to);
        std::fs::rename(from, to)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }
}

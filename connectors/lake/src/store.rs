//! The lake's file I/O, behind a small interface so an object store can follow the local disk.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Storage for lake files. Paths are relative to the lake root and use `/`.
pub trait LakeStore: Send {
    type Writer: Write + Send;

    /// Creates (truncating) a file that is not yet visible under its final name.
    fn create(&self, path: &str) -> io::Result<Self::Writer>;
    /// Makes a finished file's bytes durable.
    fn sync(&self, writer: Self::Writer) -> io::Result<()>;
    /// Atomically gives a durable file its final name.
    fn publish(&self, from: &str, to: &str) -> io::Result<()>;
    /// Atomically replaces `path` with `bytes` (durable when it returns).
    fn put_atomic(&self, path: &str, bytes: &[u8]) -> io::Result<()>;
    /// Reads a whole small file, `None` when it does not exist.
    fn get(&self, path: &str) -> io::Result<Option<Vec<u8>>>;
    fn exists(&self, path: &str) -> io::Result<bool>;
    fn remove(&self, path: &str) -> io::Result<()>;
    /// Every file below the root, as relative paths.
    fn list(&self) -> io::Result<Vec<String>>;
}

/// A lake on the local filesystem. Durability follows POSIX: fsync the file, rename, fsync the
/// directory.
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub fn new(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root)?;
        Ok(LocalStore { root })
    }

    fn full(&self, path: &str) -> PathBuf {
        self.root.join(path)
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or_else(|| Path::new("."))
}

impl LakeStore for LocalStore {
    type Writer = BufWriter<File>;

    fn create(&self, path: &str) -> io::Result<Self::Writer> {
        let full = self.full(path);
        let dir = parent(&full);
        if !dir.exists() {
            fs::create_dir_all(dir)?;
            sync_dir(parent(dir))?;
        }
        Ok(BufWriter::with_capacity(1 << 20, File::create(full)?))
    }

    fn sync(&self, writer: Self::Writer) -> io::Result<()> {
        let file = writer.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()
    }

    fn publish(&self, from: &str, to: &str) -> io::Result<()> {
        let to = self.full(to);
        fs::rename(self.full(from), &to)?;
        sync_dir(parent(&to))
    }

    fn put_atomic(&self, path: &str, bytes: &[u8]) -> io::Result<()> {
        let full = self.full(path);
        let dir = parent(&full);
        fs::create_dir_all(dir)?;
        let temp = full.with_extension("json.tmp");
        let mut file = File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, &full)?;
        sync_dir(dir)
    }

    fn get(&self, path: &str) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.full(path)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }

    fn exists(&self, path: &str) -> io::Result<bool> {
        self.full(path).try_exists()
    }

    fn remove(&self, path: &str) -> io::Result<()> {
        fs::remove_file(self.full(path))
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        let mut pending = vec![self.root.clone()];
        while let Some(dir) = pending.pop() {
            for entry in fs::read_dir(&dir)? {
                let entry = entry?;
                let path = entry.path();
                if entry.file_type()?.is_dir() {
                    pending.push(path);
                } else if let Ok(relative) = path.strip_prefix(&self.root) {
                    out.push(relative.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

//! The checkpoint file: the durable source position, as versioned JSON, replaced atomically
//! (write a temporary file, fsync, rename, fsync the directory).

use headwater_contract::Position;
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

const CHECKPOINT_FILE: &str = "checkpoint.json";
const LOCK_FILE: &str = "lock";
const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub version: u32,
    pub server_name: String,
    /// Every change before this position is durable in the sink.
    pub position: Position,
    pub updated_at_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("state directory {dir}: {source}; check that it exists and is writable")]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("checkpoint {path} is unreadable ({message}); restore it, or move it away to start over (which re-reads or skips changes as `start` says)")]
    Corrupt { path: PathBuf, message: String },
    #[error("checkpoint {path} belongs to server name `{found}`, but the config says `{expected}`; use a separate state.path per pipeline")]
    WrongPipeline {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("state directory {dir} is in use by another running Headwater; stop it first or use another state.path")]
    Locked { dir: PathBuf },
}

/// The checkpoint file of one pipeline, held under an exclusive lock while the store lives.
pub struct CheckpointStore {
    dir: PathBuf,
    server_name: String,
    _lock: Option<File>,
}

/// A checkpoint written to its temporary file but not yet in place.
pub struct StagedCheckpoint<'a> {
    store: &'a CheckpointStore,
    temp: PathBuf,
}

impl CheckpointStore {
    /// Opens the state directory, taking its lock so two pipelines cannot share it.
    pub fn open(dir: &Path, server_name: &str) -> Result<Self, CheckpointError> {
        let mut store = Self::open_unlocked(dir, server_name)?;
        let io = |source| CheckpointError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))
            .map_err(io)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(CheckpointError::Locked {
                    dir: dir.to_path_buf(),
                })
            }
            Err(fs::TryLockError::Error(err)) => return Err(io(err)),
        }
        store._lock = Some(lock);
        Ok(store)
    }

    /// Opens for reading only (`headwater offsets` while a pipeline runs).
    pub fn open_unlocked(dir: &Path, server_name: &str) -> Result<Self, CheckpointError> {
        fs::create_dir_all(dir).map_err(|source| CheckpointError::Io {
            dir: dir.to_path_buf(),
            source,
        })?;
        Ok(CheckpointStore {
            dir: dir.to_path_buf(),
            server_name: server_name.to_string(),
            _lock: None,
        })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(CHECKPOINT_FILE)
    }

    pub fn load(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        let path = self.path();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CheckpointError::Io {
                    dir: self.dir.clone(),
                    source,
                })
            }
        };
        let checkpoint: Checkpoint =
            serde_json::from_slice(&bytes).map_err(|err| CheckpointError::Corrupt {
                path: path.clone(),
                message: err.to_string(),
            })?;
        if checkpoint.version != VERSION {
            return Err(CheckpointError::Corrupt {
                path,
                message: format!(
                    "version {} is not supported (expected {VERSION})",
                    checkpoint.version
                ),
            });
        }
        if checkpoint.server_name != self.server_name {
            return Err(CheckpointError::WrongPipeline {
                path,
                found: checkpoint.server_name,
                expected: self.server_name.clone(),
            });
        }
        Ok(Some(checkpoint))
    }

    /// Writes and fsyncs the new checkpoint under a temporary name; `publish` puts it in place.
    pub fn stage(&self, position: &Position) -> Result<StagedCheckpoint<'_>, CheckpointError> {
        let checkpoint = Checkpoint {
            version: VERSION,
            server_name: self.server_name.clone(),
            position: position.clone(),
            updated_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
        };
        let io = |source| CheckpointError::Io {
            dir: self.dir.clone(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(&checkpoint).map_err(|e| io(e.into()))?;
        let temp = self.dir.join(format!("{CHECKPOINT_FILE}.tmp"));
        let mut file = File::create(&temp).map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(StagedCheckpoint { store: self, temp })
    }

    /// Durably replaces the checkpoint.
    pub fn store(&self, position: &Position) -> Result<(), CheckpointError> {
        self.stage(position)?.publish()
    }
}

impl StagedCheckpoint<'_> {
    pub fn publish(self) -> Result<(), CheckpointError> {
        let io = |source| CheckpointError::Io {
            dir: self.store.dir.clone(),
            source,
        };
        fs::rename(&self.temp, self.store.path()).map_err(io)?;
        File::open(&self.store.dir)
            .and_then(|d| d.sync_all())
            .map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use headwater_contract::{Lsn, PgPosition};

    fn pg(lsn: u64) -> Position {
        Position::Postgres(PgPosition::at(Lsn(lsn), 0))
    }

    #[test]
    fn stores_and_loads_the_position() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), "shop").unwrap();
        assert!(store.load().unwrap().is_none());
        store.store(&pg(10)).unwrap();
        store.store(&pg(20)).unwrap();
        assert_eq!(store.load().unwrap().unwrap().position, pg(20));
    }

    #[test]
    fn a_crash_between_write_and_rename_leaves_the_old_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), "shop").unwrap();
        store.store(&pg(10)).unwrap();
        let staged = store.stage(&pg(20)).unwrap();
        drop(staged); // the process dies here: the temporary file exists, the rename never happened
        assert!(dir.path().join("checkpoint.json.tmp").exists());
        drop(store);
        let reopened = CheckpointStore::open(dir.path(), "shop").unwrap();
        assert_eq!(reopened.load().unwrap().unwrap().position, pg(10));
    }

    #[test]
    fn a_second_pipeline_cannot_share_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let _first = CheckpointStore::open(dir.path(), "shop").unwrap();
        let err = CheckpointStore::open(dir.path(), "shop").err().unwrap();
        assert!(matches!(err, CheckpointError::Locked { .. }), "{err}");
    }

    #[test]
    fn a_checkpoint_of_another_pipeline_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        CheckpointStore::open(dir.path(), "shop")
            .unwrap()
            .store(&pg(1))
            .unwrap();
        let other = CheckpointStore::open_unlocked(dir.path(), "crm").unwrap();
        let err = other.load().unwrap_err().to_string();
        assert!(err.contains("separate state.path"), "{err}");
    }

    #[test]
    fn a_corrupt_checkpoint_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("checkpoint.json"), b"{ half").unwrap();
        let store = CheckpointStore::open_unlocked(dir.path(), "shop").unwrap();
        let err = store.load().unwrap_err().to_string();
        assert!(err.contains("restore it"), "{err}");
    }
}

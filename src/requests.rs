//! Backfill requests from `headwater backfill`: one file each in the state directory. The
//! running pipeline picks them up within a second (a stopped one when it starts); a request
//! file is deleted once a committed position shows the source accepted it, so a crash in
//! between loses no request and runs none twice.

use headwater_contract::{BackfillKind, BackfillRequest, TableId};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

const DIR: &str = "backfill-requests";
/// Present while copies are paused (`headwater backfill --pause`); survives restarts.
const PAUSED: &str = "backfill-paused";
/// Written by the running pipeline: the pause switch as its source now sees it.
const APPLIED: &str = "backfill-paused.applied";

pub struct RequestDir {
    dir: PathBuf,
}

impl RequestDir {
    pub fn new(state_dir: &Path) -> Self {
        RequestDir {
            dir: state_dir.join(DIR),
        }
    }

    /// Files as `(id, path)`, in id order.
    fn files(&self) -> Vec<(u64, PathBuf)> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut files: Vec<(u64, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let path = e.path();
                let id = path
                    .file_name()?
                    .to_str()?
                    .strip_suffix(".json")?
                    .parse()
                    .ok()?;
                Some((id, path))
            })
            .collect();
        files.sort();
        files
    }

    /// Writes a request; its id is later than every earlier one's.
    pub fn submit(
        &self,
        table: TableId,
        condition: Option<String>,
    ) -> std::io::Result<BackfillRequest> {
        fs::create_dir_all(&self.dir)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let last = self.files().last().map_or(0, |(id, _)| *id);
        let request = BackfillRequest {
            id: now.max(last + 1),
            table,
            condition,
            kind: BackfillKind::Incremental,
        };
        let path = self.dir.join(format!("{:020}.json", request.id));
        let temp = path.with_extension("tmp");
        let mut file = fs::File::create(&temp)?;
        file.write_all(&serde_json::to_vec_pretty(&request).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
        fs::rename(&temp, &path)?;
        sync_dir(&self.dir);
        Ok(request)
    }

    /// Requests waiting to be accepted.
    pub fn pending(&self) -> Vec<BackfillRequest> {
        self.files()
            .into_iter()
            .filter_map(|(_, path)| {
                let bytes = fs::read(&path).ok()?;
                match serde_json::from_slice::<BackfillRequest>(&bytes) {
                    Ok(request) => Some(request),
                    Err(err) => {
                        tracing::warn!(file = %path.display(), error = %err, "ignoring an unreadable backfill request; delete it and ask again with headwater backfill");
                        None
                    }
                }
            })
            .collect()
    }

    /// Turns the pause switch on or off (durably: it holds across restarts).
    pub fn set_paused(&self, paused: bool) -> std::io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        // the running pipeline records the new switch afresh once its source has it
        let _ = fs::remove_file(self.dir.join(APPLIED));
        let path = self.dir.join(PAUSED);
        if paused {
            let mut file = fs::File::create(&path)?;
            file.write_all(
                b"copies paused by `headwater backfill --pause`; `--resume` continues them\n",
            )?;
            file.sync_all()?;
        } else if path.exists() {
            fs::remove_file(&path)?;
        }
        sync_dir(&self.dir);
        Ok(())
    }

    pub fn paused(&self) -> bool {
        self.dir.join(PAUSED).exists()
    }

    /// The running pipeline records the switch it has handed to its source.
    pub fn record_applied(&self, paused: bool) -> std::io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let path = self.dir.join(APPLIED);
        let temp = path.with_extension("tmp");
        fs::write(&temp, if paused { "paused" } else { "running" })?;
        fs::rename(&temp, &path)
    }

    /// The switch the running pipeline last recorded, if any.
    pub fn applied(&self) -> Option<bool> {
        match fs::read_to_string(self.dir.join(APPLIED)).ok()?.as_str() {
            "paused" => Some(true),
            "running" => Some(false),
            _ => None,
        }
    }

    /// Deletes the requests a committed position shows accepted.
    pub fn forget_through(&self, accepted: u64) {
        for (id, path) in self.files() {
            if id <= accepted {
                let _ = fs::remove_file(path);
            }
        }
    }
}

/// Makes a rename or removal in `dir` durable (best effort: some filesystems refuse it).
fn sync_dir(dir: &Path) {
    if let Ok(dir) = fs::File::open(dir) {
        let _ = dir.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_ordered_and_forgotten_once_accepted() {
        let dir = std::env::temp_dir().join(format!("hw-requests-{}", std::process::id()));
        let requests = RequestDir::new(&dir);
        let table = TableId {
            namespace: "shop".into(),
            table: "orders".into(),
        };
        let first = requests.submit(table.clone(), None).unwrap();
        let second = requests.submit(table, Some("id > 10".into())).unwrap();
        assert!(second.id > first.id);
        let pending = requests.pending();
        assert_eq!(pending, vec![first.clone(), second.clone()]);
        requests.forget_through(first.id);
        assert_eq!(requests.pending(), vec![second]);
        assert!(!requests.paused());
        requests.set_paused(true).unwrap();
        assert!(
            requests.paused(),
            "the switch is a file: it holds across restarts"
        );
        assert_eq!(requests.pending().len(), 1, "the switch is not a request");
        requests.record_applied(true).unwrap();
        assert_eq!(requests.applied(), Some(true));
        requests.set_paused(false).unwrap();
        assert!(!requests.paused());
        let _ = fs::remove_dir_all(dir);
    }
}

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
        if let Ok(dir) = fs::File::open(&self.dir) {
            let _ = dir.sync_all();
        }
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

    /// Deletes the requests a committed position shows accepted.
    pub fn forget_through(&self, accepted: u64) {
        for (id, path) in self.files() {
            if id <= accepted {
                let _ = fs::remove_file(path);
            }
        }
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
        let _ = fs::remove_dir_all(dir);
    }
}

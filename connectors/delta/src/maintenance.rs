//! Keeping a table's file count bounded: compaction merges small files (a commit of `remove` and
//! `add` actions with `dataChange = false`, so readers of the changes see none), and the vacuum
//! deletes files that left the table longer ago than the retention.

use crate::error::delta_error;
use crate::table::{DeltaTarget, LiveFile};
use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::DeltaOperation;
use futures::StreamExt;
use headwater_contract::ConnectorError;
use std::collections::BTreeMap;
use std::time::Duration;

/// What a compaction did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Compaction {
    pub files_in: usize,
    pub files_out: usize,
}

impl DeltaTarget {
    /// Merges the small files of each partition once `min_files` of them have gathered, at most
    /// about one target file's worth at a time; `sort_by` (the mirror's key) orders the files
    /// merged, each sorted by it already, so merged files cover narrow key ranges.
    pub async fn compact(
        &mut self,
        min_files: usize,
        target_size: u64,
        sort_by: &[String],
    ) -> Result<Compaction, ConnectorError> {
        let small_below = (target_size / 2) as i64;
        let mut groups: BTreeMap<String, Vec<LiveFile>> = BTreeMap::new();
        for file in self.live_files(sort_by.first().map(String::as_str)).await? {
            if file.size < small_below {
                let mut partition: Vec<_> = file.partition.iter().collect();
                partition.sort();
                groups
                    .entry(format!("{partition:?}"))
                    .or_default()
                    .push(file);
            }
        }
        let mut done = Compaction::default();
        for (_, mut files) in groups {
            if files.len() < min_files {
                continue;
            }
            files.sort_by_key(|f| f.size);
            let mut total = 0i64;
            files.retain(|f| {
                total += f.size;
                total <= target_size as i64 || total == f.size
            });
            if files.len() < 2 {
                continue;
            }
            // in key order of their first rows: files written by rounds hold sorted rows, so
            // merged files keep covering narrow key ranges (a later merge reads few of them)
            files.sort_by(|a, b| compare_bounds(&a.min, &b.min));
            let schema = self.arrow_schema()?;
            let mut actions: Vec<_> = files.iter().map(|f| f.remove(false)).collect();
            // batch by batch: a compaction holds one batch and one row group, not its files
            let mut writer = self.file_writer(false)?;
            for file in &files {
                let mut batches = self.read_batches(file, None).await?;
                while let Some(part) = batches.next().await {
                    let part = part.map_err(|e| {
                        delta_error(&format!("compacting {} ({})", self.label, file.path), e)
                    })?;
                    writer
                        .write(crate::batch::conform(&part, &schema, &self.label)?)
                        .await?;
                }
            }
            let adds = writer.finish().await?;
            done.files_in += files.len();
            done.files_out += adds.len();
            actions.extend(adds);
            let operation = DeltaOperation::Optimize {
                predicate: None,
                target_size: target_size as i64,
            };
            let (round, position) = (self.round, self.committed.clone());
            self.commit(actions, operation, round, position).await?;
        }
        if done.files_in > 0 {
            tracing::debug!(table = %self.label, files_in = done.files_in, files_out = done.files_out, "delta: compacted");
        }
        Ok(done)
    }

    /// Deletes files no version younger than `retention` refers to; returns how many.
    pub async fn vacuum(&mut self, retention: Duration) -> Result<usize, ConnectorError> {
        let what = format!("vacuuming {}", self.label);
        let retention = chrono::Duration::from_std(retention).map_err(|e| delta_error(&what, e))?;
        let mut metadata = Vec::new();
        if let Some(position) = &self.committed {
            let value = serde_json::to_value(position).map_err(|e| delta_error(&what, e))?;
            metadata.push((crate::table::POSITION_KEY.to_string(), value));
        }
        let (table, metrics) = self
            .table()
            .clone()
            .vacuum()
            .with_retention_period(retention)
            // the retention is the user's choice (sink.vacuum_retention), not delta-rs's 7 days
            .with_enforce_retention_duration(false)
            .with_commit_properties(CommitProperties::default().with_metadata(metadata))
            .await
            .map_err(|e| delta_error(&what, e))?;
        self.replace_table(table);
        let deleted = metrics.files_deleted.len();
        if deleted > 0 {
            tracing::debug!(table = %self.label, deleted, "delta: vacuumed");
        }
        Ok(deleted)
    }
}

/// Orders file statistics bounds: numbers as numbers, anything else as its JSON text; a file
/// without them first.
fn compare_bounds(
    a: &Option<serde_json::Value>,
    b: &Option<serde_json::Value>,
) -> std::cmp::Ordering {
    match (a, b) {
        (Some(a), Some(b)) => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => x.total_cmp(&y),
            _ => a.to_string().cmp(&b.to_string()),
        },
        (a, b) => a.is_some().cmp(&b.is_some()),
    }
}

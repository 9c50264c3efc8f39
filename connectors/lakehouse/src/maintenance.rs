//! Keeping a table's file count bounded: compaction merges small files (a commit that marks
//! no data change, so readers of the changes see none); each format's vacuum deletes what
//! left the table longer ago than the retention.

use crate::error::lake_error;
use crate::format::{FileWriter, LiveFile, Operation, TableCommit, TableTarget};
use futures::StreamExt;
use headwater_contract::ConnectorError;
use std::collections::BTreeMap;

/// What a compaction did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Compaction {
    pub files_in: usize,
    pub files_out: usize,
}

/// Merges the small files of each partition once `min_files` of them have gathered, at most
/// about one target file's worth at a time; `sort_by` (the mirror's key) orders the files
/// merged, each sorted by it already, so merged files cover narrow key ranges.
pub async fn compact<T: TableTarget>(
    target: &mut T,
    min_files: usize,
    target_size: u64,
    sort_by: &[String],
) -> Result<Compaction, ConnectorError> {
    let small_below = (target_size / 2) as i64;
    let mut groups: BTreeMap<String, Vec<LiveFile<T::Handle>>> = BTreeMap::new();
    for file in target
        .live_files(sort_by.first().map(String::as_str))
        .await?
    {
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
        let schema = target.arrow_schema()?;
        // batch by batch: a compaction holds one batch and one row group, not its files
        let mut writer = target.file_writer()?;
        for file in &files {
            let mut batches = target.read_batches(file, None).await?;
            while let Some(part) = batches.next().await {
                let part = part.map_err(|e| {
                    lake_error(&format!("compacting {} ({})", target.label(), file.path), e)
                })?;
                writer
                    .write(crate::batch::conform(&part, &schema, target.label())?)
                    .await?;
            }
        }
        let added = writer.finish().await?;
        done.files_in += files.len();
        done.files_out += added.len();
        let (round, position) = (target.round(), target.committed().cloned());
        target
            .commit(TableCommit {
                operation: Operation::Compact { target_size },
                added,
                removed: files,
                round,
                position,
            })
            .await?;
    }
    if done.files_in > 0 {
        tracing::debug!(table = %target.label(), files_in = done.files_in, files_out = done.files_out, "compacted");
    }
    Ok(done)
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

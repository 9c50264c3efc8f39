//! The vacuum: files that left a Delta table longer ago than the retention are deleted (readers
//! of older versions keep working until then).

use crate::error::delta_error;
use crate::table::{DeltaTarget, POSITION_KEY};
use deltalake::kernel::transaction::CommitProperties;
use headwater_contract::ConnectorError;
use headwater_lakehouse::TableTarget;
use std::time::Duration;

/// Deletes files no version younger than `retention` refers to; returns how many.
pub async fn vacuum(
    target: &mut DeltaTarget,
    retention: Duration,
) -> Result<usize, ConnectorError> {
    let what = format!("vacuuming {}", target.label());
    let retention = chrono::Duration::from_std(retention).map_err(|e| delta_error(&what, e))?;
    let mut metadata = Vec::new();
    if let Some(position) = target.committed() {
        let value = serde_json::to_value(position).map_err(|e| delta_error(&what, e))?;
        metadata.push((POSITION_KEY.to_string(), value));
    }
    let (table, metrics) = target
        .table()
        .clone()
        .vacuum()
        .with_retention_period(retention)
        // the retention is the user's choice (sink.vacuum_retention), not delta-rs's 7 days
        .with_enforce_retention_duration(false)
        .with_commit_properties(CommitProperties::default().with_metadata(metadata))
        .await
        .map_err(|e| delta_error(&what, e))?;
    target.replace_table(table);
    let deleted = metrics.files_deleted.len();
    if deleted > 0 {
        tracing::debug!(table = %target.label(), deleted, "delta: vacuumed");
    }
    Ok(deleted)
}

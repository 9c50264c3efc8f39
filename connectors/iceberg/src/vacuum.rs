//! Snapshot expiry and orphan-file cleanup: snapshots older than the retention (but the
//! current one) leave the metadata, then every file under the table's directory that no
//! remaining snapshot or metadata file needs, and that is older than the retention, is deleted.
//! The age rule also keeps a file another commit is writing right now.

use crate::manifests::{self, iceberg_error};
use crate::table::IcebergTarget;
use futures::StreamExt;
use headwater_contract::ConnectorError;
use headwater_lakehouse::error::lake_error;
use iceberg::spec::TableMetadataBuilder;
use object_store::path::Path;
use object_store::ObjectStoreExt;
use std::collections::HashSet;
use std::time::Duration;

pub async fn vacuum(
    target: &mut IcebergTarget,
    retention: Duration,
) -> Result<usize, ConnectorError> {
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let cutoff = headwater_contract::now_ms().saturating_sub(retention_ms);
    let current = target.metadata.current_snapshot_id();
    let expired: Vec<i64> = target
        .metadata
        .snapshots()
        .filter(|s| s.timestamp_ms() < cutoff && Some(s.snapshot_id()) != current)
        .map(|s| s.snapshot_id())
        .collect();
    if !expired.is_empty() {
        let metadata = TableMetadataBuilder::new_from_metadata(
            target.metadata.clone(),
            Some(target.metadata_location.clone()),
        )
        .remove_snapshots(&expired)
        .build()
        .map_err(|e| iceberg_error(&format!("expiring snapshots of {}", target.label), e))?
        .metadata;
        target.publish(metadata).await?;
        tracing::debug!(table = %target.label, snapshots = expired.len(), "iceberg: expired snapshots");
    }
    let needed = needed_files(target).await?;
    let what = format!("iceberg: cleaning up files of {}", target.label);
    let prefix = Path::from(target.dir.as_str());
    let mut listing = target.warehouse.store.list(Some(&prefix));
    let mut orphans = Vec::new();
    while let Some(object) = listing.next().await {
        let object = object.map_err(|e| lake_error(&what, e))?;
        let old = object.last_modified.timestamp_millis() < cutoff;
        if old && !needed.contains(object.location.as_ref()) {
            orphans.push(object.location);
        }
    }
    drop(listing);
    let mut data_files = 0;
    for path in &orphans {
        target
            .warehouse
            .store
            .delete(path)
            .await
            .map_err(|e| lake_error(&what, e))?;
        if path.as_ref().ends_with(".parquet") {
            data_files += 1;
        }
    }
    if !orphans.is_empty() {
        tracing::debug!(table = %target.label, files = orphans.len(), "iceberg: deleted unneeded files");
    }
    Ok(data_files)
}

/// The store paths every remaining snapshot and metadata file needs.
async fn needed_files(target: &mut IcebergTarget) -> Result<HashSet<String>, ConnectorError> {
    let warehouse = std::sync::Arc::clone(&target.warehouse);
    let path = |uri: &str| warehouse.path_of(uri).map(|p| p.to_string());
    let mut needed = HashSet::new();
    needed.insert(path(&target.metadata_location)?);
    for log in target.metadata.metadata_log() {
        needed.insert(path(&log.metadata_file)?);
    }
    for entry in target.live_entries().await?.iter() {
        needed.insert(path(entry.data_file.file_path())?);
    }
    let snapshots: Vec<_> = target.metadata.snapshots().cloned().collect();
    for snapshot in snapshots {
        needed.insert(path(snapshot.manifest_list())?);
        for manifest in manifests::manifest_files(&warehouse, &snapshot).await? {
            needed.insert(path(&manifest.manifest_path)?);
        }
        if Some(snapshot.snapshot_id()) != target.metadata.current_snapshot_id() {
            for entry in manifests::live_entries(&warehouse, &snapshot).await? {
                needed.insert(path(entry.data_file.file_path())?);
            }
        }
    }
    Ok(needed)
}

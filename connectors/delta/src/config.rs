use headwater_lakehouse::options::{
    default_commit_interval, default_compact_min_files, default_target_file_size,
    default_vacuum_interval, default_vacuum_retention, validate_location, Compression, Deletes,
    PartitionBy, TableKinds, TableOptions,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// `[sink] kind = "delta"`: every captured table as Delta Lake tables — a current-state mirror
/// and a changelog — committed exactly once with the source position, on local disk or S3.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeltaConfig {
    /// Where the tables live: a local directory (created if missing) or `s3://bucket/prefix`.
    pub path: String,
    /// Which tables to keep per source table: `"mirror"`, `"changelog"` or `"both"`.
    #[serde(default)]
    pub tables: TableKinds,
    /// Longest time a change waits before it is committed (the tables' freshness), e.g. "10s".
    #[serde(default = "default_commit_interval", with = "humantime_serde")]
    pub commit_interval: Duration,
    /// Parquet files are cut at about this size, and compaction merges small files up to it.
    #[serde(default = "default_target_file_size")]
    pub target_file_size: u64,
    /// Parquet compression: `"zstd"`, `"snappy"`, `"gzip"` or `"none"`.
    #[serde(default)]
    pub compression: Compression,
    /// Partitioning of the changelog tables: `"day"` (of the source commit time) or `"none"`.
    #[serde(default)]
    pub partition_by: PartitionBy,
    /// How a deleted row leaves the mirror: `"hard"` (removed) or `"soft"` (kept, with
    /// `__deleted = true` and `__deleted_at`).
    #[serde(default)]
    pub deletes: Deletes,
    /// A table (or changelog partition) with this many files smaller than half the target size
    /// is compacted.
    #[serde(default = "default_compact_min_files")]
    pub compact_min_files: usize,
    /// Files no longer in a table are deleted this long after they left it (readers of older
    /// versions keep working until then).
    #[serde(default = "default_vacuum_retention", with = "humantime_serde")]
    pub vacuum_retention: Duration,
    /// How often the vacuum runs.
    #[serde(default = "default_vacuum_interval", with = "humantime_serde")]
    pub vacuum_interval: Duration,
    /// Object-store settings (for S3: `endpoint`, `region`, `allow_http`, `access_key_id`,
    /// `secret_access_key`, …); the standard `AWS_*` environment variables apply too.
    #[serde(default)]
    pub storage: BTreeMap<String, String>,
}

impl DeltaConfig {
    /// Checks the values alone, before anything is touched.
    pub fn validate(&self) -> Result<(), String> {
        validate_location("path", &self.path)?;
        self.options().validate()
    }

    /// The keys every lakehouse sink shares.
    pub fn options(&self) -> TableOptions {
        TableOptions {
            tables: self.tables,
            commit_interval: self.commit_interval,
            target_file_size: self.target_file_size,
            compression: self.compression,
            partition_by: self.partition_by,
            deletes: self.deletes,
            compact_min_files: self.compact_min_files,
            vacuum_retention: self.vacuum_retention,
            vacuum_interval: self.vacuum_interval,
        }
    }
}

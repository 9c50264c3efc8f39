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

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TableKinds {
    Mirror,
    Changelog,
    #[default]
    Both,
}

impl TableKinds {
    pub fn mirror(self) -> bool {
        matches!(self, TableKinds::Mirror | TableKinds::Both)
    }
    pub fn changelog(self) -> bool {
        matches!(self, TableKinds::Changelog | TableKinds::Both)
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Zstd,
    Snappy,
    Gzip,
    None,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PartitionBy {
    #[default]
    Day,
    None,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Deletes {
    #[default]
    Hard,
    Soft,
}

fn default_commit_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_target_file_size() -> u64 {
    128 * 1024 * 1024
}

fn default_compact_min_files() -> usize {
    16
}

fn default_vacuum_retention() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_vacuum_interval() -> Duration {
    Duration::from_secs(3600)
}

impl DeltaConfig {
    /// Checks the values alone, before anything is touched.
    pub fn validate(&self) -> Result<(), String> {
        if self.path.trim().is_empty() {
            return Err(
                "sink.path is empty: set it to a directory or s3://bucket/prefix, e.g. path = \"./lake\""
                    .into(),
            );
        }
        if self.path.contains("://")
            && !self.path.starts_with("s3://")
            && !self.path.starts_with("file://")
        {
            return Err(format!(
                "sink.path = {:?}: only local directories, file:// and s3:// are supported",
                self.path
            ));
        }
        if self.commit_interval < Duration::from_millis(10) {
            return Err(format!(
                "sink.commit_interval = {:?} is too short: use at least \"10ms\" (seconds are typical)",
                self.commit_interval
            ));
        }
        if self.target_file_size < 64 * 1024 {
            return Err(format!(
                "sink.target_file_size = {} is too small: use at least 65536 (tens of MiB are typical)",
                self.target_file_size
            ));
        }
        if self.compact_min_files < 2 {
            return Err(format!(
                "sink.compact_min_files = {} must be at least 2",
                self.compact_min_files
            ));
        }
        Ok(())
    }
}

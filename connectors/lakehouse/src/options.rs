//! The keys every lakehouse sink shares (which tables, commits, files, compaction, retention),
//! with their defaults and checks; each format's config holds them beside its own keys.

use serde::Deserialize;
use std::time::Duration;

/// `humantime` durations ("10s", "1h") in configs.
pub mod duration {
    pub use humantime_serde::{deserialize, serialize};
}

/// A lakehouse sink's config struct: the keys every lakehouse sink shares (documented once,
/// here) after the format's own keys, and `options()` to hand the shared ones to the sink.
/// (`#[serde(flatten)]` would share them as a struct, but serde cannot refuse unknown keys of a
/// flattened struct, and a misspelt key must be an error at its line.)
#[macro_export]
macro_rules! table_sink_config {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$field_meta:meta])* pub $field:ident : $type:ty,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Debug, serde::Deserialize, PartialEq)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($(#[$field_meta])* pub $field: $type,)*
            /// Which tables to keep per source table: `"mirror"`, `"changelog"` or `"both"`.
            #[serde(default)]
            pub tables: $crate::options::TableKinds,
            /// Longest time a change waits before it is committed (the tables' freshness), e.g. "10s".
            #[serde(
                default = "headwater_lakehouse::options::default_commit_interval",
                with = "headwater_lakehouse::options::duration"
            )]
            pub commit_interval: std::time::Duration,
            /// Parquet files are cut at about this size, and compaction merges small files up to it.
            #[serde(default = "headwater_lakehouse::options::default_target_file_size")]
            pub target_file_size: u64,
            /// Parquet compression: `"zstd"`, `"snappy"`, `"gzip"` or `"none"`.
            #[serde(default)]
            pub compression: $crate::options::Compression,
            /// Parquet encodings of a column past its dictionary: `"delta"` (differences of
            /// integers and timestamps, shared prefixes of texts) or `"plain"`; unset, the
            /// format's default (see [`$crate::options::ParquetEncodings`]).
            #[serde(default)]
            pub parquet_encodings: Option<$crate::options::ParquetEncodings>,
            /// Partitioning of the changelog tables: `"day"` (of the source commit time) or `"none"`.
            #[serde(default)]
            pub partition_by: $crate::options::PartitionBy,
            /// How a deleted row leaves the mirror: `"hard"` (removed) or `"soft"` (kept, with
            /// `__deleted = true` and `__deleted_at`).
            #[serde(default)]
            pub deletes: $crate::options::Deletes,
            /// A table (or changelog partition) with this many files smaller than half the
            /// target size is compacted.
            #[serde(default = "headwater_lakehouse::options::default_compact_min_files")]
            pub compact_min_files: usize,
            /// What left a table (files, snapshots) is deleted this long after it left (readers
            /// of older versions keep working until then).
            #[serde(
                default = "headwater_lakehouse::options::default_vacuum_retention",
                with = "headwater_lakehouse::options::duration"
            )]
            pub vacuum_retention: std::time::Duration,
            /// How often the vacuum runs.
            #[serde(
                default = "headwater_lakehouse::options::default_vacuum_interval",
                with = "headwater_lakehouse::options::duration"
            )]
            pub vacuum_interval: std::time::Duration,
            /// Object-store settings (for S3: `endpoint`, `region`, `allow_http`,
            /// `access_key_id`, `secret_access_key`, …); the standard `AWS_*` environment
            /// variables apply too.
            #[serde(default)]
            pub storage: std::collections::BTreeMap<String, String>,
        }

        impl $name {
            /// The keys every lakehouse sink shares.
            pub fn options(&self) -> $crate::options::TableOptions {
                $crate::options::TableOptions {
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
    };
}

/// The two tables a source table gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TableKind {
    Mirror,
    Changelog,
}

impl TableKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TableKind::Mirror => "mirror",
            TableKind::Changelog => "changelog",
        }
    }
}

impl std::fmt::Display for TableKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The shared settings, as the sink uses them.
#[derive(Clone, Debug, PartialEq)]
pub struct TableOptions {
    pub tables: TableKinds,
    pub commit_interval: Duration,
    pub target_file_size: u64,
    pub compression: Compression,
    pub partition_by: PartitionBy,
    pub deletes: Deletes,
    pub compact_min_files: usize,
    pub vacuum_retention: Duration,
    pub vacuum_interval: Duration,
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

/// How a column is encoded in Parquet once its dictionary is full (or without one).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ParquetEncodings {
    /// Parquet 2's encodings for the columns they suit (in version 1 data pages): smaller
    /// pages, less for the compression to do. The Delta sink's default: Spark reads them from
    /// 3.3 on, and every other Delta reader does.
    Delta,
    /// Plain values: what every Parquet reader decodes. The Iceberg sink's default: Iceberg's
    /// own vectorized reader for Spark refuses `DELTA_BYTE_ARRAY` before Iceberg 1.11
    /// (apache/iceberg#7162).
    Plain,
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

pub fn default_commit_interval() -> Duration {
    Duration::from_secs(10)
}

pub fn default_target_file_size() -> u64 {
    128 * 1024 * 1024
}

pub fn default_compact_min_files() -> usize {
    16
}

pub fn default_vacuum_retention() -> Duration {
    Duration::from_secs(24 * 3600)
}

pub fn default_vacuum_interval() -> Duration {
    Duration::from_secs(3600)
}

impl TableOptions {
    /// Checks the values alone, before anything is touched.
    pub fn validate(&self) -> Result<(), String> {
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

/// A `sink.path`-like location (`key` names it in messages): a local directory (created if
/// missing), `file://…` or `s3://bucket/prefix`, as a URL with a trailing slash.
pub fn base_url(key: &str, path: &str) -> Result<url::Url, headwater_contract::ConnectorError> {
    use headwater_contract::ConnectorError;
    let bad = |e: String| {
        ConnectorError::definite(format!(
            "sink.{key} = {path:?} is not a directory or s3:// URL ({e}); e.g. {key} = \"./lake\" or \"s3://bucket/lake\""
        ))
    };
    let mut url = if path.starts_with("s3://") || path.starts_with("file://") {
        url::Url::parse(path).map_err(|e| bad(e.to_string()))?
    } else {
        std::fs::create_dir_all(path).map_err(|e| {
            ConnectorError::definite(format!(
                "creating the directory {path} (sink.{key}) failed; check its parent exists and is writable"
            ))
            .caused_by(e)
        })?;
        let absolute = std::fs::canonicalize(path).map_err(|e| bad(e.to_string()))?;
        url::Url::from_directory_path(&absolute).map_err(|()| bad("not an absolute path".into()))?
    };
    if !url.path().ends_with('/') {
        url.set_path(&format!("{}/", url.path()));
    }
    Ok(url)
}

/// Checks a location key's value alone (`key` names it).
pub fn validate_location(key: &str, path: &str) -> Result<(), String> {
    if path.trim().is_empty() {
        return Err(format!(
            "sink.{key} is empty: set it to a directory or s3://bucket/prefix, e.g. {key} = \"./lake\""
        ));
    }
    if path.contains("://") && !path.starts_with("s3://") && !path.starts_with("file://") {
        return Err(format!(
            "sink.{key} = {path:?}: only local directories, file:// and s3:// are supported"
        ));
    }
    Ok(())
}

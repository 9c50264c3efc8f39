use headwater_lakehouse::options::{
    default_commit_interval, default_compact_min_files, default_target_file_size,
    default_vacuum_interval, default_vacuum_retention, validate_location, Compression, Deletes,
    PartitionBy, TableKinds, TableOptions,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// `[sink] kind = "iceberg"`: every captured table as Apache Iceberg v2 tables — a current-state
/// mirror and a changelog — registered in a SQL catalog and committed exactly once with the
/// source position, on local disk or S3.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IcebergConfig {
    /// Where the tables' data and metadata live: a local directory (created if missing) or
    /// `s3://bucket/prefix`.
    pub warehouse: String,
    /// The catalog the tables are registered in: `"sqlite"` (a file, nothing to run: the
    /// default) is the SQL catalog's schema that pyiceberg's `SqlCatalog` and Java's
    /// `JdbcCatalog` read.
    #[serde(default)]
    pub catalog: CatalogKind,
    /// The sqlite file of the catalog; default `<warehouse>/catalog.db` for a local warehouse
    /// (an S3 warehouse needs it set: sqlite needs a local file).
    #[serde(default)]
    pub catalog_path: Option<String>,
    /// The catalog's name (the SQL catalog's `catalog_name` column), as readers name it.
    #[serde(default = "default_catalog_name")]
    pub catalog_name: String,
    /// The namespace of a source table's tables: `{kind}` (mirror or changelog), `{server}`
    /// and `{database}` are replaced; dots separate levels. The table keeps the source
    /// table's name.
    #[serde(default = "default_namespace")]
    pub namespace: String,
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
    /// Snapshots older than this expire, and files no live snapshot needs are deleted this
    /// long after they left the table (readers of older snapshots keep working until then).
    #[serde(default = "default_vacuum_retention", with = "humantime_serde")]
    pub vacuum_retention: Duration,
    /// How often snapshots are expired and unneeded files deleted.
    #[serde(default = "default_vacuum_interval", with = "humantime_serde")]
    pub vacuum_interval: Duration,
    /// Object-store settings (for S3: `endpoint`, `region`, `allow_http`, `access_key_id`,
    /// `secret_access_key`, …); the standard `AWS_*` environment variables apply too.
    #[serde(default)]
    pub storage: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CatalogKind {
    #[default]
    Sqlite,
}

fn default_catalog_name() -> String {
    "headwater".into()
}

fn default_namespace() -> String {
    "{kind}.{server}.{database}".into()
}

impl IcebergConfig {
    /// Checks the values alone, before anything is touched.
    pub fn validate(&self) -> Result<(), String> {
        validate_location("warehouse", &self.warehouse)?;
        if !self.namespace.contains("{kind}") {
            return Err(format!(
                "sink.namespace = {:?} has no {{kind}}: a table's mirror and changelog would share one name; e.g. namespace = \"{{kind}}.{{server}}.{{database}}\"",
                self.namespace
            ));
        }
        if self.catalog_path.is_none() && self.warehouse.starts_with("s3://") {
            return Err(format!(
                "sink.warehouse = {:?} is on S3 but the sqlite catalog needs a local file: set sink.catalog_path, e.g. catalog_path = \"./catalog.db\"",
                self.warehouse
            ));
        }
        if self.catalog_name.trim().is_empty() {
            return Err(
                "sink.catalog_name is empty: name the catalog, e.g. catalog_name = \"headwater\""
                    .into(),
            );
        }
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

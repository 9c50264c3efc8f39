use headwater_contract::{
    redact_url, BinaryHandling, ColumnRulesConfig, DecimalHandling, SnapshotMode, TableFilter,
    ValueHandling,
};
use serde::Deserialize;
use std::fmt;
use std::time::Duration;

/// `[source] kind = "postgres"`: read a PostgreSQL database through a logical replication slot
/// with the built-in `pgoutput` plugin.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/database`. The role needs the REPLICATION attribute
    /// and SELECT on the captured tables. `${VAR}` is replaced from the environment. Several
    /// hosts (`postgres://u:p@primary:5432,standby:5432/db`) are tried in order and the one that
    /// is not in recovery (the primary) is used, so Headwater follows a failover.
    pub url: String,
    /// Make the slot a failover slot (PostgreSQL 17+): standbys with `sync_replication_slots =
    /// on` keep a synchronized copy, so after a failover Headwater continues on the promoted
    /// standby from its copy. An existing slot is altered to it on start.
    #[serde(default)]
    pub failover: bool,
    /// Logical server name: first part of topic and lake directory names, `source.name` in records.
    pub name: String,
    /// The replication slot; created on the first start. One slot per pipeline.
    pub slot: String,
    /// The publication naming the captured tables.
    pub publication: String,
    /// Create the publication when it does not exist (for the tables `include` matches then).
    #[serde(default = "yes")]
    pub create_publication: bool,
    /// Publish partitioned tables' changes under the partitioned table, not each partition.
    #[serde(default = "yes")]
    pub publish_via_partition_root: bool,
    /// `schema.table` globs to capture.
    #[serde(default = "default_include")]
    pub include: Vec<String>,
    /// `schema.table` globs to leave out, applied after `include`.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Which columns of the captured tables reach the records, and masked how (`[source.columns]`).
    #[serde(default)]
    pub columns: ColumnRulesConfig,
    /// How DECIMAL/NUMERIC values are carried: `"precise"`, `"string"` or `"double"`.
    #[serde(default)]
    pub decimal_handling: DecimalHandling,
    /// How binary values are carried: `"bytes"`, `"base64"` or `"hex"`.
    #[serde(default)]
    pub binary_handling: BinaryHandling,
    /// How often Headwater writes a tiny logical message into the WAL so that a slot whose
    /// tables are quiet still advances and the server can recycle WAL. "0s" turns it off.
    #[serde(default = "default_heartbeat", with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// How often the durable position is confirmed to the server.
    #[serde(default = "default_status", with = "humantime_serde")]
    pub status_interval: Duration,
    /// PEM file with the certificate authority that signed the server's certificate. Setting it
    /// turns TLS on, with the certificate and host name verified, for both connections.
    /// `?sslmode=require` in the URL turns TLS on against the public web roots instead.
    #[serde(default)]
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// What to do with a column type Headwater does not know: `"error"` stops with the table,
    /// column and type named; `"text"` carries the value as PostgreSQL prints it.
    #[serde(default)]
    pub unknown_types: UnknownTypes,
    /// When tables are copied: `"initial"` (every captured table on the first start, then
    /// stream), `"never"` (stream only; `headwater backfill` still works), `"when_needed"`
    /// (`initial`, and a new slot and copy instead of an error when the slot was invalidated or
    /// dropped).
    #[serde(default)]
    pub snapshot: SnapshotMode,
    /// Rows per snapshot chunk (one `SELECT … ORDER BY key LIMIT n`). Memory holds one chunk.
    #[serde(default = "default_chunk_size")]
    pub snapshot_chunk_size: usize,
}

fn default_chunk_size() -> usize {
    10_000
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UnknownTypes {
    #[default]
    Error,
    Text,
}

fn yes() -> bool {
    true
}

fn default_include() -> Vec<String> {
    vec!["public.*".to_string()]
}

fn default_heartbeat() -> Duration {
    Duration::from_secs(10)
}

fn default_status() -> Duration {
    Duration::from_secs(1)
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &redact_url(&self.url))
            .field("name", &self.name)
            .field("slot", &self.slot)
            .field("publication", &self.publication)
            .field("create_publication", &self.create_publication)
            .field("failover", &self.failover)
            .field("include", &self.include)
            .field("exclude", &self.exclude)
            .field("columns", &self.columns)
            .field("decimal_handling", &self.decimal_handling)
            .field("binary_handling", &self.binary_handling)
            .finish_non_exhaustive()
    }
}

fn valid_identifier(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl PostgresConfig {
    /// Checks the values alone, before anything connects.
    /// How long the replication stream may stay silent before the connection is taken as
    /// lost (a black hole: no reset, no data): three of the longest interval at which the
    /// server is made to send something, and never under 15 s.
    pub fn silence_limit(&self) -> Duration {
        3 * self
            .heartbeat_interval
            .max(self.status_interval)
            .max(Duration::from_secs(5))
    }

    pub fn validate(&self) -> Result<TableFilter, String> {
        if !(self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")) {
            return Err(format!(
                "source.url `{}` must start with postgres:// (e.g. postgres://headwater:${{PGPASSWORD}}@127.0.0.1:5432/shop)",
                redact_url(&self.url)
            ));
        }
        if self.snapshot_chunk_size == 0 || self.snapshot_chunk_size > 1_000_000 {
            return Err(format!(
                "source.snapshot_chunk_size = {} is out of range: use between 1 and 1000000 (default 10000)",
                self.snapshot_chunk_size
            ));
        }
        for (key, value) in [
            ("source.slot", &self.slot),
            ("source.publication", &self.publication),
        ] {
            if !valid_identifier(value) {
                return Err(format!(
                    "{key} = {value:?} is not allowed: use lower-case letters, digits and `_`, at most 63 characters"
                ));
            }
        }
        if self.status_interval < Duration::from_millis(100) {
            return Err("source.status_interval must be at least \"100ms\"".into());
        }
        Ok(
            TableFilter::new(&self.include, &self.exclude)?.with_columns(
                self.columns.compile_with(ValueHandling {
                    decimal: self.decimal_handling,
                    binary: self.binary_handling,
                })?,
            ),
        )
    }
}

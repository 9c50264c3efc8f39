use headwater_contract::{
    redact_url, BinaryHandling, ColumnRulesConfig, DecimalHandling, SnapshotMode, TableFilter,
    ValueHandling,
};
use serde::Deserialize;
use std::fmt;
use std::time::Duration;

/// `[source] kind = "mysql"`: read a MySQL or MariaDB server's binlog as a replica.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MysqlConfig {
    /// `mysql://user:password@host:port`. The user needs REPLICATION SLAVE, REPLICATION CLIENT
    /// and SELECT. `${VAR}` is replaced from the environment, so the password need not be in the file.
    pub url: String,
    /// Logical server name: first part of topic and lake directory names, `source.name` in records.
    pub name: String,
    /// The replica id Headwater uses. Unique among all replicas of the server: two readers with
    /// the same id disconnect each other.
    pub server_id: u32,
    /// `database.table` globs to capture. Default: every table outside the system databases.
    #[serde(default = "default_include")]
    pub include: Vec<String>,
    /// `database.table` globs to leave out, applied after `include`.
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
    /// Where a pipeline without any stored position starts: `"latest"` (changes from now on)
    /// or `"earliest"` (the oldest binlog the server still has).
    #[serde(default)]
    pub start: StartFrom,
    /// PEM file with the certificate authority that signed the server's certificate. Setting it
    /// turns TLS on with full verification; TLS can also be asked for in the URL
    /// (`?require_ssl=true`, with `verify_ca=false` / `verify_identity=false` to relax checks).
    #[serde(default)]
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// How often the server sends a heartbeat when it has nothing else to send, e.g. "5s".
    /// A stream silent for three heartbeats is treated as a lost connection.
    #[serde(default = "default_heartbeat", with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// When tables are copied: `"initial"` (every included table on the first start, then
    /// stream), `"never"` (stream only; `headwater backfill` still works), `"when_needed"`
    /// (`initial`, and a new copy instead of an error when the stored binlog position was purged).
    #[serde(default)]
    pub snapshot: SnapshotMode,
    /// Rows per snapshot chunk (one `SELECT … ORDER BY key LIMIT n`). Memory holds one chunk.
    #[serde(default = "default_chunk_size")]
    pub snapshot_chunk_size: usize,
    /// How a snapshot chunk marks its end in the change stream: `"binlog_position"` (the binlog
    /// end read right after the chunk's SELECT; writes nothing to the source) or
    /// `"signal_table"` (a row written to `signal_table`, for when the SQL connection may reach
    /// a different server than the binlog stream, e.g. behind a proxy).
    #[serde(default)]
    pub watermarks: WatermarkKind,
    /// `database.table` that `"signal_table"` watermarks write: one row per pipeline
    /// (`id` = server_id). Never captured itself.
    #[serde(default = "default_signal_table")]
    pub signal_table: String,
}

/// `source.watermarks`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WatermarkKind {
    #[default]
    BinlogPosition,
    SignalTable,
}

fn default_signal_table() -> String {
    "headwater.signal".to_string()
}

fn default_chunk_size() -> usize {
    10_000
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    #[default]
    Latest,
    Earliest,
}

fn default_include() -> Vec<String> {
    vec!["*.*".to_string()]
}

fn default_heartbeat() -> Duration {
    Duration::from_secs(5)
}

/// Databases that hold the server's own bookkeeping and are never captured.
pub const SYSTEM_DATABASES: &[&str] = &["mysql", "sys", "information_schema", "performance_schema"];

impl fmt::Debug for MysqlConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MysqlConfig")
            .field("url", &redact_url(&self.url))
            .field("name", &self.name)
            .field("server_id", &self.server_id)
            .field("include", &self.include)
            .field("exclude", &self.exclude)
            .field("columns", &self.columns)
            .field("decimal_handling", &self.decimal_handling)
            .field("binary_handling", &self.binary_handling)
            .field("start", &self.start)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("snapshot", &self.snapshot)
            .field("snapshot_chunk_size", &self.snapshot_chunk_size)
            .field("watermarks", &self.watermarks)
            .field("signal_table", &self.signal_table)
            .finish()
    }
}

impl MysqlConfig {
    /// The signal table as a table id, when well formed.
    pub fn signal_table_id(&self) -> Option<headwater_contract::TableId> {
        let (namespace, table) = self.signal_table.split_once('.')?;
        (!namespace.is_empty() && !table.is_empty() && !table.contains('.')).then(|| {
            headwater_contract::TableId {
                namespace: namespace.to_string(),
                table: table.to_string(),
            }
        })
    }

    /// Checks the values alone, before anything connects.
    pub fn validate(&self) -> Result<TableFilter, String> {
        if !self.url.starts_with("mysql://") {
            return Err(format!(
                "source.url `{}` must start with mysql:// (e.g. mysql://headwater:${{MYSQL_PASSWORD}}@127.0.0.1:3306)",
                redact_url(&self.url)
            ));
        }
        if self.server_id == 0 {
            return Err("source.server_id = 0 is not allowed: choose a number that no other replica of the server uses, e.g. 5401".into());
        }
        if self.heartbeat_interval < Duration::from_millis(100)
            || self.heartbeat_interval > Duration::from_secs(4_294_967)
        {
            return Err(format!(
                "source.heartbeat_interval = {:?} is out of range: use between \"100ms\" and a few minutes",
                self.heartbeat_interval
            ));
        }
        if self.snapshot_chunk_size == 0 || self.snapshot_chunk_size > 1_000_000 {
            return Err(format!(
                "source.snapshot_chunk_size = {} is out of range: use between 1 and 1000000 (default 10000)",
                self.snapshot_chunk_size
            ));
        }
        if self.snapshot != SnapshotMode::Never && self.start == StartFrom::Earliest {
            return Err("source.start = \"earliest\" replays the old binlog, which a snapshot makes pointless: with source.snapshot = \"initial\" or \"when_needed\" leave start out (the copy starts at the current binlog end), or set snapshot = \"never\"".into());
        }
        if self.signal_table_id().is_none() {
            return Err(format!(
                "source.signal_table = {:?} must be database.table, e.g. \"headwater.signal\"",
                self.signal_table
            ));
        }
        if let Some(ca) = &self.tls_ca_file {
            if !ca.is_file() {
                return Err(format!(
                    "source.tls_ca_file = {} is not a readable file: give the PEM file of the CA that signed the server's certificate",
                    ca.display()
                ));
            }
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

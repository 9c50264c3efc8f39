use headwater_contract::{flat::flattener_for, EnvelopeKind, FlatDeletes, FlatField, Flattener};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `[sink] kind = "lake"`: Avro object container files under a directory, one directory per
/// table, committed atomically together with the source position (exactly-once).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LakeConfig {
    /// Root directory of the lake. Created if missing.
    pub path: PathBuf,
    /// Longest time a change waits before its file is committed (the lake's freshness),
    /// e.g. "10s", "1m".
    #[serde(default = "default_commit_interval", with = "humantime_serde")]
    pub commit_interval: Duration,
    /// A file reaching this size is committed and a new one started.
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: u64,
    /// Block compression: `"deflate"` (every Avro reader supports it) or `"null"`.
    #[serde(default)]
    pub codec: crate::ocf::Codec,
    /// `"debezium"` (the change event) or `"flat"` (the row's columns and `flat_fields`).
    #[serde(default)]
    pub envelope: EnvelopeKind,
    /// With `envelope = "flat"`: metadata fields added as `__<name>` (default `op`, `source_ts_ms`).
    #[serde(default)]
    pub flat_fields: Option<Vec<FlatField>>,
    /// With `envelope = "flat"`: `"rewrite"` (default) or `"drop"` for deletes.
    #[serde(default)]
    pub flat_deletes: Option<FlatDeletes>,
}

fn default_commit_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_max_file_bytes() -> u64 {
    128 * 1024 * 1024
}

impl LakeConfig {
    /// Checks the values alone, before anything touches the disk.
    pub fn validate(&self) -> Result<(), String> {
        if self.path.as_os_str().is_empty() {
            return Err(
                "sink.path is empty: set it to the lake's directory, e.g. path = \"./lake\"".into(),
            );
        }
        if self.commit_interval < Duration::from_millis(10) {
            return Err(format!(
                "sink.commit_interval = {:?} is too short: use at least \"10ms\" (seconds are typical)",
                self.commit_interval
            ));
        }
        if self.max_file_bytes < 4096 {
            return Err(format!(
                "sink.max_file_bytes = {} is too small: use at least 4096 (tens of MiB are typical)",
                self.max_file_bytes
            ));
        }
        self.flattener().map(|_| ())
    }

    /// What `envelope`, `flat_fields` and `flat_deletes` ask for (`None`: the change event).
    pub fn flattener(&self) -> Result<Option<Flattener>, String> {
        flattener_for(
            self.envelope,
            self.flat_fields.as_deref(),
            self.flat_deletes,
            FlatDeletes::Rewrite,
            false,
        )
    }
}

//! The lake's commit record: which files are committed and the source position they cover.
//! Replaced atomically; its file list is the write-ahead log of the last commit's renames.

use headwater_contract::Position;
use serde::{Deserialize, Serialize};

pub const MANIFEST_PATH: &str = "_headwater/manifest.json";
pub const MANIFEST_VERSION: u32 = 1;

/// A file of the last commit: durable under `temp`, visible under `path` once published.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedFile {
    pub path: String,
    pub temp: String,
    pub records: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub version: u32,
    /// Commits are numbered from 1; file names carry the number of the commit that made them.
    pub commit: u64,
    /// Every change before this position is in committed files, and none after it.
    pub position: Option<Position>,
    /// Files published by this commit. Recovery finishes publishing any that a crash interrupted.
    pub files: Vec<CommittedFile>,
    pub committed_at_ms: i64,
    /// Records committed since the lake was created.
    pub total_records: u64,
}

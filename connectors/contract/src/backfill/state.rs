//! What a snapshot's progress is made of — modes, requests, saved keys, the state carried in
//! positions — and the inbox requests reach a running source through.

use crate::now_ms;
use crate::record::SnapshotMarker;
use crate::schema::TableId;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// `source.snapshot`: when tables are copied.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMode {
    /// Copy every included table when the pipeline first starts, then stream.
    #[default]
    Initial,
    /// Stream only; tables are copied only when asked (`headwater backfill`).
    Never,
    /// Like `initial`, and also copy everything again when the stored log position is gone
    /// (binlog purged, slot invalidated or dropped) instead of stopping.
    WhenNeeded,
}

/// Why a table is being copied; decides `source.snapshot` in its records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackfillKind {
    /// The first copy of a new pipeline.
    Initial,
    /// Asked for with `headwater backfill`.
    Incremental,
    /// The stored log position was lost and everything is copied again.
    Recovery,
}

impl BackfillKind {
    pub(crate) fn marker(self) -> SnapshotMarker {
        match self {
            BackfillKind::Initial | BackfillKind::Recovery => SnapshotMarker::True,
            BackfillKind::Incremental => SnapshotMarker::Incremental,
        }
    }
}

/// One table to copy, optionally only the rows matching an SQL condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackfillRequest {
    /// Increasing; a source accepts each id once.
    pub id: u64,
    pub table: TableId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    pub kind: BackfillKind,
}

impl BackfillRequest {
    /// Copies of whole tables (an initial snapshot or a recovery); they share id 0, which
    /// never collides with the ids of `headwater backfill` requests.
    pub fn whole_tables(tables: Vec<TableId>, kind: BackfillKind) -> Vec<BackfillRequest> {
        tables
            .into_iter()
            .map(|table| BackfillRequest {
                id: 0,
                table,
                condition: None,
                kind,
            })
            .collect()
    }
}

/// One primary-key column's value as the source printed it, kept to continue after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum KeyPart {
    Text(String),
    Bytes { hex: String },
}

impl KeyPart {
    pub fn from_bytes(bytes: &[u8]) -> KeyPart {
        match std::str::from_utf8(bytes) {
            Ok(text) => KeyPart::Text(text.to_string()),
            Err(_) => KeyPart::Bytes {
                hex: bytes.iter().map(|b| format!("{b:02x}")).collect(),
            },
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            KeyPart::Text(text) => text.as_bytes().to_vec(),
            KeyPart::Bytes { hex } => (0..hex.len() / 2)
                .filter_map(|i| u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok())
                .collect(),
        }
    }
}

impl fmt::Display for KeyPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyPart::Text(text) => f.write_str(text),
            KeyPart::Bytes { hex } => write!(f, "0x{hex}"),
        }
    }
}

/// The table being copied and how far.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableProgress {
    pub request: Arc<BackfillRequest>,
    /// The key of the last row copied; `None` before the first chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Vec<KeyPart>>,
    pub rows_done: u64,
    /// The server's estimate of the table's rows, read when its copy starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_estimate: Option<u64>,
    pub started_at_ms: i64,
    /// No table was copied before this one in the same run of queued copies: its first row
    /// is the snapshot's first (`source.snapshot = first`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub first_table: bool,
}

impl TableProgress {
    pub(crate) fn start(request: Arc<BackfillRequest>, first_table: bool) -> Self {
        TableProgress {
            request,
            after: None,
            rows_done: 0,
            rows_estimate: None,
            started_at_ms: now_ms(),
            first_table,
        }
    }

    /// `db.table: 1234 of ~5000 rows (24%), 812 rows/s, ETA 5s` as of `now_ms`.
    pub fn describe(&self, now_ms: i64) -> String {
        let mut text = format!("{}: {} rows", self.request.table, self.rows_done);
        if let Some(estimate) = self.rows_estimate.filter(|e| *e > 0) {
            let percent = (self.rows_done as f64 * 100.0 / estimate as f64).min(100.0);
            text = format!(
                "{}: {} of ~{} rows ({percent:.0}%)",
                self.request.table, self.rows_done, estimate
            );
            let seconds = (now_ms - self.started_at_ms) as f64 / 1000.0;
            if seconds > 0.0 && self.rows_done > 0 {
                let rate = self.rows_done as f64 / seconds;
                let left = estimate.saturating_sub(self.rows_done) as f64 / rate;
                text.push_str(&format!(", {rate:.0} rows/s, ETA {left:.0}s"));
            }
        }
        if let Some(condition) = &self.request.condition {
            text.push_str(&format!(" where {condition}"));
        }
        text
    }
}

/// Snapshot progress, carried in positions so it is committed with them (and, in the lake,
/// with the data).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackfillState {
    /// The table being copied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<TableProgress>,
    /// Tables waiting, in order.
    #[serde(default, skip_serializing_if = "queue_is_empty")]
    pub queued: Arc<Vec<Arc<BackfillRequest>>>,
    /// The highest request id accepted: requests up to it are never run twice.
    #[serde(default)]
    pub last_request_id: u64,
    /// Rows emitted so far: orders the snapshot rows emitted at one log position.
    #[serde(default)]
    pub rows_emitted: u64,
}

fn queue_is_empty(queue: &Arc<Vec<Arc<BackfillRequest>>>) -> bool {
    queue.is_empty()
}

impl BackfillState {
    pub fn is_active(&self) -> bool {
        self.current.is_some()
    }
}

/// Compact, as part of a position (log lines, the Kafka `headwater.position` header): the log
/// position plus the number of rows copied names one record. `headwater offsets` and the
/// progress log give the readable account ([`TableProgress::describe`]).
impl fmt::Display for BackfillState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(current) = &self.current {
            write!(
                f,
                " +{} copied (copying {}",
                self.rows_emitted, current.request.table
            )?;
            if !self.queued.is_empty() {
                write!(f, ", {} more queued", self.queued.len())?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// Backfill requests handed from the runtime to the running source. Shared, so a source that
/// restarts after an error finds them again; the runtime forgets a request once a committed
/// position shows it accepted. It also carries the operator's pause switch
/// (`headwater backfill --pause` / `--resume`), read by the source before every chunk.
#[derive(Clone, Debug, Default)]
pub struct BackfillInbox {
    pending: Arc<Mutex<Vec<BackfillRequest>>>,
    paused: Arc<AtomicBool>,
}

impl BackfillInbox {
    pub fn offer(&self, request: BackfillRequest) {
        if let Ok(mut pending) = self.pending.lock() {
            if !pending.iter().any(|r| r.id == request.id) {
                pending.push(request);
                pending.sort_by_key(|r| r.id);
            }
        }
    }

    /// Requests not yet accepted by a state whose last accepted id is `accepted`.
    pub fn after(&self, accepted: u64) -> Vec<BackfillRequest> {
        self.pending
            .lock()
            .map(|pending| {
                pending
                    .iter()
                    .filter(|r| r.id > accepted)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn forget_through(&self, accepted: u64) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.retain(|r| r.id > accepted);
        }
    }

    /// Pauses (or resumes) copying: no chunk is asked for while paused; the chunk being read
    /// when the pause arrives still completes. Streaming goes on either way.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }
}

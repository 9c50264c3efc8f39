//! What a source implements to have its tables copied: a chunk reader, and the shape of what
//! it reads. The SQL both readers share is here too.

use super::{ChunkRequest, ChunkRow, KeyPart};
use crate::error::ConnectorError;
use crate::position::Position;
use crate::schema::{TableId, TableSchema};
use async_trait::async_trait;

/// Reads snapshot chunks for one source, on a connection of its own. Moved into a task for
/// every chunk and handed back, so a read never holds up the stream.
#[async_trait]
pub trait ChunkRead: Send + 'static {
    /// Reads the rows `request` asks for, then takes the chunk's high watermark in the log.
    async fn read(&mut self, request: &ChunkRequest) -> Result<ChunkOutcome, ConnectorError>;
}

/// What a chunk read came back with.
pub enum ChunkOutcome {
    Rows(Box<ReadChunk>),
    /// The table cannot be copied (no key, gone): the reason.
    Skip(String),
}

/// A chunk as read, before the stream gives its schema a version.
pub struct ReadChunk {
    pub schema: TableSchema,
    pub rows: ChunkRows,
    /// The key of the last row read: the next chunk starts after it.
    pub last_key: Option<Vec<KeyPart>>,
    /// Fewer rows than asked for came back: the table is done.
    pub exhausted: bool,
    pub rows_estimate: Option<u64>,
    /// Where the chunk ends in the log: it is emitted once the stream has passed it.
    pub watermark: Watermark,
}

/// A chunk's rows: converted already, or still being converted (so the next read need not
/// wait for the conversion).
pub enum ChunkRows {
    Ready(Vec<ChunkRow>),
    Converting(tokio::task::JoinHandle<Result<Vec<ChunkRow>, ConnectorError>>),
}

impl ChunkRows {
    pub(super) async fn finish(self) -> Result<Vec<ChunkRow>, ConnectorError> {
        match self {
            ChunkRows::Ready(rows) => Ok(rows),
            ChunkRows::Converting(task) => task.await.map_err(|e| {
                ConnectorError::retryable(format!("the snapshot row converter failed: {e}"))
            })?,
        }
    }
}

/// A chunk's high watermark.
#[derive(Clone, Debug, PartialEq)]
pub enum Watermark {
    /// A log position read right after the chunk's query: passed once the stream reaches it.
    Position(Position),
    /// A value the reader wrote into the log after the query (a signal-table row, a logical
    /// message): passed once the stream has carried it (see [`ChunkScheduler::signal`]).
    Signal(String),
}

/// Refuses a saved resume key whose length no longer matches the table's key (the key
/// changed since the backfill began).
pub fn check_saved_key(
    table: &TableId,
    saved: &[KeyPart],
    key_columns: usize,
) -> Result<(), ConnectorError> {
    if saved.len() == key_columns {
        return Ok(());
    }
    Err(ConnectorError::definite(format!(
        "table {table}: the saved backfill key has {} columns but the key now has {key_columns}; start the backfill again (headwater backfill)",
        saved.len()
    )))
}

/// A chunk's `SELECT`, from already quoted names: the rows matching `after_key` (the
/// source's "key sorts after the last one copied" condition) and the request's condition, in
/// key order, at most the request's limit.
pub fn chunk_select(
    columns: &[String],
    table: &str,
    key: &[String],
    after_key: Option<String>,
    request: &ChunkRequest,
) -> String {
    let conditions: Vec<String> = after_key
        .into_iter()
        .chain(request.condition.iter().map(|c| format!("({c})")))
        .collect();
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    format!(
        "SELECT {} FROM {table}{filter} ORDER BY {} LIMIT {}",
        columns.join(", "),
        key.join(", "),
        request.limit
    )
}

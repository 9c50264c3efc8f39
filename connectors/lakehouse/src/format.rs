//! What a table format (Delta Lake, Apache Iceberg) gives the lakehouse sink: tables it opens or
//! creates, Parquet files it writes for them, and commits that add and remove files atomically
//! with the sink's round and the source position the commit covers. Everything else — the
//! rows of a round, the merge of a mirror, compaction, recovery — is the same for every format.

use crate::options::TableKind;
use arrow::array::RecordBatch;
use arrow::datatypes::{Field, Schema, SchemaRef};
use headwater_contract::{ConnectorError, Position};
use object_store::ObjectStore;
use parquet::arrow::async_reader::ParquetRecordBatchStream;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// A live file's rows, one batch at a time: a file is never held whole.
pub type FileBatches = ParquetRecordBatchStream<crate::file_reader::StoreFile>;

/// A file of a table as its current snapshot lists it; `handle` is what the format needs to
/// take it out of the table again.
#[derive(Clone, Debug)]
pub struct LiveFile<H> {
    /// The file's path in the format's object store.
    pub path: String,
    pub size: i64,
    pub rows: Option<usize>,
    pub partition: HashMap<String, Option<String>>,
    /// The minimum and maximum of one column from the file's statistics, when asked for.
    pub min: Option<serde_json::Value>,
    pub max: Option<serde_json::Value>,
    pub handle: H,
}

/// What a commit does, for the table's history.
#[derive(Clone, Debug)]
pub enum Operation {
    /// Rows appended (a changelog, the schema changes).
    Append,
    /// A mirror round: files holding changed keys replaced, new rows added.
    Merge { changed_keys: usize },
    /// Small files merged into fewer; no row changes.
    Compact { target_size: u64 },
}

impl Operation {
    /// Whether the commit changes rows (a compaction only moves them).
    pub fn changes_data(&self) -> bool {
        !matches!(self, Operation::Compact { .. })
    }
}

/// One atomic commit to a table.
pub struct TableCommit<T: TableTarget> {
    pub operation: Operation,
    pub added: Vec<T::Written>,
    pub removed: Vec<LiveFile<T::Handle>>,
    /// The sink's round: a commit of a new round records it, a maintenance commit repeats the
    /// last one.
    pub round: i64,
    /// The source position through which the table holds every change after this commit.
    pub position: Option<Position>,
}

/// Parquet files being written for one commit, batch by batch (cut at the target size, split
/// by partition); nothing is in the table until a commit adds them.
pub trait FileWriter: Send + 'static {
    type Written: Send + 'static;
    fn write(
        &mut self,
        batch: RecordBatch,
    ) -> impl Future<Output = Result<(), ConnectorError>> + Send;
    /// The files written (none when no row was).
    fn finish(self) -> impl Future<Output = Result<Vec<Self::Written>, ConnectorError>> + Send;
}

/// One table of a format the sink writes.
pub trait TableTarget: Send + Sync + Sized + 'static {
    /// What the format needs to remove a live file.
    type Handle: Clone + Send + Sync + 'static;
    /// A file written and not yet committed.
    type Written: Send + 'static;
    type Writer: FileWriter<Written = Self::Written>;

    /// What people call it in messages: `mirror shop.orders`.
    fn label(&self) -> &str;
    /// The last round a commit of the sink recorded in the table (0: none).
    fn round(&self) -> i64;
    /// The position through which the table holds every change (from its last commit).
    fn committed(&self) -> Option<&Position>;
    /// The table's version (Delta) or snapshot sequence number (Iceberg), for `inspect`.
    fn version(&self) -> Option<u64>;
    fn arrow_schema(&self) -> Result<SchemaRef, ConnectorError>;
    /// Adds the `fields` the table lacks (all nullable) without rewriting a file. Columns the
    /// source dropped stay: older rows keep their values and newer rows hold null.
    fn add_columns(
        &mut self,
        fields: &[Field],
    ) -> impl Future<Output = Result<(), ConnectorError>> + Send;
    /// Starts writing new Parquet files of this table in its current schema.
    fn file_writer(&self) -> Result<Self::Writer, ConnectorError>;
    /// The table's live files, with the bounds of `stats_column` when given.
    fn live_files(
        &self,
        stats_column: Option<&str>,
    ) -> impl Future<Output = Result<Vec<LiveFile<Self::Handle>>, ConnectorError>> + Send;
    /// Reads `file` batch by batch; with `only`, just those columns (in the file's order).
    fn read_batches(
        &self,
        file: &LiveFile<Self::Handle>,
        only: Option<&[String]>,
    ) -> impl Future<Output = Result<FileBatches, ConnectorError>> + Send;
    /// Commits atomically, recording the round and the position in the table.
    fn commit(
        &mut self,
        commit: TableCommit<Self>,
    ) -> impl Future<Output = Result<(), ConnectorError>> + Send;
    /// Deletes what no version younger than `retention` needs (files, old snapshots); returns
    /// how many files went.
    fn vacuum(
        &mut self,
        retention: Duration,
    ) -> impl Future<Output = Result<usize, ConnectorError>> + Send;
}

/// A table format: where its tables are and how they are opened.
pub trait TableFormat: Send + Sync + 'static {
    type Target: TableTarget;
    /// The sink kind, for messages: `delta`, `iceberg`.
    const NAME: &'static str;
    /// The format as people write it: `Delta`, `Iceberg`.
    const TITLE: &'static str;

    /// The store under which the sink keeps its own checkpoint (`_headwater/sink.json`).
    fn store(&self) -> Arc<dyn ObjectStore>;
    /// Where the tables are, for messages.
    fn location(&self) -> String;
    /// Opens the `kind` table of source table `name`, creating it with `schema` (and
    /// `partition_columns`; a mirror is keyed by `key_columns`) when there is none.
    fn open(
        &self,
        kind: TableKind,
        name: &str,
        schema: &Schema,
        partition_columns: Vec<String>,
        key_columns: &[String],
    ) -> impl Future<Output = Result<Self::Target, ConnectorError>> + Send;
    /// The tables the sink made before, as (kind, source table name).
    fn existing_tables(
        &self,
    ) -> impl Future<Output = Result<Vec<(TableKind, String)>, ConnectorError>> + Send;
    /// A problem that stops a source table's name from becoming a table, if any.
    fn refuse_name(&self, name: &str) -> Option<String>;
}

/// Appends `batches` to `target` as round `round`, covering `through`.
pub async fn append<T: TableTarget>(
    target: &mut T,
    batches: impl IntoIterator<Item = RecordBatch>,
    round: i64,
    through: &Position,
) -> Result<(), ConnectorError> {
    let mut writer = target.file_writer()?;
    for part in batches {
        writer.write(part).await?;
    }
    let added = writer.finish().await?;
    target
        .commit(TableCommit {
            operation: Operation::Append,
            added,
            removed: Vec::new(),
            round,
            position: Some(through.clone()),
        })
        .await
}

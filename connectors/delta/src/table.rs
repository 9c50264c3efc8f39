//! One Delta table the sink writes: created on first use, evolved when its source table changes,
//! and committed with the `txn` action and the source position the commit covers, so the table
//! itself says how far it holds the source's changes.

use crate::config::{Compression, DeltaConfig};
use crate::error::delta_error;
use crate::file_reader::StoreFile;
use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::{Field, Schema, SchemaRef};
use deltalake::kernel::engine::arrow_conversion::{TryIntoArrow, TryIntoKernel};
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, MetadataExt, Remove, StructType, Transaction};
use deltalake::parquet::arrow::async_reader::ParquetRecordBatchStream;
use deltalake::parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use deltalake::parquet::basic::{Compression as ParquetCompression, GzipLevel, ZstdLevel};
use deltalake::parquet::file::properties::{EnabledStatistics, WriterProperties};
use deltalake::parquet::schema::types::ColumnPath;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaTable, DeltaTableBuilder};
use futures::StreamExt;
use headwater_contract::{ConnectorError, Position};
use std::collections::HashMap;
use std::sync::Arc;
use url::Url;

/// The commitInfo key holding the source position a commit covers.
pub const POSITION_KEY: &str = "headwater.position";
/// The commitInfo key holding the sink's commit round.
pub const ROUND_KEY: &str = "headwater.round";

/// A file of the table as its last snapshot lists it.
#[derive(Clone, Debug)]
pub struct LiveFile {
    pub path: String,
    pub size: i64,
    pub rows: Option<usize>,
    pub partition: HashMap<String, Option<String>>,
    /// `minValues`/`maxValues` of one column from the file statistics, when asked for.
    pub min: Option<serde_json::Value>,
    pub max: Option<serde_json::Value>,
    remove: Remove,
}

impl LiveFile {
    pub fn remove(&self, data_change: bool) -> Action {
        let mut remove = self.remove.clone();
        remove.data_change = data_change;
        remove.deletion_timestamp = Some(crate::now_ms());
        Action::Remove(remove)
    }
}

pub struct DeltaTarget {
    /// What people call it in messages: `mirror shop.orders`.
    pub label: String,
    /// Where it lives (a directory, or an `s3://` URL), for errors a person must act on.
    location: String,
    table: DeltaTable,
    app_id: String,
    /// The position through which this table holds every change (from its last commit).
    pub committed: Option<Position>,
    /// The last commit round recorded in the table's `txn` action.
    pub round: i64,
    writer_properties: WriterProperties,
    target_file_size: u64,
}

fn writer_properties(compression: Compression) -> WriterProperties {
    let codec = match compression {
        Compression::Zstd => ParquetCompression::ZSTD(ZstdLevel::default()),
        Compression::Snappy => ParquetCompression::SNAPPY,
        Compression::Gzip => ParquetCompression::GZIP(GzipLevel::default()),
        Compression::None => ParquetCompression::UNCOMPRESSED,
    };
    WriterProperties::builder()
        .set_compression(codec)
        // A dictionary pays for columns of few values; for unique ones (keys, names) interning
        // every value until the page limit is hit was a fifth of the sink's time, and their
        // dictionary pages compressed worse than plain values: 1,000,000 rows took 24 MB
        // instead of 10 MB. A small limit keeps dictionaries for the columns they suit.
        .set_dictionary_page_size_limit(DICTIONARY_PAGE_LIMIT)
        // one distinct value per row: a dictionary only costs time
        .set_column_dictionary_enabled(ColumnPath::from(crate::batch::POSITION), false)
        // position texts do not sort in log order (`file:12` > `file:100`), so their minimum and
        // maximum would let no reader skip a file, and comparing every value is wasted work
        .set_column_statistics_enabled(
            ColumnPath::from(crate::batch::POSITION),
            EnabledStatistics::None,
        )
        // a row group is encoded in memory until it is complete: bounded rows, bounded memory
        // (a merge or compaction never holds a whole target-size file)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build()
}

const DICTIONARY_PAGE_LIMIT: usize = 32 * 1024;
const ROW_GROUP_ROWS: usize = 128 * 1024;
/// Rows per batch read back from a file (merges and compaction).
const READ_BATCH_ROWS: usize = 8192;

/// Parquet files being written for one commit, batch by batch (cut at the target size, split
/// by partition); nothing is committed until the caller commits the returned actions.
pub struct FileWriter {
    writer: RecordBatchWriter,
    data_change: bool,
    what: String,
}

impl FileWriter {
    pub async fn write(&mut self, batch: RecordBatch) -> Result<(), ConnectorError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.writer
            .write(batch)
            .await
            .map_err(|e| delta_error(&self.what, e))
    }

    /// The `add` actions of the files written (none when no row was).
    pub async fn finish(mut self) -> Result<Vec<Action>, ConnectorError> {
        let adds: Vec<Add> = self
            .writer
            .flush()
            .await
            .map_err(|e| delta_error(&self.what, e))?;
        Ok(adds
            .into_iter()
            .map(|mut add| {
                add.data_change = self.data_change;
                Action::Add(add)
            })
            .collect())
    }
}

/// A live file's rows, one batch at a time: a file is never held whole.
pub type FileBatches = ParquetRecordBatchStream<StoreFile>;

impl DeltaTarget {
    /// Opens the table at `url`, creating it with `schema` when there is none.
    pub async fn open_or_create(
        url: Url,
        label: String,
        app_id: String,
        schema: &Schema,
        partition_columns: Vec<String>,
        config: &DeltaConfig,
    ) -> Result<Self, ConnectorError> {
        let storage: HashMap<String, String> = config.storage.clone().into_iter().collect();
        let what = format!("opening the Delta table {label} at {url}");
        if url.scheme() == "file" {
            if let Ok(dir) = url.to_file_path() {
                std::fs::create_dir_all(&dir).map_err(|e| {
                    ConnectorError::definite(format!(
                        "delta: creating the directory {} failed; check free space and permissions of sink.path",
                        dir.display()
                    ))
                    .caused_by(e)
                })?;
            }
        }
        let mut table = DeltaTableBuilder::from_url(url.clone())
            .map_err(|e| delta_error(&what, e))?
            .with_storage_options(storage)
            .build()
            .map_err(|e| delta_error(&what, e))?;
        match table.load().await {
            Ok(()) => {}
            Err(deltalake::DeltaTableError::NotATable(_)) => {
                let kernel: StructType = schema
                    .try_into_kernel()
                    .map_err(|e| delta_error(&format!("mapping the columns of {label}"), e))?;
                table = table
                    .create()
                    .with_columns(kernel.fields().cloned())
                    .with_partition_columns(partition_columns)
                    .with_save_mode(SaveMode::Ignore)
                    .with_configuration_property(
                        deltalake::TableProperty::CheckpointInterval,
                        Some("50"),
                    )
                    .await
                    .map_err(|e| {
                        delta_error(&format!("creating the Delta table {label} at {url}"), e)
                    })?;
                tracing::info!(table = %label, %url, "delta: created the table");
            }
            Err(e) => return Err(delta_error(&what, e)),
        }
        let location = match url.to_file_path() {
            Ok(dir) if url.scheme() == "file" => dir.display().to_string(),
            _ => url.to_string(),
        };
        let mut target = DeltaTarget {
            label,
            location,
            table,
            app_id,
            committed: None,
            round: 0,
            writer_properties: writer_properties(config.compression),
            target_file_size: config.target_file_size,
        };
        target.read_progress().await?;
        Ok(target)
    }

    /// Reads the round (`txn`) and the position (commitInfo) of the last commit this sink made.
    async fn read_progress(&mut self) -> Result<(), ConnectorError> {
        let what = format!("reading the progress of {}", self.label);
        let snapshot = self.table.snapshot().map_err(|e| delta_error(&what, e))?;
        self.round = snapshot
            .transaction_version(&*self.table.log_store(), &self.app_id)
            .await
            .map_err(|e| delta_error(&what, e))?
            .unwrap_or(0);
        if self.round == 0 {
            return Ok(());
        }
        // Headwater's own commits all carry the position; others (a reader's OPTIMIZE) don't.
        let history: Vec<_> = self.table.history(Some(50)).collect().await;
        for info in history {
            let info = info.map_err(|e| delta_error(&what, e))?;
            if let Some(position) = info.info.get(POSITION_KEY) {
                let position: Position = serde_json::from_value(position.clone()).map_err(|e| {
                    ConnectorError::definite(format!(
                        "{}: the position in its last commit is unreadable ({e}); the table was written by another program — point sink.path at a new directory",
                        self.label
                    ))
                })?;
                self.committed = Some(position);
                return Ok(());
            }
        }
        Err(ConnectorError::definite(format!(
            "{}: its txn action says round {} but none of its last 50 commits records a source position; the table was changed by another writer — point sink.path at a new directory",
            self.label, self.round
        )))
    }

    pub fn arrow_schema(&self) -> Result<SchemaRef, ConnectorError> {
        let what = format!("reading the schema of {}", self.label);
        let snapshot = self.table.snapshot().map_err(|e| delta_error(&what, e))?;
        let schema: Schema = snapshot
            .schema()
            .as_ref()
            .try_into_arrow()
            .map_err(|e| delta_error(&what, e))?;
        Ok(Arc::new(schema))
    }

    /// Adds the `fields` the table lacks (all nullable) in a metadata-only commit. Columns the
    /// source dropped stay: older rows keep their values and newer rows hold null.
    pub async fn add_columns(&mut self, fields: &[Field]) -> Result<(), ConnectorError> {
        let current = self.arrow_schema()?;
        let missing: Vec<Field> = fields
            .iter()
            .filter(|f| current.field_with_name(f.name()).is_err())
            .map(|f| f.clone().with_nullable(true))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let what = format!("adding columns to {}", self.label);
        let mut all: Vec<Field> = current
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        all.extend(missing.iter().cloned());
        let kernel: StructType = (&Schema::new(all))
            .try_into_kernel()
            .map_err(|e| delta_error(&what, e))?;
        let added: StructType = (&Schema::new(missing.clone()))
            .try_into_kernel()
            .map_err(|e| delta_error(&what, e))?;
        let snapshot = self.table.snapshot().map_err(|e| delta_error(&what, e))?;
        let metadata = snapshot
            .metadata()
            .clone()
            .with_schema(&kernel)
            .map_err(|e| delta_error(&what, e))?;
        let operation = DeltaOperation::AddColumn {
            fields: added.fields().cloned().collect(),
        };
        let round = self.round;
        let position = self.committed.clone();
        self.commit(vec![Action::Metadata(metadata)], operation, round, position)
            .await?;
        tracing::info!(table = %self.label, columns = ?missing.iter().map(|f| f.name()).collect::<Vec<_>>(), "delta: added columns");
        Ok(())
    }

    /// Starts writing new Parquet files of this table.
    pub fn file_writer(&self, data_change: bool) -> Result<FileWriter, ConnectorError> {
        let what = format!(
            "writing Parquet files of {} into {}",
            self.label, self.location
        );
        let writer = RecordBatchWriter::for_table(&self.table)
            .map_err(|e| delta_error(&what, e))?
            .with_writer_properties(self.writer_properties.clone())
            .with_target_file_size(self.target_file_size);
        Ok(FileWriter {
            writer,
            data_change,
            what,
        })
    }

    /// Writes `batches` as new Parquet files and returns their `add` actions; nothing is
    /// committed yet.
    pub async fn write_files(
        &self,
        batches: Vec<RecordBatch>,
        data_change: bool,
    ) -> Result<Vec<Action>, ConnectorError> {
        if batches.iter().all(|b| b.num_rows() == 0) {
            return Ok(Vec::new());
        }
        let mut writer = self.file_writer(data_change)?;
        for batch in batches {
            writer.write(batch).await?;
        }
        writer.finish().await
    }

    /// The table's live files, with the statistics of `stats_column` when given.
    pub async fn live_files(
        &self,
        stats_column: Option<&str>,
    ) -> Result<Vec<LiveFile>, ConnectorError> {
        let what = format!("listing the files of {}", self.label);
        let snapshot = self.table.snapshot().map_err(|e| delta_error(&what, e))?;
        let views: Vec<_> = snapshot
            .snapshot()
            .file_views(&*self.table.log_store(), None)
            .collect()
            .await;
        let mut files = Vec::with_capacity(views.len());
        for view in views {
            let view = view.map_err(|e| delta_error(&what, e))?;
            let (min, max) = match (stats_column, view.stats()) {
                (Some(column), Some(stats)) => column_bounds(&stats, column),
                _ => (None, None),
            };
            files.push(LiveFile {
                path: view.path().to_string(),
                size: view.size(),
                rows: view.num_records(),
                partition: view.partition_values_map(),
                min,
                max,
                remove: view.remove_action(true),
            });
        }
        Ok(files)
    }

    /// Reads `file` batch by batch; with `only`, just those columns (in the file's order).
    pub async fn read_batches(
        &self,
        file: &LiveFile,
        only: Option<&[String]>,
    ) -> Result<FileBatches, ConnectorError> {
        let what = format!("reading {} of {}", file.path, self.label);
        let location = deltalake::Path::parse(&file.path).map_err(|e| delta_error(&what, e))?;
        let size = u64::try_from(file.size).map_err(|e| delta_error(&what, e))?;
        let reader = StoreFile::new(self.table.object_store(), location, size);
        let mut builder = ParquetRecordBatchStreamBuilder::new(reader)
            .await
            .map_err(|e| delta_error(&what, e))?
            .with_batch_size(READ_BATCH_ROWS);
        if let Some(names) = only {
            let schema = builder.schema();
            let roots: Vec<usize> = names
                .iter()
                .filter_map(|name| schema.index_of(name).ok())
                .collect();
            let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
            builder = builder.with_projection(mask);
        }
        builder.build().map_err(|e| delta_error(&what, e))
    }

    /// Commits `actions` as round `round` covering `position` (both recorded in the table).
    pub async fn commit(
        &mut self,
        actions: Vec<Action>,
        operation: DeltaOperation,
        round: i64,
        position: Option<Position>,
    ) -> Result<(), ConnectorError> {
        let what = format!("committing to {} at {}", self.label, self.location);
        let mut metadata = vec![(ROUND_KEY.to_string(), serde_json::json!(round))];
        if let Some(position) = &position {
            let value = serde_json::to_value(position).map_err(|e| delta_error(&what, e))?;
            metadata.push((POSITION_KEY.to_string(), value));
        }
        let mut properties = CommitProperties::default().with_metadata(metadata);
        // a new round is recorded; maintenance commits (compaction, schema) repeat none
        if round > self.round {
            properties =
                properties.with_application_transaction(Transaction::new(&self.app_id, round));
        }
        let snapshot = self.table.snapshot().map_err(|e| delta_error(&what, e))?;
        let finalized = CommitBuilder::from(properties)
            .with_actions(actions)
            .build(Some(snapshot), self.table.log_store(), operation)
            .await
            .map_err(|e| delta_error(&what, e))?;
        self.table.state = Some(finalized.snapshot());
        self.round = round;
        self.committed = position;
        Ok(())
    }

    pub fn version(&self) -> Option<u64> {
        self.table.version()
    }

    pub fn table(&self) -> &DeltaTable {
        &self.table
    }

    /// Takes the table as an operation of delta-rs left it (the vacuum).
    pub fn replace_table(&mut self, table: DeltaTable) {
        self.table = table;
    }
}

/// `minValues[column]` and `maxValues[column]` of a file's statistics JSON.
fn column_bounds(
    stats: &str,
    column: &str,
) -> (Option<serde_json::Value>, Option<serde_json::Value>) {
    let Ok(stats) = serde_json::from_str::<serde_json::Value>(stats) else {
        return (None, None);
    };
    let get = |key: &str| stats.get(key).and_then(|m| m.get(column)).cloned();
    (get("minValues"), get("maxValues"))
}

/// A blind append's operation, for the commit log.
pub fn append_operation() -> DeltaOperation {
    DeltaOperation::Write {
        mode: SaveMode::Append,
        partition_by: None,
        predicate: None,
    }
}

//! One Delta table the sink writes: created on first use, evolved when its source table changes,
//! and committed with the `txn` action and the source position the commit covers, so the table
//! itself says how far it holds the source's changes.

use crate::config::DeltaConfig;
use crate::error::delta_error;
use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::{Field, Schema, SchemaRef};
use deltalake::kernel::engine::arrow_conversion::{TryIntoArrow, TryIntoKernel};
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, MetadataExt, Remove, StructType, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaTable, DeltaTableBuilder};
use futures::StreamExt;
use headwater_contract::{ConnectorError, Position};
use headwater_lakehouse::files::ParquetSettings;
use headwater_lakehouse::options::ParquetEncodings;
use headwater_lakehouse::{FileBatches, LiveFile, Operation, TableCommit, TableTarget};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// The commitInfo key holding the source position a commit covers.
pub const POSITION_KEY: &str = "headwater.position";
/// The commitInfo key holding the sink's commit round.
pub const ROUND_KEY: &str = "headwater.round";

/// What a live file's removal needs: its `remove` action as the log describes the file.
pub type DeltaFile = LiveFile<Remove>;

fn remove_action(file: &DeltaFile, data_change: bool) -> Action {
    let mut remove = file.handle.clone();
    remove.data_change = data_change;
    remove.deletion_timestamp = Some(headwater_contract::now_ms());
    Action::Remove(remove)
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
    parquet: ParquetSettings,
    target_file_size: u64,
}

/// Parquet files being written for one commit, batch by batch (cut at the target size, split
/// by partition) by delta-rs's writer, which gathers each file's statistics for its `add`.
pub struct DeltaFileWriter {
    writer: RecordBatchWriter,
    what: String,
}

impl headwater_lakehouse::FileWriter for DeltaFileWriter {
    type Written = Add;

    async fn write(&mut self, batch: RecordBatch) -> Result<(), ConnectorError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.writer
            .write(batch)
            .await
            .map_err(|e| delta_error(&self.what, e))
    }

    async fn finish(mut self) -> Result<Vec<Add>, ConnectorError> {
        self.writer
            .flush()
            .await
            .map_err(|e| delta_error(&self.what, e))
    }
}

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
            parquet: ParquetSettings::new(
                config.compression,
                config.parquet_encodings.unwrap_or(ParquetEncodings::Delta),
            ),
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

    /// Commits `actions` as round `round` covering `position` (both recorded in the table).
    async fn commit_actions(
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
}

impl TableTarget for DeltaTarget {
    type Handle = Remove;
    type Written = Add;
    type Writer = DeltaFileWriter;

    fn label(&self) -> &str {
        &self.label
    }

    fn round(&self) -> i64 {
        self.round
    }

    fn committed(&self) -> Option<&Position> {
        self.committed.as_ref()
    }

    fn version(&self) -> Option<u64> {
        self.table.version()
    }

    fn arrow_schema(&self) -> Result<SchemaRef, ConnectorError> {
        let what = format!("reading the schema of {}", self.label);
        let snapshot = self.table.snapshot().map_err(|e| delta_error(&what, e))?;
        let schema: Schema = snapshot
            .schema()
            .as_ref()
            .try_into_arrow()
            .map_err(|e| delta_error(&what, e))?;
        Ok(Arc::new(schema))
    }

    async fn add_columns(&mut self, fields: &[Field]) -> Result<(), ConnectorError> {
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
        self.commit_actions(vec![Action::Metadata(metadata)], operation, round, position)
            .await?;
        tracing::info!(table = %self.label, columns = ?missing.iter().map(|f| f.name()).collect::<Vec<_>>(), "delta: added columns");
        Ok(())
    }

    fn file_writer(&self) -> Result<DeltaFileWriter, ConnectorError> {
        let what = format!(
            "writing Parquet files of {} into {}",
            self.label, self.location
        );
        let writer = RecordBatchWriter::for_table(&self.table)
            .map_err(|e| delta_error(&what, e))?
            .with_writer_properties(self.parquet.for_schema(self.arrow_schema()?.as_ref()))
            .with_target_file_size(self.target_file_size);
        Ok(DeltaFileWriter { writer, what })
    }

    async fn live_files(
        &self,
        stats_column: Option<&str>,
    ) -> Result<Vec<DeltaFile>, ConnectorError> {
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
                handle: view.remove_action(true),
            });
        }
        Ok(files)
    }

    async fn read_batches(
        &self,
        file: &DeltaFile,
        only: Option<&[String]>,
    ) -> Result<FileBatches, ConnectorError> {
        let what = format!("delta: reading {} of {}", file.path, self.label);
        let location = deltalake::Path::parse(&file.path).map_err(|e| delta_error(&what, e))?;
        let size = u64::try_from(file.size).map_err(|e| delta_error(&what, e))?;
        headwater_lakehouse::files::read_batches(
            self.table.object_store(),
            location,
            size,
            only,
            &what,
        )
        .await
    }

    async fn commit(&mut self, commit: TableCommit<Self>) -> Result<(), ConnectorError> {
        let data_change = commit.operation.changes_data();
        let mut actions: Vec<Action> = commit
            .removed
            .iter()
            .map(|file| remove_action(file, data_change))
            .collect();
        actions.extend(commit.added.into_iter().map(|mut add| {
            add.data_change = data_change;
            Action::Add(add)
        }));
        let operation = match commit.operation {
            Operation::Append => append_operation(),
            Operation::Merge { changed_keys } => DeltaOperation::Merge {
                predicate: None,
                merge_predicate: Some(format!("key in {changed_keys} changed keys")),
                matched_predicates: vec![],
                not_matched_predicates: vec![],
                not_matched_by_source_predicates: vec![],
            },
            Operation::Compact { target_size } => DeltaOperation::Optimize {
                predicate: None,
                target_size: target_size as i64,
            },
        };
        self.commit_actions(actions, operation, commit.round, commit.position)
            .await
    }

    async fn vacuum(&mut self, retention: Duration) -> Result<usize, ConnectorError> {
        crate::vacuum::vacuum(self, retention).await
    }
}

impl DeltaTarget {
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

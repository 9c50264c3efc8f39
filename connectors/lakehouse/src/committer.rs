//! The committing half of a lakehouse sink: the tables, the checkpoint and the acks. A
//! round's changes are handed over whole ([`Round`]), so the committer can work on a task of its
//! own while the sink gathers the next round: Parquet encoding, merging and compaction overlap
//! the decoding of the changes that follow.

use crate::changelog::{Changelog, ChangelogRound};
use crate::error::lake_error;
use crate::format::{TableFormat, TableTarget};
use crate::mirror::{MergeStats, Mirror, MirrorRound};
use crate::options::{Deletes, PartitionBy, TableKind, TableOptions};
use crate::schema_changes::{self, SchemaChanges};
use arrow::array::RecordBatch;
use arrow::datatypes::Schema;
use headwater_contract::{Ack, AckSender, ConnectorError, Position, TableSchema};
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

pub const CHECKPOINT: &str = "_headwater/sink.json";

/// The last round committed to every table it touched.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Checkpoint {
    pub round: i64,
    pub position: Option<Position>,
}

/// The tables of one source table.
struct TableTargets<T> {
    mirror: Option<T>,
    changelog: Option<T>,
    /// The mirror's key columns (its compaction sorts by them).
    key_columns: Vec<String>,
}

/// One source table's changes in a round.
pub struct TableRound {
    pub mirror: Option<MirrorRound>,
    pub changelog: Option<ChangelogRound>,
    pub key_columns: Vec<String>,
}

/// Everything one round commits, and the record sequence number it acknowledges.
pub struct Round {
    pub number: i64,
    pub through: Position,
    /// By table name.
    pub tables: BTreeMap<String, TableRound>,
    pub schema_changes: Option<RecordBatch>,
    pub ack: Option<u64>,
}

/// What [`Committer::recover`] found in the tables.
pub struct Recovered {
    /// Where the stream resumes.
    pub position: Option<Position>,
    /// Per table label: the position its own last commit covers, when past the
    /// checkpoint (a round that did not finish).
    pub holds: HashMap<String, Position>,
    /// The highest round any table or the checkpoint records.
    pub highest_round: i64,
}

pub struct Committer<F: TableFormat> {
    options: Arc<TableOptions>,
    format: Arc<F>,
    acks: Option<AckSender>,
    targets: BTreeMap<String, TableTargets<F::Target>>,
    schema_changes: Option<F::Target>,
    checkpoint: Checkpoint,
    last_vacuum_at: Instant,
}

impl<F: TableFormat> Committer<F> {
    pub fn new(options: Arc<TableOptions>, format: Arc<F>) -> Self {
        Committer {
            options,
            format,
            acks: None,
            targets: BTreeMap::new(),
            schema_changes: None,
            checkpoint: Checkpoint::default(),
            last_vacuum_at: Instant::now(),
        }
    }

    pub fn set_acks(&mut self, acks: AckSender) {
        self.acks = Some(acks);
    }

    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    async fn open_target(
        &self,
        kind: TableKind,
        name: &str,
        schema: &Schema,
        partition_columns: Vec<String>,
        key_columns: &[String],
    ) -> Result<F::Target, ConnectorError> {
        self.format
            .open(kind, name, schema, partition_columns, key_columns)
            .await
    }

    pub async fn read_checkpoint(&mut self) -> Result<(), ConnectorError> {
        let path = object_store::path::Path::from(CHECKPOINT);
        match self.format.store().get(&path).await {
            Ok(found) => {
                let bytes = found.bytes().await.map_err(|e| {
                    lake_error(
                        &format!(
                            "{}: reading {}{CHECKPOINT}",
                            F::NAME,
                            self.format.location()
                        ),
                        e,
                    )
                })?;
                self.checkpoint = serde_json::from_slice(&bytes).map_err(|e| {
                    ConnectorError::definite(format!(
                        "{}: {}{CHECKPOINT} is unreadable ({e}); delete it and Headwater rebuilds it from the tables' own commits",
                        F::NAME, self.format.location()
                    ))
                })?;
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => {
                return Err(lake_error(
                    &format!(
                        "{}: reading {}{CHECKPOINT}",
                        F::NAME,
                        self.format.location()
                    ),
                    e,
                ))
            }
        }
        Ok(())
    }

    async fn write_checkpoint(&self) -> Result<(), ConnectorError> {
        let bytes = serde_json::to_vec_pretty(&self.checkpoint).map_err(|e| {
            ConnectorError::definite(format!("{}: encoding the checkpoint: {e}", F::NAME))
        })?;
        self.format
            .store()
            .put(&object_store::path::Path::from(CHECKPOINT), bytes.into())
            .await
            .map_err(|e| {
                lake_error(
                    &format!(
                        "{}: writing {}{CHECKPOINT}",
                        F::NAME,
                        self.format.location()
                    ),
                    e,
                )
            })?;
        Ok(())
    }

    /// The tables the sink made before, opened.
    pub async fn existing_tables(&self) -> Result<Vec<F::Target>, ConnectorError> {
        let mut targets = Vec::new();
        for (kind, name) in self.format.existing_tables().await? {
            targets.push(
                self.open_target(kind, &name, &Schema::empty(), Vec::new(), &[])
                    .await?,
            );
        }
        Ok(targets)
    }

    /// Opens every table already under the path and learns how far each got.
    pub async fn recover(&mut self) -> Result<Recovered, ConnectorError> {
        self.read_checkpoint().await?;
        let mut recovered = Recovered {
            position: None,
            holds: HashMap::new(),
            highest_round: self.checkpoint.round,
        };
        let mut positions = Vec::new();
        for target in self.existing_tables().await? {
            // a table ahead of the checkpoint (its round's checkpoint was not written, or a
            // later round covered less of the log) skips what it already holds; positions
            // rather than rounds decide, since a table's position never goes back
            if let Some(position) = target.committed() {
                let ahead = match &self.checkpoint.position {
                    Some(checkpoint) => position > checkpoint,
                    None => true,
                };
                if ahead {
                    recovered
                        .holds
                        .insert(target.label().to_string(), position.clone());
                }
                positions.push(position.clone());
            }
            recovered.highest_round = recovered.highest_round.max(target.round());
            tracing::info!(table = %target.label(), round = target.round(), position = ?target.committed().map(ToString::to_string), "{}: found table", F::NAME);
        }
        if self.checkpoint.position.is_some() {
            recovered.position = self.checkpoint.position.clone();
            return Ok(recovered);
        }
        // no checkpoint (a new sink, or the file was deleted): the oldest table position is
        // safe, since every table skips what it already holds
        recovered.position = positions
            .into_iter()
            .reduce(|a, b| if b < a { b } else { a });
        if recovered.position.is_some() {
            tracing::warn!(
                "{}: {CHECKPOINT} is missing; resuming from the oldest table position",
                F::NAME
            );
        }
        Ok(recovered)
    }

    /// Opens (creating when missing) the tables of source table `name`: a mirror when
    /// the sink keeps mirrors and the table has a key, a changelog when the sink keeps them.
    /// Returns which of the two it has.
    pub async fn open_tables(
        &mut self,
        name: &str,
        table: &Arc<TableSchema>,
        key_columns: &[String],
    ) -> Result<(bool, bool), ConnectorError> {
        if let Some(targets) = self.targets.get(name) {
            return Ok((targets.mirror.is_some(), targets.changelog.is_some()));
        }
        let partitioned = self.options.partition_by == PartitionBy::Day;
        let soft = self.options.deletes == Deletes::Soft;
        let mut targets = TableTargets {
            mirror: None,
            changelog: None,
            key_columns: key_columns.to_vec(),
        };
        if self.options.tables.mirror() && !key_columns.is_empty() {
            let schema = Schema::new(Mirror::initial_fields(table, soft));
            targets.mirror = Some(
                self.open_target(TableKind::Mirror, name, &schema, Vec::new(), key_columns)
                    .await?,
            );
        }
        if self.options.tables.changelog() {
            let schema = Schema::new(Changelog::initial_fields(table, partitioned));
            let partitions = Changelog::partition_columns(partitioned);
            targets.changelog = Some(
                self.open_target(TableKind::Changelog, name, &schema, partitions, &[])
                    .await?,
            );
        }
        let kinds = (targets.mirror.is_some(), targets.changelog.is_some());
        self.targets.insert(name.to_string(), targets);
        Ok(kinds)
    }

    /// Opens (creating when missing) the changelog of the source's schema changes.
    pub async fn open_schema_changes(&mut self, name: &str) -> Result<(), ConnectorError> {
        if self.schema_changes.is_none() {
            let target = self
                .open_target(
                    TableKind::Changelog,
                    name,
                    &SchemaChanges::schema(),
                    Vec::new(),
                    &[],
                )
                .await?;
            self.schema_changes = Some(target);
        }
        Ok(())
    }

    /// Commits one round: every table it changed, then the checkpoint, then the ack; then the
    /// maintenance of the tables it touched.
    pub async fn commit_round(&mut self, round: Round) -> Result<(), ConnectorError> {
        let started = Instant::now();
        let (number, through) = (round.number, &round.through);
        let mut changes = 0;
        let mut merged = MergeStats::default();
        for (name, table_round) in round.tables {
            let targets = self.targets.get_mut(&name).ok_or_else(|| {
                ConnectorError::definite(format!(
                    "{}: internal error, the tables of {name} were not opened",
                    F::NAME
                ))
            })?;
            targets.key_columns = table_round.key_columns;
            // the changelog is written on another worker beside the mirror's merge: both are
            // mostly Parquet encoding, and the round is done when the slower one is
            let appending = match (targets.changelog.take(), table_round.changelog) {
                (Some(mut target), Some(rows)) => {
                    let through = through.clone();
                    Some(tokio::spawn(async move {
                        let appended = rows.commit(&mut target, number, &through).await;
                        (target, appended)
                    }))
                }
                (target, _) => {
                    targets.changelog = target;
                    None
                }
            };
            let merging = match (&mut targets.mirror, table_round.mirror) {
                (Some(target), Some(keys)) => {
                    keys.commit(target, number, through, &targets.key_columns)
                        .await
                }
                _ => Ok(MergeStats::default()),
            };
            if let Some(appending) = appending {
                let (target, appended) = appending.await.map_err(|e| {
                    ConnectorError::definite(format!(
                        "{}: the commit of changelog {name} stopped before it finished ({e}); start the pipeline again (it resumes from the tables' last commits)",
                        F::NAME
                    ))
                })?;
                targets.changelog = Some(target);
                changes += appended?;
            }
            let stats = merging?;
            merged.changed_keys += stats.changed_keys;
            merged.files_read += stats.files_read;
            merged.files_rewritten += stats.files_rewritten;
            merged.rows_carried += stats.rows_carried;
        }
        if let (Some(target), Some(rows)) = (&mut self.schema_changes, round.schema_changes) {
            schema_changes::commit(target, rows, number, through).await?;
        }
        self.checkpoint = Checkpoint {
            round: number,
            position: Some(through.clone()),
        };
        self.write_checkpoint().await?;
        tracing::debug!(round = number, changes, ?merged, elapsed = ?started.elapsed(), position = %through, "{} commit", F::NAME);
        if let (Some(seq), Some(acks)) = (round.ack, &self.acks) {
            acks.ack(Ack::Through(seq));
        }
        self.maintain(Some(number)).await
    }

    pub fn vacuum_due(&self) -> bool {
        self.last_vacuum_at.elapsed() >= self.options.vacuum_interval
    }

    /// Compacts the tables round `round` touched; vacuums every table now and then.
    pub async fn maintain(&mut self, round: Option<i64>) -> Result<(), ConnectorError> {
        let (min_files, target_size) = (
            self.options.compact_min_files,
            self.options.target_file_size,
        );
        let vacuum_due = self.vacuum_due();
        let retention = self.options.vacuum_retention;
        let mut vacuumed = 0;
        let mut targets: Vec<(&mut F::Target, &[String])> = Vec::new();
        for tables in self.targets.values_mut() {
            let keys = tables.key_columns.as_slice();
            if let Some(mirror) = &mut tables.mirror {
                targets.push((mirror, keys));
            }
            if let Some(changelog) = &mut tables.changelog {
                targets.push((changelog, &[]));
            }
        }
        if let Some(log) = &mut self.schema_changes {
            targets.push((log, &[]));
        }
        for (target, sort_by) in targets {
            if round == Some(target.round()) {
                crate::maintenance::compact(target, min_files, target_size, sort_by).await?;
            }
            if vacuum_due {
                vacuumed += target.vacuum(retention).await?;
            }
        }
        if vacuum_due {
            self.last_vacuum_at = Instant::now();
            tracing::debug!(files = vacuumed, "{}: vacuum done", F::NAME);
        }
        Ok(())
    }
}

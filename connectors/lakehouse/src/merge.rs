//! The merge of a mirror round into its table (copy-on-write): the files that may hold a
//! changed key (from the first key column's file statistics, then the key columns themselves)
//! are rewritten without the changed keys' old rows, a few at a time on tasks of their own,
//! and the round's rows are written beside them in key order.

use crate::batch::{self, conform, utc_micros};
use crate::error::lake_error;
use crate::format::{FileBatches, FileWriter, LiveFile, Operation, TableCommit, TableTarget};
use crate::mirror::{MergeStats, Mirror, MirrorRound, Truncation, DELETED, DELETED_AT};
use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::{DataType, Int32Type, Int64Type, SchemaRef, TimestampMicrosecondType};
use arrow::row::{RowConverter, SortField};
use futures::StreamExt;
use headwater_contract::{ConnectorError, Position};
use std::sync::Arc;
use tokio::task::JoinSet;

impl MirrorRound {
    /// Applies the changes to `target` as round `round`, covering `through`.
    pub async fn commit<T: TableTarget>(
        self,
        target: &mut T,
        round: i64,
        through: &Position,
        key_columns: &[String],
    ) -> Result<MergeStats, ConnectorError> {
        let mut stats = MergeStats {
            changed_keys: self.entries.len(),
            ..MergeStats::default()
        };
        if self.entries.is_empty() && self.truncation.is_none() {
            return Ok(stats);
        }
        let label = target.label().to_string();
        if let (Some(last), false) = (self.tables.last(), self.entries.is_empty()) {
            let fields = Mirror::initial_fields(last, self.soft_deletes);
            target.add_columns(&fields).await?;
        }
        let schema = target.arrow_schema()?;
        let (changes, deletes) = self.changes(&schema, &label)?;
        // the images are in `changes` now; a merge of a large round holds them once
        let MirrorRound {
            entries,
            tables,
            changelog,
            arena,
            truncation,
            soft_deletes,
        } = self;
        drop((entries, tables, changelog, arena));
        let keys = KeyMatcher::new(&schema, key_columns, &label)?;
        // the changed keys as a set, made only once a file may hold one of them (rounds of new
        // keys past every file's range need none)
        let changed_keys: Vec<Vec<ArrayRef>> = changes.iter().map(|b| keys.columns(b)).collect();
        let mut changed: Option<KeySet> = None;
        let bounds = keys.int_bounds(&changes);
        let upserts = upserts(changes, &deletes, soft_deletes, key_columns, &label)?;
        let mut removed = Vec::new();
        let mut added = Vec::new();
        let mut rewrites = Vec::new();
        let first_key = key_columns.first().map(String::as_str);
        for file in target.live_files(first_key).await? {
            if truncation.is_none() && !may_hold(&file, bounds) {
                continue;
            }
            if truncation.is_some() && !soft_deletes {
                // every row goes: nothing to read
                stats.files_rewritten += 1;
                removed.push(file);
                continue;
            }
            let changed = keys.key_set(&changed_keys, &mut changed)?;
            // the key columns alone say whether the file holds a changed key
            if truncation.is_none() && !keys.file_holds_any(target, &file, changed).await? {
                continue;
            }
            rewrites.push(file);
        }
        let rewrite = Arc::new(Rewrite {
            keys,
            changed: changed.unwrap_or_default(),
            schema,
            truncation,
            label: label.clone(),
        });
        rewrite_files(
            target,
            rewrites,
            rewrite,
            &mut stats,
            &mut removed,
            &mut added,
        )
        .await?;
        if upserts.iter().any(|b| b.num_rows() > 0) {
            let mut writer = target.file_writer()?;
            for part in upserts {
                writer.write(part).await?;
            }
            added.extend(writer.finish().await?);
        }
        target
            .commit(TableCommit {
                operation: Operation::Merge {
                    changed_keys: stats.changed_keys,
                },
                added,
                removed,
                round,
                position: Some(through.clone()),
            })
            .await?;
        tracing::debug!(table = %label, ?stats, "mirror merged");
        Ok(stats)
    }
}

/// What a file's rewrite keeps of it: the rows of keys the round did not change (flagged
/// deleted after a soft-deleting TRUNCATE).
struct Rewrite {
    keys: KeyMatcher,
    changed: KeySet,
    schema: SchemaRef,
    truncation: Option<Truncation>,
    label: String,
}

/// A rewritten file: its index among the round's rewrites, the files written and its rows.
type Rewritten<W> = (usize, Vec<W>, usize);

/// Rewrites `files` without the round's changed keys, as many at a time as there are cores:
/// a large UPDATE rewrites most of a table, and one file after another left a core idle.
async fn rewrite_files<T: TableTarget>(
    target: &T,
    files: Vec<LiveFile<T::Handle>>,
    rewrite: Arc<Rewrite>,
    stats: &mut MergeStats,
    removed: &mut Vec<LiveFile<T::Handle>>,
    added: &mut Vec<T::Written>,
) -> Result<(), ConnectorError> {
    let at_once = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut running: JoinSet<Result<Rewritten<T::Written>, ConnectorError>> = JoinSet::new();
    let mut done = Vec::with_capacity(files.len());
    for (index, file) in files.into_iter().enumerate() {
        if running.len() >= at_once {
            if let Some(joined) = running.join_next().await {
                done.push(rewritten(joined)?);
            }
        }
        stats.files_read += 1;
        stats.files_rewritten += 1;
        let writer = target.file_writer()?;
        let batches = target.read_batches(&file, None).await?;
        let rewrite = Arc::clone(&rewrite);
        let path = file.path.clone();
        removed.push(file);
        running.spawn(async move { rewrite.file(index, path, batches, writer).await });
    }
    while let Some(joined) = running.join_next().await {
        done.push(rewritten(joined)?);
    }
    // the commit lists the files in the order they were found, however the tasks finished
    done.sort_by_key(|(index, _, _)| *index);
    for (_, written, carried) in done {
        stats.rows_carried += carried;
        added.extend(written);
    }
    Ok(())
}

fn rewritten<W>(
    joined: Result<Result<Rewritten<W>, ConnectorError>, tokio::task::JoinError>,
) -> Result<Rewritten<W>, ConnectorError> {
    joined.map_err(|e| {
        ConnectorError::definite(format!(
            "a file's rewrite stopped before it finished ({e}); start the pipeline again (it resumes from the tables' last commits)"
        ))
    })?
}

impl Rewrite {
    async fn file<W: FileWriter>(
        &self,
        index: usize,
        path: String,
        mut batches: FileBatches,
        mut writer: W,
    ) -> Result<Rewritten<W::Written>, ConnectorError> {
        let mut carried = 0;
        // batch by batch, so a rewrite holds one batch of the file's rows, not the file
        while let Some(part) = batches.next().await {
            let part = part.map_err(|e| lake_error(&format!("reading {path}"), e))?;
            let part = conform(&part, &self.schema, &self.label)?;
            let keep = self.keys.not_in(&part, &self.changed)?;
            let part =
                filter_record_batch(&part, &keep).map_err(|e| lake_error("filtering rows", e))?;
            let part = match &self.truncation {
                Some(t) => flag_deleted(&part, t.commit_ts_ms, &t.position, &self.label)?,
                None => part,
            };
            carried += part.num_rows();
            writer.write(part).await?;
        }
        Ok((index, writer.finish().await?, carried))
    }
}

/// The rows a round writes: its changes but hard deletes, in key order, so that a file covers
/// a narrow key range and a later merge reads few files. Each step drops the batches before it.
fn upserts(
    changes: Vec<RecordBatch>,
    deletes: &BooleanArray,
    soft_deletes: bool,
    key_columns: &[String],
    label: &str,
) -> Result<Vec<RecordBatch>, ConnectorError> {
    let upserts = if soft_deletes || deletes.true_count() == 0 {
        changes
    } else {
        let keep = arrow::compute::not(deletes).map_err(|e| lake_error("selecting upserts", e))?;
        let mut at = 0;
        let mut kept = Vec::with_capacity(changes.len());
        for part in changes {
            let rows = part.num_rows();
            let part = filter_record_batch(&part, &keep.slice(at, rows))
                .map_err(|e| lake_error("selecting upserts", e))?;
            at += rows;
            kept.push(part);
        }
        kept
    };
    batch::in_key_order(upserts, key_columns)
        .map_err(|e| lake_error(&format!("sorting the changes of {label}"), e))
}

/// `rows` of a soft-deleting mirror after a TRUNCATE: each row not deleted yet is flagged
/// deleted at the TRUNCATE's time, and its lineage names the TRUNCATE.
fn flag_deleted(
    rows: &RecordBatch,
    commit_ts_ms: i64,
    position: &str,
    label: &str,
) -> Result<RecordBatch, ConnectorError> {
    let schema = rows.schema();
    let column = |name: &str| {
        schema
            .index_of(name)
            .map_err(|e| lake_error(&format!("finding column {name} of {label}"), e))
    };
    let (deleted, deleted_at) = (column(DELETED)?, column(DELETED_AT)?);
    let (commit_time, at_position) = (column(batch::COMMIT_TIME)?, column(batch::POSITION)?);
    let was_deleted = rows.column(deleted).as_boolean();
    let newly = |row: usize| !(was_deleted.is_valid(row) && was_deleted.value(row));
    let micros = commit_ts_ms.saturating_mul(1000);
    let mut columns = rows.columns().to_vec();
    columns[deleted] = Arc::new(BooleanArray::from(vec![true; rows.num_rows()]));
    let times = |index: usize| -> ArrayRef {
        let old = rows
            .column(index)
            .as_primitive::<TimestampMicrosecondType>();
        let mut out = TimestampMicrosecondBuilder::with_capacity(rows.num_rows())
            .with_data_type(utc_micros());
        for row in 0..rows.num_rows() {
            out.append_option(if newly(row) {
                Some(micros)
            } else {
                old.is_valid(row).then(|| old.value(row))
            });
        }
        Arc::new(out.finish())
    };
    columns[deleted_at] = times(deleted_at);
    columns[commit_time] = times(commit_time);
    let old = rows.column(at_position).as_string::<i32>();
    let mut positions = StringBuilder::with_capacity(rows.num_rows(), rows.num_rows() * 24);
    for row in 0..rows.num_rows() {
        positions.append_option(if newly(row) {
            Some(position)
        } else {
            old.is_valid(row).then(|| old.value(row))
        });
    }
    columns[at_position] = Arc::new(positions.finish());
    RecordBatch::try_new(schema, columns)
        .map_err(|e| lake_error(&format!("flagging the rows of {label} deleted"), e))
}

/// Whether `file` may hold a key within `bounds` (an integer first key column's min and max).
fn may_hold<H>(file: &LiveFile<H>, bounds: Option<(i64, i64)>) -> bool {
    let Some((low, high)) = bounds else {
        return true;
    };
    match (
        file.min.as_ref().and_then(|v| v.as_i64()),
        file.max.as_ref().and_then(|v| v.as_i64()),
    ) {
        (Some(min), Some(max)) => !(max < low || min > high),
        _ => true,
    }
}

type KeySet = foldhash::HashSet<Box<[u8]>>;

/// Compares rows by their key columns (Arrow's row format: one byte string per key).
struct KeyMatcher {
    indexes: Vec<usize>,
    names: Vec<String>,
    converter_fields: Vec<DataType>,
    converter: RowConverter,
}

impl KeyMatcher {
    fn new(
        schema: &SchemaRef,
        key_columns: &[String],
        label: &str,
    ) -> Result<Self, ConnectorError> {
        let mut indexes = Vec::new();
        let mut converter_fields = Vec::new();
        for name in key_columns {
            let index = schema
                .index_of(name)
                .map_err(|e| lake_error(&format!("finding key column {name} of {label}"), e))?;
            converter_fields.push(schema.field(index).data_type().clone());
            indexes.push(index);
        }
        let sort_fields = converter_fields
            .iter()
            .cloned()
            .map(SortField::new)
            .collect();
        let converter = RowConverter::new(sort_fields)
            .map_err(|e| lake_error(&format!("comparing keys of {label}"), e))?;
        Ok(KeyMatcher {
            indexes,
            names: key_columns.to_vec(),
            converter_fields,
            converter,
        })
    }

    fn columns(&self, batch: &RecordBatch) -> Vec<ArrayRef> {
        self.indexes
            .iter()
            .map(|i| Arc::clone(batch.column(*i)))
            .collect()
    }

    /// The set of the keys in `parts` (key columns), made into `slot` the first time.
    fn key_set<'a>(
        &self,
        parts: &[Vec<ArrayRef>],
        slot: &'a mut Option<KeySet>,
    ) -> Result<&'a KeySet, ConnectorError> {
        let set = match slot.take() {
            Some(set) => set,
            None => {
                let mut set = KeySet::default();
                for columns in parts {
                    let rows = self
                        .converter
                        .convert_columns(columns)
                        .map_err(|e| lake_error("encoding keys", e))?;
                    set.extend(rows.iter().map(|r| Box::from(r.as_ref())));
                }
                set
            }
        };
        Ok(slot.insert(set))
    }

    /// Whether `file` holds any key of `keys`, from its key columns alone.
    async fn file_holds_any<T: TableTarget>(
        &self,
        target: &T,
        file: &LiveFile<T::Handle>,
        keys: &KeySet,
    ) -> Result<bool, ConnectorError> {
        let what = format!("reading the keys of {}", file.path);
        let mut batches = target.read_batches(file, Some(&self.names)).await?;
        while let Some(part) = batches.next().await {
            let part = part.map_err(|e| lake_error(&what, e))?;
            let mut columns = Vec::with_capacity(self.names.len());
            for (name, field) in self.names.iter().zip(self.converter_fields.iter()) {
                let Some(column) = part.column_by_name(name) else {
                    return Ok(true); // not this layout: let the full read decide
                };
                let column = if column.data_type() == field {
                    Arc::clone(column)
                } else {
                    cast(column, field).map_err(|e| lake_error(&what, e))?
                };
                columns.push(column);
            }
            let rows = self
                .converter
                .convert_columns(&columns)
                .map_err(|e| lake_error("encoding keys", e))?;
            if rows.iter().any(|r| keys.contains(r.as_ref())) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// `true` for each row of `batch` whose key is not in `keys`.
    fn not_in(&self, batch: &RecordBatch, keys: &KeySet) -> Result<BooleanArray, ConnectorError> {
        let rows = self
            .converter
            .convert_columns(&self.columns(batch))
            .map_err(|e| lake_error("encoding keys", e))?;
        Ok(rows
            .iter()
            .map(|r| Some(!keys.contains(r.as_ref())))
            .collect())
    }

    /// The min and max of the first key column over `batches` when it is an integer.
    fn int_bounds(&self, batches: &[RecordBatch]) -> Option<(i64, i64)> {
        let index = *self.indexes.first()?;
        let mut bounds: Option<(i64, i64)> = None;
        for part in batches {
            let column = part.column(index);
            if column.is_empty() {
                continue;
            }
            if column.null_count() > 0 {
                return None;
            }
            let (low, high) = match column.data_type() {
                DataType::Int64 => {
                    let values = column.as_primitive::<Int64Type>().values();
                    (*values.iter().min()?, *values.iter().max()?)
                }
                DataType::Int32 => {
                    let values = column.as_primitive::<Int32Type>().values();
                    (
                        i64::from(*values.iter().min()?),
                        i64::from(*values.iter().max()?),
                    )
                }
                _ => return None,
            };
            bounds = Some(bounds.map_or((low, high), |(l, h)| (l.min(low), h.max(high))));
        }
        bounds
    }
}

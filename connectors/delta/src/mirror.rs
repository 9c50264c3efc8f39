//! The mirror table of one source table: the rows the source has now. Each commit applies the
//! last change of every changed key; only the files that may hold a changed key are rewritten
//! (copy-on-write), found from the Parquet statistics of the first key column.

use crate::arrow_rows::RowColumns;
use crate::batch::{self, conform, utc_micros, Lineage};
use crate::error::delta_error;
use crate::table::{DeltaTarget, LiveFile};
use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, BooleanBuilder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use deltalake::arrow::compute::{cast, concat_batches, filter_record_batch};
use deltalake::arrow::datatypes::{
    DataType, Field, Int32Type, Int64Type, SchemaRef, TimestampMicrosecondType,
};
use deltalake::arrow::row::{RowConverter, SortField};
use deltalake::protocol::DeltaOperation;
use futures::StreamExt;
use headwater_contract::avro_scan::AvroReader;
use headwater_contract::{ConnectorError, Op, Position, TableSchema};
use std::sync::Arc;

pub const DELETED: &str = "__deleted";
pub const DELETED_AT: &str = "__deleted_at";
/// PostgreSQL's synthetic column (see docs/types.md); the mirror holds values, not this list.
const UNCHANGED_TOAST: &str = "__unchanged_toast";

fn kept(name: &str) -> bool {
    name != UNCHANGED_TOAST
}

/// The last change of one key in this commit.
struct Entry {
    table: Arc<TableSchema>,
    /// The row after the change; for a delete, the row before it.
    image: Vec<u8>,
    delete: bool,
    commit_ts_ms: i64,
    position: String,
}

/// What one commit did, for logs and the benchmark.
#[derive(Debug, Default, Clone, Copy)]
pub struct MergeStats {
    pub changed_keys: usize,
    pub files_read: usize,
    pub files_rewritten: usize,
    pub rows_carried: usize,
}

/// A TRUNCATE in this commit: every row written before it leaves the mirror (or, with soft
/// deletes, is flagged deleted with its time and position).
struct Truncation {
    commit_ts_ms: i64,
    position: String,
}

/// The changes of one mirror table waiting for the next round.
pub struct Mirror {
    soft_deletes: bool,
    truncation: Option<Truncation>,
    /// Key bytes (the key columns' encoding) → index in `entries`.
    keys: foldhash::HashMap<Vec<u8>, usize>,
    entries: Vec<Option<Entry>>,
}

/// The raw encoding of `table`'s key columns in `image`, in key order: equal keys give equal
/// bytes within a table version.
fn key_bytes(table: &TableSchema, image: &[u8]) -> Option<Vec<u8>> {
    let mut reader = AvroReader::new(image);
    let mut spans = Vec::with_capacity(table.columns.len());
    for column in &table.columns {
        let start = reader.offset();
        if !column.nullable || reader.optional()? {
            reader.skip(&column.field_type)?;
        }
        spans.push((start, reader.offset()));
    }
    let mut key = Vec::with_capacity(16);
    for &index in &table.primary_key {
        let (start, end) = *spans.get(index)?;
        key.extend_from_slice(image.get(start..end)?);
    }
    Some(key)
}

/// Whether PostgreSQL's `__unchanged_toast` column of `image` names any column (`None`: the
/// image does not follow the schema).
fn has_unchanged_toast(table: &TableSchema, image: &[u8]) -> Option<bool> {
    let Some(at) = table.columns.iter().position(|c| c.name == UNCHANGED_TOAST) else {
        return Some(false);
    };
    let mut reader = AvroReader::new(image);
    for column in &table.columns[..at] {
        if !column.nullable || reader.optional()? {
            reader.skip(&column.field_type)?;
        }
    }
    let column = &table.columns[at];
    if column.nullable && !reader.optional()? {
        return Some(false);
    }
    // an array: its first block count is 0 when empty
    Some(reader.long()? != 0)
}

impl Mirror {
    pub fn new(soft_deletes: bool) -> Self {
        Mirror {
            soft_deletes,
            truncation: None,
            keys: foldhash::HashMap::default(),
            entries: Vec::new(),
        }
    }

    pub fn initial_fields(table: &Arc<TableSchema>, soft_deletes: bool) -> Vec<Field> {
        let mut fields = RowColumns::new(table, kept, 0).fields();
        fields.extend(Lineage::fields());
        if soft_deletes {
            fields.push(Field::new(DELETED, DataType::Boolean, true));
            fields.push(Field::new(DELETED_AT, utc_micros(), true));
        }
        fields
    }

    pub fn has_pending(&self) -> bool {
        !self.keys.is_empty() || self.truncation.is_some()
    }

    /// Records one change: the key's last change wins; a key change deletes the old key.
    /// `position` is the text of the log position after the change.
    pub fn apply(
        &mut self,
        table: &Arc<TableSchema>,
        op: Op,
        before: Option<&[u8]>,
        after: Option<&[u8]>,
        commit_ts_ms: i64,
        position: &str,
    ) -> Result<(), ConnectorError> {
        let malformed = || {
            ConnectorError::definite(format!(
                "delta: a row image of {} does not follow its schema (version {})",
                table.id, table.version
            ))
        };
        if op == Op::Truncate {
            // what this commit changed before the TRUNCATE is gone with everything else
            self.entries.clear();
            self.keys.clear();
            self.truncation = Some(Truncation {
                commit_ts_ms,
                position: position.to_string(),
            });
            return Ok(());
        }
        if let (Some(before), Some(after)) = (before, after) {
            let old = key_bytes(table, before).ok_or_else(malformed)?;
            let new = key_bytes(table, after).ok_or_else(malformed)?;
            if old != new {
                self.set(old, table, before, true, commit_ts_ms, position);
            }
        }
        if let Some(after) = after {
            if has_unchanged_toast(table, after).ok_or_else(malformed)? {
                return Err(ConnectorError::definite(format!(
                    "delta: an update of {} left out unchanged TOAST values, which the mirror cannot fill in; nothing past it was committed. Run ALTER TABLE {} REPLICA IDENTITY FULL so PostgreSQL sends them, then move the mirror and the state away and start again (the table is copied anew), or keep this table's changelog only (sink.tables = \"changelog\")",
                    table.id, table.id
                )));
            }
        }
        let (image, delete) = match (op, before, after) {
            (Op::Delete, Some(before), _) => (before, true),
            (_, _, Some(after)) => (after, false),
            _ => return Err(malformed()),
        };
        let key = key_bytes(table, image).ok_or_else(malformed)?;
        self.set(key, table, image, delete, commit_ts_ms, position);
        Ok(())
    }

    fn set(
        &mut self,
        key: Vec<u8>,
        table: &Arc<TableSchema>,
        image: &[u8],
        delete: bool,
        commit_ts_ms: i64,
        position: &str,
    ) {
        let entry = Entry {
            table: Arc::clone(table),
            image: image.to_vec(),
            delete,
            commit_ts_ms,
            position: position.to_string(),
        };
        // a later change moves the key to the end, so entries stay in change order
        if let Some(old) = self.keys.remove(&key) {
            self.entries[old] = None;
        }
        self.keys.insert(key, self.entries.len());
        self.entries.push(Some(entry));
    }

    /// The pending changes, taken for a round.
    pub fn take_round(&mut self) -> MirrorRound {
        self.keys.clear();
        MirrorRound {
            entries: self.entries.drain(..).flatten().collect(),
            truncation: self.truncation.take(),
            soft_deletes: self.soft_deletes,
        }
    }
}

/// One round's changes of a mirror table, taken away to be committed: the last change of each
/// changed key, in change order.
pub struct MirrorRound {
    entries: Vec<Entry>,
    truncation: Option<Truncation>,
    soft_deletes: bool,
}

impl MirrorRound {
    /// Every pending entry as one batch in the table's schema, with its delete flags.
    fn changes(
        &self,
        schema: &SchemaRef,
        label: &str,
    ) -> Result<(RecordBatch, BooleanArray), ConnectorError> {
        let entries = &self.entries;
        let mut batches = Vec::new();
        let mut deletes = BooleanBuilder::new();
        let mut at = 0;
        while at < entries.len() {
            let table = Arc::clone(&entries[at].table);
            let end = entries[at..]
                .iter()
                .position(|e| e.table.version != table.version)
                .map_or(entries.len(), |n| at + n);
            let mut row = RowColumns::new(&table, kept, end - at);
            let mut lineage = Lineage::new(end - at);
            let mut deleted = BooleanBuilder::new();
            let mut deleted_at = TimestampMicrosecondBuilder::new().with_data_type(utc_micros());
            for entry in &entries[at..end] {
                row.append(Some(&entry.image))
                    .map_err(|e| ConnectorError::definite(e.to_string()))?;
                lineage.append(entry.commit_ts_ms, &entry.position);
                deletes.append_value(entry.delete);
                deleted.append_value(entry.delete);
                deleted_at.append_option(entry.delete.then_some(entry.commit_ts_ms * 1000));
            }
            let mut fields = row.fields();
            fields.extend(Lineage::fields());
            let mut columns = row.finish();
            columns.extend(lineage.finish());
            if self.soft_deletes {
                fields.push(Field::new(DELETED, DataType::Boolean, true));
                fields.push(Field::new(DELETED_AT, utc_micros(), true));
                columns.push(Arc::new(deleted.finish()) as ArrayRef);
                columns.push(Arc::new(deleted_at.finish()) as ArrayRef);
            }
            let part = batch::batch(fields, columns, label)?;
            batches.push(conform(&part, schema, label)?);
            at = end;
        }
        let all = concat_batches(schema, &batches)
            .map_err(|e| delta_error(&format!("collecting the changes of {label}"), e))?;
        Ok((all, deletes.finish()))
    }

    /// Applies the changes to `target` as round `round`, covering `through`.
    pub async fn commit(
        self,
        target: &mut DeltaTarget,
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
        let label = target.label.clone();
        if let Some(last) = self.entries.last() {
            let fields = Mirror::initial_fields(&last.table, self.soft_deletes);
            target.add_columns(&fields).await?;
        }
        let schema = target.arrow_schema()?;
        let (changes, deletes) = self.changes(&schema, &label)?;
        let truncation = self.truncation;
        // the images are in `changes` now; a merge of a large round holds them once
        drop(self.entries);
        let keys = KeyMatcher::new(&schema, key_columns, &label)?;
        let changed = keys.key_set(&changes)?;
        let bounds = keys.int_bounds(&changes);
        let upserts = upserts(changes, &deletes, self.soft_deletes, key_columns, &label)?;
        let mut actions = Vec::new();
        let first_key = key_columns.first().map(String::as_str);
        for file in target.live_files(first_key).await? {
            if truncation.is_none() && !may_hold(&file, bounds) {
                continue;
            }
            if truncation.is_some() && !self.soft_deletes {
                // every row goes: nothing to read
                stats.files_rewritten += 1;
                actions.push(file.remove(true));
                continue;
            }
            // the key columns alone say whether the file holds a changed key
            if truncation.is_none() && !keys.file_holds_any(target, &file, &changed).await? {
                continue;
            }
            stats.files_read += 1;
            stats.files_rewritten += 1;
            actions.push(file.remove(true));
            // batch by batch, so a merge holds one batch of the file's rows, not the file
            let mut rewrite = target.file_writer(true)?;
            let mut batches = target.read_batches(&file, None).await?;
            while let Some(part) = batches.next().await {
                let part = part.map_err(|e| delta_error(&format!("reading {}", file.path), e))?;
                let part = conform(&part, &schema, &label)?;
                let keep = keys.not_in(&part, &changed)?;
                let part = filter_record_batch(&part, &keep)
                    .map_err(|e| delta_error("filtering rows", e))?;
                let part = match &truncation {
                    Some(t) => flag_deleted(&part, t.commit_ts_ms, &t.position, &label)?,
                    None => part,
                };
                stats.rows_carried += part.num_rows();
                rewrite.write(part).await?;
            }
            actions.extend(rewrite.finish().await?);
        }
        actions.extend(target.write_files(vec![upserts], true).await?);
        let operation = DeltaOperation::Merge {
            predicate: None,
            merge_predicate: Some(format!("key in {} changed keys", stats.changed_keys)),
            matched_predicates: vec![],
            not_matched_predicates: vec![],
            not_matched_by_source_predicates: vec![],
        };
        target
            .commit(actions, operation, round, Some(through.clone()))
            .await?;
        tracing::debug!(table = %label, ?stats, "delta: mirror merged");
        Ok(stats)
    }
}

/// The rows a round writes: its changes but hard deletes, in key order, so that a file covers
/// a narrow key range and a later merge reads few files. Each step drops the batch before it.
fn upserts(
    changes: RecordBatch,
    deletes: &BooleanArray,
    soft_deletes: bool,
    key_columns: &[String],
    label: &str,
) -> Result<RecordBatch, ConnectorError> {
    let upserts = if soft_deletes {
        changes
    } else {
        let keep = deltalake::arrow::compute::not(deletes)
            .map_err(|e| delta_error("selecting upserts", e))?;
        filter_record_batch(&changes, &keep).map_err(|e| delta_error("selecting upserts", e))?
    };
    batch::sorted_by(upserts, key_columns)
        .map_err(|e| delta_error(&format!("sorting the changes of {label}"), e))
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
            .map_err(|e| delta_error(&format!("finding column {name} of {label}"), e))
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
        .map_err(|e| delta_error(&format!("flagging the rows of {label} deleted"), e))
}

/// Whether `file` may hold a key within `bounds` (an integer first key column's min and max).
fn may_hold(file: &LiveFile, bounds: Option<(i64, i64)>) -> bool {
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
                .map_err(|e| delta_error(&format!("finding key column {name} of {label}"), e))?;
            converter_fields.push(schema.field(index).data_type().clone());
            indexes.push(index);
        }
        let sort_fields = converter_fields
            .iter()
            .cloned()
            .map(SortField::new)
            .collect();
        let converter = RowConverter::new(sort_fields)
            .map_err(|e| delta_error(&format!("comparing keys of {label}"), e))?;
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

    fn key_set(&self, batch: &RecordBatch) -> Result<KeySet, ConnectorError> {
        let rows = self
            .converter
            .convert_columns(&self.columns(batch))
            .map_err(|e| delta_error("encoding keys", e))?;
        Ok(rows.iter().map(|r| Box::from(r.as_ref())).collect())
    }

    /// Whether `file` holds any key of `keys`, from its key columns alone.
    async fn file_holds_any(
        &self,
        target: &DeltaTarget,
        file: &LiveFile,
        keys: &KeySet,
    ) -> Result<bool, ConnectorError> {
        let what = format!("reading the keys of {}", file.path);
        let mut batches = target.read_batches(file, Some(&self.names)).await?;
        while let Some(part) = batches.next().await {
            let part = part.map_err(|e| delta_error(&what, e))?;
            let mut columns = Vec::with_capacity(self.names.len());
            for (name, field) in self.names.iter().zip(self.converter_fields.iter()) {
                let Some(column) = part.column_by_name(name) else {
                    return Ok(true); // not this layout: let the full read decide
                };
                let column = if column.data_type() == field {
                    Arc::clone(column)
                } else {
                    cast(column, field).map_err(|e| delta_error(&what, e))?
                };
                columns.push(column);
            }
            let rows = self
                .converter
                .convert_columns(&columns)
                .map_err(|e| delta_error("encoding keys", e))?;
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
            .map_err(|e| delta_error("encoding keys", e))?;
        Ok(rows
            .iter()
            .map(|r| Some(!keys.contains(r.as_ref())))
            .collect())
    }

    /// The min and max of the first key column when it is an integer.
    fn int_bounds(&self, batch: &RecordBatch) -> Option<(i64, i64)> {
        let column = batch.column(*self.indexes.first()?);
        let values: Vec<i64> = match column.data_type() {
            DataType::Int64 => column
                .as_primitive::<Int64Type>()
                .iter()
                .flatten()
                .collect(),
            DataType::Int32 => column
                .as_primitive::<Int32Type>()
                .iter()
                .flatten()
                .map(i64::from)
                .collect(),
            _ => return None,
        };
        if values.len() != column.len() {
            return None;
        }
        Some((*values.iter().min()?, *values.iter().max()?))
    }
}

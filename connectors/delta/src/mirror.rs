//! The mirror table of one source table: the rows the source has now. Each commit applies the
//! last change of every changed key (gathered here, merged in `merge.rs`); only the files that
//! may hold a changed key are rewritten (copy-on-write).

use crate::arena::{Arena, Span};
use crate::arrow_rows::RowColumns;
use crate::batch::{self, conform, utc_micros, Lineage};
use crate::error::delta_error;
use deltalake::arrow::array::{
    ArrayRef, BooleanArray, BooleanBuilder, RecordBatch, TimestampMicrosecondBuilder,
};
use deltalake::arrow::compute::concat_batches;
use deltalake::arrow::datatypes::{DataType, Field, SchemaRef};
use hashbrown::HashTable;
use headwater_contract::avro_scan::AvroReader;
use headwater_contract::{ConnectorError, Op, TableSchema};
use std::hash::BuildHasher;
use std::sync::Arc;

pub const DELETED: &str = "__deleted";
pub const DELETED_AT: &str = "__deleted_at";
/// PostgreSQL's synthetic column (see docs/types.md); the mirror holds values, not this list.
const UNCHANGED_TOAST: &str = "__unchanged_toast";

fn kept(name: &str) -> bool {
    name != UNCHANGED_TOAST
}

/// The last change of one key in this commit; its bytes are in the round's [`Arena`].
pub(crate) struct Entry {
    pub(crate) table: Arc<TableSchema>,
    key: Span,
    /// The row after the change; for a delete, the row before it.
    image: Span,
    /// The text of the log position after the change.
    position: Span,
    delete: bool,
    commit_ts_ms: i64,
    /// `false` once a later change of the same key replaced it.
    live: bool,
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
pub(crate) struct Truncation {
    pub(crate) commit_ts_ms: i64,
    pub(crate) position: String,
}

/// The changes of one mirror table waiting for the next round.
pub struct Mirror {
    soft_deletes: bool,
    truncation: Option<Truncation>,
    /// The index in `entries` of each key's last change, found by the key's bytes.
    keys: HashTable<usize>,
    hasher: foldhash::fast::RandomState,
    entries: Vec<Entry>,
    arena: Arena,
    /// The key being read (reused: no allocation per change).
    scratch: Vec<u8>,
}

/// Puts the raw encoding of `table`'s key columns in `image` into `key`, in key order: equal
/// keys give equal bytes within a table version.
fn key_bytes(table: &TableSchema, image: &[u8], key: &mut Vec<u8>) -> Option<()> {
    key.clear();
    let mut reader = AvroReader::new(image);
    let key_in_column_order = table.primary_key.windows(2).all(|w| w[0] < w[1]);
    if key_in_column_order {
        // read up to the last key column only, copying the key columns on the way
        let mut wanted = table.primary_key.iter().peekable();
        for (index, column) in table.columns.iter().enumerate() {
            let Some(&&next) = wanted.peek() else { break };
            let start = reader.offset();
            if !column.nullable || reader.optional()? {
                reader.skip(&column.field_type)?;
            }
            if index == next {
                key.extend_from_slice(image.get(start..reader.offset())?);
                wanted.next();
            }
        }
        return wanted.peek().is_none().then_some(());
    }
    let mut spans = Vec::with_capacity(table.columns.len());
    for column in &table.columns {
        let start = reader.offset();
        if !column.nullable || reader.optional()? {
            reader.skip(&column.field_type)?;
        }
        spans.push((start, reader.offset()));
    }
    for &index in &table.primary_key {
        let (start, end) = *spans.get(index)?;
        key.extend_from_slice(image.get(start..end)?);
    }
    Some(())
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
            keys: HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
            entries: Vec::new(),
            arena: Arena::default(),
            scratch: Vec::with_capacity(16),
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
            self.arena = Arena::default();
            self.truncation = Some(Truncation {
                commit_ts_ms,
                position: position.to_string(),
            });
            return Ok(());
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
        let mut key = std::mem::take(&mut self.scratch);
        key_bytes(table, image, &mut key).ok_or_else(malformed)?;
        let position = self.arena.push(position.as_bytes());
        if let (Some(before), Some(_)) = (before, after) {
            // a key change: the old key leaves the mirror
            let mut old = Vec::with_capacity(key.len());
            key_bytes(table, before, &mut old).ok_or_else(malformed)?;
            if old != key {
                self.set(&old, table, before, true, commit_ts_ms, position);
            }
        }
        self.set(&key, table, image, delete, commit_ts_ms, position);
        self.scratch = key;
        Ok(())
    }

    fn set(
        &mut self,
        key: &[u8],
        table: &Arc<TableSchema>,
        image: &[u8],
        delete: bool,
        commit_ts_ms: i64,
        position: Span,
    ) {
        let index = self.entries.len();
        let hash = self.hasher.hash_one(key);
        let (arena, entries) = (&self.arena, &mut self.entries);
        // a later change moves the key to the end, so entries stay in change order
        let same_key = |i: &usize| arena.get(entries[*i].key) == key;
        let key = match self.keys.find_mut(hash, same_key) {
            Some(slot) => {
                let old = std::mem::replace(slot, index);
                entries[old].live = false;
                entries[old].key
            }
            None => {
                let hasher = &self.hasher;
                self.keys
                    .insert_unique(hash, index, |i| hasher.hash_one(arena.get(entries[*i].key)));
                self.arena.push(key)
            }
        };
        let image = self.arena.push(image);
        self.entries.push(Entry {
            table: Arc::clone(table),
            key,
            image,
            position,
            delete,
            commit_ts_ms,
            live: true,
        });
    }

    /// The pending changes, taken for a round.
    pub fn take_round(&mut self) -> MirrorRound {
        self.keys.clear();
        MirrorRound {
            entries: self.entries.drain(..).filter(|e| e.live).collect(),
            arena: std::mem::take(&mut self.arena),
            truncation: self.truncation.take(),
            soft_deletes: self.soft_deletes,
        }
    }
}

/// One round's changes of a mirror table, taken away to be committed: the last change of each
/// changed key, in change order.
pub struct MirrorRound {
    pub(crate) entries: Vec<Entry>,
    pub(crate) arena: Arena,
    pub(crate) truncation: Option<Truncation>,
    pub(crate) soft_deletes: bool,
}

impl MirrorRound {
    /// Every pending entry as one batch in the table's schema, with its delete flags.
    pub(crate) fn changes(
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
                row.append(Some(self.arena.get(entry.image)))
                    .map_err(|e| ConnectorError::definite(e.to_string()))?;
                let position = std::str::from_utf8(self.arena.get(entry.position))
                    .map_err(|e| delta_error("reading a position text", e))?;
                lineage.append(entry.commit_ts_ms, position);
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
        let all = if batches.len() == 1 {
            batches.remove(0)
        } else {
            concat_batches(schema, &batches)
                .map_err(|e| delta_error(&format!("collecting the changes of {label}"), e))?
        };
        Ok((all, deletes.finish()))
    }
}

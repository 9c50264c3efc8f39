//! The mirror table of one source table: the rows the source has now. Each commit applies the
//! last change of every changed key (gathered here, merged in `merge.rs`); only the files that
//! may hold a changed key are rewritten (copy-on-write).

use crate::arena::{Arena, Span};
use crate::arrow_rows::RowColumns;
use crate::batch::{self, conform, utc_micros, Lineage};
use crate::changelog::ChangelogRow;
use crate::error::lake_error;
use arrow::array::{Array, BooleanArray, RecordBatch, TimestampMicrosecondArray};
use arrow::compute::interleave;
use arrow::datatypes::{DataType, Field, SchemaRef};
use hashbrown::HashTable;
use headwater_contract::avro_scan::AvroReader;
use headwater_contract::envelope::EnvelopeView;
use headwater_contract::{ConnectorError, Op, TableSchema};
use std::hash::BuildHasher;
use std::sync::Arc;

pub const DELETED: &str = "__deleted";
pub const DELETED_AT: &str = "__deleted_at";
/// PostgreSQL's synthetic column (see docs/types.md); the mirror holds values, not this list.
use headwater_contract::schema::UNCHANGED_TOAST_COLUMN as UNCHANGED_TOAST;

fn kept(name: &str) -> bool {
    name != UNCHANGED_TOAST
}

/// The last change of one key in this commit; its bytes are in the round's [`Arena`].
pub(crate) struct Entry {
    /// Index of the entry's table version in the round's `tables` (not an `Arc` each: counting
    /// references to a schema every thread touches was most of the time spent here).
    version: usize,
    key: Span,
    /// The row after the change; for a delete, the row before it.
    image: Image,
    delete: bool,
    commit_ts_ms: i64,
    /// `false` once a later change of the same key replaced it.
    live: bool,
}

/// Where an entry's row image and lineage are.
#[derive(Debug, Clone, Copy)]
enum Image {
    /// A row of the round's changelog, which holds the same image, commit time and position
    /// (decoded once, for both tables).
    Changelog(ChangelogRow),
    /// In the round's arena: the changelog is not written, already holds the change (a replay),
    /// or holds another image (the old key of a key change).
    Bytes { image: Span, position: Span },
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
    /// The hash of each changed key and the index in `entries` of its last change (the hash is
    /// kept so growing the table reads no key bytes back).
    keys: HashTable<(u64, usize)>,
    hasher: foldhash::fast::RandomState,
    entries: Vec<Entry>,
    /// How many of `entries` a later change of their key replaced.
    replaced: usize,
    /// The table versions entries name.
    tables: Vec<Arc<TableSchema>>,
    /// Whether an entry names a changelog row (the round then takes the changelog's rows).
    uses_changelog: bool,
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
            replaced: 0,
            tables: Vec::new(),
            uses_changelog: false,
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
    /// `position` is the text of the log position after the change; `in_changelog` the row the
    /// changelog wrote for it, when it did.
    pub fn apply(
        &mut self,
        table: &Arc<TableSchema>,
        op: Op,
        envelope: &EnvelopeView<'_>,
        position: &str,
        in_changelog: Option<ChangelogRow>,
    ) -> Result<(), ConnectorError> {
        let (before, after) = (envelope.before, envelope.after);
        let commit_ts_ms = envelope.source_ts_ms;
        let malformed = || {
            ConnectorError::definite(format!(
                "a row image of {} does not follow its schema (version {})",
                table.id, table.version
            ))
        };
        if op == Op::Truncate {
            // what this commit changed before the TRUNCATE is gone with everything else
            self.entries.clear();
            self.tables.clear();
            self.replaced = 0;
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
                    "an update of {} left out unchanged TOAST values, which the mirror cannot fill in; nothing past it was committed. Run ALTER TABLE {} REPLICA IDENTITY FULL so PostgreSQL sends them, then move the mirror and the state away and start again (the table is copied anew), or keep this table's changelog only (sink.tables = \"changelog\")",
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
        let mut position_bytes = None;
        if let (Some(before), Some(_)) = (before, after) {
            // a key change: the old key leaves the mirror
            let mut old = Vec::with_capacity(key.len());
            key_bytes(table, before, &mut old).ok_or_else(malformed)?;
            if old != key {
                let at =
                    *position_bytes.get_or_insert_with(|| self.arena.push(position.as_bytes()));
                let before = Image::Bytes {
                    image: self.arena.push(before),
                    position: at,
                };
                self.set(&old, table, before, true, commit_ts_ms);
            }
        }
        let image = match in_changelog {
            Some(row) => {
                self.uses_changelog = true;
                Image::Changelog(row)
            }
            None => Image::Bytes {
                image: self.arena.push(image),
                position: *position_bytes
                    .get_or_insert_with(|| self.arena.push(position.as_bytes())),
            },
        };
        self.set(&key, table, image, delete, commit_ts_ms);
        self.scratch = key;
        Ok(())
    }

    fn set(
        &mut self,
        key: &[u8],
        table: &Arc<TableSchema>,
        image: Image,
        delete: bool,
        commit_ts_ms: i64,
    ) {
        let index = self.entries.len();
        let hash = self.hasher.hash_one(key);
        let (arena, entries) = (&self.arena, &mut self.entries);
        // a later change moves the key to the end, so entries stay in change order
        let same_key = |(h, i): &(u64, usize)| *h == hash && arena.get(entries[*i].key) == key;
        let key = match self.keys.find_mut(hash, same_key) {
            Some((_, slot)) => {
                let old = std::mem::replace(slot, index);
                entries[old].live = false;
                self.replaced += 1;
                entries[old].key
            }
            None => {
                self.keys.insert_unique(hash, (hash, index), |(h, _)| *h);
                self.arena.push(key)
            }
        };
        let same_version = self.tables.last().is_some_and(|t| Arc::ptr_eq(t, table));
        if !same_version {
            self.tables.push(Arc::clone(table));
        }
        self.entries.push(Entry {
            version: self.tables.len() - 1,
            key,
            image,
            delete,
            commit_ts_ms,
            live: true,
        });
    }

    /// The pending changes, taken for a round; `changelog` is the round's changelog rows.
    pub fn take_round(&mut self, changelog: &[RecordBatch]) -> MirrorRound {
        // not sized for the next round: a table idle from now on would hold the memory
        self.keys = HashTable::new();
        let taken = std::mem::take(&mut self.entries);
        let entries = if std::mem::take(&mut self.replaced) == 0 {
            taken
        } else {
            taken.into_iter().filter(|e| e.live).collect()
        };
        MirrorRound {
            entries,
            tables: std::mem::take(&mut self.tables),
            changelog: if std::mem::take(&mut self.uses_changelog) {
                changelog.to_vec()
            } else {
                Vec::new()
            },
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
    /// The table versions of `entries`, in the order they were first seen.
    pub(crate) tables: Vec<Arc<TableSchema>>,
    /// The round's changelog rows, when entries name some of them.
    pub(crate) changelog: Vec<RecordBatch>,
    pub(crate) arena: Arena,
    pub(crate) truncation: Option<Truncation>,
    pub(crate) soft_deletes: bool,
}

impl MirrorRound {
    /// Every pending entry in the table's schema, in change order, with its delete flags: the
    /// changelog's own batches when the entries are its rows one for one (a round of new keys),
    /// otherwise one batch of rows taken from the changelog's rows where they are there and
    /// decoded where not.
    pub(crate) fn changes(
        &self,
        schema: &SchemaRef,
        label: &str,
    ) -> Result<(Vec<RecordBatch>, BooleanArray), ConnectorError> {
        let deletes: BooleanArray = self.entries.iter().map(|e| Some(e.delete)).collect();
        if self.entries.is_empty() {
            return Ok((Vec::new(), deletes));
        }
        if self.is_the_changelog() {
            // no copy: the rows are the changelog's, shared
            let mut batches = Vec::with_capacity(self.changelog.len());
            let mut at = 0;
            for rows in &self.changelog {
                let mut batch = conform(rows, schema, label)?;
                if self.soft_deletes {
                    let entries = &self.entries[at..at + rows.num_rows()];
                    batch = self.with_delete_flags(batch, entries, schema, label)?;
                }
                at += rows.num_rows();
                batches.push(batch);
            }
            return Ok((batches, deletes));
        }
        // the changelog's rows in the table's columns, but every one nullable: they include
        // rows no entry takes (a TRUNCATE's, without a key), and a table's required key
        // columns (Iceberg's identifier fields) hold no null in the rows taken
        let relaxed = Arc::new(arrow::datatypes::Schema::new(
            schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        let mut sources = self
            .changelog
            .iter()
            .map(|rows| conform(rows, &relaxed, label))
            .collect::<Result<Vec<_>, _>>()?;
        let mut indices = Vec::with_capacity(self.entries.len());
        let mut decoding: Option<Decoding> = None;
        for entry in &self.entries {
            let (image, position) = match entry.image {
                Image::Changelog(row) => {
                    indices.push((row.batch, row.row));
                    continue;
                }
                Image::Bytes { image, position } => (image, position),
            };
            // rows are decoded by table version, each version's batch made to fit the table
            if decoding
                .as_ref()
                .is_some_and(|d| d.row.table().version != self.tables[entry.version].version)
            {
                if let Some(done) = decoding.take() {
                    sources.push(done.finish(schema, label)?);
                }
            }
            let decoded =
                decoding.get_or_insert_with(|| Decoding::new(&self.tables[entry.version]));
            indices.push((sources.len(), decoded.row.len()));
            decoded.append(
                self.arena.get(image),
                entry.commit_ts_ms,
                self.arena.get(position),
            )?;
        }
        if let Some(done) = decoding {
            sources.push(done.finish(schema, label)?);
        }
        let mut columns = Vec::with_capacity(schema.fields().len());
        for index in 0..schema.fields().len() {
            let arrays: Vec<&dyn Array> =
                sources.iter().map(|b| b.column(index).as_ref()).collect();
            columns.push(
                interleave(&arrays, &indices)
                    .map_err(|e| lake_error(&format!("collecting the changes of {label}"), e))?,
            );
        }
        let all = RecordBatch::try_new(Arc::clone(schema), columns)
            .map_err(|e| lake_error(&format!("collecting the changes of {label}"), e))?;
        let all = if self.soft_deletes {
            self.with_delete_flags(all, &self.entries, schema, label)?
        } else {
            all
        };
        Ok((vec![all], deletes))
    }

    /// Whether the entries are the changelog's rows, every one in order: then no key changed
    /// twice, no image came from elsewhere, and the changelog's batches are the changes.
    fn is_the_changelog(&self) -> bool {
        let rows: usize = self.changelog.iter().map(RecordBatch::num_rows).sum();
        if rows != self.entries.len() {
            return false;
        }
        let mut expected = self
            .changelog
            .iter()
            .enumerate()
            .flat_map(|(batch, rows)| (0..rows.num_rows()).map(move |row| (batch, row)));
        self.entries.iter().all(|entry| match entry.image {
            Image::Changelog(row) => expected.next() == Some((row.batch, row.row)),
            Image::Bytes { .. } => false,
        })
    }

    /// `batch`, the rows of `entries`, with the soft-delete columns set from them.
    fn with_delete_flags(
        &self,
        batch: RecordBatch,
        entries: &[Entry],
        schema: &SchemaRef,
        label: &str,
    ) -> Result<RecordBatch, ConnectorError> {
        let column = |name: &str| {
            schema
                .index_of(name)
                .map_err(|e| lake_error(&format!("finding column {name} of {label}"), e))
        };
        let deleted: BooleanArray = entries.iter().map(|e| Some(e.delete)).collect();
        let deleted_at: TimestampMicrosecondArray = entries
            .iter()
            .map(|e| e.delete.then_some(e.commit_ts_ms.saturating_mul(1000)))
            .collect();
        let mut columns = batch.columns().to_vec();
        columns[column(DELETED)?] = Arc::new(deleted);
        columns[column(DELETED_AT)?] = Arc::new(deleted_at.with_timezone("UTC"));
        RecordBatch::try_new(Arc::clone(schema), columns)
            .map_err(|e| lake_error(&format!("flagging the deletes of {label}"), e))
    }
}

/// Entries' row images being decoded (those the changelog does not hold), of one table version.
struct Decoding {
    row: RowColumns,
    lineage: Lineage,
}

impl Decoding {
    fn new(table: &Arc<TableSchema>) -> Self {
        Decoding {
            row: RowColumns::new(table, kept, 0),
            lineage: Lineage::new(0),
        }
    }

    fn append(
        &mut self,
        image: &[u8],
        commit_ts_ms: i64,
        position: &[u8],
    ) -> Result<(), ConnectorError> {
        self.row
            .append(Some(image))
            .map_err(|e| ConnectorError::definite(e.to_string()))?;
        let position =
            std::str::from_utf8(position).map_err(|e| lake_error("reading a position text", e))?;
        self.lineage.append(commit_ts_ms, position);
        Ok(())
    }

    fn finish(mut self, schema: &SchemaRef, label: &str) -> Result<RecordBatch, ConnectorError> {
        let mut fields = self.row.fields();
        fields.extend(Lineage::fields());
        let mut columns = self.row.finish();
        columns.extend(self.lineage.finish());
        conform(&batch::batch(fields, columns, label)?, schema, label)
    }
}

#[cfg(test)]
mod tests;

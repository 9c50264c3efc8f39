//! The pgoutput state machine: transactions, relations and positions; rows become change
//! records as they arrive (a transaction is never held in memory).

use crate::pgoutput::{Message, TupleValue};
use crate::types::PgType;
use headwater_contract::avro::{RowEncoder, Value};
use headwater_contract::schema::UNCHANGED_TOAST_COLUMN;
use headwater_contract::{
    ChangeRecord, ColumnPlan, ConnectorError, Lsn, Op, PgPosition, PgSourceInfo, Position,
    SchemaChangeRecord, SnapshotMarker, SourceEvent, SourceInfo, TableSchema, TransactionInfo,
};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// What the caller does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Continue,
    /// The catch-up target is reached.
    Done,
}

/// A captured table's current layout.
#[derive(Debug)]
pub struct RelationInfo {
    /// The columns the records carry (after `source.columns`).
    pub schema: Arc<TableSchema>,
    /// One per column of the relation's tuples.
    pub types: Vec<PgType>,
    /// How tuples become `schema`'s rows; `None` when they are the same.
    pub plan: Option<ColumnPlan>,
}

struct Transaction {
    final_lsn: u64,
    xid: u32,
    commit_ts_us: i64,
    records: u64,
    per_table: HashMap<u32, u64>,
    id: Arc<str>,
}

pub struct PgReader {
    database: Arc<str>,
    /// `None` for relations that are not captured.
    relations: HashMap<u32, Option<Arc<RelationInfo>>>,
    txn: Option<Transaction>,
    resume: Option<PgPosition>,
    skip_records: u64,
    stop_at: Option<PgPosition>,
    /// The position after the last commit or quiet keepalive, while no transaction is open.
    boundary: Option<PgPosition>,
    /// The position streaming started from. The walsender decodes from the slot's
    /// `restart_lsn`, well before it, and its keepalives carry the WAL end it has read so far:
    /// a progress event at or below this would move the durable position backwards, and a
    /// restart from there would repeat what the sink already holds.
    floor: PgPosition,
    /// The commit LSN of the last transaction seen, for `source.sequence`.
    last_commit_lsn: Option<u64>,
}

/// PostgreSQL timestamps count microseconds from 2000-01-01.
fn pg_ts_to_unix_us(ts: i64) -> i64 {
    ts.saturating_add(946_684_800_000_000)
}

fn defect(what: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::definite(format!(
        "pgoutput decoding failed: {what}. This is a Headwater defect or a corrupt stream; report it with the LSN"
    ))
}

impl PgReader {
    pub fn new(
        database: &str,
        start: PgPosition,
        resume: Option<PgPosition>,
        stop_at: Option<PgPosition>,
    ) -> Self {
        PgReader {
            database: Arc::from(database),
            relations: HashMap::new(),
            txn: None,
            resume,
            skip_records: 0,
            stop_at,
            boundary: Some(PgPosition::at(start.lsn, 0)).filter(|_| start.rows_done == 0),
            floor: PgPosition::at(start.lsn, start.rows_done),
            last_commit_lsn: None,
        }
    }

    /// Where the stream is between transactions; `None` inside one.
    pub fn boundary(&self) -> Option<&PgPosition> {
        if self.txn.is_some() {
            return None;
        }
        self.boundary.as_ref()
    }

    pub fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    /// Records a relation's layout (`None`: not captured).
    pub fn set_relation(&mut self, oid: u32, info: Option<Arc<RelationInfo>>) {
        self.relations.insert(oid, info);
    }

    fn reached(&self, here: &PgPosition) -> bool {
        self.stop_at.as_ref().is_some_and(|stop| here >= stop)
    }

    /// The position of the change stream right now, inside or between transactions.
    pub fn position_in_transaction(&self) -> Option<PgPosition> {
        self.txn
            .as_ref()
            .map(|t| PgPosition::at(Lsn(t.final_lsn), t.records))
    }

    /// A keepalive: with no transaction open, everything before `wal_end` has been received.
    pub fn keepalive(&mut self, wal_end: u64, out: &mut Vec<SourceEvent>) -> Step {
        if self.txn.is_some() || wal_end == 0 {
            return Step::Continue;
        }
        let here = PgPosition::at(Lsn(wal_end), 0);
        if here <= self.floor || self.boundary.as_ref().is_some_and(|b| here <= *b) {
            return Step::Continue;
        }
        let done = self.reached(&here);
        self.boundary = Some(here.clone());
        out.push(SourceEvent::Progress(Position::Postgres(here)));
        if done {
            Step::Done
        } else {
            Step::Continue
        }
    }

    /// A schema-change record for a relation that got a new schema version. It does not count
    /// as a change of its transaction: PostgreSQL sends Relation messages per session, so a
    /// replay would not see it at the same place.
    pub fn schema_change(&self, info: &RelationInfo, out: &mut Vec<SourceEvent>) {
        let position = self.position_in_transaction().unwrap_or_default();
        let ddl = format!(
            "-- relation {} is now: {}",
            info.schema.id,
            info.schema
                .columns
                .iter()
                .filter(|c| c.name != UNCHANGED_TOAST_COLUMN)
                .map(|c| format!("{} {}", c.name, c.sql_type))
                .collect::<Vec<_>>()
                .join(", ")
        );
        out.push(SourceEvent::SchemaChange(SchemaChangeRecord {
            database: self.database.to_string(),
            table: Some(info.schema.id.clone()),
            ddl,
            source: self.source_info(Some(&info.schema), 0),
            position: Position::Postgres(position),
        }));
    }

    fn source_info(&self, schema: Option<&TableSchema>, lsn: u64) -> SourceInfo {
        SourceInfo::Postgres(PgSourceInfo {
            ts_us: self.txn.as_ref().map_or(0, |t| t.commit_ts_us),
            snapshot: SnapshotMarker::False,
            db: self.database.clone(),
            schema: schema.map_or_else(|| Arc::from(""), |s| Arc::from(s.id.namespace.as_str())),
            table: schema.map(|s| Arc::from(s.id.table.as_str())),
            tx_id: self.txn.as_ref().map(|t| i64::from(t.xid)),
            lsn: Some(lsn as i64),
            last_commit_lsn: self.last_commit_lsn.map(|l| l as i64),
        })
    }

    pub fn handle(
        &mut self,
        message: Message<'_>,
        wal_start: u64,
        out: &mut Vec<SourceEvent>,
    ) -> Result<Step, ConnectorError> {
        match message {
            Message::Begin {
                final_lsn,
                commit_ts,
                xid,
            } => {
                self.skip_records = match &self.resume {
                    Some(resume) if final_lsn < resume.lsn.0 => u64::MAX,
                    Some(resume) if final_lsn == resume.lsn.0 => resume.rows_done,
                    _ => 0,
                };
                if self.resume.as_ref().is_some_and(|r| final_lsn >= r.lsn.0) {
                    self.resume = None;
                }
                self.txn = Some(Transaction {
                    final_lsn,
                    xid,
                    commit_ts_us: pg_ts_to_unix_us(commit_ts),
                    records: 0,
                    per_table: HashMap::new(),
                    id: Arc::from(format!("{xid}:{}", Lsn(final_lsn)).as_str()),
                });
            }
            Message::Commit {
                commit_lsn,
                end_lsn,
                ..
            } => {
                self.txn = None;
                self.last_commit_lsn = Some(commit_lsn);
                self.skip_records = 0;
                let here = PgPosition::at(Lsn(end_lsn), 0);
                if here <= self.floor {
                    // a transaction before the start, resent: it moves nothing on
                    return Ok(Step::Continue);
                }
                let done = self.reached(&here);
                self.boundary = Some(here.clone());
                out.push(SourceEvent::Progress(Position::Postgres(here)));
                if done {
                    return Ok(Step::Done);
                }
            }
            Message::Insert { relation, new } => {
                self.change(relation, Op::Create, None, Some(&new), wal_start, out)?
            }
            Message::Update { relation, old, new } => {
                // A key change is a delete of the old key and a create of the new one (as on
                // MySQL), so keyed consumers and snapshot windows see the old key go.
                if let Some((_, old_tuple)) = &old {
                    if self.key_changed(relation, old_tuple, &new) {
                        self.change(relation, Op::Delete, Some(old_tuple), None, wal_start, out)?;
                        self.change(relation, Op::Create, None, Some(&new), wal_start, out)?;
                        return Ok(Step::Continue);
                    }
                }
                let old = old
                    .as_ref()
                    .filter(|(full, _)| *full)
                    .map(|(_, t)| t.as_slice());
                self.change(relation, Op::Update, old, Some(&new), wal_start, out)?
            }
            Message::Delete {
                relation,
                old: (_, old),
            } => self.change(relation, Op::Delete, Some(&old), None, wal_start, out)?,
            Message::Truncate { relations, .. } => {
                for relation in relations {
                    self.change(relation, Op::Truncate, None, None, wal_start, out)?;
                }
            }
            Message::Relation(_)
            | Message::Type { .. }
            | Message::Origin
            | Message::Message { .. } => {}
        }
        Ok(Step::Continue)
    }

    /// Whether an update moved the row to another key. Both tuples are text from the same
    /// output functions, so comparing the key columns' text needs no decoding (this runs for
    /// every update of a `REPLICA IDENTITY FULL` table).
    fn key_changed(&self, relation: u32, old: &[TupleValue<'_>], new: &[TupleValue<'_>]) -> bool {
        let Some(Some(info)) = self.relations.get(&relation) else {
            return false;
        };
        info.schema
            .primary_key
            .iter()
            .any(|&i| match (old.get(i), new.get(i)) {
                (_, Some(TupleValue::UnchangedToast)) => false,
                (before, after) => before != after,
            })
    }

    fn change(
        &mut self,
        relation: u32,
        op: Op,
        old: Option<&[TupleValue<'_>]>,
        new: Option<&[TupleValue<'_>]>,
        wal_start: u64,
        out: &mut Vec<SourceEvent>,
    ) -> Result<(), ConnectorError> {
        let Some(info) = self.relations.get(&relation).cloned() else {
            return Err(defect(format!(
                "a change to relation {relation} before its Relation message"
            )));
        };
        let Some(txn) = self.txn.as_mut() else {
            return Err(defect("a change outside a transaction"));
        };
        let Some(info) = info else {
            return Ok(()); // not captured
        };
        txn.records += 1;
        let table_order = txn.per_table.entry(relation).or_insert(0);
        *table_order += 1;
        let data_collection_order = *table_order;
        if txn.records <= self.skip_records {
            return Ok(());
        }
        let position = Position::Postgres(PgPosition::at(Lsn(txn.final_lsn), txn.records));
        let transaction = Some(TransactionInfo {
            id: txn.id.clone(),
            total_order: txn.records,
            data_collection_order,
        });
        let schema = &info.schema;
        let mut before_values = old.map(|t| decode_tuple(&info, t, None)).transpose()?;
        let mut after_values = new.map(|t| decode_tuple(&info, t, old)).transpose()?;
        if let Some(plan) = &info.plan {
            for values in [&mut before_values, &mut after_values]
                .into_iter()
                .flatten()
            {
                plan.apply(values);
            }
        }
        let key = match after_values.as_ref().or(before_values.as_ref()) {
            Some(values) => RowEncoder::key_bytes(schema, values)?,
            None => None,
        };
        let before = before_values
            .as_deref()
            .map(|v| RowEncoder::row_bytes(schema, v))
            .transpose()?;
        let after = after_values
            .as_deref()
            .map(|v| RowEncoder::row_bytes(schema, v))
            .transpose()?;
        let source = self.source_info(Some(schema), wal_start);
        out.push(SourceEvent::Change(ChangeRecord {
            table: Arc::clone(schema),
            op,
            key,
            before,
            after,
            source,
            transaction,
            position,
        }));
        Ok(())
    }
}

/// One tuple as values for the table's columns plus the synthetic unchanged-TOAST column.
/// An unchanged TOASTed value is taken from `old` (REPLICA IDENTITY FULL) when there, else it
/// is null and its column is named in `__unchanged_toast`.
/// The name of the relation's column `index` as the source has it.
fn column_name(info: &RelationInfo, index: usize) -> String {
    match &info.plan {
        Some(plan) => plan.source_name(index).to_string(),
        None => info
            .schema
            .columns
            .get(index)
            .map_or_else(String::new, |c| c.name.clone()),
    }
}

fn decode_tuple<'t>(
    info: &RelationInfo,
    tuple: &[TupleValue<'t>],
    old: Option<&[TupleValue<'t>]>,
) -> Result<Vec<Value<'t>>, ConnectorError> {
    let schema = &info.schema;
    if tuple.len() != info.types.len() {
        return Err(defect(format!(
            "a tuple of {} columns for {} which has {}",
            tuple.len(),
            schema.id,
            info.types.len()
        )));
    }
    let mut values = Vec::with_capacity(tuple.len() + 1);
    let mut unchanged = Vec::new();
    for (index, (value, pg_type)) in tuple.iter().zip(&info.types).enumerate() {
        let value = match value {
            TupleValue::UnchangedToast => match old.and_then(|o| o.get(index)) {
                Some(old_value @ TupleValue::Text(_)) => *old_value,
                _ => {
                    // an excluded column is not named either
                    if info.plan.as_ref().is_none_or(|plan| plan.keeps(index)) {
                        unchanged.push(Value::Text(Cow::Owned(column_name(info, index))));
                    }
                    TupleValue::Null
                }
            },
            other => *other,
        };
        values.push(match value {
            TupleValue::Null | TupleValue::UnchangedToast => Value::Null,
            TupleValue::Text(bytes) => {
                let text = std::str::from_utf8(bytes).map_err(|_| {
                    defect(format!(
                        "column {}.{} is not UTF-8 text",
                        schema.id,
                        column_name(info, index)
                    ))
                })?;
                pg_type.parse(text).map_err(|e| {
                    ConnectorError::definite(format!(
                        "column {}.{}: {e}; report this with the column's type",
                        schema.id,
                        column_name(info, index)
                    ))
                })?
            }
            TupleValue::Binary(_) => {
                return Err(defect("a binary tuple value (Headwater asks for text)"))
            }
        });
    }
    values.push(if unchanged.is_empty() {
        Value::Null
    } else {
        Value::Array(unchanged)
    });
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(out: &[SourceEvent]) -> Vec<PgPosition> {
        out.iter()
            .filter_map(|e| match e {
                SourceEvent::Progress(Position::Postgres(p)) => Some(p.clone()),
                _ => None,
            })
            .collect()
    }

    fn commit(reader: &mut PgReader, final_lsn: u64, end_lsn: u64, out: &mut Vec<SourceEvent>) {
        let begin = Message::Begin {
            final_lsn,
            commit_ts: 0,
            xid: 7,
        };
        reader.handle(begin, final_lsn, out).unwrap();
        let commit = Message::Commit {
            commit_lsn: final_lsn,
            end_lsn,
            commit_ts: 0,
        };
        reader.handle(commit, end_lsn, out).unwrap();
    }

    #[test]
    fn keepalives_from_before_a_mid_transaction_start_do_not_move_the_position_back() {
        // resumed inside the transaction committed at 0x5000, 1024 rows in: the walsender
        // decodes from the slot's restart_lsn and reports WAL ends below that meanwhile
        let start = PgPosition::at(Lsn(0x5000), 1024);
        let mut reader = PgReader::new("db", start.clone(), Some(start), None);
        let mut out = Vec::new();
        reader.keepalive(0x4000, &mut out);
        reader.keepalive(0x5000, &mut out);
        assert!(progress(&out).is_empty(), "{:?}", progress(&out));
        commit(&mut reader, 0x5000, 0x5100, &mut out);
        reader.keepalive(0x5080, &mut out);
        reader.keepalive(0x6000, &mut out);
        assert_eq!(
            progress(&out),
            [
                PgPosition::at(Lsn(0x5100), 0),
                PgPosition::at(Lsn(0x6000), 0)
            ]
        );
    }

    #[test]
    fn a_resent_transaction_before_the_start_moves_nothing() {
        let start = PgPosition::at(Lsn(0x9000), 0);
        let mut reader = PgReader::new("db", start.clone(), Some(start), None);
        let mut out = Vec::new();
        commit(&mut reader, 0x7000, 0x7100, &mut out);
        reader.keepalive(0x8000, &mut out);
        assert!(progress(&out).is_empty(), "{:?}", progress(&out));
        commit(&mut reader, 0x9400, 0x9500, &mut out);
        assert_eq!(progress(&out), [PgPosition::at(Lsn(0x9500), 0)]);
    }
}

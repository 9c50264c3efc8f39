//! The changelog table of one source table: one row per change, appended at every commit.

use crate::arrow_rows::RowColumns;
use crate::batch::{self, conform, Lineage};
use crate::format::TableTarget;
use arrow::array::{ArrayRef, Date32Builder, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field};
use headwater_contract::envelope::EnvelopeView;
use headwater_contract::{ConnectorError, Op, Position, TableSchema};
use std::sync::Arc;

pub const OP: &str = "__op";
pub const TX_ID: &str = "__tx_id";
/// The day of the source commit time: the changelog's partition column.
pub const COMMIT_DATE: &str = "__commit_date";

const MS_PER_DAY: i64 = 86_400_000;
/// Rows per batch a round's changelog rows are gathered in.
const CHUNK_ROWS: usize = 8192;

/// Where a change's row is among a round's changelog batches.
#[derive(Debug, Clone, Copy)]
pub struct ChangelogRow {
    pub batch: usize,
    pub row: usize,
}

/// Rows of one table version waiting for the next commit.
struct Pending {
    op: StringBuilder,
    lineage: Lineage,
    tx_id: StringBuilder,
    row: RowColumns,
    commit_date: Option<Date32Builder>,
}

impl Pending {
    /// Rows with room for `capacity` of them before a builder grows.
    fn new(table: &Arc<TableSchema>, partitioned: bool, capacity: usize) -> Self {
        Pending {
            op: StringBuilder::with_capacity(capacity, capacity),
            lineage: Lineage::new(capacity),
            tx_id: StringBuilder::with_capacity(capacity, capacity * 8),
            row: RowColumns::new(table, |_| true, capacity),
            commit_date: partitioned.then(|| Date32Builder::with_capacity(capacity)),
        }
    }

    fn fields(&self) -> Vec<Field> {
        let mut fields = vec![Field::new(OP, DataType::Utf8, true)];
        fields.extend(Lineage::fields());
        fields.push(Field::new(TX_ID, DataType::Utf8, true));
        fields.extend(self.row.fields());
        if self.commit_date.is_some() {
            fields.push(Field::new(COMMIT_DATE, DataType::Date32, true));
        }
        fields
    }

    fn finish(&mut self, label: &str) -> Result<RecordBatch, ConnectorError> {
        let mut columns: Vec<ArrayRef> = vec![Arc::new(self.op.finish())];
        columns.extend(self.lineage.finish());
        columns.push(Arc::new(self.tx_id.finish()));
        columns.extend(self.row.finish());
        if let Some(dates) = &mut self.commit_date {
            columns.push(Arc::new(dates.finish()));
        }
        batch::batch(self.fields(), columns, label)
    }
}

/// The rows of one changelog table waiting for the next round.
pub struct Changelog {
    label: String,
    partitioned: bool,
    current: Option<Pending>,
    /// Rows of earlier table versions in this round.
    finished: Vec<RecordBatch>,
    /// Fields of every version seen in this round, for the table's schema.
    fields: Vec<Field>,
    rows: usize,
}

/// One round's rows of a changelog table, taken away to be committed.
pub struct ChangelogRound {
    batches: Vec<RecordBatch>,
    fields: Vec<Field>,
    rows: usize,
}

impl Changelog {
    pub fn new(label: String, partitioned: bool) -> Self {
        Changelog {
            label,
            partitioned,
            current: None,
            finished: Vec::new(),
            fields: Vec::new(),
            rows: 0,
        }
    }

    /// The table's columns for a first version (to create it).
    pub fn initial_fields(table: &Arc<TableSchema>, partitioned: bool) -> Vec<Field> {
        Pending::new(table, partitioned, 0).fields()
    }

    pub fn partition_columns(partitioned: bool) -> Vec<String> {
        if partitioned {
            vec![COMMIT_DATE.to_string()]
        } else {
            Vec::new()
        }
    }

    /// Adds one change; `position` is the text of the log position after it. Says where its
    /// row is among the batches [`Changelog::take_round`] will give.
    pub fn append(
        &mut self,
        table: &Arc<TableSchema>,
        op: Op,
        envelope: &EnvelopeView<'_>,
        position: &str,
    ) -> Result<ChangelogRow, ConnectorError> {
        let same_version = self.current.as_ref().is_some_and(|p| {
            Arc::ptr_eq(p.row.table(), table) || p.row.table().version == table.version
        });
        if !same_version {
            self.finish_current()?;
            // a trickle's round holds a few rows: room for a thousand, grown when more come
            let pending = Pending::new(table, self.partitioned, 1024);
            self.merge_fields(pending.fields());
            self.current = Some(pending);
        }
        let Some(pending) = self.current.as_mut() else {
            return Err(ConnectorError::definite(
                "internal error, no changelog rows",
            ));
        };
        // the current rows become the next finished batch
        let at = ChangelogRow {
            batch: self.finished.len(),
            row: pending.row.len(),
        };
        let image = match op {
            Op::Delete => envelope.before,
            _ => envelope.after.or(envelope.before),
        };
        pending
            .row
            .append(image)
            .map_err(|e| ConnectorError::definite(e.to_string()))?;
        pending.op.append_value(op.code());
        pending.lineage.append(envelope.source_ts_ms, position);
        pending.tx_id.append_option(envelope.transaction_id);
        if let Some(dates) = &mut pending.commit_date {
            dates.append_value(envelope.source_ts_ms.div_euclid(MS_PER_DAY) as i32);
        }
        self.rows += 1;
        if pending.row.len() >= CHUNK_ROWS {
            // a round is gathered in batches of bounded size: builders grown to a whole round
            // would copy it again at every doubling and hold up to twice its size
            let chunk = pending.finish(&self.label)?;
            self.finished.push(chunk);
            // the next chunk is likely as full: its builders are made at its size rather than
            // grown by doubling (each doubling copies what they hold)
            *pending = Pending::new(table, self.partitioned, CHUNK_ROWS);
        }
        Ok(at)
    }

    fn merge_fields(&mut self, fields: Vec<Field>) {
        for field in fields {
            if !self.fields.iter().any(|f| f.name() == field.name()) {
                self.fields.push(field);
            }
        }
    }

    fn finish_current(&mut self) -> Result<(), ConnectorError> {
        if let Some(mut pending) = self.current.take() {
            if !pending.row.is_empty() {
                self.finished.push(pending.finish(&self.label)?);
            }
        }
        Ok(())
    }

    pub fn has_pending(&self) -> bool {
        self.rows > 0
    }

    /// The pending rows, taken for a round; the next change starts a new batch.
    pub fn take_round(&mut self) -> Result<ChangelogRound, ConnectorError> {
        self.finish_current()?;
        Ok(ChangelogRound {
            batches: std::mem::take(&mut self.finished),
            fields: std::mem::take(&mut self.fields),
            rows: std::mem::take(&mut self.rows),
        })
    }
}

impl ChangelogRound {
    pub fn batches(&self) -> &[RecordBatch] {
        &self.batches
    }

    /// Appends the rows to `target` as round `round`, covering `through`.
    pub async fn commit<T: TableTarget>(
        self,
        target: &mut T,
        round: i64,
        through: &Position,
    ) -> Result<usize, ConnectorError> {
        if self.rows == 0 {
            return Ok(0);
        }
        target.add_columns(&self.fields).await?;
        let schema = target.arrow_schema()?;
        let batches = self
            .batches
            .iter()
            .map(|part| conform(part, &schema, target.label()))
            .collect::<Result<Vec<_>, _>>()?;
        crate::format::append(target, batches, round, through).await?;
        Ok(self.rows)
    }
}

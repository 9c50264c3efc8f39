//! Record batches made to fit a table's current schema, and the lineage columns every row carries.

use crate::error::lake_error;
use arrow::array::{
    new_null_array, ArrayRef, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::compute::{
    cast_with_options, concat_batches, lexsort_to_indices, take_record_batch, CastOptions,
    SortColumn,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::row::{RowConverter, SortField};
use headwater_contract::ConnectorError;
use std::sync::Arc;

/// When the source committed the change that wrote the row.
pub const COMMIT_TIME: &str = "__commit_time";
/// The source position just after that change (binlog file:pos, or LSN), as text.
pub const POSITION: &str = "__position";

pub fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// `__commit_time` and `__position`, filled one row at a time.
pub struct Lineage {
    commit_time: TimestampMicrosecondBuilder,
    position: StringBuilder,
}

impl Lineage {
    pub fn new(capacity: usize) -> Self {
        Lineage {
            commit_time: TimestampMicrosecondBuilder::with_capacity(capacity)
                .with_data_type(utc_micros()),
            // a binlog position with its row and GTID takes about 50 bytes
            position: StringBuilder::with_capacity(capacity, capacity * 48),
        }
    }

    pub fn fields() -> Vec<Field> {
        vec![
            Field::new(COMMIT_TIME, utc_micros(), true),
            Field::new(POSITION, DataType::Utf8, true),
        ]
    }

    pub fn append(&mut self, commit_ts_ms: i64, position: &str) {
        self.commit_time
            .append_value(commit_ts_ms.saturating_mul(1000));
        self.position.append_value(position);
    }

    pub fn finish(&mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.commit_time.finish()),
            Arc::new(self.position.finish()),
        ]
    }
}

/// `batch` with the columns of `schema`, by name: a column the batch lacks (added later, or
/// dropped from the source) is null; a column of another type is cast when no value changes,
/// and otherwise is an error naming it.
pub fn conform(
    batch: &RecordBatch,
    schema: &SchemaRef,
    label: &str,
) -> Result<RecordBatch, ConnectorError> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch.clone());
    }
    let rows = batch.num_rows();
    let options = CastOptions {
        safe: false,
        ..Default::default()
    };
    let mut columns = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let column = match batch.column_by_name(field.name()) {
            None => new_null_array(field.data_type(), rows),
            Some(column) if column.data_type() == field.data_type() => Arc::clone(column),
            Some(column) => cast_with_options(column, field.data_type(), &options).map_err(|e| {
                ConnectorError::definite(format!(
                    "column {} of {label} changed type from {} to {}, which the table cannot hold without rewriting it; capture the table into a new sink location, or keep the column's type",
                    field.name(),
                    field.data_type(),
                    column.data_type()
                ))
                .caused_by(e)
            })?,
        };
        columns.push(column);
    }
    RecordBatch::try_new(Arc::clone(schema), columns)
        .map_err(|e| lake_error(&format!("shaping rows of {label}"), e))
}

/// A batch of `fields` from `columns`.
pub fn batch(
    fields: Vec<Field>,
    columns: Vec<ArrayRef>,
    label: &str,
) -> Result<RecordBatch, ConnectorError> {
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| lake_error(&format!("building rows of {label}"), e))
}

/// `batches` with their rows in the order of the columns `by`: kept as they are when they are
/// in that order already (a round of growing keys), else made one sorted batch.
pub fn in_key_order(
    batches: Vec<RecordBatch>,
    by: &[String],
) -> Result<Vec<RecordBatch>, arrow::error::ArrowError> {
    let mut batches: Vec<RecordBatch> = batches.into_iter().filter(|b| b.num_rows() > 0).collect();
    if by.is_empty() || batches.len() < 2 {
        return batches
            .pop()
            .map_or(Ok(Vec::new()), |one| Ok(vec![sorted_by(one, by)?]));
    }
    let schema = batches[0].schema();
    let indexes = by
        .iter()
        .map(|name| schema.index_of(name))
        .collect::<Result<Vec<_>, _>>()?;
    let fields = indexes
        .iter()
        .map(|i| SortField::new(schema.field(*i).data_type().clone()))
        .collect();
    let converter = RowConverter::new(fields)?;
    let mut keys = converter.empty_rows(0, 0);
    for part in &batches {
        let columns: Vec<ArrayRef> = indexes
            .iter()
            .map(|i| Arc::clone(part.column(*i)))
            .collect();
        converter.append(&mut keys, &columns)?;
    }
    let ordered = (1..keys.num_rows()).all(|at| keys.row(at - 1) <= keys.row(at));
    if ordered {
        return Ok(batches);
    }
    let all = concat_batches(&schema, &batches)?;
    drop(batches);
    Ok(vec![sorted_by(all, by)?])
}

/// `batch` with its rows in the order of the columns `by` (unchanged when `by` is empty).
pub fn sorted_by(
    batch: RecordBatch,
    by: &[String],
) -> Result<RecordBatch, arrow::error::ArrowError> {
    if by.is_empty() || batch.num_rows() < 2 {
        return Ok(batch);
    }
    let columns = by
        .iter()
        .map(|name| {
            Ok(SortColumn {
                values: Arc::clone(batch.column(batch.schema().index_of(name)?)),
                options: None,
            })
        })
        .collect::<Result<Vec<_>, arrow::error::ArrowError>>()?;
    let order = lexsort_to_indices(&columns, None)?;
    // rows mostly arrive in key order (inserts of growing keys, copies of a snapshot): then
    // the batch is kept as it is rather than copied
    if order
        .values()
        .iter()
        .enumerate()
        .all(|(at, row)| *row as usize == at)
    {
        return Ok(batch);
    }
    take_record_batch(&batch, &order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::Int64Type;

    fn keys(values: &[i64]) -> RecordBatch {
        let column: ArrayRef = Arc::new(Int64Array::from(values.to_vec()));
        RecordBatch::try_from_iter([("id", column)]).unwrap()
    }

    fn ids(batches: &[RecordBatch]) -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect()
    }

    /// Batches already in key order stay as they are (no copy); any row out of order across
    /// them makes one sorted batch.
    #[test]
    fn batches_are_put_in_key_order_only_when_they_are_not() {
        let by = ["id".to_string()];
        let ordered = in_key_order(vec![keys(&[1, 2]), keys(&[]), keys(&[3, 9])], &by).unwrap();
        assert_eq!(ordered.len(), 2, "kept, the empty one left out");
        assert_eq!(ids(&ordered), [1, 2, 3, 9]);
        let mixed = in_key_order(vec![keys(&[1, 5]), keys(&[3, 9])], &by).unwrap();
        assert_eq!(mixed.len(), 1);
        assert_eq!(ids(&mixed), [1, 3, 5, 9]);
        let one = in_key_order(vec![keys(&[4, 2])], &by).unwrap();
        assert_eq!(ids(&one), [2, 4]);
        assert!(in_key_order(Vec::new(), &by).unwrap().is_empty());
    }
}

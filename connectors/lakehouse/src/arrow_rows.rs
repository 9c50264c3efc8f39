//! Source columns as Arrow (and so Delta/Parquet) columns: the type mapping of `docs/types.md`'s
//! Delta section, and the decoding of Avro row images straight into Arrow builders.

use arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder,
    Float32Builder, Float64Builder, Int32Builder, Int64Builder, ListBuilder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, FieldRef, TimeUnit};
use headwater_contract::avro_json::decimal_text;
use headwater_contract::avro_scan::AvroReader;
use headwater_contract::{FieldType, TableSchema};
use std::sync::Arc;

/// The widest decimal Delta (and Parquet's fixed-width decimals) hold as a number.
pub const MAX_DECIMAL_PRECISION: u32 = 38;

/// The Arrow type a column is written as.
pub fn arrow_type(field_type: &FieldType) -> DataType {
    use FieldType as F;
    match field_type {
        F::Boolean => DataType::Boolean,
        F::Int => DataType::Int32,
        F::Long => DataType::Int64,
        F::Float => DataType::Float32,
        F::Double => DataType::Float64,
        F::Decimal { precision, scale } if *precision <= MAX_DECIMAL_PRECISION => {
            DataType::Decimal128(*precision as u8, *scale as i8)
        }
        // wider than Delta's decimals: exact text, never a rounded number
        F::Decimal { .. } | F::DecimalString => DataType::Utf8,
        F::String | F::Uuid | F::Json | F::Enum | F::Set => DataType::Utf8,
        F::Bytes => DataType::Binary,
        F::Date => DataType::Date32,
        // signed microseconds: MySQL's TIME ranges over ±838 hours, beyond any time-of-day type
        F::TimeMicros => DataType::Int64,
        F::TimestampMicros => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        F::LocalTimestampMicros => DataType::Timestamp(TimeUnit::Microsecond, None),
        F::Array(items) => DataType::List(list_item(items)),
    }
}

/// The sink's own columns, which a source column's name must not take.
const SINK_COLUMNS: [&str; 7] = [
    crate::changelog::OP,
    crate::changelog::TX_ID,
    crate::changelog::COMMIT_DATE,
    crate::batch::COMMIT_TIME,
    crate::batch::POSITION,
    crate::mirror::DELETED,
    crate::mirror::DELETED_AT,
];

/// The Delta column name of each of `table`'s columns: the characters Delta does not allow in
/// a column name without column mapping (` ,;{}()\n\t=`; delta-rs writes no column mapping)
/// become `_`, and a name already taken, ignoring case as Delta does — by an earlier column, or
/// by one of the sink's own (`__op`, `__position`, …) — gets `_2`, `_3`, … So `a b` and `a_b`
/// stay two columns, PostgreSQL's `A` and `a` become `A` and `a_2`, and a source column named
/// `__op` becomes `__op_2`. Unicode and quotes are kept.
pub fn lake_column_names(table: &TableSchema) -> Vec<String> {
    let mut names: Vec<String> = Vec::with_capacity(table.columns.len());
    for column in &table.columns {
        let base: String = column
            .name
            .chars()
            .map(|c| if " ,;{}()\n\t=".contains(c) { '_' } else { c })
            .collect();
        // Delta compares column names without case (`A` and `a` cannot both be columns)
        let taken = |name: &str, names: &[String]| {
            SINK_COLUMNS.iter().any(|n| n.eq_ignore_ascii_case(name))
                || names
                    .iter()
                    .any(|n| n.to_lowercase() == name.to_lowercase())
        };
        let mut name = base.clone();
        let mut n = 2;
        while taken(&name, &names) {
            name = format!("{base}_{n}");
            n += 1;
        }
        names.push(name);
    }
    names
}

fn list_item(items: &FieldType) -> FieldRef {
    // Delta names list items `element`
    Arc::new(Field::new("element", arrow_type(items), true))
}

fn builder_for(field_type: &FieldType, capacity: usize) -> Box<dyn ArrayBuilder> {
    use FieldType as F;
    match field_type {
        F::Boolean => Box::new(BooleanBuilder::with_capacity(capacity)),
        F::Int => Box::new(Int32Builder::with_capacity(capacity)),
        F::Long | F::TimeMicros => Box::new(Int64Builder::with_capacity(capacity)),
        F::Float => Box::new(Float32Builder::with_capacity(capacity)),
        F::Double => Box::new(Float64Builder::with_capacity(capacity)),
        F::Decimal { precision, scale } if *precision <= MAX_DECIMAL_PRECISION => Box::new(
            Decimal128Builder::with_capacity(capacity)
                .with_data_type(DataType::Decimal128(*precision as u8, *scale as i8)),
        ),
        F::Decimal { .. } | F::DecimalString | F::String | F::Uuid | F::Json | F::Enum | F::Set => {
            Box::new(StringBuilder::with_capacity(capacity, capacity * 16))
        }
        F::Bytes => Box::new(BinaryBuilder::with_capacity(capacity, capacity * 16)),
        F::Date => Box::new(Date32Builder::with_capacity(capacity)),
        F::TimestampMicros => Box::new(
            TimestampMicrosecondBuilder::with_capacity(capacity)
                .with_data_type(arrow_type(field_type)),
        ),
        F::LocalTimestampMicros => Box::new(TimestampMicrosecondBuilder::with_capacity(capacity)),
        F::Array(items) => Box::new(
            ListBuilder::with_capacity(builder_for(items, capacity), capacity)
                .with_field(list_item(items)),
        ),
    }
}

macro_rules! builder {
    ($builder:expr, $type:ty) => {
        $builder.as_any_mut().downcast_mut::<$type>()?
    };
}

/// Appends one value read from `reader`; `None` when the bytes do not follow `field_type`.
fn append_value(
    builder: &mut dyn ArrayBuilder,
    field_type: &FieldType,
    reader: &mut AvroReader<'_>,
) -> Option<()> {
    use FieldType as F;
    match field_type {
        F::Boolean => builder!(builder, BooleanBuilder).append_value(reader.boolean()?),
        F::Int => builder!(builder, Int32Builder).append_value(reader.int()?),
        F::Long | F::TimeMicros => builder!(builder, Int64Builder).append_value(reader.long()?),
        F::Float => builder!(builder, Float32Builder).append_value(reader.float()?),
        F::Double => builder!(builder, Float64Builder).append_value(reader.double()?),
        F::Decimal { precision, .. } if *precision <= MAX_DECIMAL_PRECISION => {
            builder!(builder, Decimal128Builder).append_value(unscaled_i128(reader.bytes()?)?)
        }
        F::Decimal { scale, .. } => builder!(builder, StringBuilder)
            .append_value(decimal_text(reader.bytes()?, *scale as usize)),
        F::DecimalString | F::String | F::Uuid | F::Json | F::Enum | F::Set => {
            builder!(builder, StringBuilder).append_value(reader.str()?)
        }
        F::Bytes => builder!(builder, BinaryBuilder).append_value(reader.bytes()?),
        F::Date => builder!(builder, Date32Builder).append_value(reader.int()?),
        F::TimestampMicros | F::LocalTimestampMicros => {
            builder!(builder, TimestampMicrosecondBuilder).append_value(reader.long()?)
        }
        F::Array(items) => {
            let list = builder!(builder, ListBuilder<Box<dyn ArrayBuilder>>);
            loop {
                let mut count = reader.long()?;
                if count == 0 {
                    break;
                }
                if count < 0 {
                    count = count.checked_neg()?;
                    reader.long()?; // the block's size in bytes
                }
                for _ in 0..count {
                    if reader.optional()? {
                        append_value(list.values().as_mut(), items, reader)?;
                    } else {
                        append_null(list.values().as_mut(), items)?;
                    }
                }
            }
            list.append(true);
        }
    }
    Some(())
}

fn append_null(builder: &mut dyn ArrayBuilder, field_type: &FieldType) -> Option<()> {
    use FieldType as F;
    match field_type {
        F::Boolean => builder!(builder, BooleanBuilder).append_null(),
        F::Int => builder!(builder, Int32Builder).append_null(),
        F::Long | F::TimeMicros => builder!(builder, Int64Builder).append_null(),
        F::Float => builder!(builder, Float32Builder).append_null(),
        F::Double => builder!(builder, Float64Builder).append_null(),
        F::Decimal { precision, .. } if *precision <= MAX_DECIMAL_PRECISION => {
            builder!(builder, Decimal128Builder).append_null()
        }
        F::Decimal { .. } | F::DecimalString | F::String | F::Uuid | F::Json | F::Enum | F::Set => {
            builder!(builder, StringBuilder).append_null()
        }
        F::Bytes => builder!(builder, BinaryBuilder).append_null(),
        F::Date => builder!(builder, Date32Builder).append_null(),
        F::TimestampMicros | F::LocalTimestampMicros => {
            builder!(builder, TimestampMicrosecondBuilder).append_null()
        }
        F::Array(_) => builder!(builder, ListBuilder<Box<dyn ArrayBuilder>>).append(false),
    }
    Some(())
}

/// A big-endian two's-complement unscaled value that fits 128 bits.
fn unscaled_i128(bytes: &[u8]) -> Option<i128> {
    if bytes.is_empty() {
        return Some(0);
    }
    let negative = bytes[0] & 0x80 != 0;
    let fill = if negative { 0xff } else { 0x00 };
    let significant = bytes.len().saturating_sub(16);
    if bytes[..significant].iter().any(|b| *b != fill) {
        return None;
    }
    let mut out = [fill; 16];
    let tail = &bytes[significant..];
    out[16 - tail.len()..].copy_from_slice(tail);
    Some(i128::from_be_bytes(out))
}

/// The bytes did not follow the table's schema (a defect: the runtime encoded them).
#[derive(Debug, thiserror::Error)]
#[error("a row image of {table} (version {version}) does not follow its schema")]
pub struct MalformedRow {
    pub table: String,
    pub version: u32,
}

/// Columns of one table version being filled row by row from Avro row images.
pub struct RowColumns {
    table: Arc<TableSchema>,
    /// Which of the table's columns are kept (the rest, like `__unchanged_toast` in a mirror,
    /// are read past).
    kept: Vec<bool>,
    builders: Vec<Box<dyn ArrayBuilder>>,
}

impl RowColumns {
    pub fn new(table: &Arc<TableSchema>, kept: impl Fn(&str) -> bool, capacity: usize) -> Self {
        let kept: Vec<bool> = table.columns.iter().map(|c| kept(&c.name)).collect();
        let builders = table
            .columns
            .iter()
            .zip(&kept)
            .filter(|(_, keep)| **keep)
            .map(|(c, _)| builder_for(&c.field_type, capacity))
            .collect();
        RowColumns {
            table: Arc::clone(table),
            kept,
            builders,
        }
    }

    pub fn table(&self) -> &Arc<TableSchema> {
        &self.table
    }

    /// The Arrow fields of the kept columns, all nullable (a column added later is null in
    /// older rows, a dropped one in newer rows).
    pub fn fields(&self) -> Vec<Field> {
        self.table
            .columns
            .iter()
            .zip(lake_column_names(&self.table))
            .zip(&self.kept)
            .filter(|(_, keep)| **keep)
            .map(|((c, name), _)| Field::new(name, arrow_type(&c.field_type), true))
            .collect()
    }

    /// Appends one row image, or a row of nulls for `None`.
    pub fn append(&mut self, image: Option<&[u8]>) -> Result<(), MalformedRow> {
        let ok = match image {
            Some(bytes) => self.append_image(bytes),
            None => self.append_nulls(),
        };
        ok.ok_or_else(|| MalformedRow {
            table: self.table.id.to_string(),
            version: self.table.version,
        })
    }

    fn append_nulls(&mut self) -> Option<()> {
        let mut at = 0;
        for (column, keep) in self.table.columns.iter().zip(&self.kept) {
            if *keep {
                append_null(self.builders[at].as_mut(), &column.field_type)?;
                at += 1;
            }
        }
        Some(())
    }

    fn append_image(&mut self, bytes: &[u8]) -> Option<()> {
        let mut reader = AvroReader::new(bytes);
        let mut at = 0;
        for (column, keep) in self.table.columns.iter().zip(&self.kept) {
            let present = !column.nullable || reader.optional()?;
            if !*keep {
                if present {
                    reader.skip(&column.field_type)?;
                }
                continue;
            }
            let builder = self.builders[at].as_mut();
            if present {
                append_value(builder, &column.field_type, &mut reader)?;
            } else {
                append_null(builder, &column.field_type)?;
            }
            at += 1;
        }
        Some(())
    }

    pub fn len(&self) -> usize {
        self.builders.first().map_or(0, |b| b.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The columns filled so far, emptying the builders.
    pub fn finish(&mut self) -> Vec<ArrayRef> {
        self.builders.iter_mut().map(|b| b.finish()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray, Decimal128Array, ListArray};
    use headwater_contract::avro::{RowEncoder, Unscaled, Value};
    use headwater_contract::{Column, TableId};

    fn column(name: &str, field_type: FieldType) -> Column {
        Column {
            name: name.into(),
            field_type,
            nullable: true,
            sql_type: "t".into(),
        }
    }

    #[test]
    fn column_names_delta_cannot_hold_are_adjusted_and_kept_apart() {
        let names = ["a b", "a_b", "__op", "ü \"q\"", "x=(1)", "A", "a"];
        let table = TableSchema {
            id: TableId {
                namespace: "db".into(),
                table: "t".into(),
            },
            version: 1,
            columns: names.iter().map(|n| column(n, FieldType::Long)).collect(),
            primary_key: vec![0],
        };
        assert_eq!(
            lake_column_names(&table),
            ["a_b", "a_b_2", "__op_2", "ü_\"q\"", "x__1_", "A", "a_2"]
        );
    }

    #[test]
    fn row_images_become_typed_arrow_columns() {
        let table = Arc::new(TableSchema {
            id: TableId {
                namespace: "db".into(),
                table: "t".into(),
            },
            version: 1,
            columns: vec![
                Column {
                    nullable: false,
                    ..column("id", FieldType::Long)
                },
                column(
                    "price",
                    FieldType::Decimal {
                        precision: 10,
                        scale: 2,
                    },
                ),
                column(
                    "huge",
                    FieldType::Decimal {
                        precision: 65,
                        scale: 3,
                    },
                ),
                column("tags", FieldType::Array(Box::new(FieldType::Int))),
                column("skipped", FieldType::String),
            ],
            primary_key: vec![0],
        });
        let price = Unscaled::parse("-123.45", 2).unwrap();
        let huge = Unscaled::parse("1234567890123456789012345678901234567890.5", 3).unwrap();
        let row = RowEncoder::row_bytes(
            &table,
            &[
                Value::Long(7),
                Value::Decimal(price),
                Value::Decimal(huge),
                Value::Array(vec![Value::Int(1), Value::Null]),
                Value::Text("x".into()),
            ],
        )
        .unwrap();
        let mut columns = RowColumns::new(&table, |name| name != "skipped", 4);
        columns.append(Some(&row)).unwrap();
        columns.append(None).unwrap();
        assert!(columns.append(Some(&row[..row.len() - 3])).is_err());
        let arrays = columns.finish();
        assert_eq!(arrays.len(), 4);
        assert_eq!(
            arrays[0]
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(0),
            7
        );
        let prices = arrays[1]
            .as_any()
            .downcast_ref::<Decimal128Array>()
            .unwrap();
        assert_eq!(prices.value_as_string(0), "-123.45");
        assert!(prices.is_null(1));
        assert_eq!(
            arrays[2].as_string::<i32>().value(0),
            "1234567890123456789012345678901234567890.500"
        );
        let tags = arrays[3].as_any().downcast_ref::<ListArray>().unwrap();
        assert_eq!(tags.value(0).len(), 2);
        assert!(tags.value(0).is_null(1));
        assert!(tags.is_null(1));
    }

    #[test]
    fn unscaled_values_are_sign_extended() {
        assert_eq!(unscaled_i128(&[0xff, 0x85]), Some(-123));
        assert_eq!(unscaled_i128(&[0x00; 20]), Some(0));
        assert_eq!(unscaled_i128(&[0x01; 17]), None);
    }
}

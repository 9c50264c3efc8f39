//! The sink's Arrow columns as Iceberg fields and back. The Arrow types are the lakehouse
//! mapping (`docs/types.md`); Iceberg gets the matching primitive (`timestamptz` for
//! timestamps with a zone, `timestamp` without, `date`, `decimal(p, s)`, lists as lists). Each
//! Arrow field carries its Iceberg field id (`PARQUET:field_id`), so the Parquet files written
//! from it name their columns by id, as Iceberg readers resolve them.

use arrow::datatypes::{DataType, Field, Fields, Schema as ArrowSchema, TimeUnit};
use headwater_contract::ConnectorError;
use iceberg::spec::{
    ListType, NestedField, NestedFieldRef, PrimitiveType, Schema, StructType, Type,
};
use parquet::arrow::PARQUET_FIELD_ID_META_KEY;
use std::collections::HashMap;
use std::sync::Arc;

fn unmapped(name: &str, data_type: &DataType) -> ConnectorError {
    ConnectorError::definite(format!(
        "iceberg: column {name} has the Arrow type {data_type}, which has no Iceberg type here; this is a bug in Headwater's type mapping — capture the table with the Delta or lake sink meanwhile"
    ))
}

/// The Iceberg type of an Arrow column; list elements take ids from `next_id`.
fn iceberg_type(
    name: &str,
    data_type: &DataType,
    next_id: &mut i32,
) -> Result<Type, ConnectorError> {
    let primitive = match data_type {
        DataType::Boolean => PrimitiveType::Boolean,
        DataType::Int32 => PrimitiveType::Int,
        DataType::Int64 => PrimitiveType::Long,
        DataType::Float32 => PrimitiveType::Float,
        DataType::Float64 => PrimitiveType::Double,
        DataType::Decimal128(precision, scale) => PrimitiveType::Decimal {
            precision: u32::from(*precision),
            scale: u32::try_from(*scale).map_err(|_| unmapped(name, data_type))?,
        },
        DataType::Utf8 => PrimitiveType::String,
        DataType::Binary => PrimitiveType::Binary,
        DataType::Date32 => PrimitiveType::Date,
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => PrimitiveType::Timestamptz,
        DataType::Timestamp(TimeUnit::Microsecond, None) => PrimitiveType::Timestamp,
        DataType::List(item) => {
            *next_id += 1;
            let element_type = iceberg_type(name, item.data_type(), next_id)?;
            let element = NestedField::list_element(*next_id, element_type, false);
            return Ok(Type::List(ListType::new(Arc::new(element))));
        }
        other => return Err(unmapped(name, other)),
    };
    Ok(Type::Primitive(primitive))
}

/// The Arrow type of an Iceberg field the sink made.
fn arrow_type(field_type: &Type) -> Result<DataType, ConnectorError> {
    let unsupported = || {
        ConnectorError::definite(format!(
            "iceberg: the table has a column of type {field_type}, which Headwater does not write; the table was changed by another writer — point the sink at a new warehouse and catalog"
        ))
    };
    Ok(match field_type {
        Type::Primitive(p) => match p {
            PrimitiveType::Boolean => DataType::Boolean,
            PrimitiveType::Int => DataType::Int32,
            PrimitiveType::Long => DataType::Int64,
            PrimitiveType::Float => DataType::Float32,
            PrimitiveType::Double => DataType::Float64,
            PrimitiveType::Decimal { precision, scale } => DataType::Decimal128(
                u8::try_from(*precision).map_err(|_| unsupported())?,
                i8::try_from(*scale).map_err(|_| unsupported())?,
            ),
            PrimitiveType::String => DataType::Utf8,
            PrimitiveType::Binary => DataType::Binary,
            PrimitiveType::Date => DataType::Date32,
            PrimitiveType::Timestamptz => {
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
            }
            PrimitiveType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            _ => return Err(unsupported()),
        },
        Type::List(list) => DataType::List(Arc::new(arrow_field(&list.element_field)?)),
        _ => return Err(unsupported()),
    })
}

fn arrow_field(field: &NestedFieldRef) -> Result<Field, ConnectorError> {
    let metadata = HashMap::from([(PARQUET_FIELD_ID_META_KEY.to_string(), field.id.to_string())]);
    Ok(
        Field::new(&field.name, arrow_type(&field.field_type)?, !field.required)
            .with_metadata(metadata),
    )
}

/// The Arrow schema the table's files are written in, each field with its Iceberg id.
pub fn to_arrow(schema: &Schema) -> Result<ArrowSchema, ConnectorError> {
    let fields = schema
        .as_struct()
        .fields()
        .iter()
        .map(arrow_field)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ArrowSchema::new(Fields::from(fields)))
}

/// `current`'s fields followed by those of `wanted` it lacks (by name, added as optional with
/// new ids), with `identifiers` (the mirror's key, made required) as identifier fields; `None`
/// when nothing is added.
pub fn evolve(
    current: Option<&Schema>,
    wanted: &[Field],
    identifiers: &[String],
) -> Result<Option<Schema>, ConnectorError> {
    let mut fields: Vec<NestedFieldRef> = current
        .map(|s| s.as_struct().fields().to_vec())
        .unwrap_or_default();
    let mut next_id = current.map_or(0, Schema::highest_field_id);
    let mut added = false;
    for field in wanted {
        if fields.iter().any(|f| f.name == *field.name()) {
            continue;
        }
        next_id += 1;
        let id = next_id;
        let field_type = iceberg_type(field.name(), field.data_type(), &mut next_id)?;
        // only a new table's key is required: Iceberg adds no required column to rows it has
        let required = current.is_none() && identifiers.iter().any(|k| k == field.name());
        fields.push(Arc::new(NestedField::new(
            id,
            field.name(),
            field_type,
            required,
        )));
        added = true;
    }
    if !added {
        return Ok(None);
    }
    let identifier_ids: Vec<i32> = match current {
        Some(schema) => schema.identifier_field_ids().collect(),
        None => identifiers
            .iter()
            .filter_map(|k| fields.iter().find(|f| f.name == *k).map(|f| f.id))
            .collect(),
    };
    let schema_id = current.map_or(0, |s| s.schema_id() + 1);
    let schema = Schema::builder()
        .with_schema_id(schema_id)
        .with_fields(fields)
        .with_identifier_field_ids(identifier_ids)
        .build()
        .map_err(|e| {
            ConnectorError::definite(format!("iceberg: building the table schema failed ({e})"))
        })?;
    Ok(Some(schema))
}

/// A struct of `fields`, for partition types.
pub fn struct_of(fields: Vec<NestedFieldRef>) -> StructType {
    StructType::new(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_map_to_iceberg_and_back_with_ids() {
        let fields = vec![
            Field::new("id", DataType::Int64, true),
            Field::new("amount", DataType::Decimal128(12, 2), true),
            Field::new(
                "at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new(
                "local",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                true,
            ),
            Field::new(
                "tags",
                DataType::List(Arc::new(Field::new("element", DataType::Utf8, true))),
                true,
            ),
        ];
        let schema = evolve(None, &fields, &["id".to_string()]).unwrap().unwrap();
        assert_eq!(schema.identifier_field_ids().collect::<Vec<_>>(), vec![1]);
        let arrow = to_arrow(&schema).unwrap();
        assert!(!arrow.field(0).is_nullable(), "a key is required");
        assert_eq!(arrow.field(1).data_type(), &DataType::Decimal128(12, 2));
        let ids: Vec<&str> = arrow
            .fields()
            .iter()
            .map(|f| f.metadata()[PARQUET_FIELD_ID_META_KEY].as_str())
            .collect();
        assert_eq!(ids, ["1", "2", "3", "4", "5"]);
        let DataType::List(element) = arrow.field(4).data_type() else {
            panic!("a list")
        };
        assert_eq!(element.metadata()[PARQUET_FIELD_ID_META_KEY], "6");
        // a column added later gets the next id, optional
        let more = [
            fields.clone(),
            vec![Field::new("note", DataType::Utf8, true)],
        ]
        .concat();
        let evolved = evolve(Some(&schema), &more, &[]).unwrap().unwrap();
        let note = evolved.field_by_name("note").unwrap();
        assert_eq!((note.id, note.required), (7, false));
        assert_eq!(evolved.identifier_field_ids().collect::<Vec<_>>(), vec![1]);
        assert!(evolve(Some(&evolved), &more, &[]).unwrap().is_none());
    }
}

//! Turns a TABLE_MAP event (with `binlog_row_metadata=FULL`) into a table schema and the column
//! decoders for its row images — no DDL parsing needed.

use crate::decoder::{AddressKind, ColumnDecoder, Text};
use headwater_contract::{Column, ColumnPlan, ConnectorError, FieldType, TableId, TableSchema};
use mysql_common::binlog::events::{OptionalMetaExtractor, OptionalMetadataField, TableMapEvent};
use mysql_common::constants::ColumnType;
use std::collections::HashMap;
use std::sync::Arc;

/// Character set of each collation id, read from the server's `information_schema.COLLATIONS`.
#[derive(Clone, Debug, Default)]
pub struct Collations {
    charset_by_id: HashMap<u16, String>,
}

impl Collations {
    pub fn new(charset_by_id: HashMap<u16, String>) -> Self {
        Collations { charset_by_id }
    }

    fn text_kind(&self, collation: u16) -> Result<Text, String> {
        if collation == 63 {
            return Ok(Text::Binary);
        }
        match self.charset_by_id.get(&collation) {
            Some(charset) => text_kind_of_charset(Some(charset)),
            None => Err(format!("collation id {collation}")),
        }
    }
}

/// How values of a character set are decoded (`None`: a binary column).
pub(crate) fn text_kind_of_charset(charset: Option<&str>) -> Result<Text, String> {
    match charset {
        None | Some("binary") => Ok(Text::Binary),
        Some("utf8mb4" | "utf8mb3" | "utf8" | "ascii") => Ok(Text::Utf8),
        Some("latin1") => Ok(Text::Latin1),
        Some(other) => Err(other.to_string()),
    }
}

/// A captured table's current schema and how to decode its rows.
#[derive(Debug)]
pub struct TableInfo {
    /// The columns the records carry (after `source.columns`).
    pub schema: Arc<TableSchema>,
    /// One per column of the binlog's row images.
    pub decoders: Vec<ColumnDecoder>,
    /// How row images become `schema`'s rows; `None` when they are the same.
    pub plan: Option<ColumnPlan>,
}

fn definite(table: &TableId, message: String) -> ConnectorError {
    ConnectorError::definite(format!("table {table}: {message}"))
}

/// The columns, keys and decoders described by `tme`. `version` is filled in by the caller.
pub fn describe(
    tme: &TableMapEvent<'_>,
    collations: &Collations,
    hints: &ColumnHints,
) -> Result<(TableSchema, Vec<ColumnDecoder>), ConnectorError> {
    let id = TableId {
        namespace: tme.database_name().into_owned(),
        table: tme.table_name().into_owned(),
    };
    let count = tme.columns_count() as usize;
    let bad_meta =
        |e: std::io::Error| definite(&id, format!("unreadable TABLE_MAP optional metadata ({e})"));
    let extractor = OptionalMetaExtractor::new(tme.iter_optional_meta()).map_err(bad_meta)?;
    let (names, primary_key) = names_and_primary_key(&id, &extractor, count)?;
    let mut unsigned = extractor.iter_signedness();
    let mut charsets = extractor.iter_charset();
    let mut enum_charsets = extractor.iter_enum_and_set_charset();
    let (enum_labels, set_labels) = enum_and_set_labels(tme).map_err(bad_meta)?;
    let mut enum_labels = enum_labels.into_iter();
    let mut set_labels = set_labels.into_iter();
    let nulls = tme.null_bitmask();

    let mut columns = Vec::with_capacity(count);
    let mut decoders = Vec::with_capacity(count);
    for (index, name) in names.into_iter().enumerate() {
        let column_type = tme
            .get_column_type(index)
            .map_err(|e| definite(&id, format!("column {name}: {e}")))?
            .ok_or_else(|| definite(&id, format!("column {name}: no type in TABLE_MAP")))?;
        let meta = tme.get_column_metadata(index).unwrap_or(&[]);
        let is_unsigned = if column_type.is_numeric_type() {
            unsigned.next().unwrap_or(false)
        } else {
            false
        };
        let mut text = |kind: &str| -> Result<Text, ConnectorError> {
            let collation = charsets.next().transpose().map_err(bad_meta)?.unwrap_or(63);
            collations.text_kind(collation).map_err(|charset| {
                definite(
                    &id,
                    format!("column {name} ({kind}) uses character set {charset}, which Headwater does not decode yet; convert the column to utf8mb4 or latin1, or exclude the table"),
                )
            })
        };
        if matches!(
            column_type,
            ColumnType::MYSQL_TYPE_ENUM | ColumnType::MYSQL_TYPE_SET
        ) {
            let _ = enum_charsets.next();
        }
        let (decoder, field_type, sql_type) = column_layout(
            &id,
            &name,
            column_type,
            meta,
            is_unsigned,
            &mut text,
            &mut enum_labels,
            &mut set_labels,
        )?;
        let (decoder, field_type, sql_type) = match hints.get(&id, &name) {
            Some(hint) => apply_hint(hint, decoder, field_type, sql_type),
            None => (decoder, field_type, sql_type),
        };
        let nullable = nulls.get(index).map(|b| *b).unwrap_or(true) || may_be_zero_date(&decoder);
        columns.push(Column {
            name,
            field_type,
            nullable,
            sql_type,
        });
        decoders.push(decoder);
    }
    Ok((
        TableSchema {
            id,
            version: 0,
            columns,
            primary_key,
        },
        decoders,
    ))
}

/// The column names and the primary key's column indexes from TABLE_MAP's optional metadata,
/// refused when the names are missing (`binlog_row_metadata` is not FULL) or the key is corrupt.
fn names_and_primary_key(
    id: &TableId,
    extractor: &OptionalMetaExtractor<'_>,
    count: usize,
) -> Result<(Vec<String>, Vec<usize>), ConnectorError> {
    let bad_meta =
        |e: std::io::Error| definite(id, format!("unreadable TABLE_MAP optional metadata ({e})"));
    let names: Vec<String> = extractor
        .iter_column_name()
        .map(|n| n.map(|n| n.name().into_owned()))
        .collect::<Result<_, _>>()
        .map_err(bad_meta)?;
    if names.len() != count {
        return Err(definite(
            id,
            "the binlog carries no column names; set binlog_row_metadata=FULL on the server (SET GLOBAL binlog_row_metadata=FULL, and in my.cnf), then restart Headwater".into(),
        ));
    }
    let primary_key: Vec<usize> = extractor
        .iter_primary_key()
        .map(|k| k.map(|k| k as usize))
        .collect::<Result<_, _>>()
        .map_err(bad_meta)?;
    if let Some(beyond) = primary_key.iter().find(|&&k| k >= count) {
        return Err(definite(
            id,
            format!("the TABLE_MAP event names primary key column {beyond} of a table of {count} columns: the event is corrupt; check the binlog at this position with mariadb-binlog/mysqlbinlog"),
        ));
    }
    Ok((names, primary_key))
}

/// Each ENUM's (or SET's) labels, one list per column.
type Labels = Vec<Vec<String>>;

/// The labels of each ENUM and of each SET column, in column order, from TABLE_MAP's
/// optional metadata.
fn enum_and_set_labels(tme: &TableMapEvent<'_>) -> Result<(Labels, Labels), std::io::Error> {
    let mut enum_labels = Vec::new();
    let mut set_labels = Vec::new();
    for field in tme.iter_optional_meta() {
        match field? {
            OptionalMetadataField::EnumStrValue(values) => {
                for labels in values.iter_values() {
                    let labels = labels?;
                    enum_labels.push(
                        labels
                            .values()
                            .iter()
                            .map(|v| v.value().into_owned())
                            .collect(),
                    );
                }
            }
            OptionalMetadataField::SetStrValue(values) => {
                for labels in values.iter_values() {
                    let labels = labels?;
                    set_labels.push(
                        labels
                            .values()
                            .iter()
                            .map(|v| v.value().into_owned())
                            .collect(),
                    );
                }
            }
            _ => {}
        }
    }
    Ok((enum_labels, set_labels))
}

/// Column types the binlog cannot tell apart from others (MariaDB's UUID, INET6 and INET4 look
/// like BINARY(n), its JSON like LONGTEXT), read from `information_schema`.
#[derive(Clone, Debug, Default)]
pub struct ColumnHints {
    by_column: HashMap<(String, String, String), TypeHint>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TypeHint {
    Uuid,
    Inet6,
    Inet4,
    Json,
}

impl ColumnHints {
    pub fn insert(&mut self, db: &str, table: &str, column: &str, hint: TypeHint) {
        self.by_column.insert(
            (db.to_string(), table.to_string(), column.to_string()),
            hint,
        );
    }

    pub(crate) fn get(&self, table: &TableId, column: &str) -> Option<TypeHint> {
        self.by_column
            .get(&(
                table.namespace.clone(),
                table.table.clone(),
                column.to_string(),
            ))
            .copied()
    }
}

/// Applies a hint when the binlog's own layout agrees with it: `information_schema` describes
/// the table as it is now, which may differ from an old event being read.
pub(crate) fn apply_hint(
    hint: TypeHint,
    decoder: ColumnDecoder,
    field_type: FieldType,
    sql_type: String,
) -> (ColumnDecoder, FieldType, String) {
    let address = |kind: AddressKind, prefix: u8, max_len: u16| {
        (usize::from(max_len) == kind.width()).then_some(ColumnDecoder::Address { prefix, kind })
    };
    match (hint, &decoder) {
        (
            TypeHint::Uuid,
            ColumnDecoder::Char {
                prefix,
                max_len,
                text: Text::Binary,
            },
        ) => {
            if let Some(d) = address(AddressKind::Uuid, *prefix, *max_len) {
                return (d, FieldType::Uuid, "uuid".into());
            }
        }
        (
            TypeHint::Inet6,
            ColumnDecoder::Char {
                prefix,
                max_len,
                text: Text::Binary,
            },
        ) => {
            if let Some(d) = address(AddressKind::Inet6, *prefix, *max_len) {
                return (d, FieldType::String, "inet6".into());
            }
        }
        (
            TypeHint::Inet4,
            ColumnDecoder::Char {
                prefix,
                max_len,
                text: Text::Binary,
            },
        ) => {
            if let Some(d) = address(AddressKind::Inet4, *prefix, *max_len) {
                return (d, FieldType::String, "inet4".into());
            }
        }
        (TypeHint::Json, ColumnDecoder::Blob { text, .. }) if *text != Text::Binary => {
            return (decoder, FieldType::Json, "json".into());
        }
        _ => {}
    }
    (decoder, field_type, sql_type)
}

/// Zero dates ('0000-00-00') have no Avro value: such columns are nullable so they can be NULL
/// (documented in docs/types.md).
pub(crate) fn may_be_zero_date(decoder: &ColumnDecoder) -> bool {
    matches!(
        decoder,
        ColumnDecoder::Date
            | ColumnDecoder::Datetime2 { .. }
            | ColumnDecoder::Timestamp2 { .. }
            | ColumnDecoder::DatetimeOld
            | ColumnDecoder::TimestampOld
    )
}

/// The decoder, type and SQL type of a numeric column; `None` for any other type.
fn number_layout(
    column_type: ColumnType,
    meta: &[u8],
    unsigned: bool,
) -> Option<(ColumnDecoder, FieldType, String)> {
    use ColumnType as T;
    let sql = |s: &str| {
        if unsigned {
            format!("{s} unsigned")
        } else {
            s.to_string()
        }
    };
    Some(match column_type {
        T::MYSQL_TYPE_TINY => (
            ColumnDecoder::Tiny { unsigned },
            FieldType::Int,
            sql("tinyint"),
        ),
        T::MYSQL_TYPE_SHORT => (
            ColumnDecoder::Short { unsigned },
            FieldType::Int,
            sql("smallint"),
        ),
        T::MYSQL_TYPE_INT24 => (
            ColumnDecoder::Int24 { unsigned },
            FieldType::Int,
            sql("mediumint"),
        ),
        T::MYSQL_TYPE_LONG => {
            let field_type = if unsigned {
                FieldType::Long
            } else {
                FieldType::Int
            };
            (ColumnDecoder::Long { unsigned }, field_type, sql("int"))
        }
        T::MYSQL_TYPE_LONGLONG => {
            // BIGINT UNSIGNED exceeds a long: it is carried as DECIMAL(20,0).
            let field_type = if unsigned {
                FieldType::Decimal {
                    precision: 20,
                    scale: 0,
                }
            } else {
                FieldType::Long
            };
            (
                ColumnDecoder::LongLong { unsigned },
                field_type,
                sql("bigint"),
            )
        }
        T::MYSQL_TYPE_FLOAT => (ColumnDecoder::Float, FieldType::Float, "float".into()),
        T::MYSQL_TYPE_DOUBLE => (ColumnDecoder::Double, FieldType::Double, "double".into()),
        T::MYSQL_TYPE_NEWDECIMAL => {
            let precision = meta.first().copied().unwrap_or(0);
            let scale = meta.get(1).copied().unwrap_or(0);
            let field_type = FieldType::Decimal {
                precision: u32::from(precision),
                scale: u32::from(scale),
            };
            let decoder = ColumnDecoder::NewDecimal { precision, scale };
            (decoder, field_type, format!("decimal({precision},{scale})"))
        }
        _ => return None,
    })
}

/// The decoder, type and SQL type of a temporal column (its metadata byte is the
/// fractional-seconds precision); `None` for any other type.
fn time_layout(column_type: ColumnType, meta: &[u8]) -> Option<(ColumnDecoder, FieldType, String)> {
    use ColumnType as T;
    let fsp = meta.first().copied().unwrap_or(0);
    Some(match column_type {
        T::MYSQL_TYPE_YEAR => (ColumnDecoder::Year, FieldType::Int, "year".into()),
        T::MYSQL_TYPE_DATE | T::MYSQL_TYPE_NEWDATE => {
            (ColumnDecoder::Date, FieldType::Date, "date".into())
        }
        T::MYSQL_TYPE_TIME2 => (
            ColumnDecoder::Time2 { fsp },
            FieldType::TimeMicros,
            format!("time({fsp})"),
        ),
        T::MYSQL_TYPE_DATETIME2 => {
            let field_type = FieldType::LocalTimestampMicros;
            (
                ColumnDecoder::Datetime2 { fsp },
                field_type,
                format!("datetime({fsp})"),
            )
        }
        T::MYSQL_TYPE_TIMESTAMP2 => {
            let field_type = FieldType::TimestampMicros;
            (
                ColumnDecoder::Timestamp2 { fsp },
                field_type,
                format!("timestamp({fsp})"),
            )
        }
        T::MYSQL_TYPE_TIME => (ColumnDecoder::TimeOld, FieldType::TimeMicros, "time".into()),
        T::MYSQL_TYPE_DATETIME => {
            let field_type = FieldType::LocalTimestampMicros;
            (ColumnDecoder::DatetimeOld, field_type, "datetime".into())
        }
        T::MYSQL_TYPE_TIMESTAMP => {
            let field_type = FieldType::TimestampMicros;
            (ColumnDecoder::TimestampOld, field_type, "timestamp".into())
        }
        _ => return None,
    })
}

/// The decoder, Avro type and SQL spelling of one column, from its binlog type and metadata
/// bytes. The snapshot reader builds the same inputs from `information_schema`, so both paths
/// give identical schemas.
#[allow(clippy::too_many_arguments)]
pub(crate) fn column_layout(
    id: &TableId,
    name: &str,
    column_type: ColumnType,
    meta: &[u8],
    is_unsigned: bool,
    text: &mut dyn FnMut(&str) -> Result<Text, ConnectorError>,
    enum_labels: &mut dyn Iterator<Item = Vec<String>>,
    set_labels: &mut dyn Iterator<Item = Vec<String>>,
) -> Result<(ColumnDecoder, FieldType, String), ConnectorError> {
    let meta_byte = |i: usize| meta.get(i).copied().unwrap_or(0);
    use ColumnType as T;
    let simple = number_layout(column_type, meta, is_unsigned);
    if let Some(layout) = simple.or_else(|| time_layout(column_type, meta)) {
        return Ok(layout);
    }
    Ok(match column_type {
        T::MYSQL_TYPE_VARCHAR | T::MYSQL_TYPE_VAR_STRING => {
            let max_len = u16::from_le_bytes([meta_byte(0), meta_byte(1)]);
            let text = text("varchar")?;
            let prefix = if max_len > 255 { 2 } else { 1 };
            let (field_type, sql) = if text == Text::Binary { (FieldType::Bytes, "varbinary") } else { (FieldType::String, "varchar") };
            (ColumnDecoder::VarString { prefix, text }, field_type, format!("{sql}({max_len} bytes)"))
        }
        T::MYSQL_TYPE_STRING => {
            // CHAR/BINARY: the real type and length share the two metadata bytes.
            let (byte0, byte1) = (meta_byte(0), meta_byte(1));
            let max_len = ((u16::from(byte0 & 0x30) ^ 0x30) << 4) | u16::from(byte1);
            let text = text("char")?;
            let prefix = if max_len > 255 { 2 } else { 1 };
            let (field_type, sql) = if text == Text::Binary { (FieldType::Bytes, "binary") } else { (FieldType::String, "char") };
            (ColumnDecoder::Char { prefix, max_len, text }, field_type, format!("{sql}({max_len} bytes)"))
        }
        T::MYSQL_TYPE_ENUM => {
            let labels = enum_labels.next().ok_or_else(|| definite(id, format!("column {name}: ENUM labels missing from the binlog; set binlog_row_metadata=FULL")))?;
            (ColumnDecoder::Enum { size: meta_byte(1), labels: labels.into() }, FieldType::Enum, "enum".into())
        }
        T::MYSQL_TYPE_SET => {
            let labels = set_labels.next().ok_or_else(|| definite(id, format!("column {name}: SET labels missing from the binlog; set binlog_row_metadata=FULL")))?;
            (ColumnDecoder::Set { size: meta_byte(1), labels: labels.into() }, FieldType::Set, "set".into())
        }
        T::MYSQL_TYPE_BLOB | T::MYSQL_TYPE_TINY_BLOB | T::MYSQL_TYPE_MEDIUM_BLOB | T::MYSQL_TYPE_LONG_BLOB => {
            let prefix = meta_byte(0);
            let text = text("blob")?;
            let kind = match prefix { 1 => "tiny", 2 => "", 3 => "medium", _ => "long" };
            let (field_type, sql) = if text == Text::Binary { (FieldType::Bytes, "blob") } else { (FieldType::String, "text") };
            (ColumnDecoder::Blob { prefix, text }, field_type, format!("{kind}{sql}"))
        }
        T::MYSQL_TYPE_GEOMETRY => {
            (ColumnDecoder::Blob { prefix: meta_byte(0), text: Text::Binary }, FieldType::Bytes, "geometry".into())
        }
        T::MYSQL_TYPE_BIT => {
            let bits = u16::from(meta_byte(1)) * 8 + u16::from(meta_byte(0));
            let bytes = u8::try_from(bits.div_ceil(8)).unwrap_or(8);
            let boolean = bits == 1;
            (
                ColumnDecoder::Bit { bytes, boolean },
                if boolean { FieldType::Boolean } else { FieldType::Bytes },
                format!("bit({bits})"),
            )
        }
        other => {
            return Err(definite(
                id,
                format!("column {name} has type {other:?}, which Headwater cannot decode yet; exclude the table with source.exclude"),
            ))
        }
    })
}

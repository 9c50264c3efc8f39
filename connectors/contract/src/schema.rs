//! Table schemas and the Avro schemas derived from them (one key schema and one value schema per
//! table version), following the type mapping in `docs/types.md`.

use serde_json::{json, Map, Value as Json};
use std::fmt;

/// The synthetic last column of every PostgreSQL row: names of columns whose value was an
/// unchanged TOASTed value that PostgreSQL did not send (see docs/types.md).
pub const UNCHANGED_TOAST_COLUMN: &str = "__unchanged_toast";

/// The Avro representation chosen for a source column (see `docs/types.md`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldType {
    Boolean,
    Int,
    Long,
    Float,
    Double,
    /// Avro `bytes` with logical type `decimal`: big-endian two's-complement unscaled value.
    Decimal {
        precision: u32,
        scale: u32,
    },
    /// An exact decimal without a declared scale (unconstrained PostgreSQL `numeric`), as text.
    DecimalString,
    String,
    Bytes,
    /// Days since 1970-01-01 (`int`/`date`).
    Date,
    /// Signed microseconds; may be negative or exceed a day (MySQL `TIME`), so not Avro `time-micros`.
    TimeMicros,
    /// Microseconds since the epoch, UTC (`long`/`timestamp-micros`).
    TimestampMicros,
    /// Microseconds since the epoch of a wall-clock value without zone (`long`/`local-timestamp-micros`).
    LocalTimestampMicros,
    /// `string`/`uuid`.
    Uuid,
    /// JSON text.
    Json,
    /// One ENUM label, as `string`.
    Enum,
    /// SET members joined by commas, as `string`.
    Set,
    /// An array whose elements may be null.
    Array(Box<FieldType>),
}

impl FieldType {
    fn avro(&self, sql_type: &str) -> Json {
        let mut schema = match self {
            FieldType::Boolean => json!({"type": "boolean"}),
            FieldType::Int => json!({"type": "int"}),
            FieldType::Long => json!({"type": "long"}),
            FieldType::Float => json!({"type": "float"}),
            FieldType::Double => json!({"type": "double"}),
            FieldType::Decimal { precision, scale } => json!({
                "type": "bytes", "logicalType": "decimal", "precision": precision, "scale": scale
            }),
            FieldType::DecimalString => {
                json!({"type": "string", "connect.name": "io.debezium.data.VariableScaleDecimal"})
            }
            FieldType::String | FieldType::Enum | FieldType::Set => json!({"type": "string"}),
            FieldType::Bytes => json!({"type": "bytes"}),
            FieldType::Date => json!({"type": "int", "logicalType": "date"}),
            FieldType::TimeMicros => {
                json!({"type": "long", "connect.name": "io.debezium.time.MicroTime"})
            }
            FieldType::TimestampMicros => {
                json!({"type": "long", "logicalType": "timestamp-micros"})
            }
            FieldType::LocalTimestampMicros => {
                json!({"type": "long", "logicalType": "local-timestamp-micros"})
            }
            FieldType::Uuid => json!({"type": "string", "logicalType": "uuid"}),
            FieldType::Json => json!({"type": "string", "connect.name": "io.debezium.data.Json"}),
            FieldType::Array(items) => {
                json!({"type": "array", "items": ["null", items.avro(sql_type)]})
            }
        };
        if !matches!(self, FieldType::Array(_)) {
            schema["headwater.sql_type"] = Json::String(sql_type.to_string());
        }
        schema
    }
}

/// One column of a table version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    /// The column's name in the source database.
    pub name: String,
    pub field_type: FieldType,
    pub nullable: bool,
    /// The source's own spelling of the type (`int unsigned`, `varchar(20)`), kept in the Avro
    /// schema as `headwater.sql_type` so consumers can see what the value came from.
    pub sql_type: String,
}

/// A table's identity: `namespace` is the MySQL database or the PostgreSQL schema.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct TableId {
    pub namespace: String,
    pub table: String,
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.namespace, self.table)
    }
}

/// One version of a table's columns. A new version is created whenever the columns change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSchema {
    pub id: TableId,
    pub version: u32,
    pub columns: Vec<Column>,
    /// Indexes into `columns` of the primary key, in key order; empty when the table has none.
    pub primary_key: Vec<usize>,
}

/// Which connector a record comes from; selects the `source` block of the envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnectorKind {
    Mysql,
    Postgres,
}

impl ConnectorKind {
    /// The name used in `source.connector`, as Debezium spells it.
    pub fn name(self) -> &'static str {
        match self {
            ConnectorKind::Mysql => "mysql",
            ConnectorKind::Postgres => "postgresql",
        }
    }

    /// The Avro schema of this connector's `source` block (`schemas/source-*.avsc`).
    pub fn source_schema(self) -> Json {
        let text = match self {
            ConnectorKind::Mysql => include_str!("../../../schemas/source-mysql.avsc"),
            ConnectorKind::Postgres => include_str!("../../../schemas/source-postgresql.avsc"),
        };
        parse_embedded(text)
    }
}

fn parse_embedded(text: &str) -> Json {
    // The files are compiled in and covered by tests, so a parse failure is a build defect.
    serde_json::from_str(text).unwrap_or_else(|err| panic!("embedded .avsc is invalid: {err}"))
}

/// The Avro schema of the envelope's `transaction` block (`schemas/transaction.avsc`).
pub fn transaction_schema() -> Json {
    parse_embedded(include_str!("../../../schemas/transaction.avsc"))
}

/// Turns a source name into a valid Avro name: letters, digits and `_`, not starting with a digit.
pub fn avro_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

impl TableSchema {
    /// Avro namespace of this table's records: `<server>.<namespace>.<table>`, each part sanitized.
    pub fn avro_namespace(&self, server_name: &str) -> String {
        format!(
            "{}.{}.{}",
            avro_name(server_name),
            avro_name(&self.id.namespace),
            avro_name(&self.id.table)
        )
    }

    /// Avro field names, one per column: sanitized, and made unique when sanitizing collides.
    pub fn field_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::with_capacity(self.columns.len());
        for column in &self.columns {
            let base = avro_name(&column.name);
            let mut name = base.clone();
            let mut n = 2;
            while names.contains(&name) {
                name = format!("{base}_{n}");
                n += 1;
            }
            names.push(name);
        }
        names
    }

    fn fields(&self, indexes: &mut dyn Iterator<Item = usize>) -> Vec<Json> {
        let names = self.field_names();
        indexes
            .map(|i| {
                let column = &self.columns[i];
                let mut field = Map::new();
                field.insert("name".into(), Json::String(names[i].clone()));
                let avro = column.field_type.avro(&column.sql_type);
                if column.nullable {
                    field.insert("type".into(), json!(["null", avro]));
                    field.insert("default".into(), Json::Null);
                } else {
                    field.insert("type".into(), avro);
                }
                if names[i] != column.name {
                    field.insert("headwater.column".into(), Json::String(column.name.clone()));
                }
                Json::Object(field)
            })
            .collect()
    }

    /// The row record (`before`/`after`): every column in table order.
    pub fn row_schema(&self, server_name: &str) -> Json {
        json!({
            "type": "record",
            "name": "Value",
            "namespace": self.avro_namespace(server_name),
            "fields": self.fields(&mut (0..self.columns.len())),
        })
    }

    /// The key record: the primary-key columns in key order, or `None` when there is no key.
    pub fn key_schema(&self, server_name: &str) -> Option<Json> {
        if self.primary_key.is_empty() {
            return None;
        }
        Some(json!({
            "type": "record",
            "name": "Key",
            "namespace": self.avro_namespace(server_name),
            "fields": self.fields(&mut self.primary_key.iter().copied()),
        }))
    }

    /// The change envelope: `before`, `after`, `source`, `op`, `ts_ms`, `ts_us`, `ts_ns`,
    /// `transaction` (Debezium 3's fields and order).
    pub fn envelope_schema(&self, server_name: &str, connector: ConnectorKind) -> Json {
        let row = self.row_schema(server_name);
        json!({
            "type": "record",
            "name": "Envelope",
            "namespace": self.avro_namespace(server_name),
            "fields": [
                {"name": "before", "type": ["null", row], "default": null},
                {"name": "after", "type": ["null", "Value"], "default": null},
                {"name": "source", "type": connector.source_schema()},
                {"name": "op", "type": "string"},
                {"name": "ts_ms", "type": ["null", "long"], "default": null},
                {"name": "ts_us", "type": ["null", "long"], "default": null},
                {"name": "ts_ns", "type": ["null", "long"], "default": null},
                {"name": "transaction", "type": ["null", transaction_schema()], "default": null},
            ],
        })
    }
}

/// The schema of schema-change (DDL) records, which go to their own stream.
pub fn schema_change_schema(server_name: &str, connector: ConnectorKind) -> Json {
    json!({
        "type": "record",
        "name": "SchemaChangeValue",
        "namespace": format!("{}.schema_changes", avro_name(server_name)),
        "fields": [
            {"name": "source", "type": connector.source_schema()},
            {"name": "ts_ms", "type": "long"},
            {"name": "databaseName", "type": "string"},
            {"name": "tableName", "type": ["null", "string"], "default": null},
            {"name": "ddl", "type": "string"},
        ],
    })
}

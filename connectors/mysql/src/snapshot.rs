//! Reads snapshot chunks over an ordinary SQL connection: the table's schema from
//! `information_schema` (mapped through the same code as TABLE_MAP events, so both paths give
//! one schema), rows in primary-key order after the last key copied, and the binlog position
//! after the read as the chunk's high watermark.

use crate::decoder::{CivilTime, ColumnDecoder, Text};
use crate::table::{
    apply_hint, column_layout, may_be_zero_date, text_kind_of_charset, ColumnHints, TypeHint,
};
use headwater_contract::avro::{RowEncoder, Unscaled, Value};
use headwater_contract::backfill::{ChunkRequest, ChunkRow, KeyPart};
use headwater_contract::{BinlogPosition, Column, ConnectorError, TableId, TableSchema};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use mysql_common::constants::ColumnType;
use std::borrow::Cow;
use std::sync::Arc;

/// A chunk as read, before the stream gives its schema a version.
pub struct RawChunk {
    pub schema: TableSchema,
    pub rows: Vec<ChunkRow>,
    pub exhausted: bool,
    pub rows_estimate: Option<u64>,
    /// Where the chunk ends in the change stream: it is emitted once the stream has passed it.
    pub watermark: Watermark,
}

/// A chunk's high watermark.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Watermark {
    /// The binlog end read right after the chunk's SELECT.
    Position(BinlogPosition),
    /// The value written to the signal table after the SELECT.
    Signal(String),
}

static WATERMARKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The start of this process's signal-table watermarks for a pipeline: `server_id:pid:`.
pub fn signal_prefix(server_id: u32) -> String {
    format!("{server_id}:{}:", std::process::id())
}

fn quote_table(table: &TableId) -> String {
    format!("{}.{}", quote(&table.namespace), quote(&table.table))
}

/// The statement that creates the signal table (preflight prints it).
pub fn signal_table_ddl(table: &TableId) -> String {
    format!(
        "CREATE TABLE {} (id INT UNSIGNED PRIMARY KEY, watermark VARCHAR(128) NOT NULL)",
        quote_table(table)
    )
}

pub enum ChunkOutcome {
    Rows(RawChunk),
    /// The table cannot be copied (no primary key, gone): the reason.
    Skip(String),
}

/// The connection snapshot chunks are read on. Moved into a task per chunk and handed back.
pub struct ChunkReader {
    conn: Conn,
    url: String,
    server_id: u32,
    /// `watermarks = "signal_table"`: the table written after each chunk.
    signal_table: Option<TableId>,
}

fn sql_error(what: &str, url: &str, server_id: u32, err: mysql_async::Error) -> ConnectorError {
    crate::error::classify(err, what, url, server_id)
}

fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// How a key column's saved value goes back into the `WHERE` clause.
#[derive(Clone, Copy, Debug)]
enum KeyParam {
    Signed,
    Unsigned,
    /// Compared as a decimal: a string would be compared as a double.
    Decimal(u8, u8),
    Plain,
}

struct Described {
    schema: TableSchema,
    decoders: Vec<ColumnDecoder>,
}

impl ChunkReader {
    pub async fn connect(
        opts: mysql_async::Opts,
        url: &str,
        server_id: u32,
        signal_table: Option<TableId>,
    ) -> Result<Self, ConnectorError> {
        let mut conn = Conn::new(opts)
            .await
            .map_err(|e| sql_error("connecting for the snapshot", url, server_id, e))?;
        // Timestamps in UTC like the binlog's epoch seconds; text in each column's own character
        // set so it is decoded exactly as row images are.
        conn.query_drop("SET time_zone = '+00:00', character_set_results = binary")
            .await
            .map_err(|e| sql_error("preparing the snapshot connection", url, server_id, e))?;
        Ok(ChunkReader {
            conn,
            url: url.to_string(),
            server_id,
            signal_table,
        })
    }

    fn error(&self, what: &str) -> impl Fn(mysql_async::Error) -> ConnectorError + '_ {
        let what = what.to_string();
        move |e| sql_error(&what, &self.url, self.server_id, e)
    }

    /// Every base table in `include`d databases (for an initial copy).
    pub async fn tables(
        &mut self,
        filter: &headwater_contract::TableFilter,
    ) -> Result<Vec<TableId>, ConnectorError> {
        let rows: Vec<(Vec<u8>, Vec<u8>)> = self
            .conn
            .query(
                "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' \
                 AND TABLE_SCHEMA NOT IN ('mysql', 'sys', 'information_schema', 'performance_schema') ORDER BY 1, 2",
            )
            .await
            .map_err(self.error("listing tables"))?;
        Ok(rows
            .into_iter()
            .map(|(db, table)| TableId {
                namespace: String::from_utf8_lossy(&db).into_owned(),
                table: String::from_utf8_lossy(&table).into_owned(),
            })
            .filter(|t| filter.captures(&t.namespace, &t.table))
            .filter(|t| self.signal_table.as_ref() != Some(t))
            .collect())
    }

    /// Preflight of `watermarks = "signal_table"`: the table exists and may be written (checked
    /// in a transaction that is rolled back).
    pub async fn check_signal_table(&mut self) -> Result<(), String> {
        let Some(table) = self.signal_table.clone() else {
            return Ok(());
        };
        let probe = format!(
            "REPLACE INTO {} (id, watermark) VALUES ({}, 'check')",
            quote_table(&table),
            self.server_id
        );
        let mut tx = self
            .conn
            .start_transaction(Default::default())
            .await
            .map_err(|e| e.to_string())?;
        let written = tx.query_drop(probe).await;
        let _ = tx.rollback().await;
        written.map_err(|e| e.to_string())
    }

    /// The table as `information_schema` describes it now; `None` when it does not exist.
    async fn describe(&mut self, table: &TableId) -> Result<Option<Described>, ConnectorError> {
        type ColumnRow = (
            Vec<u8>,
            Vec<u8>,
            Vec<u8>,
            Vec<u8>,
            Option<u64>,
            Option<u64>,
            Option<u64>,
            Option<u64>,
            Option<Vec<u8>>,
        );
        let rows: Vec<ColumnRow> = self
            .conn
            .exec(
                "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, CHARACTER_OCTET_LENGTH, NUMERIC_PRECISION, \
                 NUMERIC_SCALE, DATETIME_PRECISION, CHARACTER_SET_NAME FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
                (&table.namespace, &table.table),
            )
            .await
            .map_err(self.error("reading the table's columns"))?;
        if rows.is_empty() {
            return Ok(None);
        }
        let key_names: Vec<Vec<u8>> = self
            .conn
            .exec(
                "SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
                 AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX",
                (&table.namespace, &table.table),
            )
            .await
            .map_err(self.error("reading the table's primary key"))?;
        let json_checks: Vec<Vec<u8>> = self
            .conn
            .exec(
                "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = ? \
                 AND TABLE_NAME = ? AND CHECK_CLAUSE LIKE 'json_valid(%'",
                (&table.namespace, &table.table),
            )
            .await
            .unwrap_or_default();
        let mut hints = ColumnHints::default();
        for clause in &json_checks {
            let clause = String::from_utf8_lossy(clause);
            let column = clause
                .trim_start_matches("json_valid(")
                .trim_end_matches(')')
                .trim_matches('`');
            hints.insert(&table.namespace, &table.table, column, TypeHint::Json);
        }
        let mut columns = Vec::with_capacity(rows.len());
        let mut decoders = Vec::with_capacity(rows.len());
        let mut names = Vec::with_capacity(rows.len());
        for (name, data_type, column_type, nullable, octets, precision, scale, fsp, charset) in rows
        {
            let name = String::from_utf8_lossy(&name).into_owned();
            let data_type = String::from_utf8_lossy(&data_type).to_ascii_lowercase();
            let column_type = String::from_utf8_lossy(&column_type).into_owned();
            let charset = charset.map(|c| String::from_utf8_lossy(&c).into_owned());
            let hint = match data_type.as_str() {
                "uuid" => Some(TypeHint::Uuid),
                "inet6" => Some(TypeHint::Inet6),
                "inet4" => Some(TypeHint::Inet4),
                "json" => Some(TypeHint::Json),
                _ => None,
            };
            if let Some(hint) = hint {
                hints.insert(&table.namespace, &table.table, &name, hint);
            }
            let spec = BinlogSpec::of(
                &data_type,
                &column_type,
                octets.unwrap_or(0),
                precision.unwrap_or(0),
                scale.unwrap_or(0),
                fsp.unwrap_or(0),
            )
            .ok_or_else(|| {
                ConnectorError::definite(format!(
                    "table {table}: column {name} has type {column_type}, which Headwater cannot copy yet; exclude the table with source.exclude"
                ))
            })?;
            let binary = matches!(data_type.as_str(), "uuid" | "inet6" | "inet4");
            let mut text = |kind: &str| -> Result<Text, ConnectorError> {
                if binary {
                    return Ok(Text::Binary);
                }
                text_kind_of_charset(charset.as_deref()).map_err(|charset| {
                    ConnectorError::definite(format!(
                        "table {table}: column {name} ({kind}) uses character set {charset}, which Headwater does not decode yet; convert the column to utf8mb4 or latin1, or exclude the table"
                    ))
                })
            };
            let labels = parse_labels(&column_type);
            let mut enum_labels = std::iter::once(labels.clone());
            let mut set_labels = std::iter::once(labels);
            let (decoder, field_type, sql_type) = column_layout(
                table,
                &name,
                spec.column_type,
                &spec.meta,
                column_type.contains("unsigned"),
                &mut text,
                &mut enum_labels,
                &mut set_labels,
            )?;
            let (decoder, field_type, sql_type) = match hints.get(table, &name) {
                Some(hint) => apply_hint(hint, decoder, field_type, sql_type),
                None => (decoder, field_type, sql_type),
            };
            let nullable = nullable.eq_ignore_ascii_case(b"YES") || may_be_zero_date(&decoder);
            columns.push(Column {
                name: name.clone(),
                field_type,
                nullable,
                sql_type,
            });
            decoders.push(decoder);
            names.push(name);
        }
        let primary_key: Vec<usize> = key_names
            .iter()
            .filter_map(|k| {
                let k = String::from_utf8_lossy(k);
                names.iter().position(|n| *n == k)
            })
            .collect();
        Ok(Some(Described {
            schema: TableSchema {
                id: table.clone(),
                version: 0,
                columns,
                primary_key,
            },
            decoders,
        }))
    }

    /// Checks that `table` can be copied and `condition` is valid for it.
    pub async fn check(
        &mut self,
        table: &TableId,
        condition: Option<&str>,
    ) -> Result<(), ConnectorError> {
        let described = self.describe(table).await?.ok_or_else(|| {
            ConnectorError::definite(format!(
                "table {table} does not exist (or the user cannot see it); check the name (database.table)"
            ))
        })?;
        if described.schema.primary_key.is_empty() {
            return Err(ConnectorError::definite(format!(
                "table {table} has no primary key, so it cannot be copied in chunks next to the stream; add a primary key"
            )));
        }
        if let Some(condition) = condition {
            let sql = format!(
                "SELECT 1 FROM {}.{} WHERE ({condition}) LIMIT 0",
                quote(&table.namespace),
                quote(&table.table)
            );
            self.conn.query_drop(sql).await.map_err(|e| {
                ConnectorError::definite(format!(
                    "the condition `{condition}` does not work on {table}: {e}; give an SQL expression over its columns"
                ))
            })?;
        }
        Ok(())
    }

    /// Reads the chunk `request` asks for, then the binlog end as its high watermark.
    pub async fn read(&mut self, request: &ChunkRequest) -> Result<ChunkOutcome, ConnectorError> {
        let table = &request.table;
        let Some(Described { schema, decoders }) = self.describe(table).await? else {
            return Ok(ChunkOutcome::Skip("the table no longer exists".into()));
        };
        if schema.primary_key.is_empty() {
            return Ok(ChunkOutcome::Skip(
                "it has no primary key, so it cannot be copied in chunks next to the stream (add a primary key, or copy it by other means)".into(),
            ));
        }
        let rows_estimate = if request.estimate_rows {
            let estimate: Option<Option<u64>> = self
                .conn
                .exec_first(
                    "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                    (&table.namespace, &table.table),
                )
                .await
                .map_err(self.error("estimating the table's rows"))?;
            estimate.flatten()
        } else {
            None
        };
        let key_params: Vec<KeyParam> = schema
            .primary_key
            .iter()
            .map(|&i| key_param(&decoders[i]))
            .collect();
        let key_names: Vec<String> = schema
            .primary_key
            .iter()
            .map(|&i| quote(&schema.columns[i].name))
            .collect();
        let select_list: Vec<String> = schema.columns.iter().map(|c| quote(&c.name)).collect();
        let mut conditions = Vec::new();
        let mut params: Vec<mysql_async::Value> = Vec::new();
        if let Some(after) = &request.after {
            if after.len() != key_names.len() {
                return Err(ConnectorError::definite(format!(
                    "table {table}: the saved backfill key has {} columns but the primary key now has {}; start the backfill again (headwater backfill)",
                    after.len(),
                    key_names.len()
                )));
            }
            // (k1 > a) OR (k1 = a AND k2 > b) OR …: the range optimizer reads this as key ranges.
            let mut alternatives = Vec::new();
            for last in 0..key_names.len() {
                let mut terms = Vec::new();
                for (i, name) in key_names.iter().enumerate().take(last + 1) {
                    let op = if i == last { ">" } else { "=" };
                    terms.push(format!("{name} {op} {}", placeholder(key_params[i])));
                    params.push(param(key_params[i], &after[i]));
                }
                alternatives.push(format!("({})", terms.join(" AND ")));
            }
            conditions.push(format!("({})", alternatives.join(" OR ")));
        }
        if let Some(condition) = &request.condition {
            conditions.push(format!("({condition})"));
        }
        let sql = format!(
            "SELECT {} FROM {}.{}{} ORDER BY {} LIMIT {}",
            select_list.join(", "),
            quote(&table.namespace),
            quote(&table.table),
            if conditions.is_empty() {
                String::new()
            } else {
                format!(" WHERE {}", conditions.join(" AND "))
            },
            key_names.join(", "),
            request.limit
        );
        let raw_rows: Vec<mysql_async::Row> = self
            .conn
            .exec(sql, params)
            .await
            .map_err(self.error("reading a snapshot chunk"))?;
        let exhausted = raw_rows.len() < request.limit;
        let mut rows = Vec::with_capacity(raw_rows.len());
        let mut values: Vec<Value<'static>> = Vec::with_capacity(decoders.len());
        for row in raw_rows {
            let raw: Vec<mysql_async::Value> = row
                .unwrap_raw()
                .into_iter()
                .map(|v| v.unwrap_or(mysql_async::Value::NULL))
                .collect();
            values.clear();
            for ((value, decoder), column) in raw.iter().zip(&decoders).zip(&schema.columns) {
                values.push(convert(decoder, value).map_err(|e| {
                    ConnectorError::definite(format!(
                        "table {table}, column {}: {e}; report this with the column's type",
                        column.name
                    ))
                })?);
            }
            let resume_key = schema
                .primary_key
                .iter()
                .map(|&i| key_part(&raw[i]))
                .collect();
            let key = RowEncoder::key_bytes(&schema, &values)?.unwrap_or_default();
            let after = RowEncoder::row_bytes(&schema, &values)?;
            rows.push(ChunkRow {
                key,
                after,
                resume_key,
            });
        }
        let watermark = match self.signal_table.clone() {
            None => Watermark::Position(self.binlog_end().await?),
            Some(signal) => {
                let number = WATERMARKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mark = format!("{}{number}", signal_prefix(self.server_id));
                self.conn
                    .exec_drop(
                        format!(
                            "REPLACE INTO {} (id, watermark) VALUES (?, ?)",
                            quote_table(&signal)
                        ),
                        (self.server_id, &mark),
                    )
                    .await
                    .map_err(self.error("writing a snapshot watermark to the signal table"))?;
                Watermark::Signal(mark)
            }
        };
        Ok(ChunkOutcome::Rows(RawChunk {
            schema,
            rows,
            exhausted,
            rows_estimate,
            watermark,
        }))
    }

    async fn binlog_end(&mut self) -> Result<BinlogPosition, ConnectorError> {
        let row: Option<mysql_async::Row> = match self.conn.query_first("SHOW MASTER STATUS").await
        {
            Ok(row) => row,
            Err(mysql_async::Error::Server(e)) if e.code == 1064 => self
                .conn
                .query_first("SHOW BINARY LOG STATUS")
                .await
                .map_err(self.error("reading the binlog position"))?,
            Err(err) => return Err(self.error("reading the binlog position")(err)),
        };
        let row = row.ok_or_else(|| {
            ConnectorError::definite("the server has binary logging off (SHOW MASTER STATUS is empty); start it with log_bin=ON")
        })?;
        let file = match row.as_ref(0) {
            Some(mysql_async::Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
            _ => String::new(),
        };
        let pos = match row.as_ref(1) {
            Some(mysql_async::Value::Int(n)) => *n as u64,
            Some(mysql_async::Value::UInt(n)) => *n,
            Some(mysql_async::Value::Bytes(b)) => std::str::from_utf8(b)
                .ok()
                .and_then(|t| t.parse().ok())
                .unwrap_or(4),
            _ => 4,
        };
        Ok(BinlogPosition {
            file: Arc::from(file.as_str()),
            pos,
            gtid_set: Arc::default(),
            rows_done: 0,
            backfill: None,
        })
    }

    pub async fn disconnect(self) {
        let _ = self.conn.disconnect().await;
    }
}

/// The binlog type and metadata bytes a column of this `information_schema` description has in
/// TABLE_MAP events.
struct BinlogSpec {
    column_type: ColumnType,
    meta: Vec<u8>,
}

impl BinlogSpec {
    fn of(
        data_type: &str,
        column_type: &str,
        octets: u64,
        precision: u64,
        scale: u64,
        fsp: u64,
    ) -> Option<BinlogSpec> {
        use ColumnType as T;
        let length = |n: u64| (n.min(u64::from(u16::MAX)) as u16).to_le_bytes().to_vec();
        // CHAR/BINARY: the real type and the length share two bytes.
        let fixed = |n: u64| {
            let n = n.min(1023) as u16;
            let high = (((n >> 8) & 3) << 4) as u8 ^ 0x30;
            vec![0xCE | high, (n & 0xFF) as u8]
        };
        let (column_type_code, meta) = match data_type {
            "tinyint" | "bool" | "boolean" => (T::MYSQL_TYPE_TINY, vec![]),
            "smallint" => (T::MYSQL_TYPE_SHORT, vec![]),
            "mediumint" => (T::MYSQL_TYPE_INT24, vec![]),
            "int" | "integer" => (T::MYSQL_TYPE_LONG, vec![]),
            "bigint" => (T::MYSQL_TYPE_LONGLONG, vec![]),
            "float" => (T::MYSQL_TYPE_FLOAT, vec![4]),
            "double" | "real" | "double precision" => (T::MYSQL_TYPE_DOUBLE, vec![8]),
            "decimal" | "numeric" => (T::MYSQL_TYPE_NEWDECIMAL, vec![precision as u8, scale as u8]),
            "year" => (T::MYSQL_TYPE_YEAR, vec![]),
            "date" => (T::MYSQL_TYPE_DATE, vec![]),
            "time" => (T::MYSQL_TYPE_TIME2, vec![fsp as u8]),
            "datetime" => (T::MYSQL_TYPE_DATETIME2, vec![fsp as u8]),
            "timestamp" => (T::MYSQL_TYPE_TIMESTAMP2, vec![fsp as u8]),
            "varchar" | "varbinary" => (T::MYSQL_TYPE_VARCHAR, length(octets)),
            "char" | "binary" => (T::MYSQL_TYPE_STRING, fixed(octets)),
            "uuid" => (T::MYSQL_TYPE_STRING, fixed(16)),
            "inet6" => (T::MYSQL_TYPE_STRING, fixed(16)),
            "inet4" => (T::MYSQL_TYPE_STRING, fixed(4)),
            "enum" => {
                let count = parse_labels(column_type).len();
                (
                    T::MYSQL_TYPE_ENUM,
                    vec![0xF7, if count > 255 { 2 } else { 1 }],
                )
            }
            "set" => {
                let count = parse_labels(column_type).len();
                let bytes = match count.div_ceil(8) {
                    0 | 1 => 1,
                    2 => 2,
                    3 => 3,
                    4 => 4,
                    _ => 8,
                };
                (T::MYSQL_TYPE_SET, vec![0xF8, bytes])
            }
            "tinyblob" | "tinytext" => (T::MYSQL_TYPE_BLOB, vec![1]),
            "blob" | "text" => (T::MYSQL_TYPE_BLOB, vec![2]),
            "mediumblob" | "mediumtext" => (T::MYSQL_TYPE_BLOB, vec![3]),
            "longblob" | "longtext" | "json" => (T::MYSQL_TYPE_BLOB, vec![4]),
            "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring"
            | "multipolygon" | "geometrycollection" => (T::MYSQL_TYPE_GEOMETRY, vec![4]),
            "bit" => (
                T::MYSQL_TYPE_BIT,
                vec![(precision % 8) as u8, (precision / 8) as u8],
            ),
            _ => return None,
        };
        Some(BinlogSpec {
            column_type: column_type_code,
            meta,
        })
    }
}

/// The labels of `enum('a','b')` / `set('x','y')` as `information_schema` spells them.
fn parse_labels(column_type: &str) -> Vec<String> {
    let Some(open) = column_type.find('(') else {
        return Vec::new();
    };
    let inner = &column_type[open + 1..column_type.rfind(')').unwrap_or(column_type.len())];
    let mut labels = Vec::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut label = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    label.push('\'');
                }
                '\'' => break,
                '\\' => {
                    if let Some(next) = chars.next() {
                        label.push(next);
                    }
                }
                other => label.push(other),
            }
        }
        labels.push(label);
    }
    labels
}

fn key_param(decoder: &ColumnDecoder) -> KeyParam {
    match decoder {
        ColumnDecoder::Tiny { unsigned }
        | ColumnDecoder::Short { unsigned }
        | ColumnDecoder::Int24 { unsigned }
        | ColumnDecoder::Long { unsigned }
        | ColumnDecoder::LongLong { unsigned } => {
            if *unsigned {
                KeyParam::Unsigned
            } else {
                KeyParam::Signed
            }
        }
        ColumnDecoder::NewDecimal { precision, scale } => KeyParam::Decimal(*precision, *scale),
        _ => KeyParam::Plain,
    }
}

fn placeholder(kind: KeyParam) -> String {
    match kind {
        KeyParam::Decimal(p, s) => format!("CAST(? AS DECIMAL({p},{s}))"),
        _ => "?".into(),
    }
}

fn param(kind: KeyParam, part: &KeyPart) -> mysql_async::Value {
    let bytes = part.to_bytes();
    let text = std::str::from_utf8(&bytes).unwrap_or("");
    match kind {
        KeyParam::Signed => text.parse::<i64>().map_or(
            mysql_async::Value::Bytes(bytes.clone()),
            mysql_async::Value::Int,
        ),
        KeyParam::Unsigned => text.parse::<u64>().map_or(
            mysql_async::Value::Bytes(bytes.clone()),
            mysql_async::Value::UInt,
        ),
        _ => mysql_async::Value::Bytes(bytes),
    }
}

/// A key value as it is saved to continue after it.
fn key_part(value: &mysql_async::Value) -> KeyPart {
    use mysql_async::Value as V;
    match value {
        V::Bytes(bytes) => KeyPart::from_bytes(bytes),
        V::Int(n) => KeyPart::Text(n.to_string()),
        V::UInt(n) => KeyPart::Text(n.to_string()),
        V::Float(x) => KeyPart::Text(format!("{x:?}")),
        V::Double(x) => KeyPart::Text(format!("{x:?}")),
        V::Date(y, mo, d, h, mi, s, us) => KeyPart::Text(format!(
            "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}"
        )),
        V::Time(negative, days, h, mi, s, us) => KeyPart::Text(format!(
            "{}{}:{mi:02}:{s:02}.{us:06}",
            if *negative { "-" } else { "" },
            u32::from(*h) + days * 24
        )),
        V::NULL => KeyPart::Text(String::new()),
    }
}

/// A value from the binary protocol as the row-image decoder would have produced it.
fn convert(decoder: &ColumnDecoder, value: &mysql_async::Value) -> Result<Value<'static>, String> {
    use mysql_async::Value as V;
    use ColumnDecoder as D;
    let integer = |value: &V| -> Result<i128, String> {
        match value {
            V::Int(n) => Ok(i128::from(*n)),
            V::UInt(n) => Ok(i128::from(*n)),
            V::Bytes(b) => std::str::from_utf8(b)
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .ok_or_else(|| format!("expected an integer, got {b:?}")),
            other => Err(format!("expected an integer, got {other:?}")),
        }
    };
    if matches!(value, V::NULL) {
        return Ok(Value::Null);
    }
    Ok(match decoder {
        D::Tiny { .. } | D::Short { .. } | D::Int24 { .. } | D::Year => {
            Value::Int(integer(value)? as i32)
        }
        D::Long { unsigned } => {
            let n = integer(value)?;
            if *unsigned {
                Value::Long(n as i64)
            } else {
                Value::Int(n as i32)
            }
        }
        D::LongLong { unsigned } => {
            let n = integer(value)?;
            if *unsigned {
                Value::Decimal(crate::decoder::unsigned_decimal(n as u64))
            } else {
                Value::Long(n as i64)
            }
        }
        D::Float => match value {
            V::Float(x) => Value::Float(*x),
            V::Double(x) => Value::Float(*x as f32),
            other => return Err(format!("expected a FLOAT, got {other:?}")),
        },
        D::Double => match value {
            V::Double(x) => Value::Double(*x),
            V::Float(x) => Value::Double(f64::from(*x)),
            other => return Err(format!("expected a DOUBLE, got {other:?}")),
        },
        D::NewDecimal { scale, .. } => {
            let V::Bytes(text) = value else {
                return Err(format!("expected a DECIMAL, got {value:?}"));
            };
            let text = std::str::from_utf8(text).map_err(|e| e.to_string())?;
            Value::Decimal(Unscaled::parse(text, u32::from(*scale)).map_err(|e| e.to_string())?)
        }
        D::Date => match civil(value)? {
            Some(c) => c
                .epoch_micros()
                .map_or(Value::Null, |m| Value::Date((m / 86_400_000_000) as i32)),
            None => Value::Null,
        },
        D::Datetime2 { .. } | D::DatetimeOld | D::Timestamp2 { .. } | D::TimestampOld => {
            match civil(value)? {
                Some(c) => c.epoch_micros().map_or(Value::Null, Value::Micros),
                None => Value::Null,
            }
        }
        D::Time2 { .. } | D::TimeOld => match value {
            V::Time(negative, days, h, m, s, us) => {
                let total = ((i64::from(*days) * 24 + i64::from(*h)) * 3600
                    + i64::from(*m) * 60
                    + i64::from(*s))
                    * 1_000_000
                    + i64::from(*us);
                Value::Micros(if *negative { -total } else { total })
            }
            other => return Err(format!("expected a TIME, got {other:?}")),
        },
        D::VarString { text, .. } | D::Blob { text, .. } | D::Char { text, .. } => {
            let V::Bytes(bytes) = value else {
                return Err(format!("expected a string, got {value:?}"));
            };
            crate::decoder::text_value(bytes, *text)
                .map_err(|e| e.0)?
                .into_owned()
        }
        D::Enum { .. } | D::Set { .. } => {
            let V::Bytes(bytes) = value else {
                return Err(format!("expected an ENUM/SET label, got {value:?}"));
            };
            Value::Text(Cow::Owned(String::from_utf8_lossy(bytes).into_owned()))
        }
        D::Bit {
            boolean,
            bytes: width,
        } => {
            let raw: Vec<u8> = match value {
                V::Bytes(b) => b.clone(),
                V::Int(n) => n.to_be_bytes()[8 - usize::from(*width).min(8)..].to_vec(),
                V::UInt(n) => n.to_be_bytes()[8 - usize::from(*width).min(8)..].to_vec(),
                other => return Err(format!("expected BIT bytes, got {other:?}")),
            };
            if *boolean {
                Value::Boolean(raw.iter().any(|&b| b != 0))
            } else {
                Value::Bytes(Cow::Owned(raw))
            }
        }
        D::Address { kind, .. } => {
            let V::Bytes(bytes) = value else {
                return Err(format!("expected an address, got {value:?}"));
            };
            let text = String::from_utf8_lossy(bytes);
            // Printed the way the row-image decoder prints it.
            let normalized = match kind {
                crate::decoder::AddressKind::Uuid => text.to_ascii_lowercase(),
                crate::decoder::AddressKind::Inet6 => text
                    .parse::<std::net::Ipv6Addr>()
                    .map(|a| a.to_string())
                    .unwrap_or_else(|_| text.into_owned()),
                crate::decoder::AddressKind::Inet4 => text
                    .parse::<std::net::Ipv4Addr>()
                    .map(|a| a.to_string())
                    .unwrap_or_else(|_| text.into_owned()),
            };
            Value::Text(Cow::Owned(normalized))
        }
    })
}

/// A DATE/DATETIME/TIMESTAMP value; `None` for the zero date.
fn civil(value: &mysql_async::Value) -> Result<Option<CivilTime>, String> {
    match value {
        mysql_async::Value::Date(y, mo, d, h, mi, s, us) => Ok(Some(CivilTime {
            year: u32::from(*y),
            month: u32::from(*mo),
            day: u32::from(*d),
            hour: u32::from(*h),
            minute: u32::from(*mi),
            second: u32::from(*s),
            micros: *us,
        })),
        mysql_async::Value::Bytes(b) if b.is_empty() => Ok(None),
        other => Err(format!("expected a date, got {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_labels_are_read_with_their_quotes_undone() {
        assert_eq!(
            parse_labels("enum('a','it''s','x,y')"),
            ["a", "it's", "x,y"]
        );
        assert!(parse_labels("int(11)").is_empty());
    }

    #[test]
    fn char_lengths_round_trip_through_the_packed_metadata() {
        for n in [1u64, 16, 255, 256, 600, 1020] {
            let spec = BinlogSpec::of("char", "char(10)", n, 0, 0, 0).unwrap();
            let (b0, b1) = (spec.meta[0], spec.meta[1]);
            let decoded = ((u16::from(b0 & 0x30) ^ 0x30) << 4) | u16::from(b1);
            assert_eq!(u64::from(decoded), n);
        }
    }

    #[test]
    fn binary_protocol_values_match_row_image_values() {
        use mysql_async::Value as V;
        assert_eq!(
            convert(&ColumnDecoder::Date, &V::Date(0, 0, 0, 0, 0, 0, 0)).unwrap(),
            Value::Null
        );
        assert_eq!(
            convert(
                &ColumnDecoder::Time2 { fsp: 0 },
                &V::Time(true, 34, 22, 59, 59, 0)
            )
            .unwrap(),
            Value::Micros(-((838 * 3600 + 59 * 60 + 59) * 1_000_000))
        );
        assert_eq!(
            convert(
                &ColumnDecoder::Long { unsigned: true },
                &V::UInt(4_000_000_000)
            )
            .unwrap(),
            Value::Long(4_000_000_000)
        );
        assert_eq!(
            convert(
                &ColumnDecoder::Bit {
                    bytes: 1,
                    boolean: true
                },
                &V::Bytes(vec![1])
            )
            .unwrap(),
            Value::Boolean(true)
        );
        assert!(matches!(
            param(KeyParam::Signed, &KeyPart::Text("-5".into())),
            V::Int(-5)
        ));
    }
}

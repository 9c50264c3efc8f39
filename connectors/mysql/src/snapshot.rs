//! Reads snapshot chunks over an ordinary SQL connection: the table's schema from
//! `information_schema` (mapped through the same code as TABLE_MAP events, so both paths give
//! one schema), rows in primary-key order after the last key copied, and the binlog position
//! after the read as the chunk's high watermark.

use crate::decoder::{ColumnDecoder, Text};
use crate::sql_values::{
    convert, key_param, key_part, param, parse_labels, placeholder, BinlogSpec, KeyParam,
};
use crate::table::{
    apply_hint, column_layout, may_be_zero_date, text_kind_of_charset, ColumnHints, TypeHint,
};
use async_trait::async_trait;
use headwater_contract::avro::{RowEncoder, Value};
use headwater_contract::backfill::{
    check_saved_key, chunk_select, ChunkOutcome, ChunkRead, ChunkRequest, ChunkRow, ChunkRows,
    ReadChunk, Watermark,
};
use headwater_contract::{
    BinlogPosition, Column, ColumnPlan, ConnectorError, Position, TableFilter, TableId,
    TableSchema, CONNECT_TIMEOUT,
};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use std::sync::Arc;

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

/// The connection snapshot chunks are read on. Moved into a task per chunk and handed back.
pub struct ChunkReader {
    conn: Conn,
    url: String,
    server_id: u32,
    /// `watermarks = "signal_table"`: the table written after each chunk.
    signal_table: Option<TableId>,
    /// The captured tables and which of their columns records carry.
    filter: TableFilter,
}

fn sql_error(what: &str, url: &str, server_id: u32, err: mysql_async::Error) -> ConnectorError {
    crate::error::classify(err, what, url, server_id)
}

fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

struct Described {
    /// The table as the server has it: what the SELECT reads.
    schema: TableSchema,
    decoders: Vec<ColumnDecoder>,
    /// What the records carry of it (`source.columns`); `None` when all of it.
    plan: Option<ColumnPlan>,
}

impl Described {
    /// The columns the records carry.
    fn output(&self) -> &TableSchema {
        self.plan.as_ref().map_or(&self.schema, ColumnPlan::output)
    }
}

impl ChunkReader {
    pub async fn connect(
        opts: mysql_async::Opts,
        url: &str,
        server_id: u32,
        signal_table: Option<TableId>,
        filter: TableFilter,
    ) -> Result<Self, ConnectorError> {
        let mut conn = match tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(opts)).await {
            Ok(conn) => {
                conn.map_err(|e| sql_error("connecting for the snapshot", url, server_id, e))?
            }
            Err(_) => {
                return Err(ConnectorError::connect_timed_out(
                    "connecting for the snapshot",
                    &headwater_contract::redact_url(url),
                ))
            }
        };
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
            filter,
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
        let mut hints = self.json_check_hints(table).await;
        let mut columns = Vec::with_capacity(rows.len());
        let mut decoders = Vec::with_capacity(rows.len());
        for row in rows {
            let (column, decoder) = describe_column(table, row, &mut hints)?;
            columns.push(column);
            decoders.push(decoder);
        }
        let primary_key: Vec<usize> = key_names
            .iter()
            .filter_map(|k| {
                let k = String::from_utf8_lossy(k);
                columns.iter().position(|c| c.name == k)
            })
            .collect();
        let schema = TableSchema {
            id: table.clone(),
            version: 0,
            columns,
            primary_key,
        };
        Ok(Some(Described {
            plan: self.filter.column_plan(&schema)?,
            schema,
            decoders,
        }))
    }

    /// The table's layout as the server describes it now (version 0: the caller numbers it);
    /// `None` when it does not exist.
    pub async fn table_schema(
        &mut self,
        table: &TableId,
    ) -> Result<Option<TableSchema>, ConnectorError> {
        Ok(self
            .describe(table)
            .await?
            .map(|described| described.output().clone()))
    }

    /// MariaDB's JSON columns are LONGTEXT with a `json_valid` check: hints naming them JSON.
    async fn json_check_hints(&mut self, table: &TableId) -> ColumnHints {
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
        hints
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

    /// The table's estimated row count, for progress reports.
    async fn estimate_rows(&mut self, table: &TableId) -> Result<Option<u64>, ConnectorError> {
        let estimate: Option<Option<u64>> = self
            .conn
            .exec_first(
                "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (&table.namespace, &table.table),
            )
            .await
            .map_err(self.error("estimating the table's rows"))?;
        Ok(estimate.flatten())
    }

    /// Writes the next watermark into the signal table, or reads the binlog end, after a
    /// chunk's SELECT.
    async fn take_watermark(&mut self) -> Result<Watermark, ConnectorError> {
        let Some(signal) = self.signal_table.clone() else {
            return Ok(Watermark::Position(Position::Mysql(
                self.binlog_end().await?,
            )));
        };
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
        Ok(Watermark::Signal(mark))
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

/// One row of `information_schema.COLUMNS`: name, data type, column type, nullable, octet
/// length, numeric precision and scale, datetime precision, character set.
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

/// A column as `information_schema` describes it, mapped through the same layout as a
/// TABLE_MAP event's column, so both paths give one schema.
fn describe_column(
    table: &TableId,
    (name, data_type, column_type, nullable, octets, precision, scale, fsp, charset): ColumnRow,
    hints: &mut ColumnHints,
) -> Result<(Column, ColumnDecoder), ConnectorError> {
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
    Ok((
        Column {
            name,
            field_type,
            nullable,
            sql_type,
        },
        decoder,
    ))
}

#[async_trait]
impl ChunkRead for ChunkReader {
    /// Reads the chunk `request` asks for, then the binlog end as its high watermark.
    async fn read(&mut self, request: &ChunkRequest) -> Result<ChunkOutcome, ConnectorError> {
        let table = &request.table;
        let Some(described) = self.describe(table).await? else {
            return Ok(ChunkOutcome::Skip("the table no longer exists".into()));
        };
        if described.schema.primary_key.is_empty() {
            return Ok(ChunkOutcome::Skip(
                "it has no primary key, so it cannot be copied in chunks next to the stream (add a primary key, or copy it by other means)".into(),
            ));
        }
        let rows_estimate = if request.estimate_rows {
            self.estimate_rows(table).await?
        } else {
            None
        };
        let (sql, params) = chunk_query(&described.schema, &described.decoders, request)?;
        let raw_rows: Vec<mysql_async::Row> = self
            .conn
            .exec(sql, params)
            .await
            .map_err(self.error("reading a snapshot chunk"))?;
        let exhausted = raw_rows.len() < request.limit;
        let rows = encode_rows(table, &described, raw_rows)?;
        let watermark = self.take_watermark().await?;
        Ok(ChunkOutcome::Rows(Box::new(ReadChunk {
            last_key: rows.last().map(|row| row.resume_key.clone()),
            schema: described.output().clone(),
            rows: ChunkRows::Ready(rows),
            exhausted,
            rows_estimate,
            watermark,
        })))
    }
}

/// The chunk's SELECT: rows after the last key copied (and matching the backfill's condition),
/// in key order, at most `limit`.
fn chunk_query(
    schema: &TableSchema,
    decoders: &[ColumnDecoder],
    request: &ChunkRequest,
) -> Result<(String, Vec<mysql_async::Value>), ConnectorError> {
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
    let mut params: Vec<mysql_async::Value> = Vec::new();
    let after = match &request.after {
        None => None,
        Some(after) => {
            check_saved_key(&request.table, after, key_names.len())?;
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
            Some(format!("({})", alternatives.join(" OR ")))
        }
    };
    let sql = chunk_select(
        &select_list,
        &quote_table(&request.table),
        &key_names,
        after,
        request,
    );
    Ok((sql, params))
}

/// Encodes the rows a chunk's SELECT returned as the records carry them.
fn encode_rows(
    table: &TableId,
    described: &Described,
    raw_rows: Vec<mysql_async::Row>,
) -> Result<Vec<ChunkRow>, ConnectorError> {
    let (schema, decoders) = (&described.schema, &described.decoders);
    let output = described.output();
    let mut rows = Vec::with_capacity(raw_rows.len());
    let mut values: Vec<Value<'static>> = Vec::with_capacity(decoders.len());
    for row in raw_rows {
        let raw: Vec<mysql_async::Value> = row
            .unwrap_raw()
            .into_iter()
            .map(|v| v.unwrap_or(mysql_async::Value::NULL))
            .collect();
        values.clear();
        for ((value, decoder), column) in raw.iter().zip(decoders).zip(&schema.columns) {
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
        if let Some(plan) = &described.plan {
            plan.apply(&mut values);
        }
        let key = RowEncoder::key_bytes(output, &values)?.unwrap_or_default();
        let after = RowEncoder::row_bytes(output, &values)?;
        rows.push(ChunkRow {
            key,
            after,
            resume_key,
        });
    }
    Ok(rows)
}

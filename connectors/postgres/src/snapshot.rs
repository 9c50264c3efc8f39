//! Reads snapshot chunks over an ordinary SQL connection: the table described the way its
//! pgoutput Relation message would be (so both paths give one schema), rows in key order after
//! the last key copied, as text in the walsender's formats, then a logical message as the
//! chunk's high watermark.

use crate::catalog::{self, sql_error};
use crate::config::UnknownTypes;
use crate::pgoutput::{Relation, RelationColumn};
use crate::protocol::SESSION_OPTIONS;
use crate::protocol::{ConnectParams, ProtocolError, ReplicationConnection};
use crate::types::PgType;
use async_trait::async_trait;
use headwater_contract::avro::{RowEncoder, Value};
use headwater_contract::backfill::{
    check_saved_key, chunk_select, ChunkOutcome, ChunkRead, ChunkRequest, ChunkRow, ChunkRows,
    KeyPart, ReadChunk, Watermark,
};
use headwater_contract::{ColumnPlan, ConnectorError, TableFilter, TableId, TableSchema};
use std::borrow::Cow;
use tokio_postgres::Client;

static WATERMARKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The start of this process's watermark contents for `slot`: `slot:pid:`.
pub fn watermark_prefix(slot: &str) -> String {
    format!("{slot}:{}:", std::process::id())
}

/// The prefix of watermark messages; their content names the slot and the chunk.
pub const WATERMARK_PREFIX: &str = "headwater.watermark";

/// Text formats pinned like the walsender's (see `SESSION_OPTIONS` in protocol.rs).
const SESSION: &str =
    "SET timezone = 'UTC'; SET datestyle = 'ISO'; SET intervalstyle = 'iso_8601'; \
     SET extra_float_digits = 3; SET bytea_output = 'hex'; SET standard_conforming_strings = on";

/// The connection snapshot chunks are read on. Moved into a task per chunk and handed back.
pub struct ChunkReader {
    client: Client,
    url: String,
    slot: String,
    unknown: UnknownTypes,
    /// The last table described, with the catalog fingerprint it was described at.
    described: Option<(TableId, String, Described)>,
    /// A session of our own protocol code for COPY (connected on first use).
    params: ConnectParams,
    copier: Option<ReplicationConnection>,
    /// The captured tables and which of their columns records carry.
    filter: TableFilter,
}

#[derive(Clone)]
struct Described {
    /// The table as the server has it: what COPY reads.
    schema: TableSchema,
    types: Vec<PgType>,
    /// `format_type` of each column, for casting saved key values back.
    type_names: Vec<String>,
    oid: u32,
    /// What the records carry of it (`source.columns`); `None` when all of it.
    plan: Option<ColumnPlan>,
}

/// Turns one line of COPY text output into an encoded chunk row.
pub struct RowConverter {
    table: TableId,
    schema: TableSchema,
    types: Vec<PgType>,
    keys: Vec<usize>,
    plan: Option<ColumnPlan>,
}

impl RowConverter {
    /// A converter for rows of `schema`, whose columns have `types` (without the synthetic
    /// unchanged-TOAST column), encoded as `plan` says; chunks resume after the primary key.
    pub fn new(schema: TableSchema, types: Vec<PgType>, plan: Option<ColumnPlan>) -> Self {
        RowConverter {
            table: schema.id.clone(),
            keys: schema.primary_key.clone(),
            schema,
            types,
            plan,
        }
    }

    /// One line of COPY text output (without its newline).
    pub fn convert(&self, line: &[u8]) -> Result<ChunkRow, ConnectorError> {
        let bad = |what: String| {
            ConnectorError::definite(format!(
                "table {}: {what} in the COPY output; report this",
                self.table
            ))
        };
        let mut fields = Vec::with_capacity(self.types.len());
        for field in line.split(|b| *b == b'\t') {
            fields.push(copy_field(field).map_err(|e| bad(e.to_string()))?);
        }
        if fields.len() != self.types.len() {
            return Err(bad(format!(
                "a row of {} columns where the table has {}",
                fields.len(),
                self.types.len()
            )));
        }
        let mut values: Vec<Value<'_>> = Vec::with_capacity(fields.len() + 1);
        for (index, (field, pg_type)) in fields.iter().zip(&self.types).enumerate() {
            values.push(match field {
                None => Value::Null,
                Some(text) => pg_type.parse(text).map_err(|e| {
                    ConnectorError::definite(format!(
                        "table {}, column {}: {e}; report this with the column's type",
                        self.table, self.schema.columns[index].name
                    ))
                })?,
            });
        }
        // the synthetic unchanged-TOAST column: a copy has every value
        values.push(Value::Null);
        let resume_key = self
            .keys
            .iter()
            .map(|&i| KeyPart::Text(fields[i].as_deref().unwrap_or_default().to_string()))
            .collect();
        let output = match &self.plan {
            Some(plan) => {
                plan.apply(&mut values);
                plan.output()
            }
            None => &self.schema,
        };
        Ok(ChunkRow {
            key: RowEncoder::key_bytes(output, &values)?.unwrap_or_default(),
            after: RowEncoder::row_bytes(output, &values)?,
            resume_key,
        })
    }
}

/// One field of COPY's text format: `\N` is NULL; backslash escapes are undone.
fn copy_field(raw: &[u8]) -> Result<Option<Cow<'_, str>>, std::str::Utf8Error> {
    if raw == b"\\N" {
        return Ok(None);
    }
    if !raw.contains(&b'\\') {
        return Ok(Some(Cow::Borrowed(std::str::from_utf8(raw)?)));
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter();
    while let Some(&b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'b') => out.push(0x08),
            Some(b'f') => out.push(0x0c),
            Some(b'n') => out.push(b'\n'),
            Some(b'r') => out.push(b'\r'),
            Some(b't') => out.push(b'\t'),
            Some(b'v') => out.push(0x0b),
            Some(&other) => out.push(other),
            None => out.push(b'\\'),
        }
    }
    match String::from_utf8(out) {
        Ok(text) => Ok(Some(Cow::Owned(text))),
        Err(err) => Err(err.utf8_error()),
    }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

impl ChunkReader {
    pub async fn connect(
        url: &str,
        params: &ConnectParams,
        slot: &str,
        unknown: UnknownTypes,
        filter: TableFilter,
    ) -> Result<Self, ConnectorError> {
        let client = catalog::connect(url, params.tls.as_ref()).await?;
        client
            .batch_execute(SESSION)
            .await
            .map_err(|e| sql_error("preparing the snapshot connection", url, e))?;
        Ok(ChunkReader {
            client,
            url: url.to_string(),
            slot: slot.to_string(),
            unknown,
            described: None,
            params: params.clone(),
            copier: None,
            filter,
        })
    }

    /// Every captured table (for an initial copy).
    pub async fn tables(&self, filter: &TableFilter) -> Result<Vec<TableId>, ConnectorError> {
        Ok(catalog::captured_tables(&self.client, &self.url, filter)
            .await?
            .into_iter()
            .map(|(namespace, table, _, _)| TableId { namespace, table })
            .collect())
    }

    /// The table's description, read again only when its columns or keys changed (one query
    /// per chunk instead of several).
    async fn describe_cached(
        &mut self,
        table: &TableId,
    ) -> Result<Option<Described>, ConnectorError> {
        let row = self
            .client
            .query_opt(
                "SELECT concat_ws('/', c.oid, c.relreplident::text,
                        (SELECT string_agg(a.attname || ' ' || a.atttypid || ' ' || a.atttypmod || ' ' || a.attgenerated::text, ',' ORDER BY a.attnum)
                         FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
                        (SELECT string_agg(i.indkey::text || ' ' || i.indisprimary || ' ' || i.indisreplident, ';' ORDER BY i.indexrelid)
                         FROM pg_index i WHERE i.indrelid = c.oid AND (i.indisprimary OR i.indisreplident)))
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
                &[&table.namespace, &table.table],
            )
            .await
            .map_err(|e| sql_error("checking the table's columns", &self.url, e))?;
        let Some(row) = row else {
            self.described = None;
            return Ok(None);
        };
        let fingerprint: String = row.get(0);
        if let Some((cached_table, cached_fingerprint, described)) = &self.described {
            if cached_table == table && *cached_fingerprint == fingerprint {
                return Ok(Some(described.clone()));
            }
        }
        let described = self.describe(table).await?;
        self.described = described.clone().map(|d| (table.clone(), fingerprint, d));
        Ok(described)
    }

    async fn describe(&self, table: &TableId) -> Result<Option<Described>, ConnectorError> {
        let found = self
            .client
            .query_opt(
                "SELECT c.oid::int8, c.relreplident::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = $1 AND c.relname = $2",
                &[&table.namespace, &table.table],
            )
            .await
            .map_err(|e| sql_error("finding the table", &self.url, e))?;
        let Some(found) = found else { return Ok(None) };
        let oid: i64 = found.get(0);
        let identity: String = found.get(1);
        let rows = self
            .client
            .query(
                "SELECT a.attname::text, a.atttypid::int8, a.atttypmod,
                        COALESCE(CASE c.relreplident WHEN 'f' THEN true
                                                     WHEN 'i' THEN a.attnum = ANY(ri.indkey)
                                                     WHEN 'd' THEN a.attnum = ANY(pk.indkey) END, false),
                        format_type(a.atttypid, a.atttypmod)
                 FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
                 LEFT JOIN pg_index ri ON ri.indrelid = c.oid AND ri.indisreplident
                 LEFT JOIN pg_index pk ON pk.indrelid = c.oid AND pk.indisprimary
                 WHERE a.attrelid = $1::int8::oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
                 ORDER BY a.attnum",
                &[&oid],
            )
            .await
            .map_err(|e| sql_error("reading the table's columns", &self.url, e))?;
        let mut type_names = Vec::with_capacity(rows.len());
        let relation = Relation {
            oid: oid as u32,
            namespace: table.namespace.clone(),
            name: table.table.clone(),
            replica_identity: identity.bytes().next().unwrap_or(b'd'),
            columns: rows
                .iter()
                .map(|r| {
                    type_names.push(r.get::<_, String>(4));
                    RelationColumn {
                        key: r.get(3),
                        name: r.get(0),
                        type_oid: r.get::<_, i64>(1) as u32,
                        type_modifier: r.get(2),
                    }
                })
                .collect(),
        };
        let (schema, types) =
            catalog::describe_relation(&self.client, &self.url, &relation, self.unknown).await?;
        Ok(Some(Described {
            plan: self.filter.column_plan(&schema)?,
            schema,
            types,
            type_names,
            oid: oid as u32,
        }))
    }

    /// The exact row count, or `None` when counting takes over five seconds.
    async fn count_rows(&self, table: &TableId) -> Option<u64> {
        let sql = format!(
            "BEGIN; SET LOCAL statement_timeout = '5s'; SELECT count(*) FROM {}.{}; COMMIT",
            quote_ident(&table.namespace),
            quote_ident(&table.table)
        );
        let counted = self.client.simple_query(&sql).await;
        if counted.is_err() {
            let _ = self.client.batch_execute("ROLLBACK").await;
        }
        counted.ok()?.iter().find_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0)?.parse().ok(),
            _ => None,
        })
    }

    /// Checks that `source.columns` can apply to `table`'s columns.
    pub async fn check_columns(&self, table: &TableId) -> Result<(), ConnectorError> {
        self.describe(table).await.map(|_| ())
    }

    /// Checks that `table` can be copied and `condition` is valid for it.
    pub async fn check(
        &self,
        table: &TableId,
        condition: Option<&str>,
    ) -> Result<(), ConnectorError> {
        let described = self.describe(table).await?.ok_or_else(|| {
            ConnectorError::definite(format!(
                "table {table} does not exist (or the role cannot see it); check the name (schema.table)"
            ))
        })?;
        if described.schema.primary_key.is_empty() {
            return Err(ConnectorError::definite(format!(
                "table {table} has no primary key or replica identity index, so it cannot be copied in chunks next to the stream; add a primary key"
            )));
        }
        if let Some(condition) = condition {
            let sql = format!(
                "SELECT 1 FROM {}.{} WHERE ({condition}) LIMIT 0",
                quote_ident(&table.namespace),
                quote_ident(&table.table)
            );
            self.client.simple_query(&sql).await.map_err(|e| {
                ConnectorError::definite(format!(
                    "the condition `{condition}` does not work on {table}: {}; give an SQL expression over its columns",
                    e.as_db_error().map_or_else(|| e.to_string(), |d| d.message().to_string())
                ))
            })?;
        }
        Ok(())
    }

    /// Runs `copy` on the COPY session and hands its rows on in blocks of whole lines.
    /// Returns the number of rows and the last row's line.
    async fn copy_into(
        &mut self,
        copy: &str,
        blocks: &tokio::sync::mpsc::Sender<bytes::Bytes>,
    ) -> Result<(usize, Option<bytes::Bytes>), ConnectorError> {
        let url = self.url.clone();
        let failed = |e: ProtocolError| match e {
            ProtocolError::Server(server) => ConnectorError::definite(format!(
                "reading a snapshot chunk: {server}; check the table and the backfill condition"
            )),
            other => ConnectorError::retryable(format!(
                "reading a snapshot chunk from {}: {other}",
                headwater_contract::redact_url(&url)
            )),
        };
        let copier = match &mut self.copier {
            Some(copier) => copier,
            None => self.copier.insert(
                ReplicationConnection::connect_sql(&self.params, SESSION_OPTIONS)
                    .await
                    .map_err(&failed)?,
            ),
        };
        if let Err(err) = copier.copy_out_start(copy).await {
            if !matches!(err, ProtocolError::Server(_)) {
                self.copier = None;
            }
            return Err(failed(err));
        }
        let mut pending = bytes::BytesMut::with_capacity(256 * 1024);
        let mut count = 0;
        let mut last_line = None;
        loop {
            let more = match copier.copy_out_next(&mut pending, 128 * 1024).await {
                Ok(more) => more,
                Err(err) => {
                    if !matches!(err, ProtocolError::Server(_)) {
                        self.copier = None;
                    }
                    return Err(failed(err));
                }
            };
            if let Some(last) = pending.iter().rposition(|b| *b == b'\n') {
                let block = pending.split_to(last + 1).freeze();
                count += block.iter().filter(|b| **b == b'\n').count();
                let start = block[..block.len() - 1]
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .map_or(0, |i| i + 1);
                last_line = Some(block.slice(start..block.len() - 1));
                if blocks.send(block).await.is_err() {
                    // the converter failed; drain the COPY so the session stays usable
                    while more
                        && copier
                            .copy_out_next(&mut pending, usize::MAX)
                            .await
                            .unwrap_or(false)
                    {}
                    return Ok((count, last_line));
                }
            }
            if !more {
                return Ok((count, last_line));
            }
        }
    }

    /// The table's estimated row count, for progress reports.
    async fn estimate_rows(
        &mut self,
        table: &TableId,
        oid: u32,
    ) -> Result<Option<u64>, ConnectorError> {
        let row = self
            .client
            .query_one(
                "SELECT GREATEST(c.reltuples::int8, COALESCE(s.n_live_tup, 0)) FROM pg_class c
                 LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid WHERE c.oid = $1::int8::oid",
                &[&i64::from(oid)],
            )
            .await
            .map_err(|e| sql_error("estimating the table's rows", &self.url, e))?;
        Ok(
            match u64::try_from(row.get::<_, i64>(0)).ok().filter(|n| *n > 0) {
                Some(estimate) => Some(estimate),
                // never analyzed (a fresh bulk load): count, unless that takes long
                None => self.count_rows(table).await,
            },
        )
    }

    /// Runs the chunk's query as a COPY, handing whole lines to a converter task on the other
    /// core while this one receives more: the rows (still being converted), how many lines
    /// came, and the last line (for its key).
    async fn copy_rows(
        &mut self,
        sql: &str,
        described: &Described,
        limit: usize,
    ) -> Result<(ChunkRows, usize, Option<bytes::Bytes>), ConnectorError> {
        // COPY streams the rows as the server produces them, so they are parsed while the
        // server is still reading; the text is the same output functions' as pgoutput's.
        let copy = format!("COPY ({sql}) TO STDOUT");
        let converter = RowConverter::new(
            described.schema.clone(),
            described.types.clone(),
            described.plan.clone(),
        );
        let (blocks, mut received) = tokio::sync::mpsc::channel::<bytes::Bytes>(16);
        let converting = tokio::spawn(async move {
            let mut rows = Vec::with_capacity(limit.min(100_000));
            while let Some(block) = received.recv().await {
                for line in block.split(|b| *b == b'\n') {
                    if !line.is_empty() {
                        rows.push(converter.convert(line)?);
                    }
                }
            }
            Ok::<_, ConnectorError>(rows)
        });
        let read = self.copy_into(&copy, &blocks).await;
        drop(blocks);
        match read {
            Ok((count, last_line)) => Ok((ChunkRows::Converting(converting), count, last_line)),
            Err(err) => {
                converting.abort();
                Err(err)
            }
        }
    }

    /// Writes the chunk's high watermark into the WAL as a logical message. Its content is
    /// unique across readers of this process, so a late watermark of a discarded chunk is
    /// never taken for a new one's.
    async fn write_watermark(&mut self) -> Result<Watermark, ConnectorError> {
        let number = WATERMARKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let watermark = format!("{}{number}", watermark_prefix(&self.slot));
        self.client
            .execute(
                "SELECT pg_logical_emit_message(true, $1, $2)",
                &[&WATERMARK_PREFIX, &watermark],
            )
            .await
            .map_err(|e| sql_error("writing a snapshot watermark", &self.url, e))?;
        Ok(Watermark::Signal(watermark))
    }
}

#[async_trait]
impl ChunkRead for ChunkReader {
    /// Reads the chunk `request` asks for, then writes its high watermark into the WAL.
    async fn read(&mut self, request: &ChunkRequest) -> Result<ChunkOutcome, ConnectorError> {
        let table = &request.table;
        let Some(described) = self.describe_cached(table).await? else {
            return Ok(ChunkOutcome::Skip("the table no longer exists".into()));
        };
        if described.schema.primary_key.is_empty() {
            return Ok(ChunkOutcome::Skip(
                "it has no primary key or replica identity index, so it cannot be copied in chunks next to the stream (add a primary key)".into(),
            ));
        }
        let rows_estimate = if request.estimate_rows {
            self.estimate_rows(table, described.oid).await?
        } else {
            None
        };
        let sql = chunk_query(&described, request)?;
        let (rows, count, last_line) = self.copy_rows(&sql, &described, request.limit).await?;
        let last_key = match last_line {
            Some(line) => Some(key_of_line(table, &described.schema.primary_key, &line)?),
            None => None,
        };
        // The read is complete, so its watermark can go into the WAL while the last rows are
        // still being converted.
        let watermark = self.write_watermark().await?;
        Ok(ChunkOutcome::Rows(Box::new(ReadChunk {
            schema: described
                .plan
                .map_or(described.schema, ColumnPlan::into_output),
            rows,
            last_key,
            exhausted: count < request.limit,
            rows_estimate,
            watermark,
        })))
    }
}

/// The chunk's SELECT: rows after the last key copied (and matching the backfill's
/// condition), in key order, at most `limit`.
fn chunk_query(described: &Described, request: &ChunkRequest) -> Result<String, ConnectorError> {
    let schema = &described.schema;
    let keys = &schema.primary_key;
    let key_names: Vec<String> = keys
        .iter()
        .map(|&i| quote_ident(&schema.columns[i].name))
        .collect();
    let after = match &request.after {
        None => None,
        Some(after) => {
            check_saved_key(&request.table, after, keys.len())?;
            let values: Vec<String> = keys
                .iter()
                .zip(after)
                .map(|(&i, part)| {
                    format!(
                        "{}::{}",
                        quote_literal(&String::from_utf8_lossy(&part.to_bytes())),
                        described.type_names[i]
                    )
                })
                .collect();
            Some(format!(
                "({}) > ({})",
                key_names.join(", "),
                values.join(", ")
            ))
        }
    };
    let select_list: Vec<String> = schema
        .columns
        .iter()
        .take(described.types.len())
        .map(|c| quote_ident(&c.name))
        .collect();
    let table = format!(
        "{}.{}",
        quote_ident(&request.table.namespace),
        quote_ident(&request.table.table)
    );
    Ok(chunk_select(
        &select_list,
        &table,
        &key_names,
        after,
        request,
    ))
}

/// The resume key of a COPY text line: its key columns' values.
fn key_of_line(
    table: &TableId,
    keys: &[usize],
    line: &[u8],
) -> Result<Vec<KeyPart>, ConnectorError> {
    let fields: Vec<&[u8]> = line.split(|b| *b == b'\t').collect();
    let mut key = Vec::with_capacity(keys.len());
    for &i in keys {
        let text = fields
            .get(i)
            .and_then(|f| copy_field(f).ok().flatten())
            .ok_or_else(|| {
                ConnectorError::definite(format!(
                    "table {table}: a key column without a value in the COPY output; report this"
                ))
            })?;
        key.push(KeyPart::Text(text.into_owned()));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::copy_field;

    #[test]
    fn copy_text_fields_are_unescaped() {
        assert_eq!(copy_field(b"\\N").unwrap(), None);
        assert_eq!(copy_field(b"plain").unwrap().as_deref(), Some("plain"));
        assert_eq!(
            copy_field(b"a\\tb\\nc\\\\d").unwrap().as_deref(),
            Some("a\tb\nc\\d")
        );
        assert_eq!(copy_field(b"\\\\N").unwrap().as_deref(), Some("\\N"));
    }
}

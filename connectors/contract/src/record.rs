//! Change records as sources produce them, and their encoding into the Debezium-style envelope.

use crate::avro::{
    put_bytes, put_long, put_optional_long, put_optional_str, put_str, put_union_branch,
};
use crate::position::Position;
use crate::schema::{schema_change_schema, ConnectorKind, TableId, TableSchema};
use std::sync::Arc;

/// What happened to a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Create,
    Update,
    Delete,
    /// A row read by a snapshot.
    Read,
    Truncate,
}

impl Op {
    /// The envelope's `op` letter.
    pub fn code(self) -> &'static str {
        match self {
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Read => "r",
            Op::Truncate => "t",
        }
    }
}

/// Whether a record comes from a snapshot, and where in it (`source.snapshot`), with the
/// values Debezium 3 gives them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SnapshotMarker {
    #[default]
    False,
    /// A copied row that is neither the first nor the last of its table.
    True,
    /// The first row of the snapshot's first table.
    First,
    /// The first row of a later table.
    FirstInDataCollection,
    /// The last row of a table other than the snapshot's last.
    LastInDataCollection,
    /// The snapshot's last row.
    Last,
    /// A row copied by a backfill asked for while streaming.
    Incremental,
}

impl SnapshotMarker {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotMarker::False => "false",
            SnapshotMarker::True => "true",
            SnapshotMarker::First => "first",
            SnapshotMarker::FirstInDataCollection => "first_in_data_collection",
            SnapshotMarker::LastInDataCollection => "last_in_data_collection",
            SnapshotMarker::Last => "last",
            SnapshotMarker::Incremental => "incremental",
        }
    }

    /// The marker of a snapshot row from where it lies: Debezium's precedence, where the
    /// snapshot's last row wins over a table's first (a one-row last table says `last`).
    pub fn for_snapshot_row(place: SnapshotRowPlace) -> Self {
        let SnapshotRowPlace {
            first_table,
            last_table,
            first_in_table,
            last_in_table,
        } = place;
        if last_in_table && last_table {
            SnapshotMarker::Last
        } else if first_in_table && first_table {
            SnapshotMarker::First
        } else if last_in_table {
            SnapshotMarker::LastInDataCollection
        } else if first_in_table {
            SnapshotMarker::FirstInDataCollection
        } else {
            SnapshotMarker::True
        }
    }
}

/// Where a copied row lies in its snapshot ([`SnapshotMarker::for_snapshot_row`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotRowPlace {
    pub first_table: bool,
    pub last_table: bool,
    pub first_in_table: bool,
    pub last_in_table: bool,
}

/// Which server a MySQL-protocol source reads: `source.connector` says `mysql` or `mariadb`,
/// as Debezium's two connectors do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MysqlFlavor {
    #[default]
    Mysql,
    Mariadb,
}

impl MysqlFlavor {
    pub fn connector_name(self) -> &'static str {
        match self {
            MysqlFlavor::Mysql => "mysql",
            MysqlFlavor::Mariadb => "mariadb",
        }
    }
}

/// The `source` block of a MySQL/MariaDB record (`schemas/source-mysql.avsc`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MysqlSourceInfo {
    /// Commit time on the source, microseconds since the epoch (the binlog has seconds).
    pub ts_us: i64,
    pub flavor: MysqlFlavor,
    pub snapshot: SnapshotMarker,
    pub db: Arc<str>,
    pub table: Option<Arc<str>>,
    pub server_id: u32,
    pub gtid: Option<Arc<str>>,
    pub file: Arc<str>,
    pub pos: u64,
    pub row: u32,
    /// The id of the connection that ran the transaction (its `BEGIN` query event).
    pub thread: Option<u32>,
}

/// The `source` block of a PostgreSQL record (`schemas/source-postgresql.avsc`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgSourceInfo {
    /// Commit time on the source, microseconds since the epoch.
    pub ts_us: i64,
    pub snapshot: SnapshotMarker,
    pub db: Arc<str>,
    pub schema: Arc<str>,
    pub table: Option<Arc<str>>,
    pub tx_id: Option<i64>,
    pub lsn: Option<i64>,
    /// The commit LSN of the transaction before this one, when the stream saw it: the first
    /// half of `source.sequence`.
    pub last_commit_lsn: Option<i64>,
}

/// Lineage: where in the source's log a record came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceInfo {
    Mysql(MysqlSourceInfo),
    Postgres(PgSourceInfo),
}

impl SourceInfo {
    /// When the change was committed in the source (microseconds since the epoch; 0 when
    /// unknown), or when a snapshot row was read.
    pub fn ts_us(&self) -> i64 {
        match self {
            SourceInfo::Mysql(s) => s.ts_us,
            SourceInfo::Postgres(s) => s.ts_us,
        }
    }

    /// [`Self::ts_us`] in milliseconds.
    pub fn ts_ms(&self) -> i64 {
        self.ts_us().div_euclid(1000)
    }

    /// The same block with its snapshot marker set to `marker`.
    pub fn with_snapshot(mut self, marker: SnapshotMarker) -> Self {
        match &mut self {
            SourceInfo::Mysql(s) => s.snapshot = marker,
            SourceInfo::Postgres(s) => s.snapshot = marker,
        }
        self
    }

    pub fn connector(&self) -> ConnectorKind {
        match self {
            SourceInfo::Mysql(_) => ConnectorKind::Mysql,
            SourceInfo::Postgres(_) => ConnectorKind::Postgres,
        }
    }

    /// Appends the block in the field order of its `.avsc` (Debezium 3's order).
    pub fn encode(&self, server_name: &str, buf: &mut Vec<u8>) {
        put_str(buf, env!("CARGO_PKG_VERSION"));
        match self {
            SourceInfo::Mysql(s) => {
                put_str(buf, s.flavor.connector_name());
                put_common(buf, server_name, s.ts_us, s.snapshot, &s.db, None);
                put_optional_str(buf, s.table.as_deref());
                put_long(buf, i64::from(s.server_id));
                put_optional_str(buf, s.gtid.as_deref());
                put_str(buf, &s.file);
                put_long(buf, s.pos as i64);
                put_long(buf, i64::from(s.row));
                put_optional_long(buf, s.thread.map(i64::from));
                put_optional_str(buf, None); // query
            }
            SourceInfo::Postgres(s) => {
                put_str(buf, self.connector().name());
                let mut sequence = [0u8; SEQUENCE_MAX];
                let sequence = pg_sequence(s.last_commit_lsn, s.lsn, &mut sequence);
                put_common(buf, server_name, s.ts_us, s.snapshot, &s.db, Some(sequence));
                put_str(buf, &s.schema);
                put_optional_str(buf, s.table.as_deref());
                put_optional_long(buf, s.tx_id);
                put_optional_long(buf, s.lsn);
                put_optional_long(buf, None); // xmin
            }
        }
    }
}

/// The fields every `source` block shares after `connector`: `name`, `ts_ms`, `snapshot`, `db`,
/// `sequence`, `ts_us`, `ts_ns`.
fn put_common(
    buf: &mut Vec<u8>,
    server_name: &str,
    ts_us: i64,
    snapshot: SnapshotMarker,
    db: &str,
    sequence: Option<&[u8]>,
) {
    put_str(buf, server_name);
    put_long(buf, ts_us.div_euclid(1000));
    put_str(buf, snapshot.as_str());
    put_str(buf, db);
    match sequence {
        None => put_union_branch(buf, 0),
        Some(text) => {
            put_union_branch(buf, 1);
            put_bytes(buf, text);
        }
    }
    put_optional_long(buf, Some(ts_us));
    put_optional_long(buf, Some(ts_us.saturating_mul(1000)));
}

/// PostgreSQL's `source.sequence` as Debezium writes it: a JSON array of the last commit LSN and
/// the change's LSN, each a decimal string or null, so consumers can order and deduplicate.
/// Written into `out`, no allocation per record: `SEQUENCE_MAX` holds two quoted `i64::MIN`s.
fn pg_sequence(
    last_commit_lsn: Option<i64>,
    lsn: Option<i64>,
    out: &mut [u8; SEQUENCE_MAX],
) -> &[u8] {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut out[..]);
    // the buffer fits the longest text, so the writes cannot fail
    let _ = match (last_commit_lsn, lsn) {
        (Some(last), Some(lsn)) => write!(cursor, "[\"{last}\",\"{lsn}\"]"),
        (None, Some(lsn)) => write!(cursor, "[null,\"{lsn}\"]"),
        (Some(last), None) => write!(cursor, "[\"{last}\",null]"),
        (None, None) => write!(cursor, "[null,null]"),
    };
    let len = cursor.position() as usize;
    &out[..len]
}

const SEQUENCE_MAX: usize = 48;

/// The transaction a change belongs to and its place in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionInfo {
    pub id: Arc<str>,
    /// 1-based index of the change in its transaction.
    pub total_order: u64,
    /// 1-based index of the change among the transaction's changes to the same table.
    pub data_collection_order: u64,
}

/// One changed row, with its images already Avro-encoded against `table`'s row schema.
#[derive(Clone, Debug)]
pub struct ChangeRecord {
    pub table: Arc<TableSchema>,
    pub op: Op,
    /// The key record, `None` when the table has no primary key.
    pub key: Option<Vec<u8>>,
    pub before: Option<Vec<u8>>,
    pub after: Option<Vec<u8>>,
    pub source: SourceInfo,
    pub transaction: Option<TransactionInfo>,
    /// The position just after this change: resuming there skips it.
    pub position: Position,
}

/// A DDL statement seen in the log.
#[derive(Clone, Debug)]
pub struct SchemaChangeRecord {
    pub database: String,
    pub table: Option<TableId>,
    pub ddl: String,
    pub source: SourceInfo,
    pub position: Position,
}

/// What a source sends down the pipeline.
#[derive(Clone, Debug)]
pub enum SourceEvent {
    Change(ChangeRecord),
    SchemaChange(SchemaChangeRecord),
    /// The source has moved past log entries that produce no records (other tables, commits,
    /// heartbeats). Sending it lets the checkpoint advance on a quiet or filtered stream.
    Progress(Position),
}

impl SourceEvent {
    pub fn position(&self) -> &Position {
        match self {
            SourceEvent::Change(c) => &c.position,
            SourceEvent::SchemaChange(s) => &s.position,
            SourceEvent::Progress(p) => p,
        }
    }

    pub fn position_mut(&mut self) -> &mut Position {
        match self {
            SourceEvent::Change(c) => &mut c.position,
            SourceEvent::SchemaChange(s) => &mut s.position,
            SourceEvent::Progress(p) => p,
        }
    }
}

/// Appends the envelope (`before`, `after`, `source`, `op`, `ts_ms`, `ts_us`, `ts_ns`,
/// `transaction`) of `record`. `ts_us` is when Headwater processed it.
pub fn encode_envelope(record: &ChangeRecord, server_name: &str, ts_us: i64, buf: &mut Vec<u8>) {
    for image in [&record.before, &record.after] {
        match image {
            None => put_union_branch(buf, 0),
            Some(bytes) => {
                put_union_branch(buf, 1);
                buf.extend_from_slice(bytes);
            }
        }
    }
    record.source.encode(server_name, buf);
    put_str(buf, record.op.code());
    put_optional_long(buf, Some(ts_us.div_euclid(1000)));
    put_optional_long(buf, Some(ts_us));
    put_optional_long(buf, Some(ts_us.saturating_mul(1000)));
    match &record.transaction {
        None => put_union_branch(buf, 0),
        Some(tx) => {
            put_union_branch(buf, 1);
            put_str(buf, &tx.id);
            put_long(buf, tx.total_order as i64);
            put_long(buf, tx.data_collection_order as i64);
        }
    }
}

/// Appends a schema-change record (see [`schema_change_schema`]).
pub fn encode_schema_change(
    record: &SchemaChangeRecord,
    server_name: &str,
    ts_us: i64,
    buf: &mut Vec<u8>,
) {
    record.source.encode(server_name, buf);
    put_long(buf, ts_us.div_euclid(1000));
    put_str(buf, &record.database);
    put_optional_str(buf, record.table.as_ref().map(|t| t.table.as_str()));
    put_str(buf, &record.ddl);
}

/// What a stream carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StreamKind {
    /// The changes of one table version.
    #[default]
    Table,
    /// DDL records.
    SchemaChanges,
    /// Transaction BEGIN/END records (`pipeline.transaction_events`).
    Transactions,
}

/// A destination stream of records sharing one key and one value schema: one table version,
/// the schema-change stream or the transaction stream. Sinks name their topics and
/// directories from it.
#[derive(Debug)]
pub struct StreamSchema {
    pub kind: StreamKind,
    /// Logical server name from the config.
    pub server_name: String,
    /// `None` for the schema-change stream.
    pub table: Option<TableId>,
    /// The table's schema version (0 for the schema-change stream).
    pub version: u32,
    /// The table version's columns, for sinks that write typed values (`None` for the
    /// schema-change stream).
    pub table_schema: Option<Arc<TableSchema>>,
    /// The connector whose `source` block the envelope carries.
    pub connector: ConnectorKind,
    pub key_schema: Option<String>,
    pub value_schema: String,
}

impl StreamSchema {
    pub fn for_table(
        server_name: &str,
        table: &Arc<TableSchema>,
        connector: ConnectorKind,
    ) -> Self {
        StreamSchema {
            kind: StreamKind::Table,
            server_name: server_name.to_string(),
            table: Some(table.id.clone()),
            version: table.version,
            table_schema: Some(Arc::clone(table)),
            connector,
            key_schema: table.key_schema(server_name).map(|s| s.to_string()),
            value_schema: table.envelope_schema(server_name, connector).to_string(),
        }
    }

    pub fn for_schema_changes(server_name: &str, connector: ConnectorKind) -> Self {
        StreamSchema {
            kind: StreamKind::SchemaChanges,
            server_name: server_name.to_string(),
            table: None,
            version: 0,
            table_schema: None,
            connector,
            key_schema: None,
            value_schema: schema_change_schema(server_name, connector).to_string(),
        }
    }

    pub fn for_transactions(server_name: &str, connector: ConnectorKind) -> Self {
        StreamSchema {
            kind: StreamKind::Transactions,
            server_name: server_name.to_string(),
            table: None,
            version: 0,
            table_schema: None,
            connector,
            key_schema: Some(crate::transactions::key_schema(server_name).to_string()),
            value_schema: crate::transactions::value_schema(server_name).to_string(),
        }
    }

    /// `<server>.<namespace>.<table>`, `<server>.schema_changes` or `<server>.transaction`.
    pub fn default_name(&self) -> String {
        match (&self.table, self.kind) {
            (Some(t), _) => format!("{}.{}.{}", self.server_name, t.namespace, t.table),
            (None, StreamKind::Transactions) => format!("{}.transaction", self.server_name),
            (None, _) => format!("{}.schema_changes", self.server_name),
        }
    }
}

/// An encoded record handed to a sink, numbered by the runtime in source order.
#[derive(Debug)]
pub struct SinkRecord {
    /// Sequence number in source order; acknowledgements refer to it.
    pub seq: u64,
    pub stream: Arc<StreamSchema>,
    pub op: Option<Op>,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub position: Position,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_sequence_is_debeziums_json_array_and_fits_the_widest_values() {
        let mut out = [0u8; SEQUENCE_MAX];
        assert_eq!(pg_sequence(Some(10), Some(22), &mut out), br#"["10","22"]"#);
        assert_eq!(pg_sequence(None, Some(22), &mut out), br#"[null,"22"]"#);
        assert_eq!(pg_sequence(None, None, &mut out), b"[null,null]");
        let widest = format!("[\"{}\",\"{}\"]", i64::MIN, i64::MIN);
        assert_eq!(
            pg_sequence(Some(i64::MIN), Some(i64::MIN), &mut out),
            widest.as_bytes()
        );
    }
}

//! Reads back the parts of an encoded change envelope ([`crate::record::encode_envelope`]) that
//! sinks writing typed tables need: the row images, when the source committed the change, and
//! its transaction — without decoding the values.

use crate::avro_scan::AvroReader;
use crate::schema::{ConnectorKind, TableSchema};

/// The parts of one encoded envelope, borrowed from its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvelopeView<'a> {
    /// The row image before the change, Avro-encoded against the table's row schema.
    pub before: Option<&'a [u8]>,
    pub after: Option<&'a [u8]>,
    /// When the source committed the change (`source.ts_ms`), or read a snapshot row.
    pub source_ts_ms: i64,
    /// The transaction id (`transaction.id`), when the source has one.
    pub transaction_id: Option<&'a str>,
}

/// The envelope does not follow the table's schema: an internal defect, never data from outside
/// (the runtime encoded it).
#[derive(Debug, thiserror::Error)]
#[error("a change envelope for {table} does not follow its schema (version {version})")]
pub struct MalformedEnvelope {
    pub table: String,
    pub version: u32,
}

impl<'a> EnvelopeView<'a> {
    pub fn parse(
        bytes: &'a [u8],
        table: &TableSchema,
        connector: ConnectorKind,
    ) -> Result<Self, MalformedEnvelope> {
        Self::read(bytes, table, connector).ok_or_else(|| MalformedEnvelope {
            table: table.id.to_string(),
            version: table.version,
        })
    }

    fn read(bytes: &'a [u8], table: &TableSchema, connector: ConnectorKind) -> Option<Self> {
        let mut reader = AvroReader::new(bytes);
        let before = Self::image(&mut reader, table)?;
        let after = Self::image(&mut reader, table)?;
        let source_ts_ms = read_source(&mut reader, connector)?;
        reader.bytes()?; // op
        for _ in 0..3 {
            skip_optional_long(&mut reader)?; // ts_ms, ts_us, ts_ns
        }
        let transaction_id = if reader.optional()? {
            let id = reader.str()?;
            reader.long()?;
            reader.long()?;
            Some(id)
        } else {
            None
        };
        Some(EnvelopeView {
            before,
            after,
            source_ts_ms,
            transaction_id,
        })
    }

    fn image(reader: &mut AvroReader<'a>, table: &TableSchema) -> Option<Option<&'a [u8]>> {
        if !reader.optional()? {
            return Some(None);
        }
        let rest = reader.rest();
        let start = reader.offset();
        reader.skip_row(table)?;
        Some(Some(&rest[..reader.offset() - start]))
    }
}

/// Reads past a `source` block, returning its `ts_ms`.
fn read_source(reader: &mut AvroReader<'_>, connector: ConnectorKind) -> Option<i64> {
    // version, connector, name, then ts_ms on both connectors
    for _ in 0..3 {
        reader.bytes()?;
    }
    let ts_ms = reader.long()?;
    reader.bytes()?; // snapshot
    reader.bytes()?; // db
    skip_optional_str(reader)?; // sequence
    skip_optional_long(reader)?; // ts_us
    skip_optional_long(reader)?; // ts_ns
    match connector {
        ConnectorKind::Mysql => {
            skip_optional_str(reader)?; // table
            reader.long()?; // server_id
            skip_optional_str(reader)?; // gtid
            reader.bytes()?; // file
            reader.long()?; // pos
            reader.long()?; // row
            skip_optional_long(reader)?; // thread
            skip_optional_str(reader)?; // query
        }
        ConnectorKind::Postgres => {
            reader.bytes()?; // schema
            skip_optional_str(reader)?; // table
            skip_optional_long(reader)?; // txId
            skip_optional_long(reader)?; // lsn
            skip_optional_long(reader)?; // xmin
        }
    }
    Some(ts_ms)
}

/// The parts of an encoded schema-change record ([`crate::record::encode_schema_change`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaChangeView<'a> {
    pub source_ts_ms: i64,
    pub database: &'a str,
    pub table: Option<&'a str>,
    pub ddl: &'a str,
}

impl<'a> SchemaChangeView<'a> {
    pub fn parse(bytes: &'a [u8], connector: ConnectorKind) -> Option<Self> {
        let mut reader = AvroReader::new(bytes);
        let source_ts_ms = read_source(&mut reader, connector)?;
        reader.long()?; // ts_ms
        let database = reader.str()?;
        let table = if reader.optional()? {
            Some(reader.str()?)
        } else {
            None
        };
        let ddl = reader.str()?;
        Some(SchemaChangeView {
            source_ts_ms,
            database,
            table,
            ddl,
        })
    }
}

fn skip_optional_str(reader: &mut AvroReader<'_>) -> Option<()> {
    if reader.optional()? {
        reader.bytes()?;
    }
    Some(())
}

fn skip_optional_long(reader: &mut AvroReader<'_>) -> Option<()> {
    if reader.optional()? {
        reader.long()?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::avro::{RowEncoder, Value};
    use crate::position::{Lsn, PgPosition, Position};
    use crate::record::{
        encode_envelope, ChangeRecord, MysqlFlavor, MysqlSourceInfo, Op, PgSourceInfo,
        SnapshotMarker, SourceInfo, TransactionInfo,
    };
    use crate::schema::{Column, FieldType, TableId};
    use std::sync::Arc;

    fn table() -> TableSchema {
        TableSchema {
            id: TableId {
                namespace: "db".into(),
                table: "t".into(),
            },
            version: 3,
            columns: vec![
                Column {
                    name: "id".into(),
                    field_type: FieldType::Long,
                    nullable: false,
                    sql_type: "bigint".into(),
                },
                Column {
                    name: "name".into(),
                    field_type: FieldType::String,
                    nullable: true,
                    sql_type: "text".into(),
                },
            ],
            primary_key: vec![0],
        }
    }

    fn change(table: &Arc<TableSchema>, source: SourceInfo) -> ChangeRecord {
        let before = RowEncoder::row_bytes(table, &[Value::Long(1), Value::Null]).unwrap();
        let after =
            RowEncoder::row_bytes(table, &[Value::Long(1), Value::Text("é".into())]).unwrap();
        ChangeRecord {
            table: Arc::clone(table),
            op: Op::Update,
            key: None,
            before: Some(before),
            after: Some(after),
            source,
            transaction: Some(TransactionInfo {
                id: "tx-9".into(),
                total_order: 2,
                data_collection_order: 1,
            }),
            position: Position::Postgres(PgPosition::at(Lsn(5), 0)),
        }
    }

    #[test]
    fn both_connectors_envelopes_give_back_their_images_time_and_transaction() {
        let table = Arc::new(table());
        let sources = [
            SourceInfo::Mysql(MysqlSourceInfo {
                ts_us: 1_700_000_000_123_456,
                flavor: MysqlFlavor::Mariadb,
                snapshot: SnapshotMarker::False,
                db: "db".into(),
                table: Some("t".into()),
                server_id: 1,
                gtid: Some("0-1-5".into()),
                file: "bin.000001".into(),
                pos: 99,
                row: 0,
                thread: Some(12),
            }),
            SourceInfo::Postgres(PgSourceInfo {
                ts_us: 1_700_000_000_123_456,
                snapshot: SnapshotMarker::Incremental,
                db: "db".into(),
                schema: "public".into(),
                table: None,
                tx_id: Some(77),
                lsn: Some(1234),
                last_commit_lsn: Some(1000),
            }),
        ];
        for source in sources {
            let connector = source.connector();
            let record = change(&table, source);
            let mut bytes = Vec::new();
            encode_envelope(&record, "srv", 42_000, &mut bytes);
            let view = EnvelopeView::parse(&bytes, &table, connector).unwrap();
            assert_eq!(view.before, record.before.as_deref());
            assert_eq!(view.after, record.after.as_deref());
            assert_eq!(view.source_ts_ms, 1_700_000_000_123);
            assert_eq!(view.transaction_id, Some("tx-9"));
            // a cut envelope is an error, not a panic
            for cut in 0..bytes.len() - 1 {
                let _ = EnvelopeView::parse(&bytes[..cut], &table, connector);
            }
        }
    }
}

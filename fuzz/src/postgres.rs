//! PostgreSQL: the replication connection's bytes (backend framing, CopyData, XLogData and
//! keepalives), pgoutput messages through `PgReader`, and COPY text rows of snapshots.

use bytes::BytesMut;
use headwater_contract::schema_history::SchemaHistory;
use headwater_contract::{Column, FieldType, Lsn, PgPosition, TableId, TableSchema};
use headwater_postgres::catalog::UNCHANGED_TOAST_COLUMN;
use headwater_postgres::pgoutput::{self, Message, Relation};
use headwater_postgres::protocol::{stream_message, take_incoming, Incoming, StreamMessage};
use headwater_postgres::snapshot::RowConverter;
use headwater_postgres::stream::{PgReader, RelationInfo, Step};
use headwater_postgres::types::{PgType, TextKind};
use postgres_protocol::message::backend;
use std::sync::Arc;

/// A relation's layout as the catalog would describe it: built-in types by OID (others as
/// text, as with `unknown_types = "text"`), the replica identity columns as the key.
fn describe(relation: &Relation) -> (TableSchema, Vec<PgType>) {
    let mut columns = Vec::with_capacity(relation.columns.len() + 1);
    let mut types = Vec::with_capacity(relation.columns.len());
    for column in &relation.columns {
        let pg_type = PgType::builtin(column.type_oid, column.type_modifier)
            .unwrap_or(PgType::Text(TextKind::Plain));
        columns.push(Column {
            name: column.name.clone(),
            field_type: pg_type.field_type(),
            nullable: !column.key,
            sql_type: format!("oid {}", column.type_oid),
        });
        types.push(pg_type);
    }
    columns.push(Column {
        name: UNCHANGED_TOAST_COLUMN.to_string(),
        field_type: FieldType::Array(Box::new(FieldType::String)),
        nullable: true,
        sql_type: "unchanged TOAST columns".into(),
    });
    let primary_key = relation
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.key)
        .map(|(i, _)| i)
        .collect();
    let schema = TableSchema {
        id: TableId {
            namespace: relation.namespace.clone(),
            table: relation.name.clone(),
        },
        version: 0,
        columns,
        primary_key,
    };
    (schema, types)
}

/// The source's loop for one replication message: relations are described and versioned,
/// everything else goes to the reader.
struct Replica {
    reader: PgReader,
    history: SchemaHistory,
    out: Vec<headwater_contract::SourceEvent>,
}

impl Replica {
    fn new(flags: u8) -> Self {
        let start = PgPosition::at(Lsn(0x1000), u64::from(flags & 3));
        let resume = (flags & 4 != 0).then(|| PgPosition::at(Lsn(0x2000), 2));
        Replica {
            reader: PgReader::new("db", start, resume, None),
            history: SchemaHistory::in_memory(),
            out: Vec::new(),
        }
    }

    /// `false` when the stream stops (an error, or the reader is done).
    fn xlog(&mut self, wal_start: u64, data: &[u8]) -> bool {
        let Ok(message) = pgoutput::parse(data) else {
            return false;
        };
        let step = match message {
            Message::Relation(relation) => {
                let (mut schema, types) = describe(&relation);
                let known = self.history.known_versions(&schema.id.to_string());
                let Ok(version) = self.history.version_of(&schema) else {
                    return false;
                };
                schema.version = version;
                let info = Arc::new(RelationInfo {
                    schema: Arc::new(schema),
                    types,
                    plan: None,
                });
                if info.schema.version > known && known > 0 {
                    self.reader.schema_change(&info, &mut self.out);
                }
                self.reader.set_relation(relation.oid, Some(info));
                Ok(Step::Continue)
            }
            other => self.reader.handle(other, wal_start, &mut self.out),
        };
        if self.out.len() > 4096 {
            self.out.clear();
        }
        let _ = self.reader.boundary();
        let _ = self.reader.position_in_transaction();
        matches!(step, Ok(Step::Continue))
    }

    fn keepalive(&mut self, wal_end: u64) -> bool {
        matches!(
            self.reader.keepalive(wal_end, &mut self.out),
            Step::Continue
        )
    }
}

/// pgoutput messages as the slot sends them: a flags byte, then messages, each a 2-byte LE
/// length and its bytes (length 0xFFFF: a keepalive, whose WAL end is the next 8 bytes).
pub fn pgoutput_stream(data: &[u8]) {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let mut replica = Replica::new(flags);
    let mut wal = 0x1000u64;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
        rest = &rest[2..];
        wal += 0x100;
        if len == 0xFFFF {
            let Some(end) = rest.get(..8) else { return };
            let mut wal_end = [0; 8];
            wal_end.copy_from_slice(end);
            rest = &rest[8..];
            if !replica.keepalive(u64::from_le_bytes(wal_end)) {
                return;
            }
            continue;
        }
        let (message, tail) = rest.split_at(len.min(rest.len()));
        rest = tail;
        if !replica.xlog(wal, message) {
            return;
        }
    }
}

/// The replication connection's bytes after `START_REPLICATION`, read in pieces as a socket
/// delivers them: the first byte sets the piece size. Every CopyData goes through the same
/// parsing as the stream's and on to the reader.
pub fn pg_protocol(data: &[u8]) {
    let Some((&piece, rest)) = data.split_first() else {
        return;
    };
    let piece = usize::from(piece).max(1);
    let mut replica = Replica::new(0);
    let mut buf = BytesMut::new();
    for chunk in rest.chunks(piece) {
        buf.extend_from_slice(chunk);
        loop {
            match take_incoming(&mut buf) {
                Ok(None) => break,
                Err(_) => return,
                Ok(Some(Incoming::CopyBothResponse)) => {}
                Ok(Some(Incoming::Message(backend::Message::CopyData(body)))) => {
                    match stream_message(body.into_bytes()) {
                        Err(_) => return,
                        Ok(None) => {}
                        Ok(Some(StreamMessage::Keepalive { wal_end, .. })) => {
                            if !replica.keepalive(wal_end) {
                                return;
                            }
                        }
                        Ok(Some(StreamMessage::XLogData {
                            wal_start, data, ..
                        })) => {
                            if !replica.xlog(wal_start, &data) {
                                return;
                            }
                        }
                    }
                }
                Ok(Some(Incoming::Message(_))) => {}
            }
        }
    }
}

/// Column types a snapshot's COPY rows are read as: every built-in the source maps.
const COPY_TYPES: [(u32, i32); 24] = [
    (16, -1),
    (17, -1),
    (21, -1),
    (23, -1),
    (20, -1),
    (700, -1),
    (701, -1),
    (1700, -1),
    (1700, (10 << 16 | 2) + 4),
    (25, -1),
    (114, -1),
    (3802, -1),
    (2950, -1),
    (1082, -1),
    (1083, -1),
    (1114, -1),
    (1184, -1),
    (1007, -1),
    (1009, -1),
    (1231, -1),
    (1185, -1),
    (1001, -1),
    (1000, -1),
    (1186, -1),
];

/// COPY text rows of a snapshot chunk: the first byte is the column count (1–8), the next
/// ones each column's type, the rest lines of COPY output.
pub fn pg_copy_rows(data: &[u8]) {
    let Some((&count, rest)) = data.split_first() else {
        return;
    };
    let count = usize::from(count % 8) + 1;
    if rest.len() < count {
        return;
    }
    let (picks, lines) = rest.split_at(count);
    let relation = Relation {
        oid: 1,
        namespace: "public".into(),
        name: "t".into(),
        replica_identity: b'd',
        columns: picks
            .iter()
            .enumerate()
            .map(|(i, &pick)| {
                let (type_oid, type_modifier) = COPY_TYPES[usize::from(pick) % COPY_TYPES.len()];
                pgoutput::RelationColumn {
                    key: i == 0,
                    name: format!("c{i}"),
                    type_oid,
                    type_modifier,
                }
            })
            .collect(),
    };
    let (schema, types) = describe(&relation);
    let converter = RowConverter::new(schema, types, None);
    for line in lines.split(|b| *b == b'\n') {
        if !line.is_empty() {
            let _ = converter.convert(line);
        }
    }
}

//! A MySQL 8 stream (which no server here can produce) fed as bytes built from the documented
//! event layouts: PREVIOUS_GTIDS, GTID, TABLE_MAP with FULL metadata, WRITE_ROWS v2, XID.
use super::*;
use mysql_common::binlog::consts::BinlogVersion;
use mysql_common::binlog::EventStreamReader;

const SID: [u8; 16] = [
    0x3e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42, 0x95, 0x62,
];

/// A v4 event: 19-byte header (timestamp, type, server id, size, next position, flags), body.
fn event(reader: &mut EventStreamReader, kind: u8, log_pos: u32, body: &[u8]) -> Event {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&1_700_000_000u32.to_le_bytes());
    bytes.push(kind);
    bytes.extend_from_slice(&7u32.to_le_bytes());
    bytes.extend_from_slice(&((19 + body.len()) as u32).to_le_bytes());
    bytes.extend_from_slice(&log_pos.to_le_bytes());
    bytes.extend_from_slice(&0u16.to_le_bytes());
    bytes.extend_from_slice(body);
    reader
        .read(&bytes[..])
        .expect("event parses")
        .expect("an event")
}

fn previous_gtids(through: u64) -> Vec<u8> {
    let mut body = 1u64.to_le_bytes().to_vec();
    body.extend_from_slice(&SID);
    body.extend_from_slice(&1u64.to_le_bytes());
    body.extend_from_slice(&1u64.to_le_bytes());
    body.extend_from_slice(&(through + 1).to_le_bytes());
    body
}

fn gtid(gno: u64) -> Vec<u8> {
    let mut body = vec![1u8]; // commit flag
    body.extend_from_slice(&SID);
    body.extend_from_slice(&gno.to_le_bytes());
    body.push(2); // logical timestamps follow
    body.extend_from_slice(&0u64.to_le_bytes());
    body.extend_from_slice(&1u64.to_le_bytes());
    body
}

/// A QUERY event's body: thread id, exec time, schema length, error code, no status vars, an
/// empty schema, the statement.
fn query(thread: u32, statement: &str) -> Vec<u8> {
    let mut body = thread.to_le_bytes().to_vec();
    body.extend_from_slice(&0u32.to_le_bytes());
    body.push(0);
    body.extend_from_slice(&0u16.to_le_bytes());
    body.extend_from_slice(&0u16.to_le_bytes());
    body.push(0);
    body.extend_from_slice(statement.as_bytes());
    body
}

fn table_map() -> Vec<u8> {
    let mut body = 42u64.to_le_bytes()[..6].to_vec(); // table id
    body.extend_from_slice(&1u16.to_le_bytes());
    body.push(4);
    body.extend_from_slice(b"shop\0");
    body.push(1);
    body.extend_from_slice(b"t\0");
    body.push(1); // one column
    body.push(3); // MYSQL_TYPE_LONG
    body.push(0); // no type metadata
    body.push(0); // null bitmap: NOT NULL
    body.extend_from_slice(&[1, 1, 0]); // SIGNEDNESS: signed
    body.extend_from_slice(&[4, 3, 2, b'i', b'd']); // COLUMN_NAME
    body.extend_from_slice(&[8, 1, 0]); // SIMPLE_PRIMARY_KEY: column 0
    body
}

fn write_rows(ids: &[i32]) -> Vec<u8> {
    let mut body = 42u64.to_le_bytes()[..6].to_vec();
    body.extend_from_slice(&1u16.to_le_bytes()); // STMT_END
    body.extend_from_slice(&2u16.to_le_bytes()); // no extra data
    body.push(1); // columns
    body.push(1); // columns present
    for id in ids {
        body.push(0); // null bitmap
        body.extend_from_slice(&id.to_le_bytes());
    }
    body
}

/// What a reader borrows: a filter capturing `shop.*`, collations, an in-memory history.
struct Fixture {
    filter: TableFilter,
    collations: Collations,
    history: SchemaHistory,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            filter: TableFilter::new(&["shop.*".to_string()], &[]).unwrap(),
            collations: Collations::default(),
            history: SchemaHistory::in_memory(),
        }
    }

    /// A reader from the start of `binlog.000001`, file/offset mode, no checksums.
    fn reader(&mut self) -> BinlogReader<'_> {
        let start = BinlogPosition {
            file: "binlog.000001".into(),
            pos: 4,
            gtid_set: Arc::default(),
            rows_done: 0,
            backfill: None,
        };
        BinlogReader::new(
            &self.filter,
            &self.collations,
            &mut self.history,
            start,
            false,
            None,
            false,
        )
    }
}

#[test]
fn a_mysql8_stream_tracks_gtids_and_positions() {
    let mut fixture = Fixture::new();
    let mut binlog = fixture.reader();
    let mut esr = EventStreamReader::new(BinlogVersion::Version4);
    let mut out = Vec::new();
    let prev = event(&mut esr, 35, 200, &previous_gtids(9));
    binlog.handle(&prev, &mut out).unwrap();
    let gtid_event = event(&mut esr, 33, 300, &gtid(10));
    binlog.handle(&gtid_event, &mut out).unwrap();
    let begin = event(&mut esr, 2, 338, &query(4242, "BEGIN"));
    binlog.handle(&begin, &mut out).unwrap();
    let tme = event(&mut esr, 19, 400, &table_map());
    binlog.handle(&tme, &mut out).unwrap();
    let rows = event(&mut esr, 30, 500, &write_rows(&[5, -6]));
    binlog.handle(&rows, &mut out).unwrap();
    let xid = event(&mut esr, 16, 531, &77u64.to_le_bytes());
    binlog.handle(&xid, &mut out).unwrap();

    let uuid = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
    let changes: Vec<&ChangeRecord> = out
        .iter()
        .filter_map(|e| match e {
            SourceEvent::Change(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(changes.len(), 2);
    let SourceInfo::Mysql(source) = &changes[1].source else {
        panic!("mysql source")
    };
    assert_eq!(source.gtid.as_deref(), Some(format!("{uuid}:10").as_str()));
    assert_eq!(source.thread, Some(4242), "the BEGIN event's connection");
    assert_eq!(source.flavor.connector_name(), "mysql");
    assert_eq!(source.ts_us, 1_700_000_000_000_000);
    assert_eq!(
        source.pos,
        300 - 19 - 42,
        "the transaction starts at its GTID event"
    );
    let Position::Mysql(inside) = &changes[1].position else {
        panic!()
    };
    assert_eq!(inside.rows_done, 2);
    assert_eq!(
        inside.gtid_set.to_string(),
        format!("{uuid}:1-9"),
        "before the transaction"
    );
    let Some(SourceEvent::Progress(Position::Mysql(after))) = out.last() else {
        panic!("progress after XID")
    };
    assert_eq!(after.gtid_set.to_string(), format!("{uuid}:1-10"));
    assert_eq!(after.pos, 531);
    assert_eq!(
        changes[0].key.as_deref(),
        Some(&[10u8][..]),
        "key of id 5 is zig-zag 10"
    );
}

/// Found by fuzzing (`binlog_rows`): a TABLE_MAP naming a primary key column past the last
/// column made the key encoder index out of bounds. It is a corrupt event: an error.
#[test]
fn a_primary_key_column_past_the_columns_is_an_error_not_a_panic() {
    let mut fixture = Fixture::new();
    let mut binlog = fixture.reader();
    let mut esr = EventStreamReader::new(BinlogVersion::Version4);
    let mut out = Vec::new();
    let mut corrupt = table_map();
    let last = corrupt.len() - 1;
    corrupt[last] = 58; // SIMPLE_PRIMARY_KEY: column 58 of 1
    binlog
        .handle(&event(&mut esr, 33, 300, &gtid(10)), &mut out)
        .unwrap();
    let tme = event(&mut esr, 19, 400, &corrupt);
    let outcome = binlog
        .handle(&tme, &mut out)
        .and_then(|_| binlog.handle(&event(&mut esr, 30, 500, &write_rows(&[5])), &mut out));
    let err = outcome.expect_err("a corrupt TABLE_MAP is an error");
    assert!(
        err.to_string().contains("primary key column 58"),
        "the error names the bad column: {err}"
    );
}

/// Found by fuzzing (`binlog_rows`): rows of a table with no columns take no bytes, so the
/// rows loop read the same place forever and grew its output until memory ran out.
#[test]
fn rows_of_a_table_without_columns_are_an_error_not_an_endless_loop() {
    let mut fixture = Fixture::new();
    let mut binlog = fixture.reader();
    let mut esr = EventStreamReader::new(BinlogVersion::Version4);
    let mut out = Vec::new();
    let mut no_columns = 42u64.to_le_bytes()[..6].to_vec();
    no_columns.extend_from_slice(&1u16.to_le_bytes());
    no_columns.extend_from_slice(b"\x04shop\x00\x01t\x00");
    no_columns.extend_from_slice(&[0, 0]); // no columns, no type metadata
    let mut rows = 42u64.to_le_bytes()[..6].to_vec();
    rows.extend_from_slice(&1u16.to_le_bytes());
    rows.extend_from_slice(&2u16.to_le_bytes());
    rows.extend_from_slice(&[0, 0xAA]); // no columns; one stray byte of "rows"
    binlog
        .handle(&event(&mut esr, 33, 300, &gtid(10)), &mut out)
        .unwrap();
    let outcome = binlog
        .handle(&event(&mut esr, 19, 400, &no_columns), &mut out)
        .and_then(|_| binlog.handle(&event(&mut esr, 30, 500, &rows), &mut out));
    let err = outcome.expect_err("rows that take no bytes are an error");
    assert!(err.to_string().contains("no bytes"), "{err}");
}

/// Found by fuzzing (`binlog_stream`): `mysql_common` panics parsing a TRANSACTION_PAYLOAD
/// event whose unknown field claims more bytes than the event has. A corrupt event is an
/// error naming where it is, not a crash of the process.
#[test]
fn an_event_the_parser_panics_on_is_an_error() {
    let mut fixture = Fixture::new();
    let mut binlog = fixture.reader();
    let mut esr = EventStreamReader::new(BinlogVersion::Version4);
    let mut out = Vec::new();
    // field type 99 (unknown), said to be 200 bytes long, in a body of 2
    let payload = event(&mut esr, 40, 300, &[99, 200]);
    let err = binlog
        .handle(&payload, &mut out)
        .expect_err("a corrupt event is an error");
    assert!(err.to_string().contains("could not be parsed"), "{err}");
}

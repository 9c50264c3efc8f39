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

#[test]
fn a_mysql8_stream_tracks_gtids_and_positions() {
    let filter = TableFilter::new(&["shop.*".to_string()], &[]).unwrap();
    let collations = Collations::default();
    let state_dir = std::env::temp_dir().join(format!("hw-mysql8-{}", std::process::id()));
    let mut history = SchemaHistory::open(&state_dir, "mysql-schema-history.json").unwrap();
    let start = BinlogPosition {
        file: "binlog.000001".into(),
        pos: 4,
        gtid_set: Arc::default(),
        rows_done: 0,
        backfill: None,
    };
    let mut binlog = BinlogReader::new(
        &filter,
        &collations,
        &mut history,
        start,
        false,
        None,
        false,
    );
    let mut esr = EventStreamReader::new(BinlogVersion::Version4);
    let mut out = Vec::new();
    let prev = event(&mut esr, 35, 200, &previous_gtids(9));
    binlog.handle(&prev, &mut out).unwrap();
    let gtid_event = event(&mut esr, 33, 300, &gtid(10));
    binlog.handle(&gtid_event, &mut out).unwrap();
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
    let _ = std::fs::remove_dir_all(state_dir);
}

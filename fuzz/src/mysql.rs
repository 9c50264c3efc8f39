//! MariaDB/MySQL: binlog events as the server frames them (one event per packet), read by
//! `mysql_common` as `mysql_async` does and handed to Headwater's `BinlogReader`.

use headwater_contract::schema_history::SchemaHistory;
use headwater_contract::{BinlogPosition, TableFilter, TableId};
use headwater_mysql::stream::{BinlogReader, Step};
use headwater_mysql::table::Collations;
use mysql_common::binlog::consts::BinlogVersion;
use mysql_common::binlog::EventStreamReader;
use std::sync::{Arc, OnceLock};

const HEADER_LEN: usize = 19;
/// Row-image events are padded to this length (see `binlog_rows`).
const SHORTEST_EVENT: usize = HEADER_LEN + 4 + 5;

/// `mysql_common` panics on many malformed events; the source catches those panics and stops
/// with an error (`read_event.rs` around the stream, `BinlogReader::handle` around parsing),
/// so here they are not crashes. Any other panic still aborts, as libFuzzer's hook does.
fn allow_parser_panics() {
    static HOOK: OnceLock<()> = OnceLock::new();
    HOOK.get_or_init(|| {
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_parser = info
                .location()
                .is_some_and(|at| at.file().contains("/mysql_common-"));
            if !in_parser {
                abort(info);
            }
        }));
    });
}

/// Runs `events` through a reader; `flags` choose GTID mode, checksums and a resume inside
/// the first transaction.
fn run<'a>(flags: u8, events: impl Iterator<Item = &'a [u8]>) {
    allow_parser_panics();
    // compiled once: building the globs per execution would be most of the work
    static FILTER: OnceLock<Option<TableFilter>> = OnceLock::new();
    let Some(filter) = FILTER
        .get_or_init(|| TableFilter::new(&["*.*".to_string()], &[]).ok())
        .as_ref()
    else {
        return;
    };
    let collations = Collations::default();
    let mut history = SchemaHistory::in_memory();
    let start = BinlogPosition {
        file: "mariadb-bin.000001".into(),
        pos: 4,
        gtid_set: Arc::default(),
        rows_done: u64::from(flags >> 2 & 3),
        backfill: None,
    };
    let mut reader = BinlogReader::new(
        filter,
        &collations,
        &mut history,
        start,
        flags & 1 != 0,
        None,
        flags & 2 != 0,
    );
    reader.watch_signals(TableId {
        namespace: "hw".into(),
        table: "signals".into(),
    });
    let mut stream = EventStreamReader::new(BinlogVersion::Version4);
    let mut out = Vec::new();
    for bytes in events {
        // as mysql_async reads each packet, with the source's catch around it
        let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| stream.read(bytes)));
        let Ok(Ok(Some(event))) = read else {
            return;
        };
        match reader.handle(&event, &mut out) {
            Ok(Step::Continue) => {}
            Ok(_) | Err(_) => return,
        }
        let _ = reader.boundary();
        let _ = reader.take_signals();
        if out.len() > 4096 {
            out.clear();
        }
    }
}

/// A binlog as the server sends it: the first byte holds flags, the rest is events, each as
/// long as its header says (a binlog file after its magic number is exactly this).
pub fn binlog_stream(data: &[u8]) {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let events = std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let declared = rest.get(9..13).map_or(rest.len(), |b| {
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize
        });
        let (event, tail) = rest.split_at(declared.clamp(1, rest.len()));
        rest = tail;
        Some(event)
    });
    run(flags, events);
}

/// One event: a v4 header (timestamp, type, server id, size, next position, flags), its body.
fn event(kind: u8, log_pos: u32, body: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER_LEN + body.len());
    bytes.extend_from_slice(&1_700_000_000u32.to_le_bytes());
    bytes.push(kind);
    bytes.extend_from_slice(&1u32.to_le_bytes());
    bytes.extend_from_slice(&((HEADER_LEN + body.len()) as u32).to_le_bytes());
    bytes.extend_from_slice(&log_pos.to_le_bytes());
    bytes.extend_from_slice(&0u16.to_le_bytes());
    bytes.extend_from_slice(body);
    bytes
}

/// The row events a TABLE_MAP can be followed by: WRITE/UPDATE/DELETE v1 and v2, and MySQL 8's
/// PARTIAL_UPDATE (JSON diffs).
const ROWS_EVENTS: [u8; 7] = [23, 24, 25, 30, 31, 32, 39];

/// Row images, structure-aware: the fuzzer writes a TABLE_MAP's columns, types, metadata and
/// optional metadata, and a rows event's body; the framing around them is always valid, so
/// every execution reaches the column decoders. Layout: kind selector (1), length of the
/// TABLE_MAP part (2, LE), the TABLE_MAP part, the rows part.
pub fn binlog_rows(data: &[u8]) {
    if data.len() < 3 {
        return;
    }
    let kind = ROWS_EVENTS[usize::from(data[0]) % ROWS_EVENTS.len()];
    let split = (usize::from(u16::from_le_bytes([data[1], data[2]]))).min(data.len() - 3);
    let (columns, rows) = data[3..].split_at(split);

    // MariaDB GTID: sequence 1, domain 0, flags 0, padded as the server pads it
    let mut gtid = 1u64.to_le_bytes().to_vec();
    gtid.extend_from_slice(&[0; 11]);

    let mut table_map = 42u64.to_le_bytes()[..6].to_vec();
    table_map.extend_from_slice(&1u16.to_le_bytes());
    table_map.extend_from_slice(b"\x01d\x00\x01t\x00");
    table_map.extend_from_slice(columns);

    let mut rows_body = 42u64.to_le_bytes()[..6].to_vec();
    rows_body.extend_from_slice(&1u16.to_le_bytes()); // STMT_END
    if kind >= 30 {
        rows_body.extend_from_slice(&2u16.to_le_bytes()); // no extra data
    }
    rows_body.extend_from_slice(rows);
    // padded so that the shortest-event rule above never drops it
    let pad = |mut body: Vec<u8>| {
        body.resize(body.len().max(SHORTEST_EVENT - HEADER_LEN), 0);
        body
    };
    let events = [
        event(162, 200, &pad(gtid)),
        event(19, 300, &pad(table_map)),
        event(kind, 400, &pad(rows_body)),
        event(16, 500, &pad(7u64.to_le_bytes().to_vec())),
    ];
    run(0, events.iter().map(Vec::as_slice));
}

//! The binlog event loop's state machine: tracks the file/offset, the GTID state and the open
//! transaction, and turns row events of captured tables into change records.

use crate::config::SYSTEM_DATABASES;
use crate::decoder::{ColumnDecoder, DecodeError};
use crate::gtid::{parse_gtid, parse_gtid_list};
use crate::guard::{panic_message, previous_gtids_fit, table_map_counts_fit};
use crate::statement::{qualified_databases, truncated_table};
use crate::table::{describe, Collations, ColumnHints, TableInfo};
use headwater_contract::avro::{RowEncoder, Value};
use headwater_contract::position::format_uuid;
use headwater_contract::schema_history::SchemaHistory;
use headwater_contract::ServerUuid;
use headwater_contract::{
    BinlogPosition, ChangeRecord, ConnectorError, GtidSet, MariadbGtid, MysqlFlavor, MysqlGtidSet,
    MysqlSourceInfo, Op, Position, SchemaChangeRecord, SnapshotMarker, SourceEvent, SourceInfo,
    TableFilter, TableId, TableSchema, TransactionInfo,
};
use mysql_common::binlog::events::{
    Event, EventData, PreviousGtidsEvent, QueryEvent, RowsEventData, TableMapEvent,
};
use std::collections::HashMap;
use std::sync::Arc;

const ROTATE_EVENT: u8 = 4;
const HEARTBEAT_EVENT: u8 = 27;
const MYSQL_PREVIOUS_GTIDS_EVENT: u8 = 35;
const MARIADB_GTID_EVENT: u8 = 162;
const MARIADB_GTID_LIST_EVENT: u8 = 163;
const MARIADB_COMPRESSED_FIRST: u8 = 165;
const MARIADB_COMPRESSED_LAST: u8 = 170;

/// What the caller does after an event.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Continue,
    /// The catch-up target is reached: send what was produced and stop.
    Done,
}

struct CachedTable {
    /// The TABLE_MAP body it was built from: identical bodies reuse the decoded layout.
    raw: Vec<u8>,
    /// `None` when the table is not captured.
    info: Option<Arc<TableInfo>>,
    /// The snapshot signal table: its rows are watermarks, not records.
    signal: bool,
}

struct Transaction {
    start_file: Arc<str>,
    start_pos: u64,
    state_before: Arc<GtidSet>,
    gtid: Option<TxnGtid>,
    gtid_text: Option<Arc<str>>,
    /// Records produced so far (also counts skipped ones, so positions stay comparable).
    records: u64,
    /// Records per table so far, keyed by the binlog's table id.
    per_table: HashMap<u64, u64>,
    ts_us: i64,
    server_id: u32,
    /// The connection that ran it, from its first query event.
    thread: Option<u32>,
}

/// The GTID of one transaction, in its server's flavour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnGtid {
    Mariadb(MariadbGtid),
    /// MySQL: server UUID and transaction number.
    Mysql(ServerUuid, u64),
}

impl TxnGtid {
    /// As the server prints it: `0-1-42` or `3e11fa47-…:42`.
    pub fn text(&self) -> String {
        match self {
            TxnGtid::Mariadb(g) => g.to_string(),
            TxnGtid::Mysql(uuid, gno) => format!("{}:{gno}", format_uuid(uuid)),
        }
    }

    /// The state after this transaction.
    pub fn applied_to(&self, state: &GtidSet) -> GtidSet {
        match (state, self) {
            (GtidSet::Mariadb(s), TxnGtid::Mariadb(g)) => {
                let mut s = s.clone();
                s.apply(*g);
                GtidSet::Mariadb(s)
            }
            (GtidSet::Mysql(s), TxnGtid::Mysql(uuid, gno)) => {
                let mut s = s.clone();
                s.add(*uuid, *gno);
                GtidSet::Mysql(s)
            }
            (GtidSet::Mariadb(s), TxnGtid::Mysql(uuid, gno)) if s.is_empty() => {
                let mut set = MysqlGtidSet::default();
                set.add(*uuid, *gno);
                GtidSet::Mysql(set)
            }
            // One stream never mixes flavours; keep the state rather than guess.
            (other, _) => other.clone(),
        }
    }
}

/// Where a resumed stream must skip records already durable.
/// Where an event stands in the binlog, from its header.
struct EventAt {
    start: u64,
    /// The position after it (`log_pos`); 0 for artificial events sent at connect.
    end: u64,
    timestamp: u32,
    server_id: u32,
}

struct Skip {
    file: Arc<str>,
    pos: u64,
    records: u64,
}

pub struct BinlogReader<'a> {
    filter: &'a TableFilter,
    collations: &'a Collations,
    history: &'a mut SchemaHistory,
    tables: HashMap<u64, CachedTable>,
    file: Arc<str>,
    next_pos: u64,
    gtid_state: Arc<GtidSet>,
    txn: Option<Transaction>,
    skip: Option<Skip>,
    /// In GTID mode the first transaction the server sends is the resume transaction.
    skip_first_transaction: Option<u64>,
    /// Records of the open transaction that are already durable.
    skip_records: u64,
    stop_at: Option<BinlogPosition>,
    /// The first ROTATE, sent before the format description, carries a checksum in its name.
    strip_rotate_checksum: bool,
    hints: ColumnHints,
    /// The table snapshot watermarks are written to (`watermarks = "signal_table"`).
    signal_table: Option<headwater_contract::TableId>,
    /// Watermarks read from it since the last `take_signals`.
    signals: Vec<String>,
    /// Where in the caller's output TRUNCATE records wait for their table's layout
    /// (`take_unresolved_truncates`).
    unresolved_truncates: Vec<usize>,
    /// MySQL or MariaDB, for `source.connector`.
    flavor: MysqlFlavor,
}

fn is_system(db: &str) -> bool {
    SYSTEM_DATABASES.iter().any(|s| s.eq_ignore_ascii_case(db))
}

fn defect(what: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::definite(format!(
        "binlog decoding failed: {what}. This is a Headwater defect or a corrupt stream; report it with the position in the log"
    ))
}

impl<'a> BinlogReader<'a> {
    /// `start` is where the stream was requested from; `resume_records` how many records of the
    /// transaction starting there are already durable.
    pub fn new(
        filter: &'a TableFilter,
        collations: &'a Collations,
        history: &'a mut SchemaHistory,
        start: BinlogPosition,
        gtid_mode: bool,
        stop_at: Option<BinlogPosition>,
        checksum_enabled: bool,
    ) -> Self {
        let (skip, skip_first_transaction) = match (start.rows_done, gtid_mode) {
            (0, _) => (None, None),
            (n, true) => (None, Some(n)),
            (n, false) => (
                Some(Skip {
                    file: start.file.clone(),
                    pos: start.pos,
                    records: n,
                }),
                None,
            ),
        };
        BinlogReader {
            filter,
            collations,
            history,
            tables: HashMap::new(),
            file: start.file,
            next_pos: start.pos,
            gtid_state: start.gtid_set,
            txn: None,
            skip,
            skip_first_transaction,
            skip_records: 0,
            stop_at,
            strip_rotate_checksum: checksum_enabled,
            hints: ColumnHints::default(),
            signal_table: None,
            signals: Vec::new(),
            unresolved_truncates: Vec::new(),
            flavor: MysqlFlavor::default(),
        }
    }

    /// Which server the binlog comes from (`source.connector`).
    pub fn set_flavor(&mut self, flavor: MysqlFlavor) {
        self.flavor = flavor;
    }

    pub fn flavor(&self) -> MysqlFlavor {
        self.flavor
    }

    /// Reads snapshot watermarks from `table`'s rows instead of capturing it.
    pub fn watch_signals(&mut self, table: headwater_contract::TableId) {
        self.signal_table = Some(table);
    }

    /// The indices, in the output of the last `handle`, of TRUNCATE records of tables the stream
    /// had no layout of (none seen since it started or since the last DDL). Their `table` holds
    /// the table's name only: the caller reads the layout from the server and puts it in.
    pub fn take_unresolved_truncates(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.unresolved_truncates)
    }

    /// The watermarks written to the signal table that the stream has passed so far.
    pub fn take_signals(&mut self) -> Vec<String> {
        std::mem::take(&mut self.signals)
    }

    /// Replaces the column type hints (after DDL) and forgets decoded layouts built without them.
    pub fn set_hints(&mut self, hints: ColumnHints) {
        self.hints = hints;
        self.tables.clear();
    }

    /// The schema version of a table layout read outside the binlog (snapshot chunks).
    pub fn schema_version(
        &mut self,
        schema: &headwater_contract::TableSchema,
    ) -> Result<u32, ConnectorError> {
        self.history.version_of(schema)
    }

    /// The position after everything handled so far, when no transaction is open.
    pub fn boundary(&self) -> Option<BinlogPosition> {
        if self.txn.is_some() {
            return None;
        }
        Some(BinlogPosition {
            file: self.file.clone(),
            pos: self.next_pos,
            gtid_set: self.gtid_state.clone(),
            rows_done: 0,
            backfill: None,
        })
    }

    fn reached_stop(&self) -> bool {
        match (&self.stop_at, self.boundary()) {
            (Some(stop), Some(here)) => here >= *stop,
            _ => false,
        }
    }

    /// True when the requested start is already at or past the catch-up target.
    pub fn starts_past_stop(&self) -> bool {
        self.skip.is_none() && self.skip_first_transaction.is_none() && self.reached_stop()
    }

    pub fn handle(
        &mut self,
        event: &Event,
        out: &mut Vec<SourceEvent>,
    ) -> Result<Step, ConnectorError> {
        // `mysql_common` panics on some malformed events (slicing past an end it did not
        // check); such an event is a corrupt stream, reported as one instead of a crash
        let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.handle_event(event, out)
        }));
        let step = match handled {
            Ok(step) => step?,
            Err(panic) => {
                let what = panic_message(panic.as_ref());
                return Err(defect(format!(
                    "event type {} at {}:{} could not be parsed ({what})",
                    event.header().event_type_raw(),
                    self.file,
                    self.next_pos
                )));
            }
        };
        // Events outside transactions (rotations, format descriptions, GTID lists) can carry
        // the position to the catch-up target; do not wait for a heartbeat to notice.
        if step == Step::Continue && self.reached_stop() {
            if let Some(here) = self.boundary() {
                out.push(SourceEvent::Progress(Position::Mysql(here)));
            }
            return Ok(Step::Done);
        }
        Ok(step)
    }

    fn handle_event(
        &mut self,
        event: &Event,
        out: &mut Vec<SourceEvent>,
    ) -> Result<Step, ConnectorError> {
        let header = event.header();
        let at = EventAt {
            start: u64::from(header.log_pos()).saturating_sub(u64::from(header.event_size())),
            end: u64::from(header.log_pos()),
            timestamp: header.timestamp(),
            server_id: header.server_id(),
        };
        if let Some(step) = self.unparsed_event(event, &at, out)? {
            return Ok(step);
        }
        // Artificial events (log_pos 0) sent at connect do not move the position.
        let advances = at.end != 0;
        let data = match event.read_data() {
            Ok(Some(data)) => data,
            Ok(None) => {
                if advances {
                    self.next_pos = at.end;
                }
                return Ok(Step::Continue);
            }
            Err(err) => {
                return Err(defect(format!(
                    "event type {} at {}:{}: {err}",
                    header.event_type_raw(),
                    self.file,
                    at.start
                )))
            }
        };
        match data {
            EventData::QueryEvent(query) => {
                if let Some(step) = self.query(&query, &at, out) {
                    return Ok(step);
                }
            }
            EventData::GtidEvent(gtid) => {
                if gtid.is_tagged() {
                    return Err(ConnectorError::definite(
                        "the server writes tagged GTIDs (MySQL 8.4 gtid tags), which Headwater does not support yet; use untagged GTIDs",
                    ));
                }
                self.begin_at(&at, Some(TxnGtid::Mysql(gtid.sid(), gtid.gno())));
            }
            EventData::AnonymousGtidEvent(_) => self.begin_at(&at, None),
            EventData::PreviousGtidsEvent(previous) if self.txn.is_none() => {
                self.previous_gtids(&previous)?
            }
            EventData::XidEvent(_) => {
                self.next_pos = at.end;
                return Ok(self.commit(out));
            }
            EventData::TableMapEvent(tme) => self.table_map(event.data(), &tme)?,
            EventData::RowsEvent(rows) => {
                if self.txn.is_none() {
                    self.begin_at(&at, None);
                }
                self.rows(&rows, out)?;
            }
            _ => {}
        }
        if advances {
            self.next_pos = at.end;
        }
        Ok(Step::Continue)
    }

    /// The events read from their raw bytes (rotations, MariaDB's GTID events, heartbeats)
    /// or refused before parsing; `None` for every other event.
    fn unparsed_event(
        &mut self,
        event: &Event,
        at: &EventAt,
        out: &mut Vec<SourceEvent>,
    ) -> Result<Option<Step>, ConnectorError> {
        match event.header().event_type_raw() {
            ROTATE_EVENT => self.rotate(event.data()),
            MARIADB_GTID_EVENT => {
                let gtid = parse_gtid(event.data(), at.server_id).map_err(defect)?;
                self.begin_at(at, Some(TxnGtid::Mariadb(gtid.gtid)));
                self.next_pos = at.end;
            }
            MARIADB_GTID_LIST_EVENT => {
                self.gtid_list(event.data())?;
                if at.end != 0 {
                    self.next_pos = at.end;
                }
            }
            HEARTBEAT_EVENT => {
                if let Some(here) = self.boundary() {
                    out.push(SourceEvent::Progress(Position::Mysql(here)));
                }
                return Ok(Some(if self.reached_stop() {
                    Step::Done
                } else {
                    Step::Continue
                }));
            }
            MARIADB_COMPRESSED_FIRST..=MARIADB_COMPRESSED_LAST => {
                return Err(ConnectorError::definite(
                    "the server writes compressed binlog events (log_bin_compress=ON), which Headwater does not decode yet; set log_bin_compress=OFF on the server",
                ));
            }
            MYSQL_PREVIOUS_GTIDS_EVENT if !previous_gtids_fit(event.data()) => {
                return Err(defect(format!(
                    "a PREVIOUS_GTIDS event at {}:{} whose counts exceed its {} bytes",
                    self.file,
                    at.start,
                    event.data().len()
                )));
            }
            _ => return Ok(None),
        }
        Ok(Some(Step::Continue))
    }

    /// A ROTATE event: the next binlog file and the position in it.
    fn rotate(&mut self, data: &[u8]) {
        let name_bytes = data.get(8..).unwrap_or_default();
        let name_bytes = if self.strip_rotate_checksum && name_bytes.len() > 4 {
            &name_bytes[..name_bytes.len() - 4]
        } else {
            name_bytes
        };
        self.strip_rotate_checksum = false;
        let position = data
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .unwrap_or(4);
        self.file = Arc::from(String::from_utf8_lossy(name_bytes).as_ref());
        self.next_pos = position;
    }

    /// MariaDB's GTID list: the server's state at this point fills in domains not seen yet.
    fn gtid_list(&mut self, data: &[u8]) -> Result<(), ConnectorError> {
        let list = parse_gtid_list(data).map_err(defect)?;
        if let (None, GtidSet::Mariadb(current)) = (&self.txn, &*self.gtid_state) {
            let mut state = current.clone();
            for gtid in list {
                if state
                    .get(gtid.domain)
                    .is_none_or(|known| known.sequence < gtid.sequence)
                {
                    state.apply(gtid);
                }
            }
            self.gtid_state = Arc::new(GtidSet::Mariadb(state));
        }
        Ok(())
    }

    /// MySQL's executed set before this file: fills in what has not been seen.
    fn previous_gtids(&mut self, previous: &PreviousGtidsEvent<'_>) -> Result<(), ConnectorError> {
        let mut state = match &*self.gtid_state {
            GtidSet::Mysql(set) => set.clone(),
            GtidSet::Mariadb(set) if set.is_empty() => MysqlGtidSet::default(),
            GtidSet::Mariadb(_) => {
                return Err(defect("a MySQL PREVIOUS_GTIDS event on a MariaDB stream"))
            }
        };
        for sid in previous.sids() {
            for interval in sid.intervals() {
                state.add_interval(sid.uuid(), interval.start(), interval.end());
            }
        }
        self.gtid_state = Arc::new(GtidSet::Mysql(state));
        Ok(())
    }

    /// A QUERY event: BEGIN opens a transaction, COMMIT ends one, DDL of a captured database
    /// becomes a schema change and commits implicitly. `Some` when it ended a transaction.
    fn query(
        &mut self,
        query: &QueryEvent<'_>,
        at: &EventAt,
        out: &mut Vec<SourceEvent>,
    ) -> Option<Step> {
        let text = query.query();
        let keyword = text
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        match keyword.as_str() {
            "BEGIN" => {
                if self.txn.is_none() {
                    self.begin_at(at, None);
                }
                self.set_thread(query.thread_id());
                None
            }
            "COMMIT" => {
                self.next_pos = at.end;
                Some(self.commit(out))
            }
            "ROLLBACK" | "SAVEPOINT" | "RELEASE" | "XA" => None,
            _ => {
                let db = query.schema().into_owned();
                if self.txn.is_none() {
                    self.begin_at(at, None);
                }
                self.set_thread(query.thread_id());
                self.next_pos = at.end;
                // DDL of captured databases only; statements outside any database
                // (users, grants) are not schema changes of captured tables.
                let database = if db.is_empty() {
                    qualified_databases(&text)
                        .into_iter()
                        .find(|d| self.filter.covers_namespace(d))
                } else {
                    Some(db).filter(|d| self.filter.covers_namespace(d))
                };
                if keyword == "TRUNCATE" {
                    if let Some(table) = truncated_table(&text, &query.schema()) {
                        self.truncate(table, out);
                    }
                }
                if let Some(database) = database.filter(|d| !is_system(d)) {
                    self.schema_change(database, text.into_owned(), out);
                }
                // DDL commits implicitly (MariaDB marks it standalone).
                Some(self.commit(out))
            }
        }
    }

    fn set_thread(&mut self, thread: u32) {
        if let Some(txn) = self.txn.as_mut() {
            txn.thread.get_or_insert(thread);
        }
    }

    fn begin_at(&mut self, at: &EventAt, gtid: Option<TxnGtid>) {
        self.begin(at.start, gtid, at.timestamp, at.server_id);
    }

    fn begin(&mut self, start: u64, gtid: Option<TxnGtid>, timestamp: u32, server_id: u32) {
        self.skip_records = match (self.skip.take(), self.skip_first_transaction.take()) {
            (_, Some(n)) => n,
            (Some(skip), None) if skip.file == self.file && skip.pos == start => skip.records,
            _ => 0,
        };
        self.txn = Some(Transaction {
            start_file: self.file.clone(),
            start_pos: start,
            state_before: self.gtid_state.clone(),
            gtid,
            gtid_text: gtid.map(|g| Arc::from(g.text().as_str())),
            records: 0,
            per_table: HashMap::new(),
            ts_us: i64::from(timestamp) * 1_000_000,
            server_id,
            thread: None,
        });
    }

    /// Ends the open transaction: its GTID joins the state and the position moves past it.
    fn commit(&mut self, out: &mut Vec<SourceEvent>) -> Step {
        if let Some(txn) = self.txn.take() {
            if let Some(gtid) = txn.gtid {
                self.gtid_state = Arc::new(gtid.applied_to(&self.gtid_state));
            }
        }
        self.skip_records = 0;
        if let Some(here) = self.boundary() {
            out.push(SourceEvent::Progress(Position::Mysql(here)));
        }
        if self.reached_stop() {
            Step::Done
        } else {
            Step::Continue
        }
    }

    fn source_info(
        &self,
        txn: &Transaction,
        db: &Arc<str>,
        table: Option<Arc<str>>,
        row: u32,
    ) -> SourceInfo {
        SourceInfo::Mysql(MysqlSourceInfo {
            ts_us: txn.ts_us,
            flavor: self.flavor,
            snapshot: SnapshotMarker::False,
            db: db.clone(),
            table,
            server_id: txn.server_id,
            gtid: txn.gtid_text.clone(),
            file: txn.start_file.clone(),
            pos: txn.start_pos,
            row,
            thread: txn.thread,
        })
    }

    fn schema_change(&mut self, database: String, ddl: String, out: &mut Vec<SourceEvent>) {
        let Some(txn) = self.txn.as_mut() else { return };
        txn.records += 1;
        if txn.records <= self.skip_records {
            return;
        }
        let position = Position::Mysql(BinlogPosition {
            file: txn.start_file.clone(),
            pos: txn.start_pos,
            gtid_set: txn.state_before.clone(),
            rows_done: txn.records,
            backfill: None,
        });
        let db: Arc<str> = Arc::from(database.as_str());
        let Some(txn) = self.txn.as_ref() else { return };
        let source = self.source_info(txn, &db, None, 0);
        out.push(SourceEvent::SchemaChange(SchemaChangeRecord {
            database,
            table: None,
            ddl,
            source,
            position,
        }));
    }

    /// A TRUNCATE of a captured table: a change record of its own (op `t`, no row images)
    /// before the statement's schema-change record, so that sinks holding the table's rows
    /// (the Delta mirror) empty it. The layout is the one of the table's last TABLE_MAP when
    /// the stream has one; else the record is left for the caller to complete with the layout
    /// the server has now (`take_unresolved_truncates`) — a truncate carries no row, so a
    /// layout from after a later DDL changes only the record's schema version.
    fn truncate(&mut self, table: TableId, out: &mut Vec<SourceEvent>) {
        let signal = self.signal_table.as_ref() == Some(&table);
        if signal
            || is_system(&table.namespace)
            || !self.filter.captures(&table.namespace, &table.table)
        {
            return;
        }
        let known = self
            .tables
            .iter()
            .filter_map(|(id, cached)| Some((*id, cached.info.as_ref()?)))
            .filter(|(_, info)| info.schema.id == table)
            .max_by_key(|(id, _)| *id)
            .map(|(id, info)| (id, Arc::clone(&info.schema)));
        let (table_id, schema) = known.unwrap_or_else(|| {
            let bare = TableSchema {
                id: table.clone(),
                version: 0,
                columns: Vec::new(),
                primary_key: Vec::new(),
            };
            (u64::MAX, Arc::new(bare))
        });
        let names = (
            Arc::<str>::from(table.namespace.as_str()),
            Arc::<str>::from(table.table.as_str()),
        );
        let change = RowChange {
            op: Op::Truncate,
            key: None,
            before: None,
            after: None,
        };
        let at = out.len();
        if self
            .emit_row(change, table_id, &schema, &names, 0, out)
            .is_ok()
            && out.len() > at
            && table_id == u64::MAX
        {
            self.unresolved_truncates.push(at);
        }
    }

    fn table_map(&mut self, raw: &[u8], tme: &TableMapEvent<'_>) -> Result<(), ConnectorError> {
        let table_id = tme.table_id();
        if self
            .tables
            .get(&table_id)
            .is_some_and(|cached| cached.raw == raw)
        {
            return Ok(());
        }
        let db = tme.database_name();
        let name = tme.table_name();
        if !table_map_counts_fit(raw) {
            return Err(defect(format!(
                "a TABLE_MAP event of {db}.{name} whose ENUM/SET label counts exceed its {} bytes",
                raw.len()
            )));
        }
        let signal = self
            .signal_table
            .as_ref()
            .is_some_and(|t| t.namespace == db && t.table == name);
        let info = if signal {
            let (schema, decoders) = describe(tme, self.collations, &self.hints)?;
            Some(Arc::new(TableInfo {
                schema: Arc::new(schema),
                decoders,
                plan: None,
            }))
        } else if is_system(&db) || !self.filter.captures(&db, &name) {
            None
        } else {
            let (schema, decoders) = describe(tme, self.collations, &self.hints)?;
            let plan = self.filter.column_plan(&schema)?;
            let mut schema = plan.as_ref().map_or(schema, |p| p.output().clone());
            schema.version = self.history.version_of(&schema)?;
            tracing::debug!(table = %schema.id, version = schema.version, "table layout");
            Some(Arc::new(TableInfo {
                schema: Arc::new(schema),
                decoders,
                plan,
            }))
        };
        self.tables.insert(
            table_id,
            CachedTable {
                raw: raw.to_vec(),
                info,
                signal,
            },
        );
        Ok(())
    }

    fn rows(
        &mut self,
        rows: &RowsEventData<'_>,
        out: &mut Vec<SourceEvent>,
    ) -> Result<(), ConnectorError> {
        let table_id = rows.table_id();
        let Some(cached) = self.tables.get(&table_id) else {
            return Err(defect(format!(
                "a rows event for table id {} without its TABLE_MAP",
                rows.table_id()
            )));
        };
        let Some(info) = cached.info.clone() else {
            return Ok(()); // not captured
        };
        if cached.signal {
            return self.signal_rows(rows, &info);
        }
        let schema = &info.schema;
        let count = info.decoders.len();
        let (op, has_before, has_after) = row_images(rows, schema, count)?;
        let names = (
            Arc::<str>::from(schema.id.namespace.as_str()),
            Arc::<str>::from(schema.id.table.as_str()),
        );
        let data = rows.rows_data();
        let mut at = 0;
        let mut row_index = 0u32;
        let mut before_values: Vec<Value<'_>> = Vec::with_capacity(count);
        let mut after_values: Vec<Value<'_>> = Vec::with_capacity(count);
        while at < data.len() {
            let row_start = at;
            before_values.clear();
            after_values.clear();
            if has_before {
                read_image(&info.decoders, data, &mut at, &mut before_values)
                    .map_err(|e| row_error(schema, e))?;
            }
            if has_after {
                read_image(&info.decoders, data, &mut at, &mut after_values)
                    .map_err(|e| row_error(schema, e))?;
            }
            if at == row_start {
                // a table of no columns: every row would be read from the same bytes, forever
                return Err(row_error(
                    schema,
                    DecodeError("a row image of no bytes".into()),
                ));
            }
            if let Some(plan) = &info.plan {
                plan.apply(&mut before_values);
                plan.apply(&mut after_values);
            }
            let before = encode_image(schema, has_before, &before_values)?;
            let after = encode_image(schema, has_after, &after_values)?;
            for change in RowChange::of(op, before, after).into_iter().flatten() {
                self.emit_row(change, table_id, schema, &names, row_index, out)?;
            }
            row_index += 1;
        }
        Ok(())
    }

    /// Appends one row change as a change event, counted in its transaction (and skipped
    /// when a resumed transaction had already delivered it).
    fn emit_row(
        &mut self,
        change: RowChange,
        table_id: u64,
        schema: &Arc<TableSchema>,
        (db, table): &(Arc<str>, Arc<str>),
        row_index: u32,
        out: &mut Vec<SourceEvent>,
    ) -> Result<(), ConnectorError> {
        let Some(txn) = self.txn.as_mut() else {
            return Err(defect("row outside a transaction"));
        };
        txn.records += 1;
        let table_order = txn.per_table.entry(table_id).or_insert(0);
        *table_order += 1;
        let data_collection_order = *table_order;
        if txn.records <= self.skip_records {
            return Ok(());
        }
        let position = Position::Mysql(BinlogPosition {
            file: txn.start_file.clone(),
            pos: txn.start_pos,
            gtid_set: txn.state_before.clone(),
            rows_done: txn.records,
            backfill: None,
        });
        let transaction = txn.gtid_text.clone().map(|id| TransactionInfo {
            id,
            total_order: txn.records,
            data_collection_order,
        });
        let Some(txn) = self.txn.as_ref() else {
            return Ok(());
        };
        let source = self.source_info(txn, db, Some(table.clone()), row_index);
        out.push(SourceEvent::Change(ChangeRecord {
            table: Arc::clone(schema),
            op: change.op,
            key: change.key,
            before: change.before,
            after: change.after,
            source,
            transaction,
            position,
        }));
        Ok(())
    }
}

/// A rows event's operation and which images its rows carry, refusing what cannot be
/// captured (partial JSON updates, partial row images).
fn row_images(
    rows: &RowsEventData<'_>,
    schema: &TableSchema,
    count: usize,
) -> Result<(Op, bool, bool), ConnectorError> {
    let images = match rows {
        RowsEventData::WriteRowsEvent(_) | RowsEventData::WriteRowsEventV1(_) => (Op::Create, false, true),
        RowsEventData::UpdateRowsEvent(_) | RowsEventData::UpdateRowsEventV1(_) => (Op::Update, true, true),
        RowsEventData::DeleteRowsEvent(_) | RowsEventData::DeleteRowsEventV1(_) => (Op::Delete, true, false),
        RowsEventData::PartialUpdateRowsEvent(_) => {
            return Err(ConnectorError::definite(format!(
                "table {}: partial JSON updates in the binlog (binlog_row_value_options=PARTIAL_JSON) cannot be captured; set binlog_row_value_options='' on the server",
                schema.id
            )))
        }
    };

    for image in [rows.columns_before_image(), rows.columns_after_image()]
        .into_iter()
        .flatten()
    {
        if image.count_ones() != count {
            return Err(ConnectorError::definite(format!(
                "table {}: the binlog holds partial row images; set binlog_row_image=FULL on the server (SET GLOBAL binlog_row_image=FULL, and in my.cnf)",
                schema.id
            )));
        }
    }
    Ok(images)
}

/// A row image encoded, with its key: (row, key), or nothing for an image the event lacks.
type EncodedImage = (Option<Vec<u8>>, Option<Vec<u8>>);

fn encode_image(
    schema: &TableSchema,
    present: bool,
    values: &[Value<'_>],
) -> Result<EncodedImage, ConnectorError> {
    Ok(if present {
        (
            Some(RowEncoder::row_bytes(schema, values)?),
            RowEncoder::key_bytes(schema, values)?,
        )
    } else {
        (None, None)
    })
}

impl BinlogReader<'_> {
    /// Rows of the signal table: their `watermark` column is a snapshot chunk's watermark.
    fn signal_rows(
        &mut self,
        rows: &RowsEventData<'_>,
        info: &TableInfo,
    ) -> Result<(), ConnectorError> {
        let Some(column) = info
            .schema
            .columns
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case("watermark"))
        else {
            return Err(ConnectorError::definite(format!(
                "the signal table {} has no `watermark` column; create it as the preflight (headwater check) says",
                info.schema.id
            )));
        };
        let has_before = matches!(
            rows,
            RowsEventData::UpdateRowsEvent(_)
                | RowsEventData::UpdateRowsEventV1(_)
                | RowsEventData::DeleteRowsEvent(_)
                | RowsEventData::DeleteRowsEventV1(_)
        );
        let has_after = !matches!(
            rows,
            RowsEventData::DeleteRowsEvent(_) | RowsEventData::DeleteRowsEventV1(_)
        );
        let data = rows.rows_data();
        let mut at = 0;
        let mut values = Vec::new();
        while at < data.len() {
            if has_before {
                values.clear();
                read_image(&info.decoders, data, &mut at, &mut values)
                    .map_err(|e| row_error(&info.schema, e))?;
            }
            if has_after {
                values.clear();
                read_image(&info.decoders, data, &mut at, &mut values)
                    .map_err(|e| row_error(&info.schema, e))?;
                if let Some(Value::Text(text)) = values.get(column) {
                    self.signals.push(text.to_string());
                }
            }
        }
        Ok(())
    }
}

/// One record's worth of a row event: an update that changes the key becomes two.
struct RowChange {
    op: Op,
    key: Option<Vec<u8>>,
    before: Option<Vec<u8>>,
    after: Option<Vec<u8>>,
}

impl RowChange {
    /// The changes a row of `op` makes. A key change is a delete of the old row and a create
    /// of the new one, so keyed consumers (Kafka compaction) forget the old key.
    fn of(
        op: Op,
        (before, before_key): EncodedImage,
        (after, after_key): EncodedImage,
    ) -> [Option<RowChange>; 2] {
        if op == Op::Update && before_key != after_key {
            return [
                Some(RowChange {
                    op: Op::Delete,
                    key: before_key,
                    before,
                    after: None,
                }),
                Some(RowChange {
                    op: Op::Create,
                    key: after_key,
                    before: None,
                    after,
                }),
            ];
        }
        let key = if op == Op::Delete {
            before_key
        } else {
            after_key
        };
        [
            Some(RowChange {
                op,
                key,
                before,
                after,
            }),
            None,
        ]
    }
}

fn row_error(
    schema: &headwater_contract::TableSchema,
    err: crate::decoder::DecodeError,
) -> ConnectorError {
    defect(format!(
        "row of {} (schema version {}): {err}",
        schema.id, schema.version
    ))
}

/// Reads one full row image: a null bitmap, then each non-null column's value.
fn read_image<'d>(
    decoders: &'d [ColumnDecoder],
    data: &'d [u8],
    at: &mut usize,
    values: &mut Vec<Value<'d>>,
) -> Result<(), crate::decoder::DecodeError> {
    let bitmap_len = decoders.len().div_ceil(8);
    let end = *at + bitmap_len;
    let bitmap = data.get(*at..end).ok_or_else(|| {
        crate::decoder::DecodeError("row image ends inside its null bitmap".into())
    })?;
    *at = end;
    for (index, decoder) in decoders.iter().enumerate() {
        if bitmap[index / 8] & (1 << (index % 8)) != 0 {
            values.push(Value::Null);
        } else {
            values.push(decoder.decode(data, at)?);
        }
    }
    Ok(())
}

/// A MySQL 8 stream (which no server here can produce) fed as bytes built from the documented
/// event layouts: PREVIOUS_GTIDS, GTID, TABLE_MAP with FULL metadata, WRITE_ROWS v2, XID.
#[cfg(test)]
#[path = "stream_mysql8_tests.rs"]
mod mysql8_tests;

//! Snapshots and backfills: tables copied in primary-key chunks while the change stream goes on
//! (the DBLog approach), with their progress carried in every position.
//!
//! How a chunk stays consistent with the stream: the stream side opens a *window* for the table
//! when it asks for the chunk, and from then on notes the key of every change to that table it
//! passes. The chunk is read (one plain `SELECT … ORDER BY key LIMIT n`, no locks), then a high
//! watermark is taken in the source's log. When the stream reaches the watermark, the chunk rows
//! whose keys changed inside the window are dropped (the stream already carries a newer image of
//! them) and the rest are emitted right there, as `op = "r"`. Every row's final image is
//! therefore the newest one, whatever order the stream and the chunk read ran in.
//!
//! The window opens when the chunk is *requested* rather than at a low watermark written into
//! the log: that is earlier than any low watermark could be, so it also covers transactions that
//! were already in the log but not yet visible to the chunk's read (commit order and visibility
//! order differ by microseconds on both servers). Dropping more keys than needed is harmless.

use crate::now_ms;
use crate::position::Position;
use crate::record::{ChangeRecord, Op, SnapshotMarker, SnapshotRowPlace, SourceEvent, SourceInfo};
use crate::schema::{TableId, TableSchema};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

mod reader;
mod scheduler;
mod state;

pub use reader::{
    check_saved_key, chunk_select, ChunkOutcome, ChunkRead, ChunkRows, ReadChunk, Watermark,
};
pub use scheduler::{ChunkScheduler, ChunkWake};
pub use state::{
    BackfillInbox, BackfillKind, BackfillRequest, BackfillState, KeyPart, SnapshotMode,
    TableProgress,
};

/// What the source must read next.
#[derive(Clone, Debug)]
pub struct ChunkRequest {
    pub table: TableId,
    /// Read rows whose key sorts after this (`None`: from the first row).
    pub after: Option<Vec<KeyPart>>,
    pub condition: Option<String>,
    pub limit: usize,
    /// The table's copy is starting: also estimate its row count.
    pub estimate_rows: bool,
}

/// One row of a chunk, encoded against the chunk's schema.
#[derive(Clone, Debug)]
pub struct ChunkRow {
    pub key: Vec<u8>,
    pub after: Vec<u8>,
    pub resume_key: Vec<KeyPart>,
}

/// Rows read by one chunk query, in key order.
#[derive(Clone, Debug)]
pub struct Chunk {
    pub schema: Arc<TableSchema>,
    pub rows: Vec<ChunkRow>,
    /// Fewer rows than asked for came back: the table is done.
    pub exhausted: bool,
    pub rows_estimate: Option<u64>,
}

struct Window {
    table: TableId,
    changed: HashSet<Vec<u8>>,
    /// The schema versions the stream's changes of the table carried inside the window: one
    /// that differs from the chunk's means the table changed shape around the read, even when
    /// the stream reported no schema change (PostgreSQL describes a relation to a new
    /// session only at its first change, so a DDL before that shows no change of version).
    stream_versions: HashSet<u32>,
    aborted: Option<String>,
    /// Set once the chunk's read has come back: where it ended.
    read: Option<ReadEnd>,
}

/// A chunk [`Backfiller::accept_chunk`] let through: the state to advance per row, and what
/// the rows need from the copy being made.
struct Accepted {
    state: Arc<BackfillState>,
    kind: BackfillKind,
    /// No table is queued after this one (its last row is the snapshot's last).
    last_table: bool,
    request: Arc<BackfillRequest>,
}

struct ReadEnd {
    last_key: Option<Vec<KeyPart>>,
    exhausted: bool,
}

/// Chunks whose windows may be open at once: the next chunk is read while the stream waits
/// for the previous one's watermark.
const CHUNKS_IN_FLIGHT: usize = 2;

/// What became of a chunk handed to [`Backfiller::complete`].
#[derive(Debug)]
pub enum Completed {
    /// Its rows (and a progress event) to send on.
    Emitted(Vec<SourceEvent>),
    /// It was discarded (its table's schema changed or it was truncated inside the window),
    /// and so were the chunks read after it: drop them; they are read again.
    Discarded,
}

/// The stream side of snapshots: the queue, the open chunk windows, and the rows to emit.
pub struct Backfiller {
    state: Option<Arc<BackfillState>>,
    windows: std::collections::VecDeque<Window>,
    chunk_size: usize,
    last_log: Instant,
    rows_at_last_log: u64,
    /// The operator's pause switch, shared with the inbox once [`Backfiller::accept`] ran.
    inbox: Option<BackfillInbox>,
    /// Whether the last chunk decision saw the switch on (to log each change once).
    paused_seen: bool,
}

const PROGRESS_LOG: std::time::Duration = std::time::Duration::from_secs(10);

impl Backfiller {
    /// Continues the backfill state of the position a stream resumes from.
    pub fn new(resumed: Option<Arc<BackfillState>>, chunk_size: usize) -> Self {
        let rows = resumed.as_ref().map_or(0, |s| s.rows_emitted);
        Backfiller {
            state: resumed,
            windows: std::collections::VecDeque::new(),
            chunk_size: chunk_size.max(1),
            last_log: Instant::now(),
            rows_at_last_log: rows,
            inbox: None,
            paused_seen: false,
        }
    }

    pub fn state(&self) -> Option<&Arc<BackfillState>> {
        self.state.as_ref()
    }

    /// A table is being copied (or waits to be).
    pub fn is_active(&self) -> bool {
        self.state.as_ref().is_some_and(|s| s.is_active())
    }

    /// A copy still has work this process will do now: a table is pending and not paused, or
    /// a chunk asked for before the pause is still in flight. A catch-up run may end once
    /// this is false.
    pub fn is_copying(&self) -> bool {
        self.is_active() && (!self.is_paused() || !self.windows.is_empty())
    }

    fn is_paused(&self) -> bool {
        self.inbox.as_ref().is_some_and(BackfillInbox::is_paused)
    }

    /// Chunks asked for and not yet emitted or discarded.
    pub fn chunks_in_flight(&self) -> usize {
        self.windows.len()
    }

    fn edit(&mut self) -> &mut BackfillState {
        Arc::make_mut(self.state.get_or_insert_with(Default::default))
    }

    /// Queues tables to copy after those already queued.
    pub fn enqueue(&mut self, requests: Vec<BackfillRequest>) {
        if requests.is_empty() {
            return;
        }
        let state = self.edit();
        let mut queued: Vec<Arc<BackfillRequest>> = state.queued.as_ref().clone();
        for request in requests {
            state.last_request_id = state.last_request_id.max(request.id);
            tracing::info!(table = %request.table, condition = ?request.condition, kind = ?request.kind, "backfill queued");
            queued.push(Arc::new(request));
        }
        state.queued = Arc::new(queued);
        if state.current.is_none() {
            Self::advance(state);
        }
    }

    /// Takes the requests from `inbox` not accepted yet; true when there were any.
    pub fn accept(&mut self, inbox: &BackfillInbox) -> bool {
        if self.inbox.is_none() {
            self.inbox = Some(inbox.clone());
        }
        let accepted = self.state.as_ref().map_or(0, |s| s.last_request_id);
        let new = inbox.after(accepted);
        let any = !new.is_empty();
        self.enqueue(new);
        any
    }

    /// Moves to the next queued table.
    fn advance(state: &mut BackfillState) {
        let mut queued: Vec<Arc<BackfillRequest>> = state.queued.as_ref().clone();
        // a table that copied no row (empty, or skipped) passes "first" on to the next
        let first_table = state
            .current
            .as_ref()
            .is_none_or(|c| c.first_table && c.rows_done == 0);
        state.current = if queued.is_empty() {
            None
        } else {
            Some(TableProgress::start(queued.remove(0), first_table))
        };
        state.queued = Arc::new(queued);
    }

    /// Drops the queued and current copies of tables `captured` says no (the configuration
    /// left them out since the copy was asked for), saying so for each.
    pub fn retain_captured(&mut self, captured: impl Fn(&TableId) -> bool) {
        let Some(state) = self.state.as_ref() else {
            return;
        };
        let current_gone = state
            .current
            .as_ref()
            .is_some_and(|c| !captured(&c.request.table));
        if !current_gone && state.queued.iter().all(|r| captured(&r.table)) {
            return;
        }
        let state = self.edit();
        let kept: Vec<Arc<BackfillRequest>> = state
            .queued
            .iter()
            .filter(|request| {
                let keep = captured(&request.table);
                if !keep {
                    tracing::warn!(table = %request.table, "backfill dropped: the table is no longer captured (source.include / source.exclude)");
                }
                keep
            })
            .cloned()
            .collect();
        state.queued = Arc::new(kept);
        if current_gone {
            self.skip_current("the table is no longer captured (source.include / source.exclude)");
        }
    }

    /// Drops the table being copied (it has no key, or it is gone), saying why.
    pub fn skip_current(&mut self, why: &str) {
        self.windows.clear();
        let state = self.edit();
        if let Some(current) = &state.current {
            tracing::warn!(table = %current.request.table, "backfill skipped: {why}");
        }
        Self::advance(state);
    }

    /// Opens the window for the next chunk, when a table is pending, fewer than
    /// `CHUNKS_IN_FLIGHT` chunks are open and the previous one's read has come back (the next
    /// chunk starts after its last key).
    pub fn next_chunk(&mut self) -> Option<ChunkRequest> {
        if self.windows.len() >= CHUNKS_IN_FLIGHT {
            return None;
        }
        let paused = self.is_paused();
        let current = self.state.as_ref()?.current.as_ref()?;
        if paused != self.paused_seen {
            if paused {
                tracing::info!(table = %current.request.table, rows_done = current.rows_done,
                    "backfill paused: no new chunks until `headwater backfill --resume` (streaming goes on)");
            } else {
                tracing::info!(table = %current.request.table, "backfill resumed");
            }
            self.paused_seen = paused;
        }
        if paused {
            return None;
        }
        let after = match self.windows.back() {
            None => current.after.clone(),
            Some(previous) => match &previous.read {
                Some(end) if !end.exhausted && previous.aborted.is_none() => end.last_key.clone(),
                _ => return None,
            },
        };
        let request = ChunkRequest {
            table: current.request.table.clone(),
            after,
            condition: current.request.condition.clone(),
            limit: self.chunk_size,
            estimate_rows: self.windows.is_empty()
                && current.rows_done == 0
                && current.rows_estimate.is_none(),
        };
        self.windows.push_back(Window {
            table: request.table.clone(),
            changed: HashSet::new(),
            stream_versions: HashSet::new(),
            aborted: None,
            read: None,
        });
        Some(request)
    }

    /// A chunk's read came back (reads come back in the order they were asked for), ending at
    /// `last_key`; `exhausted` when it was the table's last.
    pub fn chunk_read(&mut self, last_key: Option<Vec<KeyPart>>, exhausted: bool) {
        if let Some(window) = self.windows.iter_mut().find(|w| w.read.is_none()) {
            window.read = Some(ReadEnd {
                last_key,
                exhausted,
            });
        }
    }

    /// Hands the position a stream starts at to the pipeline, stamped with the backfill state,
    /// so the checkpoint moves there even before any event follows; `false` once the pipeline
    /// has stopped receiving (the source then returns).
    pub async fn send_start(&mut self, start: Position, events: &crate::EventSender) -> bool {
        let mut first = vec![SourceEvent::Progress(start)];
        self.observe(&mut first);
        events.send(first).await.is_ok()
    }

    /// Passes the stream's events: notes keys of the window's table that changed, abandons the
    /// chunk on a schema change or truncation of it, and stamps positions with the state.
    pub fn observe(&mut self, events: &mut [SourceEvent]) {
        for window in self.windows.iter_mut() {
            for event in events.iter() {
                match event {
                    SourceEvent::Change(change) if change.table.id == window.table => {
                        window.stream_versions.insert(change.table.version);
                        match (&change.key, change.op) {
                            (_, Op::Truncate) => {
                                window.aborted = Some("the table was truncated".into())
                            }
                            (Some(key), _) => {
                                window.changed.insert(key.clone());
                            }
                            (None, _) => {}
                        }
                    }
                    SourceEvent::SchemaChange(ddl)
                        if ddl
                            .table
                            .as_ref()
                            .map_or(ddl.database == window.table.namespace, |t| {
                                *t == window.table
                            }) =>
                    {
                        window.aborted = Some("its schema changed".into());
                    }
                    _ => {}
                }
            }
        }
        if let Some(state) = &self.state {
            for event in events.iter_mut() {
                event.position_mut().set_backfill(Some(Arc::clone(state)));
            }
        }
    }

    /// The oldest chunk in flight has been read and the stream has reached its high watermark
    /// at `at`: returns the rows to emit there (and a progress event with the new state), and
    /// closes its window.
    pub fn complete(
        &mut self,
        chunk: Chunk,
        at: &Position,
        source: impl Fn(&TableSchema, SnapshotMarker) -> SourceInfo,
    ) -> Completed {
        let Some(window) = self.windows.pop_front() else {
            return Completed::Discarded;
        };
        let Some(Accepted {
            mut state,
            kind,
            last_table,
            request,
        }) = self.accept_chunk(&window, &chunk)
        else {
            self.windows.clear();
            return Completed::Discarded;
        };
        let mut out = Vec::with_capacity(chunk.rows.len() + 1);
        // Each row's position names its own key, so the lake's exactly-once holds for copied
        // rows; a state per row is one small allocation (the request and queue are shared).
        let (queued, last_request_id, rows_estimate, started_at_ms) = {
            let current = state.current.as_ref();
            (
                Arc::clone(&state.queued),
                state.last_request_id,
                current.and_then(|c| c.rows_estimate),
                current.map_or(0, |c| c.started_at_ms),
            )
        };
        let mut rows_done = state.current.as_ref().map_or(0, |c| c.rows_done);
        let first_table = state.current.as_ref().is_some_and(|c| c.first_table);
        let mut rows_emitted = state.rows_emitted;
        // the key of dropped rows after the last emitted one, which the state must still pass
        let mut trailing: Option<Vec<KeyPart>> = None;
        let last_emitted = chunk
            .rows
            .iter()
            .rposition(|row| !window.changed.contains(&row.key));
        for (index, row) in chunk.rows.into_iter().enumerate() {
            if window.changed.contains(&row.key) {
                trailing = Some(row.resume_key);
                continue;
            }
            trailing = None;
            let place = SnapshotRowPlace {
                first_table,
                last_table,
                first_in_table: rows_done == 0,
                last_in_table: chunk.exhausted && last_emitted == Some(index),
            };
            rows_done += 1;
            rows_emitted += 1;
            state = Arc::new(BackfillState {
                current: Some(TableProgress {
                    request: Arc::clone(&request),
                    after: Some(row.resume_key),
                    rows_done,
                    rows_estimate,
                    started_at_ms,
                    first_table,
                }),
                queued: Arc::clone(&queued),
                last_request_id,
                rows_emitted,
            });
            let marker = match kind.marker() {
                SnapshotMarker::True => SnapshotMarker::for_snapshot_row(place),
                other => other,
            };
            let mut position = at.clone();
            position.set_backfill(Some(Arc::clone(&state)));
            out.push(SourceEvent::Change(ChangeRecord {
                table: Arc::clone(&chunk.schema),
                op: Op::Read,
                key: Some(row.key),
                before: None,
                after: Some(row.after),
                source: source(&chunk.schema, marker),
                transaction: None,
                position,
            }));
        }
        if let Some(after) = trailing {
            if let Some(current) = Arc::make_mut(&mut state).current.as_mut() {
                current.after = Some(after);
            }
        }
        if chunk.exhausted {
            Self::finish_table(Arc::make_mut(&mut state));
        }
        let mut position = at.clone();
        position.set_backfill(Some(Arc::clone(&state)));
        out.push(SourceEvent::Progress(position));
        self.state = Some(state);
        if chunk.exhausted {
            // chunks read past the end of a finished table belong to no table now
            self.windows.clear();
        }
        self.log_progress();
        Completed::Emitted(out)
    }

    /// Whether the chunk read for `window` may be emitted: not aborted inside its window, read
    /// in the schema version the stream saw, and of the table being copied. Takes the state
    /// for the rows when it may; when not, says why and keeps the state.
    fn accept_chunk(&mut self, window: &Window, chunk: &Chunk) -> Option<Accepted> {
        let aborted = window.aborted.clone().or_else(|| {
            window
                .stream_versions
                .iter()
                .any(|v| *v != chunk.schema.version)
                .then(|| "the stream saw the table in another schema version".to_string())
        });
        if let Some(why) = aborted {
            tracing::info!(table = %window.table, "chunk discarded and read again: {why}");
            return None;
        }
        let mut state = self.state.take()?;
        let edit = Arc::make_mut(&mut state);
        let last_table = edit.queued.is_empty();
        let accepted = match edit.current.as_mut() {
            Some(current)
                if current.request.table == window.table && chunk.schema.id == window.table =>
            {
                if chunk.rows_estimate.is_some() {
                    current.rows_estimate = chunk.rows_estimate;
                }
                Some((current.request.kind, Arc::clone(&current.request)))
            }
            _ => None,
        };
        let Some((kind, request)) = accepted else {
            self.state = Some(state);
            return None;
        };
        Some(Accepted {
            state,
            kind,
            last_table,
            request,
        })
    }

    /// The current table's copy is complete: log it and move to the next queued one.
    fn finish_table(state: &mut BackfillState) {
        if let Some(done) = &state.current {
            let seconds = (now_ms() - done.started_at_ms) as f64 / 1000.0;
            tracing::info!(table = %done.request.table, rows = done.rows_done, seconds, "backfill of the table done");
        }
        Self::advance(state);
        if state.current.is_none() {
            tracing::info!(rows = state.rows_emitted, "every queued backfill is done");
        }
    }

    /// Abandons the open chunks (the source reconnects or stops); they are read again later.
    pub fn abandon_chunks(&mut self) {
        self.windows.clear();
    }

    fn log_progress(&mut self) {
        if self.last_log.elapsed() < PROGRESS_LOG {
            return;
        }
        let Some(state) = &self.state else { return };
        if let Some(current) = &state.current {
            let rate = (state.rows_emitted - self.rows_at_last_log) as f64
                / self.last_log.elapsed().as_secs_f64();
            tracing::info!(
                rate_per_s = rate as u64,
                queued = state.queued.len(),
                "backfill {}",
                current.describe(now_ms())
            );
        }
        self.rows_at_last_log = state.rows_emitted;
        self.last_log = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::position::PgPosition;
    use crate::record::PgSourceInfo;
    use crate::schema::{Column, FieldType};
    use crate::Lsn;

    fn table() -> TableId {
        TableId {
            namespace: "public".into(),
            table: "t".into(),
        }
    }

    fn schema() -> Arc<TableSchema> {
        Arc::new(TableSchema {
            id: table(),
            version: 1,
            columns: vec![Column {
                name: "id".into(),
                field_type: FieldType::Long,
                nullable: false,
                sql_type: "int8".into(),
            }],
            primary_key: vec![0],
        })
    }

    fn source(_: &TableSchema, marker: SnapshotMarker) -> SourceInfo {
        SourceInfo::Postgres(PgSourceInfo {
            ts_us: 0,
            snapshot: marker,
            db: "db".into(),
            schema: "public".into(),
            table: Some("t".into()),
            tx_id: None,
            lsn: None,
            last_commit_lsn: None,
        })
    }

    fn markers(out: &[SourceEvent]) -> Vec<&'static str> {
        out.iter()
            .filter_map(|e| match e {
                SourceEvent::Change(c) => match &c.source {
                    SourceInfo::Postgres(info) => Some(info.snapshot.as_str()),
                    SourceInfo::Mysql(info) => Some(info.snapshot.as_str()),
                },
                _ => None,
            })
            .collect()
    }

    fn row(key: u8) -> ChunkRow {
        ChunkRow {
            key: vec![key],
            after: vec![key],
            resume_key: vec![KeyPart::Text(key.to_string())],
        }
    }

    fn chunk(keys: &[u8], exhausted: bool) -> Chunk {
        Chunk {
            schema: schema(),
            rows: keys.iter().map(|k| row(*k)).collect(),
            exhausted,
            rows_estimate: None,
        }
    }

    /// Reports `chunk`'s read as the sources do.
    fn read(backfill: &mut Backfiller, chunk: &Chunk) {
        backfill.chunk_read(
            chunk.rows.last().map(|r| r.resume_key.clone()),
            chunk.exhausted,
        );
    }

    fn emitted_keys(out: &[SourceEvent]) -> Vec<u8> {
        out.iter()
            .filter_map(|e| match e {
                SourceEvent::Change(c) => c.key.as_ref().map(|k| k[0]),
                _ => None,
            })
            .collect()
    }

    fn change(key: u8) -> SourceEvent {
        SourceEvent::Change(ChangeRecord {
            table: schema(),
            op: Op::Update,
            key: Some(vec![key]),
            before: None,
            after: Some(vec![key]),
            source: source(&schema(), SnapshotMarker::False),
            transaction: None,
            position: Position::Postgres(PgPosition::at(Lsn(10), 1)),
        })
    }

    fn request(id: u64) -> BackfillRequest {
        BackfillRequest {
            id,
            table: table(),
            condition: None,
            kind: BackfillKind::Initial,
        }
    }

    #[test]
    fn copies_of_tables_no_longer_captured_are_dropped() {
        let other = |id| BackfillRequest {
            table: TableId {
                namespace: "public".into(),
                table: format!("other{id}"),
            },
            ..request(id)
        };
        let mut backfill = Backfiller::new(None, 3);
        backfill.enqueue(vec![request(1), other(2), request(3), other(4)]);
        backfill.retain_captured(|t| t.table.starts_with("other"));
        let state = backfill.state().expect("state");
        assert_eq!(state.current.as_ref().map(|c| c.request.id), Some(2));
        let queued: Vec<u64> = state.queued.iter().map(|r| r.id).collect();
        assert_eq!(queued, vec![4]);
        backfill.retain_captured(|_| false);
        assert!(!backfill.is_active());
    }

    #[test]
    fn rows_changed_inside_the_window_are_left_to_the_stream() {
        let mut backfill = Backfiller::new(None, 3);
        backfill.enqueue(vec![request(1)]);
        let ask = backfill.next_chunk().expect("a chunk to read");
        assert!(ask.after.is_none() && ask.limit == 3 && ask.estimate_rows);
        assert!(backfill.next_chunk().is_none(), "one chunk at a time");
        let mut events = vec![change(2)];
        backfill.observe(&mut events);
        assert!(
            events[0].position().backfill().is_some(),
            "positions carry the state"
        );
        let first = Chunk {
            rows_estimate: Some(5),
            ..chunk(&[1, 2, 3], false)
        };
        let at = Position::Postgres(PgPosition::at(Lsn(20), 0));
        read(&mut backfill, &first);
        let Completed::Emitted(out) = backfill.complete(first, &at, source) else {
            panic!("emitted")
        };
        let keys = emitted_keys(&out);
        assert_eq!(keys, [1, 3], "row 2 changed in the window");
        let last = out.last().unwrap().position().backfill().unwrap();
        let current = last.current.as_ref().unwrap();
        assert_eq!(current.after, Some(vec![KeyPart::Text("3".into())]));
        assert_eq!(current.rows_done, 2);
        assert_eq!(current.rows_estimate, Some(5));
        assert!(out[0].position() < out[1].position() && out[1].position() <= out[2].position());

        let ask = backfill.next_chunk().unwrap();
        assert_eq!(ask.after, Some(vec![KeyPart::Text("3".into())]));
        let last = chunk(&[4], true);
        let Completed::Emitted(out) = backfill.complete(last, &at, source) else {
            panic!("emitted")
        };
        let SourceEvent::Change(last_row) = &out[0] else {
            panic!()
        };
        let SourceInfo::Postgres(info) = &last_row.source else {
            panic!()
        };
        assert_eq!(info.snapshot, SnapshotMarker::Last);
        assert!(!backfill.is_active(), "done");
        assert_eq!(backfill.state().unwrap().last_request_id, 1);
    }

    #[test]
    fn snapshot_rows_are_marked_first_and_last_per_table_and_overall_as_debezium_does() {
        let t2 = TableId {
            namespace: "public".into(),
            table: "t2".into(),
        };
        let mut backfill = Backfiller::new(None, 3);
        backfill.enqueue(vec![
            request(1),
            BackfillRequest {
                table: t2.clone(),
                ..request(2)
            },
        ]);
        let at = Position::Postgres(PgPosition::at(Lsn(20), 0));
        let complete = |backfill: &mut Backfiller, chunk: Chunk| {
            backfill.next_chunk().expect("a chunk to read");
            read(backfill, &chunk);
            match backfill.complete(chunk, &at, source) {
                Completed::Emitted(out) => markers(&out),
                Completed::Discarded => panic!("emitted"),
            }
        };
        assert_eq!(
            complete(&mut backfill, chunk(&[1, 2, 3], false)),
            ["first", "true", "true"]
        );
        // the table's last row changed inside the window: the last row emitted carries the mark
        backfill.next_chunk().expect("a chunk to read");
        backfill.observe(&mut [change(5)]);
        let last = chunk(&[4, 5], true);
        read(&mut backfill, &last);
        let Completed::Emitted(out) = backfill.complete(last, &at, source) else {
            panic!("emitted")
        };
        assert_eq!(markers(&out), ["last_in_data_collection"]);
        let other = |keys: &[u8], exhausted| Chunk {
            schema: Arc::new(TableSchema {
                id: t2.clone(),
                ..(*schema()).clone()
            }),
            ..chunk(keys, exhausted)
        };
        assert_eq!(
            complete(&mut backfill, other(&[1, 2, 3], false)),
            ["first_in_data_collection", "true", "true"]
        );
        assert_eq!(complete(&mut backfill, other(&[4], true)), ["last"]);
        assert!(!backfill.is_active());
    }

    #[test]
    fn a_truncate_or_schema_change_in_the_window_discards_the_chunk() {
        let mut backfill = Backfiller::new(None, 10);
        backfill.enqueue(vec![request(1)]);
        backfill.next_chunk().unwrap();
        let SourceEvent::Change(mut truncate) = change(0) else {
            panic!()
        };
        truncate.op = Op::Truncate;
        truncate.key = None;
        backfill.observe(&mut [SourceEvent::Change(truncate)]);
        let chunk = chunk(&[1], true);
        let at = Position::Postgres(PgPosition::at(Lsn(20), 0));
        assert!(matches!(
            backfill.complete(chunk, &at, source),
            Completed::Discarded
        ));
        assert!(backfill.is_active(), "the table is read again");
        let again = backfill.next_chunk().unwrap();
        assert!(again.after.is_none());
    }

    #[test]
    fn the_next_chunk_is_read_while_the_previous_waits_for_its_watermark() {
        let mut backfill = Backfiller::new(None, 2);
        backfill.enqueue(vec![request(1)]);
        backfill.next_chunk().unwrap();
        assert!(
            backfill.next_chunk().is_none(),
            "the first read has not come back"
        );
        let first = chunk(&[1, 2], false);
        read(&mut backfill, &first);
        let second = backfill.next_chunk().expect("read ahead");
        assert_eq!(second.after, Some(vec![KeyPart::Text("2".into())]));
        assert!(
            backfill.next_chunk().is_none(),
            "two chunks in flight at most"
        );
        // a change to key 3 lands in the second window only: the first emits both rows
        backfill.observe(&mut [change(3)]);
        let at = Position::Postgres(PgPosition::at(Lsn(20), 0));
        let Completed::Emitted(out) = backfill.complete(first, &at, source) else {
            panic!("emitted")
        };
        assert_eq!(out.len(), 3);
        let second_chunk = chunk(&[3, 4], true);
        read(&mut backfill, &second_chunk);
        let Completed::Emitted(out) = backfill.complete(second_chunk, &at, source) else {
            panic!("emitted")
        };
        let keys = emitted_keys(&out);
        assert_eq!(
            keys,
            [4],
            "key 3 changed while the second chunk was in flight"
        );
        assert!(!backfill.is_active());
    }

    #[test]
    fn a_discarded_chunk_discards_the_chunks_read_after_it() {
        let mut backfill = Backfiller::new(None, 2);
        backfill.enqueue(vec![request(1)]);
        backfill.next_chunk().unwrap();
        let first = chunk(&[1, 2], false);
        read(&mut backfill, &first);
        backfill.next_chunk().unwrap();
        let SourceEvent::Change(mut truncate) = change(0) else {
            panic!()
        };
        truncate.op = Op::Truncate;
        backfill.observe(&mut [SourceEvent::Change(truncate)]);
        let at = Position::Postgres(PgPosition::at(Lsn(20), 0));
        assert!(matches!(
            backfill.complete(first, &at, source),
            Completed::Discarded
        ));
        assert_eq!(backfill.chunks_in_flight(), 0);
        let again = backfill.next_chunk().unwrap();
        assert!(
            again.after.is_none(),
            "read again from the last emitted key"
        );
    }

    #[test]
    fn requests_are_accepted_once_and_state_round_trips() {
        let inbox = BackfillInbox::default();
        inbox.offer(request(7));
        inbox.offer(request(7));
        let mut backfill = Backfiller::new(None, 10);
        assert!(backfill.accept(&inbox));
        assert!(!backfill.accept(&inbox), "id 7 was accepted already");
        let state = backfill.state().unwrap().clone();
        let json = serde_json::to_string(&state).unwrap();
        let back: BackfillState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, *state);
        assert_eq!(
            KeyPart::from_bytes(&[0xff, 0x00]).to_bytes(),
            vec![0xff, 0x00]
        );
    }

    #[test]
    fn a_pause_lets_the_chunk_in_flight_finish_and_asks_for_no_more() {
        let inbox = BackfillInbox::default();
        inbox.offer(request(1));
        let mut backfill = Backfiller::new(None, 2);
        backfill.accept(&inbox);
        backfill.next_chunk().expect("the first chunk");
        inbox.set_paused(true);
        let first = chunk(&[1, 2], false);
        read(&mut backfill, &first);
        assert!(backfill.next_chunk().is_none(), "paused: no read-ahead");
        assert!(backfill.is_copying(), "the chunk in flight still counts");
        let at = Position::Postgres(PgPosition::at(Lsn(20), 0));
        let Completed::Emitted(out) = backfill.complete(first, &at, source) else {
            panic!("emitted")
        };
        assert_eq!(emitted_keys(&out), vec![1, 2]);
        assert!(backfill.next_chunk().is_none());
        assert!(
            backfill.is_active() && !backfill.is_copying(),
            "paused mid-table"
        );
        inbox.set_paused(false);
        let next = backfill.next_chunk().expect("resumed");
        assert_eq!(next.after, Some(vec![KeyPart::Text("2".into())]));
    }

    #[test]
    fn a_stream_change_in_another_schema_version_discards_the_chunk() {
        let mut backfill = Backfiller::new(None, 10);
        backfill.enqueue(vec![request(1)]);
        backfill.next_chunk().unwrap();
        let mut old = chunk(&[1, 2], true);
        old.schema = Arc::new(TableSchema {
            version: 2,
            ..(*schema()).clone()
        });
        read(&mut backfill, &old);
        // the stream's change (version 1) shows the table in a shape the chunk was not read in
        backfill.observe(&mut [change(5)]);
        let at = Position::Postgres(PgPosition::at(Lsn(20), 0));
        assert!(matches!(
            backfill.complete(old, &at, source),
            Completed::Discarded
        ));
        assert!(backfill.next_chunk().is_some(), "read again");
    }
}

//! The stream side's chunk machinery, the same for every source: one chunk read at a time on a
//! connection of its own while the log is streamed, the chunks read waiting in order for the
//! stream to pass their high watermarks, and the operator's backfill requests picked up once a
//! second. A source supplies a [`ChunkRead`] (how to read a chunk and take its watermark) and
//! calls the scheduler as it passes log events; everything else lives here.

use super::reader::{ChunkOutcome, ChunkRead, ChunkRows, Watermark};
use super::{Backfiller, Chunk, Completed};
use crate::error::ConnectorError;
use crate::position::Position;
use crate::record::{SourceEvent, SourceInfo};
use crate::schema::TableSchema;
use crate::BackfillInbox;
use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the operator's backfill inbox is looked at.
const INBOX_CHECK: Duration = Duration::from_secs(1);

/// What ended a [`ChunkScheduler::wake`].
pub enum ChunkWake {
    /// The chunk read in flight came back: hand it to [`ChunkScheduler::chunk_done`].
    ChunkRead(Result<ChunkOutcome, ConnectorError>),
    /// The backfill inbox was looked at; nothing else to do.
    InboxChecked,
}

type ChunkTask<R> = tokio::task::JoinHandle<(R, Result<ChunkOutcome, ConnectorError>)>;

/// Aborts the chunk read in flight when the stream ends or drops it.
struct ChunkTaskGuard<R>(ChunkTask<R>);

impl<R> Drop for ChunkTaskGuard<R> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A chunk read, waiting for the stream to pass its watermark.
struct ReadyChunk {
    schema: Arc<TableSchema>,
    rows: ChunkRows,
    exhausted: bool,
    rows_estimate: Option<u64>,
    watermark: Watermark,
}

/// The snapshot in progress beside a stream: the [`Backfiller`] (queue, windows, progress),
/// the chunk reader idle or in flight, and the chunks read but not yet passed.
pub struct ChunkScheduler<R: ChunkRead> {
    backfill: Backfiller,
    idle: Option<R>,
    task: Option<ChunkTaskGuard<R>>,
    ready: VecDeque<ReadyChunk>,
    signals_seen: HashSet<String>,
    /// Only signals starting with this are this process's (every reader of a log sees every
    /// pipeline's watermarks).
    own_signals: String,
    inbox: BackfillInbox,
    inbox_timer: tokio::time::Interval,
    requested_at: Instant,
}

impl<R: ChunkRead> ChunkScheduler<R> {
    /// Takes over `backfill` for a stream, with the requests already in `inbox`.
    pub fn new(mut backfill: Backfiller, own_signals: String, inbox: &BackfillInbox) -> Self {
        backfill.accept(inbox);
        ChunkScheduler {
            backfill,
            idle: None,
            task: None,
            ready: VecDeque::new(),
            signals_seen: HashSet::new(),
            own_signals,
            inbox: inbox.clone(),
            inbox_timer: tokio::time::interval(INBOX_CHECK),
            requested_at: Instant::now(),
        }
    }

    pub fn backfill(&self) -> &Backfiller {
        &self.backfill
    }

    /// Whether table copies are still going (the stream may not stop at its target yet).
    pub fn is_copying(&self) -> bool {
        self.backfill.is_copying()
    }

    /// Passes the stream's new events to the backfill (see [`Backfiller::observe`]).
    pub fn observe(&mut self, events: &mut [SourceEvent]) {
        self.backfill.observe(events);
    }

    /// Resolves when the chunk read in flight comes back or the inbox is due. Cancel-safe: a
    /// `select!` beside the log's next event may drop it at any time.
    pub async fn wake(&mut self) -> ChunkWake {
        let joined = tokio::select! {
            joined = async {
                match self.task.as_mut() {
                    Some(task) => (&mut task.0).await,
                    None => std::future::pending().await,
                }
            } => joined,
            _ = self.inbox_timer.tick() => {
                self.backfill.accept(&self.inbox);
                return ChunkWake::InboxChecked;
            }
        };
        self.task = None;
        match joined {
            Ok((reader, outcome)) => {
                self.idle = Some(reader);
                ChunkWake::ChunkRead(outcome)
            }
            Err(e) => ChunkWake::ChunkRead(Err(ConnectorError::retryable(format!(
                "the snapshot chunk task failed: {e}"
            )))),
        }
    }

    /// A chunk read came back. Its schema gets the stream's version from `version`; a table
    /// that cannot be copied is skipped, with a progress event at `here` (when the stream is
    /// between transactions) appended to `batch` so the checkpoint records the skip.
    pub fn chunk_done(
        &mut self,
        outcome: ChunkOutcome,
        version: impl FnOnce(&TableSchema) -> Result<u32, ConnectorError>,
        here: Option<Position>,
        batch: &mut Vec<SourceEvent>,
    ) -> Result<(), ConnectorError> {
        match outcome {
            ChunkOutcome::Rows(read) => {
                let mut schema = read.schema;
                schema.version = version(&schema)?;
                tracing::debug!(
                    exhausted = read.exhausted,
                    read_ms = self.requested_at.elapsed().as_millis() as u64,
                    "snapshot chunk read"
                );
                self.backfill.chunk_read(read.last_key, read.exhausted);
                self.ready.push_back(ReadyChunk {
                    schema: Arc::new(schema),
                    rows: read.rows,
                    exhausted: read.exhausted,
                    rows_estimate: read.rows_estimate,
                    watermark: read.watermark,
                });
            }
            ChunkOutcome::Skip(why) => {
                self.backfill.skip_current(&why);
                self.ready.clear();
                if let Some(here) = here {
                    let mut progress = vec![SourceEvent::Progress(here)];
                    self.backfill.observe(&mut progress);
                    batch.append(&mut progress);
                }
            }
        }
        Ok(())
    }

    /// The stream carried `value` (a signal-table row, a logical message): a watermark if it
    /// is this process's.
    pub fn signal(&mut self, value: &str) {
        if value.starts_with(&self.own_signals) {
            self.signals_seen.insert(value.to_string());
        }
    }

    /// Emits into `batch`, in order, every chunk whose watermark the stream has passed at
    /// `here` (`None` inside a transaction: nothing is emitted there). `source_info` gives a
    /// chunk's source block at the source's position, marked as a snapshot row; the scheduler
    /// sets each row's marker.
    pub async fn emit_passed<P: Clone + Into<Position>>(
        &mut self,
        here: impl Fn() -> Option<P>,
        source_info: impl Fn(&TableSchema, &P) -> SourceInfo,
        batch: &mut Vec<SourceEvent>,
    ) -> Result<(), ConnectorError> {
        while let Some(waiting) = self.ready.front() {
            let Some(here) = here() else {
                break;
            };
            let at: Position = here.clone().into();
            let passed = match &waiting.watermark {
                Watermark::Position(high) => at >= *high,
                Watermark::Signal(mark) => self.signals_seen.remove(mark),
            };
            if !passed {
                break;
            }
            let Some(waiting) = self.ready.pop_front() else {
                break;
            };
            let template = source_info(&waiting.schema, &here);
            // usually converted by now; the wait is for its last rows at most
            let chunk = Chunk {
                rows: waiting.rows.finish().await?,
                schema: waiting.schema,
                exhausted: waiting.exhausted,
                rows_estimate: waiting.rows_estimate,
            };
            let completed = self.backfill.complete(chunk, &at, |_, marker| {
                template.clone().with_snapshot(marker)
            });
            match completed {
                Completed::Emitted(rows) => batch.extend(rows),
                Completed::Discarded => {
                    // the chunks read after it are read again too
                    self.ready.clear();
                    self.signals_seen.clear();
                    self.task = None;
                    self.idle = None;
                }
            }
        }
        Ok(())
    }

    /// Starts reading the next chunk if none is in flight and one is due, on the idle reader
    /// or on a new one from `connect`. The read goes on while the stream's batch is sent.
    pub async fn read_next<F, Fut>(&mut self, connect: F) -> Result<(), ConnectorError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<R, ConnectorError>>,
    {
        if self.task.is_some() {
            return Ok(());
        }
        let Some(request) = self.backfill.next_chunk() else {
            return Ok(());
        };
        let mut reader = match self.idle.take() {
            Some(reader) => reader,
            None => connect().await?,
        };
        self.requested_at = Instant::now();
        self.task = Some(ChunkTaskGuard(tokio::spawn(async move {
            let outcome = reader.read(&request).await;
            (reader, outcome)
        })));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backfill::{
        BackfillKind, BackfillRequest, ChunkRequest, ChunkRow, KeyPart, ReadChunk,
    };
    use crate::position::PgPosition;
    use crate::record::{ChangeRecord, Op, PgSourceInfo, SnapshotMarker};
    use crate::schema::{Column, FieldType, TableId};
    use crate::Lsn;
    use std::sync::Mutex;

    fn table() -> TableId {
        TableId {
            namespace: "public".into(),
            table: "t".into(),
        }
    }

    fn schema() -> TableSchema {
        TableSchema {
            id: table(),
            version: 0,
            columns: vec![Column {
                name: "id".into(),
                field_type: FieldType::Long,
                nullable: false,
                sql_type: "int8".into(),
            }],
            primary_key: vec![0],
        }
    }

    fn info(_: &TableSchema, here: &PgPosition) -> SourceInfo {
        SourceInfo::Postgres(PgSourceInfo {
            ts_us: 0,
            snapshot: SnapshotMarker::True,
            db: "db".into(),
            schema: "public".into(),
            table: Some("t".into()),
            tx_id: None,
            lsn: Some(here.lsn.0 as i64),
            last_commit_lsn: None,
        })
    }

    /// Reads chunks of `keys` from a fixed table, each with the next scripted watermark, and
    /// records every request it was given.
    struct ScriptedReader {
        keys: Vec<u8>,
        watermarks: Arc<Mutex<VecDeque<Watermark>>>,
        requests: Arc<Mutex<Vec<ChunkRequest>>>,
    }

    #[async_trait::async_trait]
    impl ChunkRead for ScriptedReader {
        async fn read(&mut self, request: &ChunkRequest) -> Result<ChunkOutcome, ConnectorError> {
            self.requests.lock().unwrap().push(request.clone());
            let after = match request.after.as_deref() {
                Some([KeyPart::Text(k)]) => k.parse::<u8>().unwrap(),
                _ => 0,
            };
            let rows: Vec<ChunkRow> = self
                .keys
                .iter()
                .filter(|k| **k > after)
                .take(request.limit)
                .map(|k| ChunkRow {
                    key: vec![*k],
                    after: vec![*k],
                    resume_key: vec![KeyPart::Text(k.to_string())],
                })
                .collect();
            let Some(watermark) = self.watermarks.lock().unwrap().pop_front() else {
                return Ok(ChunkOutcome::Skip("no watermark scripted".into()));
            };
            Ok(ChunkOutcome::Rows(Box::new(ReadChunk {
                schema: schema(),
                last_key: rows.last().map(|r| r.resume_key.clone()),
                exhausted: rows.len() < request.limit,
                rows: ChunkRows::Ready(rows),
                rows_estimate: None,
                watermark,
            })))
        }
    }

    struct Harness {
        chunks: ChunkScheduler<ScriptedReader>,
        watermarks: Arc<Mutex<VecDeque<Watermark>>>,
        requests: Arc<Mutex<Vec<ChunkRequest>>>,
    }

    fn harness(keys: &[u8], chunk_size: usize, watermarks: Vec<Watermark>) -> Harness {
        let mut backfill = Backfiller::new(None, chunk_size);
        backfill.enqueue(BackfillRequest::whole_tables(
            vec![table()],
            BackfillKind::Initial,
        ));
        let watermarks = Arc::new(Mutex::new(VecDeque::from(watermarks)));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let mut chunks = ChunkScheduler::new(backfill, "me:".into(), &BackfillInbox::default());
        let reader = ScriptedReader {
            keys: keys.to_vec(),
            watermarks: Arc::clone(&watermarks),
            requests: Arc::clone(&requests),
        };
        chunks.idle = Some(reader);
        Harness {
            chunks,
            watermarks,
            requests,
        }
    }

    impl Harness {
        /// Starts the next read and waits for it to come back (inbox checks in between).
        async fn read_one(&mut self, batch: &mut Vec<SourceEvent>) {
            self.chunks
                .read_next(|| async { Err(ConnectorError::definite("no second reader")) })
                .await
                .unwrap();
            loop {
                if let ChunkWake::ChunkRead(outcome) = self.chunks.wake().await {
                    let here = Some(Position::Postgres(PgPosition::at(Lsn(1), 0)));
                    self.chunks
                        .chunk_done(outcome.unwrap(), |_| Ok(1), here, batch)
                        .unwrap();
                    return;
                }
            }
        }

        async fn emit_at(&mut self, lsn: u64, batch: &mut Vec<SourceEvent>) {
            let here = PgPosition::at(Lsn(lsn), 0);
            self.chunks
                .emit_passed(|| Some(here.clone()), info, batch)
                .await
                .unwrap();
        }
    }

    fn snapshot_keys(batch: &[SourceEvent]) -> Vec<u8> {
        batch
            .iter()
            .filter_map(|e| match e {
                SourceEvent::Change(c) if c.op == Op::Read => c.key.as_ref().map(|k| k[0]),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn a_chunk_waits_for_its_own_signal_and_chunks_come_out_in_order() {
        let mut h = harness(
            &[1, 2, 3],
            2,
            vec![
                Watermark::Signal("me:1".into()),
                Watermark::Signal("me:2".into()),
            ],
        );
        let mut batch = Vec::new();
        h.read_one(&mut batch).await;
        h.emit_at(5, &mut batch).await;
        assert_eq!(
            snapshot_keys(&batch),
            Vec::<u8>::new(),
            "no watermark seen yet"
        );
        h.chunks.signal("other:1"); // another pipeline's watermark
        h.chunks.signal("me:2"); // a later chunk's, seen early: kept for later
        h.emit_at(5, &mut batch).await;
        assert_eq!(snapshot_keys(&batch), Vec::<u8>::new());
        h.chunks.signal("me:1");
        h.emit_at(5, &mut batch).await;
        assert_eq!(snapshot_keys(&batch), vec![1, 2]);
        h.read_one(&mut batch).await;
        h.emit_at(6, &mut batch).await;
        assert_eq!(
            snapshot_keys(&batch),
            vec![1, 2, 3],
            "its signal came before it"
        );
        assert!(!h.chunks.is_copying(), "the table is done");
        let requests = h.requests.lock().unwrap();
        assert_eq!(requests.len(), 2);
        assert!(requests[0].after.is_none());
        assert_eq!(requests[1].after, Some(vec![KeyPart::Text("2".into())]));
    }

    #[tokio::test]
    async fn a_position_watermark_is_passed_once_the_stream_reaches_it() {
        let high = Position::Postgres(PgPosition::at(Lsn(100), 0));
        let mut h = harness(&[1], 10, vec![Watermark::Position(high)]);
        let mut batch = Vec::new();
        h.read_one(&mut batch).await;
        h.emit_at(99, &mut batch).await;
        assert!(snapshot_keys(&batch).is_empty());
        h.chunks
            .emit_passed(|| None::<PgPosition>, info, &mut batch)
            .await
            .unwrap();
        assert!(
            snapshot_keys(&batch).is_empty(),
            "never inside a transaction"
        );
        h.emit_at(100, &mut batch).await;
        assert_eq!(snapshot_keys(&batch), vec![1]);
    }

    #[tokio::test]
    async fn a_discarded_chunk_is_read_again_from_the_same_key() {
        let mut h = harness(
            &[1, 2],
            10,
            vec![
                Watermark::Signal("me:1".into()),
                Watermark::Signal("me:2".into()),
            ],
        );
        let mut batch = Vec::new();
        h.read_one(&mut batch).await;
        // the table is truncated inside the chunk's window
        let mut truncate = vec![SourceEvent::Change(ChangeRecord {
            table: Arc::new(TableSchema {
                version: 1,
                ..schema()
            }),
            op: Op::Truncate,
            key: None,
            before: None,
            after: None,
            source: info(&schema(), &PgPosition::at(Lsn(2), 0)),
            transaction: None,
            position: Position::Postgres(PgPosition::at(Lsn(2), 0)),
        })];
        h.chunks.observe(&mut truncate);
        h.chunks.signal("me:1");
        h.emit_at(3, &mut batch).await;
        assert!(snapshot_keys(&batch).is_empty(), "discarded");
        h.watermarks
            .lock()
            .unwrap()
            .push_front(Watermark::Signal("me:3".into()));
        h.chunks.idle = Some(ScriptedReader {
            keys: vec![1, 2],
            watermarks: Arc::clone(&h.watermarks),
            requests: Arc::clone(&h.requests),
        });
        h.read_one(&mut batch).await;
        h.chunks.signal("me:3");
        h.emit_at(4, &mut batch).await;
        assert_eq!(snapshot_keys(&batch), vec![1, 2]);
        let requests = h.requests.lock().unwrap();
        assert!(requests.iter().all(|r| r.after.is_none()));
    }

    #[tokio::test]
    async fn a_table_that_cannot_be_copied_is_skipped_with_a_progress_event() {
        let mut h = harness(&[1], 10, vec![]);
        let mut batch = Vec::new();
        h.read_one(&mut batch).await;
        assert!(matches!(batch.as_slice(), [SourceEvent::Progress(_)]));
        assert!(!h.chunks.is_copying());
    }
}

//! The replication loop: pgoutput messages in, change events out, the durable position
//! confirmed to the server, and snapshot chunks emitted as the stream passes their watermarks.

use crate::catalog;
use crate::pgoutput::{self, Message, Relation};
use crate::protocol::{ProtocolError, ReplicationConnection, StreamMessage};
use crate::snapshot::{ChunkReader, WATERMARK_PREFIX};
use crate::source::{PostgresSource, HEARTBEAT_PREFIX};
use crate::stream::{PgReader, RelationInfo, Step};
use headwater_contract::backfill::{ChunkScheduler, ChunkWake};
use headwater_contract::schema_history::SchemaHistory;
use headwater_contract::{
    ConnectorError, DurableWatch, EventSender, Lsn, PgPosition, PgSourceInfo, Position,
    SnapshotMarker, SourceEvent, SourceInfo, TableSchema,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Events gathered before they are handed on, inside a large transaction.
const BATCH: usize = 1024;

/// What woke the replication loop.
enum Wake {
    /// A message from the server, an error, or `Err` when the status update is due.
    Stream(Result<Result<StreamMessage, ProtocolError>, tokio::time::error::Elapsed>),
    Chunks(ChunkWake),
}

/// A running replication stream and everything it keeps between messages.
pub(crate) struct Replication<'s> {
    pub source: &'s mut PostgresSource,
    pub conn: ReplicationConnection,
    /// Answers catalog questions (Relation messages) beside the stream.
    pub client: tokio_postgres::Client,
    pub history: SchemaHistory,
    pub reader: PgReader,
    pub chunks: ChunkScheduler<ChunkReader>,
    pub events: &'s EventSender,
    pub durable: &'s DurableWatch,
    /// The highest WAL position the server has sent.
    pub received: u64,
}

impl Replication<'_> {
    /// Streams until the catch-up target (with no copy pending), the pipeline's end, or an
    /// error; then tells the server where the sink is and ends the stream.
    pub async fn run(mut self) -> Result<(), ConnectorError> {
        let result = self.stream().await;
        // bounded: after a black hole neither would return
        let closing = async {
            let flushed = durable_lsn(self.durable);
            let _ = self.conn.send_status(self.received, flushed, false).await;
            self.conn.finish().await;
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), closing).await;
        result
    }

    async fn stream(&mut self) -> Result<(), ConnectorError> {
        let status_interval = self.source.server.config.status_interval;
        let silence = self.source.server.config.silence_limit();
        let mut batch = Vec::new();
        let mut next_status = Instant::now();
        let mut last_heard = Instant::now();
        let mut reached_stop = false;
        loop {
            let deadline = tokio::time::Instant::from_std(next_status);
            let wake = tokio::select! {
                message = tokio::time::timeout_at(deadline, self.conn.next()) => Wake::Stream(message),
                woke = self.chunks.wake() => Wake::Chunks(woke),
            };
            let step = match wake {
                Wake::Chunks(ChunkWake::InboxChecked) => Step::Continue,
                Wake::Chunks(ChunkWake::ChunkRead(outcome)) => {
                    let here = self.reader.boundary().cloned().map(Position::Postgres);
                    let history = &mut self.history;
                    self.chunks.chunk_done(
                        outcome?,
                        |schema| history.version_of(schema),
                        here,
                        &mut batch,
                    )?;
                    Step::Continue
                }
                Wake::Stream(Err(_)) => {
                    // A connection that went silent without a reset (a black hole) is noticed
                    // here: the server answers every status update asking for a reply, and the
                    // heartbeats put a message into the stream at least every interval.
                    if last_heard.elapsed() > silence {
                        return Err(ConnectorError::retryable(format!(
                            "no message from the server for {silence:?} (it is asked for a keepalive every status_interval); reconnecting"
                        )));
                    }
                    self.send_status(silence).await?;
                    next_status = Instant::now() + status_interval;
                    Step::Continue
                }
                Wake::Stream(Ok(Err(err))) => {
                    return Err(self
                        .source
                        .replication_error(err, "reading the replication stream"))
                }
                Wake::Stream(Ok(Ok(message))) => {
                    last_heard = Instant::now();
                    let from = batch.len();
                    let step = match message {
                        StreamMessage::Keepalive {
                            wal_end,
                            reply_requested,
                        } => {
                            self.received = self.received.max(wal_end);
                            if reply_requested {
                                next_status = Instant::now();
                            }
                            self.reader.keepalive(wal_end, &mut batch)
                        }
                        StreamMessage::XLogData {
                            wal_start,
                            wal_end,
                            data,
                        } => {
                            self.received = self.received.max(wal_end);
                            self.xlog_data(wal_start, &data, &mut batch).await?
                        }
                    };
                    self.chunks.observe(&mut batch[from..]);
                    step
                }
            };
            if step == Step::Done {
                reached_stop = true;
            }
            self.emit_and_read_chunks(&mut batch).await?;
            let finished = reached_stop && !self.chunks.is_copying();
            let flush = finished || batch.len() >= BATCH || !self.reader.in_transaction();
            if flush
                && !batch.is_empty()
                && self
                    .events
                    .send_all(std::mem::take(&mut batch))
                    .await
                    .is_err()
            {
                return Ok(());
            }
            if finished {
                return Ok(());
            }
        }
    }

    /// Confirms the durable position. Between transactions it asks for a keepalive: its WAL
    /// end moves the position on while the published tables are quiet.
    async fn send_status(&mut self, silence: Duration) -> Result<(), ConnectorError> {
        let flushed = durable_lsn(self.durable);
        let sent = tokio::time::timeout(
            silence,
            self.conn
                .send_status(self.received, flushed, !self.reader.in_transaction()),
        )
        .await;
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(self
                .source
                .replication_error(err, "confirming the durable position")),
            Err(_) => Err(ConnectorError::retryable(format!(
                "the server took no status update for {silence:?}; reconnecting"
            ))),
        }
    }

    /// One pgoutput message, its events appended to `batch`.
    async fn xlog_data(
        &mut self,
        wal_start: u64,
        data: &[u8],
        batch: &mut Vec<SourceEvent>,
    ) -> Result<Step, ConnectorError> {
        let message = pgoutput::parse(data).map_err(|err| {
            ConnectorError::definite(format!("{err} at {}; report this", Lsn(wal_start)))
        })?;
        match message {
            Message::Relation(relation) => {
                self.relation(relation, batch).await?;
                Ok(Step::Continue)
            }
            Message::Message {
                prefix, content, ..
            } if prefix == WATERMARK_PREFIX => {
                // every slot of the database decodes every pipeline's watermarks; the
                // scheduler keeps this process's (one may arrive before its chunk's read returns)
                self.chunks.signal(&String::from_utf8_lossy(content));
                Ok(Step::Continue)
            }
            Message::Message { prefix, .. } if prefix != HEARTBEAT_PREFIX => {
                tracing::debug!(prefix, "ignoring a logical decoding message");
                Ok(Step::Continue)
            }
            other => self.reader.handle(other, wal_start, batch),
        }
    }

    /// A Relation message: describes a captured table (with a new schema version when its
    /// shape changed), or notes that the relation is not captured.
    async fn relation(
        &mut self,
        relation: Relation,
        batch: &mut Vec<SourceEvent>,
    ) -> Result<(), ConnectorError> {
        let server = &self.source.server;
        if !server.filter.captures(&relation.namespace, &relation.name) {
            self.reader.set_relation(relation.oid, None);
            return Ok(());
        }
        let describing = catalog::describe_relation(
            &self.client,
            &server.config.url,
            &relation,
            server.config.unknown_types,
        );
        let limit = server.config.silence_limit();
        let (schema, types) = tokio::time::timeout(limit, describing)
            .await
            .map_err(|_| {
                ConnectorError::retryable(format!(
                    "no answer from the server for {limit:?} while describing table {}.{}; reconnecting",
                    relation.namespace, relation.name
                ))
            })??;
        let plan = server.filter.column_plan(&schema)?;
        let mut schema = plan.as_ref().map_or(schema, |p| p.output().clone());
        let known = self.history.known_versions(&schema.id.to_string());
        schema.version = self.history.version_of(&schema)?;
        let info = Arc::new(RelationInfo {
            schema: Arc::new(schema),
            types,
            plan,
        });
        if info.schema.version > known && known > 0 {
            self.reader.schema_change(&info, batch);
        }
        self.reader.set_relation(relation.oid, Some(info));
        Ok(())
    }

    /// Emits the chunks whose watermarks the stream has passed, then starts reading the next
    /// chunk, which goes on while this batch goes down the pipeline.
    async fn emit_and_read_chunks(
        &mut self,
        batch: &mut Vec<SourceEvent>,
    ) -> Result<(), ConnectorError> {
        let reader = &self.reader;
        let database = self.source.server.params.database.as_str();
        self.chunks
            .emit_passed(
                || reader.boundary().cloned(),
                |schema, here| snapshot_source_info(database, schema, here),
                batch,
            )
            .await?;
        let source = &*self.source;
        self.chunks.read_next(|| source.chunk_reader()).await
    }
}

/// The source block of a snapshot row emitted at `here`.
fn snapshot_source_info(database: &str, schema: &TableSchema, here: &PgPosition) -> SourceInfo {
    SourceInfo::Postgres(PgSourceInfo {
        ts_us: headwater_contract::now_us(),
        snapshot: SnapshotMarker::True,
        db: Arc::from(database),
        schema: Arc::from(schema.id.namespace.as_str()),
        table: Some(Arc::from(schema.id.table.as_str())),
        tx_id: None,
        lsn: Some(here.lsn.0 as i64),
        last_commit_lsn: None,
    })
}

/// The LSN the sink has made durable, as the standby status update's flush position.
fn durable_lsn(durable: &DurableWatch) -> u64 {
    match &*durable.borrow() {
        Some(Position::Postgres(p)) => p.lsn.0,
        _ => 0,
    }
}

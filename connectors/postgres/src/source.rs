//! The PostgreSQL source: slot and publication set-up, preflight, and the replication loop
//! that confirms to the server only what the sink has made durable.

use crate::catalog;
use crate::config::PostgresConfig;
use crate::pgoutput::{self, Message};
use crate::protocol::SESSION_OPTIONS;
use crate::protocol::{ProtocolError, ReplicationConnection, ServerError, StreamMessage};
use crate::server::PostgresServer;
use crate::snapshot::{ChunkOutcome, ChunkReader, WATERMARK_PREFIX};
use crate::stream::{PgReader, RelationInfo, Step};
use async_trait::async_trait;
use headwater_contract::backfill::{Chunk, ChunkRow};
use headwater_contract::schema_history::SchemaHistory;
use headwater_contract::{
    BackfillKind, BackfillRequest, BackfillState, Backfiller, Completed, ConnectorError,
    DurableWatch, EventSender, Lsn, PgPosition, PgSourceInfo, Position, Problem, SnapshotMarker,
    SnapshotMode, Source, SourceEvent, SourceInfo, StreamContext, TableId, TableSchema,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const HEARTBEAT_PREFIX: &str = "headwater.heartbeat";
/// Events gathered before they are handed on, inside a large transaction.
const BATCH: usize = 1024;
/// How long a slot may stay busy (e.g. the walsender of a killed predecessor) before giving up.
const SLOT_BUSY_LIMIT: Duration = Duration::from_secs(20);

pub struct PostgresSource {
    pub(crate) server: PostgresServer,
    pub(crate) state_dir: PathBuf,
    pub(crate) slot_busy_since: Option<Instant>,
}

impl PostgresSource {
    pub fn new(config: PostgresConfig, state_dir: &Path) -> Result<Self, ConnectorError> {
        Ok(PostgresSource {
            server: PostgresServer::new(config)?,
            state_dir: state_dir.to_path_buf(),
            slot_busy_since: None,
        })
    }

    /// `ALTER_REPLICATION_SLOT … (FAILOVER true)`: a replication command (PostgreSQL 17+ has
    /// no SQL function for it), on a connection of its own.
    async fn make_failover_slot(&mut self) -> Result<(), ConnectorError> {
        let alter = format!(
            "ALTER_REPLICATION_SLOT \"{}\" ( FAILOVER true )",
            self.server.config.slot
        );
        let altered =
            match ReplicationConnection::connect(&self.server.params, SESSION_OPTIONS).await {
                Ok(mut conn) => conn.simple_query(&alter).await.map(|_| ()),
                Err(err) => Err(err),
            };
        altered.map_err(|e| self.replication_error(e, "making the slot a failover slot"))?;
        tracing::info!(slot = %self.server.config.slot, "the slot is now a failover slot (source.failover = true)");
        Ok(())
    }

    /// Classifies an error of the replication connection, naming the fix.
    fn replication_error(&mut self, err: ProtocolError, what: &str) -> ConnectorError {
        let slot = &self.server.config.slot;
        match err {
            ProtocolError::Server(ServerError {
                code,
                message,
                detail,
            }) => {
                let full = format!(
                    "{message}{}",
                    detail
                        .as_deref()
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default()
                );
                let recover = format!(
                    "To recover: set source.snapshot = \"when_needed\" and restart (a new slot is made and every table copied again), or SELECT pg_drop_replication_slot('{slot}') if it still exists, move state.path and the sink's data away and start again"
                );
                match code.as_str() {
                    "55000" if message.contains("cannot read from logical replication slot") || detail.as_deref().is_some_and(|d| d.contains("exceeded")) => {
                        ConnectorError::position_lost(format!(
                            "{what}: replication slot {slot} was invalidated: the server dropped the WAL it held because it exceeded max_slot_wal_keep_size ({full}). {recover}. Raise max_slot_wal_keep_size or keep Headwater running so it does not recur."
                        ))
                    }
                    "42704" if message.contains("publication") => ConnectorError::definite(format!(
                        "{what}: {full}; create the publication (or set source.create_publication = true). Recreating it does not repair the slot: {recover}"
                    )),
                    "42704" => {
                        let failover = if self.server.config.failover {
                            ""
                        } else {
                            " If the server failed over to a standby, the slot stayed behind on the old primary: set source.failover = true (PostgreSQL 17+, sync_replication_slots = on on the standbys) so standbys keep a copy."
                        };
                        ConnectorError::position_lost(format!("{what}: replication slot {slot} no longer exists ({full}). {recover}.{failover}"))
                    }
                    "55006" => {
                        let since = *self.slot_busy_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > SLOT_BUSY_LIMIT {
                            ConnectorError::definite(format!(
                                "{what}: replication slot {slot} is in use by another process ({full}) for over {SLOT_BUSY_LIMIT:?}; stop the other reader (another Headwater with the same slot?) or give this pipeline its own source.slot"
                            ))
                        } else {
                            ConnectorError::retryable(format!("{what}: replication slot {slot} is busy ({full}); waiting for the other reader to let go"))
                        }
                    }
                    "28P01" | "28000" => ConnectorError::definite(format!("{what}: authentication failed ({full}); check the user and password in source.url")),
                    "42501" => ConnectorError::definite(format!(
                        "{what}: permission denied ({full}); the role needs the REPLICATION attribute: ALTER ROLE {} REPLICATION",
                        self.server.params.user
                    )),
                    "57P01" | "57P02" | "57P03" | "53300" => ConnectorError::retryable(format!("{what}: {full} (SQLSTATE {code})")),
                    _ => ConnectorError::definite(format!("{what}: {full} (SQLSTATE {code})")),
                }
            }
            ProtocolError::Auth(message) => {
                ConnectorError::definite(format!("{what}: {message}; check source.url"))
            }
            other => ConnectorError::retryable(format!("{what}: {other}")),
        }
    }
}

/// Emits a transactional logical message now and then, so the slot advances on a quiet database.
async fn heartbeats(url: String, tls: Option<Arc<rustls::ClientConfig>>, every: Duration) {
    let client = match catalog::connect(&url, tls.as_ref()).await {
        Ok(client) => client,
        Err(err) => {
            tracing::warn!(error = %err.report(), "heartbeats disabled: cannot connect");
            return;
        }
    };
    let mut ticker = tokio::time::interval(every);
    loop {
        ticker.tick().await;
        if let Err(err) = client
            .execute(
                "SELECT pg_logical_emit_message(true, $1, '')",
                &[&HEARTBEAT_PREFIX],
            )
            .await
        {
            tracing::warn!(error = %err, "could not write a heartbeat message");
        }
    }
}

/// The LSN the sink has made durable, as the standby status update's flush position.
fn durable_lsn(durable: &DurableWatch) -> u64 {
    match &*durable.borrow() {
        Some(Position::Postgres(p)) => p.lsn.0,
        _ => 0,
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[async_trait]
impl Source for PostgresSource {
    async fn check(&mut self) -> Result<Vec<Problem>, ConnectorError> {
        crate::preflight::check(&self.server).await
    }

    async fn log_end(&mut self) -> Result<Position, ConnectorError> {
        let client =
            catalog::connect(&self.server.config.url, self.server.params.tls.as_ref()).await?;
        let lsn = catalog::current_wal_lsn(&client, &self.server.config.url).await?;
        Ok(Position::Postgres(PgPosition::at(lsn, 0)))
    }

    async fn log_status(
        &mut self,
        position: Option<&Position>,
    ) -> Result<headwater_contract::LogStatus, ConnectorError> {
        let client =
            catalog::connect(&self.server.config.url, self.server.params.tls.as_ref()).await?;
        let lsn = match position {
            Some(Position::Postgres(p)) => Some(p.lsn),
            _ => None,
        };
        catalog::log_status(
            &client,
            &self.server.config.url,
            &self.server.config.slot,
            lsn,
        )
        .await
    }

    async fn check_backfill(
        &mut self,
        table: &TableId,
        condition: Option<&str>,
    ) -> Result<(), ConnectorError> {
        if !self.server.filter.captures(&table.namespace, &table.table) {
            return Err(ConnectorError::definite(format!(
                "table {table} is not captured by this pipeline (source.include / source.exclude); add it there (and to the publication) first"
            )));
        }
        self.chunk_reader().await?.check(table, condition).await
    }

    async fn keyless_tables(&mut self) -> Result<Vec<TableId>, ConnectorError> {
        let client =
            catalog::connect(&self.server.config.url, self.server.params.tls.as_ref()).await?;
        let tables =
            catalog::captured_tables(&client, &self.server.config.url, &self.server.filter).await?;
        // a replica identity index identifies rows as a primary key does
        Ok(tables
            .into_iter()
            .filter(|(_, _, identity, has_key)| !has_key && identity != "i")
            .map(|(namespace, table, _, _)| TableId { namespace, table })
            .collect())
    }

    async fn stream(
        &mut self,
        resume: Option<Position>,
        stop_at: Option<Position>,
        events: EventSender,
        context: StreamContext,
    ) -> Result<(), ConnectorError> {
        let previous = resume.as_ref().and_then(|p| p.backfill().cloned());
        match self.run(resume, stop_at, &events, &context).await {
            Err(err)
                if err.is_position_lost()
                    && self.server.config.snapshot == SnapshotMode::WhenNeeded =>
            {
                self.recover(err, previous, &events).await
            }
            other => other,
        }
    }
}

type ChunkTask = tokio::task::JoinHandle<(ChunkReader, Result<ChunkOutcome, ConnectorError>)>;

/// Aborts the chunk task when the stream ends.
struct ChunkTaskGuard(ChunkTask);

impl Drop for ChunkTaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A chunk read and waiting for the stream to reach its watermark.
struct ReadyChunk {
    schema: Arc<TableSchema>,
    rows: tokio::task::JoinHandle<Result<Vec<ChunkRow>, ConnectorError>>,
    exhausted: bool,
    rows_estimate: Option<u64>,
    watermark: String,
}

/// What woke the replication loop.
enum Wake {
    Stream(Result<Result<StreamMessage, ProtocolError>, tokio::time::error::Elapsed>),
    Other,
}

impl PostgresSource {
    pub(crate) async fn chunk_reader(&self) -> Result<ChunkReader, ConnectorError> {
        ChunkReader::connect(
            &self.server.config.url,
            &self.server.params,
            &self.server.config.slot,
            self.server.config.unknown_types,
        )
        .await
    }

    /// `snapshot = "when_needed"`: the slot is gone or invalidated, so start over with a new
    /// slot and copy every captured table again.
    async fn recover(
        &mut self,
        err: ConnectorError,
        previous: Option<Arc<BackfillState>>,
        events: &EventSender,
    ) -> Result<(), ConnectorError> {
        tracing::error!(error = %err.report(), "THE REPLICATION SLOT'S POSITION IS LOST. source.snapshot = \"when_needed\": creating the slot again and copying every captured table. Rows deleted while the position was lost stay in the destination until cleaned up by hand");
        let url = self.server.config.url.clone();
        let client = catalog::connect(&url, self.server.params.tls.as_ref()).await?;
        if catalog::slot_state(&client, &url, &self.server.config.slot)
            .await?
            .is_some()
        {
            client
                .execute(
                    "SELECT pg_drop_replication_slot($1)",
                    &[&self.server.config.slot],
                )
                .await
                .map_err(|e| catalog::sql_error("dropping the lost replication slot", &url, e))?;
        }
        let lsn = catalog::create_slot(
            &client,
            &url,
            &self.server.config.slot,
            self.server.config.failover,
        )
        .await?;
        let tables = self
            .chunk_reader()
            .await?
            .tables(&self.server.filter)
            .await?;
        let mut backfill = Backfiller::new(previous, self.server.config.snapshot_chunk_size);
        backfill.enqueue(BackfillRequest::whole_tables(
            tables,
            BackfillKind::Recovery,
        ));
        if !backfill
            .send_start(Position::Postgres(PgPosition::at(lsn, 0)), events)
            .await
        {
            return Ok(());
        }
        Err(ConnectorError::retryable(
            "restarting from the new replication slot after the lost one",
        ))
    }

    async fn run(
        &mut self,
        resume: Option<Position>,
        stop_at: Option<Position>,
        events: &EventSender,
        context: &StreamContext,
    ) -> Result<(), ConnectorError> {
        let mut backfill = Backfiller::new(
            resume.as_ref().and_then(|p| p.backfill().cloned()),
            self.server.config.snapshot_chunk_size,
        );
        backfill.retain_captured(|t| self.server.filter.captures(&t.namespace, &t.table));
        // the backfill it carried is in `backfill` now
        let resume = resume
            .map(Position::into_postgres)
            .transpose()?
            .map(|p| PgPosition {
                backfill: None,
                ..p
            });
        let stop_at = match stop_at {
            Some(Position::Postgres(p)) => Some(p),
            _ => None,
        };
        let url = self.server.config.url.clone();
        let client = catalog::connect(&url, self.server.params.tls.as_ref()).await?;
        catalog::ensure_publication(&client, &self.server.config, &self.server.filter).await?;
        let slot = catalog::slot_state(&client, &url, &self.server.config.slot).await?;
        if resume.is_none() && self.server.config.snapshot != SnapshotMode::Never {
            let tables = self
                .chunk_reader()
                .await?
                .tables(&self.server.filter)
                .await?;
            tracing::info!(
                tables = tables.len(),
                "initial snapshot: copying every captured table while streaming"
            );
            backfill.enqueue(BackfillRequest::whole_tables(tables, BackfillKind::Initial));
        }
        // a slot made before source.failover was set becomes a failover slot on this start
        let make_failover =
            self.server.config.failover && slot.as_ref().is_some_and(|s| s.failover == Some(false));
        let start = match (slot, &resume) {
            (Some(slot), _) if slot.wal_status.as_deref() == Some("lost") => {
                return Err(self.replication_error(
                    ProtocolError::Server(ServerError {
                        code: "55000".into(),
                        message: format!(
                            "cannot read from logical replication slot \"{}\"",
                            self.server.config.slot
                        ),
                        detail: Some(
                            "its WAL status is lost: it exceeded the maximum reserved size".into(),
                        ),
                    }),
                    "checking the slot",
                ))
            }
            (Some(_), Some(resume)) => resume.clone(),
            (Some(slot), None) => {
                let confirmed: Lsn = slot
                    .confirmed_flush
                    .as_deref()
                    .unwrap_or("0/0")
                    .parse()
                    .unwrap_or_default();
                tracing::info!(slot = %self.server.config.slot, %confirmed, "starting from the existing slot's confirmed position");
                let start = PgPosition::at(confirmed, 0);
                if !backfill
                    .send_start(Position::Postgres(start.clone()), events)
                    .await
                {
                    return Ok(());
                }
                start
            }
            (None, None) => {
                let lsn = catalog::create_slot(
                    &client,
                    &url,
                    &self.server.config.slot,
                    self.server.config.failover,
                )
                .await?;
                tracing::info!(slot = %self.server.config.slot, %lsn, "created the replication slot");
                let start = PgPosition::at(lsn, 0);
                if !backfill
                    .send_start(Position::Postgres(start.clone()), events)
                    .await
                {
                    return Ok(());
                }
                start
            }
            (None, Some(resume)) => {
                return Err(self.replication_error(
                    ProtocolError::Server(ServerError {
                        code: "42704".into(),
                        message: format!(
                            "replication slot \"{}\" does not exist",
                            self.server.config.slot
                        ),
                        detail: Some(format!("the checkpoint is at {resume}")),
                    }),
                    "checking the slot",
                ))
            }
        };
        if make_failover {
            self.make_failover_slot().await?;
        }
        if stop_at.as_ref().is_some_and(|stop| start >= *stop)
            && start.rows_done == 0
            && !backfill.is_active()
        {
            return Ok(());
        }
        let mut history = SchemaHistory::open(&self.state_dir, "postgres-schema-history.json")?;
        let mut conn = ReplicationConnection::connect(&self.server.params, SESSION_OPTIONS)
            .await
            .map_err(|e| self.replication_error(e, "connecting for replication"))?;
        let command = format!(
            "START_REPLICATION SLOT \"{}\" LOGICAL {} (proto_version '1', publication_names '\"{}\"', messages 'true')",
            self.server.config.slot, start.lsn, self.server.config.publication
        );
        if let Err(err) = conn.start_replication(&command).await {
            return Err(self.replication_error(err, "starting replication"));
        }
        self.slot_busy_since = None;
        tracing::info!(position = %start, slot = %self.server.config.slot, "streaming");
        let _heartbeat = (!self.server.config.heartbeat_interval.is_zero()).then(|| {
            AbortOnDrop(tokio::spawn(heartbeats(
                url.clone(),
                self.server.params.tls.clone(),
                self.server.config.heartbeat_interval,
            )))
        });

        let durable = &context.durable;
        let mut reader =
            PgReader::new(&self.server.params.database, start.clone(), resume, stop_at);
        let mut received = start.lsn.0;
        let mut batch = Vec::new();
        let mut next_status = Instant::now();
        let mut idle_reader: Option<ChunkReader> = None;
        let mut task: Option<ChunkTaskGuard> = None;
        let mut ready: std::collections::VecDeque<ReadyChunk> = Default::default();
        let mut watermarks_seen: std::collections::HashSet<String> = Default::default();
        let own_watermarks = crate::snapshot::watermark_prefix(&self.server.config.slot);
        let mut reached_stop = false;
        let mut inbox_timer = tokio::time::interval(Duration::from_secs(1));
        let mut requested_at = Instant::now();
        let silence = self.server.config.silence_limit();
        let mut last_heard = Instant::now();
        backfill.accept(&context.backfills);
        let result = 'stream: loop {
            let deadline = tokio::time::Instant::from_std(next_status);
            let wake = tokio::select! {
                message = tokio::time::timeout_at(deadline, conn.next()) => Wake::Stream(message),
                joined = async { match task.as_mut() { Some(t) => (&mut t.0).await, None => std::future::pending().await } }, if task.is_some() => {
                    task = None;
                    let (chunk_reader, outcome) = match joined {
                        Ok(done) => done,
                        Err(e) => break Err(ConnectorError::retryable(format!("the snapshot chunk task failed: {e}"))),
                    };
                    idle_reader = Some(chunk_reader);
                    match outcome {
                        Err(err) => break Err(err),
                        Ok(ChunkOutcome::Rows(raw)) => {
                            let mut schema = raw.schema;
                            schema.version = match history.version_of(&schema) {
                                Ok(version) => version,
                                Err(err) => break Err(err),
                            };
                            tracing::debug!(exhausted = raw.exhausted, read_ms = requested_at.elapsed().as_millis() as u64, "snapshot chunk read");
                            backfill.chunk_read(raw.last_key, raw.exhausted);
                            ready.push_back(ReadyChunk {
                                schema: Arc::new(schema),
                                rows: raw.rows,
                                exhausted: raw.exhausted,
                                rows_estimate: raw.rows_estimate,
                                watermark: raw.watermark,
                            });
                        }
                        Ok(ChunkOutcome::Skip(why)) => {
                            backfill.skip_current(&why);
                            ready.clear();
                            if let Some(here) = reader.boundary() {
                                let mut progress = vec![SourceEvent::Progress(Position::Postgres(here.clone()))];
                                backfill.observe(&mut progress);
                                batch.append(&mut progress);
                            }
                        }
                    }
                    Wake::Other
                }
                _ = inbox_timer.tick() => {
                    backfill.accept(&context.backfills);
                    Wake::Other
                }
            };
            let observed_from = batch.len();
            if matches!(wake, Wake::Stream(Ok(Ok(_)))) {
                last_heard = Instant::now();
            }
            let step = match wake {
                Wake::Other => Step::Continue,
                Wake::Stream(Err(_)) => {
                    // A connection that went silent without a reset (a black hole) is noticed
                    // here: the server answers every status update asking for a reply, and the
                    // heartbeats put a message into the stream at least every interval.
                    if last_heard.elapsed() > silence {
                        break Err(ConnectorError::retryable(format!(
                            "no message from the server for {silence:?} (it is asked for a keepalive every status_interval); reconnecting"
                        )));
                    }
                    let flushed = durable_lsn(durable);
                    // Between transactions, ask for a keepalive: its WAL end moves the position
                    // on while the published tables are quiet.
                    match tokio::time::timeout(
                        silence,
                        conn.send_status(received, flushed, !reader.in_transaction()),
                    )
                    .await
                    {
                        Ok(Ok(())) => {}
                        Ok(Err(err)) => {
                            break Err(
                                self.replication_error(err, "confirming the durable position")
                            )
                        }
                        Err(_) => {
                            break Err(ConnectorError::retryable(format!(
                                "the server took no status update for {silence:?}; reconnecting"
                            )))
                        }
                    }
                    next_status = Instant::now() + self.server.config.status_interval;
                    Step::Continue
                }
                Wake::Stream(Ok(Err(err))) => {
                    break Err(self.replication_error(err, "reading the replication stream"))
                }

                Wake::Stream(Ok(Ok(StreamMessage::Keepalive {
                    wal_end,
                    reply_requested,
                }))) => {
                    received = received.max(wal_end);
                    if reply_requested {
                        next_status = Instant::now();
                    }
                    reader.keepalive(wal_end, &mut batch)
                }
                Wake::Stream(Ok(Ok(StreamMessage::XLogData {
                    wal_start,
                    wal_end,
                    data,
                }))) => {
                    received = received.max(wal_end);
                    let message = match pgoutput::parse(&data) {
                        Ok(message) => message,
                        Err(err) => {
                            break Err(ConnectorError::definite(format!(
                                "{err} at {}; report this",
                                Lsn(wal_start)
                            )))
                        }
                    };
                    let step = match message {
                        Message::Relation(relation) => {
                            let info = if self
                                .server
                                .filter
                                .captures(&relation.namespace, &relation.name)
                            {
                                let (mut schema, types) = match catalog::describe_relation(
                                    &client,
                                    &url,
                                    &relation,
                                    self.server.config.unknown_types,
                                )
                                .await
                                {
                                    Ok(described) => described,
                                    Err(err) => break Err(err),
                                };
                                let known = history.known_versions(&schema.id.to_string());
                                schema.version = match history.version_of(&schema) {
                                    Ok(version) => version,
                                    Err(err) => break Err(err),
                                };
                                let info = Arc::new(RelationInfo {
                                    schema: Arc::new(schema),
                                    types,
                                });
                                if info.schema.version > known && known > 0 {
                                    reader.schema_change(&info, &mut batch);
                                }
                                Some(info)
                            } else {
                                None
                            };
                            reader.set_relation(relation.oid, info);
                            Ok(Step::Continue)
                        }
                        Message::Message {
                            prefix, content, ..
                        } if prefix == WATERMARK_PREFIX => {
                            // every slot of the database decodes every pipeline's watermarks: keep
                            // this process's (one may arrive before its chunk's read returns)
                            let content = String::from_utf8_lossy(content);
                            if content.starts_with(&own_watermarks) {
                                watermarks_seen.insert(content.into_owned());
                            }
                            Ok(Step::Continue)
                        }
                        Message::Message { prefix, .. } if prefix != HEARTBEAT_PREFIX => {
                            tracing::debug!(prefix, "ignoring a logical decoding message");
                            Ok(Step::Continue)
                        }
                        other => reader.handle(other, wal_start, &mut batch),
                    };
                    match step {
                        Ok(step) => step,
                        Err(err) => break Err(err),
                    }
                }
            };
            backfill.observe(&mut batch[observed_from..]);
            if step == Step::Done {
                reached_stop = true;
            }
            // Chunks are emitted in order, each once the stream has passed its watermark.
            while let (Some(waiting), Some(here)) = (ready.front(), reader.boundary()) {
                if !watermarks_seen.remove(&waiting.watermark) {
                    break;
                }
                let at = Position::Postgres(here.clone());
                let Some(waiting) = ready.pop_front() else {
                    break;
                };
                let template = PgSourceInfo {
                    ts_ms: headwater_contract::now_ms(),
                    snapshot: SnapshotMarker::True,
                    db: Arc::from(self.server.params.database.as_str()),
                    schema: Arc::from(waiting.schema.id.namespace.as_str()),
                    table: Some(Arc::from(waiting.schema.id.table.as_str())),
                    tx_id: None,
                    lsn: Some(here.lsn.0 as i64),
                };
                // usually converted by now; the wait is for its last rows at most
                let rows = match waiting.rows.await {
                    Ok(Ok(rows)) => rows,
                    Ok(Err(err)) => break 'stream Err(err),
                    Err(e) => {
                        break 'stream Err(ConnectorError::retryable(format!(
                            "the snapshot converter failed: {e}"
                        )))
                    }
                };
                let chunk = Chunk {
                    schema: waiting.schema,
                    rows,
                    exhausted: waiting.exhausted,
                    rows_estimate: waiting.rows_estimate,
                };
                match backfill.complete(chunk, &at, |_, marker| {
                    SourceInfo::Postgres(PgSourceInfo {
                        snapshot: marker,
                        ..template.clone()
                    })
                }) {
                    Completed::Emitted(rows) => batch.extend(rows),
                    Completed::Discarded => {
                        // the chunks read after it are read again too
                        ready.clear();
                        watermarks_seen.clear();
                        task = None;
                        idle_reader = None;
                    }
                }
            }
            // The next chunk is read while this batch goes down the pipeline.
            if task.is_none() {
                if let Some(request) = backfill.next_chunk() {
                    let mut chunk_reader = match idle_reader.take() {
                        Some(r) => r,
                        None => match self.chunk_reader().await {
                            Ok(r) => r,
                            Err(err) => break Err(err),
                        },
                    };
                    requested_at = Instant::now();
                    task = Some(ChunkTaskGuard(tokio::spawn(async move {
                        let outcome = chunk_reader.read(&request).await;
                        (chunk_reader, outcome)
                    })));
                }
            }
            let finished = reached_stop && !backfill.is_copying();
            let flush = finished || batch.len() >= BATCH || !reader.in_transaction();
            if flush
                && !batch.is_empty()
                && events.send_all(std::mem::take(&mut batch)).await.is_err()
            {
                break Ok(());
            }
            if finished {
                break Ok(());
            }
        };
        // bounded: after a black hole neither would return
        let closing = async {
            let _ = conn
                .send_status(received, durable_lsn(durable), false)
                .await;
            conn.finish().await;
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), closing).await;
        result
    }
}

//! The MySQL/MariaDB source: connection, preflight checks, and the binlog stream loop.

use crate::config::{MysqlConfig, StartFrom};
use crate::read_event::{next_event, ReadFailure};
use crate::server::{text, MysqlServer};
use crate::snapshot::ChunkReader;
use crate::stream::{BinlogReader, Step};
use crate::table::{ColumnHints, TypeHint};
use async_trait::async_trait;
use headwater_contract::backfill::{ChunkScheduler, ChunkWake};
use headwater_contract::schema_history::SchemaHistory;
use headwater_contract::{
    BackfillKind, BackfillRequest, Backfiller, BinlogPosition, ConnectorError, EventSender,
    GtidSet, MariadbGtidState, MysqlFlavor, MysqlSourceInfo, Position, Problem, SnapshotMarker,
    SnapshotMode, Source, SourceEvent, SourceInfo, StreamContext, TableId, TableSchema,
};
use mysql_async::binlog::events::Event;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, Conn};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct MysqlSource {
    pub(crate) server: MysqlServer,
    pub(crate) state_dir: PathBuf,
}

impl MysqlSource {
    pub fn new(config: MysqlConfig, state_dir: &Path) -> Result<Self, ConnectorError> {
        Ok(MysqlSource {
            server: MysqlServer::new(config)?,
            state_dir: state_dir.to_path_buf(),
        })
    }
}

impl MysqlSource {
    /// MariaDB streams a GTID domain missing from the connect state from its oldest binlog, so
    /// a domain whose early transactions were purged would be skipped silently. Refuse instead.
    async fn check_unknown_domains(
        &self,
        conn: &mut Conn,
        state: &MariadbGtidState,
    ) -> Result<(), ConnectorError> {
        let oldest: Option<mysql_async::Row> = conn
            .query_first("SHOW BINARY LOGS")
            .await
            .map_err(self.server.classify("listing binary logs"))?;
        let Some(oldest) = oldest.as_ref().and_then(|row| text(row, 0)) else {
            return Ok(());
        };
        let before_oldest: Option<Option<String>> = conn
            .exec_first("SELECT BINLOG_GTID_POS(?, 4)", (oldest.as_str(),))
            .await
            .map_err(
                self.server
                    .classify("reading the GTID state of the oldest binlog"),
            )?;
        let before_oldest: MariadbGtidState = before_oldest
            .flatten()
            .unwrap_or_default()
            .parse()
            .map_err(|e| {
            ConnectorError::definite(format!(
                "the server reported a GTID state Headwater cannot read: {e}"
            ))
        })?;
        let missing: Vec<String> = before_oldest
            .domains()
            .filter(|gtid| state.get(gtid.domain).is_none())
            .map(|gtid| gtid.to_string())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(ConnectorError::position_lost(format!(
            "the server has transactions in GTID domain(s) that Headwater's position does not know ({}), and the binlogs with their beginning are purged (the oldest binlog, {oldest}, starts after them). Streaming on would silently skip them. Set source.snapshot = \"when_needed\" and restart to copy the tables again, or — accepting the gap — move state.path and the sink's data away and start again.",
            missing.join(", ")
        )))
    }

    /// Columns whose type the binlog does not tell: MariaDB's UUID/INET6/INET4 (binary in the
    /// row image) and JSON (LONGTEXT with a json_valid check).
    pub(crate) async fn column_hints(
        &self,
        conn: &mut Conn,
    ) -> Result<ColumnHints, ConnectorError> {
        let mut hints = ColumnHints::default();
        let typed: Vec<mysql_async::Row> = conn
            .query(
                "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS \
                 WHERE DATA_TYPE IN ('uuid', 'inet6', 'inet4', 'json') \
                 AND TABLE_SCHEMA NOT IN ('mysql', 'sys', 'information_schema', 'performance_schema')",
            )
            .await
            .map_err(self.server.classify("reading column types"))?;
        for row in &typed {
            let (Some(db), Some(table), Some(column), Some(data_type)) =
                (text(row, 0), text(row, 1), text(row, 2), text(row, 3))
            else {
                continue;
            };
            let hint = match data_type.to_ascii_lowercase().as_str() {
                "uuid" => TypeHint::Uuid,
                "inet6" => TypeHint::Inet6,
                "inet4" => TypeHint::Inet4,
                _ => TypeHint::Json,
            };
            hints.insert(&db, &table, &column, hint);
        }
        // MariaDB's JSON is LONGTEXT with CHECK (json_valid(`column`)).
        let checks: Vec<mysql_async::Row> = conn
            .query(
                "SELECT CONSTRAINT_SCHEMA, TABLE_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
                 WHERE CHECK_CLAUSE LIKE 'json_valid(%'",
            )
            .await
            .unwrap_or_default();
        for row in &checks {
            let (Some(db), Some(table), Some(clause)) = (text(row, 0), text(row, 1), text(row, 2))
            else {
                continue;
            };
            let column = clause
                .trim_start_matches("json_valid(")
                .trim_end_matches(')')
                .trim_matches('`');
            hints.insert(&db, &table, column, TypeHint::Json);
        }
        Ok(hints)
    }

    /// Classifies a binlog error; when the position is gone (error 1236), says what was asked
    /// for and what the server still has.
    async fn explain_stream_error(
        &self,
        err: mysql_async::Error,
        what: &str,
        start: &BinlogPosition,
        gtid_mode: bool,
    ) -> ConnectorError {
        let purged = matches!(&err, mysql_async::Error::Server(s)
            if s.code == crate::error::ER_MASTER_FATAL_ERROR_READING_BINLOG && !s.message.contains("same server"));
        let classified = self.server.classify(what)(err);
        if !purged {
            return classified;
        }
        let wanted = if gtid_mode {
            format!(
                "GTID state {} (file/position {}:{} on the original server)",
                start.gtid_set, start.file, start.pos
            )
        } else {
            format!("binlog file {} at position {}", start.file, start.pos)
        };
        let has = match self.server.connect().await {
            Ok(mut conn) => {
                let files: Vec<mysql_async::Row> =
                    conn.query("SHOW BINARY LOGS").await.unwrap_or_default();
                let files: Vec<String> = files.iter().filter_map(|row| text(row, 0)).collect();
                let state: Option<Option<String>> = conn
                    .query_first("SELECT @@gtid_binlog_state")
                    .await
                    .unwrap_or_default();
                let _ = conn.disconnect().await;
                format!(
                    "binlog files {} to {} (GTID state {})",
                    files.first().map_or("none", String::as_str),
                    files.last().map_or("none", String::as_str),
                    state.flatten().unwrap_or_default()
                )
            }
            Err(_) => "(could not ask)".to_string(),
        };
        let mut explained = classified;
        explained.message = format!(
            "{} Headwater needs {wanted}; the server has {has}.",
            explained.message
        );
        explained
    }
}

#[async_trait]
impl Source for MysqlSource {
    async fn check(&mut self) -> Result<Vec<Problem>, ConnectorError> {
        crate::preflight::check(&self.server).await
    }

    async fn check_backfill(
        &mut self,
        table: &TableId,
        condition: Option<&str>,
    ) -> Result<(), ConnectorError> {
        self.server.filter.require_captured(table, "")?;
        let mut reader = self.server.chunk_reader().await?;
        let checked = reader.check(table, condition).await;
        reader.disconnect().await;
        checked
    }

    async fn keyless_tables(&mut self) -> Result<Vec<TableId>, ConnectorError> {
        let mut conn = self.server.connect().await?;
        let tables = crate::preflight::keyless_tables(&self.server, &mut conn).await;
        let _ = conn.disconnect().await;
        tables
    }

    async fn log_end(&mut self) -> Result<Position, ConnectorError> {
        let mut conn = self.server.connect().await?;
        let end = self.server.master_status(&mut conn).await?;
        let _ = conn.disconnect().await;
        Ok(Position::Mysql(end))
    }

    async fn log_status(
        &mut self,
        position: Option<&Position>,
    ) -> Result<headwater_contract::LogStatus, ConnectorError> {
        let position = match position {
            Some(Position::Mysql(p)) => Some(p),
            _ => None,
        };
        self.binlog_status(position).await
    }

    async fn stream(
        &mut self,
        resume: Option<Position>,
        stop_at: Option<Position>,
        events: EventSender,
        context: StreamContext,
    ) -> Result<(), ConnectorError> {
        let resume = resume.map(Position::into_mysql).transpose()?;
        let stop_at = match stop_at {
            Some(Position::Mysql(p)) => Some(p),
            _ => None,
        };
        let mut conn = self.server.connect().await?;
        let server = self.server.server_info(&mut conn).await?;
        let fresh = resume.is_none();
        let mut backfill = Backfiller::new(
            resume.as_ref().and_then(|p| p.backfill.clone()),
            self.server.config.snapshot_chunk_size,
        );
        backfill.retain_captured(|t| self.server.filter.captures(&t.namespace, &t.table));
        let (start, gtid_mode) = self
            .start_position(&mut conn, resume, &mut backfill)
            .await?;
        if let (true, GtidSet::Mariadb(state)) = (gtid_mode, &*start.gtid_set) {
            if let Err(err) = self.check_unknown_domains(&mut conn, state).await {
                return self.recover_or_fail(err, &events, &backfill).await;
            }
        }
        let mut history = SchemaHistory::open(&self.state_dir, "mysql-schema-history.json")?;
        let mut reader = BinlogReader::new(
            &self.server.filter,
            &server.collations,
            &mut history,
            start.clone(),
            gtid_mode,
            stop_at,
            server.checksum,
        );
        reader.set_hints(self.column_hints(&mut conn).await?);
        reader.set_flavor(server.flavor);
        if let Some(signal) = self.server.signal_table() {
            reader.watch_signals(signal);
        }
        // The binlog connection becomes the stream; this one answers metadata questions.
        let mut meta = self.server.connect().await?;
        if fresh {
            // Record where a new pipeline starts, so a restart before the first change
            // continues from here instead of from a later "latest".
            if !backfill
                .send_start(Position::Mysql(start.clone()), &events)
                .await
            {
                return Ok(());
            }
        }
        if reader.starts_past_stop() && !backfill.is_active() {
            return Ok(());
        }
        let request = self.binlog_request(&mut conn, &start, gtid_mode).await?;
        tracing::info!(position = %start, gtid_mode, "requesting the binlog");
        // The dump thread only notices a vanished replica when it next writes; ending it
        // explicitly frees the server_id and lets binlogs be purged at once.
        let dump_thread = conn.id();
        let binlog = match conn.get_binlog_stream(request).await {
            Ok(binlog) => binlog,
            Err(err) => {
                let err = self
                    .explain_stream_error(err, "requesting the binlog", &start, gtid_mode)
                    .await;
                return self.recover_or_fail(err, &events, &backfill).await;
            }
        };
        let mut stream = Stream {
            reader,
            chunks: ChunkScheduler::new(
                backfill,
                crate::snapshot::signal_prefix(self.server.config.server_id),
                &context.backfills,
            ),
            events: &events,
        };
        let result = self
            .pump(binlog, &mut stream, &mut meta, &start, gtid_mode)
            .await;
        let result = match result {
            Err(err) => {
                self.recover_or_fail(err, &events, stream.chunks.backfill())
                    .await
            }
            ok => ok,
        };
        // bounded: after a black hole the server never answers
        let end_dump_thread = async {
            let _ = meta
                .query_drop(format!("KILL CONNECTION {dump_thread}"))
                .await;
            let _ = meta.disconnect().await;
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), end_dump_thread).await;
        result
    }
}

/// A running stream: the binlog state machine, the snapshot in progress, and where events go.
struct Stream<'r, 'a> {
    reader: BinlogReader<'a>,
    chunks: ChunkScheduler<ChunkReader>,
    events: &'r EventSender,
}

/// What woke the binlog loop.
enum Wake {
    /// The binlog's next event, its end, or an error; `Err` when the connection went silent.
    Binlog(Result<Option<Result<Event, ReadFailure>>, tokio::time::error::Elapsed>),
    Chunks(ChunkWake),
}

impl MysqlSource {
    /// Where the stream starts, and whether by GTID: the checkpoint, or the binlog end (with
    /// every included table queued for the initial snapshot), or as `source.start` says.
    async fn start_position(
        &self,
        conn: &mut Conn,
        resume: Option<BinlogPosition>,
        backfill: &mut Backfiller,
    ) -> Result<(BinlogPosition, bool), ConnectorError> {
        Ok(match resume {
            Some(mut p) => {
                p.backfill = None;
                let gtid = !p.gtid_set.is_empty();
                (p, gtid)
            }
            None if self.server.config.snapshot != SnapshotMode::Never => {
                let p = self.server.master_status(conn).await?;
                let tables = self
                    .server
                    .chunk_reader()
                    .await?
                    .tables(&self.server.filter)
                    .await?;
                tracing::info!(tables = tables.len(), "initial snapshot: copying every included table while streaming from the current binlog end");
                backfill.enqueue(BackfillRequest::whole_tables(tables, BackfillKind::Initial));
                let gtid = !p.gtid_set.is_empty();
                (p, gtid)
            }
            None => match self.server.config.start {
                StartFrom::Latest => {
                    let p = self.server.master_status(conn).await?;
                    let gtid = !p.gtid_set.is_empty();
                    (p, gtid)
                }
                StartFrom::Earliest => (self.server.first_binlog(conn).await?, false),
            },
        })
    }

    /// Sets the dump session up (heartbeats, MariaDB GTID events, the GTID start state) and
    /// builds the binlog request for `start`.
    async fn binlog_request<'p>(
        &self,
        conn: &mut Conn,
        start: &'p BinlogPosition,
        gtid_mode: bool,
    ) -> Result<BinlogStreamRequest<'p>, ConnectorError> {
        let heartbeat_ns = self.server.config.heartbeat_interval.as_nanos();
        conn.query_drop(format!("SET @master_heartbeat_period = {heartbeat_ns}"))
            .await
            .map_err(self.server.classify("setting the heartbeat period"))?;
        // Ask MariaDB for its real GTID events (capability 4 = MARIA_SLAVE_CAPABILITY_GTID).
        conn.query_drop("SET @mariadb_slave_capability = 4")
            .await
            .map_err(self.server.classify("announcing replica capabilities"))?;
        Ok(
            if let (true, GtidSet::Mysql(set)) = (gtid_mode, &*start.gtid_set) {
                // MySQL: COM_BINLOG_DUMP_GTID with the executed set.
                BinlogStreamRequest::new(self.server.config.server_id)
                    .with_gtid()
                    .with_pos(4)
                    .with_gtid_set(crate::request::mysql_sids(set))
            } else if gtid_mode {
                // MariaDB refuses COM_BINLOG_DUMP_GTID; it takes the state as a session variable.
                conn.query_drop(format!(
                "SET @slave_connect_state = '{}', @slave_gtid_strict_mode = 1, @slave_gtid_ignore_duplicates = 0",
                start.gtid_set
            ))
            .await
            .map_err(self.server.classify("setting the GTID start position"))?;
                BinlogStreamRequest::new(self.server.config.server_id)
            } else {
                BinlogStreamRequest::new(self.server.config.server_id)
                    .with_filename(start.file.as_bytes())
                    .with_pos(start.pos)
            },
        )
    }

    /// With `snapshot = "when_needed"`, a purged position becomes a fresh start at the binlog
    /// end with every table copied again; otherwise the error stands.
    async fn recover_or_fail(
        &self,
        err: ConnectorError,
        events: &EventSender,
        backfill: &Backfiller,
    ) -> Result<(), ConnectorError> {
        if self.server.config.snapshot != SnapshotMode::WhenNeeded || !err.is_position_lost() {
            return Err(err);
        }
        tracing::error!(error = %err.report(), "THE STORED BINLOG POSITION IS GONE. source.snapshot = \"when_needed\": continuing from the current binlog end and copying every included table again. Rows deleted while the position was lost stay in the destination until their table is cleaned up by hand");
        let mut conn = self.server.connect().await?;
        let start = self.server.master_status(&mut conn).await?;
        let _ = conn.disconnect().await;
        let mut reader = self.server.chunk_reader().await?;
        let tables = reader.tables(&self.server.filter).await?;
        reader.disconnect().await;
        let mut recovery = Backfiller::new(
            backfill.state().cloned(),
            self.server.config.snapshot_chunk_size,
        );
        recovery.abandon_chunks();
        recovery.enqueue(BackfillRequest::whole_tables(
            tables,
            BackfillKind::Recovery,
        ));
        if !recovery.send_start(Position::Mysql(start), events).await {
            return Ok(());
        }
        Err(ConnectorError::retryable(
            "restarting from the current binlog end after the lost position",
        ))
    }

    /// Reads events until the catch-up target (with no snapshot pending), the pipeline's end,
    /// or an error. Snapshot chunks are read on another connection meanwhile.
    async fn pump(
        &self,
        mut binlog: mysql_async::BinlogStream,
        stream: &mut Stream<'_, '_>,
        meta: &mut Conn,
        start: &BinlogPosition,
        gtid_mode: bool,
    ) -> Result<(), ConnectorError> {
        let silence = self.server.config.heartbeat_interval * 3;
        let server_id = self.server.config.server_id;
        let flavor = stream.reader.flavor();
        let mut batch = Vec::new();
        let mut reached_stop = false;
        // a deadline, not a timeout per wait: the other branches wake the loop every second,
        // and a fresh timeout each time would never expire on a silent connection
        let mut silent_after = tokio::time::Instant::now() + silence;
        loop {
            let wake = tokio::select! {
                next = tokio::time::timeout_at(silent_after, next_event(&mut binlog)) => Wake::Binlog(next),
                woke = stream.chunks.wake() => Wake::Chunks(woke),
            };
            match wake {
                Wake::Binlog(next) => {
                    let event = self
                        .event_or_error(next, &stream.reader, silence, start, gtid_mode)
                        .await?;
                    silent_after = tokio::time::Instant::now() + silence;
                    if stream.reader.handle(&event, &mut batch)? == Step::Done {
                        reached_stop = true;
                    }
                    let truncates = stream.reader.take_unresolved_truncates();
                    if !truncates.is_empty() {
                        // bounded: the server may have gone silent
                        let resolve =
                            self.resolve_truncates(&mut batch, truncates, &mut stream.reader);
                        tokio::time::timeout(silence, resolve).await.map_err(|_| {
                            ConnectorError::retryable(format!(
                                "no answer from the server for {silence:?} while reading the layout of a truncated table; reconnecting"
                            ))
                        })??;
                    }
                    if batch
                        .iter()
                        .any(|e| matches!(e, SourceEvent::SchemaChange(_)))
                    {
                        // bounded: the metadata connection may have gone silent too
                        let hints = tokio::time::timeout(silence, self.column_hints(meta))
                            .await
                            .map_err(|_| {
                                ConnectorError::retryable(format!(
                                    "no answer from the server for {silence:?} while reading column details after a schema change; reconnecting"
                                ))
                            })??;
                        stream.reader.set_hints(hints);
                    }
                    stream.chunks.observe(&mut batch);
                }
                Wake::Chunks(ChunkWake::ChunkRead(outcome)) => {
                    let here = stream.reader.boundary().map(Position::Mysql);
                    let reader = &mut stream.reader;
                    stream.chunks.chunk_done(
                        outcome?,
                        |schema| reader.schema_version(schema),
                        here,
                        &mut batch,
                    )?;
                }
                Wake::Chunks(ChunkWake::InboxChecked) => {}
            }
            for signal in stream.reader.take_signals() {
                stream.chunks.signal(&signal);
            }
            // Chunks are emitted in order, each once the stream has passed its watermark.
            let reader = &stream.reader;
            stream
                .chunks
                .emit_passed(
                    || reader.boundary(),
                    |schema, here| snapshot_source_info(server_id, flavor, schema, here),
                    &mut batch,
                )
                .await?;
            // The next chunk is read while this batch goes down the pipeline.
            stream
                .chunks
                .read_next(|| self.server.chunk_reader())
                .await?;
            if !batch.is_empty()
                && stream
                    .events
                    .send_all(std::mem::take(&mut batch))
                    .await
                    .is_err()
            {
                return Ok(());
            }
            if reached_stop && !stream.chunks.is_copying() {
                return Ok(());
            }
        }
    }

    /// Completes the TRUNCATE records the reader had no layout for with their table's layout
    /// as the server has it now, or drops one whose table is gone (dropped since): nothing
    /// then says which columns its rows had, so sinks keep what they hold of it.
    async fn resolve_truncates(
        &self,
        batch: &mut Vec<SourceEvent>,
        truncates: Vec<usize>,
        reader: &mut BinlogReader<'_>,
    ) -> Result<(), ConnectorError> {
        for at in truncates.into_iter().rev() {
            let Some(SourceEvent::Change(record)) = batch.get_mut(at) else {
                continue;
            };
            let mut server = self.server.chunk_reader().await?;
            let described = server.table_schema(&record.table.id).await;
            server.disconnect().await;
            match described? {
                Some(mut schema) => {
                    schema.version = reader.schema_version(&schema)?;
                    record.table = Arc::new(schema);
                }
                None => {
                    tracing::warn!(
                        table = %record.table.id,
                        "a TRUNCATE of a table that no longer exists, whose columns are unknown: it is not passed on, and sinks keep the rows they hold of it"
                    );
                    batch.remove(at);
                }
            }
        }
        Ok(())
    }

    /// The binlog's next event, or the error that ends the stream.
    async fn event_or_error(
        &self,
        next: Result<Option<Result<Event, ReadFailure>>, tokio::time::error::Elapsed>,
        reader: &BinlogReader<'_>,
        silence: std::time::Duration,
        start: &BinlogPosition,
        gtid_mode: bool,
    ) -> Result<Event, ConnectorError> {
        match next {
            Ok(Some(Ok(event))) => Ok(event),
            Err(_) => Err(ConnectorError::retryable(format!(
                "no event or heartbeat from the server for {silence:?}; reconnecting"
            ))),
            Ok(Some(Err(ReadFailure::Server(err)))) => Err(self
                .explain_stream_error(err, "reading the binlog", start, gtid_mode)
                .await),
            Ok(Some(Err(ReadFailure::Malformed(what)))) => {
                let after = reader.boundary().map_or_else(
                    || "inside a transaction".to_string(),
                    |here| format!("after {}:{}", here.file, here.pos),
                );
                Err(ConnectorError::definite(format!(
                    "the server sent a binlog event that cannot be read ({what}), {after}; check the binlog there with `mariadb-binlog`/`mysqlbinlog` and report it. Nothing is lost: the last committed position is kept"
                )))
            }
            Ok(None) => Err(ConnectorError::retryable(
                "the server closed the binlog stream",
            )),
        }
    }
}

/// The source block of a snapshot row emitted at `here`.
fn snapshot_source_info(
    server_id: u32,
    flavor: MysqlFlavor,
    schema: &TableSchema,
    here: &BinlogPosition,
) -> SourceInfo {
    SourceInfo::Mysql(MysqlSourceInfo {
        ts_us: headwater_contract::now_us(),
        flavor,
        snapshot: SnapshotMarker::True,
        db: Arc::from(schema.id.namespace.as_str()),
        table: Some(Arc::from(schema.id.table.as_str())),
        server_id,
        gtid: None,
        file: here.file.clone(),
        pos: here.pos,
        row: 0,
        thread: None,
    })
}

//! The PostgreSQL source: slot and publication set-up, preflight, and the replication loop
//! that confirms to the server only what the sink has made durable.

use crate::catalog;
use crate::config::PostgresConfig;
use crate::protocol::SESSION_OPTIONS;
use crate::protocol::{ProtocolError, ReplicationConnection, ServerError};
use crate::replication::Replication;
use crate::server::PostgresServer;
use crate::snapshot::ChunkReader;
use crate::stream::PgReader;
use async_trait::async_trait;
use headwater_contract::backfill::ChunkScheduler;
use headwater_contract::schema_history::SchemaHistory;
use headwater_contract::{
    BackfillKind, BackfillRequest, BackfillState, Backfiller, ConnectorError, EventSender, Lsn,
    PgPosition, Position, Problem, SnapshotMode, Source, StreamContext, TableId,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) const HEARTBEAT_PREFIX: &str = "headwater.heartbeat";
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
    pub(crate) fn replication_error(&mut self, err: ProtocolError, what: &str) -> ConnectorError {
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

/// Bounds a setup step's wait for the server: on a connection that went silent without a
/// reset (a black hole) it would never return. Not used for creating a slot, which waits for
/// the transactions running at the time however long they take.
async fn answered<T>(
    limit: Duration,
    what: &str,
    step: impl std::future::Future<Output = Result<T, ConnectorError>>,
) -> Result<T, ConnectorError> {
    tokio::time::timeout(limit, step).await.unwrap_or_else(|_| {
        Err(ConnectorError::retryable(format!(
            "no answer from the server for {limit:?} while {what} (a connection that went silent, or a lock another session holds); reconnecting"
        )))
    })
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
        // A transaction committed with `synchronous_commit = off` may still be in the WAL
        // buffers, beyond `pg_current_wal_lsn()` (the write position), and a catch-up to that
        // position ended without it (a benchmark lost the last 34 of 250,000 rows that way). A
        // message committed synchronously flushes the WAL through every earlier commit first.
        let flushed = async {
            client.batch_execute("SET synchronous_commit = on").await?;
            client
                .execute(
                    "SELECT pg_logical_emit_message(true, $1, '')",
                    &[&HEARTBEAT_PREFIX],
                )
                .await
        }
        .await;
        if let Err(err) = flushed {
            // a standby, or a role that may not write messages (`check` says so)
            tracing::debug!(error = %err, "the WAL could not be flushed before reading its end");
        }
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
        self.server
            .filter
            .require_captured(table, " (and to the publication)")?;
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

impl PostgresSource {
    pub(crate) async fn chunk_reader(&self) -> Result<ChunkReader, ConnectorError> {
        ChunkReader::connect(
            &self.server.config.url,
            &self.server.params,
            &self.server.config.slot,
            self.server.config.unknown_types,
            self.server.filter.clone(),
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
        let limit = self.server.config.silence_limit();
        let slot = answered(limit, "checking the publication and the slot", async {
            catalog::ensure_publication(&client, &self.server.config, &self.server.filter).await?;
            catalog::slot_state(&client, &url, &self.server.config.slot).await
        })
        .await?;
        if resume.is_none() && self.server.config.snapshot != SnapshotMode::Never {
            let tables = answered(limit, "listing the tables to copy", async {
                self.chunk_reader().await?.tables(&self.server.filter).await
            })
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
        let Some(start) = self
            .start_position(slot, &resume, &client, &mut backfill, events)
            .await?
        else {
            return Ok(());
        };
        if make_failover {
            answered(
                limit,
                "making the slot a failover slot",
                self.make_failover_slot(),
            )
            .await?;
        }
        if stop_at.as_ref().is_some_and(|stop| start >= *stop)
            && start.rows_done == 0
            && !backfill.is_active()
        {
            return Ok(());
        }
        let history = SchemaHistory::open(&self.state_dir, "postgres-schema-history.json")?;
        let conn = answered(
            limit,
            "starting replication",
            self.start_replication(&start),
        )
        .await?;
        let _heartbeat = (!self.server.config.heartbeat_interval.is_zero()).then(|| {
            AbortOnDrop(tokio::spawn(heartbeats(
                url.clone(),
                self.server.params.tls.clone(),
                self.server.config.heartbeat_interval,
            )))
        });
        let reader = PgReader::new(&self.server.params.database, start.clone(), resume, stop_at);
        let chunks = ChunkScheduler::new(
            backfill,
            crate::snapshot::watermark_prefix(&self.server.config.slot),
            &context.backfills,
        );
        Replication {
            source: self,
            conn,
            client,
            history,
            reader,
            chunks,
            events,
            durable: &context.durable,
            received: start.lsn.0,
        }
        .run()
        .await
    }

    /// Where the stream starts: the checkpoint, or the existing slot's confirmed position, or
    /// a new slot's (both recorded as the pipeline's start). `None` once the pipeline has
    /// stopped receiving.
    async fn start_position(
        &mut self,
        slot: Option<catalog::SlotState>,
        resume: &Option<PgPosition>,
        client: &tokio_postgres::Client,
        backfill: &mut Backfiller,
        events: &EventSender,
    ) -> Result<Option<PgPosition>, ConnectorError> {
        let name = self.server.config.slot.clone();
        let start = match (slot, resume) {
            (Some(slot), _) if slot.wal_status.as_deref() == Some("lost") => {
                return Err(self.replication_error(
                    ProtocolError::Server(ServerError {
                        code: "55000".into(),
                        message: format!("cannot read from logical replication slot \"{name}\""),
                        detail: Some(
                            "its WAL status is lost: it exceeded the maximum reserved size".into(),
                        ),
                    }),
                    "checking the slot",
                ))
            }
            (Some(_), Some(resume)) => return Ok(Some(resume.clone())),
            (Some(slot), None) => {
                let confirmed: Lsn = slot
                    .confirmed_flush
                    .as_deref()
                    .unwrap_or("0/0")
                    .parse()
                    .unwrap_or_default();
                tracing::info!(slot = %name, %confirmed, "starting from the existing slot's confirmed position");
                PgPosition::at(confirmed, 0)
            }
            (None, None) => {
                let lsn = catalog::create_slot(
                    client,
                    &self.server.config.url,
                    &name,
                    self.server.config.failover,
                )
                .await?;
                tracing::info!(slot = %name, %lsn, "created the replication slot");
                PgPosition::at(lsn, 0)
            }
            (None, Some(resume)) => {
                return Err(self.replication_error(
                    ProtocolError::Server(ServerError {
                        code: "42704".into(),
                        message: format!("replication slot \"{name}\" does not exist"),
                        detail: Some(format!("the checkpoint is at {resume}")),
                    }),
                    "checking the slot",
                ))
            }
        };
        let sent = backfill
            .send_start(Position::Postgres(start.clone()), events)
            .await;
        Ok(sent.then_some(start))
    }

    /// Opens the replication connection and starts streaming from `start`.
    async fn start_replication(
        &mut self,
        start: &PgPosition,
    ) -> Result<ReplicationConnection, ConnectorError> {
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
        tracing::info!(position = %start, slot = %self.server.config.slot, "streaming from the slot");
        Ok(conn)
    }
}

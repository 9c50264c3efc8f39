//! The pipeline runtime: receives source events, encodes them into envelope records, hands them
//! to the sink, tracks acknowledgements, and commits the durable position.

use crate::ack::AckTracker;
use crate::checkpoint::{CheckpointError, CheckpointStore};
use crate::pipeline_metrics::PipelineMetrics;
use crate::requests::RequestDir;
use crate::retry::RetryPolicy;
use crate::telemetry::Status;
use headwater_contract::now_ms;
use headwater_contract::record::{encode_envelope, encode_schema_change};
use headwater_contract::{
    Ack, AckSender, BackfillInbox, ConnectorError, ConnectorKind, EventSender, Position, Sink,
    SinkRecord, Source, SourceEvent, StreamContext, StreamSchema, TableId,
};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How long `run` goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunMode {
    /// Until stopped by a signal or a definite error.
    Follow,
    /// Until the log end as of the start is durable, then exit.
    CatchUp,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("the source task failed: {0}")]
    SourceTask(String),
}

/// What a run did.
#[derive(Debug, Default)]
pub struct RunSummary {
    pub records: u64,
    pub durable: Option<Position>,
}

pub struct Settings {
    pub server_name: String,
    pub connector: ConnectorKind,
    pub max_in_flight: usize,
    pub checkpoint_interval: Duration,
    /// Where `headwater backfill` leaves its requests.
    pub requests: RequestDir,
    /// What `/ready` and the lineage metric read.
    pub status: Arc<Status>,
    /// Count NULLs per column (the distribution metrics).
    pub column_stats: bool,
    /// How a source that failed with a retryable error is retried.
    pub source_retry: RetryPolicy,
}

/// Batches buffered between the source task and the runtime (each batch is one log event's rows).
const EVENT_BATCHES: usize = 64;
const TICK: Duration = Duration::from_millis(100);
const PROGRESS_LOG: Duration = Duration::from_secs(10);

struct Encoder {
    server_name: String,
    connector: ConnectorKind,
    streams: HashMap<TableId, Arc<StreamSchema>>,
    schema_changes: Arc<StreamSchema>,
}

impl Encoder {
    fn stream_for(&mut self, table: &Arc<headwater_contract::TableSchema>) -> Arc<StreamSchema> {
        match self.streams.get(&table.id) {
            Some(stream) if stream.version == table.version => Arc::clone(stream),
            _ => {
                PipelineMetrics::schema_version(table);
                let stream = Arc::new(StreamSchema::for_table(
                    &self.server_name,
                    table,
                    self.connector,
                ));
                self.streams.insert(table.id.clone(), Arc::clone(&stream));
                stream
            }
        }
    }

    fn encode(&mut self, seq: u64, event: SourceEvent, now_ms: i64) -> Option<SinkRecord> {
        match event {
            SourceEvent::Change(change) => {
                let stream = self.stream_for(&change.table);
                let mut value = Vec::with_capacity(
                    change.before.as_ref().map_or(0, Vec::len)
                        + change.after.as_ref().map_or(0, Vec::len)
                        + 128,
                );
                encode_envelope(&change, &self.server_name, now_ms, &mut value);
                Some(SinkRecord {
                    seq,
                    stream,
                    op: Some(change.op),
                    key: change.key,
                    value,
                    position: change.position,
                })
            }
            SourceEvent::SchemaChange(ddl) => {
                let mut value = Vec::with_capacity(ddl.ddl.len() + 128);
                encode_schema_change(&ddl, &self.server_name, now_ms, &mut value);
                Some(SinkRecord {
                    seq,
                    stream: Arc::clone(&self.schema_changes),
                    op: None,
                    key: None,
                    value,
                    position: ddl.position,
                })
            }
            SourceEvent::Progress(_) => None,
        }
    }
}

/// Runs the source, retrying retryable errors with backoff from the last position it handed over.
async fn drive_source(
    mut source: Box<dyn Source>,
    resume: Option<Position>,
    stop_at: Option<Position>,
    events: EventSender,
    context: StreamContext,
    status: Arc<Status>,
    retry: RetryPolicy,
) -> Result<(), ConnectorError> {
    let mut delays = retry.schedule();
    let mut resume = resume;
    loop {
        let started = Instant::now();
        match source
            .stream(
                resume.clone(),
                stop_at.clone(),
                events.clone(),
                context.clone(),
            )
            .await
        {
            Ok(()) => return Ok(()),
            Err(err) if err.is_retryable() => {
                let delay = delays.next_delay(started.elapsed());
                status.set_source_connected(false);
                metrics::counter!("headwater_source_retries_total").increment(1);
                metrics::counter!("headwater_errors_total", "stage" => "source", "kind" => "retryable").increment(1);
                resume = events.last_sent().or(resume);
                tracing::warn!(error = %err.report(), retry_in = ?delay, "source failed; retrying from the last position handed to the pipeline");
                tokio::time::sleep(delay).await;
            }
            Err(err) => return Err(err),
        }
    }
}

pub struct Pipeline {
    pub settings: Settings,
    pub source: Box<dyn Source>,
    pub sink: Box<dyn Sink>,
    pub checkpoints: CheckpointStore,
}

impl Pipeline {
    /// Runs until `shutdown` resolves, the catch-up target is durable, or a definite error.
    /// On every exit path it flushes the sink and commits what is durable first.
    pub async fn run(
        self,
        mode: RunMode,
        shutdown: impl Future<Output = ()>,
    ) -> Result<RunSummary, PipelineError> {
        let Pipeline {
            settings,
            mut source,
            mut sink,
            checkpoints,
        } = self;
        let (acks, mut ack_rx) = AckSender::channel();
        let sink_position = sink.open(acks).await?;
        settings.status.set_sink_open(true);
        let checkpoint = checkpoints.load()?.map(|c| c.position);
        let resume = match (sink_position, checkpoint) {
            (Some(sink), checkpoint) => {
                if checkpoint.as_ref().is_some_and(|c| c != &sink) {
                    tracing::info!(sink = %sink, checkpoint = ?checkpoint.as_ref().map(|c| c.to_string()),
                        "resuming from the position stored with the sink's data (it wins over the checkpoint file)");
                }
                Some(sink)
            }
            (None, checkpoint) => checkpoint,
        };
        if let Some(position) = &resume {
            settings.status.set_durable_position(position.clone());
        }
        match &resume {
            Some(position) => tracing::info!(%position, "resuming"),
            None => tracing::info!("no stored position: starting where the source config says"),
        }
        let stop_at = match mode {
            RunMode::CatchUp => {
                let end = source.log_end().await?;
                tracing::info!(target = %end, "catching up to the current end of the log");
                Some(end)
            }
            RunMode::Follow => None,
        };

        let (events, mut events_rx) = EventSender::channel(EVENT_BATCHES);
        let backpressure = events.blocked_time();
        let (durable_tx, durable_rx) = tokio::sync::watch::channel(resume.clone());
        let backfills = BackfillInbox::default();
        offer_requests(&settings.requests, &backfills, resume.as_ref());
        let mut source_task = tokio::spawn(drive_source(
            source,
            resume.clone(),
            stop_at,
            events,
            StreamContext {
                durable: durable_rx,
                backfills: backfills.clone(),
            },
            Arc::clone(&settings.status),
            settings.source_retry,
        ));
        let mut metrics = PipelineMetrics::new(settings.column_stats);

        let mut encoder = Encoder {
            server_name: settings.server_name.clone(),
            connector: settings.connector,
            streams: HashMap::new(),
            schema_changes: Arc::new(StreamSchema::for_schema_changes(
                &settings.server_name,
                settings.connector,
            )),
        };
        let mut tracker = AckTracker::new(1);
        let mut next_seq = 1u64;
        let mut last_position = resume.clone();
        let mut committed = resume;
        let mut last_checkpoint_at = Instant::now();
        let mut last_durable_at = Instant::now();
        let mut last_published = Instant::now();
        let mut summary = RunSummary::default();
        let mut ticker = tokio::time::interval(TICK);
        let mut last_log = Instant::now();
        let mut records_at_last_log = 0u64;
        tokio::pin!(shutdown);

        let outcome: Result<(), PipelineError> = loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => {
                    tracing::info!("stop requested: flushing the sink and committing the checkpoint");
                    break Ok(());
                }
                batch = events_rx.recv() => {
                    let Some(batch) = batch else {
                        // The source ended: catch-up target reached, or an error.
                        break match (&mut source_task).await {
                            Ok(Ok(())) => Ok(()),
                            Ok(Err(err)) => Err(err.into()),
                            Err(join) => Err(PipelineError::SourceTask(join.to_string())),
                        };
                    };
                    let now = now_ms();
                    settings.status.set_source_connected(true);
                    let mut failed = None;
                    let mut first_change = true;
                    for event in batch {
                        let seq = next_seq;
                        next_seq += 1;
                        let position = event.position().clone();
                        match &event {
                            SourceEvent::Change(change) => {
                                let commit_ms = change.source.ts_ms();
                                metrics.change(&change.table, change.op, commit_ms, now, change.after.as_deref());
                                if change.transaction.as_ref().is_some_and(|t| t.total_order == 1) {
                                    metrics.transaction();
                                }
                                if first_change && change.op != headwater_contract::Op::Read {
                                    metrics.batch_started(seq, commit_ms);
                                    first_change = false;
                                }
                            }
                            SourceEvent::SchemaChange(ddl) => PipelineMetrics::schema_change(ddl.table.as_ref()),
                            SourceEvent::Progress(_) => {}
                        }
                        match encoder.encode(seq, event, now) {
                            Some(record) => {
                                tracker.push(seq, position.clone(), true);
                                summary.records += 1;
                                metrics.written(record.value.len() + record.key.as_ref().map_or(0, Vec::len));
                                if let Err(err) = sink.write(record).await {
                                    failed = Some(err);
                                    break;
                                }
                            }
                            None => tracker.push(seq, position.clone(), false),
                        }
                        last_position = Some(position);
                    }
                    if let Some(err) = failed {
                        break Err(err.into());
                    }
                    drain(&mut ack_rx, &mut tracker);
                    if tracker.in_flight() >= settings.max_in_flight {
                        if let Some(through) = &last_position {
                            let flushing = Instant::now();
                            if let Err(err) = sink.flush(through).await {
                                break Err(err.into());
                            }
                            PipelineMetrics::flushed(flushing.elapsed());
                            drain(&mut ack_rx, &mut tracker);
                        }
                    }
                    // under a steady load the (biased) select may not reach the ticker for a
                    // while: keep the metrics current from here too
                    if last_published.elapsed() >= TICK {
                        metrics.durable_through(tracker.durable_through(), now);
                        metrics.tick(now, tracker.in_flight(), last_durable_at.elapsed(), backpressure.total());
                        last_published = Instant::now();
                    }
                }
                Some(ack) = ack_rx.recv() => {
                    tracker.ack(ack);
                }
                _ = ticker.tick() => {
                    if let Some(through) = &last_position {
                        if let Err(err) = sink.tick(through).await {
                            break Err(err.into());
                        }
                    }
                    drain(&mut ack_rx, &mut tracker);
                    let now = now_ms();
                    metrics.durable_through(tracker.durable_through(), now);
                    metrics.tick(now, tracker.in_flight(), last_durable_at.elapsed(), backpressure.total());
                    last_published = Instant::now();
                    if last_checkpoint_at.elapsed() >= settings.checkpoint_interval {
                        let before = committed.clone();
                        if let Err(err) = commit_checkpoint(&checkpoints, &tracker, &mut committed) {
                            break Err(err);
                        }
                        if committed != before {
                            last_durable_at = Instant::now();
                            if let Some(durable) = &committed {
                                settings.status.set_durable_position(durable.clone());
                                PipelineMetrics::snapshot(durable.backfill().map(|b| b.as_ref()));
                            }
                        }
                        offer_requests(&settings.requests, &backfills, committed.as_ref());
                        durable_tx.send_if_modified(|current| {
                            let changed = *current != committed;
                            if changed {
                                current.clone_from(&committed);
                            }
                            changed
                        });
                        last_checkpoint_at = Instant::now();
                    }
                    if last_log.elapsed() >= PROGRESS_LOG {
                        let rate = (summary.records - records_at_last_log) as f64 / last_log.elapsed().as_secs_f64();
                        tracing::info!(records = summary.records, rate_per_s = rate as u64, in_flight = tracker.in_flight(),
                            durable = ?committed.as_ref().map(|p| p.to_string()), "progress");
                        last_log = Instant::now();
                        records_at_last_log = summary.records;
                    }
                }
            }
        };
        source_task.abort();

        // Whatever happened, make durable what was handed to the sink, then commit it.
        let flushed = match &last_position {
            Some(through) => sink.flush(through).await.map_err(PipelineError::from),
            None => Ok(()),
        };
        drain(&mut ack_rx, &mut tracker);
        let committed_now = commit_checkpoint(&checkpoints, &tracker, &mut committed);
        summary.durable = committed;
        settings.status.set_sink_open(false);
        settings.status.set_source_connected(false);
        outcome?;
        flushed?;
        committed_now?;
        Ok(summary)
    }
}

/// Hands waiting backfill requests and the pause switch to the source, and deletes the
/// requests `committed` shows accepted.
fn offer_requests(requests: &RequestDir, inbox: &BackfillInbox, committed: Option<&Position>) {
    let paused = requests.paused();
    if paused != inbox.is_paused() || requests.applied() != Some(paused) {
        inbox.set_paused(paused);
        // `headwater backfill --pause` waits for this to know the source has it
        if let Err(err) = requests.record_applied(paused) {
            tracing::warn!(error = %err, "could not record the backfill pause switch in the state directory");
        }
    }
    let accepted = committed
        .and_then(Position::backfill)
        .map_or(0, |state| state.last_request_id);
    if accepted > 0 {
        requests.forget_through(accepted);
        inbox.forget_through(accepted);
    }
    for request in requests.pending() {
        if request.id > accepted {
            inbox.offer(request);
        }
    }
}

fn commit_checkpoint(
    checkpoints: &CheckpointStore,
    tracker: &AckTracker,
    committed: &mut Option<Position>,
) -> Result<(), PipelineError> {
    if let Some(durable) = tracker.durable() {
        if committed.as_ref() != Some(durable) {
            let storing = Instant::now();
            checkpoints.store(durable)?;
            PipelineMetrics::checkpoint_stored(storing.elapsed());
            *committed = Some(durable.clone());
        }
    }
    Ok(())
}

fn drain(acks: &mut mpsc::UnboundedReceiver<Ack>, tracker: &mut AckTracker) {
    while let Ok(ack) = acks.try_recv() {
        tracker.ack(ack);
    }
    tracker.settle();
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;

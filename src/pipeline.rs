//! The pipeline runtime: receives source events, encodes them into envelope records, hands them
//! to the sink, tracks acknowledgements, and commits the durable position.

use crate::ack::AckTracker;
use crate::checkpoint::{CheckpointError, CheckpointStore};
use crate::pipeline_metrics::PipelineMetrics;
use crate::requests::RequestDir;
use crate::retry::RetryPolicy;
use crate::telemetry::Status;
use crate::transaction_events::{TransactionEvents, TransactionRecord};
use headwater_contract::record::{encode_envelope, encode_schema_change};
use headwater_contract::{now_ms, now_us};
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
    /// Write transaction BEGIN/END records.
    pub transaction_events: bool,
}

/// Batches buffered between the source task and the runtime (each batch is one log event's rows).
const EVENT_BATCHES: usize = 64;
/// How often metrics are published and the checkpoint interval is looked at.
const TICK: Duration = Duration::from_millis(100);
/// How often the sink is ticked: a lake commit falls due `commit_interval` after its first
/// change, and waiting for the next 100 ms tick made it up to 100 ms late.
const SINK_TICK: Duration = Duration::from_millis(10);
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

    fn encode(&mut self, seq: u64, event: SourceEvent, now_us: i64) -> Option<SinkRecord> {
        match event {
            SourceEvent::Change(change) => {
                let stream = self.stream_for(&change.table);
                let mut value = Vec::with_capacity(
                    change.before.as_ref().map_or(0, Vec::len)
                        + change.after.as_ref().map_or(0, Vec::len)
                        + 128,
                );
                encode_envelope(&change, &self.server_name, now_us, &mut value);
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
                encode_schema_change(&ddl, &self.server_name, now_us, &mut value);
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
    /// On every exit path it flushes the sink (unless the sink itself failed) and commits what
    /// is durable first.
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
        let (acks, ack_rx) = AckSender::channel();
        let sink_position = sink.open(acks).await?;
        settings.status.set_sink_open(true);
        let resume = resume_position(sink_position, checkpoints.load()?.map(|c| c.position));
        if let Some(position) = &resume {
            settings.status.set_durable_position(position.clone());
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
        let links = SourceLinks {
            durable_tx,
            backfills,
            backpressure,
        };
        let mut running = Running::new(settings, sink, checkpoints, ack_rx, resume, links);
        let mut ticker = tokio::time::interval(SINK_TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                    if let Err(err) = running.take_batch(batch).await {
                        break Err(err);
                    }
                }
                Some(ack) = running.ack_rx.recv() => running.tracker.ack(ack),
                _ = ticker.tick() => {
                    if let Err(err) = running.tick().await {
                        break Err(err);
                    }
                }
            }
        };
        source_task.abort();
        running.finish(outcome).await
    }
}

/// Where the run starts: the position stored with the sink's data wins over the checkpoint
/// file (the sink's is the one its data matches).
fn resume_position(sink: Option<Position>, checkpoint: Option<Position>) -> Option<Position> {
    let resume = match (sink, checkpoint) {
        (Some(sink), checkpoint) => {
            if checkpoint.as_ref().is_some_and(|c| c != &sink) {
                tracing::info!(sink = %sink, checkpoint = ?checkpoint.as_ref().map(|c| c.to_string()),
                    "resuming from the position stored with the sink's data (it wins over the checkpoint file)");
            }
            Some(sink)
        }
        (None, checkpoint) => checkpoint,
    };
    match &resume {
        Some(position) => tracing::info!(%position, "resuming"),
        None => tracing::info!("no stored position: starting where the source config says"),
    }
    resume
}

/// What the runtime tells the running source, and reads from it.
struct SourceLinks {
    /// The committed position, for sources that confirm it to their server.
    durable_tx: tokio::sync::watch::Sender<Option<Position>>,
    /// Backfill requests and the pause switch.
    backfills: BackfillInbox,
    /// How long the source has waited for room in the event channel.
    backpressure: headwater_contract::connector::BlockedTime,
}

/// A run's state between the source's batches, the sink's acknowledgements and the ticks.
struct Running {
    settings: Settings,
    sink: Box<dyn Sink>,
    checkpoints: CheckpointStore,
    ack_rx: mpsc::UnboundedReceiver<Ack>,
    tracker: AckTracker,
    encoder: Encoder,
    /// `pipeline.transaction_events`: BEGIN/END records around transactions.
    transactions: Option<TransactionEvents>,
    metrics: PipelineMetrics,
    next_seq: u64,
    /// The position of the last event handed to the sink (what a flush covers).
    last_position: Option<Position>,
    /// The position in the checkpoint file.
    committed: Option<Position>,
    links: SourceLinks,
    /// The sink returned an error: it is not asked for anything more.
    sink_failed: bool,
    summary: RunSummary,
    last_checkpoint_at: Instant,
    last_durable_at: Instant,
    last_published: Instant,
    /// When [`Running::tick`] last did its every-[`TICK`] work.
    last_housekeeping: Instant,
    last_log: Instant,
    records_at_last_log: u64,
}

impl Running {
    fn new(
        settings: Settings,
        sink: Box<dyn Sink>,
        checkpoints: CheckpointStore,
        ack_rx: mpsc::UnboundedReceiver<Ack>,
        resume: Option<Position>,
        links: SourceLinks,
    ) -> Self {
        let transactions = settings
            .transaction_events
            .then(|| TransactionEvents::new(&settings.server_name, settings.connector));
        let encoder = Encoder {
            server_name: settings.server_name.clone(),
            connector: settings.connector,
            streams: HashMap::new(),
            schema_changes: Arc::new(StreamSchema::for_schema_changes(
                &settings.server_name,
                settings.connector,
            )),
        };
        Running {
            metrics: PipelineMetrics::new(settings.column_stats),
            settings,
            sink,
            checkpoints,
            ack_rx,
            tracker: AckTracker::new(1),
            encoder,
            transactions,
            next_seq: 1,
            last_position: resume.clone(),
            committed: resume,
            links,
            sink_failed: false,
            summary: RunSummary::default(),
            last_checkpoint_at: Instant::now(),
            last_durable_at: Instant::now(),
            last_published: Instant::now(),
            last_housekeeping: Instant::now(),
            last_log: Instant::now(),
            records_at_last_log: 0,
        }
    }

    /// Encodes one batch of source events and hands the records to the sink; flushes when
    /// too much is unacknowledged.
    async fn take_batch(&mut self, batch: Vec<SourceEvent>) -> Result<(), PipelineError> {
        let now_us = now_us();
        let now = now_us.div_euclid(1000);
        self.settings.status.set_source_connected(true);
        let mut first_change = true;
        for event in batch {
            if let Some(transactions) = &mut self.transactions {
                let records = transactions.before(&event, self.last_position.as_ref());
                let stream = Arc::clone(transactions.stream());
                for record in records {
                    self.write_transaction_record(&stream, record).await?;
                }
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            let position = event.position().clone();
            self.observe(&event, seq, now, &mut first_change);
            match self.encoder.encode(seq, event, now_us) {
                Some(record) => {
                    self.tracker.push(seq, position.clone(), true);
                    self.summary.records += 1;
                    self.metrics
                        .written(record.value.len() + record.key.as_ref().map_or(0, Vec::len));
                    let written = self.sink.write(record).await;
                    self.sink_result(written)?;
                }
                None => self.tracker.push(seq, position.clone(), false),
            }
            self.last_position = Some(position);
        }
        drain(&mut self.ack_rx, &mut self.tracker);
        if self.tracker.in_flight() >= self.settings.max_in_flight {
            if let Some(through) = &self.last_position {
                let flushing = Instant::now();
                let flushed = self.sink.flush(through).await;
                self.sink_result(flushed)?;
                PipelineMetrics::flushed(flushing.elapsed());
                drain(&mut self.ack_rx, &mut self.tracker);
            }
        }
        // under a steady load the (biased) select may not reach the ticker for a while: keep
        // the metrics current from here too
        if self.last_published.elapsed() >= TICK {
            self.publish_metrics(now);
        }
        Ok(())
    }

    /// Hands a transaction BEGIN/END record to the sink, numbered like every record.
    async fn write_transaction_record(
        &mut self,
        stream: &Arc<StreamSchema>,
        record: TransactionRecord,
    ) -> Result<(), PipelineError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.tracker.push(seq, record.position.clone(), true);
        self.summary.records += 1;
        self.metrics.written(record.value.len() + record.key.len());
        let written = self
            .sink
            .write(SinkRecord {
                seq,
                stream: Arc::clone(stream),
                op: None,
                key: Some(record.key),
                value: record.value,
                position: record.position,
            })
            .await;
        self.sink_result(written)
    }

    /// Notes a sink failure, so the run's end does not flush the failed sink.
    fn sink_result(&mut self, result: Result<(), ConnectorError>) -> Result<(), PipelineError> {
        if result.is_err() {
            self.sink_failed = true;
        }
        Ok(result?)
    }

    /// The volume, freshness and schema metrics of one event.
    fn observe(&mut self, event: &SourceEvent, seq: u64, now: i64, first_change: &mut bool) {
        match event {
            SourceEvent::Change(change) => {
                let commit_ms = change.source.ts_ms();
                self.metrics.change(
                    &change.table,
                    change.op,
                    commit_ms,
                    now,
                    change.after.as_deref(),
                );
                if change
                    .transaction
                    .as_ref()
                    .is_some_and(|t| t.total_order == 1)
                {
                    self.metrics.transaction();
                }
                if *first_change && change.op != headwater_contract::Op::Read {
                    self.metrics.batch_started(seq, commit_ms);
                    *first_change = false;
                }
            }
            SourceEvent::SchemaChange(ddl) => PipelineMetrics::schema_change(ddl.table.as_ref()),
            SourceEvent::Progress(_) => {}
        }
    }

    fn publish_metrics(&mut self, now: i64) {
        let blocked = self.links.backpressure.total();
        self.metrics
            .durable_through(self.tracker.durable_through(), now);
        self.metrics.tick(
            now,
            self.tracker.in_flight(),
            self.last_durable_at.elapsed(),
            blocked,
        );
        self.last_published = Instant::now();
    }

    /// The periodic work: the sink's tick (every [`SINK_TICK`]), then, every [`TICK`], metrics,
    /// the checkpoint and the progress log.
    async fn tick(&mut self) -> Result<(), PipelineError> {
        let ticked = self.sink.tick(self.last_position.as_ref()).await;
        self.sink_result(ticked)?;
        drain(&mut self.ack_rx, &mut self.tracker);
        if self.last_housekeeping.elapsed() < TICK {
            return Ok(());
        }
        self.last_housekeeping = Instant::now();
        self.publish_metrics(now_ms());
        if self.last_checkpoint_at.elapsed() >= self.settings.checkpoint_interval {
            self.checkpoint()?;
            self.last_checkpoint_at = Instant::now();
        }
        if self.last_log.elapsed() >= PROGRESS_LOG {
            let rate = (self.summary.records - self.records_at_last_log) as f64
                / self.last_log.elapsed().as_secs_f64();
            tracing::info!(records = self.summary.records, rate_per_s = rate as u64, in_flight = self.tracker.in_flight(),
                durable = ?self.committed.as_ref().map(|p| p.to_string()), "progress");
            self.last_log = Instant::now();
            self.records_at_last_log = self.summary.records;
        }
        Ok(())
    }

    /// Commits what is durable, and tells the source and the backfill requests about it.
    fn checkpoint(&mut self) -> Result<(), PipelineError> {
        let before = self.committed.clone();
        commit_checkpoint(&self.checkpoints, &self.tracker, &mut self.committed)?;
        if self.committed != before {
            self.last_durable_at = Instant::now();
            if let Some(durable) = &self.committed {
                self.settings.status.set_durable_position(durable.clone());
                PipelineMetrics::snapshot(durable.backfill().map(|b| b.as_ref()));
            }
        }
        offer_requests(
            &self.settings.requests,
            &self.links.backfills,
            self.committed.as_ref(),
        );
        let committed = &self.committed;
        self.links.durable_tx.send_if_modified(|current| {
            let changed = current != committed;
            if changed {
                current.clone_from(committed);
            }
            changed
        });
        Ok(())
    }

    /// Whatever ended the run: make durable what was handed to the sink, then commit it.
    async fn finish(
        mut self,
        outcome: Result<(), PipelineError>,
    ) -> Result<RunSummary, PipelineError> {
        // A sink that failed may have dropped what it held (a commit that failed half-way):
        // flushing it again could store a position past records it no longer has. Only what
        // it acknowledged before the failure is committed.
        let flushed = match &self.last_position {
            Some(through) if !self.sink_failed => {
                self.sink.flush(through).await.map_err(PipelineError::from)
            }
            _ => Ok(()),
        };
        drain(&mut self.ack_rx, &mut self.tracker);
        let committed_now =
            commit_checkpoint(&self.checkpoints, &self.tracker, &mut self.committed);
        self.summary.durable = self.committed;
        self.settings.status.set_sink_open(false);
        self.settings.status.set_source_connected(false);
        outcome?;
        flushed?;
        committed_now?;
        Ok(self.summary)
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

//! The two traits every connector implements, with their durability contracts.

use crate::backfill::BackfillInbox;
use crate::error::{ConnectorError, Problem};
use crate::position::Position;
use crate::record::{SinkRecord, SourceEvent};
use crate::schema::TableId;
use async_trait::async_trait;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// The position below which everything is durable in the sink, as the runtime last committed
/// it. Sources whose server keeps the log until told (PostgreSQL's slot) confirm from this, and
/// only from this: a position that was merely received is never confirmed.
pub type DurableWatch = tokio::sync::watch::Receiver<Option<Position>>;

/// What the runtime hands a running stream besides its event channel.
#[derive(Clone, Debug)]
pub struct StreamContext {
    /// The committed position (see [`DurableWatch`]).
    pub durable: DurableWatch,
    /// Backfills asked for while the pipeline runs (`headwater backfill`).
    pub backfills: BackfillInbox,
}

/// Receives batches of events from a source, in log order.
pub type EventReceiver = mpsc::Receiver<Vec<SourceEvent>>;

/// Sends batches of events from a source, in log order. The channel is bounded: a slow sink
/// makes `send` wait, which is how back-pressure reaches the source. It remembers the position
/// of the last event handed over, which is where a restarted source must continue.
#[derive(Clone, Debug)]
pub struct EventSender {
    tx: mpsc::Sender<Vec<SourceEvent>>,
    last_sent: Arc<Mutex<Option<Position>>>,
    /// Nanoseconds the source has waited for room in the channel (back-pressure).
    blocked_nanos: Arc<std::sync::atomic::AtomicU64>,
}

/// The total time a source waited on back-pressure (see [`EventSender::blocked_time`]).
#[derive(Clone, Debug)]
pub struct BlockedTime(Arc<std::sync::atomic::AtomicU64>);

impl BlockedTime {
    pub fn total(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.0.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// The most events [`EventSender::send_all`] puts in one batch.
pub const MAX_BATCH: usize = 2048;

/// The pipeline stopped receiving; the source should return.
#[derive(Debug, thiserror::Error)]
#[error("the pipeline stopped receiving events")]
pub struct ReceiverGone;

impl EventSender {
    /// A bounded channel holding at most `batches` batches.
    pub fn channel(batches: usize) -> (EventSender, EventReceiver) {
        let (tx, rx) = mpsc::channel(batches);
        (
            EventSender {
                tx,
                last_sent: Arc::new(Mutex::new(None)),
                blocked_nanos: Arc::default(),
            },
            rx,
        )
    }

    /// Hands a batch to the pipeline, waiting while it is full.
    pub async fn send(&self, batch: Vec<SourceEvent>) -> Result<(), ReceiverGone> {
        let last = match batch.last() {
            Some(event) => event.position().clone(),
            None => return Ok(()),
        };
        match self.tx.try_send(batch) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(batch)) => {
                // the pipeline is behind: time the wait (only then, so the fast path stays cheap)
                let waiting = std::time::Instant::now();
                self.tx.send(batch).await.map_err(|_| ReceiverGone)?;
                let nanos = u64::try_from(waiting.elapsed().as_nanos()).unwrap_or(u64::MAX);
                self.blocked_nanos
                    .fetch_add(nanos, std::sync::atomic::Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(ReceiverGone),
        }
        if let Ok(mut slot) = self.last_sent.lock() {
            *slot = Some(last);
        }
        Ok(())
    }

    /// Hands over a batch of any size in parts of at most `MAX_BATCH` events, so the bounded
    /// channel bounds memory in events, whatever a source produced at once (a snapshot chunk).
    pub async fn send_all(&self, batch: Vec<SourceEvent>) -> Result<(), ReceiverGone> {
        if batch.len() <= MAX_BATCH {
            return self.send(batch).await;
        }
        let mut events = batch.into_iter();
        loop {
            let part: Vec<SourceEvent> = events.by_ref().take(MAX_BATCH).collect();
            if part.is_empty() {
                return Ok(());
            }
            self.send(part).await?;
        }
    }

    /// A reader of how long sources have waited for the pipeline to take their batches. It
    /// holds no sender, so the channel still closes when the source is done.
    pub fn blocked_time(&self) -> BlockedTime {
        BlockedTime(Arc::clone(&self.blocked_nanos))
    }

    /// The position of the last event handed to the pipeline.
    pub fn last_sent(&self) -> Option<Position> {
        self.last_sent.lock().ok().and_then(|slot| slot.clone())
    }
}

/// A change log reader.
///
/// Contract: events are sent in log order, and each event's position is the point just after
/// it. A source never decides what is durable: it reads from the position the runtime gives it
/// (the last durable checkpoint, or the last position the runtime received when it restarts the
/// source after a retryable error) and skips nothing the position does not cover.
#[async_trait]
pub trait Source: Send {
    /// Preflight: every setting, privilege and resource the source needs, each problem with its fix.
    async fn check(&mut self) -> Result<Vec<Problem>, ConnectorError>;

    /// The current end of the log; `--catch-up` runs until it is reached.
    async fn log_end(&mut self) -> Result<Position, ConnectorError>;

    /// How `position` stands against the log (`None`: the pipeline has none yet): bytes behind
    /// the end, and the server's retention applied to it. On its own connection; changes
    /// nothing on the server.
    async fn log_status(
        &mut self,
        position: Option<&Position>,
    ) -> Result<crate::retention::LogStatus, ConnectorError>;

    /// Streams from `resume` (`None`: where the config says a new pipeline starts) until `stop_at`
    /// is reached and no snapshot is pending (then returns `Ok`) or the receiver is dropped.
    /// Snapshot progress travels in the positions (see [`crate::backfill`]): a resumed stream
    /// continues the backfill its position carries. Errors are classified: the runtime calls
    /// `stream` again after a retryable one.
    async fn stream(
        &mut self,
        resume: Option<Position>,
        stop_at: Option<Position>,
        events: EventSender,
        context: StreamContext,
    ) -> Result<(), ConnectorError>;

    /// Whether `table` can be backfilled (it exists, is captured, has a key) and `condition`
    /// is valid SQL for it; an error says what to change.
    async fn check_backfill(
        &mut self,
        table: &TableId,
        condition: Option<&str>,
    ) -> Result<(), ConnectorError>;

    /// The captured tables that have no primary key (nor, where the source has one, another
    /// row identity): `headwater check` asks the sink what it does with them.
    async fn keyless_tables(&mut self) -> Result<Vec<TableId>, ConnectorError>;
}

/// What a sink acknowledges: these records are durable in the destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ack {
    /// Every record with `seq <=` this that was written to the sink.
    Through(u64),
    /// One record (sinks whose deliveries complete out of order).
    One(u64),
}

/// Where a sink reports acknowledgements. Unbounded on purpose: the number of records a sink
/// holds unacknowledged is bounded by the runtime, so acks can never outnumber it.
#[derive(Clone, Debug)]
pub struct AckSender(mpsc::UnboundedSender<Ack>);

impl AckSender {
    pub fn channel() -> (AckSender, mpsc::UnboundedReceiver<Ack>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (AckSender(tx), rx)
    }

    /// Reports durable records. After the runtime has gone away there is nobody to tell, which
    /// is harmless: positions only advance through the runtime.
    pub fn ack(&self, ack: Ack) {
        let _ = self.0.send(ack);
    }
}

/// A destination for change records.
///
/// Durability contract: a record is durable only once the sink has acknowledged its sequence
/// number through the [`AckSender`] given to `open`. The runtime commits a source position only
/// when every record before it is acknowledged, so a sink must never acknowledge a record that
/// a crash (`kill -9`, power loss) could still lose. A sink that stores the source position
/// atomically with its data (the lake) returns it from `open`, and the runtime resumes from it:
/// that makes delivery exactly-once.
#[async_trait]
pub trait Sink: Send {
    /// Preflight (`headwater check`): can the destination be reached and written, each problem
    /// with its fix. Changes nothing a pipeline relies on.
    async fn check(&mut self) -> Result<Vec<Problem>, ConnectorError> {
        Ok(Vec::new())
    }

    /// Preflight for the captured tables without a primary key: what this sink does with
    /// them, when it treats them differently (a Delta mirror needs a key).
    fn check_keyless_tables(&self, tables: &[TableId]) -> Vec<Problem> {
        let _ = tables;
        Vec::new()
    }

    /// Connects, recovers from an earlier crash, and returns the position stored with the sink's
    /// data, if the sink stores one.
    async fn open(&mut self, acks: AckSender) -> Result<Option<Position>, ConnectorError>;

    /// Accepts one record. It is not durable until acknowledged. May wait (back-pressure).
    async fn write(&mut self, record: SinkRecord) -> Result<(), ConnectorError>;

    /// Called periodically with the position that covers every record written so far (`None`
    /// before the source has given one): the sink may make data durable now (e.g. a lake file
    /// that reached its age limit) or write its own periodic records (Kafka heartbeats).
    async fn tick(&mut self, through: Option<&Position>) -> Result<(), ConnectorError>;

    /// Makes every record written so far durable and acknowledges them before returning.
    /// `through` covers everything written; a sink that stores positions stores this one.
    async fn flush(&mut self, through: &Position) -> Result<(), ConnectorError>;
}

//! The runtime against in-memory connectors: a scripted source (fails, reconnects) and a sink
//! that acknowledges late, out of order, fails, or "crashes" — the pipeline dropped mid-write,
//! as `kill -9` would, losing whatever the sink held unacknowledged. These doubles test the
//! runtime's promises only; every real connector is tested against its real server.

use super::*;
use crate::retry::RetryPolicy;
use async_trait::async_trait;
use headwater_contract::{
    Column, FieldType, LogStatus, Lsn, PgPosition, PgSourceInfo, Problem, SnapshotMarker,
    SourceInfo, TableSchema,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::Notify;

fn at(lsn: u64) -> Position {
    Position::Postgres(PgPosition::at(Lsn(lsn), 0))
}

fn lsn_of(position: &Position) -> u64 {
    match position {
        Position::Postgres(p) => p.lsn.0,
        other => panic!("not a test position: {other}"),
    }
}

/// Every fifth log entry is a commit or heartbeat (no record), the rest are changes.
fn is_change(lsn: u64) -> bool {
    !lsn.is_multiple_of(5)
}

fn table() -> Arc<TableSchema> {
    Arc::new(TableSchema {
        id: TableId {
            namespace: "memory".into(),
            table: "t".into(),
        },
        version: 1,
        columns: vec![Column {
            name: "id".into(),
            field_type: FieldType::Long,
            nullable: false,
            sql_type: "bigint".into(),
        }],
        primary_key: vec![0],
    })
}

fn event(table: &Arc<TableSchema>, lsn: u64) -> SourceEvent {
    if !is_change(lsn) {
        return SourceEvent::Progress(at(lsn));
    }
    SourceEvent::Change(headwater_contract::ChangeRecord {
        table: Arc::clone(table),
        op: headwater_contract::Op::Create,
        key: Some(lsn.to_le_bytes().to_vec()),
        before: None,
        after: Some(lsn.to_le_bytes().to_vec()),
        source: SourceInfo::Postgres(PgSourceInfo {
            ts_us: 1_700_000_000_000_000,
            snapshot: SnapshotMarker::False,
            db: "memory".into(),
            schema: "memory".into(),
            table: Some("t".into()),
            tx_id: Some(lsn as i64),
            lsn: Some(lsn as i64),
            last_commit_lsn: None,
        }),
        transaction: None,
        position: at(lsn),
    })
}

/// A log of `end` entries, read in batches; each `stream` call fails (retryably) after the
/// number of entries its turn in `failures` says, or after `definite_after` with a definite one.
struct ScriptedSource {
    end: u64,
    batch: usize,
    failures: VecDeque<usize>,
    definite_after: Option<usize>,
    /// The position each `stream` call was asked to resume from.
    resumed_from: Arc<Mutex<Vec<Option<u64>>>>,
    table: Arc<TableSchema>,
}

impl ScriptedSource {
    fn new(end: u64, batch: usize, failures: Vec<usize>) -> Self {
        ScriptedSource {
            end,
            batch,
            failures: failures.into(),
            definite_after: None,
            resumed_from: Arc::default(),
            table: table(),
        }
    }
}

#[async_trait]
impl Source for ScriptedSource {
    async fn check(&mut self) -> Result<Vec<Problem>, ConnectorError> {
        Ok(Vec::new())
    }

    async fn log_end(&mut self) -> Result<Position, ConnectorError> {
        Ok(at(self.end))
    }

    async fn log_status(&mut self, _: Option<&Position>) -> Result<LogStatus, ConnectorError> {
        Err(ConnectorError::definite("not used by the runtime"))
    }

    async fn stream(
        &mut self,
        resume: Option<Position>,
        stop_at: Option<Position>,
        events: EventSender,
        _context: StreamContext,
    ) -> Result<(), ConnectorError> {
        let from = resume.as_ref().map(lsn_of);
        self.resumed_from.lock().expect("lock").push(from);
        let end = stop_at.as_ref().map_or(self.end, lsn_of);
        let mut budget = self.failures.pop_front();
        let mut definite = self.definite_after.take();
        let mut lsn = from.unwrap_or(0) + 1;
        while lsn <= end {
            let mut batch = Vec::new();
            while batch.len() < self.batch && lsn <= end {
                if budget == Some(0) {
                    break;
                }
                if definite == Some(0) {
                    break;
                }
                batch.push(event(&self.table, lsn));
                budget = budget.map(|b| b - 1);
                definite = definite.map(|b| b - 1);
                lsn += 1;
            }
            if events.send(batch).await.is_err() {
                return Ok(());
            }
            if budget == Some(0) {
                return Err(ConnectorError::retryable(
                    "scripted: the connection was lost",
                ));
            }
            if definite == Some(0) {
                return Err(ConnectorError::definite("scripted: the log cannot be read"));
            }
        }
        Ok(())
    }

    async fn check_backfill(&mut self, _: &TableId, _: Option<&str>) -> Result<(), ConnectorError> {
        Ok(())
    }

    async fn keyless_tables(&mut self) -> Result<Vec<TableId>, ConnectorError> {
        Ok(Vec::new())
    }
}

/// What survives the pipeline: the records made durable and, for a sink that stores it, the
/// position stored with them.
#[derive(Default)]
struct Destination {
    rows: Vec<u64>,
    position: Option<Position>,
}

/// How one life of the sink behaves.
#[derive(Clone, Copy, Debug, Default)]
struct SinkScript {
    /// Stores the position with its data (the lake, Delta): exactly-once. Otherwise it only
    /// acknowledges (Kafka): at-least-once.
    stores_position: bool,
    /// Acknowledges each record on its own, in shuffled order.
    out_of_order: bool,
    /// Makes a random part of what it holds durable at each tick, so acks come late.
    partial_ticks: bool,
    /// The process dies in the middle of this write (counting from 1).
    crash_at_write: Option<usize>,
    /// This write fails with a retryable error (the destination went away), losing what the
    /// sink held unacknowledged.
    fail_at_write: Option<usize>,
}

struct MemorySink {
    destination: Arc<Mutex<Destination>>,
    script: SinkScript,
    acks: Option<AckSender>,
    pending: Vec<(u64, Position)>,
    writes: usize,
    crashed: Arc<Notify>,
    rng: StdRng,
}

impl MemorySink {
    fn make_durable(&mut self, count: usize, covering: Option<&Position>) {
        let count = count.min(self.pending.len());
        let done: Vec<(u64, Position)> = self.pending.drain(..count).collect();
        let mut destination = self.destination.lock().expect("lock");
        destination
            .rows
            .extend(done.iter().map(|(_, position)| lsn_of(position)));
        if self.script.stores_position {
            let stored = covering.or(done.last().map(|(_, position)| position));
            if let Some(position) = stored {
                destination.position = Some(position.clone());
            }
        }
        drop(destination);
        let Some(acks) = &self.acks else { return };
        if self.script.out_of_order {
            let mut seqs: Vec<u64> = done.iter().map(|(seq, _)| *seq).collect();
            seqs.shuffle(&mut self.rng);
            for seq in seqs {
                acks.ack(Ack::One(seq));
            }
        } else if let Some((seq, _)) = done.last() {
            acks.ack(Ack::Through(*seq));
        }
    }
}

#[async_trait]
impl Sink for MemorySink {
    async fn open(&mut self, acks: AckSender) -> Result<Option<Position>, ConnectorError> {
        self.acks = Some(acks);
        let destination = self.destination.lock().expect("lock");
        Ok(if self.script.stores_position {
            destination.position.clone()
        } else {
            None
        })
    }

    async fn write(&mut self, record: SinkRecord) -> Result<(), ConnectorError> {
        self.writes += 1;
        if self.script.crash_at_write == Some(self.writes) {
            self.crashed.notify_one();
            std::future::pending::<()>().await;
        }
        if self.script.fail_at_write == Some(self.writes) {
            // as a commit that failed half-way: what the sink held is gone, and a later flush
            // would succeed with nothing to write
            self.pending.clear();
            return Err(ConnectorError::retryable(
                "scripted: the destination went away",
            ));
        }
        self.pending.push((record.seq, record.position));
        Ok(())
    }

    async fn tick(&mut self, _through: Option<&Position>) -> Result<(), ConnectorError> {
        if self.script.partial_ticks && !self.pending.is_empty() {
            let count = self.rng.random_range(0..=self.pending.len());
            self.make_durable(count, None);
        }
        Ok(())
    }

    async fn flush(&mut self, through: &Position) -> Result<(), ConnectorError> {
        self.make_durable(self.pending.len(), Some(through));
        Ok(())
    }
}

struct Harness {
    dir: tempfile::TempDir,
    destination: Arc<Mutex<Destination>>,
    max_in_flight: usize,
}

/// How one life of the pipeline ended.
#[derive(Debug)]
enum Life {
    Done(RunSummary),
    Crashed,
    Failed(PipelineError),
}

impl Harness {
    fn new(max_in_flight: usize) -> Self {
        Harness {
            dir: tempfile::tempdir().expect("temp dir"),
            destination: Arc::default(),
            max_in_flight,
        }
    }

    fn checkpoint(&self) -> Option<u64> {
        CheckpointStore::open(self.dir.path(), "memory")
            .expect("the state directory")
            .load()
            .expect("the checkpoint")
            .map(|c| lsn_of(&c.position))
    }

    /// One process life: a `--catch-up` run of `source` into a sink behaving as `script`,
    /// until it ends or the sink "crashes" it.
    async fn live(&self, source: ScriptedSource, script: SinkScript, seed: u64) -> Life {
        let crashed = Arc::new(Notify::new());
        let sink = MemorySink {
            destination: Arc::clone(&self.destination),
            script,
            acks: None,
            pending: Vec::new(),
            writes: 0,
            crashed: Arc::clone(&crashed),
            rng: StdRng::seed_from_u64(seed),
        };
        let pipeline = Pipeline {
            settings: Settings {
                server_name: "memory".into(),
                connector: ConnectorKind::Postgres,
                max_in_flight: self.max_in_flight,
                checkpoint_interval: Duration::ZERO,
                requests: RequestDir::new(self.dir.path()),
                status: Arc::default(),
                column_stats: false,
                source_retry: RetryPolicy {
                    min: Duration::from_millis(1),
                    max: Duration::from_millis(4),
                },
                transaction_events: false,
            },
            source: Box::new(source),
            sink: Box::new(sink),
            checkpoints: CheckpointStore::open(self.dir.path(), "memory")
                .expect("the state directory"),
        };
        let run = pipeline.run(RunMode::CatchUp, std::future::pending::<()>());
        tokio::select! {
            result = run => match result {
                Ok(summary) => Life::Done(summary),
                Err(err) => Life::Failed(err),
            },
            // the run future is dropped here, unflushed, as a killed process would leave it
            _ = crashed.notified() => Life::Crashed,
        }
    }

    /// The checkpoint never covers a change the destination does not hold.
    fn assert_checkpoint_is_durable(&self, context: &str) {
        let Some(checkpoint) = self.checkpoint() else {
            return;
        };
        let rows = self.destination.lock().expect("lock").rows.clone();
        for lsn in (1..=checkpoint).filter(|l| is_change(*l)) {
            assert!(
                rows.contains(&lsn),
                "{context}: the checkpoint at {checkpoint} covers change {lsn}, which the sink never made durable"
            );
        }
    }
}

fn changes(end: u64) -> Vec<u64> {
    (1..=end).filter(|l| is_change(*l)).collect()
}

/// Property: over random fault schedules — source connections lost, sink writes failing,
/// acks late and out of order, the process killed mid-write, any number of times — no change
/// is lost, a sink that stores its position holds each change exactly once, and the
/// checkpoint never covers a change that is not durable.
#[tokio::test]
async fn random_fault_schedules_lose_nothing_and_commit_nothing_twice() {
    const CASES: u64 = 300;
    let mut crashes = 0;
    let mut source_failures = 0;
    for seed in 0..CASES {
        let mut rng = StdRng::seed_from_u64(seed);
        let end = rng.random_range(1..400u64);
        let batch = rng.random_range(1..40usize);
        let stores_position = rng.random_bool(0.5);
        let harness = Harness::new(rng.random_range(1..80));
        let context =
            format!("case {seed} (end {end}, batch {batch}, exactly-once {stores_position})");
        let mut lives = 0;
        loop {
            lives += 1;
            assert!(lives < 60, "{context}: never finished");
            // after a few scripted faults, lives run clean so every case ends
            let faulty = lives < rng.random_range(1..8);
            let failures: Vec<usize> = if faulty {
                (0..rng.random_range(0..4))
                    .map(|_| rng.random_range(0..60))
                    .collect()
            } else {
                Vec::new()
            };
            source_failures += failures.len();
            let script = SinkScript {
                stores_position,
                out_of_order: rng.random_bool(0.5),
                partial_ticks: rng.random_bool(0.5),
                crash_at_write: (faulty && rng.random_bool(0.6)).then(|| rng.random_range(1..300)),
                fail_at_write: (faulty && rng.random_bool(0.2)).then(|| rng.random_range(1..300)),
            };
            let source = ScriptedSource::new(end, batch, failures);
            let life = harness.live(source, script, seed * 1000 + lives).await;
            harness.assert_checkpoint_is_durable(&format!("{context}, life {lives}"));
            match life {
                Life::Done(summary) => {
                    assert_eq!(summary.durable.as_ref().map(lsn_of), Some(end), "{context}");
                    break;
                }
                Life::Crashed => crashes += 1,
                Life::Failed(PipelineError::Connector(err)) if err.is_retryable() => {}
                Life::Failed(err) => panic!("{context}: {err}"),
            }
        }
        let rows = harness.destination.lock().expect("lock").rows.clone();
        let expected = changes(end);
        if stores_position {
            assert_eq!(
                rows, expected,
                "{context}: each change exactly once, in order"
            );
        } else {
            for lsn in &expected {
                assert!(rows.contains(lsn), "{context}: change {lsn} lost");
            }
            assert!(
                rows.iter().all(|l| expected.contains(l)),
                "{context}: a change that never was"
            );
        }
        assert_eq!(
            harness.checkpoint(),
            Some(end),
            "{context}: the run ends committed at the log end"
        );
    }
    eprintln!("{CASES} cases, {crashes} crashes, {source_failures} lost source connections");
    assert!(
        crashes > 100 && source_failures > 100,
        "the schedules exercised the faults"
    );
}

#[tokio::test]
async fn a_retryable_source_error_resumes_from_the_last_position_handed_over() {
    let harness = Harness::new(1000);
    let source = ScriptedSource::new(100, 10, vec![25, 40]);
    let resumed_from = Arc::clone(&source.resumed_from);
    let life = harness.live(source, SinkScript::default(), 1).await;
    assert!(matches!(life, Life::Done(_)), "{life:?}");
    assert_eq!(
        *resumed_from.lock().expect("lock"),
        vec![None, Some(25), Some(65)]
    );
    assert_eq!(harness.destination.lock().expect("lock").rows, changes(100));
}

#[tokio::test]
async fn the_sinks_stored_position_wins_over_the_checkpoint() {
    let harness = Harness::new(1000);
    CheckpointStore::open(harness.dir.path(), "memory")
        .expect("state")
        .store(&at(10))
        .expect("store");
    harness.destination.lock().expect("lock").position = Some(at(50));
    let source = ScriptedSource::new(60, 10, Vec::new());
    let resumed_from = Arc::clone(&source.resumed_from);
    let script = SinkScript {
        stores_position: true,
        ..SinkScript::default()
    };
    let life = harness.live(source, script, 1).await;
    assert!(matches!(life, Life::Done(_)), "{life:?}");
    assert_eq!(*resumed_from.lock().expect("lock"), vec![Some(50)]);
    assert_eq!(harness.checkpoint(), Some(60));
}

#[tokio::test]
async fn a_definite_error_still_flushes_and_commits_what_was_handed_over() {
    let harness = Harness::new(1000);
    let mut source = ScriptedSource::new(100, 7, Vec::new());
    source.definite_after = Some(33);
    let script = SinkScript {
        partial_ticks: true,
        ..SinkScript::default()
    };
    let life = harness.live(source, script, 1).await;
    assert!(
        matches!(&life, Life::Failed(PipelineError::Connector(err)) if !err.is_retryable()),
        "{life:?}"
    );
    assert_eq!(harness.destination.lock().expect("lock").rows, changes(33));
    assert_eq!(
        harness.checkpoint(),
        Some(33),
        "committed through the last event handed over"
    );
}

#[tokio::test]
async fn a_crash_before_the_acknowledgement_leaves_the_checkpoint_behind() {
    let harness = Harness::new(1000);
    // acknowledges nothing before it dies: nothing may be committed
    let script = SinkScript {
        crash_at_write: Some(30),
        ..SinkScript::default()
    };
    let life = harness
        .live(ScriptedSource::new(100, 10, Vec::new()), script, 1)
        .await;
    assert!(matches!(life, Life::Crashed), "{life:?}");
    assert!(harness.destination.lock().expect("lock").rows.is_empty());
    assert_eq!(harness.checkpoint(), None);
    // the next life starts from the beginning and delivers everything once
    let life = harness
        .live(
            ScriptedSource::new(100, 10, Vec::new()),
            SinkScript::default(),
            2,
        )
        .await;
    assert!(matches!(life, Life::Done(_)), "{life:?}");
    assert_eq!(harness.destination.lock().expect("lock").rows, changes(100));
}

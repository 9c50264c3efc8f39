//! What the pipeline loop counts. The hot path only adds to plain integers (the table found
//! by pointer when it is the same as the previous change's, no hashing and no allocation);
//! the Prometheus counters and gauges are updated once a tick (100 ms), so metrics cost the
//! 1,000,000-change benchmark next to nothing.

use crate::column_stats::TableStats;
use headwater_contract::{BackfillState, Op, TableId, TableSchema};
use metrics::{Counter, Histogram};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

const OPS: [Op; 5] = [Op::Create, Op::Update, Op::Delete, Op::Read, Op::Truncate];

fn op_index(op: Op) -> usize {
    match op {
        Op::Create => 0,
        Op::Update => 1,
        Op::Delete => 2,
        Op::Read => 3,
        Op::Truncate => 4,
    }
}

struct TableCounters {
    counts: [u64; 5],
    counters: [Counter; 5],
    columns: Option<TableStats>,
}

impl TableCounters {
    fn new(id: &TableId) -> Self {
        let table = id.to_string();
        TableCounters {
            counts: [0; 5],
            counters: OPS.map(|op| {
                metrics::counter!("headwater_changes_total", "table" => table.clone(), "op" => op.code())
            }),
            columns: None,
        }
    }

    fn publish(&mut self) {
        for (count, counter) in self.counts.iter_mut().zip(&self.counters) {
            if *count > 0 {
                counter.increment(*count);
                *count = 0;
            }
        }
        if let Some(columns) = &mut self.columns {
            columns.publish();
        }
    }
}

pub struct PipelineMetrics {
    tables: Vec<TableCounters>,
    index: HashMap<TableId, usize>,
    /// The previous change's table: consecutive changes mostly share one.
    last_table: Option<(Arc<TableSchema>, usize)>,
    column_stats: bool,
    /// (sequence number, commit time in ms) of the first change of each batch not yet durable.
    pending: VecDeque<(u64, i64)>,
    /// (commit time, read time) in ms of the last change read.
    last_read: Option<(i64, i64)>,
    records: u64,
    bytes: u64,
    transactions: u64,
    records_counter: Counter,
    bytes_counter: Counter,
    transactions_counter: Counter,
    latency: Histogram,
}

impl PipelineMetrics {
    /// Handles are taken here: create it after the recorder is installed.
    pub fn new(column_stats: bool) -> Self {
        PipelineMetrics {
            tables: Vec::new(),
            index: HashMap::new(),
            last_table: None,
            column_stats,
            pending: VecDeque::new(),
            last_read: None,
            records: 0,
            bytes: 0,
            transactions: 0,
            records_counter: metrics::counter!("headwater_records_written_total"),
            bytes_counter: metrics::counter!("headwater_sink_bytes_total"),
            transactions_counter: metrics::counter!("headwater_transactions_total"),
            latency: metrics::histogram!("headwater_commit_to_durable_seconds"),
        }
    }

    fn table(&mut self, table: &Arc<TableSchema>) -> usize {
        if let Some((last, index)) = &self.last_table {
            if Arc::ptr_eq(last, table) {
                return *index;
            }
        }
        let index = match self.index.get(&table.id) {
            Some(&index) => index,
            None => {
                self.tables.push(TableCounters::new(&table.id));
                self.index.insert(table.id.clone(), self.tables.len() - 1);
                self.tables.len() - 1
            }
        };
        self.last_table = Some((Arc::clone(table), index));
        index
    }

    /// A change read from the source; `after` is the row image it leaves, if any.
    pub fn change(
        &mut self,
        table: &Arc<TableSchema>,
        op: Op,
        commit_ms: i64,
        now_ms: i64,
        after: Option<&[u8]>,
    ) {
        let index = self.table(table);
        let counters = &mut self.tables[index];
        counters.counts[op_index(op)] += 1;
        if let (true, Some(image)) = (self.column_stats, after) {
            let stats = match &mut counters.columns {
                Some(stats) if stats.version() == table.version => stats,
                slot => {
                    if let Some(old) = slot {
                        old.publish();
                    }
                    slot.insert(TableStats::new(table))
                }
            };
            stats.row(table, image);
        }
        if commit_ms > 0 && op != Op::Read {
            self.last_read = Some((commit_ms, now_ms));
        }
    }

    /// The first change of a batch: its commit time is sampled for the latency histogram.
    pub fn batch_started(&mut self, seq: u64, commit_ms: i64) {
        if commit_ms > 0 {
            self.pending.push_back((seq, commit_ms));
        }
    }

    pub fn transaction(&mut self) {
        self.transactions += 1;
    }

    pub fn written(&mut self, bytes: usize) {
        self.records += 1;
        self.bytes += bytes as u64;
    }

    /// A table's records now carry schema `version` (a new stream schema).
    pub fn schema_version(table: &TableSchema) {
        metrics::gauge!("headwater_schema_version", "table" => table.id.to_string())
            .set(f64::from(table.version));
    }

    pub fn schema_change(table: Option<&TableId>) {
        let table = table.map_or_else(|| "(database)".to_string(), TableId::to_string);
        metrics::counter!("headwater_schema_changes_total", "table" => table).increment(1);
    }

    pub fn flushed(took: Duration) {
        metrics::histogram!("headwater_sink_flush_seconds").record(took.as_secs_f64());
    }

    pub fn checkpoint_stored(took: Duration) {
        metrics::histogram!("headwater_checkpoint_commit_seconds").record(took.as_secs_f64());
    }

    /// Everything through `seq` is durable.
    pub fn durable_through(&mut self, seq: u64, now_ms: i64) {
        let mut last = None;
        while let Some(&(first_seq, commit_ms)) = self.pending.front() {
            if first_seq > seq {
                break;
            }
            self.latency
                .record(((now_ms - commit_ms).max(0)) as f64 / 1000.0);
            last = Some(commit_ms);
            self.pending.pop_front();
        }
        if let Some(commit_ms) = last {
            metrics::gauge!("headwater_last_durable_commit_timestamp_seconds")
                .set(commit_ms as f64 / 1000.0);
        }
    }

    /// Every tick: the counts since the last tick, and the gauges that age.
    pub fn tick(
        &mut self,
        now_ms: i64,
        in_flight: usize,
        checkpoint_age: Duration,
        backpressure: Duration,
    ) {
        for table in &mut self.tables {
            table.publish();
        }
        self.records_counter
            .increment(std::mem::take(&mut self.records));
        self.bytes_counter
            .increment(std::mem::take(&mut self.bytes));
        self.transactions_counter
            .increment(std::mem::take(&mut self.transactions));
        if let Some((commit_ms, read_ms)) = self.last_read.take() {
            metrics::gauge!("headwater_last_read_commit_timestamp_seconds")
                .set(commit_ms as f64 / 1000.0);
            metrics::gauge!("headwater_read_lag_seconds")
                .set(((read_ms - commit_ms).max(0)) as f64 / 1000.0);
        }
        metrics::gauge!("headwater_durable_lag_seconds").set(
            self.pending.front().map_or(0.0, |&(_, commit_ms)| {
                ((now_ms - commit_ms).max(0)) as f64 / 1000.0
            }),
        );
        metrics::gauge!("headwater_records_in_flight").set(in_flight as f64);
        metrics::gauge!("headwater_checkpoint_age_seconds").set(checkpoint_age.as_secs_f64());
        metrics::gauge!("headwater_backpressure_wait_seconds").set(backpressure.as_secs_f64());
    }

    /// Snapshot progress as of the durable position.
    pub fn snapshot(state: Option<&BackfillState>) {
        let (estimate, remaining) = match state {
            Some(state) => (
                state
                    .current
                    .as_ref()
                    .and_then(|c| c.rows_estimate)
                    .unwrap_or(0),
                state.queued.len() + usize::from(state.current.is_some()),
            ),
            None => (0, 0),
        };
        metrics::gauge!("headwater_snapshot_rows_estimated").set(estimate as f64);
        metrics::gauge!("headwater_snapshot_tables_remaining").set(remaining as f64);
    }
}

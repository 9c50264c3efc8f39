//! Prometheus metrics: what the pipeline counts and measures, and the HTTP endpoint that
//! serves them (`/metrics`, `/health`, `/ready`).
//!
//! Built on the `metrics` facade with `metrics-exporter-prometheus` as the recorder (the
//! classic text exposition format that every Prometheus version and `promtool` read), served
//! by a small `hyper` server of our own so `/health` and `/ready` sit beside `/metrics`. With
//! no `[metrics]` section no recorder is installed and every update is a no-op.

use headwater_contract::Position;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Buckets of `headwater_commit_to_durable_seconds`: from a Kafka acknowledgement (ms) to a
/// lake commit interval and a backlog (minutes).
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
];

/// Buckets of the other duration histograms (flushes, checkpoint writes).
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// What `/ready` and the lineage info metric need from the running pipeline.
#[derive(Default)]
pub struct Status {
    source_connected: AtomicBool,
    sink_open: AtomicBool,
    durable_position: Mutex<Option<Position>>,
}

impl Status {
    /// Called for every batch: cheap unless the state changes.
    pub fn set_source_connected(&self, connected: bool) {
        if self.source_connected.swap(connected, Ordering::Relaxed) != connected {
            metrics::gauge!("headwater_source_connected").set(if connected { 1.0 } else { 0.0 });
        }
    }

    pub fn set_sink_open(&self, open: bool) {
        self.sink_open.store(open, Ordering::Relaxed);
    }

    pub fn set_durable_position(&self, position: Position) {
        if let Ok(mut slot) = self.durable_position.lock() {
            *slot = Some(position);
        }
    }

    /// The position below which everything is durable, as last committed.
    pub fn durable_position(&self) -> Option<Position> {
        self.durable_position.lock().ok().and_then(|p| p.clone())
    }

    fn ready(&self) -> bool {
        self.source_connected.load(Ordering::Relaxed) && self.sink_open.load(Ordering::Relaxed)
    }
}

/// Installs the recorder and describes every metric. Returns the handle that renders them.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let recorder = PrometheusBuilder::new()
        .set_buckets(DURATION_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full("headwater_commit_to_durable_seconds".into()),
            LATENCY_BUCKETS,
        )?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|e| anyhow::anyhow!("installing the metrics recorder: {e}"))?;
    describe();
    metrics::gauge!("headwater_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(handle)
}

/// What a metric is.
enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric Headwater exports: kind, name, unit and help text.
const METRICS: &[(MetricKind, &str, Option<metrics::Unit>, &str)] = {
    use metrics::Unit;
    use MetricKind::*;
    &[
        (Counter, "headwater_changes_total", None, "Row changes read from the source, by table and op (c, u, d, r = copied by a snapshot, t)"),
        (Counter, "headwater_schema_changes_total", None, "Schema changes seen in the source's log, by table"),
        (Gauge, "headwater_schema_version", None, "The schema version of each table's latest records"),
        (Counter, "headwater_records_written_total", None, "Records handed to the sink (changes and schema-change records)"),
        (Counter, "headwater_sink_bytes_total", Some(Unit::Bytes), "Encoded bytes (key and value) handed to the sink"),
        (Gauge, "headwater_read_lag_seconds", Some(Unit::Seconds), "How far behind the source the reader was: read time minus commit time of the last change read"),
        (Gauge, "headwater_durable_lag_seconds", Some(Unit::Seconds), "Age of the oldest change read but not yet durable in the sink (0 when everything read is durable)"),
        (Gauge, "headwater_last_read_commit_timestamp_seconds", Some(Unit::Seconds), "Source commit time (Unix seconds) of the last change read"),
        (Gauge, "headwater_last_durable_commit_timestamp_seconds", Some(Unit::Seconds), "Source commit time (Unix seconds) of the last change made durable by the sink"),
        (Histogram, "headwater_commit_to_durable_seconds", Some(Unit::Seconds), "From the source commit to durable in the sink (one sample per batch of changes)"),
        (Gauge, "headwater_records_in_flight", None, "Records handed to the sink and not yet acknowledged"),
        (Gauge, "headwater_checkpoint_age_seconds", Some(Unit::Seconds), "Time since the durable position last advanced"),
        (Gauge, "headwater_source_connected", None, "1 while the source is streaming, 0 while it reconnects"),
        (Counter, "headwater_source_retries_total", None, "Retryable source failures (each followed by a reconnect with backoff)"),
        (Gauge, "headwater_snapshot_rows_estimated", None, "The server's row estimate of the table being copied"),
        (Gauge, "headwater_snapshot_tables_remaining", None, "Tables queued for a snapshot or backfill, the one being copied included"),
        (Gauge, "headwater_build_info", None, "Headwater's version"),
        (Counter, "headwater_transactions_total", None, "Source transactions with captured changes"),
        (Histogram, "headwater_sink_flush_seconds", Some(Unit::Seconds), "Sink flushes forced by the in-flight limit"),
        (Histogram, "headwater_checkpoint_commit_seconds", Some(Unit::Seconds), "Writing the checkpoint file (fsync included)"),
        (Gauge, "headwater_backpressure_wait_seconds", Some(Unit::Seconds), "Total time the source has waited for the pipeline to take its events (the sink is the bottleneck while it grows)"),
        (Counter, "headwater_errors_total", None, "Retryable errors by stage: source (reconnected with backoff) or pipeline (restarted from the durable position)"),
        (Counter, "headwater_column_values_total", None, "Row images (inserts, updates, copied rows) in which the column had a value, by table and column"),
        (Counter, "headwater_column_nulls_total", None, "Row images in which the column was NULL, by table and column"),
        (Gauge, "headwater_lag_bytes", Some(Unit::Bytes), "Log bytes between the durable position and the source log's end (binlog bytes, or WAL bytes after the slot's confirmed position)"),
        (Gauge, "headwater_position_loss_eta_seconds", Some(Unit::Seconds), "Estimated time until the source's retention discards the log the durable position needs (+Inf when retention is unbounded)"),
        (Gauge, "headwater_position_lost", None, "1 when the log the durable position needs is already gone (purged binlog, invalidated or dropped slot)"),
        (Gauge, "headwater_log_retention_seconds", Some(Unit::Seconds), "MySQL/MariaDB: how long the server keeps binlogs (binlog_expire_logs_seconds; +Inf when never purged)"),
        (Gauge, "headwater_needed_binlog_age_seconds", Some(Unit::Seconds), "MySQL/MariaDB: age of the oldest binlog file the durable position still needs (since its last write; 0 while it is the file being written)"),
        (Gauge, "headwater_slot_wal_headroom_bytes", Some(Unit::Bytes), "PostgreSQL: WAL that may still be written before the slot is invalidated (safe_wal_size; +Inf when unbounded)"),
        (Gauge, "headwater_slot_active", None, "PostgreSQL: 1 while a walsender is attached to the pipeline's slot, 0 while none reads it (WAL piles up)"),
        (Gauge, "headwater_log_growth_bytes_per_second", Some(Unit::Bytes), "PostgreSQL: the rate at which the server writes WAL, measured between retention checks"),
    ]
};

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    for (kind, name, unit, help) in METRICS {
        let (name, help) = (*name, *help);
        match (kind, unit) {
            (MetricKind::Counter, Some(unit)) => describe_counter!(name, *unit, help),
            (MetricKind::Counter, None) => describe_counter!(name, help),
            (MetricKind::Gauge, Some(unit)) => describe_gauge!(name, *unit, help),
            (MetricKind::Gauge, None) => describe_gauge!(name, help),
            (MetricKind::Histogram, Some(unit)) => describe_histogram!(name, *unit, help),
            (MetricKind::Histogram, None) => describe_histogram!(name, help),
        }
    }
}

/// Serves `/metrics`, `/health` and `/ready` on `listen` until the process ends.
pub async fn serve(
    listen: SocketAddr,
    handle: PrometheusHandle,
    status: Arc<Status>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| {
        format!("binding the metrics endpoint to {listen}; choose a free address in [metrics] listen")
    })?;
    tracing::info!(%listen, "serving /metrics, /health and /ready");
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "metrics endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let handle = handle.clone();
            let status = Arc::clone(&status);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let response = respond(&request, &handle, &status);
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(err) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await
                {
                    tracing::debug!(error = %err, "metrics endpoint: connection ended");
                }
            });
        }
    });
    Ok(())
}

type Body = http_body_util::Full<hyper::body::Bytes>;

fn respond(
    request: &hyper::Request<hyper::body::Incoming>,
    handle: &PrometheusHandle,
    status: &Status,
) -> hyper::Response<Body> {
    let (code, content_type, body) = match request.uri().path() {
        "/metrics" => (200, "text/plain; version=0.0.4", render(handle, status)),
        "/health" => (200, "text/plain", "ok\n".to_string()),
        "/ready" if status.ready() => (200, "text/plain", "ready\n".to_string()),
        "/ready" => (
            503,
            "text/plain",
            "not ready: the source is not streaming or the sink is not open\n".to_string(),
        ),
        _ => (
            404,
            "text/plain",
            "not found: /metrics, /health or /ready\n".to_string(),
        ),
    };
    let mut response = hyper::Response::new(Body::from(body));
    *response.status_mut() = hyper::StatusCode::from_u16(code).unwrap_or_default();
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

/// The recorder's metrics plus the lineage info metric, whose one label changes with every
/// commit: written here so only the current position is exposed (a recorder gauge would keep
/// every position it ever had).
fn render(handle: &PrometheusHandle, status: &Status) -> String {
    let mut text = handle.render();
    if let Some(position) = status.durable_position() {
        let escaped = position
            .to_string()
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        text.push_str("# HELP headwater_durable_position_info The source position below which everything is durable in the sink (binlog file:offset with the GTID set, or the LSN)\n");
        text.push_str("# TYPE headwater_durable_position_info gauge\n");
        text.push_str(&format!(
            "headwater_durable_position_info{{position=\"{escaped}\"}} 1\n"
        ));
    }
    text
}

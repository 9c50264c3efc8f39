//! `headwater status`: a summary for a person — running or stopped, the durable position, lag,
//! the time until the source discards the log the position needs, per-table counts and the
//! copy in progress. From the running pipeline's metrics endpoint when it is up; from the state
//! directory and the source otherwise, so a stopped pipeline can be checked before it is too late.

use crate::checkpoint::{Checkpoint, CheckpointStore};
use crate::config::{Config, SinkConfig};
use crate::requests::RequestDir;
use crate::retention::GrowthRate;
use headwater_contract::retention::human_seconds;
use headwater_contract::{LogStatus, Position, Retention, Source};
use std::time::Duration;

/// The positions stored for a pipeline: the sink's own (the lake stores it with its data) and
/// the checkpoint file.
pub fn stored_positions(config: &Config) -> anyhow::Result<(Option<Position>, Option<Checkpoint>)> {
    let store = CheckpointStore::open_unlocked(&config.state.path, config.source.server_name())?;
    let sink_position = match &config.sink {
        SinkConfig::Lake(lake) => headwater_lake::sink::committed_position(&lake.path)
            .map_err(|e| anyhow::anyhow!(e.report()))?,
        SinkConfig::Delta(delta) => headwater_lakehouse::sink::committed_position(&delta.path)
            .map_err(|e| anyhow::anyhow!(e.report()))?,
        SinkConfig::Iceberg(iceberg) => {
            headwater_lakehouse::sink::committed_position(&iceberg.warehouse)
                .map_err(|e| anyhow::anyhow!(e.report()))?
        }
        // Kafka stores no position of Headwater's: the checkpoint file is the position.
        SinkConfig::Kafka(_) => None,
    };
    Ok((sink_position, store.load()?))
}

/// The committed position: the sink's own when it stores one (it wins), else the checkpoint's.
pub fn durable_position(config: &Config) -> anyhow::Result<(Option<Position>, Option<Checkpoint>)> {
    let (sink_position, checkpoint) = stored_positions(config)?;
    let durable = sink_position.or_else(|| checkpoint.as_ref().map(|c| c.position.clone()));
    Ok((durable, checkpoint))
}

/// Reads the log status, twice a little apart when retention is by size, so the ETA has a
/// rate of log growth to go by.
pub async fn log_status(
    source: &mut dyn Source,
    position: Option<&Position>,
) -> anyhow::Result<(LogStatus, Option<f64>)> {
    let mut growth = GrowthRate::default();
    let first = source
        .log_status(position)
        .await
        .map_err(|e| anyhow::anyhow!(e.report()))?;
    growth.observe(first.log_bytes_written);
    if !matches!(first.retention, Retention::BySize { .. }) {
        return Ok((first, None));
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let second = source
        .log_status(position)
        .await
        .map_err(|e| anyhow::anyhow!(e.report()))?;
    let rate = growth.observe(second.log_bytes_written);
    Ok((second, rate))
}

/// `headwater status --json`: the same facts for scripts and monitoring checks.
pub async fn print_json(config: &Config, mut source: Box<dyn Source>) -> anyhow::Result<()> {
    let running = CheckpointStore::open(&config.state.path, config.source.server_name()).is_err();
    let (durable, checkpoint) = durable_position(config)?;
    let now = headwater_contract::now_ms();
    let (log, rate) = log_status(source.as_mut(), durable.as_ref()).await?;
    let out = serde_json::json!({
        "pipeline": config.source.server_name(),
        "running": running,
        "durable_position": durable.as_ref().map(ToString::to_string),
        "checkpoint_updated_at_ms": checkpoint.as_ref().map(|c| c.updated_at_ms),
        "log": log,
        "loss_eta_seconds": log.loss_eta_seconds(now, rate),
        "log_growth_bytes_per_second": rate,
        "backfills_paused": RequestDir::new(&config.state.path).paused(),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

pub async fn print(config: &Config, mut source: Box<dyn Source>) -> anyhow::Result<()> {
    let running = CheckpointStore::open(&config.state.path, config.source.server_name()).is_err();
    let (durable, checkpoint) = durable_position(config)?;
    let now = headwater_contract::now_ms();
    println!(
        "pipeline {}: {}",
        config.source.server_name(),
        if running { "running" } else { "stopped" }
    );
    match (&durable, &checkpoint) {
        (Some(position), Some(c)) => println!(
            "durable position: {position} (checkpoint written {} ago)",
            human_seconds((now - c.updated_at_ms) as f64 / 1000.0)
        ),
        (Some(position), None) => println!("durable position: {position}"),
        (None, _) => println!("durable position: none yet (the pipeline has not run)"),
    }
    match log_status(source.as_mut(), durable.as_ref()).await {
        Ok((status, rate)) => {
            println!("source log: {}", status.describe(now, rate));
            if let Some(eta) = status.loss_eta_seconds(now, rate) {
                if eta < config.pipeline.position_loss_warning.as_secs_f64() {
                    println!(
                        "WARNING: the source may discard the log this pipeline needs in {}: start it (or let it catch up), or raise the retention",
                        human_seconds(eta)
                    );
                }
            }
        }
        Err(err) => println!("source log: unknown ({err:#})"),
    }
    if let Some(state) = durable.as_ref().and_then(Position::backfill) {
        if let Some(current) = &state.current {
            let at = checkpoint.as_ref().map_or(now, |c| c.updated_at_ms);
            println!(
                "copying: {}; {} more tables queued",
                current.describe(at),
                state.queued.len()
            );
        }
    }
    if RequestDir::new(&config.state.path).paused() {
        println!("copies paused (headwater backfill --resume continues them)");
    }
    if running {
        if let Some(metrics) = &config.metrics {
            print_live(metrics.listen);
        }
    }
    Ok(())
}

/// Per-table counts and freshness from the running pipeline's `/metrics`.
fn print_live(listen: std::net::SocketAddr) {
    let Some(text) = fetch_metrics(listen) else {
        println!("metrics endpoint {listen}: not answering");
        return;
    };
    for (name, label) in [
        ("headwater_read_lag_seconds", "read lag (s)"),
        (
            "headwater_durable_lag_seconds",
            "oldest change not yet durable (s)",
        ),
        ("headwater_records_in_flight", "records in flight"),
    ] {
        if let Some(value) = text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
        {
            println!("{label}: {value}");
        }
    }
    println!("changes since start, by table and op:");
    for line in text
        .lines()
        .filter(|l| l.starts_with("headwater_changes_total{"))
    {
        println!("  {}", line.trim_start_matches("headwater_changes_total"));
    }
}

fn fetch_metrics(listen: std::net::SocketAddr) -> Option<String> {
    use std::io::{Read, Write};
    let mut address = listen;
    if address.ip().is_unspecified() {
        address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let mut stream = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
}

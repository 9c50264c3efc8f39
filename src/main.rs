//! `headwater`: change-data-capture from MySQL/MariaDB (binlog) and PostgreSQL (logical slot)
//! into an Avro lake, Delta Lake tables or Kafka. This file is the command line and the
//! restart loop; the runtime is `pipeline.rs`, the connectors are the crates in `connectors/`.

mod ack;
mod checkpoint;
mod column_stats;
mod config;
mod connectors;
mod pipeline;
mod pipeline_metrics;
mod requests;
mod retention;
mod retry;
mod status;
mod telemetry;
mod transaction_events;

use anyhow::{bail, Context};
use checkpoint::CheckpointStore;
use clap::{Parser, Subcommand};
use config::{Config, SinkConfig, SourceConfig};
use headwater_contract::{ConnectorKind, Severity, Sink, Source};
use pipeline::{Pipeline, RunMode, Settings};
use retry::RetryPolicy;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

// A third of the binlog hot path was glibc malloc/free; mimalloc measured faster here. Version 3:
// version 2 cut a Delta run's peak by 70 MiB but raised a million-row PostgreSQL transaction's
// peak past its 120 MiB bound (125 MiB against 59-97), and the sources' bound comes first.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "headwater",
    version,
    about = "Change-data-capture: database change logs into Avro records in a lake or Kafka"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipeline until stopped (SIGINT/SIGTERM flush, commit and exit 0).
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Read up to the log end as of the start, make it durable, and exit 0.
        #[arg(long)]
        catch_up: bool,
    },
    /// Validate the config and run the source's preflight checks; non-zero exit on any error.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print the committed position as JSON.
    Offsets {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// A summary for a person: running or stopped, lag, time until the source discards the
    /// log the position needs, per-table counts, the copy in progress. Works on a stopped
    /// pipeline too (from the state directory and the source).
    Status {
        #[arg(long, short)]
        config: PathBuf,
        /// Print JSON instead (for scripts and monitoring checks).
        #[arg(long)]
        json: bool,
    },
    /// Show what landed in a lake sink: per table, files, record count and the latest record.
    Inspect {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Copy a table (or the rows matching a condition) again while streaming goes on: the
    /// running pipeline picks the request up within a second; a stopped one when it starts.
    /// `--pause` and `--resume` stop and continue copying (e.g. during the source's peak hours).
    Backfill {
        #[arg(long, short)]
        config: PathBuf,
        /// `database.table` (MySQL) or `schema.table` (PostgreSQL).
        #[arg(long, required_unless_present_any = ["pause", "resume"], conflicts_with_all = ["pause", "resume"])]
        table: Option<String>,
        /// Only rows matching this SQL condition, e.g. "created_at > '2026-01-01'".
        #[arg(long = "where", requires = "table")]
        condition: Option<String>,
        /// Ask for no more chunks (the one being read completes); streaming goes on. Holds
        /// across restarts until `--resume`.
        #[arg(long, conflicts_with = "resume")]
        pause: bool,
        /// Continue paused copies.
        #[arg(long)]
        resume: bool,
    },
}

/// `headwater backfill --pause | --resume`: sets the switch and, when a pipeline is running,
/// waits until its source has it, so that once this returns no new chunk is started.
fn switch_backfills(config: &Config, paused: bool) -> anyhow::Result<()> {
    let requests = requests::RequestDir::new(&config.state.path);
    let what = if paused { "paused" } else { "resumed" };
    requests.set_paused(paused).with_context(|| {
        format!(
            "writing the pause switch into {}; check that state.path is writable",
            config.state.path.display()
        )
    })?;
    let running = CheckpointStore::open(&config.state.path, config.source.server_name()).is_err();
    if !running {
        println!("backfills {what}: no pipeline is running; it takes effect when you run `headwater run`");
        return Ok(());
    }
    let deadline = std::time::Instant::now() + SWITCH_WAIT;
    while requests.applied() != Some(paused) {
        if std::time::Instant::now() > deadline {
            println!("backfills {what}: the switch is set, but the running pipeline has not taken it up within {SWITCH_WAIT:?}; it does at its next checkpoint");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if paused {
        println!("backfills paused: the running pipeline starts no new chunk (the one being read completes); streaming goes on. `headwater backfill --resume` continues");
    } else {
        println!("backfills resumed by the running pipeline");
    }
    Ok(())
}

/// How long `headwater backfill --pause` waits for a running pipeline to take the switch up
/// (it looks at every checkpoint, by default each second).
const SWITCH_WAIT: Duration = Duration::from_secs(30);

fn build_source(
    config: &SourceConfig,
    state_dir: &std::path::Path,
) -> anyhow::Result<(Box<dyn Source>, ConnectorKind)> {
    config
        .build(state_dir)
        .map_err(|e| anyhow::anyhow!(e.report()))
}

fn build_sink(config: &SinkConfig) -> anyhow::Result<Box<dyn Sink>> {
    config.build().map_err(|e| anyhow::anyhow!(e.report()))
}

/// `headwater inspect` of a Delta or Iceberg sink: each table's version, files, rows and last
/// position.
async fn inspect_tables<F: headwater_lakehouse::TableFormat>(
    sink: Result<headwater_lakehouse::LakehouseSink<F>, headwater_contract::ConnectorError>,
    location: &str,
) -> anyhow::Result<()> {
    let mut sink = sink.map_err(|e| anyhow::anyhow!(e.report()))?;
    let (position, tables) = sink
        .summary()
        .await
        .map_err(|e| anyhow::anyhow!(e.report()))?;
    let shown = |p: &Option<headwater_contract::Position>| {
        p.as_ref().map_or("none".to_string(), |p| p.to_string())
    };
    println!(
        "{} {location}: last complete round at {}",
        F::NAME,
        shown(&position)
    );
    for table in tables {
        println!(
            "{}: version {}, {} files, {} rows, {} bytes, round {}, position {}",
            table.label,
            table.version.map_or("none".to_string(), |v| v.to_string()),
            table.files,
            table.rows,
            table.bytes,
            table.round,
            shown(&table.position)
        );
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

async fn check(config: &Config) -> anyhow::Result<bool> {
    let (mut source, _) = build_source(&config.source, &config.state.path)?;
    let mut problems = source
        .check()
        .await
        .map_err(|e| anyhow::anyhow!(e.report()))?;
    let mut sink = build_sink(&config.sink)?;
    problems.extend(
        sink.check()
            .await
            .map_err(|e| anyhow::anyhow!(e.report()))?,
    );
    // only worth asking when the source could be reached (its problems say why not)
    if !problems.iter().any(|p| p.severity == Severity::Error) {
        let keyless = source
            .keyless_tables()
            .await
            .map_err(|e| anyhow::anyhow!(e.report()))?;
        problems.extend(sink.check_keyless_tables(&keyless));
    }
    for problem in &problems {
        println!("{problem}");
    }
    let errors = problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .count();
    if problems.is_empty() {
        println!("ok: config valid, source and sink ready");
    }
    // retention against the stored position: can a stopped pipeline still catch up?
    if let Ok((durable, _)) = status::durable_position(config) {
        if let Ok((log, rate)) = status::log_status(source.as_mut(), durable.as_ref()).await {
            println!(
                "source log: {}",
                log.describe(headwater_contract::now_ms(), rate)
            );
        }
    }
    Ok(errors == 0)
}

async fn run(config: Config, mode: RunMode) -> anyhow::Result<()> {
    let server_name = config.source.server_name().to_string();
    let status = std::sync::Arc::new(telemetry::Status::default());
    if let Some(metrics) = &config.metrics {
        let handle = telemetry::install()?;
        telemetry::serve(metrics.listen, handle, std::sync::Arc::clone(&status)).await?;
    }
    let (mut source, _) = build_source(&config.source, &config.state.path)?;
    let problems = source
        .check()
        .await
        .map_err(|e| anyhow::anyhow!(e.report()))?;
    let mut fatal = false;
    for problem in &problems {
        match problem.severity {
            Severity::Error => {
                fatal = true;
                tracing::error!("{}; fix: {}", problem.what, problem.fix)
            }
            Severity::Warning => tracing::warn!("{}; fix: {}", problem.what, problem.fix),
        }
    }
    if fatal {
        bail!(
            "preflight failed; fix the errors above (`headwater check --config FILE` lists them)"
        );
    }
    drop(source);
    let (probe, _) = build_source(&config.source, &config.state.path)?;
    retention::watch(
        probe,
        std::sync::Arc::clone(&status),
        retention::WatchSettings {
            interval: config.pipeline.retention_check_interval,
            warn_below: config.pipeline.position_loss_warning,
        },
    );
    let stop = stop_requested();
    let mut delays = RetryPolicy::PIPELINE.schedule();
    loop {
        let (source, connector) = build_source(&config.source, &config.state.path)?;
        let sink = build_sink(&config.sink)?;
        let checkpoints = CheckpointStore::open(&config.state.path, &server_name)?;
        let pipeline = Pipeline {
            settings: Settings {
                server_name: server_name.clone(),
                connector,
                max_in_flight: config.pipeline.max_in_flight,
                checkpoint_interval: config.pipeline.checkpoint_interval,
                requests: requests::RequestDir::new(&config.state.path),
                status: std::sync::Arc::clone(&status),
                column_stats: config.metrics.as_ref().is_some_and(|m| m.column_stats),
                source_retry: RetryPolicy::SOURCE,
                transaction_events: config.pipeline.transaction_events,
            },
            source,
            sink,
            checkpoints,
        };
        let mut stop_rx = stop.clone();
        let stopped = async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        };
        let started = std::time::Instant::now();
        match pipeline.run(mode, stopped).await {
            Ok(summary) => {
                tracing::info!(records = summary.records, durable = ?summary.durable.map(|p| p.to_string()), "stopped");
                return Ok(());
            }
            // A transient sink failure (brokers or registry away at the wrong moment): start the
            // whole pipeline again from the durable position, as a restart would.
            Err(pipeline::PipelineError::Connector(err)) if err.is_retryable() => {
                let delay = delays.next_delay(started.elapsed());
                metrics::counter!("headwater_errors_total", "stage" => "pipeline", "kind" => "retryable").increment(1);
                tracing::warn!(error = %err.report(), retry_in = ?delay,
                    "the pipeline stopped on a transient error; restarting it from the last durable position");
                let mut stop_rx = stop.clone();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop_rx.wait_for(|stop| *stop) => return Ok(()),
                }
            }
            Err(pipeline::PipelineError::Connector(err)) => bail!(err.report()),
            Err(other) => return Err(other.into()),
        }
    }
}

/// Becomes true on SIGINT or SIGTERM.
fn stop_requested() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = tx.send(true);
    });
    rx
}

/// Logs to stderr, filtered by `HEADWATER_LOG`; `HEADWATER_LOG_FORMAT=json` writes one JSON
/// object per line (for log pipelines) instead of text.
fn init_logging() -> Result<(), String> {
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("HEADWATER_LOG")
        .unwrap_or_else(|_| "info".into());
    // delta-rs and its kernel log every snapshot load at INFO and a table not made yet at
    // ERROR; the Delta sink reports what matters itself. `HEADWATER_LOG` naming them wins.
    let asked = std::env::var("HEADWATER_LOG").unwrap_or_default();
    for (target, level) in [("buoyant_kernel", "off"), ("deltalake_core", "warn")] {
        if !asked.contains(target) {
            if let Ok(directive) = format!("{target}={level}").parse() {
                filter = filter.add_directive(directive);
            }
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match std::env::var("HEADWATER_LOG_FORMAT").as_deref() {
        Ok("json") => builder.json().flatten_event(true).init(),
        Ok("text") | Err(_) => builder.init(),
        Ok(other) => {
            builder.init();
            return Err(format!(
                "HEADWATER_LOG_FORMAT={other:?} is not known: use \"text\" (the default) or \"json\""
            ));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    if let Err(err) = init_logging() {
        eprintln!("error: {err}");
        return ExitCode::FAILURE;
    }
    // Two TLS back ends are linked (ring for the sources, aws-lc through the AWS SDK that the
    // Delta sink's S3 support brings), so rustls cannot pick one by itself: use ring everywhere.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .and_then(|rt| rt.block_on(dispatch(cli)));
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<bool> {
    match cli.command {
        Command::Run { config, catch_up } => {
            let config = Config::load(&config)?;
            run(
                config,
                if catch_up {
                    RunMode::CatchUp
                } else {
                    RunMode::Follow
                },
            )
            .await?;
            Ok(true)
        }
        Command::Check { config } => {
            let config = Config::load(&config)?;
            check(&config).await
        }
        Command::Status { config, json } => {
            let config = Config::load(&config)?;
            let (source, _) = build_source(&config.source, &config.state.path)?;
            if json {
                status::print_json(&config, source).await?;
            } else {
                status::print(&config, source).await?;
            }
            Ok(true)
        }
        Command::Offsets { config } => offsets(&Config::load(&config)?),
        Command::Backfill {
            config,
            table,
            condition,
            pause,
            resume,
        } => request_backfill(&Config::load(&config)?, table, condition, pause, resume).await,
        Command::Inspect { config } => inspect(&Config::load(&config)?).await,
    }
}

/// `headwater offsets`: the checkpoint, the sink's stored position and the backfill state.
fn offsets(config: &Config) -> anyhow::Result<bool> {
    let (sink_position, checkpoint) = status::stored_positions(config)?;
    let durable = sink_position
        .as_ref()
        .or(checkpoint.as_ref().map(|c| &c.position));
    let backfill = durable.and_then(|p| p.backfill()).map(|state| {
        // rate and ETA as of the last commit, not of this moment
        let now = checkpoint
            .as_ref()
            .map(|c| c.updated_at_ms)
            .unwrap_or_else(headwater_contract::now_ms);
        serde_json::json!({
            "current": state.current.as_ref().map(|c| c.describe(now)),
            "queued": state.queued.iter().map(|r| r.table.to_string()).collect::<Vec<_>>(),
            "rows_copied": state.rows_emitted,
        })
    });
    let waiting: Vec<String> = requests::RequestDir::new(&config.state.path)
        .pending()
        .iter()
        .map(|r| r.table.to_string())
        .collect();
    let paused = requests::RequestDir::new(&config.state.path).paused();
    let out = serde_json::json!({
        "server_name": config.source.server_name(),
        "backfills_paused": paused,
        "checkpoint": checkpoint.as_ref().map(|c| &c.position),
        "checkpoint_updated_at_ms": checkpoint.as_ref().map(|c| c.updated_at_ms),
        "sink_position": sink_position,
        "backfill": backfill,
        "backfill_requests_waiting": waiting,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(true)
}

/// `headwater backfill`: asks the pipeline to copy a table again (or pauses/resumes copies).
async fn request_backfill(
    config: &Config,
    table: Option<String>,
    condition: Option<String>,
    pause: bool,
    resume: bool,
) -> anyhow::Result<bool> {
    let Some(table) = table else {
        switch_backfills(config, pause && !resume)?;
        return Ok(true);
    };
    let Some((namespace, name)) = table.split_once('.') else {
        bail!(
            "--table {table:?} needs the form database.table (MySQL) or schema.table (PostgreSQL)"
        );
    };
    let table = headwater_contract::TableId {
        namespace: namespace.to_string(),
        table: name.to_string(),
    };
    let (mut source, _) = build_source(&config.source, &config.state.path)?;
    source
        .check_backfill(&table, condition.as_deref())
        .await
        .map_err(|e| anyhow::anyhow!(e.report()))?;
    let request = requests::RequestDir::new(&config.state.path)
        .submit(table.clone(), condition)
        .with_context(|| {
            format!(
                "writing the request into {}; check that state.path is writable",
                config.state.path.display()
            )
        })?;
    let running = CheckpointStore::open(&config.state.path, config.source.server_name()).is_err();
    if running {
        println!("backfill of {table} requested (id {}): the running pipeline starts it within a second; follow it with `headwater offsets`", request.id);
    } else {
        println!("backfill of {table} requested (id {}): no pipeline is running; it starts when you run `headwater run`", request.id);
    }
    Ok(true)
}

/// `headwater inspect`: what a lake, Delta or Iceberg sink holds.
async fn inspect(config: &Config) -> anyhow::Result<bool> {
    match &config.sink {
        SinkConfig::Delta(delta) => {
            inspect_tables(headwater_delta::sink(delta.clone()), &delta.path).await?;
            return Ok(true);
        }
        SinkConfig::Iceberg(iceberg) => {
            let sink = headwater_iceberg::sink(iceberg.clone());
            inspect_tables(sink, &iceberg.warehouse).await?;
            return Ok(true);
        }
        _ => {}
    }
    let SinkConfig::Lake(lake) = &config.sink else {
        anyhow::bail!(
            "inspect reads lake, Delta and Iceberg sinks; read Kafka topics with any Kafka consumer"
        );
    };
    let summary =
        headwater_lake::inspect::summarize(&lake.path).map_err(|e| anyhow::anyhow!(e.report()))?;
    match &summary.manifest {
        Some(m) => println!(
            "lake {}: commit {}, {} records, position {}",
            lake.path.display(),
            m.commit,
            m.total_records,
            m.position
                .as_ref()
                .map_or("none".to_string(), |p| p.to_string())
        ),
        None => println!("lake {}: nothing committed yet", lake.path.display()),
    }
    for stream in &summary.streams {
        println!(
            "\n{}: {} records in {} files",
            stream.stream, stream.records, stream.files
        );
        if let Some(latest) = &stream.latest {
            println!("latest record:\n{}", serde_json::to_string_pretty(latest)?);
        }
    }
    Ok(true)
}

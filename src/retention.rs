//! Watches the source's log retention against the durable position while a pipeline runs:
//! lag in bytes, and the time until the position is purged, as metrics and as a log warning
//! before it is too late (a follower that falls behind its leader's retention can no longer
//! catch up from the log).

use crate::telemetry::Status;
use headwater_contract::retention::human_seconds;
use headwater_contract::{LogStatus, Retention, Source};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Measures the log's growth between checks (for size-bounded retention).
#[derive(Default)]
pub struct GrowthRate {
    last: Option<(Instant, u64)>,
    rate: Option<f64>,
}

impl GrowthRate {
    /// Folds in a reading of the log's byte counter; the rate in bytes a second, once two
    /// readings at least a second apart exist.
    pub fn observe(&mut self, written: Option<u64>) -> Option<f64> {
        let written = written?;
        let now = Instant::now();
        match self.last {
            Some((at, before)) if now.duration_since(at) >= Duration::from_secs(1) => {
                let seconds = now.duration_since(at).as_secs_f64();
                self.rate = Some(written.saturating_sub(before) as f64 / seconds);
                self.last = Some((now, written));
            }
            Some(_) => {}
            None => self.last = Some((now, written)),
        }
        self.rate
    }
}

/// Sets the retention gauges from one reading.
pub fn publish(status: &LogStatus, eta: Option<f64>, rate: Option<f64>) {
    if let Some(bytes) = status.bytes_behind {
        metrics::gauge!("headwater_lag_bytes").set(bytes as f64);
    }
    metrics::gauge!("headwater_position_loss_eta_seconds").set(eta.unwrap_or(f64::INFINITY));
    metrics::gauge!("headwater_position_lost").set(match status.retention {
        Retention::Lost { .. } => 1.0,
        _ => 0.0,
    });
    match &status.retention {
        Retention::ByAge {
            keep_seconds,
            purge_at_ms,
            ..
        } => {
            metrics::gauge!("headwater_log_retention_seconds").set(*keep_seconds as f64);
            // the needed file was last written when the next one started; 0 while it is the
            // file being written
            let age = purge_at_ms.map_or(0.0, |at| {
                let last_write = at - *keep_seconds as i64 * 1000;
                ((headwater_contract::now_ms() - last_write).max(0)) as f64 / 1000.0
            });
            metrics::gauge!("headwater_needed_binlog_age_seconds").set(age);
        }
        Retention::BySize { headroom_bytes, .. } => {
            metrics::gauge!("headwater_slot_wal_headroom_bytes").set(*headroom_bytes as f64)
        }
        Retention::Unbounded { .. } => {
            metrics::gauge!("headwater_log_retention_seconds").set(f64::INFINITY);
            metrics::gauge!("headwater_slot_wal_headroom_bytes").set(f64::INFINITY);
        }
        Retention::Lost { .. } => {}
    }
    if let Some(rate) = rate {
        metrics::gauge!("headwater_log_growth_bytes_per_second").set(rate);
    }
    if let Some(active) = status.slot_active {
        metrics::gauge!("headwater_slot_active").set(if active { 1.0 } else { 0.0 });
    }
}

/// How often the watcher looks, and below which ETA it warns.
pub struct WatchSettings {
    pub interval: Duration,
    pub warn_below: Duration,
}

/// Checks the retention every `interval` on a source of its own, until the process ends.
/// A failed check is logged and retried: it never stops the pipeline.
pub fn watch(mut source: Box<dyn Source>, status: Arc<Status>, settings: WatchSettings) {
    tokio::spawn(async move {
        let mut growth = GrowthRate::default();
        let mut last_warning: Option<Instant> = None;
        let mut every = tokio::time::interval(settings.interval);
        loop {
            every.tick().await;
            let durable = status.durable_position();
            let reading = match source.log_status(durable.as_ref()).await {
                Ok(reading) => reading,
                Err(err) => {
                    tracing::debug!(error = %err.report(), "retention check failed; trying again later");
                    continue;
                }
            };
            let rate = growth.observe(reading.log_bytes_written);
            let eta = reading.loss_eta_seconds(headwater_contract::now_ms(), rate);
            publish(&reading, eta, rate);
            let due = last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(600));
            if let Some(eta) = eta.filter(|eta| *eta < settings.warn_below.as_secs_f64()) {
                if due {
                    tracing::warn!(
                        eta = %human_seconds(eta),
                        status = %reading.describe(headwater_contract::now_ms(), rate),
                        "THE SOURCE MAY SOON DISCARD THE LOG THIS PIPELINE STILL NEEDS: catch up (check the sink), or raise the retention (binlog_expire_logs_seconds / max_slot_wal_keep_size)"
                    );
                    last_warning = Some(Instant::now());
                }
            }
        }
    });
}

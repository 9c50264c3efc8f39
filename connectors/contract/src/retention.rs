//! How a position stands against the source's log: how far behind its end it is, and how long
//! the server keeps what the position still needs. A follower that falls behind its leader's
//! retention can no longer catch up from the log, so this is what operators watch most.

use serde::Serialize;

/// What the source's log looks like from a position.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LogStatus {
    /// Bytes of log between the position and the log's current end.
    pub bytes_behind: Option<u64>,
    /// A counter of log bytes written on the server (PostgreSQL's current WAL LSN), from
    /// which the runtime measures the rate of log growth; `None` where retention is by age.
    pub log_bytes_written: Option<u64>,
    pub retention: Retention,
    /// PostgreSQL: whether a walsender is attached to the slot (`pg_replication_slots.active`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_active: Option<bool>,
}

/// The server's rule for discarding log, applied to the position.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Retention {
    /// The log is kept until removed by hand (MySQL `binlog_expire_logs_seconds = 0`,
    /// PostgreSQL `max_slot_wal_keep_size = -1`).
    Unbounded { detail: String },
    /// MySQL/MariaDB: binlog files are purged once older than `keep_seconds`. The file holding
    /// the position may be purged from `purge_at_ms` on (`None`: it is still the file being
    /// written, so it lasts at least `keep_seconds` more).
    ByAge {
        keep_seconds: u64,
        needed_file: String,
        purge_at_ms: Option<i64>,
    },
    /// PostgreSQL: the slot keeps at most `max_bytes` of WAL; `headroom_bytes` more may be
    /// written before the slot is invalidated (the server's `safe_wal_size`).
    BySize {
        max_bytes: u64,
        headroom_bytes: i64,
        wal_status: String,
    },
    /// The log the position needs is already gone.
    Lost { detail: String },
}

impl LogStatus {
    /// Seconds until the log the position needs may be discarded, at `rate` bytes of log a
    /// second for size-bounded retention: `None` when it never is (unbounded, or no growth),
    /// `Some(0.0)` when it already was.
    pub fn loss_eta_seconds(&self, now_ms: i64, rate: Option<f64>) -> Option<f64> {
        match &self.retention {
            Retention::Unbounded { .. } => None,
            Retention::Lost { .. } => Some(0.0),
            Retention::ByAge {
                keep_seconds,
                purge_at_ms,
                ..
            } => Some(match purge_at_ms {
                Some(at) => ((at - now_ms) as f64 / 1000.0).max(0.0),
                None => *keep_seconds as f64,
            }),
            Retention::BySize { headroom_bytes, .. } => {
                if *headroom_bytes <= 0 {
                    return Some(0.0);
                }
                match rate {
                    Some(rate) if rate > 0.0 => Some(*headroom_bytes as f64 / rate),
                    _ => None,
                }
            }
        }
    }

    /// One line for `headwater status` and `check`.
    pub fn describe(&self, now_ms: i64, rate: Option<f64>) -> String {
        let behind = self.bytes_behind.map_or("unknown".to_string(), human_bytes);
        let eta = match self.loss_eta_seconds(now_ms, rate) {
            None => "never (retention is unbounded or the log does not grow)".to_string(),
            Some(s) if s <= 0.0 => "NOW: the log the position needs is gone or going".into(),
            Some(s) => human_seconds(s),
        };
        let rule = match &self.retention {
            Retention::Unbounded { detail } => detail.clone(),
            Retention::ByAge {
                keep_seconds,
                needed_file,
                purge_at_ms,
            } => format!(
                "binlogs kept {}; the position needs {needed_file}{}",
                human_seconds(*keep_seconds as f64),
                if purge_at_ms.is_none() {
                    " (still being written)"
                } else {
                    ""
                }
            ),
            Retention::BySize {
                max_bytes,
                headroom_bytes,
                wal_status,
            } => format!(
                "the slot may retain {}; {} more WAL before it is invalidated (wal_status {wal_status})",
                human_bytes(*max_bytes),
                human_bytes((*headroom_bytes).max(0) as u64)
            ),
            Retention::Lost { detail } => detail.clone(),
        };
        format!("{behind} behind the log end; position lost in: {eta}; {rule}")
    }
}

pub fn human_bytes(bytes: u64) -> String {
    const UNITS: &[&str] = &["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub fn human_seconds(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..=119 => format!("{s}s"),
        120..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=172_799 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(retention: Retention) -> LogStatus {
        LogStatus {
            bytes_behind: Some(10),
            log_bytes_written: None,
            retention,
            slot_active: None,
        }
    }

    #[test]
    fn the_eta_follows_each_kind_of_retention() {
        let age = status(Retention::ByAge {
            keep_seconds: 3600,
            needed_file: "bin.000002".into(),
            purge_at_ms: Some(10_000),
        });
        assert_eq!(age.loss_eta_seconds(4_000, None), Some(6.0));
        assert_eq!(age.loss_eta_seconds(20_000, None), Some(0.0));
        let active = status(Retention::ByAge {
            keep_seconds: 3600,
            needed_file: "bin.000003".into(),
            purge_at_ms: None,
        });
        assert_eq!(active.loss_eta_seconds(0, None), Some(3600.0));
        let size = status(Retention::BySize {
            max_bytes: 1 << 30,
            headroom_bytes: 1000,
            wal_status: "reserved".into(),
        });
        assert_eq!(size.loss_eta_seconds(0, Some(100.0)), Some(10.0));
        assert_eq!(size.loss_eta_seconds(0, None), None, "no growth, no loss");
        let unbounded = status(Retention::Unbounded {
            detail: "kept until purged by hand".into(),
        });
        assert_eq!(unbounded.loss_eta_seconds(0, Some(1e9)), None);
        assert!(size.describe(0, Some(100.0)).contains("10s"));
    }
}

//! How a binlog position stands against the server's binlogs: bytes behind the end
//! (`SHOW BINARY LOGS`) and when `binlog_expire_logs_seconds` may purge the file it needs.

use crate::server::{integer, text};
use crate::source::MysqlSource;
use futures_util::StreamExt;
use headwater_contract::{BinlogPosition, ConnectorError, LogStatus, Retention};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, Conn};

/// FORMAT_DESCRIPTION_EVENT: the first real event of every binlog file, stamped when the file
/// was started.
const FORMAT_DESCRIPTION_EVENT: u8 = 15;

impl MysqlSource {
    pub(crate) async fn binlog_status(
        &self,
        position: Option<&BinlogPosition>,
    ) -> Result<LogStatus, ConnectorError> {
        let mut conn = self.server.connect().await?;
        let vars = self.server.variables(&mut conn).await?;
        let rows: Vec<mysql_async::Row> = conn.query("SHOW BINARY LOGS").await.map_err(
            self.server
                .classify("listing the binlog files (SHOW BINARY LOGS)"),
        )?;
        let files: Vec<(String, u64)> = rows
            .iter()
            .filter_map(|row| Some((text(row, 0)?, integer(row, 1)? as u64)))
            .collect();
        let keep_seconds = keep_seconds(
            vars.get("binlog_expire_logs_seconds").map(String::as_str),
            vars.get("expire_logs_days").map(String::as_str),
        );
        let needed = position
            .map(|p| p.file.to_string())
            .or_else(|| files.last().map(|(name, _)| name.clone()));
        let Some(needed) = needed else {
            return Err(ConnectorError::definite(
                "the server lists no binlog files; start it with log_bin=ON",
            ));
        };
        let Some(index) = files.iter().position(|(name, _)| *name == needed) else {
            let _ = conn.disconnect().await;
            return Ok(LogStatus {
                bytes_behind: None,
                log_bytes_written: None,
                slot_active: None,
                retention: Retention::Lost {
                    detail: format!(
                        "binlog {needed} was purged (the server's oldest is {})",
                        files.first().map_or("none", |(n, _)| n.as_str())
                    ),
                },
            });
        };
        let offset = position.map_or(files[index].1, |p| p.pos);
        let bytes_behind = files[index].1.saturating_sub(offset)
            + files[index + 1..].iter().map(|(_, size)| size).sum::<u64>();
        let retention = if keep_seconds == 0 {
            Retention::Unbounded {
                detail: "binlog_expire_logs_seconds = 0: binlogs are kept until purged by hand"
                    .into(),
            }
        } else {
            // A file is purged once its last write is older than the retention; its last
            // write is when the next file was started.
            let purge_at_ms = match files.get(index + 1) {
                Some((next, _)) => self
                    .file_started_at(next)
                    .await?
                    .map(|started| started * 1000 + keep_seconds as i64 * 1000),
                None => None,
            };
            Retention::ByAge {
                keep_seconds,
                needed_file: needed,
                purge_at_ms,
            }
        };
        let _ = conn.disconnect().await;
        Ok(LogStatus {
            bytes_behind: Some(bytes_behind),
            log_bytes_written: None,
            retention,
            slot_active: None,
        })
    }

    /// When `file` was started (Unix seconds), from its first event: the server tells file
    /// times only through the binlog itself. Read with a server_id of its own (the pipeline's
    /// plus 2^31), so the probe never displaces the pipeline's own stream.
    async fn file_started_at(&self, file: &str) -> Result<Option<i64>, ConnectorError> {
        let conn: Conn = self.server.connect().await?;
        let probe_id = self.server.config.server_id.wrapping_add(1 << 31);
        let request = BinlogStreamRequest::new(probe_id)
            .with_filename(file.as_bytes())
            .with_pos(4)
            .with_non_blocking();
        let mut stream = conn
            .get_binlog_stream(request)
            .await
            .map_err(self.server.classify("reading a binlog file's start time"))?;
        let mut started = None;
        for _ in 0..4 {
            match stream.next().await {
                Some(Ok(event)) => {
                    if event.header().event_type_raw() == FORMAT_DESCRIPTION_EVENT {
                        started = Some(i64::from(event.header().timestamp()));
                        break;
                    }
                }
                Some(Err(err)) => {
                    return Err(self.server.classify("reading a binlog file's start time")(
                        err,
                    ))
                }
                None => break,
            }
        }
        let _ = stream.close().await;
        Ok(started)
    }
}

/// The retention in seconds from `binlog_expire_logs_seconds` and the older `expire_logs_days`
/// (the larger wins, as on the server); 0 = never purged.
pub(crate) fn keep_seconds(seconds: Option<&str>, days: Option<&str>) -> u64 {
    let seconds = seconds.and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    let days = days.and_then(|d| d.parse::<f64>().ok()).unwrap_or(0.0);
    seconds.max((days * 86_400.0) as u64)
}

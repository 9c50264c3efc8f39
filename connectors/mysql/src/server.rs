//! The MySQL/MariaDB server as the source and its preflight see it: the connection options,
//! error classification, and the facts read from the server (variables, collations, binlog
//! position, flavour).

use crate::config::{MysqlConfig, WatermarkKind};
use crate::error::classify;
use crate::snapshot::ChunkReader;
use crate::table::Collations;
use headwater_contract::{
    redact_url, BinlogPosition, ConnectorError, GtidSet, MysqlFlavor, TableFilter, TableId,
    CONNECT_TIMEOUT,
};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use std::collections::HashMap;
use std::sync::Arc;

/// A configured server: its config, the captured tables and the connection options.
pub struct MysqlServer {
    pub(crate) config: MysqlConfig,
    pub(crate) filter: TableFilter,
    pub(crate) opts: Opts,
}

/// The server facts the stream needs.
pub(crate) struct ServerInfo {
    pub(crate) collations: Collations,
    pub(crate) checksum: bool,
    pub(crate) flavor: MysqlFlavor,
}

impl MysqlServer {
    pub fn new(config: MysqlConfig) -> Result<Self, ConnectorError> {
        let filter = config.validate().map_err(ConnectorError::definite)?;
        let mut opts = Opts::from_url(&config.url).map_err(|e| {
            classify(
                e.into(),
                "reading source.url",
                &config.url,
                config.server_id,
            )
        })?;
        if let Some(ca) = &config.tls_ca_file {
            let tls = mysql_async::SslOpts::default().with_root_certs(vec![ca.clone().into()]);
            opts = mysql_async::OptsBuilder::from_opts(opts)
                .ssl_opts(tls)
                .into();
        }
        Ok(MysqlServer {
            config,
            filter,
            opts,
        })
    }

    pub(crate) fn classify(
        &self,
        what: &str,
    ) -> impl Fn(mysql_async::Error) -> ConnectorError + '_ {
        let what = what.to_string();
        move |e| classify(e, &what, &self.config.url, self.config.server_id)
    }

    pub(crate) async fn connect(&self) -> Result<Conn, ConnectorError> {
        match tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(self.opts.clone())).await {
            Ok(conn) => conn.map_err(self.classify("connecting to the source")),
            Err(_) => Err(ConnectorError::connect_timed_out(
                "connecting to the source",
                &redact_url(&self.config.url),
            )),
        }
    }

    pub(crate) async fn variables(
        &self,
        conn: &mut Conn,
    ) -> Result<HashMap<String, String>, ConnectorError> {
        // Typed rows with Option fields: mysql_async panics when a value does not convert.
        let rows: Vec<mysql_async::Row> = conn
            .query("SHOW GLOBAL VARIABLES WHERE Variable_name IN ('log_bin','binlog_format','binlog_row_image','binlog_row_metadata','binlog_checksum','log_bin_compress','gtid_strict_mode','gtid_mode','binlog_expire_logs_seconds','expire_logs_days','version','binlog_row_value_options')")
            .await
            .map_err(self.classify("reading server variables"))?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                Some((
                    text(row, 0)?.to_ascii_lowercase(),
                    text(row, 1).unwrap_or_default(),
                ))
            })
            .collect())
    }

    pub(crate) async fn server_info(&self, conn: &mut Conn) -> Result<ServerInfo, ConnectorError> {
        let rows: Vec<mysql_async::Row> = conn
            .query("SELECT ID, CHARACTER_SET_NAME FROM information_schema.COLLATIONS WHERE ID IS NOT NULL")
            .await
            .map_err(self.classify("reading the server's collations"))?;
        let vars = self.variables(conn).await?;
        Ok(ServerInfo {
            collations: Collations::new(
                rows.iter()
                    .filter_map(|row| Some((u16::try_from(integer(row, 0)?).ok()?, text(row, 1)?)))
                    .collect(),
            ),
            checksum: vars
                .get("binlog_checksum")
                .is_some_and(|v| !v.eq_ignore_ascii_case("NONE")),
            flavor: if vars
                .get("version")
                .is_some_and(|v| v.to_ascii_lowercase().contains("mariadb"))
            {
                MysqlFlavor::Mariadb
            } else {
                MysqlFlavor::Mysql
            },
        })
    }

    pub(crate) async fn master_status(
        &self,
        conn: &mut Conn,
    ) -> Result<BinlogPosition, ConnectorError> {
        // MySQL 8.4 renamed SHOW MASTER STATUS.
        let row: Option<mysql_async::Row> = match conn.query_first("SHOW MASTER STATUS").await {
            Ok(row) => row,
            Err(mysql_async::Error::Server(e)) if e.code == 1064 => conn
                .query_first("SHOW BINARY LOG STATUS")
                .await
                .map_err(self.classify("reading the binlog position"))?,
            Err(err) => return Err(self.classify("reading the binlog position")(err)),
        };
        let Some(row) = row else {
            return Err(ConnectorError::definite(
                "the server has binary logging off (SHOW MASTER STATUS is empty); start it with log_bin=ON and binlog_format=ROW",
            ));
        };
        let file: String = row.get_opt(0).and_then(Result::ok).unwrap_or_default();
        let pos: u64 = row.get_opt(1).and_then(Result::ok).unwrap_or(4);
        let gtid_query = if self.is_mariadb(conn).await? {
            "SELECT @@gtid_binlog_pos"
        } else {
            "SELECT @@global.gtid_executed"
        };
        let gtid: Option<Option<String>> = conn
            .query_first(gtid_query)
            .await
            .map_err(self.classify("reading the GTID position"))?;
        let gtid_set = parse_gtid_state(gtid.flatten().as_deref().unwrap_or(""))?;
        Ok(BinlogPosition {
            file: Arc::from(file.as_str()),
            pos,
            gtid_set: Arc::new(gtid_set),
            rows_done: 0,
            backfill: None,
        })
    }

    pub(crate) async fn is_mariadb(&self, conn: &mut Conn) -> Result<bool, ConnectorError> {
        let version: Option<Option<String>> = conn
            .query_first("SELECT VERSION()")
            .await
            .map_err(self.classify("reading the server version"))?;
        Ok(version
            .flatten()
            .is_some_and(|v| v.to_ascii_lowercase().contains("mariadb")))
    }

    pub(crate) async fn first_binlog(
        &self,
        conn: &mut Conn,
    ) -> Result<BinlogPosition, ConnectorError> {
        let row: Option<mysql_async::Row> = conn
            .query_first("SHOW BINARY LOGS")
            .await
            .map_err(self.classify("listing binary logs"))?;
        let file: String = row
            .and_then(|r| r.get_opt(0))
            .and_then(Result::ok)
            .ok_or_else(|| {
                ConnectorError::definite(
                    "the server lists no binary logs; start it with log_bin=ON",
                )
            })?;
        Ok(BinlogPosition {
            file: Arc::from(file.as_str()),
            pos: 4,
            gtid_set: Arc::default(),
            rows_done: 0,
            backfill: None,
        })
    }

    pub(crate) async fn chunk_reader(&self) -> Result<ChunkReader, ConnectorError> {
        ChunkReader::connect(
            self.opts.clone(),
            &self.config.url,
            self.config.server_id,
            self.signal_table(),
            self.filter.clone(),
        )
        .await
    }

    /// The signal table, when snapshot watermarks are written to one.
    pub(crate) fn signal_table(&self) -> Option<TableId> {
        (self.config.watermarks == WatermarkKind::SignalTable)
            .then(|| self.config.signal_table_id())
            .flatten()
    }
}

/// Column `index` of `row` as text; `None` for NULL or a missing column. Typed row conversion
/// in mysql_async panics on unexpected values, so rows from the server are read this way.
pub(crate) fn text(row: &mysql_async::Row, index: usize) -> Option<String> {
    match row.as_ref(index)? {
        mysql_async::Value::Bytes(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        mysql_async::Value::Int(n) => Some(n.to_string()),
        mysql_async::Value::UInt(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Column `index` of `row` as an integer, when it is one.
pub(crate) fn integer(row: &mysql_async::Row, index: usize) -> Option<i64> {
    match row.as_ref(index)? {
        mysql_async::Value::Int(n) => Some(*n),
        mysql_async::Value::UInt(n) => i64::try_from(*n).ok(),
        mysql_async::Value::Bytes(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
        _ => None,
    }
}

fn parse_gtid_state(text: &str) -> Result<GtidSet, ConnectorError> {
    text.parse().map_err(|e| {
        ConnectorError::definite(format!(
            "the server reported a GTID state Headwater cannot read: {e}"
        ))
    })
}

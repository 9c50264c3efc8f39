//! Preflight (`headwater check`): every server setting, privilege and resource the MySQL/MariaDB
//! source needs, each problem with its fix.

use crate::server::MysqlServer;
use headwater_contract::{ConnectorError, Problem, SnapshotMode, TableId};
use mysql_async::prelude::Queryable;

pub(crate) async fn check(source: &MysqlServer) -> Result<Vec<Problem>, ConnectorError> {
    let mut problems = Vec::new();
    let mut conn = match source.connect().await {
        Ok(conn) => conn,
        Err(err) => {
            problems.push(Problem::error(err.report(), "check source.url, that the server runs, and that the user may connect from this host"));
            return Ok(problems);
        }
    };
    let vars = source.variables(&mut conn).await?;
    check_settings(&vars, &mut problems);
    check_grants(source, &mut conn, &mut problems).await?;
    check_signal_table(source, &mut problems).await;
    check_column_rules(source, &mut problems).await;
    if source.config.snapshot != SnapshotMode::Never {
        // Snapshot chunks need a primary key to be matched against the stream.
        for table in keyless_tables(source, &mut conn).await.unwrap_or_default() {
            problems.push(Problem::warning(
                format!("{table} has no primary key: snapshots and backfills skip it (rows changed during a chunk could not be told apart)"),
                format!("add a primary key to {table} to copy it"),
            ));
        }
    }
    let _ = conn.disconnect().await;
    Ok(problems)
}

/// The binlog settings the source needs, and the retention it works within.
fn check_settings(vars: &std::collections::HashMap<String, String>, problems: &mut Vec<Problem>) {
    let var = |name: &str| vars.get(name).map(String::as_str).unwrap_or("");
    let expect = |problems: &mut Vec<Problem>, name: &str, want: &str| {
        if !var(name).eq_ignore_ascii_case(want) {
            problems.push(Problem::error(
                format!("{name} is {:?}, Headwater needs {want}", var(name)),
                format!("set {name}={want} in the server's my.cnf [mysqld] section and restart it (SET GLOBAL {name}={want} works until the restart)"),
            ));
        }
    };
    expect(problems, "log_bin", "ON");
    expect(problems, "binlog_format", "ROW");
    expect(problems, "binlog_row_image", "FULL");
    expect(problems, "binlog_row_metadata", "FULL");
    if var("log_bin_compress").eq_ignore_ascii_case("ON") {
        problems.push(Problem::error(
            "log_bin_compress is ON: compressed binlog events are not decoded yet",
            "set log_bin_compress=OFF in my.cnf and restart the server",
        ));
    }
    if !var("binlog_row_value_options").is_empty() {
        problems.push(Problem::error(
            format!(
                "binlog_row_value_options is {:?}: partial JSON updates cannot be captured",
                var("binlog_row_value_options")
            ),
            "set binlog_row_value_options='' on the server",
        ));
    }
    let mariadb = var("version").to_ascii_lowercase().contains("mariadb");
    if mariadb && !var("gtid_strict_mode").eq_ignore_ascii_case("ON") {
        problems.push(Problem::warning(
            "gtid_strict_mode is OFF: GTID positions may not survive a failover exactly",
            "set gtid_strict_mode=ON in my.cnf",
        ));
    }
    let seconds = crate::retention::keep_seconds(
        Some(var("binlog_expire_logs_seconds")),
        Some(var("expire_logs_days")),
    );
    if seconds == 0 {
        tracing::info!("binlog retention: binlogs are kept until purged by hand");
    } else {
        tracing::info!(
            retention_hours = seconds / 3600,
            "binlog retention: a pipeline stopped longer than this loses its position"
        );
        if seconds < 86_400 {
            problems.push(Problem::warning(
                format!("binlogs are kept only {} hours: a pipeline stopped longer than that needs a new snapshot", seconds / 3600),
                "raise binlog_expire_logs_seconds (e.g. 604800 for a week)",
            ));
        }
    }
}

/// The replication and SELECT privileges.
async fn check_grants(
    source: &MysqlServer,
    conn: &mut mysql_async::Conn,
    problems: &mut Vec<Problem>,
) -> Result<(), ConnectorError> {
    let grants: Vec<Option<String>> = conn
        .query("SHOW GRANTS")
        .await
        .map_err(source.classify("reading privileges"))?;
    let grants = grants
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("\n")
        .to_ascii_uppercase();
    let all = grants.contains("ALL PRIVILEGES ON *.*");
    for (privilege, alternatives) in [
        (
            "REPLICATION SLAVE",
            &["REPLICATION SLAVE", "REPLICATION REPLICA"][..],
        ),
        (
            "REPLICATION CLIENT",
            &["REPLICATION CLIENT", "BINLOG MONITOR", "SUPER"][..],
        ),
        ("SELECT", &["SELECT"][..]),
    ] {
        if !all && !alternatives.iter().any(|a| grants.contains(a)) {
            problems.push(Problem::error(
                format!("the user lacks the {privilege} privilege"),
                format!("GRANT {privilege} ON *.* TO the Headwater user"),
            ));
        }
    }
    Ok(())
}

/// `source.columns` rules that cannot apply to a captured table (a primary-key column, a
/// column type they do not fit): found here rather than when the stream first meets the table.
async fn check_column_rules(source: &MysqlServer, problems: &mut Vec<Problem>) {
    if source.config.columns == Default::default() {
        return;
    }
    let Ok(mut reader) = source.chunk_reader().await else {
        return; // the connection problem is reported already
    };
    let tables = reader.tables(&source.filter).await.unwrap_or_default();
    for table in &tables {
        if let Err(err) = reader.table_schema(table).await {
            problems.push(Problem::error(err.report(), "change source.columns"));
        }
    }
    reader.disconnect().await;
}

/// With `watermarks = "signal_table"`: the signal table can be written.
async fn check_signal_table(source: &MysqlServer, problems: &mut Vec<Problem>) {
    let Some(signal) = source.signal_table() else {
        return;
    };
    let mut reader = match source.chunk_reader().await {
        Ok(reader) => reader,
        Err(err) => {
            problems.push(Problem::error(err.report(), "check source.url"));
            return;
        }
    };
    if let Err(err) = reader.check_signal_table().await {
        problems.push(Problem::error(
            format!("the snapshot signal table {signal} cannot be written ({err})"),
            format!(
                "{}; GRANT INSERT, DELETE ON {signal} TO the Headwater user (or set source.watermarks = \"binlog_position\")",
                crate::snapshot::signal_table_ddl(&signal)
            ),
        ));
    }
    reader.disconnect().await;
}

/// The captured base tables without a primary key.
pub(crate) async fn keyless_tables(
    source: &MysqlServer,
    conn: &mut mysql_async::Conn,
) -> Result<Vec<TableId>, ConnectorError> {
    let keyless: Vec<(Vec<u8>, Vec<u8>)> = conn
        .query(
            "SELECT t.TABLE_SCHEMA, t.TABLE_NAME FROM information_schema.TABLES t WHERE t.TABLE_TYPE = 'BASE TABLE' \
             AND t.TABLE_SCHEMA NOT IN ('mysql', 'sys', 'information_schema', 'performance_schema') \
             AND NOT EXISTS (SELECT 1 FROM information_schema.STATISTICS s WHERE s.TABLE_SCHEMA = t.TABLE_SCHEMA \
               AND s.TABLE_NAME = t.TABLE_NAME AND s.INDEX_NAME = 'PRIMARY') \
             ORDER BY 1, 2",
        )
        .await
        .map_err(source.classify("listing the tables without a primary key"))?;
    Ok(keyless
        .into_iter()
        .map(|(db, table)| TableId {
            namespace: String::from_utf8_lossy(&db).into_owned(),
            table: String::from_utf8_lossy(&table).into_owned(),
        })
        .filter(|id| source.filter.captures(&id.namespace, &id.table))
        .collect())
}

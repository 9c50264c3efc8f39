//! Preflight (`headwater check`): every server setting, privilege and resource the PostgreSQL
//! source needs, each problem with its fix.

use crate::catalog;
use crate::server::PostgresServer;
use headwater_contract::{ConnectorError, Problem, SnapshotMode};
use tokio_postgres::Client;

pub(crate) async fn check(source: &PostgresServer) -> Result<Vec<Problem>, ConnectorError> {
    let mut problems = Vec::new();
    let client = match catalog::connect(&source.config.url, source.params.tls.as_ref()).await {
        Ok(client) => client,
        Err(err) => {
            problems.push(Problem::error(
                err.report(),
                "check source.url, that the server runs, and pg_hba.conf",
            ));
            return Ok(problems);
        }
    };
    let url = &source.config.url;
    if setting(&client, url, "wal_level").await? != "logical" {
        problems.push(Problem::error(
            "wal_level is not logical",
            "set wal_level = logical in postgresql.conf and restart the server",
        ));
    }
    check_role(source, &client, &mut problems).await?;
    check_slot(source, &client, &mut problems).await?;
    let keep = setting(&client, url, "max_slot_wal_keep_size").await?;
    tracing::info!(max_slot_wal_keep_size = %keep, "a slot holding more WAL than this is invalidated");
    let tables = catalog::captured_tables(&client, url, &source.filter).await?;
    if tables.is_empty() {
        problems.push(Problem::error(
            format!(
                "source.include {:?} matches no table",
                source.config.include
            ),
            "check the schema.table globs",
        ));
    }
    check_tables(source, &client, &tables, &mut problems).await;
    problems.extend(crate::failover::check(source, &client, url).await?);
    check_emit_message(source, &client, &mut problems).await?;
    check_publication(source, &client, &tables, &mut problems).await?;
    check_column_rules(source, &tables, &mut problems).await;
    Ok(problems)
}

/// `source.columns` rules that cannot apply to a captured table (a primary-key column, a
/// column type they do not fit): found here rather than when the stream first meets the table.
async fn check_column_rules(
    source: &PostgresServer,
    tables: &CapturedTables,
    problems: &mut Vec<Problem>,
) {
    if source.config.columns == Default::default() {
        return;
    }
    let reader = crate::snapshot::ChunkReader::connect(
        &source.config.url,
        &source.params,
        &source.config.slot,
        source.config.unknown_types,
        source.filter.clone(),
    )
    .await;
    let Ok(reader) = reader else {
        return; // the connection problem is reported already
    };
    for (namespace, table, _, _) in tables {
        let table = headwater_contract::TableId {
            namespace: namespace.clone(),
            table: table.clone(),
        };
        if let Err(err) = reader.check_columns(&table).await {
            problems.push(Problem::error(err.report(), "change source.columns"));
        }
    }
}

/// The tables a pipeline captures: (schema, table, replica identity, has a key).
type CapturedTables = [(String, String, String, bool)];

async fn setting(client: &Client, url: &str, name: &str) -> Result<String, ConnectorError> {
    client
        .query_one("SELECT current_setting($1)", &[&name])
        .await
        .map(|r| r.get::<_, String>(0))
        .map_err(|e| catalog::sql_error("reading server settings", url, e))
}

/// The role's REPLICATION attribute, and free replication slots and WAL senders.
async fn check_role(
    source: &PostgresServer,
    client: &Client,
    problems: &mut Vec<Problem>,
) -> Result<(), ConnectorError> {
    let url = &source.config.url;
    let row = client
        .query_one(
            "SELECT rolreplication OR rolsuper, (SELECT count(*) FROM pg_replication_slots)::int8,
                    current_setting('max_replication_slots')::int8,
                    (SELECT count(*) FROM pg_stat_replication)::int8, current_setting('max_wal_senders')::int8,
                    EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)
             FROM pg_roles WHERE rolname = current_user",
            &[&source.config.slot],
        )
        .await
        .map_err(|e| catalog::sql_error("reading the role", url, e))?;
    let (replication, slots, max_slots, senders, max_senders, slot_exists): (
        bool,
        i64,
        i64,
        i64,
        i64,
        bool,
    ) = (
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        row.get(5),
    );
    if !replication {
        problems.push(Problem::error(
            format!(
                "role {} lacks the REPLICATION attribute",
                source.params.user
            ),
            format!("ALTER ROLE {} REPLICATION", source.params.user),
        ));
    }
    if !slot_exists && slots >= max_slots {
        problems.push(Problem::error(
            format!("all {max_slots} replication slots are in use"),
            "raise max_replication_slots (restart needed) or drop an unused slot",
        ));
    }
    if senders >= max_senders {
        problems.push(Problem::error(
            format!("all {max_senders} WAL senders are in use"),
            "raise max_wal_senders (restart needed)",
        ));
    }
    Ok(())
}

/// An existing slot: not invalidated, and made with pgoutput.
async fn check_slot(
    source: &PostgresServer,
    client: &Client,
    problems: &mut Vec<Problem>,
) -> Result<(), ConnectorError> {
    let url = &source.config.url;
    if let Some(slot) = catalog::slot_state(client, url, &source.config.slot).await? {
        if slot.wal_status.as_deref() == Some("lost") {
            let what = format!(
                "replication slot {} was invalidated (wal_status lost)",
                source.config.slot
            );
            if source.config.snapshot == SnapshotMode::WhenNeeded {
                problems.push(Problem::warning(
                    what,
                    "nothing to do: snapshot = \"when_needed\" makes a new slot and copies every table again on start",
                ));
            } else {
                problems.push(Problem::error(
                    what,
                    format!("set source.snapshot = \"when_needed\" and start again (a new slot is made and every table copied), or drop it (SELECT pg_drop_replication_slot('{}')) and start over", source.config.slot),
                ));
            }
        }
        if slot.plugin.as_deref() != Some("pgoutput") {
            problems.push(Problem::error(
                format!(
                    "replication slot {} does not use pgoutput ({:?})",
                    source.config.slot, slot.plugin
                ),
                "give source.slot a new name; Headwater creates it with pgoutput",
            ));
        }
    }
    Ok(())
}

/// Each captured table: readable, with a replica identity that gives updates and deletes
/// their key, and a key to copy it by.
async fn check_tables(
    source: &PostgresServer,
    client: &Client,
    tables: &CapturedTables,
    problems: &mut Vec<Problem>,
) {
    for (schema, table, identity, has_key) in tables {
        let allowed: bool = client
            .query_one(
                "SELECT has_table_privilege(format('%I.%I', $1::text, $2::text), 'SELECT')",
                &[schema, table],
            )
            .await
            .map(|r| r.get(0))
            .unwrap_or(false);
        if !allowed {
            problems.push(Problem::error(
                format!("no SELECT privilege on {schema}.{table}"),
                format!("GRANT SELECT ON {schema}.{table} TO {}", source.params.user),
            ));
        }
        match (identity.as_str(), has_key) {
            ("n", _) => problems.push(Problem::warning(
                format!("{schema}.{table} has REPLICA IDENTITY NOTHING: updates and deletes fail on the server"),
                format!("ALTER TABLE {schema}.{table} REPLICA IDENTITY DEFAULT (with a primary key) or FULL"),
            )),
            ("d", false) => problems.push(Problem::warning(
                format!("{schema}.{table} has no primary key: its updates and deletes carry no before-image or key"),
                format!("add a primary key, or ALTER TABLE {schema}.{table} REPLICA IDENTITY FULL"),
            )),
            _ => {}
        }
        if !has_key && identity != "i" && source.config.snapshot != SnapshotMode::Never {
            problems.push(Problem::warning(
                format!("{schema}.{table} has no primary key: snapshots and backfills skip it (rows changed during a chunk could not be told apart)"),
                format!("add a primary key to {schema}.{table} to copy it"),
            ));
        }
    }
}

/// Snapshot chunks end with a watermark written as a logical message, and heartbeats are
/// logical messages too: the role must be allowed to write them.
async fn check_emit_message(
    source: &PostgresServer,
    client: &Client,
    problems: &mut Vec<Problem>,
) -> Result<(), ConnectorError> {
    let url = &source.config.url;
    // Snapshot chunks end with a watermark written as a logical message. PostgreSQL 17 replaced
    // the three-argument function with one taking a fourth, defaulted `flush` argument, so ask
    // about whichever one a three-argument call resolves to.
    let emit = client
        .query_opt(
            "SELECT p.oid::regprocedure::text, has_function_privilege(p.oid, 'EXECUTE') \
             FROM pg_proc p \
             WHERE p.proname = 'pg_logical_emit_message' \
               AND p.pronamespace = 'pg_catalog'::regnamespace \
               AND p.proargtypes[2] = 'text'::regtype \
             ORDER BY p.pronargs LIMIT 1",
            &[],
        )
        .await
        .map_err(|e| {
            catalog::sql_error("reading the privileges on pg_logical_emit_message", url, e)
        })?;
    match emit {
        Some(row) if row.get::<_, bool>(1) => {}
        Some(row) => problems.push(Problem::error(
            "the role may not run pg_logical_emit_message, which writes heartbeats and the watermarks of snapshot chunks",
            format!(
                "GRANT EXECUTE ON FUNCTION {} TO {}",
                row.get::<_, String>(0),
                source.params.user
            ),
        )),
        None => problems.push(Problem::error(
            "the server has no pg_logical_emit_message(boolean, text, text), which writes heartbeats and the watermarks of snapshot chunks",
            "use PostgreSQL 10 or newer",
        )),
    }
    Ok(())
}

/// The publication exists (or will be created), and publishes every captured table.
async fn check_publication(
    source: &PostgresServer,
    client: &Client,
    tables: &CapturedTables,
    problems: &mut Vec<Problem>,
) -> Result<(), ConnectorError> {
    let url = &source.config.url;
    let publication = client
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&source.config.publication],
        )
        .await
        .map_err(|e| catalog::sql_error("reading publications", url, e))?;
    if publication.is_none() && !source.config.create_publication {
        problems.push(Problem::error(
            format!("publication {} does not exist", source.config.publication),
            format!(
                "CREATE PUBLICATION {} FOR TABLE …, or set source.create_publication = true",
                source.config.publication
            ),
        ));
    } else if publication.is_some() {
        let Some(published) = published_tables(client, url, &source.config.publication).await?
        else {
            problems.push(Problem::warning(
                format!(
                    "could not list the tables of publication {} within {PUBLICATION_LOCK_WAIT}: one of them is locked by another session (a migration?), so whether every included table is published is unchecked",
                    source.config.publication
                ),
                "run `headwater check` again once the lock is released",
            ));
            return Ok(());
        };
        for (schema, table, _, _) in tables {
            if !published.iter().any(|(s, t)| s == schema && t == table) {
                problems.push(Problem::warning(
                    format!("{schema}.{table} is included but not in publication {}: its changes are not captured", source.config.publication),
                    format!("ALTER PUBLICATION {} ADD TABLE {schema}.{table}", source.config.publication),
                ));
            }
        }
    }
    Ok(())
}

/// How long listing a publication's tables may wait for a table lock: from PostgreSQL 18 on,
/// `pg_publication_tables` opens every published table, so a session holding an exclusive
/// lock (an `ALTER TABLE`, a `VACUUM FULL`) would otherwise hold up `check` and the start.
const PUBLICATION_LOCK_WAIT: &str = "5s";

/// The (schema, table) pairs a publication publishes, or `None` when a table lock kept the
/// server from listing them within [`PUBLICATION_LOCK_WAIT`].
async fn published_tables(
    client: &Client,
    url: &str,
    publication: &str,
) -> Result<Option<Vec<(String, String)>>, ConnectorError> {
    client
        .batch_execute(&format!("SET lock_timeout = '{PUBLICATION_LOCK_WAIT}'"))
        .await
        .map_err(|e| catalog::sql_error("setting lock_timeout", url, e))?;
    let listed = client
        .query(
            "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1",
            &[&publication],
        )
        .await;
    client
        .batch_execute("RESET lock_timeout")
        .await
        .map_err(|e| catalog::sql_error("resetting lock_timeout", url, e))?;
    match listed {
        Ok(rows) => Ok(Some(rows.iter().map(|r| (r.get(0), r.get(1))).collect())),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
            Ok(None)
        }
        Err(e) => Err(catalog::sql_error("reading the publication", url, e)),
    }
}

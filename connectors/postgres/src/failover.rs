//! `headwater check` on failover: whether the slot would survive the primary's loss. A failover
//! slot (PostgreSQL 17+) lives on through a failover when the primary holds logical changes back
//! until its standbys have them (`synchronized_standby_slots`) and each standby keeps a
//! synchronized copy (`sync_replication_slots`, `hot_standby_feedback`); the standbys named in
//! source.url are asked directly.

use crate::catalog;
use crate::server::PostgresServer;
use headwater_contract::{redact_url, ConnectorError, Problem};
use tokio_postgres::Client;

/// The failover problems of `source` against its primary (`client`).
pub(crate) async fn check(
    source: &PostgresServer,
    client: &Client,
    url: &str,
) -> Result<Vec<Problem>, ConnectorError> {
    let mut problems = Vec::new();
    let config = &source.config;
    let hosts = source.params.hosts.len();
    if !config.failover {
        if hosts > 1 {
            problems.push(Problem::warning(
                format!("source.url names {hosts} hosts but source.failover is off: after a failover the replication slot is not on the new primary, and Headwater stops with a lost-slot error"),
                "set source.failover = true (PostgreSQL 17+, with sync_replication_slots = on on the standbys)",
            ));
        }
        return Ok(problems);
    }
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int4", &[])
        .await
        .map_err(|e| catalog::sql_error("reading the server version", url, e))?
        .get(0);
    if version < 170000 {
        problems.push(Problem::error(
            format!(
                "source.failover = true needs PostgreSQL 17 or newer (the server is {version})"
            ),
            "set source.failover = false, or upgrade the server",
        ));
        return Ok(problems);
    }
    if let Some(slot) = catalog::slot_state(client, url, &config.slot).await? {
        if slot.failover == Some(false) {
            problems.push(Problem::warning(
                format!("replication slot {} is not a failover slot yet", config.slot),
                "nothing to do: the next `headwater run` makes it one (ALTER_REPLICATION_SLOT … FAILOVER true)",
            ));
        }
    }
    problems.extend(primary_problems(client, url).await?);
    if hosts == 1 {
        problems.push(Problem::warning(
            "source.url names one host: after a failover Headwater cannot find the promoted standby",
            "list the standbys after the primary: postgres://user:password@primary:5432,standby:5432/db",
        ));
    }
    for (host, port) in source.params.hosts.iter() {
        problems.extend(standby_problems(source, host, *port).await);
    }
    if problems.is_empty() {
        tracing::info!(slot = %config.slot, "failover ready: a standby keeps a synchronized copy of the slot");
    }
    Ok(problems)
}

/// `synchronized_standby_slots`: each named physical slot exists and is streaming.
async fn primary_problems(client: &Client, url: &str) -> Result<Vec<Problem>, ConnectorError> {
    let mut problems = Vec::new();
    let standby_slots: String = client
        .query_one("SELECT current_setting('synchronized_standby_slots')", &[])
        .await
        .map_err(|e| catalog::sql_error("reading synchronized_standby_slots", url, e))?
        .get(0);
    let names: Vec<&str> = standby_slots
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if names.is_empty() {
        problems.push(Problem::warning(
            "synchronized_standby_slots is empty on the primary: Headwater may receive changes no standby has yet, and after a failover the new primary lacks them",
            "ALTER SYSTEM SET synchronized_standby_slots = '<each standby's physical slot>'; SELECT pg_reload_conf()",
        ));
    }
    for name in names {
        let active: Option<bool> = client
            .query_opt(
                "SELECT active FROM pg_replication_slots WHERE slot_name = $1 AND slot_type = 'physical'",
                &[&name],
            )
            .await
            .map_err(|e| catalog::sql_error("reading the standby slots", url, e))?
            .map(|r| r.get(0));
        match active {
            Some(true) => {}
            Some(false) => problems.push(Problem::warning(
                format!("standby slot {name} (synchronized_standby_slots) has no standby streaming: the primary holds changes back from Headwater until it has"),
                format!("start the standby that uses primary_slot_name = '{name}', or take {name} out of synchronized_standby_slots"),
            )),
            None => problems.push(Problem::warning(
                format!("synchronized_standby_slots names {name}, which is no physical slot: the primary holds changes back from Headwater"),
                format!("SELECT pg_create_physical_replication_slot('{name}') and use it as the standby's primary_slot_name, or take it out of synchronized_standby_slots"),
            )),
        }
    }
    Ok(problems)
}

/// What a standby in source.url lacks to carry the slot through a failover; nothing for the
/// primary itself.
async fn standby_problems(source: &PostgresServer, host: &str, port: u16) -> Vec<Problem> {
    let slot = &source.config.slot;
    let at = format!("{host}:{port}");
    let client = match standby_client(source, host, port).await {
        Ok(client) => client,
        Err(err) => {
            return vec![Problem::warning(
                format!(
                    "cannot reach {at} to see whether it keeps a copy of the slot: {}",
                    err.report()
                ),
                "check that the standby runs and accepts this role (pg_hba.conf)",
            )]
        }
    };
    let row = client
        .query_one(
            "SELECT pg_is_in_recovery(), current_setting('sync_replication_slots')::bool,
                    current_setting('hot_standby_feedback')::bool,
                    (SELECT synced AND NOT temporary AND invalidation_reason IS NULL
                     FROM pg_replication_slots WHERE slot_name = $1)",
            &[slot],
        )
        .await;
    let (in_recovery, sync, feedback, synced): (bool, bool, bool, Option<bool>) = match row {
        Ok(r) => (r.get(0), r.get(1), r.get(2), r.get(3)),
        Err(err) => {
            return vec![Problem::warning(
                format!("cannot read the slots of standby {at}: {err}"),
                "check that it runs PostgreSQL 17 or newer",
            )]
        }
    };
    let mut problems = Vec::new();
    if !in_recovery {
        return problems;
    }
    if !sync {
        problems.push(Problem::warning(
            format!("standby {at} has sync_replication_slots off: it keeps no copy of replication slot {slot}"),
            format!("on {at}: ALTER SYSTEM SET sync_replication_slots = on; SELECT pg_reload_conf() (its primary_conninfo must name a dbname)"),
        ));
    }
    if !feedback {
        problems.push(Problem::warning(
            format!("standby {at} has hot_standby_feedback off: its copy of the slot can be invalidated"),
            format!("on {at}: ALTER SYSTEM SET hot_standby_feedback = on; SELECT pg_reload_conf()"),
        ));
    }
    if sync && synced != Some(true) {
        problems.push(Problem::warning(
            format!("standby {at} has no synchronized copy of replication slot {slot} yet: a failover now would lose it"),
            "wait: the standby copies failover slots once it has replayed their positions (the slot must have been created or altered with failover, which `headwater run` does)",
        ));
    }
    problems
}

/// A connection to one host of source.url, with its user, password, database and TLS.
async fn standby_client(
    source: &PostgresServer,
    host: &str,
    port: u16,
) -> Result<Client, ConnectorError> {
    let url = &source.config.url;
    let parsed: tokio_postgres::Config = url
        .parse()
        .map_err(|e| catalog::sql_error("reading source.url", url, e))?;
    let mut one = tokio_postgres::Config::new();
    one.host(host).port(port).ssl_mode(parsed.get_ssl_mode());
    if let Some(user) = parsed.get_user() {
        one.user(user);
    }
    if let Some(password) = parsed.get_password() {
        one.password(password);
    }
    if let Some(db) = parsed.get_dbname() {
        one.dbname(db);
    }
    let named = format!("{} (host {host}:{port})", redact_url(url));
    catalog::connect_to(one, &named, source.params.tls.as_ref()).await
}

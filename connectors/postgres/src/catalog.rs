//! Everything done over an ordinary SQL connection: resolving column types and keys, the slot
//! and the publication, and the server facts preflight reports.

use crate::config::{PostgresConfig, UnknownTypes};
use crate::pgoutput::Relation;
use crate::types::{PgType, TextKind};
use headwater_contract::{
    redact_url, Column, ConnectorError, FieldType, LogStatus, Lsn, Retention, TableFilter, TableId,
    TableSchema, CONNECT_TIMEOUT,
};
use std::sync::Arc;
use tokio_postgres::{Client, NoTls};

pub use headwater_contract::schema::UNCHANGED_TOAST_COLUMN;

/// Classifies an SQL-connection error.
pub fn sql_error(what: &str, url: &str, err: tokio_postgres::Error) -> ConnectorError {
    let Some(db) = err.as_db_error() else {
        return ConnectorError::retryable(format!(
            "{what}: connection to {} failed: {err}",
            redact_url(url)
        ))
        .caused_by(err);
    };
    let code = db.code().code().to_string();
    let message = match code.as_str() {
        "28P01" | "28000" => format!("{what}: authentication failed ({}); check the user and password in source.url", db.message()),
        "42501" => format!(
            "{what}: permission denied ({}); the role needs the REPLICATION attribute and SELECT on the captured tables (ALTER ROLE … REPLICATION; GRANT SELECT …)",
            db.message()
        ),
        "3D000" => format!("{what}: {}; check the database name in source.url", db.message()),
        "57P01" | "57P02" | "57P03" | "53300" => {
            return ConnectorError::retryable(format!("{what}: {} (SQLSTATE {code})", db.message())).caused_by(err)
        }
        _ => format!("{what}: {} (SQLSTATE {code})", db.message()),
    };
    ConnectorError::definite(message).caused_by(err)
}

/// Connects for SQL; with `tls`, the connection is encrypted and the server verified.
pub async fn connect(
    url: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<Client, ConnectorError> {
    let parsed: tokio_postgres::Config = url
        .parse()
        .map_err(|e| sql_error("reading source.url", url, e))?;
    connect_to(parsed, url, tls).await
}

/// Connects with a parsed configuration; `url` names the server in errors.
pub async fn connect_to(
    mut parsed: tokio_postgres::Config,
    url: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<Client, ConnectorError> {
    // with several hosts, the one to use is the primary (the others are standbys)
    if parsed.get_hosts().len() > 1
        && parsed.get_target_session_attrs() == tokio_postgres::config::TargetSessionAttrs::Any
    {
        parsed.target_session_attrs(tokio_postgres::config::TargetSessionAttrs::ReadWrite);
    }
    let failed = |e| sql_error("connecting to the source", url, e);
    let timed_out =
        |_| ConnectorError::connect_timed_out("connecting to the source", &redact_url(url));
    match tls {
        Some(config) => {
            parsed.ssl_mode(tokio_postgres::config::SslMode::Require);
            let connecting = parsed.connect(tokio_postgres_rustls::MakeRustlsConnect::new(
                (**config).clone(),
            ));
            let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
                .await
                .map_err(timed_out)?
                .map_err(failed)?;
            tokio::spawn(drive(connection));
            Ok(client)
        }
        None => {
            let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, parsed.connect(NoTls))
                .await
                .map_err(timed_out)?
                .map_err(failed)?;
            tokio::spawn(drive(connection));
            Ok(client)
        }
    }
}

/// Runs a connection's I/O until it ends.
async fn drive<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Err(err) = connection.await {
        tracing::debug!(error = %err, "source SQL connection ended");
    }
}

fn definite(table: &TableId, message: String) -> ConnectorError {
    ConnectorError::definite(format!("table {table}: {message}"))
}

/// Resolves a type the built-in table does not know: enums, domains (to their base type),
/// arrays of those.
async fn resolve_type(
    client: &Client,
    url: &str,
    oid: u32,
    typmod: i32,
    depth: u32,
) -> Result<Option<(PgType, String)>, ConnectorError> {
    if let Some(known) = PgType::builtin(oid, typmod) {
        return Ok(Some((known, String::new())));
    }
    if depth > 8 {
        return Ok(None);
    }
    let row = client
        .query_opt(
            "SELECT t.typname::text, t.typtype::text, t.typbasetype::oid::int8, t.typtypmod, t.typelem::oid::int8, t.typcategory::text
             FROM pg_type t WHERE t.oid = $1::int8::oid",
            &[&i64::from(oid)],
        )
        .await
        .map_err(|e| sql_error("reading a column type", url, e))?;
    let Some(row) = row else { return Ok(None) };
    let name: String = row.get(0);
    let kind: String = row.get(1);
    let base: i64 = row.get(2);
    let base_typmod: i32 = row.get(3);
    let element: i64 = row.get(4);
    let category: String = row.get(5);
    Ok(match (kind.as_str(), category.as_str()) {
        ("e", _) => Some((PgType::Text(TextKind::Enum), name)),
        ("d", _) => {
            let typmod = if typmod >= 0 { typmod } else { base_typmod };
            Box::pin(resolve_type(client, url, base as u32, typmod, depth + 1))
                .await?
                .map(|(t, _)| (t, name))
        }
        (_, "A") if element != 0 => {
            Box::pin(resolve_type(client, url, element as u32, typmod, depth + 1))
                .await?
                .map(|(t, _)| (PgType::Array(Box::new(t)), name))
        }
        _ => None,
    })
}

/// The schema (version 0: the caller numbers it) and value parsers of a relation.
pub async fn describe_relation(
    client: &Client,
    url: &str,
    relation: &Relation,
    unknown: UnknownTypes,
) -> Result<(TableSchema, Vec<PgType>), ConnectorError> {
    let id = TableId {
        namespace: relation.namespace.clone(),
        table: relation.name.clone(),
    };
    let mut types = Vec::with_capacity(relation.columns.len());
    let mut columns = Vec::with_capacity(relation.columns.len() + 1);
    let primary: Vec<String> = client
        .query(
            "SELECT a.attname::text FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
             WHERE i.indrelid = $1::int8::oid AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)",
            &[&i64::from(relation.oid)],
        )
        .await
        .map_err(|e| sql_error("reading the primary key", url, e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for column in &relation.columns {
        let (pg_type, type_name) = match resolve_type(client, url, column.type_oid, column.type_modifier, 0).await? {
            Some(found) => found,
            None if unknown == UnknownTypes::Text => (PgType::Text(TextKind::Plain), format!("oid {}", column.type_oid)),
            None => {
                return Err(definite(
                    &id,
                    format!(
                        "column {} has a type (oid {}) Headwater does not map; set source.unknown_types = \"text\" to carry it as text, or exclude the table",
                        column.name, column.type_oid
                    ),
                ))
            }
        };
        let sql_type = if type_name.is_empty() {
            format!("{pg_type:?}").to_ascii_lowercase()
        } else {
            type_name
        };
        columns.push(Column {
            name: column.name.clone(),
            field_type: pg_type.field_type(),
            nullable: !primary.contains(&column.name),
            sql_type,
        });
        types.push(pg_type);
    }
    let mut primary_key: Vec<usize> = primary
        .iter()
        .filter_map(|name| relation.columns.iter().position(|c| &c.name == name))
        .collect();
    if primary_key.len() != primary.len() {
        primary_key.clear();
    }
    if primary_key.is_empty() && relation.replica_identity == b'i' {
        primary_key = relation
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.key)
            .map(|(i, _)| i)
            .collect();
        for &i in &primary_key {
            columns[i].nullable = false;
        }
    }
    columns.push(Column {
        name: UNCHANGED_TOAST_COLUMN.to_string(),
        field_type: FieldType::Array(Box::new(FieldType::String)),
        nullable: true,
        sql_type: "names of unchanged TOAST columns not sent by PostgreSQL".into(),
    });
    Ok((
        TableSchema {
            id,
            version: 0,
            columns,
            primary_key,
        },
        types,
    ))
}

/// The slot as the server sees it.
pub struct SlotState {
    pub active_pid: Option<i32>,
    pub wal_status: Option<String>,
    pub plugin: Option<String>,
    pub confirmed_flush: Option<String>,
    /// Whether it is a failover slot (`None` before PostgreSQL 17, which has none).
    pub failover: Option<bool>,
}

pub async fn slot_state(
    client: &Client,
    url: &str,
    slot: &str,
) -> Result<Option<SlotState>, ConnectorError> {
    let row = client
        .query_opt(
            // to_jsonb: the failover column exists from PostgreSQL 17 on
            "SELECT active_pid, wal_status, plugin::text, confirmed_flush_lsn::text, (to_jsonb(s) ->> 'failover')::bool \
             FROM pg_replication_slots s WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| sql_error("reading the replication slot", url, e))?;
    Ok(row.map(|r| SlotState {
        active_pid: r.get(0),
        wal_status: r.get(1),
        plugin: r.get(2),
        confirmed_flush: r.get(3),
        failover: r.get(4),
    }))
}

/// Creates the slot; a `failover` slot (PostgreSQL 17+) is kept in sync on standbys with
/// `sync_replication_slots = on`.
pub async fn create_slot(
    client: &Client,
    url: &str,
    slot: &str,
    failover: bool,
) -> Result<Lsn, ConnectorError> {
    let sql = if failover {
        // (name, plugin, temporary, two_phase, failover)
        "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput', false, false, true)"
    } else {
        "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')"
    };
    let row = client
        .query_one(sql, &[&slot])
        .await
        .map_err(|e| sql_error("creating the replication slot", url, e))?;
    let text: String = row.get(0);
    text.parse().map_err(|e| {
        ConnectorError::definite(format!("the server returned an unreadable LSN: {e}"))
    })
}

/// The slot against the WAL: bytes between its confirmed position and the WAL's end, and what
/// `max_slot_wal_keep_size` still allows (`safe_wal_size`).
pub async fn log_status(
    client: &Client,
    url: &str,
    slot: &str,
    position: Option<Lsn>,
) -> Result<LogStatus, ConnectorError> {
    let end = current_wal_lsn(client, url).await?;
    let row = client
        .query_opt(
            "SELECT confirmed_flush_lsn::text, wal_status, safe_wal_size,
                    (SELECT setting::int8 FROM pg_settings WHERE name = 'max_slot_wal_keep_size'), active
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| sql_error("reading the replication slot's retention", url, e))?;
    let Some(row) = row else {
        // a pipeline with no position yet has not made its slot: nothing is held, nothing lost
        let retention = match position {
            None => Retention::Unbounded {
                detail: format!("replication slot {slot} is made when the pipeline first starts"),
            },
            Some(_) => Retention::Lost {
                detail: format!("replication slot {slot} does not exist"),
            },
        };
        return Ok(LogStatus {
            bytes_behind: None,
            log_bytes_written: Some(end.0),
            slot_active: None,
            retention,
        });
    };
    let confirmed: Option<Lsn> = row
        .get::<_, Option<String>>(0)
        .and_then(|text| text.parse().ok())
        .or(position);
    let wal_status: Option<String> = row.get(1);
    let safe_wal_size: Option<i64> = row.get(2);
    let max_mb: Option<i64> = row.get(3);
    let active: Option<bool> = row.get(4);
    let retention = match (wal_status.as_deref(), max_mb, safe_wal_size) {
        (Some("lost"), _, _) => Retention::Lost {
            detail: format!("replication slot {slot} was invalidated (wal_status lost): it exceeded max_slot_wal_keep_size"),
        },
        (_, Some(mb), Some(headroom)) if mb >= 0 => Retention::BySize {
            max_bytes: (mb as u64) << 20,
            headroom_bytes: headroom,
            wal_status: wal_status.unwrap_or_default(),
        },
        _ => Retention::Unbounded {
            detail: "max_slot_wal_keep_size = -1: the slot keeps WAL without limit (the disk is the limit)".into(),
        },
    };
    Ok(LogStatus {
        bytes_behind: confirmed.map(|c| end.0.saturating_sub(c.0)),
        log_bytes_written: Some(end.0),
        retention,
        slot_active: active,
    })
}

pub async fn current_wal_lsn(client: &Client, url: &str) -> Result<Lsn, ConnectorError> {
    let row = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .map_err(|e| sql_error("reading the WAL position", url, e))?;
    let text: String = row.get(0);
    text.parse().map_err(|e| {
        ConnectorError::definite(format!("the server returned an unreadable LSN: {e}"))
    })
}

/// Tables (`schema`, `name`, replica identity, has primary key) the filter captures.
pub async fn captured_tables(
    client: &Client,
    url: &str,
    filter: &TableFilter,
) -> Result<Vec<(String, String, String, bool)>, ConnectorError> {
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text, c.relreplident::text,
                    EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
               AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
             ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(|e| sql_error("listing tables", url, e))?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get::<_, String>(0),
                r.get::<_, String>(1),
                r.get::<_, String>(2),
                r.get::<_, bool>(3),
            )
        })
        .filter(|(schema, table, _, _)| filter.captures(schema, table))
        .collect())
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Creates the publication for the captured tables when it does not exist.
pub async fn ensure_publication(
    client: &Client,
    config: &PostgresConfig,
    filter: &TableFilter,
) -> Result<(), ConnectorError> {
    let url = &config.url;
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&config.publication],
        )
        .await
        .map_err(|e| sql_error("reading publications", url, e))?
        .is_some();
    if exists {
        return Ok(());
    }
    if !config.create_publication {
        return Err(ConnectorError::definite(format!(
            "publication {} does not exist; create it (CREATE PUBLICATION {} FOR TABLE …) or set source.create_publication = true",
            config.publication, config.publication
        )));
    }
    let tables = captured_tables(client, url, filter).await?;
    if tables.is_empty() {
        return Err(ConnectorError::definite(format!(
            "source.include {:?} matches no table, so there is nothing to publish; check the patterns (schema.table globs)",
            config.include
        )));
    }
    let list: Vec<String> = tables
        .iter()
        .map(|(s, t, _, _)| format!("{}.{}", quote_ident(s), quote_ident(t)))
        .collect();
    let statement = format!(
        "CREATE PUBLICATION {} FOR TABLE {} WITH (publish_via_partition_root = {})",
        quote_ident(&config.publication),
        list.join(", "),
        config.publish_via_partition_root
    );
    if let Err(err) = client.batch_execute(&statement).await {
        if err
            .as_db_error()
            .is_some_and(|db| db.code().code() == "42501")
        {
            return Err(ConnectorError::definite(format!(
                "creating publication {} was refused ({}); have the tables' owner (or a superuser) run: {statement}",
                config.publication,
                err.as_db_error().map(|db| db.message().to_string()).unwrap_or_default()
            )));
        }
        return Err(sql_error("creating the publication", url, err));
    }
    tracing::info!(publication = %config.publication, tables = list.len(), "created the publication");
    Ok(())
}

//! The Iceberg sink against both sources, read back by pyiceberg (through the same sqlite SQL
//! catalog) and DuckDB's Iceberg extension: under a random insert/update/key-change/delete load
//! that starts before the initial snapshot, every mirror equals the source table and every
//! changelog holds each change once.

mod common;

use common::delta::read_delta;
use common::delta::Lakehouse;
use common::delta_load::{mirror_and_changelog_under_load, mysql_database};
use common::lakehouse_cases::{self, on_mariadb, on_postgres, Case};
use common::{mysql_admin, postgres_admin, Workdir};
use mysql_async::prelude::Queryable;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_mirror_and_changelog_equal_the_source_under_a_random_load() {
    on_postgres(Lakehouse::Iceberg, Case::Load, "hw_ice_pg", "ipg").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_mirror_and_changelog_equal_the_source_under_a_random_load() {
    on_mariadb(Lakehouse::Iceberg, Case::Load, "hw_ice_my", "imy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sigkill_under_load_keeps_mirror_and_changelog_exact() {
    on_postgres(Lakehouse::Iceberg, Case::Sigkill, "hw_ice_pgkill", "ipgk").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_sigkill_under_load_keeps_mirror_and_changelog_exact() {
    on_mariadb(Lakehouse::Iceberg, Case::Sigkill, "hw_ice_mykill", "imyk").await;
}

/// A trickle of small commits: compaction keeps the live files per table bounded, and snapshot
/// expiry with orphan cleanup deletes the files compaction replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickle_of_commits_is_compacted_and_vacuumed() {
    lakehouse_cases::a_trickle_of_commits_is_compacted_and_vacuumed(
        Lakehouse::Iceberg,
        "hw_ice_trickle",
    )
    .await;
}

/// Columns added and dropped mid-stream become Iceberg schema changes (new field ids, no
/// rewrite) both readers follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_and_dropped_columns_are_read_back_by_both_readers() {
    lakehouse_cases::added_and_dropped_columns_are_read_back_by_both_readers(
        Lakehouse::Iceberg,
        "hw_ice_ddl",
    )
    .await;
}

/// On a real S3-compatible server (the catalog a local sqlite file): a random load with a
/// snapshot, the server stopped for 30 seconds, then SIGKILLs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_tables_survive_a_stopped_server_and_sigkill() {
    lakehouse_cases::s3_tables_survive_a_stopped_server_and_sigkill(
        Lakehouse::Iceberg,
        "hw_ice_s3",
    )
    .await;
}

/// The catalog in a PostgreSQL database (`catalog = "postgres"`), shared with pyiceberg's
/// `SqlCatalog` on it: a MariaDB source under the random load, then SIGKILLs, then a restart
/// that resumes from the snapshots the shared catalog names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_in_postgresql_is_shared_with_pyiceberg() {
    let catalog_db = common::unique("hw_ice_catalog");
    postgres_admin()
        .await
        .batch_execute(&format!("CREATE DATABASE {catalog_db} OWNER headwater"))
        .await
        .expect("catalog database");
    let server = common::endpoint("HEADWATER_POSTGRES_URL");
    let (server, _database) = server.rsplit_once('/').expect("a database in the URL");
    let url = format!("{server}/{catalog_db}");
    let (db_name, db) = mysql_database("hw_ice_mycat").await;
    let work = Workdir::new();
    work.mysql_config("imyc", &db_name, "snapshot = \"initial\"", "");
    work.use_iceberg_sink(
        None,
        &format!("catalog = \"postgres\"\ncatalog_url = \"{url}\""),
    );
    let stream = format!("imyc.{db_name}.t");
    let table_in = |kind: &str| format!("iceberg:{url}#{kind}.imyc.{db_name}#t");
    let tables = (table_in("mirror"), table_in("changelog"));
    mirror_and_changelog_under_load(db, &db_name, &work, tables).await;
    assert!(
        !work.iceberg_dir().join("catalog.db").exists(),
        "no sqlite catalog beside the PostgreSQL one"
    );
    // restarted, the sink finds its tables in the shared catalog and adds to them
    let mut admin = mysql_admin().await;
    admin
        .query_drop(format!(
            "INSERT INTO `{db_name}`.t (id, v, amount, note) VALUES (900000, 1, 9.00, 'after')"
        ))
        .await
        .expect("insert");
    work.catch_up();
    let mirror = read_delta("pyiceberg", &table_in("mirror"));
    assert_eq!(
        mirror
            .project(&["id", "note"])
            .into_iter()
            .filter(|r| r[0] == serde_json::json!(900000))
            .count(),
        1,
        "the row written after the restart is in the mirror once ({stream})"
    );
    let _ = admin.query_drop(format!("DROP DATABASE `{db_name}`")).await;
    let _ = postgres_admin()
        .await
        .batch_execute(&format!("DROP DATABASE {catalog_db} WITH (FORCE)"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_deletes_keep_the_row_flagged() {
    lakehouse_cases::soft_deletes_keep_the_row_flagged(Lakehouse::Iceberg, "hw_ice_soft").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncate_empties_the_mirror_or_flags_its_rows() {
    lakehouse_cases::a_truncate_empties_the_mirror_or_flags_its_rows(
        Lakehouse::Iceberg,
        "hw_ice_trunc",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keyless_tables_are_named_by_check_and_get_no_mirror() {
    let (schema, db) = common::delta_load::postgres_schema("hw_ice_nokey").await;
    let work = Workdir::new();
    work.postgres_config("inokey", &schema, "snapshot = \"initial\"");
    lakehouse_cases::keyless_table_gets_a_changelog_only(
        Lakehouse::Iceberg,
        db,
        &schema,
        &work,
        "inokey",
    )
    .await;
    common::postgres_cleanup(&schema, &work).await;
}

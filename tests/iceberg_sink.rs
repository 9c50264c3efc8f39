//! The Iceberg sink against both sources, read back by pyiceberg (through the same sqlite SQL
//! catalog) and DuckDB's Iceberg extension: under a random insert/update/key-change/delete load
//! that starts before the initial snapshot, every mirror equals the source table and every
//! changelog holds each change once.

mod common;

use common::delta::Lakehouse;
use common::delta_load::*;
use common::lakehouse_cases::{self, sigkill_under_load};
use common::*;
use mysql_async::prelude::Queryable;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_mirror_and_changelog_equal_the_source_under_a_random_load() {
    let (schema, db) = postgres_schema("hw_ice_pg").await;
    let work = Workdir::new();
    work.postgres_config("ipg", &schema, "snapshot = \"initial\"");
    work.use_iceberg_sink(None, "");
    let stream = format!("ipg.{schema}.t");
    let tables = (
        work.iceberg_table("mirror", &stream),
        work.iceberg_table("changelog", &stream),
    );
    mirror_and_changelog_under_load(db, &schema, &work, tables).await;
    postgres_cleanup(&schema, &work).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_mirror_and_changelog_equal_the_source_under_a_random_load() {
    let (db_name, db) = mysql_database("hw_ice_my").await;
    let work = Workdir::new();
    work.mysql_config("imy", &db_name, "snapshot = \"initial\"", "");
    work.use_iceberg_sink(None, "");
    let stream = format!("imy.{db_name}.t");
    let tables = (
        work.iceberg_table("mirror", &stream),
        work.iceberg_table("changelog", &stream),
    );
    mirror_and_changelog_under_load(db, &db_name, &work, tables).await;
    let _ = mysql_admin()
        .await
        .query_drop(format!("DROP DATABASE `{db_name}`"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sigkill_under_load_keeps_mirror_and_changelog_exact() {
    let (schema, db) = postgres_schema("hw_ice_pgkill").await;
    let work = Workdir::new();
    work.postgres_config("ipgk", &schema, "snapshot = \"initial\"");
    work.use_iceberg_sink(None, "");
    let stream = format!("ipgk.{schema}.t");
    sigkill_under_load(Lakehouse::Iceberg, db, &schema, &work, &stream).await;
    postgres_cleanup(&schema, &work).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_sigkill_under_load_keeps_mirror_and_changelog_exact() {
    let (db_name, db) = mysql_database("hw_ice_mykill").await;
    let work = Workdir::new();
    work.mysql_config("imyk", &db_name, "snapshot = \"initial\"", "");
    work.use_iceberg_sink(None, "");
    let stream = format!("imyk.{db_name}.t");
    sigkill_under_load(Lakehouse::Iceberg, db, &db_name, &work, &stream).await;
    let _ = mysql_admin()
        .await
        .query_drop(format!("DROP DATABASE `{db_name}`"))
        .await;
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

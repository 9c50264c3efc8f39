//! The Iceberg sink against both sources, read back by pyiceberg (through the same sqlite SQL
//! catalog) and DuckDB's Iceberg extension: under a random insert/update/key-change/delete load
//! that starts before the initial snapshot, every mirror equals the source table and every
//! changelog holds each change once.

mod common;

use common::delta_load::*;
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

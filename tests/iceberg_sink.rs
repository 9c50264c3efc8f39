//! The Iceberg sink against both sources, read back by pyiceberg (through the same sqlite SQL
//! catalog) and DuckDB's Iceberg extension: under a random insert/update/key-change/delete load
//! that starts before the initial snapshot, every mirror equals the source table and every
//! changelog holds each change once.

mod common;

use common::delta::Lakehouse;
use common::lakehouse_cases::{self, on_mariadb, on_postgres, Case};

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

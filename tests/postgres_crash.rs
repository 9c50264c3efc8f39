//! PostgreSQL: SIGKILL at random moments under a steady write load; every committed change
//! lands in the lake exactly once, in commit order per row. Plus a 1,000,000-row transaction
//! with bounded memory.

mod common;

use common::counter_load::*;
use common::*;
use rand::Rng;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

async fn schema_with_table(prefix: &str, ddl: &str) -> String {
    let schema = unique(prefix);
    postgres_admin()
        .await
        .batch_execute(&format!("CREATE SCHEMA {schema} AUTHORIZATION headwater"))
        .await
        .unwrap();
    let client = postgres_connect(&endpoint("HEADWATER_POSTGRES_URL")).await;
    client
        .batch_execute(&ddl.replace("{schema}", &schema))
        .await
        .unwrap();
    schema
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_and_duplicates_nothing() {
    let schema = schema_with_table(
        "hw_pgcrash",
        "CREATE TABLE {schema}.t (id bigint PRIMARY KEY, v int NOT NULL, pad text)",
    )
    .await;
    let work = Workdir::new();
    work.postgres_config("pgcrash", &schema, "");
    work.catch_up();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(postgres_counter_load(schema.clone(), stop.clone()));
    for _ in 0..6 {
        let mut child = work.spawn();
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(300..1500))).await;
        assert_still_running(&mut child);
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }
    stop.store(true, Ordering::SeqCst);
    let transactions = writer.await.expect("writer");
    assert!(
        transactions > 50,
        "the load wrote too little ({transactions})"
    );
    // the killed process's walsender may hold the slot for a moment; catch-up waits for it
    work.catch_up();

    let records = read_stream(&work.lake(), &format!("pgcrash.{schema}.t"));
    assert_each_change_once(&records, &postgres_counter_rows(&schema).await);
    eprintln!(
        "{transactions} transactions, {} records, all exactly once",
        records.len()
    );
    postgres_cleanup(&schema, &work).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_row_transaction_streams_with_bounded_memory() {
    const ROWS: u64 = 1_000_000;
    let schema = schema_with_table(
        "hw_pgbig",
        "CREATE TABLE {schema}.t (id bigint PRIMARY KEY, name text NOT NULL, amount numeric(12,2), at timestamptz)",
    )
    .await;
    let work = Workdir::new();
    work.postgres_config("pgbig", &schema, "");
    work.catch_up();
    let client = postgres_connect(&endpoint("HEADWATER_POSTGRES_URL")).await;
    client
        .batch_execute(&format!(
            "INSERT INTO {schema}.t SELECT g, 'row ' || g, g / 100.0, '2024-01-01'::timestamptz + g * interval '1 second' FROM generate_series(1, {ROWS}) g"
        ))
        .await
        .unwrap();
    let peak_kib = work.catch_up_measuring_peak_rss();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(work.lake().join("_headwater/manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["total_records"], ROWS);
    assert!(
        peak_kib < LARGE_TRANSACTION_PEAK_RSS_KIB,
        "peak RSS {} MiB",
        peak_kib / 1024
    );
    eprintln!(
        "1,000,000-row PostgreSQL transaction: peak RSS {} MiB",
        peak_kib / 1024
    );
    postgres_cleanup(&schema, &work).await;
}

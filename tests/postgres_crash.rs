//! PostgreSQL: SIGKILL at random moments under a steady write load; every committed change
//! lands in the lake exactly once, in commit order per row. Plus a 1,000,000-row transaction
//! with bounded memory.

mod common;

use common::*;
use rand::Rng;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

async fn write_load(schema: String, stop: Arc<AtomicBool>) -> u64 {
    let client = postgres_connect(&endpoint("HEADWATER_POSTGRES_URL")).await;
    let mut next_id = 0i64;
    let mut transactions = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let size = if transactions % 25 == 24 {
            3000
        } else {
            rand::rng().random_range(1..20)
        };
        let mut sql = format!(
            "BEGIN; INSERT INTO {schema}.t (id, v, pad) SELECT g, 0, repeat('p', 50) FROM generate_series({next_id}, {}) g;",
            next_id + size - 1
        );
        next_id += size;
        if next_id > 10 {
            let low = rand::rng().random_range(0..next_id - 10);
            sql.push_str(&format!(
                "UPDATE {schema}.t SET v = v + 1 WHERE id BETWEEN {low} AND {};",
                low + 5
            ));
        }
        sql.push_str("COMMIT;");
        client.batch_execute(&sql).await.expect("load transaction");
        transactions += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    transactions
}

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

async fn cleanup(schema: &str, work: &Workdir) {
    let admin = postgres_admin().await;
    let slot = work.slot();
    let _ = admin
        .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await;
    let _ = admin
        .batch_execute(&format!(
            "DROP SCHEMA {schema} CASCADE; DROP PUBLICATION IF EXISTS {slot}"
        ))
        .await;
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
    let writer = tokio::spawn(write_load(schema.clone(), stop.clone()));
    for _ in 0..6 {
        let mut child = work.spawn();
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(300..1500))).await;
        if let Ok(Some(status)) = child.try_wait() {
            let mut stderr = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .map(|mut e| e.read_to_string(&mut stderr));
            panic!("headwater exited early with {status}: {stderr}");
        }
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
    let mut last_v: HashMap<i64, i64> = HashMap::new();
    for record in &records {
        let after = image(record, "after").expect("after image");
        let (id, v) = (avro_int(&after["id"]), avro_int(&after["v"]));
        match op(record).as_str() {
            "c" => assert!(last_v.insert(id, v).is_none(), "row {id} inserted twice"),
            "u" => {
                let before = last_v
                    .get(&id)
                    .copied()
                    .unwrap_or_else(|| panic!("update of {id} before its insert"));
                assert_eq!(v, before + 1, "row {id}: lost or repeated update");
                last_v.insert(id, v);
            }
            other => panic!("unexpected op {other}"),
        }
    }
    let client = postgres_connect(&endpoint("HEADWATER_POSTGRES_URL")).await;
    let rows = client
        .query(&format!("SELECT id, v FROM {schema}.t"), &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), last_v.len());
    for row in rows {
        let (id, v): (i64, i32) = (row.get(0), row.get(1));
        assert_eq!(last_v.get(&id), Some(&i64::from(v)), "row {id}");
    }
    eprintln!(
        "{transactions} transactions, {} records, all exactly once",
        records.len()
    );
    cleanup(&schema, &work).await;
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
    assert!(peak_kib < 120 * 1024, "peak RSS {} MiB", peak_kib / 1024);
    eprintln!(
        "1,000,000-row PostgreSQL transaction: peak RSS {} MiB",
        peak_kib / 1024
    );
    cleanup(&schema, &work).await;
}

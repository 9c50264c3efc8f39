//! SIGKILL at random moments under a steady write load: every committed change lands in the
//! lake exactly once, in commit order per row (the lake sink's exactly-once contract).

mod common;

use common::*;
use mysql_async::prelude::Queryable;
use rand::Rng;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Inserts rows and bumps counters in transactions of varied size (one of them large enough to
/// span lake commits), until `stop` is set. Every row's `v` counts its updates.
async fn write_load(db: String, stop: Arc<AtomicBool>) -> u64 {
    let mut conn = mysql_admin().await;
    let mut next_id = 0i64;
    let mut transactions = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let size = if transactions % 25 == 24 {
            3000
        } else {
            rand::rng().random_range(1..20)
        };
        let mut tx = conn
            .start_transaction(Default::default())
            .await
            .expect("begin");
        let values: Vec<String> = (next_id..next_id + size)
            .map(|id| format!("({id}, 0, REPEAT('p', 50))"))
            .collect();
        tx.query_drop(format!(
            "INSERT INTO `{db}`.t (id, v, pad) VALUES {}",
            values.join(",")
        ))
        .await
        .expect("insert");
        next_id += size;
        if next_id > 10 {
            let low = rand::rng().random_range(0..next_id - 10);
            tx.query_drop(format!(
                "UPDATE `{db}`.t SET v = v + 1 WHERE id BETWEEN {low} AND {}",
                low + 5
            ))
            .await
            .expect("update");
        }
        tx.commit().await.expect("commit");
        transactions += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    transactions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_and_duplicates_nothing() {
    let db = unique("hw_crash");
    let mut admin = mysql_admin().await;
    admin
        .query_drop(format!(
            "CREATE DATABASE `{db}`; CREATE TABLE `{db}`.t (id BIGINT PRIMARY KEY, v INT NOT NULL, pad VARCHAR(100))"
        ))
        .await
        .unwrap();
    let work = Workdir::new();
    work.mysql_config("crash", &db, "", "");
    work.catch_up();

    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_load(db.clone(), stop.clone()));
    let stream = format!("crash.{db}.t");
    let mut kills = 0;
    for _ in 0..6 {
        let mut child = work.spawn();
        let lived = Duration::from_millis(rand::rng().random_range(300..1500));
        tokio::time::sleep(lived).await;
        if let Ok(Some(status)) = child.try_wait() {
            let mut stderr = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .map(|mut e| e.read_to_string(&mut stderr));
            panic!("headwater exited early with {status}: {stderr}");
        }
        child.kill().expect("SIGKILL"); // std's kill sends SIGKILL on Unix
        child.wait().expect("reap");
        kills += 1;
    }
    stop.store(true, Ordering::SeqCst);
    let transactions = writer.await.expect("writer");
    assert!(
        transactions > 50,
        "the load wrote too little ({transactions} transactions) to test anything"
    );
    work.catch_up();

    let records = read_stream(&work.lake(), &stream);
    let mut last_v: HashMap<i64, i64> = HashMap::new();
    for record in &records {
        let after = image(record, "after").expect("inserts and updates have an after-image");
        let id = avro_int(&after["id"]);
        let v = avro_int(&after["v"]);
        match op(record).as_str() {
            "c" => {
                assert_eq!(v, 0);
                assert!(
                    last_v.insert(id, 0).is_none(),
                    "row {id} inserted twice: a duplicate after a crash"
                );
            }
            "u" => {
                let before = last_v
                    .get(&id)
                    .copied()
                    .unwrap_or_else(|| panic!("update of row {id} before its insert"));
                assert_eq!(
                    v,
                    before + 1,
                    "row {id}: update to v={v} after v={before}: lost or repeated change"
                );
                last_v.insert(id, v);
            }
            other => panic!("unexpected op {other}"),
        }
    }
    let rows: Vec<(i64, i64)> = admin
        .query(format!("SELECT id, v FROM `{db}`.t"))
        .await
        .unwrap();
    assert_eq!(
        rows.len(),
        last_v.len(),
        "rows in the table vs rows in the lake"
    );
    for (id, v) in rows {
        assert_eq!(
            last_v.get(&id),
            Some(&v),
            "row {id}: lake ends at {:?}, table has {v}",
            last_v.get(&id)
        );
    }
    eprintln!(
        "{kills} kills, {transactions} transactions, {} records, all exactly once",
        records.len()
    );
    admin
        .query_drop(format!("DROP DATABASE `{db}`"))
        .await
        .unwrap();
}

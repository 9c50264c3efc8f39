//! SIGKILL at random moments under a steady write load: every committed change lands in the
//! lake exactly once, in commit order per row (the lake sink's exactly-once contract).

mod common;

use common::counter_load::*;
use common::*;
use mysql_async::prelude::Queryable;
use rand::Rng;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
    let writer = tokio::spawn(mysql_counter_load(db.clone(), stop.clone()));
    let stream = format!("crash.{db}.t");
    let mut kills = 0;
    for _ in 0..6 {
        let mut child = work.spawn();
        let lived = Duration::from_millis(rand::rng().random_range(300..1500));
        tokio::time::sleep(lived).await;
        assert_still_running(&mut child);
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
    assert_each_change_once(&records, &mysql_counter_rows(&db).await);
    eprintln!(
        "{kills} kills, {transactions} transactions, {} records, all exactly once",
        records.len()
    );
    admin
        .query_drop(format!("DROP DATABASE `{db}`"))
        .await
        .unwrap();
}

//! A transaction of 1,000,000 rows flows through with bounded memory: rows stream to the sink as
//! they are read, and only the acknowledgement waits for the commit.

mod common;

use common::*;
use mysql_async::prelude::Queryable;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_row_transaction_streams_with_bounded_memory() {
    const ROWS: u64 = 1_000_000;
    let db = unique("hw_bigtx");
    let mut admin = mysql_admin().await;
    admin
        .query_drop(format!(
            "CREATE DATABASE `{db}`; CREATE TABLE `{db}`.t (id BIGINT PRIMARY KEY, name VARCHAR(40) NOT NULL, amount DECIMAL(12,2), at DATETIME(6))"
        ))
        .await
        .unwrap();
    let work = Workdir::new();
    work.mysql_config("bigtx", &db, "", "max_file_bytes = 16777216");
    work.catch_up();
    admin
        .query_drop(format!(
            "INSERT INTO `{db}`.t SELECT seq, CONCAT('row ', seq), seq / 100, '2024-01-01' + INTERVAL seq SECOND FROM `{db}`.seq_1_to_{ROWS}"
        ))
        .await
        .unwrap();

    let peak_kib = work.catch_up_measuring_peak_rss();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(work.lake().join("_headwater/manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        manifest["total_records"], ROWS,
        "every row of the transaction landed once"
    );
    let files = std::fs::read_dir(work.lake().join(format!("bigtx.{db}.t")))
        .unwrap()
        .count();
    assert!(
        files > 1,
        "the transaction spans several committed files ({files})"
    );
    assert!(
        peak_kib < LARGE_TRANSACTION_PEAK_RSS_KIB,
        "peak RSS {} MiB",
        peak_kib / 1024
    );
    eprintln!(
        "1,000,000-row transaction: peak RSS {} MiB, {files} files",
        peak_kib / 1024
    );
    admin
        .query_drop(format!("DROP DATABASE `{db}`"))
        .await
        .unwrap();
}

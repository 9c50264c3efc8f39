//! Retention safety against real servers: with the pipeline stopped while the log grows,
//! `headwater status` and `check` report how far behind the position is and how long until
//! the server discards the log it needs — and that time shrinks.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

fn status_json(work: &Workdir) -> serde_json::Value {
    let out = work.headwater(&["status", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status --json printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn a_stopped_mariadb_pipeline_sees_its_binlog_expiry_come_closer() {
    let server =
        PrivateMariadb::start_with(1, |_| vec!["--binlog-expire-logs-seconds=7200".into()]);
    server.sql("CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY, pad TEXT)");
    let work = Workdir::new();
    work.mysql_config_for(&server.url(), "expiry", "shop", "snapshot = \"never\"", "");
    work.catch_up();
    let idle = status_json(&work);
    assert_eq!(idle["running"], false);
    assert_eq!(idle["log"]["retention"]["kind"], "by_age");
    assert_eq!(
        idle["loss_eta_seconds"], 7200.0,
        "the position is in the file being written: it lasts the whole retention at least: {idle}"
    );
    // Stopped; changes are written and the binlog rotates past the position's file.
    server.sql("INSERT INTO shop.t SELECT seq, REPEAT('x', 200) FROM shop.seq_1_to_2000");
    server.sql("FLUSH BINARY LOGS");
    server.sql("INSERT INTO shop.t SELECT seq, 'y' FROM shop.seq_2001_to_2100");
    let first = status_json(&work);
    assert!(
        first["log"]["bytes_behind"].as_u64().unwrap() > 400_000,
        "2000 rows of 200 bytes behind: {first}"
    );
    let eta = first["loss_eta_seconds"].as_f64().unwrap();
    assert!(eta > 7000.0 && eta <= 7200.0, "{first}");
    std::thread::sleep(Duration::from_millis(1100));
    let later = status_json(&work);
    let eta_later = later["loss_eta_seconds"].as_f64().unwrap();
    assert!(
        eta_later < eta,
        "the time until the needed binlog may be purged shrinks: {eta} then {eta_later}"
    );
    let human = work.headwater(&["status"]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("pipeline expiry: stopped")
            && text.contains("behind the log end; position lost in: 1h5")
            && text.contains("binlogs kept 2h00m"),
        "{text}"
    );
    let checked = work.headwater(&["check"]);
    let text = String::from_utf8_lossy(&checked.stdout);
    assert!(
        text.contains("position lost in:"),
        "check reports it too: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_postgres_pipeline_sees_its_slot_headroom_shrink() {
    let server = PrivatePostgres::start(
        "max_slot_wal_keep_size = 256MB\nmax_wal_size = 64MB\nmin_wal_size = 32MB",
    );
    let admin = postgres_connect(&server.admin_url()).await;
    admin
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE junk (x text)")
        .await
        .unwrap();
    let work = Workdir::new();
    work.postgres_config_for(
        &server.admin_url(),
        "pgkeep",
        "public",
        "heartbeat_interval = \"0s\"\nsnapshot = \"never\"",
    );
    let text = std::fs::read_to_string(work.config())
        .unwrap()
        .replace("include = [\"public.*\"]", "include = [\"public.t\"]");
    std::fs::write(work.config(), text).unwrap();
    work.catch_up();
    let write_wal = || {
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &server.port.to_string(),
                "-U",
                "postgres",
                "-tAc",
            ])
            .arg("INSERT INTO junk SELECT md5(g::text) FROM generate_series(1, 50000) g")
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    write_wal();
    let first = status_json(&work);
    assert_eq!(first["log"]["retention"]["kind"], "by_size", "{first}");
    let headroom = first["log"]["retention"]["headroom_bytes"]
        .as_i64()
        .unwrap();
    assert!(
        first["log"]["bytes_behind"].as_u64().unwrap() > 1_000_000,
        "{first}"
    );
    write_wal();
    write_wal();
    // a writer keeps WAL growing while status measures the rate
    let port = server.port;
    let writer = std::thread::spawn(move || {
        for _ in 0..6 {
            let _ = Command::new("psql")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-U",
                    "postgres",
                    "-tAc",
                ])
                .arg("INSERT INTO junk SELECT md5(g::text) FROM generate_series(1, 20000) g")
                .output();
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    let later = status_json(&work);
    writer.join().unwrap();
    let headroom_later = later["log"]["retention"]["headroom_bytes"]
        .as_i64()
        .unwrap();
    assert!(
        headroom_later < headroom,
        "the WAL the slot may still retain shrinks as WAL is written: {headroom} then {headroom_later}"
    );
    let eta = later["loss_eta_seconds"].as_f64();
    assert!(
        eta.is_some_and(|eta| eta > 0.0 && eta.is_finite()),
        "a finite time until the slot is invalidated while WAL grows: {later}"
    );
    let human = work.headwater(&["status"]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("more WAL before it is invalidated") && text.contains("position lost in:"),
        "{text}"
    );
    let checked = work.headwater(&["check"]);
    let text = String::from_utf8_lossy(&checked.stdout);
    assert!(
        text.contains("more WAL before it is invalidated"),
        "check reports the slot's headroom too: {text}"
    );
}

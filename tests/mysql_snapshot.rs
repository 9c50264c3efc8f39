//! Snapshots and backfills from MariaDB: chunked copies next to the stream, under a write
//! load, resumed after SIGKILL, on demand, and as the way back from a purged binlog. The final
//! state per key is computed from the lake's records and compared with `SELECT`.

mod common;

use apache_avro::types::Value as AvroValue;
use common::*;
use mysql_async::prelude::Queryable;
use rand::Rng;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const TABLES: &[SnapshotTable] = &[
    SnapshotTable {
        name: "t_int",
        key: &["id"],
        columns: &["id", "v", "s"],
    },
    SnapshotTable {
        name: "t_str",
        key: &["code"],
        columns: &["code", "v", "s"],
    },
    SnapshotTable {
        name: "t_uuid",
        key: &["id"],
        columns: &["id", "v", "s"],
    },
    SnapshotTable {
        name: "t_comp",
        key: &["a", "b"],
        columns: &["a", "b", "v", "s"],
    },
];

async fn table_state(
    conn: &mut mysql_async::Conn,
    db: &str,
    table: &SnapshotTable,
) -> BTreeMap<String, String> {
    let sql = format!(
        "SELECT CONCAT_WS('|', {}), CONCAT_WS('|', {}) FROM `{db}`.`{}`",
        table.key.join(", "),
        table
            .columns
            .iter()
            .map(|c| format!("IFNULL({c}, 'NULL')"))
            .collect::<Vec<_>>()
            .join(", "),
        table.name
    );
    conn.query::<(String, String), _>(sql)
        .await
        .expect("select")
        .into_iter()
        .collect()
}

async fn assert_lake_equals_tables(
    work: &Workdir,
    server: &str,
    db: &str,
    tables: &[&SnapshotTable],
) {
    let mut conn = mysql_admin().await;
    for table in tables {
        let expected = table_state(&mut conn, db, table).await;
        let found = lake_state(work, &format!("{server}.{db}.{}", table.name), table);
        assert_same_state(table, &expected, &found);
    }
}

async fn create_tables(db: &str, rows: usize) {
    let mut admin = mysql_admin().await;
    admin
        .query_drop(format!(
            "CREATE DATABASE `{db}`;
             CREATE TABLE `{db}`.t_int (id INT PRIMARY KEY, v INT NOT NULL, s VARCHAR(40));
             CREATE TABLE `{db}`.t_str (code VARCHAR(40) PRIMARY KEY, v INT NOT NULL, s VARCHAR(40));
             CREATE TABLE `{db}`.t_uuid (id UUID PRIMARY KEY, v INT NOT NULL, s VARCHAR(40));
             CREATE TABLE `{db}`.t_comp (a INT, b VARCHAR(20), v INT NOT NULL, s VARCHAR(40), PRIMARY KEY (a, b));
             INSERT INTO `{db}`.t_int SELECT seq, 0, CONCAT('row ', seq) FROM `{db}`.seq_1_to_{rows};
             INSERT INTO `{db}`.t_str SELECT CONCAT('k', LPAD(seq, 6, '0')), 0, 'x' FROM `{db}`.seq_1_to_{rows};
             INSERT INTO `{db}`.t_uuid SELECT UUID(), 0, 'x' FROM `{db}`.seq_1_to_{rows};
             INSERT INTO `{db}`.t_comp SELECT seq DIV 10, CONCAT('b', seq MOD 10), 0, 'x' FROM `{db}`.seq_1_to_{rows};"
        ))
        .await
        .unwrap();
}

/// Random inserts, updates (including key changes) and deletes over the four tables.
async fn write_load(db: String, stop: Arc<AtomicBool>) -> u64 {
    let mut conn = mysql_admin().await;
    let mut statements = 0u64;
    let mut next = 1_000_000i64;
    while !stop.load(Ordering::SeqCst) {
        let table = TABLES[rand::rng().random_range(0..TABLES.len())].name;
        let choice = rand::rng().random_range(0..10);
        next += 1;
        let sql = match (table, choice) {
            (_, 0..=4) => format!("UPDATE `{db}`.{table} SET v = v + 1, s = 'updated' ORDER BY RAND() LIMIT 3"),
            (_, 5) => format!("DELETE FROM `{db}`.{table} ORDER BY RAND() LIMIT 1"),
            ("t_int", 6) => format!("UPDATE `{db}`.t_int SET id = id + 5000000 WHERE id < 5000000 ORDER BY RAND() LIMIT 1"),
            // spread over the key range, so rows land ahead of and behind the copy; a key that
            // exists already is skipped (as on PostgreSQL), not an error
            ("t_int", _) => format!("INSERT IGNORE INTO `{db}`.t_int VALUES ({}, 1, 'new')", rand::rng().random_range(1..3000) * 1000 + next % 1000),
            ("t_str", _) => format!("INSERT IGNORE INTO `{db}`.t_str VALUES ('k{:06}x{next}', 1, 'new')", rand::rng().random_range(1..3000)),
            ("t_uuid", _) => format!("INSERT INTO `{db}`.t_uuid VALUES (UUID(), 1, 'new')"),
            _ => format!("INSERT IGNORE INTO `{db}`.t_comp VALUES ({}, 'n{next}', 1, 'new')", rand::rng().random_range(0..300)),
        };
        conn.query_drop(sql).await.expect("write");
        statements += 1;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    statements
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_initial_snapshot_under_load_equals_the_tables() {
    let db = unique("hw_snap");
    create_tables(&db, 2000).await;
    let work = Workdir::new();
    work.mysql_config(
        "snap",
        &db,
        "snapshot = \"initial\"\nsnapshot_chunk_size = 150",
        "",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_load(db.clone(), stop.clone()));
    let headwater = work.spawn();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    let statements = writer.await.unwrap();
    assert!(statements > 100, "the load ran ({statements} statements)");
    stop_gracefully(headwater);
    work.catch_up();

    let tables: Vec<&SnapshotTable> = TABLES.iter().collect();
    assert_lake_equals_tables(&work, "snap", &db, &tables).await;
    let records = read_stream(&work.lake(), &format!("snap.{db}.t_int"));
    let copied = records.iter().filter(|r| op(r) == "r").count();
    assert!(copied > 1000, "most rows came from the copy ({copied})");
    let snapshot_field = |r: &AvroValue| render(field(field(r, "source"), "snapshot"));
    assert!(records
        .iter()
        .filter(|r| op(r) == "r")
        .all(|r| snapshot_field(r) != "false"));
    assert!(records
        .iter()
        .filter(|r| op(r) != "r")
        .all(|r| snapshot_field(r) == "false"));
    let mut firsts = 0;
    for table in TABLES {
        let records = read_stream(&work.lake(), &format!("snap.{db}.{}", table.name));
        assert_debezium_times_and_connector(&records, "mariadb");
        let markers = snapshot_markers(&records);
        let first = |m: &str| markers.get(m).copied().unwrap_or(0);
        firsts += first("first");
        assert_eq!(
            first("first") + first("first_in_data_collection"),
            1,
            "one first row per table: {markers:?}"
        );
        assert!(first("last") + first("last_in_data_collection") <= 1);
    }
    assert_eq!(firsts, 1, "one first row in the whole snapshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_killed_midway_resumes_from_the_last_durable_chunk() {
    let db = unique("hw_snapkill");
    let mut admin = mysql_admin().await;
    admin
        .query_drop(format!(
            "CREATE DATABASE `{db}`; CREATE TABLE `{db}`.t_int (id INT PRIMARY KEY, v INT NOT NULL, s VARCHAR(40));
             INSERT INTO `{db}`.t_int SELECT seq, 0, REPEAT('p', 30) FROM `{db}`.seq_1_to_60000"
        ))
        .await
        .unwrap();
    let work = Workdir::new();
    work.mysql_config(
        "snapkill",
        &db,
        "snapshot = \"initial\"\nsnapshot_chunk_size = 100",
        "",
    );
    let stream = format!("snapkill.{db}.t_int");
    // Hold the first chunk's read on a lock, pause the copy meanwhile, then let the one chunk
    // through: the kill lands in the middle of the table whatever the machine's speed.
    let mut holder = mysql_admin().await;
    holder
        .query_drop(format!("LOCK TABLES `{db}`.t_int WRITE"))
        .await
        .unwrap();
    let mut headwater = work.spawn();
    mysql_wait_for_blocked_read(&db).await;
    work.pause_backfills();
    holder.query_drop("UNLOCK TABLES").await.unwrap();
    wait_until(
        Duration::from_secs(60),
        "the chunk read before the pause in the lake",
        || read_stream(&work.lake(), &stream).len() >= 100,
    );
    headwater.kill().unwrap();
    headwater.wait().unwrap();
    let before_restart = read_stream(&work.lake(), &stream).len();
    assert_eq!(before_restart, 100, "one chunk copied before the kill");
    let offsets = work.headwater(&["offsets"]);
    let offsets = String::from_utf8_lossy(&offsets.stdout);
    assert!(
        offsets.contains("\"backfill\"") && offsets.contains("t_int"),
        "the checkpoint carries the copy's progress: {offsets}"
    );
    assert!(
        offsets.contains("of ~") && offsets.contains("rows/s") && offsets.contains("ETA"),
        "progress a person can read: rows of the estimate, rate, ETA: {offsets}"
    );
    assert!(
        offsets.contains("\"backfills_paused\": true"),
        "the pause holds across restarts: {offsets}"
    );
    admin
        .query_drop(format!(
            "UPDATE `{db}`.t_int SET v = 7 WHERE id IN (1, 59999); DELETE FROM `{db}`.t_int WHERE id = 60000"
        ))
        .await
        .unwrap();
    // paused, a catch-up streams the changes and leaves the copy where it is
    work.catch_up();
    let copied = read_stream(&work.lake(), &stream)
        .iter()
        .filter(|r| op(r) == "r")
        .count();
    assert_eq!(copied, 100, "no chunk while paused");
    work.resume_backfills();
    work.catch_up();
    let records = read_stream(&work.lake(), &stream);
    let copied = records.iter().filter(|r| op(r) == "r").count();
    assert!(
        (59_999..=60_000).contains(&copied),
        "each row copied exactly once across the crash (the lake is exactly-once): {copied}"
    );
    let markers = snapshot_markers(&records);
    assert_eq!(
        markers,
        [("first", 1), ("last", 1), ("true", copied - 2)]
            .map(|(m, n)| (m.to_string(), n))
            .into(),
        "Debezium's snapshot markers, across the crash"
    );
    assert_lake_equals_tables(&work, "snapkill", &db, &[&TABLES[0]]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_asked_for_while_streaming_equals_the_table() {
    let db = unique("hw_backfill");
    create_tables(&db, 1500).await;
    let work = Workdir::new();
    work.mysql_config("bf", &db, "snapshot_chunk_size = 200", "");
    let headwater = work.spawn();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_load(db.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Only part of a table first, with a condition.
    let asked = work.headwater(&[
        "backfill",
        "--table",
        &format!("{db}.t_comp"),
        "--where",
        "a < 10",
    ]);
    assert!(
        asked.status.success(),
        "{}",
        String::from_utf8_lossy(&asked.stderr)
    );
    assert!(String::from_utf8_lossy(&asked.stdout).contains("running pipeline"));
    let comp = format!("bf.{db}.t_comp");
    wait_until(Duration::from_secs(30), "the partial backfill", || {
        read_stream(&work.lake(), &comp)
            .iter()
            .any(|r| op(r) == "r")
    });
    let asked = work.headwater(&["backfill", "--table", &format!("{db}.t_int")]);
    assert!(asked.status.success());
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    stop_gracefully(headwater);
    work.catch_up();

    assert_lake_equals_tables(&work, "bf", &db, &[&TABLES[0]]).await;
    let copied_comp: Vec<i64> = read_stream(&work.lake(), &comp)
        .iter()
        .filter(|r| op(r) == "r")
        .map(|r| avro_int(&image(r, "after").unwrap()["a"]))
        .collect();
    assert!(!copied_comp.is_empty());
    assert!(
        copied_comp.iter().all(|a| *a < 10),
        "only rows matching the condition were copied"
    );
    let marker = render(field(
        field(
            read_stream(&work.lake(), &format!("bf.{db}.t_int"))
                .iter()
                .find(|r| op(r) == "r")
                .unwrap(),
            "source",
        ),
        "snapshot",
    ));
    assert_eq!(marker, "incremental");
    let offsets = String::from_utf8_lossy(&work.headwater(&["offsets"]).stdout).to_string();
    assert!(
        offsets.contains("\"backfill_requests_waiting\": []"),
        "accepted requests are forgotten: {offsets}"
    );

    // Bad requests are refused with the fix.
    let bad = work.headwater(&["backfill", "--table", &format!("{db}.nope")]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("does not exist"));
    let bad = work.headwater(&[
        "backfill",
        "--table",
        &format!("{db}.t_int"),
        "--where",
        "no_such_column = 1",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("does not work"));
}

#[test]
fn a_purged_binlog_with_when_needed_recovers_by_copying_the_tables() {
    let server = PrivateMariadb::start(1);
    server.sql("CREATE DATABASE shop; CREATE TABLE shop.t (id BIGINT PRIMARY KEY, v INT NOT NULL DEFAULT 0)");
    let work = Workdir::new();
    work.mysql_config_for(
        &server.url(),
        "heal",
        "shop",
        "snapshot = \"when_needed\"",
        "",
    );
    server.sql("INSERT INTO shop.t (id) SELECT seq FROM shop.seq_1_to_10");
    work.catch_up();
    assert_eq!(read_stream(&work.lake(), "heal.shop.t").len(), 10);
    // Stopped; changes happen and their binlogs are purged before Headwater returns.
    server.sql("INSERT INTO shop.t (id) SELECT seq FROM shop.seq_11_to_30");
    server.sql("UPDATE shop.t SET v = 5 WHERE id <= 3; DELETE FROM shop.t WHERE id = 30");
    server.sql("FLUSH BINARY LOGS");
    server.sql("INSERT INTO shop.t (id) SELECT seq FROM shop.seq_31_to_40");
    server.sql("FLUSH BINARY LOGS");
    server.purge_binlogs();

    let output = work.catch_up();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("THE STORED BINLOG POSITION IS GONE"),
        "{stderr}"
    );
    let mut state = BTreeMap::new();
    for record in read_stream(&work.lake(), "heal.shop.t") {
        match op(&record).as_str() {
            "d" => {
                state.remove(&avro_int(&image(&record, "before").unwrap()["id"]));
            }
            _ => {
                let after = image(&record, "after").unwrap();
                state.insert(avro_int(&after["id"]), avro_int(&after["v"]));
            }
        }
    }
    let expected: BTreeMap<i64, i64> = (1..=40)
        .filter(|id| *id != 30)
        .map(|id| (id, if id <= 3 { 5 } else { 0 }))
        .collect();
    assert_eq!(state, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_change_in_the_middle_of_a_copy_rereads_the_chunk_with_the_new_columns() {
    let db = unique("hw_snapddl");
    let mut admin = mysql_admin().await;
    admin
        .query_drop(format!(
            "CREATE DATABASE `{db}`; CREATE TABLE `{db}`.t_int (id INT PRIMARY KEY, v INT NOT NULL, s VARCHAR(40));
             INSERT INTO `{db}`.t_int SELECT seq, 0, 'x' FROM `{db}`.seq_1_to_40000"
        ))
        .await
        .unwrap();
    let work = Workdir::new();
    work.mysql_config(
        "snapddl",
        &db,
        "snapshot = \"initial\"\nsnapshot_chunk_size = 100",
        "",
    );
    let stream = format!("snapddl.{db}.t_int");
    // Hold the copy: its first chunk's SELECT waits for this lock, and the schema changes while
    // it waits, so the change lands inside the chunk's window whatever the machine's speed.
    let mut holder = mysql_admin().await;
    holder
        .query_drop(format!("LOCK TABLES `{db}`.t_int WRITE"))
        .await
        .unwrap();
    let headwater = work.spawn();
    mysql_wait_for_blocked_read(&db).await;
    holder
        .query_drop(format!(
            "ALTER TABLE `{db}`.t_int ADD COLUMN extra INT NOT NULL DEFAULT 5; UPDATE `{db}`.t_int SET v = 1 WHERE id IN (1, 39999); UNLOCK TABLES"
        ))
        .await
        .unwrap();
    // the first chunk was discarded and copying went on: rows copied from now on were read
    // after the change
    wait_until(
        Duration::from_secs(60),
        "rows copied after the change",
        || {
            read_stream(&work.lake(), &stream)
                .iter()
                .filter(|r| op(r) == "r")
                .count()
                >= 100
        },
    );
    stop_gracefully(headwater);
    work.catch_up();
    let records = read_stream(&work.lake(), &stream);
    // the chunk read before the change was discarded and read again, so every copied row has
    // the new column
    assert_copied_rows_have(&records, "extra", 5);
    let copied = records.iter().filter(|r| op(r) == "r").count();
    assert_eq!(
        copied, 40000,
        "every row copied once, the discarded chunk read again"
    );
    assert_lake_equals_tables(&work, "snapddl", &db, &[&TABLES[0]]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signal_table_watermarks_keep_a_copy_under_load_consistent() {
    let db = unique("hw_snapsig");
    create_tables(&db, 1500).await;
    let work = Workdir::new();
    work.mysql_config(
        "snapsig",
        &db,
        &format!("snapshot = \"initial\"\nsnapshot_chunk_size = 150\nwatermarks = \"signal_table\"\nsignal_table = \"{db}.hw_signal\""),
        "",
    );
    // preflight names the missing table and how to make it
    let checked = work.headwater(&["check"]);
    let out = String::from_utf8_lossy(&checked.stdout).to_string();
    assert!(!checked.status.success(), "{out}");
    assert!(
        out.contains("CREATE TABLE") && out.contains("hw_signal"),
        "names the statement: {out}"
    );
    let mut admin = mysql_admin().await;
    admin
        .query_drop(format!(
            "CREATE TABLE `{db}`.hw_signal (id INT UNSIGNED PRIMARY KEY, watermark VARCHAR(128) NOT NULL);
             GRANT INSERT, DELETE ON `{db}`.hw_signal TO 'headwater'@'%';
             GRANT INSERT, DELETE ON `{db}`.hw_signal TO 'headwater'@'localhost'"
        ))
        .await
        .unwrap();
    let checked = work.headwater(&["check"]);
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stdout)
    );

    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_load(db.clone(), stop.clone()));
    let headwater = work.spawn();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    stop_gracefully(headwater);
    work.catch_up();
    let tables: Vec<&SnapshotTable> = TABLES.iter().collect();
    assert_lake_equals_tables(&work, "snapsig", &db, &tables).await;
    assert!(
        !work.lake().join(format!("snapsig.{db}.hw_signal")).exists(),
        "the signal table itself is not captured"
    );
}

//! Snapshots and backfills from PostgreSQL: chunked copies next to the stream, under a write
//! load, resumed after SIGKILL, on demand, and as the way back from a lost slot. The final
//! state per key is computed from the lake's records and compared with `SELECT`.

mod common;

use common::*;
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
        name: "t_text",
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
    client: &tokio_postgres::Client,
    schema: &str,
    table: &SnapshotTable,
) -> BTreeMap<String, String> {
    let sql = format!(
        "SELECT concat_ws('|', {}), concat_ws('|', {}) FROM {schema}.{}",
        table.key.join(", "),
        table
            .columns
            .iter()
            .map(|c| format!("coalesce({c}::text, 'NULL')"))
            .collect::<Vec<_>>()
            .join(", "),
        table.name
    );
    client
        .query(&sql, &[])
        .await
        .expect("select")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

async fn assert_lake_equals_tables(
    work: &Workdir,
    server: &str,
    schema: &str,
    tables: &[&SnapshotTable],
) {
    let client = postgres_admin().await;
    for table in tables {
        let expected = table_state(&client, schema, table).await;
        let found = lake_state(work, &format!("{server}.{schema}.{}", table.name), table);
        assert_same_state(table, &expected, &found);
    }
}

async fn create_tables(prefix: &str, rows: usize) -> String {
    let schema = unique(prefix);
    postgres_admin()
        .await
        .batch_execute(&format!("CREATE SCHEMA {schema} AUTHORIZATION headwater"))
        .await
        .unwrap();
    let client = postgres_connect(&endpoint("HEADWATER_POSTGRES_URL")).await;
    client
        .batch_execute(&format!(
            "CREATE TABLE {schema}.t_int (id int PRIMARY KEY, v int NOT NULL, s text);
             CREATE TABLE {schema}.t_text (code text PRIMARY KEY, v int NOT NULL, s text);
             CREATE TABLE {schema}.t_uuid (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), v int NOT NULL, s text);
             CREATE TABLE {schema}.t_comp (a int, b text, v int NOT NULL, s text, PRIMARY KEY (a, b));
             INSERT INTO {schema}.t_int SELECT g, 0, 'row ' || g FROM generate_series(1, {rows}) g;
             INSERT INTO {schema}.t_text SELECT 'k' || lpad(g::text, 6, '0'), 0, 'x' FROM generate_series(1, {rows}) g;
             INSERT INTO {schema}.t_uuid (v, s) SELECT 0, 'x' FROM generate_series(1, {rows}) g;
             INSERT INTO {schema}.t_comp SELECT g / 10, 'b' || (g % 10), 0, 'x' FROM generate_series(1, {rows}) g;"
        ))
        .await
        .unwrap();
    schema
}

/// Creates the workdir's publication and slot up front, and holds `schema.t_int` with an
/// ACCESS EXCLUSIVE lock in an open transaction of the returned session (commit it to let
/// go): made before Headwater starts, the lock would otherwise hold up the slot's creation
/// too, as that waits for open transactions.
async fn hold_table(work: &Workdir, schema: &str) -> tokio_postgres::Client {
    let slot = work.slot();
    let client = postgres_connect(&endpoint("HEADWATER_POSTGRES_URL")).await;
    client
        .batch_execute(&format!(
            "CREATE PUBLICATION {slot} FOR TABLE {schema}.t_int; ANALYZE {schema}.t_int"
        ))
        .await
        .unwrap();
    client
        .query(
            "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&slot],
        )
        .await
        .unwrap();
    let holder = postgres_connect(&endpoint("HEADWATER_POSTGRES_URL")).await;
    holder
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE {schema}.t_int IN ACCESS EXCLUSIVE MODE"
        ))
        .await
        .unwrap();
    holder
}

/// Random inserts, updates (including key changes) and deletes over the four tables.
async fn write_load(schema: String, stop: Arc<AtomicBool>) -> u64 {
    let client = postgres_connect(&endpoint("HEADWATER_POSTGRES_URL")).await;
    let mut statements = 0u64;
    let mut next = 1_000_000i64;
    while !stop.load(Ordering::SeqCst) {
        let table = TABLES[rand::rng().random_range(0..TABLES.len())].name;
        let choice = rand::rng().random_range(0..10);
        next += 1;
        let pick = |n: u32| {
            format!("ctid IN (SELECT ctid FROM {schema}.{table} ORDER BY random() LIMIT {n})")
        };
        let sql = match (table, choice) {
            (_, 0..=4) => format!("UPDATE {schema}.{table} SET v = v + 1, s = 'updated' WHERE {}", pick(3)),
            (_, 5) => format!("DELETE FROM {schema}.{table} WHERE {}", pick(1)),
            ("t_int", 6) => format!("UPDATE {schema}.t_int SET id = id + 5000000 WHERE id < 5000000 AND {}", pick(1)),
            ("t_int", _) => format!("INSERT INTO {schema}.t_int VALUES ({}, 1, 'new') ON CONFLICT DO NOTHING", rand::rng().random_range(1..3000) * 1000 + next % 1000),
            ("t_text", _) => format!("INSERT INTO {schema}.t_text VALUES ('k{:06}x{next}', 1, 'new') ON CONFLICT DO NOTHING", rand::rng().random_range(1..3000)),
            ("t_uuid", _) => format!("INSERT INTO {schema}.t_uuid (v, s) VALUES (1, 'new')"),
            _ => format!("INSERT INTO {schema}.t_comp VALUES ({}, 'n{next}', 1, 'new') ON CONFLICT DO NOTHING", rand::rng().random_range(0..300)),
        };
        client.batch_execute(&sql).await.expect("write");
        statements += 1;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    statements
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_initial_snapshot_under_load_equals_the_tables() {
    let schema = create_tables("hw_psnap", 2000).await;
    let work = Workdir::new();
    work.postgres_config(
        "psnap",
        &schema,
        "snapshot = \"initial\"\nsnapshot_chunk_size = 150",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_load(schema.clone(), stop.clone()));
    let headwater = work.spawn();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    let statements = writer.await.unwrap();
    assert!(statements > 100, "the load ran ({statements} statements)");
    stop_gracefully(headwater);
    work.catch_up();
    // five transactions of their own, streamed after the copy, for `source.sequence` below
    let client = postgres_connect(&endpoint("HEADWATER_POSTGRES_URL")).await;
    for n in 1..=5 {
        client
            .batch_execute(&format!(
                "INSERT INTO {schema}.t_int VALUES ({}, {n}, 'sequence')",
                900_000_000 + n
            ))
            .await
            .unwrap();
    }
    work.catch_up();

    let tables: Vec<&SnapshotTable> = TABLES.iter().collect();
    assert_lake_equals_tables(&work, "psnap", &schema, &tables).await;
    let records = read_stream(&work.lake(), &format!("psnap.{schema}.t_int"));
    let copied = records.iter().filter(|r| op(r) == "r").count();
    assert!(copied > 1000, "most rows came from the copy ({copied})");
    assert!(records
        .iter()
        .filter(|r| op(r) == "r")
        .all(|r| render(field(field(r, "source"), "snapshot")) != "false"));
    assert_debezium_times_and_connector(&records, "postgresql");
    // streamed changes carry Debezium's `sequence`: [last commit LSN, this change's LSN]. A
    // change's LSN may be below the previous transaction's commit (transactions interleave in
    // the WAL and arrive in commit order), but the pair never decreases, which is what consumers
    // order and deduplicate by (a key-changing update's delete and create share their LSN).
    let mut previous: Option<(i64, i64)> = None;
    let mut first_halves = Vec::new();
    for record in records.iter().filter(|r| op(r) != "r") {
        let source = field(record, "source");
        let sequence: Vec<Option<String>> =
            serde_json::from_str(&render(field(source, "sequence"))).expect("a JSON array");
        let lsn = avro_int(unwrap_union(field(source, "lsn")).unwrap());
        assert_eq!(sequence.len(), 2);
        assert_eq!(sequence[1], Some(lsn.to_string()), "{record:?}");
        // null until the stream has seen a commit (after each restart above)
        let first = sequence[0].as_ref().map(|c| c.parse::<i64>().unwrap());
        if let Some(first) = first {
            let pair = (first, lsn);
            if let Some(previous) = previous {
                assert!(pair >= previous, "sequence {pair:?} after {previous:?}");
            }
            previous = Some(pair);
        }
        first_halves.push(first);
    }
    // the five transactions of one row each, the last changes: from the second on, each names
    // the commit of the one before, so the first halves strictly grow
    let last_five = &first_halves[first_halves.len().saturating_sub(5)..];
    assert_eq!(last_five.len(), 5);
    for pair in last_five[1..].windows(2) {
        assert!(matches!(pair, [Some(a), Some(b)] if a < b), "{last_five:?}");
    }
    assert!(last_five[1].is_some(), "{last_five:?}");
    postgres_cleanup(&schema, &work).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_killed_midway_resumes_from_the_last_durable_chunk() {
    let schema = unique("hw_psnapkill");
    postgres_admin()
        .await
        .batch_execute(&format!("CREATE SCHEMA {schema} AUTHORIZATION headwater"))
        .await
        .unwrap();
    let client = postgres_connect(&endpoint("HEADWATER_POSTGRES_URL")).await;
    client
        .batch_execute(&format!(
            "CREATE TABLE {schema}.t_int (id int PRIMARY KEY, v int NOT NULL, s text);
             INSERT INTO {schema}.t_int SELECT g, 0, repeat('p', 30) FROM generate_series(1, 60000) g"
        ))
        .await
        .unwrap();
    let work = Workdir::new();
    work.postgres_config(
        "psnapkill",
        &schema,
        "snapshot = \"initial\"\nsnapshot_chunk_size = 100",
    );
    let stream = format!("psnapkill.{schema}.t_int");
    // Hold the first chunk's read on a lock, pause the copy meanwhile, then let the one chunk
    // through: the kill lands in the middle of the table whatever the machine's speed.
    let holder = hold_table(&work, &schema).await;
    let mut headwater = work.spawn();
    postgres_wait_for_blocked_read(&schema).await;
    work.pause_backfills();
    holder.batch_execute("COMMIT").await.unwrap();
    wait_until(
        Duration::from_secs(60),
        "the chunk read before the pause in the lake",
        || read_stream(&work.lake(), &stream).len() >= 100,
    );
    headwater.kill().unwrap();
    headwater.wait().unwrap();
    assert_eq!(
        read_stream(&work.lake(), &stream).len(),
        100,
        "one chunk copied before the kill"
    );
    let offsets = String::from_utf8_lossy(&work.headwater(&["offsets"]).stdout).to_string();
    assert!(
        offsets.contains("\"backfill\"") && offsets.contains("t_int"),
        "{offsets}"
    );
    assert!(
        offsets.contains("of ~") && offsets.contains("rows/s") && offsets.contains("ETA"),
        "progress a person can read: rows of the estimate, rate, ETA: {offsets}"
    );
    assert!(
        offsets.contains("\"backfills_paused\": true"),
        "the pause holds across restarts: {offsets}"
    );
    client
        .batch_execute(&format!(
            "UPDATE {schema}.t_int SET v = 7 WHERE id IN (1, 59999); DELETE FROM {schema}.t_int WHERE id = 60000"
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
        "each row copied exactly once across the crash: {copied}"
    );
    assert_eq!(
        snapshot_markers(&records),
        [("first", 1), ("last", 1), ("true", copied - 2)]
            .map(|(m, n)| (m.to_string(), n))
            .into(),
        "Debezium's snapshot markers, across the crash"
    );
    assert_lake_equals_tables(&work, "psnapkill", &schema, &[&TABLES[0]]).await;
    postgres_cleanup(&schema, &work).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_asked_for_while_streaming_equals_the_table() {
    let schema = create_tables("hw_pbf", 1500).await;
    let work = Workdir::new();
    work.postgres_config("pbf", &schema, "snapshot_chunk_size = 200");
    // the first start creates the slot; rows before it are not in the stream
    work.catch_up();
    let headwater = work.spawn();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_load(schema.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let asked = work.headwater(&[
        "backfill",
        "--table",
        &format!("{schema}.t_comp"),
        "--where",
        "a < 10",
    ]);
    assert!(
        asked.status.success(),
        "{}",
        String::from_utf8_lossy(&asked.stderr)
    );
    let asked = work.headwater(&["backfill", "--table", &format!("{schema}.t_int")]);
    assert!(asked.status.success());
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    stop_gracefully(headwater);
    work.catch_up();

    assert_lake_equals_tables(&work, "pbf", &schema, &[&TABLES[0]]).await;
    let copied_comp: Vec<i64> = read_stream(&work.lake(), &format!("pbf.{schema}.t_comp"))
        .iter()
        .filter(|r| op(r) == "r")
        .map(|r| avro_int(&image(r, "after").unwrap()["a"]))
        .collect();
    assert!(!copied_comp.is_empty());
    assert!(copied_comp.iter().all(|a| *a < 10));
    let bad = work.headwater(&[
        "backfill",
        "--table",
        &format!("{schema}.t_int"),
        "--where",
        "no_such_column = 1",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("does not work"));
    postgres_cleanup(&schema, &work).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_slot_with_when_needed_recovers_by_copying_the_tables() {
    let schema = create_tables("hw_pheal", 300).await;
    let work = Workdir::new();
    work.postgres_config("pheal", &schema, "snapshot = \"when_needed\"");
    work.catch_up();
    let admin = postgres_admin().await;
    admin
        .execute("SELECT pg_drop_replication_slot($1)", &[&work.slot()])
        .await
        .unwrap();
    let client = postgres_connect(&endpoint("HEADWATER_POSTGRES_URL")).await;
    client
        .batch_execute(&format!(
            "UPDATE {schema}.t_int SET v = 9 WHERE id <= 5; INSERT INTO {schema}.t_int VALUES (7777, 1, 'gap')"
        ))
        .await
        .unwrap();
    let output = work.catch_up();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("POSITION IS LOST"), "{stderr}");
    let tables: Vec<&SnapshotTable> = TABLES.iter().collect();
    assert_lake_equals_tables(&work, "pheal", &schema, &tables).await;
    postgres_cleanup(&schema, &work).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_change_in_the_middle_of_a_copy_rereads_the_chunk_with_the_new_columns() {
    let schema = unique("hw_psnapddl");
    postgres_admin()
        .await
        .batch_execute(&format!("CREATE SCHEMA {schema} AUTHORIZATION headwater"))
        .await
        .unwrap();
    let client = postgres_connect(&endpoint("HEADWATER_POSTGRES_URL")).await;
    client
        .batch_execute(&format!(
            "CREATE TABLE {schema}.t_int (id int PRIMARY KEY, v int NOT NULL, s text);
             INSERT INTO {schema}.t_int SELECT g, 0, 'x' FROM generate_series(1, 40000) g"
        ))
        .await
        .unwrap();
    let work = Workdir::new();
    work.postgres_config(
        "psnapddl",
        &schema,
        "snapshot = \"initial\"\nsnapshot_chunk_size = 100",
    );
    let stream = format!("psnapddl.{schema}.t_int");
    // Hold the copy: its first chunk's read waits for this lock, and the schema changes while
    // it waits, so the change lands inside the chunk's window whatever the machine's speed.
    let holder = hold_table(&work, &schema).await;
    let headwater = work.spawn();
    postgres_wait_for_blocked_read(&schema).await;
    holder
        .batch_execute(&format!(
            "ALTER TABLE {schema}.t_int ADD COLUMN extra int NOT NULL DEFAULT 5; UPDATE {schema}.t_int SET v = 1 WHERE id IN (1, 39999); COMMIT"
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
    assert_lake_equals_tables(&work, "psnapddl", &schema, &[&TABLES[0]]).await;
    postgres_cleanup(&schema, &work).await;
}

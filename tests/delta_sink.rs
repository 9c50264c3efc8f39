//! The Delta sink against both sources, read back by python `deltalake` and DuckDB: under a
//! random insert/update/key-change/delete load that starts before the initial snapshot, every
//! mirror equals the source table and every changelog holds each change once; SIGKILL at random
//! moments changes neither.

mod common;

use common::delta::*;
use common::*;
use mysql_async::prelude::Queryable;
use rand::Rng;
use serde_json::{json, Value as Json};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const CATCH_UP: Duration = Duration::from_secs(180);
/// Ids of the deterministic phase, above anything the random load makes.
const PHASE_TWO: i64 = 1_000_000_000;

const COLUMNS: [&str; 4] = ["id", "v", "amount", "note"];

/// Random changes as SQL both servers accept; `v` is a counter, unique per insert or update,
/// so the changelog can be checked for repeats.
struct RandomLoad {
    table: String,
    ids: Vec<i64>,
    next_id: i64,
    counter: i64,
}

impl RandomLoad {
    fn new(table: String, initial_rows: i64) -> Self {
        RandomLoad {
            table,
            ids: (0..initial_rows).collect(),
            next_id: initial_rows,
            counter: initial_rows,
        }
    }

    fn initial_insert(&self) -> String {
        let values: Vec<String> = self
            .ids
            .iter()
            .map(|id| format!("({id}, {id}, {id}.25, 'n{id}')"))
            .collect();
        format!(
            "INSERT INTO {} (id, v, amount, note) VALUES {}",
            self.table,
            values.join(", ")
        )
    }

    /// One transaction of 1–4 random changes.
    fn transaction(&mut self) -> Vec<String> {
        let mut rng = rand::rng();
        let mut statements = Vec::new();
        for _ in 0..rng.random_range(1..=4) {
            self.counter += 1;
            let v = self.counter;
            let pick = if self.ids.is_empty() {
                0
            } else {
                rng.random_range(0..10)
            };
            let at = if self.ids.is_empty() {
                0
            } else {
                rng.random_range(0..self.ids.len())
            };
            let sql = match pick {
                0..=3 => {
                    let id = self.next_id;
                    self.next_id += 1;
                    self.ids.push(id);
                    let note = if v % 7 == 0 {
                        "NULL".to_string()
                    } else {
                        format!("'n{v}'")
                    };
                    format!(
                        "INSERT INTO {} (id, v, amount, note) VALUES ({id}, {v}, {}.{:02}, {note})",
                        self.table,
                        v % 10_000,
                        v % 100
                    )
                }
                4..=6 => format!(
                    "UPDATE {} SET v = {v}, amount = amount + 1.01 WHERE id = {}",
                    self.table, self.ids[at]
                ),
                7 => {
                    let new_id = self.next_id;
                    self.next_id += 1;
                    let old = std::mem::replace(&mut self.ids[at], new_id);
                    format!(
                        "UPDATE {} SET id = {new_id}, v = {v} WHERE id = {old}",
                        self.table
                    )
                }
                _ => {
                    let id = self.ids.swap_remove(at);
                    format!("DELETE FROM {} WHERE id = {id}", self.table)
                }
            };
            statements.push(sql);
        }
        statements
    }
}

enum Db {
    Postgres(tokio_postgres::Client),
    Mysql(mysql_async::Conn),
}

impl Db {
    async fn execute(&mut self, statements: &[String]) {
        let body = statements.join("; ");
        match self {
            Db::Postgres(client) => client
                .batch_execute(&format!("BEGIN; {body}; COMMIT"))
                .await
                .expect("load transaction"),
            Db::Mysql(conn) => conn
                .query_drop(format!("START TRANSACTION; {body}; COMMIT"))
                .await
                .expect("load transaction"),
        }
    }

    /// The source table's rows rendered as the reader script renders Delta values.
    async fn rows(&mut self, table: &str) -> Vec<Vec<Json>> {
        let mut rows: Vec<Vec<Json>> = match self {
            Db::Postgres(client) => client
                .query(
                    &format!("SELECT id, v::bigint, amount::text, note FROM {table}"),
                    &[],
                )
                .await
                .expect("source rows")
                .iter()
                .map(|r| {
                    let note: Option<String> = r.get(3);
                    vec![
                        json!(r.get::<_, i64>(0)),
                        json!(r.get::<_, i64>(1)),
                        json!(r.get::<_, String>(2)),
                        json!(note),
                    ]
                })
                .collect(),
            Db::Mysql(conn) => {
                let rows: Vec<(i64, i64, String, Option<String>)> = conn
                    .query(format!(
                        "SELECT id, v, CAST(amount AS CHAR), note FROM {table}"
                    ))
                    .await
                    .expect("source rows");
                rows.into_iter()
                    .map(|(id, v, amount, note)| {
                        vec![json!(id), json!(v), json!(amount), json!(note)]
                    })
                    .collect()
            }
        };
        rows.sort_by_key(|r| serde_json::to_string(r).unwrap_or_default());
        rows
    }
}

async fn run_load(
    mut db: Db,
    mut load: RandomLoad,
    transactions: usize,
    stop: Arc<AtomicBool>,
) -> (Db, RandomLoad) {
    let mut done = 0;
    while done < transactions || !stop.load(Ordering::SeqCst) {
        if stop.load(Ordering::SeqCst) && done >= transactions {
            break;
        }
        let statements = load.transaction();
        db.execute(&statements).await;
        done += 1;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    (db, load)
}

/// Waits until both readers see the mirror equal to the source table.
async fn assert_mirror_equals_source(db: &mut Db, table: &str, uri: &str) {
    let expected = db.rows(table).await;
    for reader in READERS {
        let read = wait_for_delta(
            reader,
            uri,
            &[],
            CATCH_UP,
            &format!(
                "the mirror read by {reader} to equal the source ({} rows)",
                expected.len()
            ),
            |rows| rows.project(&COLUMNS) == expected,
        );
        assert_eq!(read.project(&COLUMNS).len(), expected.len());
    }
}

/// Checks the changelog holds no change twice (each insert or update wrote a new `v`).
fn assert_changelog_has_no_repeats(uri: &str) -> DeltaRows {
    let changelog = read_delta("deltalake", uri);
    let (op, v) = (changelog.column("__op"), changelog.column("v"));
    let mut seen = HashSet::new();
    for row in &changelog.rows {
        let random_phase = row[changelog.column("id")]
            .as_i64()
            .is_some_and(|id| id < PHASE_TWO);
        if random_phase && (row[op] == json!("c") || row[op] == json!("u")) {
            assert!(
                seen.insert(row[v].clone()),
                "change with v = {} appears twice in the changelog",
                row[v]
            );
        }
    }
    changelog
}

/// A deterministic batch after the random phase: its changes appear in the changelog exactly.
async fn phase_two(db: &mut Db, table: &str, changelog_uri: &str) {
    let mut statements = Vec::new();
    let mut expected = Vec::new();
    for n in 0..30 {
        let id = PHASE_TWO + n;
        statements.push(format!(
            "INSERT INTO {table} (id, v, amount, note) VALUES ({id}, 1, 1.00, 'p')"
        ));
        expected.push(vec![json!("c"), json!(id)]);
    }
    db.execute(&statements).await;
    let mut statements = Vec::new();
    for n in 0..10 {
        let id = PHASE_TWO + n;
        statements.push(format!("UPDATE {table} SET v = 2 WHERE id = {id}"));
        expected.push(vec![json!("u"), json!(id)]);
        statements.push(format!("DELETE FROM {table} WHERE id = {}", id + 10));
        // (PostgreSQL's default replica identity sends only the key of a deleted row)
        expected.push(vec![json!("d"), json!(id + 10)]);
    }
    db.execute(&statements).await;
    expected.sort_by_key(|r| serde_json::to_string(r).unwrap_or_default());
    wait_for_delta(
        "deltalake",
        changelog_uri,
        &[],
        CATCH_UP,
        "the phase-two changes in the changelog",
        |rows| {
            let phase: Vec<Vec<Json>> = rows
                .project(&["__op", "id"])
                .into_iter()
                .filter(|r| r[1].as_i64().is_some_and(|id| id >= PHASE_TWO))
                .collect();
            phase == expected
        },
    );
}

async fn postgres_schema(prefix: &str) -> (String, Db) {
    let schema = unique(prefix);
    postgres_admin()
        .await
        .batch_execute(&format!("CREATE SCHEMA {schema} AUTHORIZATION headwater"))
        .await
        .unwrap();
    let client = postgres_connect(&endpoint("HEADWATER_POSTGRES_URL")).await;
    client
        .batch_execute(&format!(
            "CREATE TABLE {schema}.t (id bigint PRIMARY KEY, v bigint NOT NULL, amount numeric(12,2), note text)"
        ))
        .await
        .unwrap();
    (schema, Db::Postgres(client))
}

async fn postgres_cleanup(schema: &str, work: &Workdir) {
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

async fn mysql_database(prefix: &str) -> (String, Db) {
    let db = unique(prefix);
    let mut admin = mysql_admin().await;
    admin
        .query_drop(format!(
            "CREATE DATABASE `{db}`; CREATE TABLE `{db}`.t (id BIGINT PRIMARY KEY, v BIGINT NOT NULL, amount DECIMAL(12,2), note VARCHAR(100))"
        ))
        .await
        .unwrap();
    (db, Db::Mysql(admin))
}

/// Random load before and during the snapshot, then streaming; both readers, both tables.
async fn mirror_and_changelog_under_load(
    mut db: Db,
    namespace: &str,
    work: &Workdir,
    stream: &str,
) {
    let table = format!("{namespace}.t");
    let load = RandomLoad::new(table.clone(), 3000);
    db.execute(&[load.initial_insert()]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(run_load(db, load, 400, Arc::clone(&stop)));
    // the load runs before the pipeline starts and goes on during its snapshot
    tokio::time::sleep(Duration::from_millis(200)).await;
    let headwater = work.spawn();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let (mut db, load) = writer.await.expect("load");
    eprintln!("load made {} changes", load.counter - 3000);
    let mirror = work.delta_table("mirror", stream);
    let changelog = work.delta_table("changelog", stream);
    assert_mirror_equals_source(&mut db, &table, &mirror).await;
    phase_two(&mut db, &table, &changelog).await;
    assert_mirror_equals_source(&mut db, &table, &mirror).await;
    let rows = assert_changelog_has_no_repeats(&changelog);
    let duck = read_delta("duckdb", &changelog);
    assert_eq!(
        duck.project(&["__op", "id", "v", "amount", "note"]),
        rows.project(&["__op", "id", "v", "amount", "note"]),
        "both readers see the same changelog"
    );
    stop_gracefully(headwater);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_mirror_and_changelog_equal_the_source_under_a_random_load() {
    let (schema, db) = postgres_schema("hw_delta_pg").await;
    let work = Workdir::new();
    work.postgres_config("dpg", &schema, "snapshot = \"initial\"");
    work.use_delta_sink(None, "");
    mirror_and_changelog_under_load(db, &schema, &work, &format!("dpg.{schema}.t")).await;
    postgres_cleanup(&schema, &work).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_mirror_and_changelog_equal_the_source_under_a_random_load() {
    let (db_name, db) = mysql_database("hw_delta_my").await;
    let work = Workdir::new();
    work.mysql_config("dmy", &db_name, "snapshot = \"initial\"", "");
    work.use_delta_sink(None, "");
    mirror_and_changelog_under_load(db, &db_name, &work, &format!("dmy.{db_name}.t")).await;
    let _ = mysql_admin()
        .await
        .query_drop(format!("DROP DATABASE `{db_name}`"))
        .await;
}

/// SIGKILL at random moments under load, ×5: the mirror equals the source and the changelog
/// holds every update exactly once (per row, `v` runs 0, 1, 2, … with no gap or repeat).
async fn sigkill_under_load(mut db: Db, namespace: &str, work: &Workdir, stream: &str) {
    let table = format!("{namespace}.t");
    db.execute(&[format!(
        "INSERT INTO {table} (id, v, amount, note) VALUES (0, 0, 0, 'seed')"
    )])
    .await;
    work.catch_up();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let writer = tokio::spawn(async move {
        let mut next_id = 1i64;
        let mut transactions = 0u64;
        while !flag.load(Ordering::SeqCst) {
            let mut statements = Vec::new();
            let size = rand::rng().random_range(1..15);
            for _ in 0..size {
                statements.push(format!(
                    "INSERT INTO {table} (id, v, amount, note) VALUES ({next_id}, 0, 1.50, 'x')"
                ));
                next_id += 1;
            }
            let low = rand::rng().random_range(0..next_id);
            statements.push(format!(
                "UPDATE {table} SET v = v + 1 WHERE id BETWEEN {low} AND {}",
                low + 3
            ));
            db.execute(&statements).await;
            transactions += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        (db, transactions)
    });
    for _ in 0..5 {
        let mut child = work.spawn();
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(400..1800))).await;
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
    let (mut db, transactions) = writer.await.expect("writer");
    assert!(
        transactions > 20,
        "the load wrote too little ({transactions})"
    );
    work.catch_up();
    let mirror = work.delta_table("mirror", stream);
    assert_mirror_equals_source(&mut db, &format!("{namespace}.t"), &mirror).await;
    let changelog = read_delta("deltalake", &work.delta_table("changelog", stream));
    let (op, id, v) = (
        changelog.column("__op"),
        changelog.column("id"),
        changelog.column("v"),
    );
    let mut versions: HashMap<i64, Vec<i64>> = HashMap::new();
    for row in &changelog.rows {
        assert!(
            row[op] == json!("c") || row[op] == json!("u") || row[op] == json!("r"),
            "unexpected op {}",
            row[op]
        );
        let key = row[id].as_i64().expect("id");
        versions
            .entry(key)
            .or_default()
            .push(row[v].as_i64().expect("v"));
    }
    for row in db.rows(&format!("{namespace}.t")).await {
        let key = row[0].as_i64().expect("id");
        let last = row[1].as_i64().expect("v");
        let mut seen = versions
            .remove(&key)
            .unwrap_or_else(|| panic!("row {key} missing from the changelog"));
        seen.sort_unstable();
        assert_eq!(
            seen,
            (0..=last).collect::<Vec<_>>(),
            "row {key}: every version exactly once"
        );
    }
    assert!(
        versions.is_empty(),
        "changelog rows of keys the source never had: {versions:?}"
    );
    eprintln!(
        "{transactions} transactions, {} changelog rows, all exactly once",
        changelog.rows.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sigkill_under_load_keeps_mirror_and_changelog_exact() {
    let (schema, db) = postgres_schema("hw_delta_pgkill").await;
    let work = Workdir::new();
    work.postgres_config("dpgk", &schema, "snapshot = \"initial\"");
    work.use_delta_sink(None, "");
    sigkill_under_load(db, &schema, &work, &format!("dpgk.{schema}.t")).await;
    postgres_cleanup(&schema, &work).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_sigkill_under_load_keeps_mirror_and_changelog_exact() {
    let (db_name, db) = mysql_database("hw_delta_mykill").await;
    let work = Workdir::new();
    work.mysql_config("dmyk", &db_name, "snapshot = \"initial\"", "");
    work.use_delta_sink(None, "");
    sigkill_under_load(db, &db_name, &work, &format!("dmyk.{db_name}.t")).await;
    let _ = mysql_admin()
        .await
        .query_drop(format!("DROP DATABASE `{db_name}`"))
        .await;
}

/// Parquet files under a table's directory, live or not.
fn parquet_files_on_disk(dir: &str) -> usize {
    fn walk(dir: &std::path::Path, count: &mut usize) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, count);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                *count += 1;
            }
        }
    }
    let mut count = 0;
    walk(std::path::Path::new(dir), &mut count);
    count
}

/// A trickle of small commits: compaction keeps the live files per table bounded and the
/// vacuum deletes the files compaction replaced, while the mirror stays equal to the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickle_of_commits_is_compacted_and_vacuumed() {
    let (schema, mut db) = postgres_schema("hw_delta_trickle").await;
    let work = Workdir::new();
    work.postgres_config("dtr", &schema, "snapshot = \"initial\"");
    work.use_delta_sink(
        None,
        "commit_interval = \"20ms\"\ncompact_min_files = 4\nvacuum_interval = \"1s\"\nvacuum_retention = \"0s\"",
    );
    let table = format!("{schema}.t");
    db.execute(&[format!(
        "INSERT INTO {table} (id, v, amount, note) VALUES (0, 0, 0, 'seed')"
    )])
    .await;
    let headwater = work.spawn();
    let mirror = work.delta_table("mirror", &format!("dtr.{schema}.t"));
    let changelog = work.delta_table("changelog", &format!("dtr.{schema}.t"));
    let mut most_live = (0, 0);
    for n in 1..=60i64 {
        db.execute(&[
            format!("INSERT INTO {table} (id, v, amount, note) VALUES ({n}, {n}, 1.00, 't')"),
            format!("UPDATE {table} SET v = v + 1 WHERE id = {}", n / 2),
        ])
        .await;
        // each change waits for its own commit, so every one is a separate small file
        wait_for_delta(
            "deltalake",
            &changelog,
            &[],
            CATCH_UP,
            "the change's commit",
            |rows| {
                rows.rows
                    .iter()
                    .filter(|r| r[rows.column("id")] == json!(n))
                    .count()
                    == 1
            },
        );
        if n % 10 == 0 {
            let live = (
                read_delta("files", &mirror).rows.len(),
                read_delta("files", &changelog).rows.len(),
            );
            most_live = (most_live.0.max(live.0), most_live.1.max(live.1));
        }
    }
    assert_mirror_equals_source(&mut db, &table, &mirror).await;
    // compact_min_files = 4 keeps at most 3 small files waiting, plus merged ones
    assert!(
        most_live.0 <= 8 && most_live.1 <= 8,
        "live files per table stay bounded, saw {most_live:?}"
    );
    let live = read_delta("files", &changelog).rows.len();
    wait_until(CATCH_UP, "the vacuum to delete the replaced files", || {
        parquet_files_on_disk(&changelog) <= live + 4
    });
    eprintln!(
        "60 commits: at most {most_live:?} live files (mirror, changelog); {} parquet files left on disk for the changelog",
        parquet_files_on_disk(&changelog)
    );
    stop_gracefully(headwater);
    postgres_cleanup(&schema, &work).await;
}

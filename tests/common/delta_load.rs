//! Shared by the Delta sink tests: a random change load both servers accept, and the checks
//! that a mirror equals its source table and a changelog repeats nothing.

use super::delta::*;
use super::*;
use mysql_async::prelude::Queryable;
use rand::Rng;
use serde_json::{json, Value as Json};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub const CATCH_UP: Duration = Duration::from_secs(180);
/// Ids of the deterministic phase, above anything the random load makes.
pub const PHASE_TWO: i64 = 1_000_000_000;

pub const COLUMNS: [&str; 4] = ["id", "v", "amount", "note"];

/// Random changes as SQL both servers accept; `v` is a counter, unique per insert or update,
/// so the changelog can be checked for repeats.
pub struct RandomLoad {
    pub table: String,
    pub ids: Vec<i64>,
    pub next_id: i64,
    pub counter: i64,
}

impl RandomLoad {
    pub fn new(table: String, initial_rows: i64) -> Self {
        RandomLoad {
            table,
            ids: (0..initial_rows).collect(),
            next_id: initial_rows,
            counter: initial_rows,
        }
    }

    pub fn initial_insert(&self) -> String {
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
    pub fn transaction(&mut self) -> Vec<String> {
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

pub enum Db {
    Postgres(tokio_postgres::Client),
    Mysql(mysql_async::Conn),
}

impl Db {
    pub async fn execute(&mut self, statements: &[String]) {
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
    pub async fn rows(&mut self, table: &str) -> Vec<Vec<Json>> {
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

pub async fn run_load(
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
pub async fn assert_mirror_equals_source(db: &mut Db, table: &str, uri: &str) {
    let expected = db.rows(table).await;
    for reader in readers_of(uri) {
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
pub fn assert_changelog_has_no_repeats(uri: &str) -> DeltaRows {
    let changelog = read_delta(main_reader(uri), uri);
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
pub async fn phase_two(db: &mut Db, table: &str, changelog_uri: &str) {
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
        main_reader(changelog_uri),
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

pub async fn postgres_schema(prefix: &str) -> (String, Db) {
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

pub async fn mysql_database(prefix: &str) -> (String, Db) {
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

/// Random load before and during the snapshot, then streaming; both readers, both tables
/// (`mirror` and `changelog` as the readers name them).
pub async fn mirror_and_changelog_under_load(
    mut db: Db,
    namespace: &str,
    work: &Workdir,
    (mirror, changelog): (String, String),
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
    assert_mirror_equals_source(&mut db, &table, &mirror).await;
    phase_two(&mut db, &table, &changelog).await;
    assert_mirror_equals_source(&mut db, &table, &mirror).await;
    let rows = assert_changelog_has_no_repeats(&changelog);
    let duck = read_delta(readers_of(&changelog)[1], &changelog);
    assert_eq!(
        duck.project(&["__op", "id", "v", "amount", "note"]),
        rows.project(&["__op", "id", "v", "amount", "note"]),
        "both readers see the same changelog"
    );
    stop_gracefully(headwater);
}

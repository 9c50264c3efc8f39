//! Test cases both lakehouse sinks (Delta and Iceberg) must pass, each run against a sink of
//! the format given.
#![allow(dead_code)]

use super::delta::*;
use super::delta_load::*;
use super::*;
use mysql_async::prelude::Queryable;
use rand::Rng;
use serde_json::json;
use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// SIGKILL at random moments under load, ×5: the mirror equals the source and the changelog
/// holds every update exactly once (per row, `v` runs 0, 1, 2, … with no gap or repeat).
pub async fn sigkill_under_load(
    format: Lakehouse,
    mut db: Db,
    namespace: &str,
    work: &Workdir,
    stream: &str,
) {
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
    let mirror = format.table(work, "mirror", stream);
    assert_mirror_equals_source(&mut db, &format!("{namespace}.t"), &mirror).await;
    let changelog = format.table(work, "changelog", stream);
    let changelog = read_delta(main_reader(&changelog), &changelog);
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

/// Parquet files under a table's directory, live or not.
pub fn parquet_files_on_disk(dir: &std::path::Path) -> usize {
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
    walk(dir, &mut count);
    count
}

/// A trickle of small commits: compaction keeps the live files per table bounded and the
/// vacuum deletes the files compaction replaced, while the mirror stays equal to the source.
pub async fn a_trickle_of_commits_is_compacted_and_vacuumed(format: Lakehouse, prefix: &str) {
    let (schema, mut db) = postgres_schema(prefix).await;
    let work = Workdir::new();
    work.postgres_config("dtr", &schema, "snapshot = \"initial\"");
    format.use_sink(
        &work,
        "commit_interval = \"20ms\"\ncompact_min_files = 4\nvacuum_interval = \"1s\"\nvacuum_retention = \"0s\"",
    );
    let table = format!("{schema}.t");
    db.execute(&[format!(
        "INSERT INTO {table} (id, v, amount, note) VALUES (0, 0, 0, 'seed')"
    )])
    .await;
    let headwater = work.spawn();
    let stream = format!("dtr.{schema}.t");
    let mirror = format.table(&work, "mirror", &stream);
    let changelog = format.table(&work, "changelog", &stream);
    let changelog_dir = format.table_dir(&work, "changelog", &stream);
    let mut most_live = (0, 0);
    for n in 1..=60i64 {
        db.execute(&[
            format!("INSERT INTO {table} (id, v, amount, note) VALUES ({n}, {n}, 1.00, 't')"),
            format!("UPDATE {table} SET v = v + 1 WHERE id = {}", n / 2),
        ])
        .await;
        // each change waits for its own commit, so every one is a separate small file
        wait_for_delta(
            main_reader(&changelog),
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
                read_delta(format.files_reader(), &mirror).rows.len(),
                read_delta(format.files_reader(), &changelog).rows.len(),
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
    let live = read_delta(format.files_reader(), &changelog).rows.len();
    wait_until(CATCH_UP, "the vacuum to delete the replaced files", || {
        parquet_files_on_disk(&changelog_dir) <= live + 4
    });
    eprintln!(
        "60 commits: at most {most_live:?} live files (mirror, changelog); {} parquet files left on disk for the changelog",
        parquet_files_on_disk(&changelog_dir)
    );
    stop_gracefully(headwater);
    postgres_cleanup(&schema, &work).await;
}

/// Columns added and dropped mid-stream become schema changes of the table format both readers follow: an
/// added column is null in older rows, a dropped one stays (nullable) and is null in newer rows.
pub async fn added_and_dropped_columns_are_read_back_by_both_readers(
    format: Lakehouse,
    prefix: &str,
) {
    let (schema, mut db) = postgres_schema(prefix).await;
    let work = Workdir::new();
    work.postgres_config("dddl", &schema, "snapshot = \"initial\"");
    format.use_sink(&work, "");
    let table = format!("{schema}.t");
    db.execute(&[format!(
        "INSERT INTO {table} (id, v, amount, note) VALUES (1, 1, 1.00, 'one')"
    )])
    .await;
    work.catch_up();
    db.execute(&[
        format!("ALTER TABLE {table} ADD COLUMN extra int"),
        format!("INSERT INTO {table} (id, v, amount, note, extra) VALUES (2, 2, 2.00, 'two', 20)"),
    ])
    .await;
    db.execute(&[
        format!("ALTER TABLE {table} DROP COLUMN note"),
        format!("INSERT INTO {table} (id, v, amount, extra) VALUES (3, 3, 3.00, 30)"),
        format!("UPDATE {table} SET extra = 10 WHERE id = 1"),
    ])
    .await;
    work.catch_up();
    let inspect = work.headwater(&["inspect"]);
    let shown = String::from_utf8_lossy(&inspect.stdout);
    assert!(
        shown.contains(&format!("mirror dddl.{schema}.t: version")) && shown.contains(", 3 rows,"),
        "inspect shows the tables: {shown}"
    );
    let mirror = format.table(&work, "mirror", &format!("dddl.{schema}.t"));
    let changelog = format.table(&work, "changelog", &format!("dddl.{schema}.t"));
    let expected = vec![
        // updated after the drop: the row as the source has it now holds no note
        vec![json!(1), json!(null), json!(10)],
        vec![json!(2), json!("two"), json!(20)],
        vec![json!(3), json!(null), json!(30)],
    ];
    for reader in format.readers() {
        let rows = read_delta(reader, &mirror);
        assert_eq!(
            rows.project(&["id", "note", "extra"]),
            expected,
            "mirror read by {reader}"
        );
        let changes = read_delta(reader, &changelog);
        assert_eq!(
            changes.rows.len(),
            4,
            "changelog read by {reader}: {:?}",
            changes.rows
        );
        assert_eq!(
            changes.project(&["__op", "id", "extra"]),
            vec![
                vec![json!("c"), json!(2), json!(20)],
                vec![json!("c"), json!(3), json!(30)],
                vec![json!("r"), json!(1), json!(null)],
                vec![json!("u"), json!(1), json!(10)],
            ],
            "changelog read by {reader}"
        );
    }
    postgres_cleanup(&schema, &work).await;
}

/// The mirror and changelog on a real S3-compatible server under a random load with a snapshot,
/// the server stopped for 30 seconds while changes go on, then SIGKILLs: nothing lost, nothing
/// repeated, and the pipeline resumes by itself.
pub async fn s3_tables_survive_a_stopped_server_and_sigkill(format: Lakehouse, prefix: &str) {
    let mut s3 = PrivateS3::start();
    // headwater (a child process) and the readers take the endpoint from the standard variables
    for (key, value) in s3_env(&s3.endpoint()) {
        std::env::set_var(key, value);
    }
    let (schema, mut db) = postgres_schema(prefix).await;
    let work = Workdir::new();
    work.postgres_config("ds3", &schema, "snapshot = \"initial\"");
    format.use_s3_sink(&work, "s3://headwater/lake");
    let table = format!("{schema}.t");
    let stream = format!("ds3.{schema}.t");
    let mirror = format.s3_table(&work, "s3://headwater/lake", "mirror", &stream);
    let changelog = format.s3_table(&work, "s3://headwater/lake", "changelog", &stream);

    let load = RandomLoad::new(table.clone(), 2000);
    db.execute(&[load.initial_insert()]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(run_load(db, load, 300, Arc::clone(&stop)));
    // its log goes to a file, shown when the test fails
    let log_path = work.path().join("headwater.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut headwater = std::process::Command::new(env!("CARGO_BIN_EXE_headwater"))
        .args(["run", "--config"])
        .arg(work.config())
        .env("HEADWATER_LOG", "warn")
        .stderr(log)
        .spawn()
        .expect("spawn headwater");
    let show_log = || {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        eprintln!(
            "headwater said:\n{}",
            text.lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        );
    };
    wait_for_delta(
        main_reader(&mirror),
        &mirror,
        &[],
        CATCH_UP,
        "the first mirror commit",
        |rows| !rows.rows.is_empty(),
    );
    // the server goes away while changes keep coming, for 30 seconds
    s3.stop();
    tokio::time::sleep(Duration::from_secs(30)).await;
    s3.launch();
    stop.store(true, Ordering::SeqCst);
    let (mut db, load) = writer.await.expect("load");
    eprintln!(
        "{} changes, 30 s of them with the S3 server down",
        load.counter - 2000
    );
    let recovered = tokio::spawn(async move {
        assert_mirror_equals_source(&mut db, &table, &mirror).await;
        db
    })
    .await;
    let Ok(db) = recovered else {
        show_log();
        panic!("the pipeline did not recover from the stopped server");
    };
    let table = format!("{schema}.t");
    let mirror = format.s3_table(&work, "s3://headwater/lake", "mirror", &stream);
    Command::new("kill")
        .arg("-TERM")
        .arg(headwater.id().to_string())
        .status()
        .expect("kill");
    let status = headwater.wait().expect("reap");
    if !status.success() {
        show_log();
        panic!("headwater exited with {status}");
    }

    // SIGKILL at random moments under load
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(run_load(db, load, 200, Arc::clone(&stop)));
    for _ in 0..3 {
        let mut child = work.spawn();
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(500..2500))).await;
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }
    stop.store(true, Ordering::SeqCst);
    let (mut db, _) = writer.await.expect("load");
    work.catch_up();
    assert_mirror_equals_source(&mut db, &table, &mirror).await;
    assert_changelog_has_no_repeats(&changelog);
    postgres_cleanup(&schema, &work).await;
}

/// A case run on a fresh table of either source.
#[derive(Clone, Copy, Debug)]
pub enum Case {
    /// [`mirror_and_changelog_under_load`]
    Load,
    /// [`sigkill_under_load`]
    Sigkill,
}

async fn run_case(
    format: Lakehouse,
    case: Case,
    db: Db,
    namespace: &str,
    work: &Workdir,
    stream: &str,
) {
    match case {
        Case::Load => {
            let tables = (
                format.table(work, "mirror", stream),
                format.table(work, "changelog", stream),
            );
            mirror_and_changelog_under_load(db, namespace, work, tables).await;
        }
        Case::Sigkill => sigkill_under_load(format, db, namespace, work, stream).await,
    }
}

/// `case` on a new PostgreSQL schema (`prefix`…) captured as server `server` with a snapshot.
pub async fn on_postgres(format: Lakehouse, case: Case, prefix: &str, server: &str) {
    let (schema, db) = postgres_schema(prefix).await;
    let work = Workdir::new();
    work.postgres_config(server, &schema, "snapshot = \"initial\"");
    format.use_sink(&work, "");
    run_case(
        format,
        case,
        db,
        &schema,
        &work,
        &format!("{server}.{schema}.t"),
    )
    .await;
    postgres_cleanup(&schema, &work).await;
}

/// `case` on a new MariaDB database (`prefix`…) captured as server `server` with a snapshot.
pub async fn on_mariadb(format: Lakehouse, case: Case, prefix: &str, server: &str) {
    let (db_name, db) = mysql_database(prefix).await;
    let work = Workdir::new();
    work.mysql_config(server, &db_name, "snapshot = \"initial\"", "");
    format.use_sink(&work, "");
    run_case(
        format,
        case,
        db,
        &db_name,
        &work,
        &format!("{server}.{db_name}.t"),
    )
    .await;
    let _ = mysql_admin()
        .await
        .query_drop(format!("DROP DATABASE `{db_name}`"))
        .await;
}

/// With `deletes = "soft"` a deleted row stays in the mirror, flagged, with its deletion time.
pub async fn soft_deletes_keep_the_row_flagged(format: Lakehouse, prefix: &str) {
    let (db_name, mut db) = mysql_database(prefix).await;
    let work = Workdir::new();
    work.mysql_config("dsoft", &db_name, "snapshot = \"initial\"", "");
    format.use_sink(&work, "deletes = \"soft\"");
    let table = format!("{db_name}.t");
    db.execute(&[format!(
        "INSERT INTO {table} (id, v, amount, note) VALUES (1, 1, 1.00, 'kept'), (2, 2, 2.00, 'gone')"
    )])
    .await;
    work.catch_up();
    db.execute(&[format!("DELETE FROM {table} WHERE id = 2")])
        .await;
    work.catch_up();
    let mirror = format.table(&work, "mirror", &format!("dsoft.{db_name}.t"));
    for reader in format.readers() {
        let rows = read_delta(reader, &mirror);
        let flagged = rows.project(&["id", "note", "__deleted"]);
        assert_eq!(
            flagged,
            vec![
                vec![json!(1), json!("kept"), json!(false)],
                vec![json!(2), json!("gone"), json!(true)],
            ],
            "{reader}"
        );
        let at = rows.column("__deleted_at");
        let deleted_at: Vec<bool> = rows.rows.iter().map(|r| r[at].is_null()).collect();
        assert_eq!(
            deleted_at.iter().filter(|null| !**null).count(),
            1,
            "{reader}: one deletion time"
        );
    }
    let _ = mysql_admin()
        .await
        .query_drop(format!("DROP DATABASE `{db_name}`"))
        .await;
}

/// A PostgreSQL TRUNCATE empties a hard-deleting mirror and flags the rows of a soft-deleting
/// one; the changelog holds it once.
pub async fn a_truncate_empties_the_mirror_or_flags_its_rows(format: Lakehouse, prefix: &str) {
    let (schema, mut db) = postgres_schema(prefix).await;
    let table = format!("{schema}.t");
    let hard = Workdir::new();
    hard.postgres_config("dtrunc", &schema, "snapshot = \"initial\"");
    format.use_sink(&hard, "");
    let soft = Workdir::new();
    soft.postgres_config("dtrunc", &schema, "snapshot = \"initial\"");
    format.use_sink(&soft, "deletes = \"soft\"");
    db.execute(&[format!(
        "INSERT INTO {table} (id, v, amount, note) VALUES (1, 1, 1.00, 'a'), (2, 2, 2.00, 'b')"
    )])
    .await;
    hard.catch_up();
    soft.catch_up();
    db.execute(&[
        // one transaction
        format!("INSERT INTO {table} (id, v, amount, note) VALUES (3, 3, 3.00, 'c')"),
        format!("TRUNCATE {table}"),
        format!("INSERT INTO {table} (id, v, amount, note) VALUES (4, 4, 4.00, 'd')"),
    ])
    .await;
    hard.catch_up();
    soft.catch_up();
    let stream = format!("dtrunc.{schema}.t");
    for reader in format.readers() {
        let mirror = read_delta(reader, &format.table(&hard, "mirror", &stream));
        assert_eq!(
            mirror.project(&["id", "note"]),
            vec![vec![json!(4), json!("d")]],
            "{reader}"
        );
        let flagged = read_delta(reader, &format.table(&soft, "mirror", &stream));
        // row 3 is absent when the TRUNCATE reached the same commit, flagged when it did not
        let rows: Vec<Vec<serde_json::Value>> = flagged
            .project(&["id", "__deleted"])
            .into_iter()
            .filter(|r| r[0] != json!(3) || r[1] != json!(true))
            .collect();
        assert_eq!(
            rows,
            vec![
                vec![json!(1), json!(true)],
                vec![json!(2), json!(true)],
                vec![json!(4), json!(false)],
            ],
            "{reader}: rows before the TRUNCATE flagged, the row after it live"
        );
        let at = flagged.column("__deleted_at");
        let id = flagged.column("id");
        for row in &flagged.rows {
            assert_eq!(row[at].is_null(), row[id] == json!(4), "{reader}: {row:?}");
        }
        let changes = read_delta(reader, &format.table(&hard, "changelog", &stream));
        let ops: Vec<String> = changes
            .project(&["__position", "__op"])
            .into_iter()
            .map(|r| r[1].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(
            ops.iter().filter(|op| *op == "t").count(),
            1,
            "{reader}: {ops:?}"
        );
        assert_eq!(
            ops.len(),
            5,
            "{reader}: two copied rows, an insert, the TRUNCATE, an insert: {ops:?}"
        );
    }
    postgres_cleanup(&schema, &hard).await;
    let admin = postgres_admin().await;
    let _ = admin
        .execute("SELECT pg_drop_replication_slot($1)", &[&soft.slot()])
        .await;
    let _ = admin
        .batch_execute(&format!("DROP PUBLICATION IF EXISTS {}", soft.slot()))
        .await;
}

/// A table without a primary key: named by `check`, a changelog and no mirror.
pub async fn keyless_table_gets_a_changelog_only(
    format: Lakehouse,
    mut db: Db,
    namespace: &str,
    work: &Workdir,
    server: &str,
) {
    format.use_sink(work, "");
    db.execute(&[format!(
        "CREATE TABLE {namespace}.events (at bigint NOT NULL, what varchar(20))"
    )])
    .await;
    let check = work.headwater(&["check"]);
    let printed = String::from_utf8_lossy(&check.stdout);
    assert!(
        printed.contains(&format!(
            "{namespace}.events has no primary key: it gets a {} changelog table and no mirror",
            format.title()
        )),
        "check names the keyless table:\n{printed}"
    );
    assert!(
        !printed.contains(&format!("{namespace}.t has no primary key")),
        "{printed}"
    );
    // streamed, not copied: a snapshot skips a keyless table (see the snapshot tests)
    work.catch_up();
    db.execute(&[
        format!("INSERT INTO {namespace}.events (at, what) VALUES (1, 'login'), (2, 'logout')"),
        format!("INSERT INTO {namespace}.t (id, v, amount, note) VALUES (1, 1, 1.00, 'keyed')"),
    ])
    .await;
    work.catch_up();
    let events = format!("{server}.{namespace}.events");
    let no_mirror = format.table(work, "mirror", &events);
    assert!(
        try_read_delta(main_reader(&no_mirror), &no_mirror, &[]).is_err(),
        "a keyless table has no mirror"
    );
    for reader in format.readers() {
        let changes = read_delta(reader, &format.table(work, "changelog", &events));
        let mut seen = changes.project(&["at", "what"]);
        seen.sort_by_key(|row| row[0].as_i64());
        assert_eq!(
            seen,
            vec![
                vec![json!(1), json!("login")],
                vec![json!(2), json!("logout")],
            ],
            "{reader}"
        );
        let mirror = read_delta(
            reader,
            &format.table(work, "mirror", &format!("{server}.{namespace}.t")),
        );
        assert_eq!(
            mirror.project(&["id", "note"]),
            vec![vec![json!(1), json!("keyed")]],
            "{reader}"
        );
    }
}

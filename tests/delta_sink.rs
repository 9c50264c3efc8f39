//! The Delta sink against both sources, read back by python `deltalake` and DuckDB: under a
//! random insert/update/key-change/delete load that starts before the initial snapshot, every
//! mirror equals the source table and every changelog holds each change once; SIGKILL at random
//! moments changes neither.

mod common;

use common::delta::*;
use common::delta_load::*;
use common::lakehouse_cases::{self, on_mariadb, on_postgres, Case};
use common::*;
use mysql_async::prelude::Queryable;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_mirror_and_changelog_equal_the_source_under_a_random_load() {
    on_postgres(Lakehouse::Delta, Case::Load, "hw_delta_pg", "dpg").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_mirror_and_changelog_equal_the_source_under_a_random_load() {
    on_mariadb(Lakehouse::Delta, Case::Load, "hw_delta_my", "dmy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sigkill_under_load_keeps_mirror_and_changelog_exact() {
    on_postgres(Lakehouse::Delta, Case::Sigkill, "hw_delta_pgkill", "dpgk").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_sigkill_under_load_keeps_mirror_and_changelog_exact() {
    on_mariadb(Lakehouse::Delta, Case::Sigkill, "hw_delta_mykill", "dmyk").await;
}

/// A trickle of small commits: compaction keeps the live files per table bounded and the
/// vacuum deletes the files compaction replaced, while the mirror stays equal to the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickle_of_commits_is_compacted_and_vacuumed() {
    lakehouse_cases::a_trickle_of_commits_is_compacted_and_vacuumed(
        Lakehouse::Delta,
        "hw_delta_trickle",
    )
    .await;
}

/// Columns added and dropped mid-stream become Delta schema changes both readers follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_and_dropped_columns_are_read_back_by_both_readers() {
    lakehouse_cases::added_and_dropped_columns_are_read_back_by_both_readers(
        Lakehouse::Delta,
        "hw_delta_ddl",
    )
    .await;
}

/// An update PostgreSQL sends without an unchanged TOASTed value stops the mirror with the fix
/// rather than writing the column as null.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_toast_values_stop_the_mirror_with_the_fix() {
    let (schema, mut db) = postgres_schema("hw_delta_toast").await;
    let work = Workdir::new();
    work.postgres_config("dtoast", &schema, "snapshot = \"initial\"");
    work.use_delta_sink(None, "");
    let table = format!("{schema}.t");
    let toasted = "(SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 300))";
    db.execute(&[format!(
        "INSERT INTO {table} (id, v, amount, note) VALUES (1, 1, 1.00, {toasted})"
    )])
    .await;
    work.catch_up();
    db.execute(&[format!("UPDATE {table} SET v = 2 WHERE id = 1")])
        .await;
    let failed = work.headwater(&["run", "--catch-up"]);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        !failed.status.success(),
        "the mirror must not take a row with a value left out"
    );
    assert!(
        stderr.contains("REPLICA IDENTITY FULL"),
        "the error names the fix: {stderr}"
    );
    let mirror = work.delta_table("mirror", &format!("dtoast.{schema}.t"));
    let rows = read_delta("deltalake", &mirror);
    assert_eq!(
        rows.project(&["id", "v"]),
        vec![vec![json!(1), json!(1)]],
        "nothing past the refused change was committed"
    );
    postgres_cleanup(&schema, &work).await;
}

/// With soft deletes a deleted row stays in the mirror, flagged with its deletion time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_deletes_keep_the_row_flagged() {
    lakehouse_cases::soft_deletes_keep_the_row_flagged(Lakehouse::Delta, "hw_delta_soft").await;
}

/// A table without a primary key: `check` names it, and it gets a changelog and no mirror.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keyless_tables_are_named_by_check_and_get_no_mirror() {
    let (schema, db) = postgres_schema("hw_delta_nokey").await;
    let work = Workdir::new();
    work.postgres_config("dnokey", &schema, "snapshot = \"initial\"");
    lakehouse_cases::keyless_table_gets_a_changelog_only(
        Lakehouse::Delta,
        db,
        &schema,
        &work,
        "dnokey",
    )
    .await;
    postgres_cleanup(&schema, &work).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_keyless_tables_are_named_by_check_and_get_no_mirror() {
    let (db_name, db) = mysql_database("hw_delta_nokey").await;
    let work = Workdir::new();
    work.mysql_config("dnokey", &db_name, "snapshot = \"initial\"", "");
    lakehouse_cases::keyless_table_gets_a_changelog_only(
        Lakehouse::Delta,
        db,
        &db_name,
        &work,
        "dnokey",
    )
    .await;
    let _ = mysql_admin()
        .await
        .query_drop(format!("DROP DATABASE `{db_name}`"))
        .await;
}

/// A PostgreSQL TRUNCATE empties the mirror (hard deletes) or flags every row deleted (soft),
/// with the rows written after it in the same commit kept; the changelog records it as `t`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncate_empties_the_mirror_or_flags_its_rows() {
    lakehouse_cases::a_truncate_empties_the_mirror_or_flags_its_rows(
        Lakehouse::Delta,
        "hw_delta_trunc",
    )
    .await;
}

/// A MariaDB TRUNCATE (a statement of its own, logged as text) empties the mirror, whether the
/// stream had read the table's layout before it or, first thing after a restart, has to ask
/// the server; the changelog records each as `t`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mariadb_truncate_empties_the_mirror() {
    let (db_name, mut db) = mysql_database("hw_delta_mtrunc").await;
    let table = format!("`{db_name}`.t");
    let insert = |id: i64, note: &str| {
        format!("INSERT INTO {table} (id, v, amount, note) VALUES ({id}, {id}, {id}.00, '{note}')")
    };
    let work = Workdir::new();
    work.mysql_config("dmtrunc", &db_name, "snapshot = \"initial\"", "");
    work.use_delta_sink(None, "");
    db.execute(&[insert(1, "a"), insert(2, "b")]).await;
    work.catch_up();
    // a new run whose first event of the table is the TRUNCATE: no layout seen yet
    db.execute(&[
        format!("TRUNCATE TABLE {table}"),
        insert(3, "c"),
        insert(4, "d"),
    ])
    .await;
    work.catch_up();
    // the layout known from the row just before
    db.execute(&[insert(5, "e"), format!("TRUNCATE {table}"), insert(6, "f")])
        .await;
    work.catch_up();
    let stream = format!("dmtrunc.{db_name}.t");
    for reader in READERS {
        let mirror = read_delta(reader, &work.delta_table("mirror", &stream));
        assert_eq!(
            mirror.project(&["id", "note"]),
            vec![vec![json!(6), json!("f")]],
            "{reader}"
        );
        let changes = read_delta(reader, &work.delta_table("changelog", &stream));
        let mut ops: Vec<(String, serde_json::Value)> = changes
            .project(&["__op", "id"])
            .into_iter()
            .map(|r| (r[0].as_str().unwrap_or_default().to_string(), r[1].clone()))
            .collect();
        ops.sort_by_key(|(op, id)| (id.as_i64(), op.clone()));
        assert_eq!(
            ops,
            vec![
                ("t".to_string(), json!(null)),
                ("t".to_string(), json!(null)),
                ("r".to_string(), json!(1)),
                ("r".to_string(), json!(2)),
                ("c".to_string(), json!(3)),
                ("c".to_string(), json!(4)),
                ("c".to_string(), json!(5)),
                ("c".to_string(), json!(6)),
            ],
            "{reader}"
        );
    }
    let _ = mysql_admin()
        .await
        .query_drop(format!("DROP DATABASE `{db_name}`"))
        .await;
}

//! The lake and state directories on a filesystem that fills up, and state files that are
//! truncated or corrupted: Headwater stops with an error naming the path and the fix, loses
//! nothing, never silently starts over, and resumes once the cause is gone.

mod common;

use common::counter_load::*;
use common::*;
use mysql_async::prelude::Queryable;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A size-limited tmpfs mounted over a directory for the test's life (needs root, as the
/// test machines and CI run; a mount that fails says so instead of skipping).
struct SmallDisk {
    at: PathBuf,
}

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> Self {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a {size} tmpfs at {} failed: these tests need root (CAP_SYS_ADMIN) to make a small filesystem",
            at.display()
        );
        SmallDisk {
            at: at.to_path_buf(),
        }
    }

    /// Grows the filesystem: the space the pipeline needed is there again.
    fn grow(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.at)
            .status()
            .expect("run mount");
        assert!(status.success(), "remounting {} failed", self.at.display());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
    }
}

/// 512 characters of hashes of distinct text per row: deflate cannot fold rows together.
const PAD: &str = "CONCAT(SHA2(CONCAT('a', seq), 512), SHA2(CONCAT('b', seq), 512), SHA2(CONCAT('c', seq), 512), SHA2(CONCAT('d', seq), 512))";

async fn table_with_rows(prefix: &str, rows: u32) -> String {
    let db = unique(prefix);
    mysql_admin()
        .await
        .query_drop(format!(
            "CREATE DATABASE `{db}`; CREATE TABLE `{db}`.t (id BIGINT PRIMARY KEY, v INT NOT NULL, pad VARCHAR(600));
             INSERT INTO `{db}`.t SELECT seq, 0, {PAD} FROM `{db}`.seq_1_to_{rows}"
        ))
        .await
        .expect("create the table");
    db
}

async fn drop_database(db: &str) {
    let _ = mysql_admin()
        .await
        .query_drop(format!("DROP DATABASE `{db}`"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_pipeline_with_the_path_and_it_resumes_once_there_is_room() {
    // 10,000 rows copied first (~2.6 MB of Avro: hashes of distinct text, so deflate keeps
    // about half), then 40,000 more streamed onto a filesystem of 6 MB
    let db = table_with_rows("hw_diskfull", 10_000).await;
    let work = Workdir::new();
    let disk = SmallDisk::mount(work.path(), "6m");
    work.mysql_config("diskfull", &db, "snapshot = \"initial\"", "");
    work.catch_up();
    let stream = format!("diskfull.{db}.t");
    assert_eq!(read_stream(&work.lake(), &stream).len(), 10_000);
    mysql_admin()
        .await
        .query_drop(format!(
            "INSERT INTO `{db}`.t SELECT seq + 10000, 0, {PAD} FROM `{db}`.seq_1_to_40000"
        ))
        .await
        .unwrap();
    let full = work.headwater(&["run", "--catch-up"]);
    let said = String::from_utf8_lossy(&full.stderr);
    let df = Command::new("df").arg(work.path()).output().expect("df");
    assert!(
        !full.status.success(),
        "a full disk stops the pipeline; it said: {said}\n{}",
        String::from_utf8_lossy(&df.stdout)
    );
    assert!(
        said.contains("No space left on device") || said.contains("storage full"),
        "the cause is said: {said}"
    );
    assert!(
        said.contains("check free space") && said.contains("Nothing is lost"),
        "the fix and the guarantee are said: {said}"
    );
    let before = read_stream(&work.lake(), &stream);
    assert!(
        (10_000..50_000).contains(&before.len()),
        "what was committed before the disk filled is still there, and the disk filled before the end ({} records)",
        before.len()
    );

    disk.grow("256m");
    mysql_admin()
        .await
        .query_drop(format!("UPDATE `{db}`.t SET v = v + 1 WHERE id <= 10"))
        .await
        .unwrap();
    work.catch_up();
    let records = read_stream(&work.lake(), &stream);
    let rows = mysql_counter_rows(&db).await;
    assert_copies_then_changes_once(&records, &rows);
    eprintln!(
        "the disk filled after {} of 50000 rows; after it grew, {} records, each once",
        before.len(),
        records.len()
    );
    drop(disk);
    drop_database(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_the_delta_tables_stops_the_pipeline_and_it_resumes_exactly() {
    // 4,000 rows copied into a mirror and a changelog (~2 × 1.1 MB of zstd Parquet: hashes of
    // distinct text), then 40,000 more streamed onto a filesystem of 6 MB
    let db = table_with_rows("hw_deltafull", 4_000).await;
    let work = Workdir::new();
    let disk = SmallDisk::mount(work.path(), "6m");
    work.mysql_config("deltafull", &db, "snapshot = \"initial\"", "");
    work.use_delta_sink(None, "");
    work.catch_up();
    let stream = format!("deltafull.{db}.t");
    let (mirror, changelog) = (
        work.delta_table("mirror", &stream),
        work.delta_table("changelog", &stream),
    );
    assert_eq!(
        common::delta::read_delta("deltalake", &mirror).rows.len(),
        4_000
    );
    mysql_admin()
        .await
        .query_drop(format!(
            "INSERT INTO `{db}`.t SELECT seq + 4000, 0, {PAD} FROM `{db}`.seq_1_to_40000"
        ))
        .await
        .unwrap();
    let full = work.headwater(&["run", "--catch-up"]);
    let said = String::from_utf8_lossy(&full.stderr);
    assert!(
        !full.status.success(),
        "a full disk stops the pipeline; it said: {said}"
    );
    assert!(
        said.contains("No space left on device") || said.contains("storage full"),
        "the cause is said: {said}"
    );
    assert!(
        said.contains(&work.path().display().to_string()) && said.contains("check free space"),
        "the path and the fix are said: {said}"
    );
    assert!(
        said.contains("Nothing is lost"),
        "the guarantee is said: {said}"
    );
    let before = common::delta::read_delta("deltalake", &mirror).rows.len();
    assert!(
        (4_000..44_000).contains(&before),
        "the mirror's last commit before the disk filled is readable, and the disk filled before the end ({before} rows)"
    );

    disk.grow("512m");
    mysql_admin()
        .await
        .query_drop(format!("UPDATE `{db}`.t SET v = v + 1 WHERE id <= 10"))
        .await
        .unwrap();
    work.catch_up();
    let mut rows = mysql_counter_rows(&db).await;
    rows.sort();
    for reader in ["deltalake", "duckdb"] {
        let read = common::delta::read_delta(reader, &mirror);
        let mut got: Vec<(i64, i64)> = read
            .project(&["id", "v"])
            .iter()
            .map(|r| (r[0].as_i64().expect("id"), r[1].as_i64().expect("v")))
            .collect();
        got.sort();
        assert!(
            got == rows,
            "the mirror read by {reader} equals the table ({} rows vs {})",
            got.len(),
            rows.len()
        );
    }
    // the changelog: every row copied or inserted once, the ten updates once each
    let log = common::delta::read_delta("deltalake", &changelog);
    let mut first_images = std::collections::HashMap::new();
    let mut updates = 0;
    for row in log.project(&["__op", "id"]) {
        match row[0].as_str() {
            Some("r") | Some("c") => {
                let id = row[1].as_i64().expect("id");
                assert!(
                    first_images.insert(id, ()).is_none(),
                    "row {id} written twice"
                );
            }
            Some("u") => updates += 1,
            other => panic!("unexpected op {other:?}"),
        }
    }
    assert_eq!(first_images.len(), rows.len());
    assert_eq!(updates, 10, "each update once");
    eprintln!(
        "the disk filled with {before} of 44000 rows in the mirror; after it grew, every row once"
    );
    drop(disk);
    drop_database(&db).await;
}

/// No row copied or inserted twice, no update repeated, and the lake ends at the table. A row updated
/// while its chunk was being copied may be there only through its update (the copy drops rows
/// the stream changed inside the chunk's window, as it should).
fn assert_copies_then_changes_once(records: &[apache_avro::types::Value], rows: &[(i64, i64)]) {
    let mut copied = std::collections::HashSet::new();
    let mut last: std::collections::HashMap<i64, i64> = Default::default();
    for record in records {
        let after = image(record, "after").expect("after");
        let (id, v) = (avro_int(&after["id"]), avro_int(&after["v"]));
        match op(record).as_str() {
            "r" => assert!(copied.insert(id), "row {id} copied twice"),
            "c" => assert!(!last.contains_key(&id), "row {id} inserted twice"),
            "u" => {
                if let Some(before) = last.get(&id) {
                    assert_eq!(v, before + 1, "row {id}: repeated update");
                }
            }
            other => panic!("unexpected op {other}"),
        }
        last.insert(id, v);
    }
    assert_eq!(
        last.len(),
        rows.len(),
        "rows in the lake vs rows in the table"
    );
    for (id, v) in rows {
        assert_eq!(last.get(id), Some(v), "row {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_checkpoint_or_manifest_is_an_error_never_a_fresh_start() {
    let db = table_with_rows("hw_corrupt", 100).await;
    let work = Workdir::new();
    work.mysql_config("corrupt", &db, "snapshot = \"initial\"", "");
    work.catch_up();
    let stream = format!("corrupt.{db}.t");
    assert_eq!(read_stream(&work.lake(), &stream).len(), 100);

    for file in [
        work.path().join("state/checkpoint.json"),
        work.lake().join("_headwater/manifest.json"),
    ] {
        let good = std::fs::read(&file).expect("the state file exists");
        for bad in [
            &good[..good.len() / 2],
            b"".as_slice(),
            b"{\"version\": \"x\"}",
        ] {
            std::fs::write(&file, bad).unwrap();
            let run = work.headwater(&["run", "--catch-up"]);
            let said = String::from_utf8_lossy(&run.stderr);
            assert!(
                !run.status.success(),
                "{} holding {bad:?} is an error",
                file.display()
            );
            let name = file.file_name().unwrap().to_string_lossy();
            assert!(
                said.contains(name.as_ref()) && said.contains("unreadable"),
                "the error names {name}: {said}"
            );
            assert!(
                said.contains("restore it"),
                "the error says what to do: {said}"
            );
            assert_eq!(
                std::fs::read(&file).unwrap(),
                bad,
                "the damaged file is left as it was, for the person restoring it"
            );
            assert_eq!(
                read_stream(&work.lake(), &stream).len(),
                100,
                "nothing was copied again"
            );
        }
        std::fs::write(&file, &good).unwrap();
    }
    mysql_admin()
        .await
        .query_drop(format!("UPDATE `{db}`.t SET v = v + 1 WHERE id <= 3"))
        .await
        .unwrap();
    work.catch_up();
    assert_copies_then_changes_once(
        &read_stream(&work.lake(), &stream),
        &mysql_counter_rows(&db).await,
    );
    drop_database(&db).await;
}

//! The Delta sink on a real S3-compatible server (s3s-fs, a private instance this test stops and
//! starts): the mirror and changelog under a random load with a snapshot, the server stopped
//! for 30 seconds while changes go on, then SIGKILLs — nothing lost, nothing repeated, and the
//! pipeline resumes by itself.

mod common;

use common::delta::*;
use common::delta_load::*;
use common::*;
use rand::Rng;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_tables_survive_a_stopped_server_and_sigkill() {
    let mut s3 = PrivateS3::start();
    // headwater (a child process) and the readers take the endpoint from the standard variables
    for (key, value) in s3_env(&s3.endpoint()) {
        std::env::set_var(key, value);
    }
    let (schema, mut db) = postgres_schema("hw_delta_s3").await;
    let work = Workdir::new();
    work.postgres_config("ds3", &schema, "snapshot = \"initial\"");
    work.use_delta_sink(Some("s3://headwater/lake"), "");
    let table = format!("{schema}.t");
    let stream = format!("ds3.{schema}.t");
    let mirror = format!("s3://headwater/lake/mirror/{stream}");
    let changelog = format!("s3://headwater/lake/changelog/{stream}");

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
        "deltalake",
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
    let mirror = format!("s3://headwater/lake/mirror/{stream}");
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

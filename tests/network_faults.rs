//! Network faults between Headwater and its source, under a steady write load, through a TCP
//! proxy the test controls (tests/common/proxy.rs): every connection cut (reset) at random
//! moments, mid-transaction among them, then the path held silent (a black hole: no reset, no
//! data). Headwater must notice the silence within its heartbeat bound, reconnect with
//! backoff, and the lake must hold every change exactly once.

mod common;

use apache_avro::types::Value as AvroValue;
use common::counter_load::*;
use common::proxy::FaultProxy;
use common::*;
use mysql_async::prelude::Queryable;
use rand::Rng;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `host:port` of a database URL.
fn authority(url: &str) -> String {
    let rest = url.split_once("://").expect("a URL").1;
    let authority = rest.split('/').next().expect("an authority");
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
        .to_string()
}

/// Polls `condition` until it holds; panics naming `what` after `timeout`.
async fn wait_for<F: Future<Output = bool>>(
    timeout: Duration,
    what: &str,
    mut condition: impl FnMut() -> F,
) -> Duration {
    let start = Instant::now();
    while !condition().await {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    start.elapsed()
}

/// `headwater run` with what it says collected as it says it.
struct Logged {
    child: std::process::Child,
    said: Arc<Mutex<String>>,
}

impl Logged {
    fn spawn(work: &Workdir) -> Self {
        // the sources' info lines say when a stream is open (see `times_said`)
        let mut child =
            work.spawn_logging("warn,headwater_mysql::source=info,headwater_postgres::source=info");
        let said = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("piped stderr");
        let sink = said.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut said = sink.lock().expect("log buffer");
                said.push_str(&line);
                said.push('\n');
            }
        });
        Logged { child, said }
    }

    fn said(&self, phrase: &str) -> bool {
        self.said.lock().expect("log buffer").contains(phrase)
    }

    fn times_said(&self, phrase: &str) -> usize {
        self.said
            .lock()
            .expect("log buffer")
            .matches(phrase)
            .count()
    }
}

/// Cuts every connection five times at random moments (a cut may land while the previous
/// reconnect is still setting up), then, once the stream is open again (Headwater said
/// `streaming`), holds the path silent until Headwater says it gave up on the silent
/// connection (any of `gave_up`: the silence may meet the stream or a catalog query it makes
/// for a table it has just been told about); returns how long that took.
async fn cut_then_black_hole(
    proxy: &FaultProxy,
    headwater: &mut Logged,
    streaming: &str,
    gave_up: &[&str],
) -> Duration {
    let gave_up_said = |headwater: &Logged| gave_up.iter().any(|phrase| headwater.said(phrase));
    let mut streams_opened = 0;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(300..1500))).await;
        assert_still_running(&mut headwater.child);
        let before = proxy.accepted();
        streams_opened = headwater.times_said(streaming);
        proxy.cut();
        wait_for(
            Duration::from_secs(60),
            "a reconnect after a cut",
            || async { proxy.accepted() > before },
        )
        .await;
    }
    // the black hole is to meet the running stream, not a reconnect half-way through its set-up
    wait_for(
        Duration::from_secs(60),
        "the stream to open again after the last cut",
        || async { headwater.times_said(streaming) > streams_opened },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!gave_up_said(headwater), "silence reported before any");
    proxy.black_hole();
    let start = Instant::now();
    while !gave_up_said(headwater) {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "Headwater did not give up on the silent connection in 90 s; it said:\n{}",
            headwater.said.lock().expect("log buffer")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let noticed = start.elapsed();
    let before = proxy.accepted();
    wait_for(Duration::from_secs(60), "a new connection", || async {
        proxy.accepted() > before
    })
    .await;
    proxy.heal();
    assert_still_running(&mut headwater.child);
    noticed
}

/// Waits for the running pipeline (not a new one) to bring the lake to the table's final
/// `rows`, stops it, and asserts every change is there exactly once.
async fn settle(work: &Workdir, headwater: Logged, stream: &str, rows: &[(i64, i64)]) -> String {
    let retries = headwater
        .said
        .lock()
        .expect("log buffer")
        .matches("source failed; retrying")
        .count();
    assert!(
        retries >= 6,
        "each cut and the black hole are said in the log as a retry ({retries} said):\n{}",
        headwater.said.lock().expect("log buffer")
    );
    wait_for(
        Duration::from_secs(180),
        "the running pipeline to bring the lake to the table's state",
        || async { lake_reached(&read_stream(&work.lake(), stream), rows) },
    )
    .await;
    stop_gracefully(headwater.child);
    let records = read_stream(&work.lake(), stream);
    assert_each_change_once(&records, rows);
    format!(
        "{} records exactly once after 5 cuts ({retries} retries said)",
        records.len()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_cuts_and_a_black_hole_lose_and_repeat_nothing() {
    let db = unique("hw_netfault");
    let mut admin = mysql_admin().await;
    admin
        .query_drop(format!(
            "CREATE DATABASE `{db}`; CREATE TABLE `{db}`.t (id BIGINT PRIMARY KEY, v INT NOT NULL, pad VARCHAR(100))"
        ))
        .await
        .unwrap();
    let url = endpoint("HEADWATER_MYSQL_URL");
    let proxy = FaultProxy::start(&authority(&url)).await;
    let work = Workdir::new();
    // silence is taken as a lost connection after 3 heartbeat intervals
    // mysql_async moves a loopback connection to the server's unix socket unless told not to,
    // which would bypass the proxy
    work.mysql_config_for(
        &format!("{}?prefer_socket=false", proxy.url(&url)),
        "netfault",
        &db,
        "heartbeat_interval = \"1s\"",
        "",
    );
    work.catch_up();

    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(mysql_counter_load(db.clone(), stop.clone()));
    let mut headwater = Logged::spawn(&work);
    let noticed = cut_then_black_hole(
        &proxy,
        &mut headwater,
        "requesting the binlog",
        &["no event or heartbeat from the server"],
    )
    .await;
    assert!(
        noticed >= Duration::from_secs(3),
        "a silent connection is given up only after 3 heartbeat intervals, not {noticed:?}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    let transactions = writer.await.expect("writer");
    assert!(
        transactions > 50,
        "the load wrote too little ({transactions})"
    );

    let rows = mysql_counter_rows(&db).await;
    let summary = settle(&work, headwater, &format!("netfault.{db}.t"), &rows).await;
    eprintln!("{transactions} transactions, {summary}; the black hole noticed after {noticed:?}");
    admin
        .query_drop(format!("DROP DATABASE `{db}`"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cuts_and_a_black_hole_lose_and_repeat_nothing() {
    let schema = unique("hw_pgnetfault");
    postgres_admin()
        .await
        .batch_execute(&format!("CREATE SCHEMA {schema} AUTHORIZATION headwater"))
        .await
        .unwrap();
    let url = endpoint("HEADWATER_POSTGRES_URL");
    postgres_connect(&url)
        .await
        .batch_execute(&format!(
            "CREATE TABLE {schema}.t (id bigint PRIMARY KEY, v int NOT NULL, pad text)"
        ))
        .await
        .unwrap();
    let proxy = FaultProxy::start(&authority(&url)).await;
    let work = Workdir::new();
    work.postgres_config_for(
        &proxy.url(&url),
        "pgnetfault",
        &schema,
        "heartbeat_interval = \"1s\"",
    );
    work.catch_up();

    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(postgres_counter_load(schema.clone(), stop.clone()));
    let mut headwater = Logged::spawn(&work);
    let noticed = cut_then_black_hole(
        &proxy,
        &mut headwater,
        "streaming from the slot",
        &[
            "no message from the server for",
            "no answer from the server for",
        ],
    )
    .await;
    assert!(
        noticed >= Duration::from_secs(15),
        "a silent stream is given up after 3 × max(heartbeat, status, 5 s), not {noticed:?}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    let transactions = writer.await.expect("writer");
    assert!(
        transactions > 50,
        "the load wrote too little ({transactions})"
    );

    let rows = postgres_counter_rows(&schema).await;
    let summary = settle(&work, headwater, &format!("pgnetfault.{schema}.t"), &rows).await;
    eprintln!("{transactions} transactions, {summary}; the black hole noticed after {noticed:?}");
    postgres_cleanup(&schema, &work).await;
}

/// The lake holds each of the table's rows copied exactly once and equal to the table.
fn assert_copied_once(records: &[AvroValue], rows: &[(i64, i64)]) {
    let mut copied: std::collections::HashMap<i64, i64> = Default::default();
    for record in records.iter().filter(|r| op(r) == "r") {
        let after = image(record, "after").expect("a copied row has an after-image");
        let id = avro_int(&after["id"]);
        assert!(
            copied.insert(id, avro_int(&after["v"])).is_none(),
            "row {id} copied twice"
        );
    }
    assert_eq!(copied.len(), rows.len(), "rows copied vs rows in the table");
    for (id, v) in rows {
        assert_eq!(copied.get(id), Some(v), "row {id}");
    }
}

/// Holds the copy's next chunk read on a table lock (seen waiting on the server), cuts every
/// connection while it waits, three times, each time waiting for the chunk to be asked for
/// again on a new connection; then lets the copy run and cuts twice more while rows flow.
async fn cut_mid_chunk<B, F>(proxy: &FaultProxy, blocked_reads: B, unlock: impl Future<Output = ()>)
where
    B: Fn() -> F,
    F: Future<Output = Vec<u64>>,
{
    let mut seen: Vec<u64> = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        let fresh = loop {
            let fresh: Vec<u64> = blocked_reads()
                .await
                .into_iter()
                .filter(|id| !seen.contains(id))
                .collect();
            if !fresh.is_empty() {
                break fresh;
            }
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "no chunk read waited for the lock on a new connection within 90 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        seen.extend(fresh);
        proxy.cut();
    }
    unlock.await;
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(200..800))).await;
        proxy.cut();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_snapshot_chunks_cut_midway_are_copied_once() {
    let db = unique("hw_netsnap");
    let mut admin = mysql_admin().await;
    admin
        .query_drop(format!(
            "CREATE DATABASE `{db}`; CREATE TABLE `{db}`.t (id BIGINT PRIMARY KEY, v INT NOT NULL, pad VARCHAR(100));
             INSERT INTO `{db}`.t SELECT seq, seq % 7, REPEAT('p', 50) FROM `{db}`.seq_1_to_20000"
        ))
        .await
        .unwrap();
    let url = endpoint("HEADWATER_MYSQL_URL");
    let proxy = FaultProxy::start(&authority(&url)).await;
    let work = Workdir::new();
    work.mysql_config_for(
        &format!("{}?prefer_socket=false", proxy.url(&url)),
        "netsnap",
        &db,
        "snapshot = \"initial\"\nsnapshot_chunk_size = 500\nheartbeat_interval = \"1s\"",
        "",
    );
    let mut holder = mysql_admin().await;
    holder
        .query_drop(format!("LOCK TABLES `{db}`.t WRITE"))
        .await
        .unwrap();
    let headwater = Logged::spawn(&work);
    cut_mid_chunk(&proxy, || mysql_blocked_reads(&db), async {
        holder.query_drop("UNLOCK TABLES").await.unwrap();
    })
    .await;
    let rows = mysql_counter_rows(&db).await;
    let stream = format!("netsnap.{db}.t");
    wait_for(Duration::from_secs(180), "the copy to finish", || async {
        read_stream(&work.lake(), &stream)
            .iter()
            .filter(|r| op(r) == "r")
            .count()
            >= rows.len()
    })
    .await;
    stop_gracefully(headwater.child);
    assert_copied_once(&read_stream(&work.lake(), &stream), &rows);
    admin
        .query_drop(format!("DROP DATABASE `{db}`"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_snapshot_chunks_cut_midway_are_copied_once() {
    let schema = unique("hw_pgnetsnap");
    postgres_admin()
        .await
        .batch_execute(&format!("CREATE SCHEMA {schema} AUTHORIZATION headwater"))
        .await
        .unwrap();
    let url = endpoint("HEADWATER_POSTGRES_URL");
    postgres_connect(&url)
        .await
        .batch_execute(&format!(
            "CREATE TABLE {schema}.t (id bigint PRIMARY KEY, v int NOT NULL, pad text);
             INSERT INTO {schema}.t SELECT g, g % 7, repeat('p', 50) FROM generate_series(1, 20000) g"
        ))
        .await
        .unwrap();
    let proxy = FaultProxy::start(&authority(&url)).await;
    let work = Workdir::new();
    work.postgres_config_for(
        &proxy.url(&url),
        "pgnetsnap",
        &schema,
        "snapshot = \"initial\"\nsnapshot_chunk_size = 500\nheartbeat_interval = \"1s\"",
    );
    let holder = postgres_admin().await;
    holder
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE {schema}.t IN ACCESS EXCLUSIVE MODE"
        ))
        .await
        .unwrap();
    let headwater = Logged::spawn(&work);
    cut_mid_chunk(&proxy, || postgres_blocked_reads(&schema), async {
        holder.batch_execute("COMMIT").await.unwrap();
    })
    .await;
    let rows = postgres_counter_rows(&schema).await;
    let stream = format!("pgnetsnap.{schema}.t");
    wait_for(Duration::from_secs(180), "the copy to finish", || async {
        read_stream(&work.lake(), &stream)
            .iter()
            .filter(|r| op(r) == "r")
            .count()
            >= rows.len()
    })
    .await;
    stop_gracefully(headwater.child);
    assert_copied_once(&read_stream(&work.lake(), &stream), &rows);
    postgres_cleanup(&schema, &work).await;
}

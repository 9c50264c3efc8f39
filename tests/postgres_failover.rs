//! Failover (PostgreSQL 17+): the primary killed under load and its standby promoted. With a
//! failover slot, Headwater — given both hosts — goes on from the standby's synchronized copy
//! of its slot with every row exactly once and nothing the new primary does not have; without
//! one, it stops with the lost-slot error and the fix.

mod common;

use common::pg_pair::PgPair;
use common::*;
use std::collections::BTreeMap;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Inserts ids 1, 2, … one row per transaction until `stop`, through whichever host of `url`
/// is the primary; after a lost connection it reconnects and goes on after the new primary's
/// highest id (rows the old primary acknowledged but never shipped are gone with it).
async fn insert_load(url: String, schema: String, stop: Arc<AtomicBool>) {
    let url = format!("{url}?target_session_attrs=read-write&connect_timeout=2");
    while !stop.load(Ordering::SeqCst) {
        let Ok((client, connection)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        tokio::spawn(connection);
        let Ok(row) = client
            .query_one(&format!("SELECT COALESCE(max(id), 0) FROM {schema}.t"), &[])
            .await
        else {
            continue;
        };
        let mut next: i32 = row.get::<_, i32>(0) + 1;
        while !stop.load(Ordering::SeqCst) {
            let insert = format!("INSERT INTO {schema}.t VALUES ({next}, repeat('f', 40))");
            if client.batch_execute(&insert).await.is_err() {
                break;
            }
            next += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

async fn admin(pair_url: &str) -> tokio_postgres::Client {
    postgres_connect(&format!("{pair_url}?target_session_attrs=read-write")).await
}

/// How often each id was inserted in the lake.
fn inserted_ids(work: &Workdir, stream: &str) -> BTreeMap<i32, usize> {
    let mut ids = BTreeMap::new();
    for record in read_stream(&work.lake(), stream) {
        if op(&record) == "c" {
            let after = image(&record, "after").expect("an insert has an after image");
            let id = match after.get("id") {
                Some(apache_avro::types::Value::Int(id)) => *id,
                other => panic!("id is {other:?}"),
            };
            *ids.entry(id).or_default() += 1;
        }
    }
    ids
}

/// What `headwater check` prints, both streams.
fn check_output(work: &Workdir) -> String {
    let check = work.headwater(&["check"]);
    format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    )
}

struct Setup {
    pair: PgPair,
    work: Workdir,
    schema: String,
    stream: String,
}

async fn setup(failover: bool) -> Setup {
    let pair = PgPair::start();
    let schema = unique("hw_pgfo");
    let client = admin(&pair.url("postgres", "postgres")).await;
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {schema} AUTHORIZATION headwater;
             CREATE TABLE {schema}.t (id int PRIMARY KEY, pad text);
             ALTER TABLE {schema}.t OWNER TO headwater"
        ))
        .await
        .expect("create the table");
    let work = Workdir::new();
    work.postgres_config_for(
        &pair.url("headwater", "headwater"),
        "pgfo",
        &schema,
        &format!("failover = {failover}\nheartbeat_interval = \"1s\""),
    );
    let stream = format!("pgfo.{schema}.t");
    Setup {
        pair,
        work,
        schema,
        stream,
    }
}

/// Starts Headwater and the load, and waits until changes reach the lake (and, with
/// `synced_slot`, until the standby holds a synchronized copy of the slot past them).
async fn run_until_replicating(
    setup: &Setup,
    synced_slot: bool,
) -> (Child, Arc<AtomicBool>, tokio::task::JoinHandle<()>) {
    let headwater = setup.work.spawn();
    // the table's rows count from the slot's creation on (snapshot = "never")
    setup.pair.wait_for(
        &setup.pair.primary,
        "the pipeline's slot",
        &format!(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{}' AND confirmed_flush_lsn IS NOT NULL",
            setup.work.slot()
        ),
        "1",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(insert_load(
        setup.pair.url("headwater", "headwater"),
        setup.schema.clone(),
        stop.clone(),
    ));
    wait_until(Duration::from_secs(120), "changes in the lake", || {
        inserted_ids(&setup.work, &setup.stream).len() >= 300
    });
    if synced_slot {
        setup.pair.wait_for(
            &setup.pair.standby,
            "the standby's synchronized copy of the slot",
            &format!(
                "SELECT synced AND NOT temporary AND invalidation_reason IS NULL AND confirmed_flush_lsn > '0/0'
                 FROM pg_replication_slots WHERE slot_name = '{}'",
                setup.work.slot()
            ),
            "t",
        );
    }
    (headwater, stop, load)
}

async fn count(client: &tokio_postgres::Client, schema: &str) -> i64 {
    let sql = format!("SELECT count(*) FROM {schema}.t");
    client.query_one(&sql, &[]).await.expect("count").get(0)
}

/// Kills the primary while the load runs, promotes the standby, and lets the load write
/// `more` rows on the new primary.
async fn fail_over(setup: &Setup, more: i64) -> i64 {
    setup.pair.primary.kill();
    setup.pair.standby.promote();
    let new_primary = admin(&setup.pair.url("postgres", "postgres")).await;
    let at_promotion = count(&new_primary, &setup.schema).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while count(&new_primary, &setup.schema).await < at_promotion + more {
        assert!(
            Instant::now() < deadline,
            "the load wrote on the new primary"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    at_promotion
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_slot_carries_the_pipeline_to_the_promoted_standby() {
    let setup = setup(true).await;
    let (headwater, stop, load) = run_until_replicating(&setup, true).await;
    // check sees the failover set up: nothing to fix
    let said = check_output(&setup.work);
    assert!(
        said.contains("failover ready"),
        "check reports failover ready:\n{said}"
    );

    let at_promotion = fail_over(&setup, 500).await;
    stop.store(true, Ordering::SeqCst);
    load.await.expect("load");
    let truth: Vec<i32> = admin(&setup.pair.url("postgres", "postgres"))
        .await
        .query(
            &format!("SELECT id FROM {}.t ORDER BY id", setup.schema),
            &[],
        )
        .await
        .expect("read the new primary")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(truth.len() as i64 >= at_promotion + 500);
    let mut headwater = headwater;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let ids = inserted_ids(&setup.work, &setup.stream);
        let missing: Vec<&i32> = truth.iter().filter(|id| !ids.contains_key(id)).collect();
        if missing.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let _ = headwater.kill();
            let mut stderr = String::new();
            use std::io::Read;
            let _ = headwater
                .stderr
                .take()
                .expect("stderr")
                .read_to_string(&mut stderr);
            panic!(
                "{} rows of the new primary are not in the lake after 180 s ({missing:?}; the lake holds {} ids up to {:?}, {at_promotion} rows at the promotion); headwater said:\n{stderr}",
                missing.len(),
                ids.len(),
                ids.keys().last()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    common::counter_load::assert_still_running(&mut headwater);
    stop_gracefully(headwater);
    let ids = inserted_ids(&setup.work, &setup.stream);
    let repeated: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "ids inserted more than once in the lake: {repeated:?}"
    );
    let phantom: Vec<_> = ids
        .keys()
        .filter(|id| truth.binary_search(id).is_err())
        .collect();
    assert!(
        phantom.is_empty(),
        "ids in the lake the new primary does not have: {phantom:?}"
    );
    assert_eq!(ids.len(), truth.len());
    eprintln!(
        "{} rows, {at_promotion} of them before the failover",
        truth.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_failover_slot_a_failover_stops_with_the_lost_slot_error() {
    let setup = setup(false).await;
    let (mut headwater, stop, load) = run_until_replicating(&setup, false).await;
    let said = check_output(&setup.work);
    assert!(
        said.contains("source.failover is off"),
        "check warns that the slot would not survive a failover:\n{said}"
    );

    fail_over(&setup, 100).await;
    stop.store(true, Ordering::SeqCst);
    load.await.expect("load");
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = headwater.try_wait().expect("headwater") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "headwater stops once the slot is gone"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut stderr = String::new();
    use std::io::Read;
    headwater
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert!(!status.success(), "headwater fails: {stderr}");
    assert!(
        stderr.contains("no longer exists") && stderr.contains("source.failover = true"),
        "the error names the lost slot and the fix:\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_made_without_failover_becomes_a_failover_slot_on_the_next_start() {
    let url = endpoint("HEADWATER_POSTGRES18_URL");
    let admin = postgres_connect(&endpoint("HEADWATER_POSTGRES18_ADMIN_URL")).await;
    let schema = unique("hw_pgfoalter");
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA {schema} AUTHORIZATION headwater;
             CREATE TABLE {schema}.t (id int PRIMARY KEY);
             ALTER TABLE {schema}.t OWNER TO headwater"
        ))
        .await
        .expect("create the table");
    let work = Workdir::new();
    work.postgres_config_for(&url, "pgfoalter", &schema, "failover = false");
    let failover = || async {
        let row = admin
            .query_one(
                "SELECT failover FROM pg_replication_slots WHERE slot_name = $1",
                &[&work.slot()],
            )
            .await
            .expect("the slot");
        row.get::<_, bool>(0)
    };
    work.catch_up();
    assert!(!failover().await, "made without failover");
    let config = std::fs::read_to_string(work.config()).expect("config");
    std::fs::write(
        work.config(),
        config.replace("failover = false", "failover = true"),
    )
    .expect("config");
    let output = work.catch_up();
    assert!(failover().await, "altered to a failover slot");
    assert!(String::from_utf8_lossy(&output.stderr).contains("now a failover slot"));
    admin
        .execute("SELECT pg_drop_replication_slot($1)", &[&work.slot()])
        .await
        .expect("drop the slot");
}

//! The MySQL/MariaDB source when the server misbehaves: purged binlogs, restarts, failover to
//! a GTID replica. Each test runs a MariaDB of its own.

mod common;

use apache_avro::types::Value as AvroValue;
use common::*;
use std::time::Duration;

fn ids_in_lake(work: &Workdir, stream: &str) -> Vec<i64> {
    read_stream(&work.lake(), stream)
        .iter()
        .map(|r| match image(r, "after").expect("after image")["id"] {
            AvroValue::Int(n) => i64::from(n),
            AvroValue::Long(n) => n,
            ref other => panic!("{other:?}"),
        })
        .collect()
}

fn insert_range(server: &PrivateMariadb, db: &str, from: i64, to: i64) {
    server.sql(&format!(
        "INSERT INTO `{db}`.t (id) SELECT seq FROM `{db}`.seq_{from}_to_{to}"
    ));
}

#[test]
fn a_purged_binlog_position_stops_with_what_is_missing_and_how_to_recover() {
    let server = PrivateMariadb::start(1);
    server.sql("CREATE DATABASE shop; CREATE TABLE shop.t (id BIGINT PRIMARY KEY)");
    let work = Workdir::new();
    work.mysql_config_for(&server.url(), "purge", "shop", "", "");
    work.catch_up();
    insert_range(&server, "shop", 1, 10);
    work.catch_up();
    // Headwater is stopped; changes happen and their binlogs are purged before it returns.
    insert_range(&server, "shop", 11, 20);
    server.sql("FLUSH BINARY LOGS");
    insert_range(&server, "shop", 21, 30);
    server.sql("FLUSH BINARY LOGS");
    server.purge_binlogs();

    let output = work.headwater(&["run", "--catch-up"]);
    assert!(
        !output.status.success(),
        "the restart must fail, not skip the purged changes"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no longer has the binlog position"),
        "{stderr}"
    );
    assert!(
        stderr.contains("Headwater needs GTID state 0-1-"),
        "says what is missing: {stderr}"
    );
    assert!(
        stderr.contains("the server has binlog files mariadb-bin.00000"),
        "says what the server has: {stderr}"
    );
    assert!(
        !stderr.contains("the server has binlog files mariadb-bin.000001"),
        "the first file was purged: {stderr}"
    );
    assert!(stderr.contains("snapshot"), "says how to recover: {stderr}");
    assert_eq!(
        ids_in_lake(&work, "purge.shop.t"),
        (1..=10).collect::<Vec<_>>(),
        "nothing after the gap was written"
    );
}

#[test]
fn a_server_restart_mid_stream_loses_and_repeats_nothing() {
    let mut server = PrivateMariadb::start(1);
    server.sql("CREATE DATABASE shop; CREATE TABLE shop.t (id BIGINT PRIMARY KEY)");
    let work = Workdir::new();
    work.mysql_config_for(
        &server.url(),
        "restart",
        "shop",
        "heartbeat_interval = \"500ms\"",
        "",
    );
    work.catch_up();
    let headwater = work.spawn();
    insert_range(&server, "shop", 1, 500);
    wait_until(Duration::from_secs(60), "the first rows to land", || {
        ids_in_lake(&work, "restart.shop.t").len() == 500
    });
    server.stop();
    std::thread::sleep(Duration::from_millis(300));
    server.launch();
    insert_range(&server, "shop", 501, 1000);
    wait_until(
        Duration::from_secs(120),
        "the rows written after the restart to land",
        || ids_in_lake(&work, "restart.shop.t").len() >= 1000,
    );
    stop_gracefully(headwater);
    assert_eq!(
        ids_in_lake(&work, "restart.shop.t"),
        (1..=1000).collect::<Vec<_>>()
    );
}

#[test]
fn failover_to_a_gtid_replica_continues_without_loss_or_repeats() {
    let mut primary = PrivateMariadb::start(1);
    let replica = PrivateMariadb::start(2);
    replica.replicate_from(&primary);
    primary.sql("CREATE DATABASE shop; CREATE TABLE shop.t (id BIGINT PRIMARY KEY)");
    let work = Workdir::new();
    work.mysql_config_for(&primary.url(), "failover", "shop", "", "");
    work.catch_up();
    insert_range(&primary, "shop", 1, 100);
    work.catch_up();
    insert_range(&primary, "shop", 101, 200);
    let primary_position = primary.sql("SELECT @@gtid_binlog_pos");
    wait_until(Duration::from_secs(60), "the replica to catch up", || {
        replica.sql("SELECT @@gtid_slave_pos") == primary_position
    });
    primary.stop();
    // Promote the replica and move Headwater to it: same GTIDs, different files and offsets.
    replica.sql("STOP SLAVE; RESET SLAVE ALL");
    let text = std::fs::read_to_string(work.config())
        .unwrap()
        .replace(&primary.url(), &replica.url());
    std::fs::write(work.config(), text).unwrap();
    work.catch_up();
    insert_range(&replica, "shop", 201, 300);
    work.catch_up();
    assert_eq!(
        ids_in_lake(&work, "failover.shop.t"),
        (1..=300).collect::<Vec<_>>()
    );
}

#[test]
fn a_new_gtid_domain_whose_start_was_purged_is_refused_not_skipped() {
    let server = PrivateMariadb::start(1);
    server.sql("CREATE DATABASE shop; CREATE TABLE shop.t (id BIGINT PRIMARY KEY)");
    let work = Workdir::new();
    work.mysql_config_for(&server.url(), "domains", "shop", "", "");
    work.catch_up();
    // Writes in a GTID domain Headwater has never seen; their binlog is then purged. MariaDB
    // would stream the new domain from its oldest remaining binlog and skip these rows.
    server.sql("SET SESSION gtid_domain_id = 5; INSERT INTO shop.t VALUES (1), (2)");
    server.sql("FLUSH BINARY LOGS");
    server.purge_binlogs();
    insert_range(&server, "shop", 3, 4);
    let output = work.headwater(&["run", "--catch-up"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "must refuse: {stderr}");
    assert!(
        stderr.contains("GTID domain(s) that Headwater's position does not know (5-1-"),
        "{stderr}"
    );
    assert!(ids_in_lake(&work, "domains.shop.t").is_empty());
}

//! The Kafka sink against the real broker (tansu) and the schema-registry test double, read
//! back with an independent consumer (confluent-kafka with its AvroDeserializer).

mod common;

use common::*;
use mysql_async::prelude::Queryable;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

fn id_of(message: &Consumed) -> i64 {
    message.key["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("a key with an id: {:?}", message.key))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_changes_arrive_keyed_in_order_and_readable_by_a_standard_consumer() {
    let db = unique("hw_kafka");
    let mut admin = mysql_admin().await;
    admin
        .query_drop(format!("CREATE DATABASE `{db}`; CREATE TABLE `{db}`.t (id INT PRIMARY KEY, v INT NOT NULL, note VARCHAR(20))"))
        .await
        .unwrap();
    let work = Workdir::new();
    work.mysql_config("kafka", &db, "", "");
    let prefix = unique("hwk");
    let brokers = endpoint("HEADWATER_KAFKA_BROKERS");
    work.use_kafka_sink(&brokers, &prefix, "avro");
    work.catch_up();
    admin
        .query_drop(format!(
            "INSERT INTO `{db}`.t SELECT seq, 0, 'n' FROM `{db}`.seq_1_to_20"
        ))
        .await
        .unwrap();
    for _ in 0..3 {
        admin
            .query_drop(format!("UPDATE `{db}`.t SET v = v + 1"))
            .await
            .unwrap();
    }
    admin
        .query_drop(format!("DELETE FROM `{db}`.t WHERE id <= 5"))
        .await
        .unwrap();
    work.catch_up();

    let topic = format!("{prefix}.{db}.t");
    let messages = consume(&brokers, "avro", &[&topic]);
    assert_eq!(
        messages.len(),
        20 + 60 + 5 + 5,
        "inserts, updates, deletes and their tombstones"
    );
    let mut by_id: HashMap<i64, Vec<&Consumed>> = HashMap::new();
    for message in &messages {
        by_id.entry(id_of(message)).or_default().push(message);
    }
    for (id, mut changes) in by_id {
        changes.sort_by_key(|m| m.offset);
        let partitions: HashSet<i32> = changes.iter().map(|m| m.partition).collect();
        assert_eq!(
            partitions.len(),
            1,
            "row {id}'s changes are in one partition"
        );
        let versions: Vec<i64> = changes
            .iter()
            .filter_map(|m| m.value["after"]["v"].as_i64())
            .collect();
        assert_eq!(versions, [0, 1, 2, 3], "row {id}'s changes in order");
        assert_eq!(changes[0].value["op"], "c");
        assert_eq!(changes[0].headers["headwater.op"], "c");
        assert!(
            changes[0].headers["headwater.position"].starts_with("mariadb-bin."),
            "{:?}",
            changes[0].headers
        );
        assert_eq!(changes[0].headers["headwater.table"], format!("{db}.t"));
        if id <= 5 {
            assert_eq!(changes[4].value["op"], "d");
            assert!(changes[5].value.is_null(), "a tombstone follows the delete");
        }
    }
    admin
        .query_drop(format!("DROP DATABASE `{db}`"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_changes_arrive_as_json_without_a_registry() {
    let schema = unique("hw_pgkafka");
    let admin = postgres_admin().await;
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA {schema} AUTHORIZATION headwater; CREATE TABLE {schema}.t (id int PRIMARY KEY, amount numeric(8,2));
             ALTER TABLE {schema}.t OWNER TO headwater"
        ))
        .await
        .unwrap();
    let work = Workdir::new();
    work.postgres_config("pgkafka", &schema, "");
    let prefix = unique("hwk");
    let brokers = endpoint("HEADWATER_KAFKA_BROKERS");
    work.use_kafka_sink(&brokers, &prefix, "json");
    work.catch_up();
    admin
        .batch_execute(&format!("INSERT INTO {schema}.t VALUES (1, 1.50), (2, -3.25); UPDATE {schema}.t SET amount = 0 WHERE id = 1"))
        .await
        .unwrap();
    work.catch_up();
    let messages = consume(&brokers, "json", &[&format!("{prefix}.{schema}.t")]);
    assert_eq!(messages.len(), 3);
    let amounts: HashSet<String> = messages
        .iter()
        .map(|m| {
            m.value["after"]["amount"]
                .as_str()
                .unwrap_or("?")
                .to_string()
        })
        .collect();
    assert_eq!(
        amounts,
        HashSet::from(["1.50".to_string(), "-3.25".to_string(), "0.00".to_string()])
    );
    assert!(messages
        .iter()
        .all(|m| m.value["source"]["connector"] == "postgresql"));
    let slot = work.slot();
    let _ = admin
        .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await;
    admin
        .batch_execute(&format!(
            "DROP SCHEMA {schema} CASCADE; DROP PUBLICATION IF EXISTS {slot}"
        ))
        .await
        .unwrap();
}

async fn write_rows(admin: &mut mysql_async::Conn, db: &str, next: &mut i32, n: i32) {
    let sql = format!(
        "INSERT INTO `{db}`.t SELECT seq, REPEAT('x', 200) FROM `{db}`.seq_{}_to_{}",
        *next,
        *next + n - 1
    );
    *next += n;
    admin.query_drop(sql).await.unwrap();
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_stopped_for_30_seconds_pauses_the_source_and_loses_nothing() {
    let db = unique("hw_kdown");
    let mut admin = mysql_admin().await;
    admin
        .query_drop(format!(
            "CREATE DATABASE `{db}`; CREATE TABLE `{db}`.t (id INT PRIMARY KEY, pad VARCHAR(200))"
        ))
        .await
        .unwrap();
    let broker = PrivateBroker::start();
    let work = Workdir::new();
    work.mysql_config("kdown", &db, "", "");
    let prefix = unique("hwk");
    work.use_kafka_sink(&broker.brokers(), &prefix, "avro");
    work.catch_up();
    let mut headwater = work.spawn();
    let mut next = 1;
    write_rows(&mut admin, &db, &mut next, 2000).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.pause();
    let mut peak = 0;
    for _ in 0..30 {
        write_rows(&mut admin, &db, &mut next, 2000).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak = peak.max(rss_kib(headwater.id()));
        if let Some(status) = headwater.try_wait().unwrap() {
            let mut stderr = String::new();
            use std::io::Read;
            headwater
                .stderr
                .take()
                .map(|mut e| e.read_to_string(&mut stderr));
            panic!("headwater must wait for the broker, but exited with {status}: {stderr}");
        }
    }
    broker.resume();
    write_rows(&mut admin, &db, &mut next, 2000).await;
    let total = (next - 1) as usize;
    let topic = format!("{prefix}.{db}.t");
    let mut ids = HashSet::new();
    wait_until(
        Duration::from_secs(120),
        "every row to reach Kafka after the broker returned",
        || {
            match try_consume(&broker.brokers(), "avro", &[&topic]) {
                Ok(messages) => ids = messages.iter().map(id_of).collect(),
                Err(err) => eprintln!("not yet: {}", err.lines().last().unwrap_or_default()),
            }
            ids.len() >= total
        },
    );
    assert_eq!(ids.len(), total, "nothing lost");
    assert!(
        peak < 300 * 1024,
        "RSS stayed bounded while the broker was away: peak {} MiB",
        peak / 1024
    );
    eprintln!(
        "{total} rows; peak RSS while the broker was away {} MiB",
        peak / 1024
    );
    stop_gracefully(headwater);
    admin
        .query_drop(format!("DROP DATABASE `{db}`"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_delivers_every_change_at_least_once() {
    let db = unique("hw_kkill");
    let mut admin = mysql_admin().await;
    admin
        .query_drop(format!(
            "CREATE DATABASE `{db}`; CREATE TABLE `{db}`.t (id INT PRIMARY KEY, v INT NOT NULL)"
        ))
        .await
        .unwrap();
    let work = Workdir::new();
    work.mysql_config("kkill", &db, "", "");
    let prefix = unique("hwk");
    let brokers = endpoint("HEADWATER_KAFKA_BROKERS");
    work.use_kafka_sink(&brokers, &prefix, "avro");
    work.catch_up();
    let mut next = 1;
    for _ in 0..5 {
        let mut child = work.spawn();
        for _ in 0..10 {
            admin
                .query_drop(format!(
                    "INSERT INTO `{db}`.t SELECT seq, 0 FROM `{db}`.seq_{next}_to_{}",
                    next + 99
                ))
                .await
                .unwrap();
            next += 100;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
    }
    work.catch_up();
    let messages = consume(&brokers, "avro", &[&format!("{prefix}.{db}.t")]);
    let ids: HashSet<i64> = messages.iter().map(id_of).collect();
    assert_eq!(ids.len() as i64, next - 1, "every change is present");
    let positions: HashSet<&String> = messages
        .iter()
        .map(|m| &m.headers["headwater.position"])
        .collect();
    assert_eq!(
        positions.len(),
        ids.len(),
        "redelivered duplicates carry the same position header, so consumers can drop them"
    );
    eprintln!(
        "{} messages for {} changes ({} redelivered)",
        messages.len(),
        ids.len(),
        messages.len() - ids.len()
    );
    admin
        .query_drop(format!("DROP DATABASE `{db}`"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incompatible_schema_change_is_refused_with_the_registry_message() {
    let db = unique("hw_kcompat");
    let mut admin = mysql_admin().await;
    admin
        .query_drop(format!(
            "CREATE DATABASE `{db}`; CREATE TABLE `{db}`.t (id INT PRIMARY KEY)"
        ))
        .await
        .unwrap();
    let work = Workdir::new();
    work.mysql_config("kcompat", &db, "", "");
    let prefix = unique("hwk");
    let brokers = endpoint("HEADWATER_KAFKA_BROKERS");
    work.use_kafka_sink(&brokers, &prefix, "avro");
    work.catch_up();
    admin
        .query_drop(format!("INSERT INTO `{db}`.t VALUES (1)"))
        .await
        .unwrap();
    work.catch_up();
    // A NOT NULL column without a default: readers of the old schema cannot fill it (BACKWARD).
    admin
        .query_drop(format!(
            "ALTER TABLE `{db}`.t ADD COLUMN v INT NOT NULL; INSERT INTO `{db}`.t VALUES (2, 2)"
        ))
        .await
        .unwrap();
    let output = work.headwater(&["run", "--catch-up"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("rejected the new schema") && stderr.contains("incompatible"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{prefix}.{db}.t-value")),
        "names the subject: {stderr}"
    );
    admin
        .query_drop(format!("DROP DATABASE `{db}`"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_is_down_at_start_is_waited_for() {
    let db = unique("hw_klate");
    let mut admin = mysql_admin().await;
    admin
        .query_drop(format!(
            "CREATE DATABASE `{db}`; CREATE TABLE `{db}`.t (id INT PRIMARY KEY, pad VARCHAR(200))"
        ))
        .await
        .unwrap();
    let mut broker = PrivateBroker::not_started();
    let work = Workdir::new();
    work.mysql_config("klate", &db, "", "");
    let prefix = unique("hwk");
    work.use_kafka_sink(&broker.brokers(), &prefix, "avro");
    work.catch_up(); // records the starting point; nothing to produce yet
    let mut headwater = work.spawn();
    let mut next = 1;
    write_rows(&mut admin, &db, &mut next, 500).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        headwater.try_wait().unwrap().is_none(),
        "headwater waits for the broker instead of exiting"
    );
    broker.launch();
    let topic = format!("{prefix}.{db}.t");
    wait_until(
        Duration::from_secs(120),
        "the rows to arrive once the broker is up",
        || {
            try_consume(&broker.brokers(), "avro", &[&topic])
                .is_ok_and(|m| m.iter().map(id_of).collect::<HashSet<_>>().len() == 500)
        },
    );
    stop_gracefully(headwater);
    admin
        .query_drop(format!("DROP DATABASE `{db}`"))
        .await
        .unwrap();
}

#[test]
fn check_reports_unreachable_brokers_and_registry() {
    let work = Workdir::new();
    work.mysql_config("kcheck", "nothing", "", "");
    let closed = PrivateBroker::not_started();
    work.use_kafka_sink(&closed.brokers(), "kcheck", "avro");
    let text = std::fs::read_to_string(work.config()).unwrap().replace(
        &endpoint("HEADWATER_SCHEMA_REGISTRY"),
        &format!("http://{}", closed.brokers()),
    );
    std::fs::write(work.config(), text).unwrap();
    let output = work.headwater(&["check"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    assert!(
        stdout.contains("cannot be reached") && stdout.contains("sink.brokers"),
        "{stdout}"
    );
    assert!(
        stdout.contains("does not answer") && stdout.contains("sink.schema_registry"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_scram_credentials_pass_through_and_a_wrong_password_is_reported() {
    let broker = PrivateBroker::start_with_scram("hwuser", "hw-secret");
    let db = unique("hw_ksasl");
    let mut admin = mysql_admin().await;
    admin
        .query_drop(format!(
            "CREATE DATABASE `{db}`; CREATE TABLE `{db}`.t (id INT PRIMARY KEY, v INT NOT NULL)"
        ))
        .await
        .unwrap();
    let work = Workdir::new();
    work.mysql_config("ksasl", &db, "", "");
    let prefix = unique("hwsasl");
    work.use_kafka_sink(&broker.brokers(), &prefix, "json");
    let with_password = |password: &str| {
        let text = std::fs::read_to_string(work.config()).unwrap();
        let text = match text.find("[sink.producer]") {
            Some(start) => {
                let end = text.find("[state]").unwrap();
                format!("{}{}", &text[..start], &text[end..])
            }
            None => text,
        };
        let producer = format!(
            "[sink.producer]\n\"security.protocol\" = \"SASL_PLAINTEXT\"\n\"sasl.mechanism\" = \"SCRAM-SHA-512\"\n\"sasl.username\" = \"hwuser\"\n\"sasl.password\" = \"{password}\"\n\n[state]"
        );
        std::fs::write(work.config(), text.replacen("[state]", &producer, 1)).unwrap();
    };

    with_password("wrong");
    let checked = work.headwater(&["check"]);
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(
        !checked.status.success(),
        "a wrong password fails the check: {out}"
    );
    assert!(
        out.contains("sasl") || out.contains("SASL") || out.contains("authentication"),
        "says authentication failed: {out}"
    );
    assert!(
        !out.contains("wrong"),
        "the password is never printed: {out}"
    );

    with_password("hw-secret");
    work.catch_up();
    admin
        .query_drop(format!(
            "INSERT INTO `{db}`.t SELECT seq, seq FROM `{db}`.seq_1_to_30"
        ))
        .await
        .unwrap();
    work.catch_up();
    let topic = format!("{prefix}.{db}.t");
    let messages = try_consume_with(
        &broker.brokers(),
        "json",
        &[&topic],
        r#"{"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "hwuser", "sasl.password": "hw-secret"}"#,
    )
    .expect("consume with SASL");
    let ids: HashSet<i64> = messages.iter().map(id_of).collect();
    assert_eq!(ids, (1..=30).collect(), "every row arrived through SCRAM");
    admin
        .query_drop(format!("DROP DATABASE `{db}`"))
        .await
        .unwrap();
}

/// Turns on heartbeats every second in a Kafka sink's config.
fn with_heartbeats(work: &Workdir) {
    let text = std::fs::read_to_string(work.config()).expect("config");
    let text = text.replace(
        "partitions = 3\n",
        "partitions = 3\nheartbeat_interval = \"1s\"\n",
    );
    std::fs::write(work.config(), text).expect("config");
}

/// Runs the configured pipeline on a quiet source until three heartbeats are on the topic, and
/// checks them as a consumer of Debezium's heartbeats would read them.
fn three_heartbeats_arrive(work: &Workdir, brokers: &str, prefix: &str, format: &str) {
    with_heartbeats(work);
    let headwater = work.spawn();
    let topic = format!("__debezium-heartbeat.{prefix}");
    let mut beats = Vec::new();
    wait_until(
        Duration::from_secs(90),
        "three heartbeats on the heartbeat topic",
        || {
            beats = try_consume_at_most(brokers, format, &[&topic], 3).unwrap_or_default();
            beats.len() >= 3
        },
    );
    stop_gracefully(headwater);
    let times: Vec<i64> = beats
        .iter()
        .map(|beat| {
            assert_eq!(beat.key["serverName"], prefix, "{beat:?}");
            beat.value["ts_ms"].as_i64().expect("a ts_ms")
        })
        .collect();
    // one key, so one partition, in the order sent; the interval is a lower bound (the wall
    // clock may be slewed by a few milliseconds between them)
    assert!(beats.iter().all(|b| b.partition == beats[0].partition));
    for pair in times.windows(2) {
        assert!(
            pair[1] - pair[0] >= 900,
            "heartbeats closer than the interval: {times:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_arrive_at_their_interval_while_the_source_is_quiet() {
    let brokers = endpoint("HEADWATER_KAFKA_BROKERS");

    let db = unique("hw_kbeat");
    let mut admin = mysql_admin().await;
    admin
        .query_drop(format!(
            "CREATE DATABASE `{db}`; CREATE TABLE `{db}`.t (id INT PRIMARY KEY)"
        ))
        .await
        .unwrap();
    let work = Workdir::new();
    work.mysql_config("kbeat", &db, "", "");
    let prefix = unique("hwkb");
    work.use_kafka_sink(&brokers, &prefix, "avro");
    three_heartbeats_arrive(&work, &brokers, &prefix, "avro");
    admin
        .query_drop(format!("DROP DATABASE `{db}`"))
        .await
        .unwrap();

    let (schema, owner) = postgres_owned_schema("hw_pkbeat").await;
    owner
        .batch_execute(&format!("CREATE TABLE {schema}.t (id int PRIMARY KEY)"))
        .await
        .unwrap();
    let work = Workdir::new();
    work.postgres_config("pkbeat", &schema, "");
    let prefix = unique("hwpkb");
    work.use_kafka_sink(&brokers, &prefix, "json");
    three_heartbeats_arrive(&work, &brokers, &prefix, "json");
    postgres_cleanup(&schema, &work).await;
}

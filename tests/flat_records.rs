//! `envelope = "flat"` (Debezium's `ExtractNewRecordState`) end to end: into Kafka, read by
//! confluent-kafka's AvroDeserializer with deletes as tombstones, and into the Avro lake with
//! deletes rewritten as `__deleted = "true"`. Replaying the flat records gives `SELECT`.

mod common;

use apache_avro::types::Value as AvroValue;
use common::*;
use mysql_async::prelude::Queryable;
use std::collections::BTreeMap;

/// Adds `lines` to the config's `[sink]` section.
fn add_sink_keys(work: &Workdir, lines: &str) {
    let text = std::fs::read_to_string(work.config()).unwrap();
    let text = text.replacen("[sink]\n", &format!("[sink]\n{lines}\n"), 1);
    std::fs::write(work.config(), text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_flat_records_in_kafka_have_the_row_and_metadata_and_deletes_are_tombstones() {
    let db = unique("hw_flatk");
    let mut admin = mysql_admin().await;
    admin
        .query_drop(format!(
            "CREATE DATABASE `{db}`; CREATE TABLE `{db}`.t (id INT PRIMARY KEY, name VARCHAR(20), price DECIMAL(8,2));
             INSERT INTO `{db}`.t VALUES (1, 'pen', 1.50), (2, 'ink', 3.00)"
        ))
        .await
        .unwrap();
    let work = Workdir::new();
    work.mysql_config("flatk", &db, "snapshot = \"initial\"", "");
    let prefix = unique("hwflat");
    let brokers = endpoint("HEADWATER_KAFKA_BROKERS");
    work.use_kafka_sink(&brokers, &prefix, "avro");
    add_sink_keys(&work, "envelope = \"flat\"\ntombstones = false");
    work.catch_up();
    admin
        .query_drop(format!(
            "INSERT INTO `{db}`.t VALUES (3, 'cap', 0.25); UPDATE `{db}`.t SET price = 2.00 WHERE id = 1;
             DELETE FROM `{db}`.t WHERE id = 2"
        ))
        .await
        .unwrap();
    work.catch_up();

    let mut messages = consume(&brokers, "avro", &[&format!("{prefix}.{db}.t")]);
    messages.sort_by_key(|m| (m.partition, m.offset));
    assert_eq!(
        messages.len(),
        5,
        "two copied, one insert, one update, one delete"
    );
    let mut state = BTreeMap::new();
    for message in &messages {
        let id = message.key["id"].as_i64().expect("keyed by id");
        if message.value.is_null() {
            state.remove(&id);
            continue;
        }
        let value = &message.value;
        let fields: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            fields,
            ["__op", "__source_ts_ms", "id", "name", "price"],
            "the row's columns and the default metadata, no envelope"
        );
        assert!(["r", "c", "u"].contains(&value["__op"].as_str().unwrap()));
        assert!(value["__source_ts_ms"].as_i64().unwrap() > 1_600_000_000_000);
        state.insert(
            id,
            format!("{}|{}", value["name"].as_str().unwrap(), value["price"]),
        );
    }
    let expected: BTreeMap<i64, String> = admin
        .query::<(i64, String), _>(format!(
            "SELECT id, CONCAT(name, '|\"', price, '\"') FROM `{db}`.t"
        ))
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(state, expected);
    admin
        .query_drop(format!("DROP DATABASE `{db}`"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_flat_records_in_the_lake_rewrite_deletes_with_a_deleted_flag() {
    let (schema, owner) = postgres_owned_schema("hw_flatl").await;
    owner
        .batch_execute(&format!(
            "CREATE TABLE {schema}.t (id INT PRIMARY KEY, name TEXT);
             INSERT INTO {schema}.t VALUES (1, 'pen'), (2, 'ink')"
        ))
        .await
        .unwrap();
    let work = Workdir::new();
    work.postgres_config("flatl", &schema, "snapshot = \"initial\"");
    add_sink_keys(
        &work,
        "envelope = \"flat\"\nflat_fields = [\"op\", \"table\", \"position\", \"transaction_id\"]",
    );
    work.catch_up();
    owner
        .batch_execute(&format!(
            "INSERT INTO {schema}.t VALUES (3, 'cap'); UPDATE {schema}.t SET name = 'nib' WHERE id = 1;
             DELETE FROM {schema}.t WHERE id = 2"
        ))
        .await
        .unwrap();
    work.catch_up();

    let records = read_stream(&work.lake(), &format!("flatl.{schema}.t"));
    assert_eq!(records.len(), 5);
    let mut state = BTreeMap::new();
    for record in &records {
        let AvroValue::Record(fields) = record else {
            panic!("{record:?}")
        };
        let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "id",
                "name",
                "__unchanged_toast",
                "__op",
                "__table",
                "__position",
                "__transaction_id",
                "__deleted"
            ]
        );
        assert_eq!(render(field(record, "__table")), "t");
        assert!(render(field(record, "__position")).contains('/'), "an LSN");
        let op = render(field(record, "__op"));
        let id = avro_int(field(record, "id"));
        assert_eq!(
            render(field(record, "__transaction_id")) == "NULL",
            op == "r",
            "streamed changes name their transaction, copied rows none"
        );
        if render(field(record, "__deleted")) == "true" {
            assert_eq!(op, "d");
            state.remove(&id);
        } else {
            state.insert(id, render(field(record, "name")));
        }
    }
    let expected: BTreeMap<i64, String> = owner
        .query(&format!("SELECT id, name FROM {schema}.t"), &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (i64::from(row.get::<_, i32>(0)), row.get(1)))
        .collect();
    assert_eq!(state, expected);
    postgres_cleanup(&schema, &work).await;
}

#[test]
fn flat_keys_without_the_flat_envelope_or_a_lake_tombstone_are_config_errors() {
    let work = Workdir::new();
    work.mysql_config("flatbad", "db", "", "flat_deletes = \"drop\"");
    let output = work.headwater(&["check"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("sink.envelope = \"flat\""),
        "{stderr}"
    );
    work.mysql_config(
        "flatbad",
        "db",
        "",
        "envelope = \"flat\"\nflat_deletes = \"tombstone\"",
    );
    let output = work.headwater(&["check"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success()
            && stderr.contains("needs Kafka")
            && stderr.contains("headwater.toml:"),
        "{stderr}"
    );
}

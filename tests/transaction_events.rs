//! `pipeline.transaction_events`: a BEGIN and an END record around each transaction, END
//! counting its changes per table, with the id each change's `transaction.id` carries; into
//! the Avro lake from MariaDB and into Kafka (JSON) from PostgreSQL.

mod common;

use apache_avro::types::Value as AvroValue;
use common::*;
use mysql_async::prelude::Queryable;
use std::collections::BTreeMap;

fn enable(work: &Workdir) {
    let text = std::fs::read_to_string(work.config()).unwrap();
    std::fs::write(
        work.config(),
        format!("{text}\n[pipeline]\ntransaction_events = true\n"),
    )
    .unwrap();
}

/// `db.table` → count, from an END record's `data_collections` rendered by apache-avro.
fn collections(value: &AvroValue) -> BTreeMap<String, i64> {
    let Some(AvroValue::Array(items)) = unwrap_union(value) else {
        panic!("data_collections: {value:?}")
    };
    items
        .iter()
        .map(|item| {
            (
                render(field(item, "data_collection")),
                avro_int(field(item, "event_count")),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_transactions_get_begin_and_end_records_counting_their_changes() {
    let db = unique("hw_txev");
    let mut admin = mysql_admin().await;
    admin
        .query_drop(format!(
            "CREATE DATABASE `{db}`; CREATE TABLE `{db}`.a (id INT PRIMARY KEY); CREATE TABLE `{db}`.b (id INT PRIMARY KEY)"
        ))
        .await
        .unwrap();
    let work = Workdir::new();
    work.mysql_config("txev", &db, "", "");
    enable(&work);
    work.catch_up();
    admin
        .query_drop(format!(
            "START TRANSACTION; INSERT INTO `{db}`.a VALUES (1), (2); INSERT INTO `{db}`.b VALUES (1); COMMIT;
             UPDATE `{db}`.a SET id = 3 WHERE id = 1"
        ))
        .await
        .unwrap();
    work.catch_up();

    let events = read_stream(&work.lake(), "txev.transaction");
    let statuses: Vec<String> = events.iter().map(|e| render(field(e, "status"))).collect();
    assert_eq!(statuses, ["BEGIN", "END", "BEGIN", "END"], "{events:?}");
    let first_id = render(field(&events[0], "id"));
    assert_eq!(render(field(&events[1], "id")), first_id);
    assert_eq!(
        avro_int(unwrap_union(field(&events[1], "event_count")).unwrap()),
        3
    );
    assert_eq!(
        collections(field(&events[1], "data_collections")),
        BTreeMap::from([(format!("{db}.a"), 2), (format!("{db}.b"), 1)])
    );
    assert_eq!(
        render(field(&events[0], "event_count")),
        "NULL",
        "BEGIN counts nothing"
    );
    // the key change is a delete and a create: two changes of one transaction
    assert_eq!(
        avro_int(unwrap_union(field(&events[3], "event_count")).unwrap()),
        2
    );
    let changes = read_stream(&work.lake(), &format!("txev.{db}.a"));
    let change_ids: Vec<String> = changes
        .iter()
        .map(|c| render(field(unwrap_union(field(c, "transaction")).unwrap(), "id")))
        .collect();
    assert_eq!(change_ids[0], first_id, "the id the changes carry");
    assert_eq!(
        change_ids[2],
        render(field(&events[2], "id")),
        "the second transaction's"
    );
    admin
        .query_drop(format!("DROP DATABASE `{db}`"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_transaction_events_go_to_their_kafka_topic() {
    let (schema, owner) = postgres_owned_schema("hw_ptxev").await;
    owner
        .batch_execute(&format!("CREATE TABLE {schema}.t (id INT PRIMARY KEY)"))
        .await
        .unwrap();
    let work = Workdir::new();
    work.postgres_config("ptxev", &schema, "");
    let prefix = unique("hwtx");
    let brokers = endpoint("HEADWATER_KAFKA_BROKERS");
    work.use_kafka_sink(&brokers, &prefix, "json");
    enable(&work);
    work.catch_up();
    owner
        .batch_execute(&format!(
            "BEGIN; INSERT INTO {schema}.t VALUES (1), (2), (3); COMMIT"
        ))
        .await
        .unwrap();
    work.catch_up();
    let mut events = consume(&brokers, "json", &[&format!("{prefix}.transaction")]);
    events.sort_by_key(|m| (m.partition, m.offset));
    let statuses: Vec<&str> = events
        .iter()
        .map(|m| m.value["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["BEGIN", "END"]);
    let end = &events[1].value;
    assert_eq!(end["event_count"], 3);
    assert_eq!(
        end["data_collections"][0]["data_collection"],
        format!("{schema}.t")
    );
    assert_eq!(
        events[1].key["id"], end["id"],
        "keyed by the transaction id"
    );
    let changes = consume(&brokers, "json", &[&format!("{prefix}.{schema}.t")]);
    assert!(changes
        .iter()
        .all(|m| m.value["transaction"]["id"] == end["id"]));
    postgres_cleanup(&schema, &work).await;
}

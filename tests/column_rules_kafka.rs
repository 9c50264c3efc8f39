//! `[source.columns]` and the value modes into Kafka: read back with confluent-kafka's
//! AvroDeserializer (schemas fetched from the registry by id), an excluded column is in no
//! message and in no registered schema, a hashed column equals MariaDB's own `SHA2`, decimals
//! arrive as MariaDB's text of them and binary as its `HEX`.

mod common;

use common::*;
use mysql_async::prelude::Queryable;
use std::collections::BTreeMap;
use std::process::Command;

const SALT: &str = "kafka-salt-19";
const SSN: &str = "987-65-4321";

/// The latest schema registered under `subject`, as the registry returns it.
fn registered_schema(subject: &str) -> String {
    let url = format!(
        "{}/subjects/{subject}/versions/latest",
        endpoint("HEADWATER_SCHEMA_REGISTRY")
    );
    let output = Command::new("python3")
        .args([
            "-c",
            "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())",
            &url,
        ])
        .output()
        .expect("python3");
    assert!(
        output.status.success(),
        "{url}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).to_string()
}

/// `(email, amount, photo)` as text.
type Row = (String, String, String);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_column_rules_and_value_modes_reach_kafka_as_configured() {
    let db = unique("hw_kcols");
    let mut admin = mysql_admin().await;
    admin
        .query_drop(format!(
            "CREATE DATABASE `{db}`;
             CREATE TABLE `{db}`.customers (id INT PRIMARY KEY, email VARCHAR(100), ssn VARCHAR(20),
               amount DECIMAL(10,2), photo BLOB);
             INSERT INTO `{db}`.customers VALUES (1, 'ann@example.com', '{SSN}', 12.50, x'00ff')"
        ))
        .await
        .unwrap();
    let work = Workdir::new();
    work.mysql_config(
        "kcols",
        &db,
        &format!(
            r#"snapshot = "initial"
decimal_handling = "string"
binary_handling = "hex"

[source.columns]
exclude = ["{db}.customers.ssn"]
hash = ["{db}.customers.email"]
hash_salt = "{SALT}"
"#
        ),
        "",
    );
    let prefix = unique("hwkc");
    let brokers = endpoint("HEADWATER_KAFKA_BROKERS");
    work.use_kafka_sink(&brokers, &prefix, "avro");
    work.catch_up();
    admin
        .query_drop(format!(
            "INSERT INTO `{db}`.customers VALUES (2, 'bo@example.com', '{SSN}', -0.05, x'abcdef');
             UPDATE `{db}`.customers SET email = 'ann@new.example', ssn = '111', amount = 99999999.99 WHERE id = 1"
        ))
        .await
        .unwrap();
    work.catch_up();

    let topic = format!("{prefix}.{db}.customers");
    let messages = consume(&brokers, "avro", &[&topic]);
    assert_eq!(messages.len(), 3, "the copy, the insert, the update");
    let mut found: BTreeMap<i64, Row> = BTreeMap::new();
    for message in &messages {
        let after = message.value["after"]
            .as_object()
            .unwrap_or_else(|| panic!("an after image: {message:?}"));
        let mut names: Vec<&str> = after.keys().map(String::as_str).collect();
        names.sort();
        assert_eq!(names, ["amount", "email", "id", "photo"], "{message:?}");
        let text = |name: &str| after[name].as_str().unwrap_or("NULL").to_string();
        found.insert(
            after["id"].as_i64().expect("an id"),
            (text("email"), text("amount"), text("photo")),
        );
        assert!(
            !format!("{message:?}").contains(SSN),
            "the excluded value is in {message:?}"
        );
    }
    let expected: BTreeMap<i64, Row> = admin
        .query::<(i64, String, String, String), _>(format!(
            "SELECT id, SHA2(CONCAT('{SALT}', email), 256), CAST(amount AS CHAR), LOWER(HEX(photo))
             FROM `{db}`.customers"
        ))
        .await
        .unwrap()
        .into_iter()
        .map(|(id, email, amount, photo)| (id, (email, amount, photo)))
        .collect();
    assert_eq!(found, expected);
    let value_schema = registered_schema(&format!("{topic}-value"));
    assert!(value_schema.contains("email"), "{value_schema}");
    assert!(
        !value_schema.contains("ssn"),
        "the excluded column is in the registered schema: {value_schema}"
    );
    admin
        .query_drop(format!("DROP DATABASE `{db}`"))
        .await
        .unwrap();
}

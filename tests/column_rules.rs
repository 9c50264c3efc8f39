//! `[source.columns]` end to end on both sources: excluded, masked, hashed and truncated
//! columns through a snapshot and the stream, into the lake, read back with apache-avro. The
//! expected values come from the databases' own functions (`SHA2`, `sha256`, `LEFT`), and no
//! excluded name or value may show in a record, a schema, the state or a log line. And
//! `decimal_handling` / `binary_handling`, compared with the databases' own text, float and
//! base64/hex of the same values.

mod common;

use apache_avro::types::Value as AvroValue;
use common::*;
use mysql_async::prelude::Queryable;
use std::collections::BTreeMap;

const SALT: &str = "pepper-7f3a";
const SSN: &str = "123-45-6789";

const CUSTOMERS: SnapshotTable = SnapshotTable {
    name: "customers",
    key: &["id"],
    columns: &["id", "email", "card", "note", "photo"],
};

fn rules(namespace: &str) -> String {
    format!(
        r#"snapshot = "initial"

[source.columns]
exclude = ["{namespace}.customers.ssn"]
mask = {{ "{namespace}.customers.card" = 4 }}
hash = ["{namespace}.customers.EMAIL"]
hash_salt = "{SALT}"
truncate = {{ "{namespace}.customers.note" = 5, "{namespace}.customers.photo" = 2 }}
"#
    )
}

/// Every file under `dir`, as text where it is (schemas, state, manifests).
fn all_text_under(dir: &std::path::Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            text.push_str(&all_text_under(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            text.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    text
}

/// The records' images never have `ssn`, and nothing Headwater wrote or logged names it.
fn assert_excluded_everywhere(work: &Workdir, stream: &str, logs: &str) {
    let records = read_stream(&work.lake(), stream);
    assert!(
        records.len() >= 4,
        "the copy and the changes: {}",
        records.len()
    );
    for record in &records {
        for which in ["before", "after"] {
            if let Some(image) = image(record, which) {
                let mut names: Vec<&str> = image.keys().map(String::as_str).collect();
                names.sort();
                names.retain(|n| *n != "__unchanged_toast");
                assert_eq!(
                    names,
                    ["card", "email", "id", "note", "photo"],
                    "{record:?}"
                );
            }
        }
    }
    // the config names the column; what Headwater wrote must not
    let written = all_text_under(&work.lake()) + &all_text_under(&work.path().join("state"));
    assert!(written.contains("email"), "the scan reads the schemas");
    for secret in ["ssn", SSN, SALT] {
        assert!(
            !written.contains(secret),
            "`{secret}` is in a file Headwater wrote (schemas, lake headers, state)"
        );
        assert!(!logs.contains(secret), "`{secret}` is in the logs:\n{logs}");
    }
}

fn run_logged(work: &Workdir) -> String {
    let output = work.headwater(&["run", "--catch-up"]);
    let logs = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(output.status.success(), "{logs}");
    logs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_columns_are_excluded_masked_hashed_and_truncated_before_any_sink() {
    let db = unique("hw_cols");
    let mut admin = mysql_admin().await;
    admin
        .query_drop(format!(
            "CREATE DATABASE `{db}`;
             CREATE TABLE `{db}`.customers (id INT PRIMARY KEY, email VARCHAR(100), ssn VARCHAR(20),
               card BIGINT, note TEXT, photo BLOB);
             INSERT INTO `{db}`.customers VALUES
               (1, 'ann@example.com', '{SSN}', 4111111111111111, 'a long note', x'010203'),
               (2, NULL, '{SSN}', NULL, NULL, NULL)"
        ))
        .await
        .unwrap();
    let work = Workdir::new();
    work.mysql_config("cols", &db, &rules(&db), "");
    let mut logs = run_logged(&work);
    admin
        .query_drop(format!(
            "INSERT INTO `{db}`.customers VALUES (3, 'bo@example.com', '{SSN}', 5500, 'héllo wörld', x'ff');
             UPDATE `{db}`.customers SET email = 'ann@new.example', ssn = '999', note = 'x' WHERE id = 1;
             DELETE FROM `{db}`.customers WHERE id = 2"
        ))
        .await
        .unwrap();
    logs.push_str(&run_logged(&work));

    let expected: BTreeMap<String, String> = admin
        .query::<(String, String), _>(format!(
            "SELECT CAST(id AS CHAR), CONCAT_WS('|', id,
                COALESCE(SHA2(CONCAT('{SALT}', email), 256), 'NULL'),
                IF(card IS NULL, 'NULL', '****'), COALESCE(LEFT(note, 5), 'NULL'),
                COALESCE(CONCAT('Bytes(', HEX(LEFT(photo, 2)), ')'), 'NULL'))
             FROM `{db}`.customers"
        ))
        .await
        .unwrap()
        .into_iter()
        .collect();
    let stream = format!("cols.{db}.customers");
    let found = lake_state_hex(&work, &stream);
    assert_same_state(&CUSTOMERS, &expected, &found);
    assert_excluded_everywhere(&work, &stream, &logs);
    admin
        .query_drop(format!("DROP DATABASE `{db}`"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_columns_are_excluded_masked_hashed_and_truncated_before_any_sink() {
    let (schema, owner) = postgres_owned_schema("hw_pcols").await;
    owner
        .batch_execute(&format!(
            "CREATE TABLE {schema}.customers (id INT PRIMARY KEY, email TEXT, ssn TEXT, card BIGINT,
               note TEXT, photo BYTEA);
             INSERT INTO {schema}.customers VALUES
               (1, 'ann@example.com', '{SSN}', 4111111111111111, 'a long note', '\\x010203'),
               (2, NULL, '{SSN}', NULL, NULL, NULL)"
        ))
        .await
        .unwrap();
    let work = Workdir::new();
    work.postgres_config("pcols", &schema, &rules(&schema));
    let mut logs = run_logged(&work);
    owner
        .batch_execute(&format!(
            "INSERT INTO {schema}.customers VALUES (3, 'bo@example.com', '{SSN}', 5500, 'héllo wörld', '\\xff');
             UPDATE {schema}.customers SET email = 'ann@new.example', ssn = '999', note = 'x' WHERE id = 1;
             DELETE FROM {schema}.customers WHERE id = 2"
        ))
        .await
        .unwrap();
    logs.push_str(&run_logged(&work));

    let expected: BTreeMap<String, String> = owner
        .query(
            &format!(
                "SELECT id::text, concat_ws('|', id,
                    coalesce(encode(sha256(convert_to('{SALT}' || email, 'UTF8')), 'hex'), 'NULL'),
                    CASE WHEN card IS NULL THEN 'NULL' ELSE '****' END, coalesce(left(note, 5), 'NULL'),
                    coalesce('Bytes(' || upper(encode(substring(photo FROM 1 FOR 2), 'hex')) || ')', 'NULL'))
                 FROM {schema}.customers"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let stream = format!("pcols.{schema}.customers");
    let found = lake_state_hex(&work, &stream);
    assert_same_state(&CUSTOMERS, &expected, &found);
    assert_excluded_everywhere(&work, &stream, &logs);
    postgres_cleanup(&schema, &work).await;
}

/// `lake_state`, with binary values as `Bytes(<HEX>)` so SQL can produce the same text.
fn lake_state_hex(work: &Workdir, stream: &str) -> BTreeMap<String, String> {
    lake_state(work, stream, &CUSTOMERS)
        .into_iter()
        .map(|(key, row)| (key, hex_bytes(&row)))
        .collect()
}

/// `Bytes([1, 2])` (apache-avro's rendering) as `Bytes(0102)`.
fn hex_bytes(row: &str) -> String {
    let Some(start) = row.find("Bytes([") else {
        return row.to_string();
    };
    let end = row[start..].find("])").map_or(row.len(), |e| start + e);
    let hex: String = row[start + 7..end]
        .split(", ")
        .filter(|b| !b.is_empty())
        .map(|b| format!("{:02X}", b.parse::<u8>().unwrap_or(0)))
        .collect();
    format!("{}Bytes({hex}){}", &row[..start], &row[end + 2..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_on_a_primary_key_or_without_a_table_stop_with_the_key_to_change() {
    let db = unique("hw_colkey");
    let mut admin = mysql_admin().await;
    admin
        .query_drop(format!(
            "CREATE DATABASE `{db}`; CREATE TABLE `{db}`.t (id INT PRIMARY KEY, v INT);
             INSERT INTO `{db}`.t VALUES (1, 1)"
        ))
        .await
        .unwrap();
    let work = Workdir::new();
    work.mysql_config(
        "colkey",
        &db,
        &format!("snapshot = \"initial\"\ncolumns.exclude = [\"{db}.t.id\"]"),
        "",
    );
    let output = work.headwater(&["run", "--catch-up"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("primary-key column") && stderr.contains("source.columns"),
        "{stderr}"
    );
    assert!(
        read_stream(&work.lake(), &format!("colkey.{db}.t")).is_empty(),
        "nothing was written"
    );
    let checked = work.headwater(&["check"]);
    let report = String::from_utf8_lossy(&checked.stdout).to_string()
        + &String::from_utf8_lossy(&checked.stderr);
    assert!(!checked.status.success());
    assert!(
        report.contains("primary-key column") && report.contains("change source.columns"),
        "`headwater check` finds it before any run: {report}"
    );

    work.mysql_config("colkey", &db, "columns.exclude = [\"t.id\"]", "");
    let output = work.headwater(&["check"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let config = std::fs::read_to_string(work.config()).unwrap();
    let line = config
        .lines()
        .position(|l| l.starts_with("columns.exclude"))
        .unwrap()
        + 1;
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!("headwater.toml:{line}"))
            && stderr.contains("database.table.column"),
        "the error points at the line and shows the form: {stderr}"
    );
    admin
        .query_drop(format!("DROP DATABASE `{db}`"))
        .await
        .unwrap();
}

/// Three nullable texts of one row.
type TextRow = (Option<String>, Option<String>, Option<String>);

/// The last after image of each key, by id.
fn last_images(
    work: &Workdir,
    stream: &str,
) -> BTreeMap<i64, std::collections::HashMap<String, AvroValue>> {
    let mut state = BTreeMap::new();
    for record in read_stream(&work.lake(), stream) {
        if let Some(after) = image(&record, "after") {
            state.insert(avro_int(&after["id"]), after);
        }
    }
    state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_decimals_as_strings_and_binary_as_base64() {
    let db = unique("hw_dech");
    let mut admin = mysql_admin().await;
    admin
        .query_drop(format!(
            "CREATE DATABASE `{db}`;
             CREATE TABLE `{db}`.t (id INT PRIMARY KEY, price DECIMAL(12,3), big DECIMAL(65,30), data BLOB);
             INSERT INTO `{db}`.t VALUES (1, 12.345, -0.000000000000000000000000000001, x'00ff10'), (2, NULL, 1, x'')"
        ))
        .await
        .unwrap();
    let work = Workdir::new();
    work.mysql_config(
        "dech",
        &db,
        "snapshot = \"initial\"\ndecimal_handling = \"string\"\nbinary_handling = \"base64\"",
        "",
    );
    work.catch_up();
    admin
        .query_drop(format!(
            "INSERT INTO `{db}`.t VALUES (3, -99999.999, 123456789012345678901234567890.5, x'68656c6c6f')"
        ))
        .await
        .unwrap();
    work.catch_up();
    let expected: Vec<(i64, TextRow)> = admin
        .query(format!(
            "SELECT id, CAST(price AS CHAR), CAST(big AS CHAR), TO_BASE64(data) FROM `{db}`.t ORDER BY id"
        ))
        .await
        .unwrap()
        .into_iter()
        .map(|(id, price, big, data)| (id, (price, big, data)))
        .collect();
    let found = last_images(&work, &format!("dech.{db}.t"));
    assert_eq!(found.len(), expected.len());
    let text = |v: &AvroValue| match v {
        AvroValue::Null => None,
        AvroValue::String(s) => Some(s.clone()),
        other => panic!("a string, not {other:?}"),
    };
    for (id, values) in expected {
        let row = &found[&id];
        assert_eq!(
            (text(&row["price"]), text(&row["big"]), text(&row["data"])),
            values,
            "row {id}"
        );
    }
    admin
        .query_drop(format!("DROP DATABASE `{db}`"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_decimals_as_doubles_and_binary_as_hex() {
    let (schema, owner) = postgres_owned_schema("hw_pdech").await;
    owner
        .batch_execute(&format!(
            "CREATE TABLE {schema}.t (id INT PRIMARY KEY, price NUMERIC(12,3), free NUMERIC, data BYTEA);
             INSERT INTO {schema}.t VALUES (1, 12.345, 'NaN', '\\x00ff10'), (2, NULL, 0.1, NULL)"
        ))
        .await
        .unwrap();
    let work = Workdir::new();
    work.postgres_config(
        "pdech",
        &schema,
        "snapshot = \"initial\"\ndecimal_handling = \"double\"\nbinary_handling = \"hex\"",
    );
    work.catch_up();
    owner
        .batch_execute(&format!(
            "INSERT INTO {schema}.t VALUES (3, -99999.999, 'Infinity', '\\x68656c6c6f')"
        ))
        .await
        .unwrap();
    work.catch_up();
    let rows = owner
        .query(
            &format!("SELECT id, price::float8, free::float8, encode(data, 'hex') FROM {schema}.t ORDER BY id"),
            &[],
        )
        .await
        .unwrap();
    let found = last_images(&work, &format!("pdech.{schema}.t"));
    assert_eq!(found.len(), rows.len());
    let double = |v: &AvroValue| match v {
        AvroValue::Null => None,
        AvroValue::Double(x) => Some(x.to_string()),
        other => panic!("a double, not {other:?}"),
    };
    for row in rows {
        let id: i32 = row.get(0);
        let image = &found[&i64::from(id)];
        let expected = (
            row.get::<_, Option<f64>>(1).map(|x| x.to_string()),
            row.get::<_, Option<f64>>(2).map(|x| x.to_string()),
            row.get::<_, Option<String>>(3),
        );
        let data = match &image["data"] {
            AvroValue::Null => None,
            AvroValue::String(s) => Some(s.clone()),
            other => panic!("hex text, not {other:?}"),
        };
        assert_eq!(
            (double(&image["price"]), double(&image["free"]), data),
            expected,
            "row {id}"
        );
    }
    postgres_cleanup(&schema, &work).await;
}

//! The MySQL/MariaDB source end to end, against the real MariaDB from `scripts/services.sh`.

mod common;

use apache_avro::types::Value as AvroValue;
use common::*;
use mysql_async::prelude::Queryable;
use std::collections::HashMap;
use std::time::Duration;

/// One column of the type-fidelity table: its SQL type, a canonical text form computed by the
/// server, and the values inserted (row by row).
struct TypedColumn {
    name: &'static str,
    sql_type: &'static str,
    canonical_sql: &'static str,
    values: [&'static str; 3],
}

const COLUMNS: &[TypedColumn] = &[
    TypedColumn {
        name: "c_tiny",
        sql_type: "TINYINT",
        canonical_sql: "CAST(c_tiny AS CHAR)",
        values: ["-128", "127", "0"],
    },
    TypedColumn {
        name: "c_utiny",
        sql_type: "TINYINT UNSIGNED",
        canonical_sql: "CAST(c_utiny AS CHAR)",
        values: ["255", "0", "1"],
    },
    TypedColumn {
        name: "c_small",
        sql_type: "SMALLINT",
        canonical_sql: "CAST(c_small AS CHAR)",
        values: ["-32768", "32767", "7"],
    },
    TypedColumn {
        name: "c_usmall",
        sql_type: "SMALLINT UNSIGNED",
        canonical_sql: "CAST(c_usmall AS CHAR)",
        values: ["65535", "0", "1"],
    },
    TypedColumn {
        name: "c_medium",
        sql_type: "MEDIUMINT",
        canonical_sql: "CAST(c_medium AS CHAR)",
        values: ["-8388608", "8388607", "-1"],
    },
    TypedColumn {
        name: "c_umedium",
        sql_type: "MEDIUMINT UNSIGNED",
        canonical_sql: "CAST(c_umedium AS CHAR)",
        values: ["16777215", "0", "1"],
    },
    TypedColumn {
        name: "c_int",
        sql_type: "INT",
        canonical_sql: "CAST(c_int AS CHAR)",
        values: ["-2147483648", "2147483647", "0"],
    },
    TypedColumn {
        name: "c_uint",
        sql_type: "INT UNSIGNED",
        canonical_sql: "CAST(c_uint AS CHAR)",
        values: ["4294967295", "0", "1"],
    },
    TypedColumn {
        name: "c_big",
        sql_type: "BIGINT",
        canonical_sql: "CAST(c_big AS CHAR)",
        values: ["-9223372036854775808", "9223372036854775807", "0"],
    },
    TypedColumn {
        name: "c_ubig",
        sql_type: "BIGINT UNSIGNED",
        canonical_sql: "CAST(c_ubig AS CHAR)",
        values: ["18446744073709551615", "0", "9223372036854775808"],
    },
    TypedColumn {
        name: "c_dec",
        sql_type: "DECIMAL(10,2)",
        canonical_sql: "CAST(c_dec AS CHAR)",
        values: ["-12345678.99", "0.01", "0.00"],
    },
    TypedColumn {
        name: "c_dec_wide",
        sql_type: "DECIMAL(65,30)",
        canonical_sql: "CAST(c_dec_wide AS CHAR)",
        values: [
            "-99999999999999999999999999999999999.999999999999999999999999999999",
            "1.000000000000000000000000000001",
            "0",
        ],
    },
    TypedColumn {
        name: "c_dec_int",
        sql_type: "DECIMAL(18,0)",
        canonical_sql: "CAST(c_dec_int AS CHAR)",
        values: ["-999999999999999999", "123456789012345678", "5"],
    },
    TypedColumn {
        name: "c_float",
        sql_type: "FLOAT",
        canonical_sql: "CAST(c_float AS DOUBLE)",
        values: ["1.5", "-0.25", "0"],
    },
    TypedColumn {
        name: "c_double",
        sql_type: "DOUBLE",
        canonical_sql: "c_double",
        values: ["3.5e300", "-2.25e-300", "0.1"],
    },
    TypedColumn {
        name: "c_date",
        sql_type: "DATE",
        canonical_sql: "CAST(DATEDIFF(c_date, '1970-01-01') AS CHAR)",
        values: ["'1000-01-01'", "'9999-12-31'", "'1969-12-31'"],
    },
    TypedColumn {
        name: "c_datetime",
        sql_type: "DATETIME(6)",
        canonical_sql:
            "CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', c_datetime) AS CHAR)",
        values: [
            "'1000-01-01 00:00:00.000000'",
            "'9999-12-31 23:59:59.999999'",
            "'2024-02-29 12:34:56.5'",
        ],
    },
    TypedColumn {
        name: "c_datetime0",
        sql_type: "DATETIME",
        canonical_sql:
            "CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', c_datetime0) AS CHAR)",
        values: [
            "'1970-01-01 00:00:01'",
            "'2038-01-19 03:14:08'",
            "'1900-06-15 08:00:00'",
        ],
    },
    TypedColumn {
        name: "c_timestamp",
        sql_type: "TIMESTAMP(6) NULL",
        canonical_sql: "CAST(CAST(UNIX_TIMESTAMP(c_timestamp) * 1000000 AS DECIMAL(30,0)) AS CHAR)",
        values: [
            "'1970-01-01 00:00:01.000001'",
            "'2038-01-19 03:14:07.999999'",
            "'2001-09-09 01:46:40.25'",
        ],
    },
    TypedColumn {
        name: "c_time",
        sql_type: "TIME(6)",
        canonical_sql: "CAST(CAST(TIME_TO_SEC(c_time) * 1000000 AS DECIMAL(30,0)) AS CHAR)",
        values: [
            "'-838:59:59.000000'",
            "'838:59:59.000000'",
            "'-00:00:01.250000'",
        ],
    },
    TypedColumn {
        name: "c_time0",
        sql_type: "TIME",
        canonical_sql: "CAST(CAST(TIME_TO_SEC(c_time0) * 1000000 AS DECIMAL(30,0)) AS CHAR)",
        values: ["'25:00:00'", "'-01:02:03'", "'00:00:00'"],
    },
    TypedColumn {
        name: "c_year",
        sql_type: "YEAR",
        canonical_sql: "CAST(c_year + 0 AS CHAR)",
        values: ["0", "1901", "2155"],
    },
    TypedColumn {
        name: "c_char",
        sql_type: "CHAR(10)",
        canonical_sql: "c_char",
        values: ["'abc'", "''", "'Ünïcødé'"],
    },
    TypedColumn {
        name: "c_varchar",
        sql_type: "VARCHAR(300)",
        canonical_sql: "c_varchar",
        values: ["'hello 🌊 world'", "''", "REPEAT('x', 300)"],
    },
    TypedColumn {
        name: "c_latin1",
        sql_type: "VARCHAR(20) CHARACTER SET latin1",
        canonical_sql: "c_latin1",
        values: ["'café €uro'", "''", "'ÿ'"],
    },
    TypedColumn {
        name: "c_text",
        sql_type: "TEXT",
        canonical_sql: "c_text",
        values: ["'multi\\nline'", "''", "REPEAT('é', 10000)"],
    },
    TypedColumn {
        name: "c_longtext",
        sql_type: "LONGTEXT",
        canonical_sql: "c_longtext",
        values: ["REPEAT('ab', 100000)", "''", "'z'"],
    },
    TypedColumn {
        name: "c_json",
        sql_type: "JSON",
        canonical_sql: "c_json",
        values: ["'{\"a\": [1, 2, {\"b\": null}]}'", "'[]'", "'\"str\"'"],
    },
    TypedColumn {
        name: "c_binary",
        sql_type: "BINARY(4)",
        canonical_sql: "HEX(c_binary)",
        values: ["X'01020300'", "X'00000000'", "X'FF'"],
    },
    TypedColumn {
        name: "c_varbinary",
        sql_type: "VARBINARY(10)",
        canonical_sql: "HEX(c_varbinary)",
        values: ["X'00FF00'", "X''", "X'0000'"],
    },
    TypedColumn {
        name: "c_blob",
        sql_type: "BLOB",
        canonical_sql: "HEX(c_blob)",
        values: ["X'DEADBEEF'", "X''", "REPEAT(X'00', 1000)"],
    },
    TypedColumn {
        name: "c_enum",
        sql_type: "ENUM('small','medium','large')",
        canonical_sql: "CAST(c_enum AS CHAR)",
        values: ["'small'", "'large'", "'medium'"],
    },
    TypedColumn {
        name: "c_set",
        sql_type: "SET('a','b','c','d')",
        canonical_sql: "CAST(c_set AS CHAR)",
        values: ["'a,d'", "''", "'a,b,c,d'"],
    },
    TypedColumn {
        name: "c_bit1",
        sql_type: "BIT(1)",
        canonical_sql: "CAST(c_bit1 + 0 AS CHAR)",
        values: ["b'1'", "b'0'", "b'1'"],
    },
    TypedColumn {
        name: "c_bit10",
        sql_type: "BIT(10)",
        canonical_sql: "LPAD(HEX(c_bit10), 4, '0')",
        values: ["b'1111111111'", "b'0'", "b'1000000001'"],
    },
    TypedColumn {
        name: "c_bool",
        sql_type: "BOOLEAN",
        canonical_sql: "CAST(c_bool AS CHAR)",
        values: ["TRUE", "FALSE", "TRUE"],
    },
];

fn decimal_text(decimal: &apache_avro::Decimal, scale: usize) -> String {
    let bytes: Vec<u8> = decimal.try_into().expect("decimal bytes");
    headwater_contract::avro_json::decimal_text(&bytes, scale)
}

/// Renders a decoded Avro value the way the column's `canonical_sql` renders it.
fn canonical(value: &AvroValue, column: &TypedColumn) -> Option<String> {
    let scale = column
        .sql_type
        .split_once(',')
        .and_then(|(_, s)| s.trim_end_matches(')').parse::<usize>().ok())
        .unwrap_or(0);
    Some(match value {
        AvroValue::Null => return None,
        AvroValue::Int(n) | AvroValue::Date(n) => n.to_string(),
        AvroValue::Long(n) | AvroValue::TimestampMicros(n) | AvroValue::LocalTimestampMicros(n) => {
            n.to_string()
        }
        AvroValue::Float(x) => f64::from(*x).to_string(),
        AvroValue::Double(x) => x.to_string(),
        AvroValue::Decimal(d) => decimal_text(d, scale),
        AvroValue::String(s) => s.clone(),
        AvroValue::Uuid(u) => u.to_string(),
        AvroValue::Boolean(b) => if *b { "1" } else { "0" }.to_string(),
        AvroValue::Bytes(b) => b.iter().map(|b| format!("{b:02X}")).collect(),
        other => panic!("column {}: unexpected Avro value {other:?}", column.name),
    })
}

fn same(column: &TypedColumn, from_lake: &Option<String>, from_db: &Option<String>) -> bool {
    if column.sql_type.starts_with("FLOAT") || column.sql_type.starts_with("DOUBLE") {
        let parse = |v: &Option<String>| v.as_deref().map(|s| s.parse::<f64>().expect("number"));
        return parse(from_lake) == parse(from_db);
    }
    from_lake == from_db
}

async fn select_canonical(conn: &mut mysql_async::Conn, db: &str, id: i64) -> Vec<Option<String>> {
    let exprs: Vec<&str> = COLUMNS.iter().map(|c| c.canonical_sql).collect();
    let sql = format!(
        "SELECT {} FROM `{db}`.typed WHERE id = {id}",
        exprs.join(", ")
    );
    let row: mysql_async::Row = conn
        .query_first(sql)
        .await
        .expect("select")
        .expect("row exists");
    (0..COLUMNS.len())
        .map(|i| match row.as_ref(i).expect("column") {
            mysql_async::Value::NULL => None,
            mysql_async::Value::Bytes(b) => Some(String::from_utf8(b.clone()).expect("utf8")),
            mysql_async::Value::Double(x) => Some(x.to_string()),
            mysql_async::Value::Float(x) => Some(x.to_string()),
            mysql_async::Value::Int(n) => Some(n.to_string()),
            mysql_async::Value::UInt(n) => Some(n.to_string()),
            other => panic!("unexpected canonical value {other:?}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_column_type_round_trips_through_the_lake() {
    let db = unique("hw_types");
    let mut admin = mysql_admin().await;
    admin
        .query_drop("SET SESSION time_zone = '+00:00'")
        .await
        .unwrap();
    let columns: Vec<String> = COLUMNS
        .iter()
        .map(|c| format!("{} {}", c.name, c.sql_type))
        .collect();
    admin
        .query_drop(format!(
            "CREATE DATABASE `{db}`; CREATE TABLE `{db}`.typed (id BIGINT PRIMARY KEY, {}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
            columns.join(", ")
        ))
        .await
        .unwrap();

    let work = Workdir::new();
    work.mysql_config("types", &db, "", "");
    work.catch_up(); // records the starting point

    let names: Vec<&str> = COLUMNS.iter().map(|c| c.name).collect();
    let mut expected: HashMap<i64, Vec<Option<String>>> = HashMap::new();
    for row in 0..3 {
        let values: Vec<&str> = COLUMNS.iter().map(|c| c.values[row]).collect();
        admin
            .query_drop(format!(
                "INSERT INTO `{db}`.typed (id, {}) VALUES ({row}, {})",
                names.join(", "),
                values.join(", ")
            ))
            .await
            .unwrap_or_else(|e| panic!("insert row {row}: {e}"));
        expected.insert(
            row as i64,
            select_canonical(&mut admin, &db, row as i64).await,
        );
    }
    admin
        .query_drop(format!("INSERT INTO `{db}`.typed (id) VALUES (3)"))
        .await
        .unwrap();
    expected.insert(3, select_canonical(&mut admin, &db, 3).await);
    admin
        .query_drop(format!(
            "UPDATE `{db}`.typed SET c_varchar = 'changed', c_int = c_int - 1 WHERE id = 2"
        ))
        .await
        .unwrap();
    let updated = select_canonical(&mut admin, &db, 2).await;
    admin
        .query_drop(format!("DELETE FROM `{db}`.typed WHERE id = 0"))
        .await
        .unwrap();

    work.catch_up();
    let records = read_stream(&work.lake(), &format!("types.{db}.typed"));
    let ops: Vec<String> = records.iter().map(op).collect();
    assert_eq!(
        ops,
        ["c", "c", "c", "c", "u", "d"],
        "one record per change, in order"
    );

    let check = |image: &HashMap<String, AvroValue>, want: &[Option<String>], what: &str| {
        for (column, want) in COLUMNS.iter().zip(want) {
            let got = canonical(&image[column.name], column);
            assert!(
                same(column, &got, want),
                "{what}, column {} ({}): lake {got:?} != SELECT {want:?}",
                column.name,
                column.sql_type
            );
        }
    };
    for (i, record) in records.iter().take(4).enumerate() {
        let after = image(record, "after").expect("insert has after");
        check(
            &after,
            &expected[&(i as i64)],
            &format!("insert of row {i}"),
        );
        assert!(image(record, "before").is_none());
    }
    let before = image(&records[4], "before").expect("update has before");
    check(&before, &expected[&2], "update before-image");
    check(
        &image(&records[4], "after").expect("update has after"),
        &updated,
        "update after-image",
    );
    let deleted = image(&records[5], "before").expect("delete has before");
    check(&deleted, &expected[&0], "delete before-image");
    assert!(image(&records[5], "after").is_none());

    admin
        .query_drop(format!("DROP DATABASE `{db}`"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn column_changes_create_new_schema_versions_and_ddl_records() {
    let db = unique("hw_ddl");
    let mut admin = mysql_admin().await;
    admin
        .query_drop(format!(
            "CREATE DATABASE `{db}`; CREATE TABLE `{db}`.t (id INT PRIMARY KEY, a VARCHAR(10))"
        ))
        .await
        .unwrap();
    let work = Workdir::new();
    work.mysql_config("ddl", &db, "", "");
    work.catch_up();
    for statement in [
        format!("INSERT INTO `{db}`.t VALUES (1, 'one')"),
        format!("ALTER TABLE `{db}`.t ADD COLUMN b INT NOT NULL DEFAULT 7"),
        format!("INSERT INTO `{db}`.t VALUES (2, 'two', 8)"),
        format!("ALTER TABLE `{db}`.t DROP COLUMN a"),
        format!("INSERT INTO `{db}`.t VALUES (3, 9)"),
        format!("ALTER TABLE `{db}`.t CHANGE COLUMN b c BIGINT"),
        format!("INSERT INTO `{db}`.t VALUES (4, 10)"),
    ] {
        admin.query_drop(statement).await.unwrap();
    }
    work.catch_up();
    let records = read_stream(&work.lake(), &format!("ddl.{db}.t"));
    let afters: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            let mut columns: Vec<String> =
                image(r, "after").expect("after").keys().cloned().collect();
            columns.sort();
            columns
        })
        .collect();
    assert_eq!(
        afters,
        [
            vec!["a", "id"],
            vec!["a", "b", "id"],
            vec!["b", "id"],
            vec!["c", "id"]
        ]
    );
    let files: Vec<String> = std::fs::read_dir(work.lake().join(format!("ddl.{db}.t")))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for version in 1..=4 {
        assert!(
            files
                .iter()
                .any(|f| f.ends_with(&format!("-v{version}.avro"))),
            "schema version {version} missing from {files:?}"
        );
    }
    let ddl = read_stream(&work.lake(), "ddl.schema_changes");
    let statements: Vec<String> = ddl
        .iter()
        .map(|r| match field(r, "ddl") {
            AvroValue::String(s) => s.clone(),
            AvroValue::Uuid(u) => u.to_string(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(statements.len(), 3, "{statements:?}");
    assert!(statements[0].contains("ADD COLUMN b"));
    admin
        .query_drop(format!("DROP DATABASE `{db}`"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_pipeline_resumes_without_loss_or_duplicates() {
    let db = unique("hw_resume");
    let mut admin = mysql_admin().await;
    admin
        .query_drop(format!(
            "CREATE DATABASE `{db}`; CREATE TABLE `{db}`.t (id INT PRIMARY KEY, v INT)"
        ))
        .await
        .unwrap();
    let work = Workdir::new();
    work.mysql_config("resume", &db, "", "");
    work.catch_up();
    for batch in 0..3 {
        admin
            .query_drop(format!(
                "INSERT INTO `{db}`.t VALUES ({}, 0), ({}, 0)",
                batch * 2,
                batch * 2 + 1
            ))
            .await
            .unwrap();
        work.catch_up();
    }
    let offsets = work.headwater(&["offsets"]);
    let offsets: serde_json::Value =
        serde_json::from_slice(&offsets.stdout).expect("offsets prints JSON");
    assert_eq!(offsets["sink_position"], offsets["checkpoint"], "{offsets}");
    assert_eq!(offsets["checkpoint"]["kind"], "mysql");
    let ids: Vec<i32> = read_stream(&work.lake(), &format!("resume.{db}.t"))
        .iter()
        .map(|r| match image(r, "after").expect("after")["id"] {
            AvroValue::Int(n) => n,
            ref other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids, [0, 1, 2, 3, 4, 5]);
    admin
        .query_drop(format!("DROP DATABASE `{db}`"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_a_bad_password_with_the_fix() {
    let work = Workdir::new();
    work.mysql_config("bad", "nothing", "", "");
    let text = std::fs::read_to_string(work.config())
        .unwrap()
        .replace("headwater:headwater@", "headwater:wrong@");
    std::fs::write(work.config(), text).unwrap();
    let output = work.headwater(&["check"]);
    assert!(!output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("access denied") && stdout.contains("source.url"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("wrong"),
        "the password must not be printed: {stdout}"
    );
    let _ = Duration::ZERO;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_dates_become_null_and_a_blob_larger_than_a_packet_arrives_whole() {
    let db = unique("hw_edges");
    let mut admin = mysql_admin().await;
    admin
        .query_drop(format!(
            "CREATE DATABASE `{db}`; CREATE TABLE `{db}`.t (id INT PRIMARY KEY, d DATE NOT NULL, dt DATETIME NOT NULL, b LONGBLOB)"
        ))
        .await
        .unwrap();
    let work = Workdir::new();
    work.mysql_config("edges", &db, "", "");
    work.catch_up();
    admin.query_drop("SET SESSION sql_mode = ''").await.unwrap();
    admin
        .query_drop(format!(
            "INSERT INTO `{db}`.t VALUES (1, '0000-00-00', '0000-00-00 00:00:00', NULL), (2, '2024-00-15', '2024-05-00 10:00:00', NULL)"
        ))
        .await
        .unwrap();
    // 20 MiB: the row event spans two 16 MiB protocol packets.
    admin
        .query_drop(format!("INSERT INTO `{db}`.t VALUES (3, '2024-01-01', '2024-01-01 00:00:00', REPEAT('xyz', 7 * 1024 * 1024))"))
        .await
        .unwrap();
    work.catch_up();
    let records = read_stream(&work.lake(), &format!("edges.{db}.t"));
    assert_eq!(records.len(), 3);
    for record in &records[..2] {
        let after = image(record, "after").unwrap();
        assert_eq!(
            after["d"],
            AvroValue::Null,
            "zero or partial dates are null"
        );
        assert_eq!(after["dt"], AvroValue::Null);
    }
    let blob = match &image(&records[2], "after").unwrap()["b"] {
        AvroValue::Bytes(b) => b.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(blob.len(), 21 * 1024 * 1024);
    assert!(blob.chunks(3).all(|c| c == b"xyz"));
    admin
        .query_drop(format!("DROP DATABASE `{db}`"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_column_type_copied_by_a_snapshot_equals_its_streamed_image() {
    let db = unique("hw_snaptypes");
    let mut admin = mysql_admin().await;
    let columns: Vec<String> = COLUMNS
        .iter()
        .map(|c| format!("{} {}", c.name, c.sql_type))
        .collect();
    admin
        .query_drop(format!(
            "CREATE DATABASE `{db}`; CREATE TABLE `{db}`.typed (id BIGINT PRIMARY KEY, {}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
            columns.join(", ")
        ))
        .await
        .unwrap();
    let names: Vec<&str> = COLUMNS.iter().map(|c| c.name).collect();
    let insert = |id: usize, row: usize| {
        let values: Vec<&str> = COLUMNS.iter().map(|c| c.values[row]).collect();
        format!(
            "INSERT INTO `{db}`.typed (id, {}) VALUES ({id}, {})",
            names.join(", "),
            values.join(", ")
        )
    };
    for row in 0..3 {
        admin.query_drop(insert(row, row)).await.unwrap();
    }
    admin
        .query_drop(format!("INSERT INTO `{db}`.typed (id) VALUES (3)"))
        .await
        .unwrap();

    let work = Workdir::new();
    work.mysql_config("snaptypes", &db, "snapshot = \"initial\"", "");
    work.catch_up(); // copies rows 0..=3
    for row in 0..3 {
        admin.query_drop(insert(10 + row, row)).await.unwrap();
    }
    admin
        .query_drop(format!("INSERT INTO `{db}`.typed (id) VALUES (13)"))
        .await
        .unwrap();
    work.catch_up(); // streams rows 10..=13

    let records = read_stream(&work.lake(), &format!("snaptypes.{db}.typed"));
    let ops: Vec<String> = records.iter().map(op).collect();
    assert_eq!(ops, ["r", "r", "r", "r", "c", "c", "c", "c"]);
    for row in 0..4 {
        let copied = image(&records[row], "after").unwrap();
        let streamed = image(&records[4 + row], "after").unwrap();
        for column in COLUMNS {
            assert_eq!(
                copied[column.name], streamed[column.name],
                "row {row}, column {} ({}): the copy and the stream disagree",
                column.name, column.sql_type
            );
        }
    }
    let history = std::fs::read_to_string(work.path().join("state/mysql-schema-history.json"))
        .expect("schema history");
    let history: serde_json::Value = serde_json::from_str(&history).unwrap();
    assert_eq!(
        history["tables"][format!("{db}.typed")]
            .as_array()
            .map(Vec::len),
        Some(1),
        "the catalog and the binlog describe the table as one schema version: {history}"
    );
    admin
        .query_drop(format!("DROP DATABASE `{db}`"))
        .await
        .unwrap();
}
